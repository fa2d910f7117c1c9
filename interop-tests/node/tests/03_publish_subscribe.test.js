'use strict';
// Tutorial 3: publish/subscribe -- fanout exchange, each subscriber with an
// exclusive server-named queue; every subscriber gets every message once.
const { test, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./helpers');

afterEach(h.cleanup);

const subscriber = (exchange) => async (ch) => {
  await ch.assertExchange(exchange, 'fanout', { durable: false });
  const { queue } = await ch.assertQueue('', { exclusive: true });
  assert.ok(queue, 'server did not generate a queue name');
  await ch.bindQueue(queue, exchange, '');
  return queue;
};

test('fanout delivers every message to every subscriber', { timeout: h.TEST_TIMEOUT }, async () => {
  const exchange = h.unique('logs');
  h.deleteLater('exchange', exchange);
  const { ch } = await h.admin();
  await ch.assertExchange(exchange, 'fanout', { durable: false });
  // With no queue bound yet the message is simply dropped.
  ch.publish(exchange, '', Buffer.from('lost: nobody listening'));

  const subs = [];
  for (const n of [1, 2, 3]) subs.push(await h.startConsumer(`receive_logs${n}`, subscriber(exchange)));
  assert.equal(new Set(subs.map((s) => s.queue)).size, 3, 'server-named queues not distinct');

  // fanout ignores the routing key
  const logs = Array.from({ length: 25 }, (_, i) => `log line ${i}`);
  logs.forEach((body, i) => ch.publish(exchange, `ignored.${i % 4}`, Buffer.from(body)));

  await h.waitUntil(() => subs.every((s) => s.messages.length >= logs.length), 'all logs at all subscribers');
  await h.sleep(h.GRACE);
  for (const s of subs) {
    assert.deepEqual(s.bodies(), logs, `${s.name} got wrong/duplicate/unordered logs`);
    assert.deepEqual(s.messages.map((m) => m.fields.routingKey), logs.map((_, i) => `ignored.${i % 4}`));
    assert.ok(s.messages.every((m) => m.fields.exchange === exchange));
  }

  // A subscriber that goes away stops receiving; the others keep going.
  await subs[2].stop();
  ch.publish(exchange, '', Buffer.from('after one left'));
  await h.waitUntil(() => subs.slice(0, 2).every((s) => s.messages.length >= logs.length + 1), 'last log');
  await h.sleep(h.GRACE);
  for (const s of subs.slice(0, 2)) assert.deepEqual(s.bodies(), [...logs, 'after one left']);
  assert.deepEqual(subs[2].bodies(), logs);
});

test('exclusive queue is deleted when its subscriber disconnects', { timeout: h.TEST_TIMEOUT }, async () => {
  const exchange = h.unique('logs');
  h.deleteLater('exchange', exchange);
  const sub = await h.startConsumer('receive_logs', subscriber(exchange));
  const { conn } = await h.admin();
  // exclusive: other connections may not even passively declare it
  assert.equal(await h.queueState(conn, sub.queue), 'locked');
  await sub.stop();
  const deadline = Date.now() + 5000;
  while ((await h.queueState(conn, sub.queue)) !== 'missing') {
    assert.ok(Date.now() < deadline, `exclusive queue ${sub.queue} survived its connection`);
    await h.sleep(20);
  }
});
