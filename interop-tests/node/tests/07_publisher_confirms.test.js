'use strict';
// Tutorial 7: publisher confirms -- publishing messages individually (wait
// for each confirm), in batches (wait per batch) and with asynchronous confirm
// handling. Every publish must be acked exactly once (checked both through
// amqplib's callbacks and by tracking the raw basic.ack delivery tags), and
// every confirmed message must really be in the queue.
const { test, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { once } = require('node:events');
const h = require('./helpers');

afterEach(h.cleanup);

// Track raw basic.ack / basic.nack frames by delivery tag.
function trackConfirms(ch) {
  const t = { published: 0, outstanding: new Set(), acked: 0, nacked: 0, errors: [], multiple: 0 };
  const settle = (fields, nack) => {
    const tag = fields.deliveryTag;
    let tags;
    if (fields.multiple) {
      t.multiple += 1;
      tags = [...t.outstanding].filter((x) => x <= tag);
    } else {
      tags = t.outstanding.has(tag) ? [tag] : [];
    }
    if (tags.length === 0) t.errors.push(`confirm for unknown/already confirmed tag ${tag} (multiple=${fields.multiple})`);
    for (const x of tags) t.outstanding.delete(x);
    if (nack) t.nacked += tags.length; else t.acked += tags.length;
  };
  ch.on('ack', (f) => settle(f, false));
  ch.on('nack', (f) => settle(f, true));
  t.publish = async (queue, body) => {
    t.published += 1;
    t.outstanding.add(t.published);
    const cb = { calls: 0, err: undefined };
    t.callbacks.push(cb);
    const ok = ch.sendToQueue(queue, Buffer.from(body), { persistent: true }, (err) => {
      cb.calls += 1;
      cb.err = err;
    });
    if (!ok) await h.withTimeout(once(ch, 'drain'), h.WAIT, 'channel drain');
  };
  t.callbacks = [];
  t.check = (n) => {
    assert.deepEqual(t.errors, []);
    assert.equal(t.published, n);
    assert.equal(t.nacked, 0, 'messages nacked');
    assert.equal(t.outstanding.size, 0, `${t.outstanding.size} publishes never confirmed`);
    assert.equal(t.acked, n);
    const bad = t.callbacks.filter((c) => c.calls !== 1 || c.err);
    assert.equal(bad.length, 0, `${bad.length} confirm callbacks not called exactly once with success`);
  };
  return t;
}

async function confirmChannel(queue) {
  const { conn } = await h.admin();
  const ch = await h.channel(conn, true);
  await ch.assertQueue(queue, { durable: true });
  h.deleteLater('queue', queue);
  return ch;
}

// Consume everything and compare with what was published.
async function assertQueueHolds(queue, bodies) {
  const { ch } = await h.admin();
  assert.equal(await h.queueMessageCount(ch, queue), bodies.length);
  const c = await h.startConsumer('drain', async () => queue, { noAck: false });
  await h.waitUntil(() => c.acked >= bodies.length, `${bodies.length} confirmed messages in queue`);
  await h.sleep(h.GRACE);
  assert.deepEqual(c.bodies(), bodies);
  await c.stop();
  assert.equal(await h.queueMessageCount(ch, queue), 0);
}

test('confirms: publish messages individually', { timeout: h.TEST_TIMEOUT }, async () => {
  const queue = h.unique('confirms_individual');
  const ch = await confirmChannel(queue);
  const t = trackConfirms(ch);
  const bodies = Array.from({ length: 200 }, (_, i) => `individual ${i}`);
  for (const body of bodies) {
    await t.publish(queue, body);
    await h.withTimeout(ch.waitForConfirms(), h.WAIT, 'confirm');
    assert.equal(t.outstanding.size, 0, 'waitForConfirms resolved before the ack arrived');
  }
  await h.sleep(100);
  t.check(bodies.length);
  await assertQueueHolds(queue, bodies);
});

test('confirms: publish messages in batches', { timeout: h.TEST_TIMEOUT }, async () => {
  const queue = h.unique('confirms_batch');
  const ch = await confirmChannel(queue);
  const t = trackConfirms(ch);
  const bodies = Array.from({ length: 1000 }, (_, i) => `batch ${i}`);
  for (let i = 0; i < bodies.length; i += 100) {
    for (const body of bodies.slice(i, i + 100)) await t.publish(queue, body);
    await h.withTimeout(ch.waitForConfirms(), h.WAIT, `confirms for batch at ${i}`);
    assert.equal(t.outstanding.size, 0);
  }
  await h.sleep(100);
  t.check(bodies.length);
  await assertQueueHolds(queue, bodies);
});

test('confirms: handle publisher confirms asynchronously', { timeout: h.TEST_TIMEOUT }, async () => {
  const queue = h.unique('confirms_async');
  const ch = await confirmChannel(queue);
  const t = trackConfirms(ch);
  const bodies = Array.from({ length: 2000 }, (_, i) => `async ${i}`);
  for (const body of bodies) await t.publish(queue, body);
  await h.waitUntil(() => t.callbacks.every((c) => c.calls > 0), 'all confirm callbacks');
  await h.sleep(h.GRACE);
  t.check(bodies.length);
  await assertQueueHolds(queue, bodies);
});

test('confirms: unroutable mandatory message is returned, then acked', { timeout: h.TEST_TIMEOUT }, async () => {
  const exchange = h.unique('confirms_unroutable');
  h.deleteLater('exchange', exchange);
  const { conn } = await h.admin();
  const ch = await h.channel(conn, true);
  await ch.assertExchange(exchange, 'direct', { durable: false });
  const returned = [];
  ch.on('return', (msg) => returned.push(msg));
  const confirmed = [];
  let returnedBeforeAck;
  ch.publish(exchange, 'nobody', Buffer.from('x'), { mandatory: true }, (err) => {
    returnedBeforeAck = returned.length;
    confirmed.push(['x', err]);
  });
  ch.publish(exchange, 'nobody', Buffer.from('y'), {}, (err) => confirmed.push(['y', err]));
  await h.withTimeout(ch.waitForConfirms(), h.WAIT, 'confirms');
  await h.sleep(100);
  assert.deepEqual(confirmed.map(([b, e]) => [b, e ?? null]), [['x', null], ['y', null]]);
  assert.deepEqual(returned.map((m) => m.content.toString()), ['x']);
  assert.equal(returned[0].fields.replyCode, 312);
  assert.equal(returned[0].fields.routingKey, 'nobody');
  assert.equal(returnedBeforeAck, 1, 'basic.return must precede the basic.ack of the same message');
});
