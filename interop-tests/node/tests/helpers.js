'use strict';
// Shared helpers for the amqplib interop tests. Every consumer gets its own
// connection (like the separate processes of the RabbitMQ tutorials). Every
// wait is bounded, and all connections are torn down after each test, so a
// broken broker makes a test fail instead of hang.

const amqp = require('amqplib');
const crypto = require('node:crypto');
const assert = require('node:assert/strict');

const AMQP_URL = process.env.AMQP_URL || 'amqp://guest:guest@127.0.0.1:5672/';
// How long to keep listening after the expected messages arrived, to catch
// duplicates or misrouted extras.
const GRACE = Number(process.env.INTEROP_GRACE_MS || 400);
// Upper bound for any single wait for messages / confirms.
const WAIT = Number(process.env.INTEROP_WAIT_MS || 10000);
// Per-test limit for node:test.
const TEST_TIMEOUT = 30000;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function unique(name) {
  return `interop-node-${name}-${process.pid}-${crypto.randomBytes(4).toString('hex')}`;
}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function waitUntil(predicate, what, ms = WAIT) {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(10);
  }
}

// ---- connection tracking / cleanup
const connections = new Set();
const deferred = [];

async function connect() {
  const conn = await withTimeout(amqp.connect(AMQP_URL, { timeout: 5000, noDelay: true }), WAIT, 'connect');
  conn.errors = [];
  conn.on('error', (err) => conn.errors.push(err));
  conn.on('close', () => connections.delete(conn));
  connections.add(conn);
  return conn;
}

// A channel whose broker-side closure (error) is recorded instead of
// crashing the process.
async function channel(conn, confirm = false) {
  const ch = await withTimeout(confirm ? conn.createConfirmChannel() : conn.createChannel(),
    WAIT, 'open channel');
  ch.errors = [];
  ch.on('error', (err) => ch.errors.push(err));
  return ch;
}

async function closeConnection(conn) {
  try {
    await withTimeout(conn.close(), 3000, 'connection.close');
  } catch (_) {
    try { conn.connection.stream.destroy(); } catch (_) { /* already gone */ }
  }
  connections.delete(conn);
}

// Register cleanup work (e.g. deleting a queue) to run after the test.
function defer(fn) {
  deferred.push(fn);
}

async function cleanup() {
  while (deferred.length) {
    const fn = deferred.pop();
    try { await withTimeout(Promise.resolve().then(fn), 3000, 'cleanup'); } catch (_) { /* best effort */ }
  }
  await Promise.all([...connections].map(closeConnection));
}

// Temporary admin connection for declares/deletes done by the test itself.
async function admin() {
  const conn = await connect();
  const ch = await channel(conn);
  return { conn, ch };
}

async function deleteLater(kind, name) {
  defer(async () => {
    const { conn, ch } = await admin();
    if (kind === 'queue') await ch.deleteQueue(name);
    else await ch.deleteExchange(name);
    await closeConnection(conn);
  });
}

// Start a consumer on its own connection. setup(ch) declares what it needs
// and returns the queue name. work(msg) runs before the manual ack.
async function startConsumer(name, setup, { noAck = true, prefetch, work } = {}) {
  const conn = await connect();
  const ch = await channel(conn);
  if (prefetch !== undefined) await ch.prefetch(prefetch);
  const queue = await setup(ch);
  const c = { name, conn, ch, queue, messages: [], acked: 0, cancelled: false };
  const { consumerTag } = await ch.consume(queue, async (msg) => {
    if (msg === null) { c.cancelled = true; return; }
    c.messages.push(msg);
    if (work) await work(msg);
    if (!noAck) {
      ch.ack(msg);
      c.acked += 1;
    }
  }, { noAck });
  c.consumerTag = consumerTag;
  c.bodies = () => c.messages.map((m) => m.content.toString());
  c.stop = () => closeConnection(conn);
  return c;
}

async function queueMessageCount(ch, queue) {
  const ok = await ch.checkQueue(queue);
  return ok.messageCount;
}

// Passive declare on a throw-away channel: 'ok', 'missing' (404) or
// 'locked' (405, exclusive queue of another connection).
async function queueState(conn, queue) {
  const ch = await channel(conn);
  try {
    await ch.checkQueue(queue);
  } catch (err) {
    if (err.code === 404) return 'missing';
    if (err.code === 405) return 'locked';
    throw err;
  }
  await ch.close();
  return 'ok';
}

// Tutorials 4/5: one subscriber per entry of `bindings` (name -> binding
// keys, on an exclusive server-named queue); publish one message per routing
// key in `published`; each subscriber must get exactly the messages whose key
// is listed in expected[name], in publish order, once.
async function checkRouting(type, name, bindings, published, expected) {
  const exchange = unique(name);
  const { ch } = await admin();
  await ch.assertExchange(exchange, type, { durable: false });
  deleteLater('exchange', exchange);

  const subs = {};
  for (const [sub, keys] of Object.entries(bindings)) {
    subs[sub] = await startConsumer(sub, async (sch) => {
      await sch.assertExchange(exchange, type, { durable: false });
      const { queue } = await sch.assertQueue('', { exclusive: true });
      for (const key of keys) await sch.bindQueue(queue, exchange, key);
      return queue;
    });
  }

  const wanted = Object.fromEntries(Object.keys(bindings).map((s) => [s, []]));
  published.forEach((key, i) => {
    const body = `${key} #${i}`;
    ch.publish(exchange, key, Buffer.from(body));
    for (const s of Object.keys(bindings)) {
      if (expected[s].includes(key)) wanted[s].push(body);
    }
  });

  await waitUntil(() => Object.keys(subs).every((s) => subs[s].messages.length >= wanted[s].length),
    `routed messages: ${JSON.stringify(Object.fromEntries(Object.entries(subs).map(([s, c]) => [s, c.bodies()])))}`);
  await sleep(GRACE);
  for (const [s, c] of Object.entries(subs)) {
    assert.deepEqual(c.bodies(), wanted[s], `subscriber ${s} (bindings ${JSON.stringify(bindings[s])})`);
    for (const m of c.messages) {
      assert.equal(m.fields.exchange, exchange);
      assert.ok(m.content.toString().startsWith(`${m.fields.routingKey} #`));
    }
  }
}

module.exports = {
  AMQP_URL, GRACE, WAIT, TEST_TIMEOUT,
  sleep, unique, withTimeout, waitUntil,
  connect, channel, closeConnection, cleanup, defer, admin, deleteLater,
  startConsumer, queueMessageCount, queueState, checkRouting,
};
