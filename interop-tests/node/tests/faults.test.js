'use strict';
// Warren's fault injection as amqplib sees it, one fresh broker per test,
// started with ../../fixtures/warren_node.mjs (the file users copy). Needs
// WARREN_BIN (run.sh sets it when it starts warren); skipped otherwise.
const { test, beforeEach, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { pathToFileURL } = require('node:url');
const amqp = require('amqplib');
const { WAIT, TEST_TIMEOUT, sleep, withTimeout, waitUntil } = require('./helpers');

const skip = process.env.WARREN_BIN ? false
  : 'fault injection needs a Warren of its own: set WARREN_BIN (run.sh does when it starts warren; not for an external broker)';
const fixture = pathToFileURL(path.join(__dirname, '..', '..', 'fixtures', 'warren_node.mjs')).href;

let warren;
let conns;
beforeEach(async () => {
  if (skip) return;
  const { startWarren } = await import(fixture);
  warren = await startWarren({ stderr: 'ignore' });
  conns = [];
});
afterEach(async () => {
  if (skip) return;
  for (const c of conns) {
    try { await withTimeout(c.close(), 3000, 'close'); } catch (_) { /* closed by the test's fault */ }
  }
  assert.equal(await warren.stop(), 0);
});

// A connection named `name` (its connection_name), its events recorded.
async function connect(name) {
  const conn = await withTimeout(amqp.connect(warren.amqpUrl, {
    timeout: 5000, clientProperties: { connection_name: name },
  }), WAIT, 'connect');
  conn.events = [];
  for (const ev of ['blocked', 'unblocked', 'error', 'close']) {
    conn.on(ev, (arg) => conn.events.push([ev, arg]));
  }
  conns.push(conn);
  return conn;
}
const named = (conn, ev) => conn.events.filter(([e]) => e === ev).map(([, arg]) => arg);

test('memory alarm: blocked while a publish waits, unblocked when cleared', { timeout: TEST_TIMEOUT, skip }, async () => {
  const conn = await connect('publisher');
  const ch = await conn.createChannel();
  await ch.assertQueue('alarm-q');
  const probe = await (await connect('probe')).createChannel();

  assert.equal(await warren.fault('alarms/memory', undefined, 'PUT'), null);
  ch.sendToQueue('alarm-q', Buffer.from('held back'));
  await waitUntil(() => named(conn, 'blocked').length, 'blocked');
  assert.deepEqual(named(conn, 'blocked'), ['low on memory']);
  assert.equal((await probe.checkQueue('alarm-q')).messageCount, 0);

  assert.equal(await warren.fault('alarms/memory', undefined, 'DELETE'), null);
  await waitUntil(() => named(conn, 'unblocked').length, 'unblocked');
  const deadline = Date.now() + WAIT;
  while ((await probe.checkQueue('alarm-q')).messageCount !== 1) {
    assert.ok(Date.now() < deadline, 'the held publish did not arrive');
    await sleep(10);
  }
  assert.equal((await probe.get('alarm-q', { noAck: true })).content.toString(), 'held back');
  assert.deepEqual(conn.events.map(([e]) => e), ['blocked', 'unblocked']);
});

test('close: error and close events carry the chosen code and reason', { timeout: TEST_TIMEOUT, skip }, async () => {
  const conn = await connect('doomed');
  await conn.createChannel();
  assert.deepEqual(await warren.fault('connections/doomed/close', { code: 541, reason: 'simulated internal error' }),
    { connections: 1 });
  await waitUntil(() => named(conn, 'close').length, 'close');
  const [err] = named(conn, 'error');
  assert.equal(err.code, 541);
  assert.match(err.message, /INTERNAL_ERROR - simulated internal error/);
  assert.equal(named(conn, 'close')[0], err);
  assert.deepEqual(conn.events.map(([e]) => e), ['error', 'close']);
});

test('reset: an error event for the lost socket, then close', { timeout: TEST_TIMEOUT, skip }, async () => {
  const conn = await connect('victim');
  await conn.createChannel();
  assert.deepEqual(await warren.fault(`connections/${encodeURIComponent('victim')}/reset`), { connections: 1 });
  await waitUntil(() => named(conn, 'close').length, 'close');
  const [err] = named(conn, 'error');
  assert.ok(err, `no error event: ${JSON.stringify(conn.events)}`);
  assert.equal(err.code, 'ECONNRESET');
  assert.deepEqual(conn.events.map(([e]) => e), ['error', 'close']);
});
