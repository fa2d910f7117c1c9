// Second, broader browser test of Warren's management UI: every page renders
// without API errors, and every form / button does its round trip through the
// RabbitMQ-compatible API (exchanges, bindings, publish routed / unroutable,
// vhosts, users, permissions, policies, definitions export / import,
// connection close, purge, queue delete). Same environment as ui_test.mjs:
// UI_URL, AMQP_URL, UI_USER, UI_PASSWORD, SCREENSHOT_DIR, CHROMIUM, UI_POLL_MS.
import { chromium } from 'playwright-core';
import amqp from 'amqplib';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const UI_URL = process.env.UI_URL || 'http://127.0.0.1:15672/';
const AMQP_URL = process.env.AMQP_URL || 'amqp://guest:guest@127.0.0.1:5672/';
const USER = process.env.UI_USER || 'guest';
const PASSWORD = process.env.UI_PASSWORD ?? 'guest';
const SHOTS = path.resolve(process.env.SCREENSHOT_DIR || path.join(HERE, 'screenshots'));
const POLL_MS = Number(process.env.UI_POLL_MS || 1000);
const WAIT = Number(process.env.UI_TIMEOUT_MS || 30000);
const CHROMIUM = process.env.CHROMIUM || execFileSync('sh', ['-c', 'command -v chromium || command -v chromium-browser || echo /usr/bin/chromium']).toString().trim();

const id = `${process.pid}-${randomBytes(3).toString('hex')}`;
const X = `ui-pages-x-${id}`, Q = `ui-pages-q-${id}`, VH = `ui-pages-vh-${id}`, U = `ui-pages-user-${id}`, POL = `ui-pages-pol-${id}`, DQ = `ui-pages-defq-${id}`;
let stepName = 'start';
const t0 = Date.now();
const step = (n) => { stepName = n; console.log(`[ui-pages +${((Date.now() - t0) / 1000).toFixed(1)}s] ${n}`); };
const fail = (m) => { throw new Error(m); };
const url = (hash) => { const u = new URL(UI_URL); u.searchParams.set('poll', String(POLL_MS)); u.hash = hash; return u.toString(); };
const auth = 'Basic ' + Buffer.from(`${USER}:${PASSWORD}`).toString('base64');
const api = (method, p, body) => fetch(new URL('api' + p, UI_URL), {
  method, headers: { Authorization: auth, 'Content-Type': 'application/json' }, body: body && JSON.stringify(body),
});
const row = (table, name) => `table[data-table="${table}"] tbody tr[data-name="${name}"]`;

let browser, conn;
const problems = [];

async function main() {
  mkdirSync(SHOTS, { recursive: true });
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
  const context = await browser.newContext({ viewport: { width: 1360, height: 900 }, acceptDownloads: true });
  const p = await context.newPage();
  p.setDefaultTimeout(WAIT);
  let expectHttpError = null;
  p.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  p.on('dialog', (d) => d.accept());
  p.on('response', (r) => {
    if (r.status() < 400) return;
    if (expectHttpError && expectHttpError(r)) return;
    problems.push(`HTTP ${r.status()} for ${r.request().method()} ${r.url()}`);
  });
  const go = async (hash, table) => { await p.goto(url(hash)); if (table) await p.locator(`table[data-table="${table}"]`).waitFor(); };
  const openAdd = async (formName) => { await p.locator(`details.add:has(form[data-form="${formName}"]) summary`).click(); return p.locator(`form[data-form="${formName}"]`); };
  const gone = (sel) => p.locator(sel).waitFor({ state: 'detached' });

  step('log in');
  await p.goto(url('#/'));
  await p.fill('#login-user', USER);
  await p.fill('#login-password', PASSWORD);
  await p.click('#login-submit');
  await p.locator('section[data-page="overview"]').waitFor();

  step('AMQP client with a consumer on a fresh queue');
  conn = await amqp.connect(AMQP_URL, { timeout: 5000 });
  conn.on('error', () => {});
  const localPort = conn.connection.stream.localPort;
  const ch = await conn.createChannel();
  await ch.assertQueue(Q, { durable: false });
  await ch.prefetch(7);
  const { consumerTag } = await ch.consume(Q, () => {}, { noAck: false });

  step('every list page renders its table');
  for (const [pg, table] of [['connections', 'connections'], ['channels', 'channels'], ['exchanges', 'exchanges'], ['queues', 'queues'],
    ['users', 'users'], ['vhosts', 'vhosts'], ['permissions', 'permissions'], ['policies', 'policies']]) {
    await go('#/' + pg, table);
    await p.locator(`#nav a.active[data-nav="${pg}"]`).waitFor();
  }
  await go('#/definitions');
  await p.locator('section[data-page="definitions"]').waitFor();

  step('connections and channels pages list the AMQP client; screenshot');
  await go('#/connections', 'connections');
  const connRow = p.locator('table[data-table="connections"] tbody tr').filter({ hasText: `:${localPort} ->` });
  await connRow.first().waitFor();
  const product = await connRow.first().locator('td[data-col="product"]').textContent();
  if (!/amqplib/i.test(product)) fail(`connection product column shows "${product}", expected amqplib`);
  await p.screenshot({ path: path.join(SHOTS, 'pages-connections.png'), fullPage: true });
  await go('#/channels', 'channels');
  const chRow = p.locator('table[data-table="channels"] tbody tr').filter({ hasText: `:${localPort} ->` }).first();
  await chRow.waitFor();
  await p.waitForFunction((port) => [...document.querySelectorAll('table[data-table="channels"] tbody tr')].some((tr) =>
    tr.dataset.name.includes(`:${port} ->`) && tr.querySelector('[data-col="prefetch_count"]').textContent === '7'
    && tr.querySelector('[data-col="consumer_count"]').textContent === '1'), localPort);
  await p.screenshot({ path: path.join(SHOTS, 'pages-channels.png'), fullPage: true });

  step('protocol trace of the AMQP client, from the connections page');
  await go('#/connections', 'connections');
  // Before the trace starts, reading it is a 400 the page explains.
  expectHttpError = (r) => r.status() === 400 && r.url().includes('/trace');
  await connRow.first().locator('a', { hasText: 'Trace' }).click();
  await p.locator('section[data-page="trace"]').waitFor();
  await p.locator('button', { hasText: 'Start trace' }).click();
  let traced = false;
  for (let i = 0; i < 50 && !traced; i++) {
    await ch.checkQueue(Q);
    traced = (await p.locator('table[data-table="trace"] tbody tr[data-name="queue.declare-ok"]').count()) > 0;
    if (!traced) await p.waitForTimeout(200);
  }
  if (!traced) fail('the trace page never showed the queue.declare-ok the client caused');
  await p.screenshot({ path: path.join(SHOTS, 'pages-trace.png'), fullPage: true });
  await p.locator('button', { hasText: 'Stop trace' }).click();
  expectHttpError = null;

  step('add a topic exchange through the form');
  await go('#/exchanges', 'exchanges');
  let f = await openAdd('add-exchange');
  await f.locator('[name="vhost"] option[value="/"]').waitFor({ state: 'attached' });
  await f.locator('[name="name"]').fill(X);
  await f.locator('[name="type"]').selectOption('topic');
  await f.locator('[name="durable"]').selectOption('false');
  await f.locator('button[type="submit"]').click();
  await p.locator(row('exchanges', X)).waitFor();
  if ((await p.locator(`${row('exchanges', X)} td[data-col="type"]`).textContent()) !== 'topic') fail('exchange type is not topic');

  step('bind the queue to it from the queue page');
  await go(`#/queues/%2F/${encodeURIComponent(Q)}`, 'bindings');
  f = await openAdd('add-binding');
  await f.locator('[name="source"]').fill(X);
  await f.locator('[name="routing_key"]').fill('a.#');
  await f.locator('button[type="submit"]').click();
  await p.locator(row('bindings', X)).waitFor();

  step('exchange page: binding listed, publish routed and unroutable, unbind, delete');
  await p.locator(`${row('bindings', X)} td[data-col="source"] a`).click();
  await p.locator('section[data-page="exchange"]').waitFor();
  await p.locator(row('bindings', Q)).waitFor();
  await p.screenshot({ path: path.join(SHOTS, 'pages-exchange.png'), fullPage: true });
  f = p.locator('form[data-form="publish"]');
  for (const [rk, want] of [['a.b.c', 'true'], ['b.a', 'false']]) {
    await f.locator('[name="routing_key"]').fill(rk);
    await f.locator('[name="payload"]').fill(`to ${rk}`);
    await f.locator('button[type="submit"]').click();
    await p.locator(`[data-result="publish"][data-routed="${want}"]`).waitFor();
  }
  await p.locator(`${row('bindings', Q)} [data-action="unbind"]`).click();
  await p.locator('table[data-table="bindings"] tbody tr.empty').waitFor();
  await p.locator('[data-action="delete-exchange"]').click();
  await p.locator('section[data-page="exchanges"]').waitFor();
  await gone(row('exchanges', X));

  step('queue page: purge 5 ready messages, then delete the queue');
  await ch.cancel(consumerTag);
  const pc = await conn.createConfirmChannel();
  for (let i = 0; i < 5; i++) pc.sendToQueue(Q, Buffer.from('x'));
  await pc.waitForConfirms();
  await pc.close();
  await go(`#/queues/%2F/${encodeURIComponent(Q)}`);
  await p.waitForFunction(() => document.querySelector('dd[data-field="messages_ready"]')?.textContent === '5');
  await p.locator('[data-action="purge-messages"]').click();
  await p.waitForFunction(() => document.querySelector('dd[data-field="messages_ready"]')?.textContent === '0');
  await p.locator('[data-action="delete-queue"]').click();
  await p.locator('section[data-page="queues"]').waitFor();
  await gone(row('queues', Q));

  step('virtual host, user with tags, permissions, policy');
  await go('#/vhosts', 'vhosts');
  f = await openAdd('add-vhost');
  await f.locator('[name="name"]').fill(VH);
  await f.locator('[name="description"]').fill('made by the UI test');
  await f.locator('button[type="submit"]').click();
  await p.locator(row('vhosts', VH)).waitFor();
  await go('#/users', 'users');
  f = await openAdd('add-user');
  await f.locator('[name="name"]').fill(U);
  await f.locator('[name="password"]').fill('s3cret');
  await f.locator('[name="tags"]').fill('monitoring, management');
  await f.locator('button[type="submit"]').click();
  await p.locator(row('users', U)).waitFor();
  const tags = await p.locator(`${row('users', U)} td[data-col="tags"]`).textContent();
  if (tags !== 'monitoring, management') fail(`user tags show "${tags}"`);
  await go('#/permissions', 'permissions');
  f = await openAdd('set-permissions');
  await f.locator(`[name="user"] option[value="${U}"]`).waitFor({ state: 'attached' });
  await f.locator(`[name="vhost"] option[value="${VH}"]`).waitFor({ state: 'attached' });
  await f.locator('[name="user"]').selectOption(U);
  await f.locator('[name="vhost"]').selectOption(VH);
  await f.locator('[name="write"]').fill('^$');
  await f.locator('button[type="submit"]').click();
  const permRow = `${row('permissions', U)}[data-vhost="${VH}"]`;
  await p.locator(permRow).waitFor();
  if ((await p.locator(`${permRow} td[data-col="write"]`).textContent()) !== '^$') fail('permission write column');
  await go('#/policies', 'policies');
  f = await openAdd('add-policy');
  await f.locator(`[name="vhost"] option[value="${VH}"]`).waitFor({ state: 'attached' });
  await f.locator('[name="vhost"]').selectOption(VH);
  await f.locator('[name="name"]').fill(POL);
  await f.locator('[name="pattern"]').fill('^ui-');
  await f.locator('[name="apply-to"]').selectOption('queues');
  await f.locator('[name="priority"]').fill('3');
  await f.locator('[name="definition"]').fill('{nope');
  await f.locator('button[type="submit"]').click();
  await p.locator('#messages .msg[data-kind="error"]', { hasText: 'must be JSON' }).waitFor();
  await f.locator('[name="definition"]').fill('{"max-length": 10}');
  await f.locator('button[type="submit"]').click();
  await p.locator(row('policies', POL)).waitFor();
  await p.screenshot({ path: path.join(SHOTS, 'pages-policies.png'), fullPage: true });
  step('an API error is shown in the message area');
  expectHttpError = (r) => r.status() === 400 && r.url().includes('/api/policies/');
  await f.locator('[name="name"]').fill(POL + '-bad');
  await f.locator('[name="definition"]').fill('{"no-such-policy-key": 1}');
  await f.locator('button[type="submit"]').click();
  await p.locator('#messages .msg[data-kind="error"]', { hasText: '400' }).waitFor();
  expectHttpError = null;
  await p.locator(`${row('policies', POL)} [data-action="delete"]`).click();
  await gone(row('policies', POL));

  step('definitions: download, upload');
  await go('#/definitions');
  const [dl] = await Promise.all([p.waitForEvent('download'), p.locator('[data-action="download-definitions"]').click()]);
  const file = path.join(SHOTS, 'definitions.json');
  await dl.saveAs(file);
  const defs = JSON.parse(readFileSync(file, 'utf8'));
  if (!Array.isArray(defs.vhosts) || !defs.vhosts.some((v) => v.name === VH)) fail('downloaded definitions lack the new vhost');
  if (!Array.isArray(defs.users) || !defs.users.some((u) => u.name === U)) fail('downloaded definitions lack the new user');
  await p.setInputFiles('[data-input="definitions-file"]', { name: 'defs.json', mimeType: 'application/json',
    buffer: Buffer.from(JSON.stringify({ queues: [{ name: DQ, vhost: VH, durable: true, auto_delete: false, arguments: {} }] })) });
  await p.locator('[data-action="upload-definitions"]').click();
  await p.locator('#messages .msg[data-kind="ok"]', { hasText: 'imported' }).waitFor();
  const r = await api('GET', `/queues/${encodeURIComponent(VH)}/${encodeURIComponent(DQ)}`);
  if (r.status !== 200) fail(`queue from uploaded definitions: GET answered ${r.status}`);

  step('delete permission, user and vhost through the UI');
  await go('#/permissions', 'permissions');
  await p.locator(`${permRow} [data-action="clear"]`).click();
  await gone(permRow);
  await go('#/users', 'users');
  await p.locator(`${row('users', U)} [data-action="delete"]`).click();
  await gone(row('users', U));
  await go('#/vhosts', 'vhosts');
  await p.locator(`${row('vhosts', VH)} [data-action="delete"]`).click();
  await gone(row('vhosts', VH));

  step('close the AMQP connection from the connections page');
  const closed = new Promise((res) => conn.once('close', res));
  await go('#/connections', 'connections');
  await connRow.first().locator('[data-action="close"]').click();
  await Promise.race([closed, new Promise((_, rej) => setTimeout(() => rej(new Error('connection was not closed by the broker')), 10000))]);
  conn = null;

  if (problems.length) fail(`problems seen in the page:\n  ${problems.join('\n  ')}`);
  const errs = await p.locator('#messages .msg[data-kind="error"]').allTextContents();
  if (errs.some((e) => !/must be JSON|400/.test(e))) fail(`unexpected error messages: ${errs.join(' | ')}`);
}

let rc = 0;
try {
  await main();
  console.log('ui pages test: OK');
  console.log('1 passed, 0 failed');
} catch (e) {
  rc = 1;
  console.error(`ui pages test FAILED at step "${stepName}": ${e && e.message ? e.message : e}`);
  if (problems.length) console.error(`problems:\n  ${problems.join('\n  ')}`);
  console.log('0 passed, 1 failed');
  try {
    const pg = browser?.contexts().flatMap((c) => c.pages())[0];
    if (pg) await pg.screenshot({ path: path.join(SHOTS, 'pages-failure.png'), fullPage: true });
  } catch { /* ignore */ }
} finally {
  for (const [m, pth] of [['DELETE', `/exchanges/%2F/${encodeURIComponent(X)}`], ['DELETE', `/queues/%2F/${encodeURIComponent(Q)}`],
    ['DELETE', `/vhosts/${encodeURIComponent(VH)}`], ['DELETE', `/users/${encodeURIComponent(U)}`]]) {
    await api(m, pth).catch(() => {});
  }
  if (conn) await conn.close().catch(() => {});
  if (browser) await browser.close().catch(() => {});
}
process.exit(rc);
