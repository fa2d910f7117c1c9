'use strict';
// Direct reply-to (RabbitMQ's amq.rabbitmq.reply-to): RPC without a callback
// queue. The client consumes the pseudo-queue amq.rabbitmq.reply-to with
// noAck and sends requests with replyTo 'amq.rabbitmq.reply-to'; the broker
// rewrites replyTo to the channel's own address 'amq.rabbitmq.reply-to.<...>',
// the server replies to the default exchange with that routing key, and the
// reply arrives on the client's reply consumer. Misuse closes the channel 406.
const { test, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const h = require('./helpers');

afterEach(h.cleanup);

const REPLY_TO = 'amq.rabbitmq.reply-to';
const PREFIX = `${REPLY_TO}.`;
// basic.consume and basic.publish, as (class, method) of the channel.close
const BASIC = 60;
const CONSUME = 20;
const PUBLISH = 40;

// Answers 're: <body>' with the request's correlationId, to the default
// exchange with routing key = the request's (rewritten) replyTo.
async function startServer(rpcQueue) {
  const server = { requests: [] };
  const conn = await h.connect();
  const ch = await h.channel(conn);
  await ch.assertQueue(rpcQueue, { durable: false });
  await ch.prefetch(1);
  await ch.consume(rpcQueue, (msg) => {
    const { replyTo, correlationId } = msg.properties;
    server.requests.push({ replyTo, correlationId, body: msg.content.toString() });
    ch.publish('', replyTo, Buffer.from(`re: ${msg.content}`), { correlationId });
    ch.ack(msg);
  }, { noAck: false });
  return server;
}

async function directReplyClient(rpcQueue) {
  const conn = await h.connect();
  const ch = await h.channel(conn);
  const pending = new Map();
  const stray = [];
  const { consumerTag } = await ch.consume(REPLY_TO, (msg) => {
    const id = msg.properties.correlationId;
    const resolve = pending.get(id);
    if (resolve) {
      pending.delete(id);
      resolve(msg);
    } else {
      stray.push([id, msg.content.toString()]);
    }
  }, { noAck: true });
  return {
    conn, ch, consumerTag, stray,
    call(body) {
      const correlationId = crypto.randomUUID();
      const reply = new Promise((resolve) => pending.set(correlationId, resolve));
      ch.sendToQueue(rpcQueue, Buffer.from(body), { correlationId, replyTo: REPLY_TO });
      return h.withTimeout(reply, h.WAIT, `reply to '${body}'`);
    },
  };
}

test('direct reply-to: round trips', { timeout: h.TEST_TIMEOUT }, async () => {
  const rpcQueue = h.unique('reply-to-rpc');
  h.deleteLater('queue', rpcQueue);
  const server = await startServer(rpcQueue);
  const client = await directReplyClient(rpcQueue);
  for (let i = 0; i < 10; i++) {
    const reply = await client.call(`request ${i}`);
    assert.equal(reply.content.toString(), `re: request ${i}`);
    const seen = server.requests[server.requests.length - 1];
    assert.equal(seen.body, `request ${i}`);
    assert.equal(seen.correlationId, reply.properties.correlationId);
    // from the default exchange, under the address the server replied to,
    // to the client's reply consumer
    assert.equal(reply.fields.exchange, '');
    assert.equal(reply.fields.routingKey, seen.replyTo);
    assert.equal(reply.fields.redelivered, false);
    assert.equal(reply.fields.consumerTag, client.consumerTag);
  }
  await h.sleep(h.GRACE);
  assert.deepEqual(client.stray, [], 'unexpected replies');
  assert.equal(server.requests.length, 10);
  // the server sees the channel's address, never the pseudo-queue's name;
  // one address per channel
  const addresses = new Set(server.requests.map((r) => r.replyTo));
  assert.equal(addresses.size, 1, [...addresses].join(', '));
  const [address] = addresses;
  assert.ok(address.startsWith(PREFIX) && address.length > PREFIX.length, address);
  assert.equal(await h.queueMessageCount(client.ch, rpcQueue), 0);
  assert.deepEqual(client.ch.errors, []);
});

test('direct reply-to: two clients get only their own replies', { timeout: h.TEST_TIMEOUT }, async () => {
  const rpcQueue = h.unique('reply-to-rpc');
  h.deleteLater('queue', rpcQueue);
  const server = await startServer(rpcQueue);
  const clients = [await directReplyClient(rpcQueue), await directReplyClient(rpcQueue)];
  // many outstanding requests per client, interleaved between clients
  const calls = [[], []];
  for (let n = 0; n < 20; n++) {
    clients.forEach((c, i) => {
      const body = `client ${i} request ${n}`;
      calls[i].push([body, c.call(body)]);
    });
  }
  const replyKeys = [new Set(), new Set()];
  for (const [i, list] of calls.entries()) {
    for (const [body, reply] of list) {
      const msg = await reply;
      assert.equal(msg.content.toString(), `re: ${body}`);
      replyKeys[i].add(msg.fields.routingKey);
    }
  }
  await h.sleep(h.GRACE);
  for (const c of clients) assert.deepEqual(c.stray, [], 'duplicate or foreign replies');
  assert.equal(server.requests.length, 40);
  const byClient = [new Set(), new Set()];
  for (const r of server.requests) byClient[Number(r.body.split(' ')[1])].add(r.replyTo);
  for (const [i, addresses] of byClient.entries()) {
    assert.equal(addresses.size, 1, `client ${i}: ${[...addresses].join(', ')}`);
    assert.ok([...addresses][0].startsWith(PREFIX));
    assert.deepEqual(replyKeys[i], addresses);
  }
  assert.notDeepEqual(byClient[0], byClient[1], 'both clients got the same reply address');
});

test('direct reply-to: a reply consumer must be noAck (406)', { timeout: h.TEST_TIMEOUT }, async () => {
  const conn = await h.connect();
  const ch = await h.channel(conn);
  await assert.rejects(ch.consume(REPLY_TO, () => {}, { noAck: false }), (err) => {
    assert.equal(err.code, 406, err.message);
    assert.equal(err.classId, BASIC);
    assert.equal(err.methodId, CONSUME);
    assert.match(err.message, /reply consumer cannot acknowledge/);
    return true;
  });
  // only the channel is closed
  const ch2 = await h.channel(conn);
  await ch2.consume(REPLY_TO, () => {}, { noAck: true });
  // one reply consumer per channel
  await assert.rejects(ch2.consume(REPLY_TO, () => {}, { noAck: true }), (err) => {
    assert.equal(err.code, 406, err.message);
    assert.match(err.message, /reply consumer already set/);
    return true;
  });
  assert.deepEqual(conn.errors, []);
});

async function assertRequestRefused(ch, queue) {
  ch.sendToQueue(queue, Buffer.from('who do I answer?'), { replyTo: REPLY_TO, correlationId: 'x' });
  await assert.rejects(ch.checkQueue(queue), (err) => err.code === 406);
  await h.waitUntil(() => ch.errors.length > 0, 'channel error event');
  const [err] = ch.errors;
  assert.equal(err.code, 406, err.message);
  assert.equal(err.classId, BASIC);
  assert.equal(err.methodId, PUBLISH);
  assert.match(err.message, /fast reply consumer does not exist/);
}

test('direct reply-to: a request from a channel without a reply consumer closes it (406)', { timeout: h.TEST_TIMEOUT }, async () => {
  const queue = h.unique('reply-to-orphan');
  h.deleteLater('queue', queue);
  const conn = await h.connect();
  const ch = await h.channel(conn);
  await ch.assertQueue(queue, { durable: false });

  // no reply consumer at all
  await assertRequestRefused(await h.channel(conn), queue);
  // a reply consumer on another channel of the same connection does not count
  await ch.consume(REPLY_TO, () => {}, { noAck: true });
  await assertRequestRefused(await h.channel(conn), queue);
  // ...nor one that was cancelled
  const ch3 = await h.channel(conn);
  const { consumerTag } = await ch3.consume(REPLY_TO, () => {}, { noAck: true });
  ch3.sendToQueue(queue, Buffer.from('fine'), { replyTo: REPLY_TO });
  await ch3.cancel(consumerTag);
  await assertRequestRefused(ch3, queue);

  assert.deepEqual(conn.errors, []);
  // only the request sent while the reply consumer existed was enqueued
  const msg = await ch.get(queue, { noAck: true });
  assert.ok(msg, 'the accepted request is missing');
  assert.equal(msg.content.toString(), 'fine');
  assert.ok(msg.properties.replyTo.startsWith(PREFIX), msg.properties.replyTo);
  assert.equal(await h.queueMessageCount(ch, queue), 0);
});
