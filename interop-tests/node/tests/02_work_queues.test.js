'use strict';
// Tutorial 2: work queues -- durable queue, persistent messages, two workers,
// prefetch 1 (fair dispatch), manual acks, redelivery when a worker dies.
const { test, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const readline = require('node:readline');
const { spawn } = require('node:child_process');
const h = require('./helpers');

afterEach(h.cleanup);

const taskQueue = (queue) => async (ch) => {
  await ch.assertQueue(queue, { durable: true });
  return queue;
};
const workSleep = (perDot) => (msg) => h.sleep(perDot * (msg.content.toString().split('.').length - 1));

function publishTasks(ch, queue, tasks) {
  for (const t of tasks) ch.sendToQueue(queue, Buffer.from(t), { persistent: true });
}

test('work queue spreads tasks over two workers', { timeout: h.TEST_TIMEOUT }, async () => {
  const queue = h.unique('task_queue');
  h.deleteLater('queue', queue);
  const workers = [];
  for (const n of [1, 2]) {
    workers.push(await h.startConsumer(`worker${n}`, taskQueue(queue),
      { noAck: false, prefetch: 1, work: workSleep(20) }));
  }
  const { ch } = await h.admin();
  await ch.assertQueue(queue, { durable: true });
  const tasks = Array.from({ length: 20 }, (_, i) => `task ${i} ..`);
  publishTasks(ch, queue, tasks);

  await h.waitUntil(() => workers[0].acked + workers[1].acked >= tasks.length, 'all tasks done');
  await h.sleep(h.GRACE);
  const all = [...workers[0].bodies(), ...workers[1].bodies()];
  assert.deepEqual([...all].sort(), [...tasks].sort(), 'tasks lost or duplicated');
  for (const w of workers) {
    assert.ok(w.messages.length >= 3, `${w.name} got only ${w.messages.length} tasks`);
    const bodies = w.bodies();
    assert.deepEqual(bodies, [...bodies].sort((a, b) => tasks.indexOf(a) - tasks.indexOf(b)),
      `${w.name} saw its tasks out of order`);
    for (const m of w.messages) {
      assert.equal(m.fields.redelivered, false);
      assert.equal(m.properties.deliveryMode, 2, 'persistent flag lost');
    }
  }
  await Promise.all(workers.map((w) => w.stop()));
  assert.equal(await h.queueMessageCount(ch, queue), 0);
});

test('fair dispatch with prefetch 1', { timeout: h.TEST_TIMEOUT }, async () => {
  // A worker busy on a long task must not be handed more tasks while the
  // other worker is idle.
  const queue = h.unique('task_queue');
  h.deleteLater('queue', queue);
  const heavy = `heavy ${'.'.repeat(60)}`; // 60 * 25 ms = 1.5 s of work
  const lights = Array.from({ length: 12 }, (_, i) => `light ${i} .`);
  const workers = [];
  for (const n of [1, 2]) {
    workers.push(await h.startConsumer(`worker${n}`, taskQueue(queue),
      { noAck: false, prefetch: 1, work: workSleep(25) }));
  }
  const { ch } = await h.admin();
  await ch.assertQueue(queue, { durable: true });
  publishTasks(ch, queue, [heavy, ...lights]);

  await h.waitUntil(() => workers[0].acked + workers[1].acked >= 1 + lights.length, 'all tasks done');
  await h.sleep(h.GRACE);
  const got = workers.map((w) => w.bodies());
  assert.deepEqual([...got[0], ...got[1]].sort(), [heavy, ...lights].sort());
  const busy = got[0].includes(heavy) ? 0 : 1;
  // Without prefetch=1 round-robin would push ~half of the light tasks to
  // the busy worker.
  assert.ok(got[busy].length <= 2, `busy worker got light tasks while busy: ${got[busy]}`);
  assert.ok(got[1 - busy].length >= lights.length - 1);
});

const DYING_WORKER = `
const amqp = require('amqplib');
(async () => {
  const conn = await amqp.connect(process.env.AMQP_URL);
  const ch = await conn.createChannel();
  await ch.prefetch(1);
  await ch.consume(process.argv[1], (msg) => {
    console.log('got ' + msg.content.toString()); // ...and never ack
  }, { noAck: false });
  console.log('ready');
})().catch((e) => { console.error(e); process.exit(2); });
`;

test('unacked task is redelivered when its worker dies', { timeout: h.TEST_TIMEOUT }, async () => {
  const queue = h.unique('task_queue');
  h.deleteLater('queue', queue);
  const { ch } = await h.admin();
  await ch.assertQueue(queue, { durable: true });

  const child = spawn(process.execPath, ['-e', DYING_WORKER, queue], {
    cwd: path.join(__dirname, '..'),
    env: { ...process.env, AMQP_URL: h.AMQP_URL },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  h.defer(() => child.kill('SIGKILL'));
  const lines = readline.createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const nextLine = async () => (await h.withTimeout(lines.next(), h.WAIT, 'worker output')).value;

  assert.equal(await nextLine(), 'ready');
  publishTasks(ch, queue, ['task A', 'task B']);
  assert.equal(await nextLine(), 'got task A');
  // prefetch 1 and no ack: task B must still be waiting in the queue
  const deadline = Date.now() + 5000;
  while ((await h.queueMessageCount(ch, queue)) !== 1) {
    assert.ok(Date.now() < deadline, 'task B not ready in queue');
    await h.sleep(20);
  }
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL'); // the worker dies without acking
  await h.withTimeout(exited, h.WAIT, 'worker exit');

  const worker = await h.startConsumer('worker2', taskQueue(queue), { noAck: false, prefetch: 1 });
  await h.waitUntil(() => worker.acked >= 2, 'redelivered tasks');
  await h.sleep(h.GRACE);
  assert.deepEqual([...worker.bodies()].sort(), ['task A', 'task B']);
  const redelivered = Object.fromEntries(worker.messages.map((m) => [m.content.toString(), m.fields.redelivered]));
  assert.deepEqual(redelivered, { 'task A': true, 'task B': false });
});
