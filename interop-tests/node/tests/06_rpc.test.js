'use strict';
// Tutorial 6: RPC -- server consumes rpc_queue (prefetch 1, manual ack) and
// replies to properties.replyTo with the request's correlationId; the client
// waits on an exclusive, server-named callback queue.
const { test, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const h = require('./helpers');

afterEach(h.cleanup);

function fib(n) {
  let a = 0; let b = 1;
  for (let i = 0; i < n; i++) [a, b] = [b, a + b];
  return a;
}

async function startServer(rpcQueue) {
  const server = { handled: 0 };
  const conn = await h.connect();
  const ch = await h.channel(conn);
  await ch.assertQueue(rpcQueue, { durable: false });
  await ch.prefetch(1);
  await ch.consume(rpcQueue, (msg) => {
    const n = parseInt(msg.content.toString(), 10);
    ch.sendToQueue(msg.properties.replyTo, Buffer.from(String(fib(n))),
      { correlationId: msg.properties.correlationId });
    ch.ack(msg);
    server.handled += 1;
  }, { noAck: false });
  return server;
}

async function rpcClient(rpcQueue) {
  const conn = await h.connect();
  const ch = await h.channel(conn);
  const { queue: callbackQueue } = await ch.assertQueue('', { exclusive: true });
  assert.ok(callbackQueue, 'server did not name the callback queue');
  const pending = new Map();
  const stray = [];
  await ch.consume(callbackQueue, (msg) => {
    const id = msg.properties.correlationId;
    const resolve = pending.get(id);
    if (resolve) {
      pending.delete(id);
      resolve(parseInt(msg.content.toString(), 10));
    } else {
      stray.push([id, msg.content.toString()]);
    }
  }, { noAck: true });
  return {
    conn, ch, callbackQueue, stray,
    call(n) {
      const correlationId = crypto.randomUUID();
      const reply = new Promise((resolve) => pending.set(correlationId, resolve));
      ch.sendToQueue(rpcQueue, Buffer.from(String(n)), { correlationId, replyTo: callbackQueue });
      return h.withTimeout(reply, h.WAIT, `fib(${n}) reply`);
    },
  };
}

test('rpc: sequential fibonacci calls', { timeout: h.TEST_TIMEOUT }, async () => {
  const rpcQueue = h.unique('rpc_queue');
  h.deleteLater('queue', rpcQueue);
  const server = await startServer(rpcQueue);
  const client = await rpcClient(rpcQueue);
  for (let n = 0; n <= 30; n += 3) assert.equal(await client.call(n), fib(n), `fib(${n})`);
  assert.equal(await client.call(30), 832040);
  await h.sleep(h.GRACE);
  assert.deepEqual(client.stray, [], 'unexpected replies');
  assert.equal(server.handled, 12);
});

test('rpc: concurrent clients get their own answers', { timeout: h.TEST_TIMEOUT }, async () => {
  const rpcQueue = h.unique('rpc_queue');
  h.deleteLater('queue', rpcQueue);
  const server = await startServer(rpcQueue);
  const clients = [await rpcClient(rpcQueue), await rpcClient(rpcQueue)];
  assert.notEqual(clients[0].callbackQueue, clients[1].callbackQueue);
  // many outstanding requests per client, interleaved; matched by correlationId
  const calls = [[], []];
  for (let n = 0; n < 20; n++) {
    clients.forEach((c, i) => calls[i].push([n + 20 * i, c.call(n + 20 * i)]));
  }
  for (const list of calls) {
    for (const [n, reply] of list) assert.equal(await reply, fib(n), `fib(${n})`);
  }
  await h.sleep(h.GRACE);
  for (const c of clients) assert.deepEqual(c.stray, [], 'duplicate or foreign replies');
  assert.equal(server.handled, 40);
});

test('rpc: callback queue is exclusive to the client connection', { timeout: h.TEST_TIMEOUT }, async () => {
  const client = await rpcClient(h.unique('rpc_queue'));
  const { conn } = await h.admin();
  const ch = await h.channel(conn);
  await assert.rejects(ch.consume(client.callbackQueue, () => {}), (err) => err.code === 405);
  await h.closeConnection(client.conn);
  const deadline = Date.now() + 5000;
  while ((await h.queueState(conn, client.callbackQueue)) !== 'missing') {
    assert.ok(Date.now() < deadline, 'exclusive callback queue survived its connection');
    await h.sleep(20);
  }
});
