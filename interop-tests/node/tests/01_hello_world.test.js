'use strict';
// Tutorial 1: "Hello World!" -- one producer, one consumer, default exchange.
const { test, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./helpers');

afterEach(h.cleanup);

test('hello world: consumer first', { timeout: h.TEST_TIMEOUT }, async () => {
  const queue = h.unique('hello');
  h.deleteLater('queue', queue);
  const receiver = await h.startConsumer('receive', async (ch) => {
    await ch.assertQueue(queue, { durable: false });
    return queue;
  });

  const { ch } = await h.admin();
  await ch.assertQueue(queue, { durable: false });
  assert.equal(ch.sendToQueue(queue, Buffer.from('Hello World!')), true);

  await h.waitUntil(() => receiver.messages.length >= 1, 'Hello World!');
  await h.sleep(h.GRACE);
  assert.deepEqual(receiver.bodies(), ['Hello World!']);
  const { fields } = receiver.messages[0];
  assert.equal(fields.exchange, '');
  assert.equal(fields.routingKey, queue);
  assert.equal(fields.redelivered, false);
  await receiver.stop();
  // auto-ack: nothing may be left (or requeued) after the consumer quit
  assert.equal(await h.queueMessageCount(ch, queue), 0);
});

test('hello world: sender first, message waits in the queue', { timeout: h.TEST_TIMEOUT }, async () => {
  const queue = h.unique('hello');
  h.deleteLater('queue', queue);
  const { ch } = await h.admin();
  await ch.assertQueue(queue, { durable: false });
  ch.sendToQueue(queue, Buffer.from('Hello World!'));
  const deadline = Date.now() + 5000;
  while ((await h.queueMessageCount(ch, queue)) !== 1) {
    assert.ok(Date.now() < deadline, 'message never showed up in the queue');
    await h.sleep(20);
  }

  const receiver = await h.startConsumer('receive', async (rch) => {
    await rch.assertQueue(queue, { durable: false });
    return queue;
  });
  await h.waitUntil(() => receiver.messages.length >= 1, 'queued message');
  await h.sleep(h.GRACE);
  assert.deepEqual(receiver.bodies(), ['Hello World!']);
  await receiver.stop();
  assert.equal(await h.queueMessageCount(ch, queue), 0);
});
