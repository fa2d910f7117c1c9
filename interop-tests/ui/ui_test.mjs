// Headless-browser test of Warren's management web UI.
//
// Drives Debian's chromium through playwright-core and a real AMQP client
// (amqplib) against a broker + management API:
//   1. opens the UI, checks a wrong password is refused (login form again),
//      logs in through the form, waits for the overview totals and charts;
//   2. declares a uniquely named queue and publishes 3 messages with amqplib;
//   3. waits until the queues table (refreshing itself) shows messages = 3;
//   4. opens the queue's page, publishes a message from the UI form ("routed"),
//      gets the 4 messages back through the UI (requeued) and checks payloads;
//      the overview's totals and queued-messages chart show them;
//   5. consumes with amqplib and checks the UI-published payload arrives exactly;
//   6. saves screenshots (overview, queues list, queue page) and deletes the queue.
//
// Env: UI_URL (default http://127.0.0.1:15672/), AMQP_URL (default
// amqp://guest:guest@127.0.0.1:5672/), UI_USER / UI_PASSWORD (guest/guest),
// SCREENSHOT_DIR (default <this dir>/screenshots), CHROMIUM (browser binary,
// default: chromium on PATH), UI_POLL_MS (UI refresh interval, default 1000),
// UI_TIMEOUT_MS (wait for the queue to show up, default 30000), HEADED=1.
import { chromium } from 'playwright-core';
import amqp from 'amqplib';
import { execFileSync } from 'node:child_process';
import { mkdirSync, existsSync } from 'node:fs';
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
const QUEUE_WAIT = Number(process.env.UI_TIMEOUT_MS || 30000);
const STEP = 10000;

let stepName = 'start';
const t0 = Date.now();
function step(name) {
  stepName = name;
  console.log(`[ui-test +${((Date.now() - t0) / 1000).toFixed(1)}s] ${name}`);
}
function fail(msg) { throw new Error(msg); }
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
function withTimeout(p, ms, what) {
  let timer;
  return Promise.race([p, new Promise((_, rej) => { timer = setTimeout(() => rej(new Error(`timed out after ${ms} ms: ${what}`)), ms); })])
    .finally(() => clearTimeout(timer));
}

function findChromium() {
  if (process.env.CHROMIUM) return process.env.CHROMIUM;
  for (const name of ['chromium', 'chromium-browser', 'google-chrome']) {
    try { return execFileSync('sh', ['-c', `command -v ${name}`]).toString().trim(); } catch { /* next */ }
  }
  for (const p of ['/usr/bin/chromium', '/usr/lib/chromium/chromium']) if (existsSync(p)) return p;
  fail('no chromium found: install Debian\'s chromium (apt-get install chromium) or set CHROMIUM');
}

function pageUrl(hash) {
  const u = new URL(UI_URL);
  u.searchParams.set('poll', String(POLL_MS));
  u.hash = hash;
  return u.toString();
}

const queue = `ui-test-${process.pid}-${randomBytes(4).toString('hex')}`;
const bodies = ['first message', 'second message', 'third message \u2713'];
const uiPayload = `published from the UI ${randomBytes(6).toString('hex')} {"json": true} <b>not html</b>`;

let browser, conn, ch;
const pageErrors = [];

async function main() {
  mkdirSync(SHOTS, { recursive: true });
  step(`launching ${findChromium()} (UI ${UI_URL}, AMQP ${AMQP_URL.replace(/:[^:@/]*@/, ':***@')})`);
  browser = await chromium.launch({
    executablePath: findChromium(), headless: !process.env.HEADED,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
  const context = await browser.newContext({ viewport: { width: 1360, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP);
  page.on('pageerror', (e) => pageErrors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error' && !/Failed to load resource/i.test(m.text())) pageErrors.push(`console.error: ${m.text()}`); });
  page.on('dialog', (d) => d.accept());
  page.on('response', (r) => { if (r.status() >= 400 && r.status() !== 401) pageErrors.push(`HTTP ${r.status()} for ${r.request().method()} ${r.url()}`); });

  step('open UI, expect the login form');
  const resp = await page.goto(pageUrl('#/'));
  if (!resp || !resp.ok()) fail(`GET ${pageUrl('#/')} answered ${resp && resp.status()}`);
  await page.locator('#login-form').waitFor({ state: 'visible' });

  step('wrong password is refused and the login form stays');
  await page.fill('#login-user', USER);
  await page.fill('#login-password', PASSWORD + '-wrong-' + randomBytes(3).toString('hex'));
  await page.click('#login-submit');
  await page.locator('#login-error').waitFor({ state: 'visible' });
  const loginErr = await page.locator('#login-error').textContent();
  if (!/401/.test(loginErr)) fail(`expected a 401 message on the login form, got: ${loginErr}`);
  if (await page.locator('#main').isVisible()) fail('main content visible after a failed login');

  step('log in through the form');
  await page.fill('#login-user', USER);
  await page.fill('#login-password', PASSWORD);
  await page.click('#login-submit');
  await page.locator('section[data-page="overview"]').waitFor();
  await page.waitForFunction(() => {
    const v = document.querySelector('[data-stat="rabbitmq_version"]');
    return v && v.textContent.trim() !== '';
  });
  const version = (await page.locator('[data-stat="rabbitmq_version"]').textContent()).trim();
  const node = (await page.locator('dd[data-stat="node"]').textContent()).trim();
  console.log(`  version: ${version}; node: ${node}`);
  if ((await page.locator('[data-table="listeners"] tbody tr[data-name]').count()) < 1) fail('no listeners shown on the overview');

  step('AMQP: declare queue and publish 3 messages (confirmed)');
  conn = await withTimeout(amqp.connect(AMQP_URL, { timeout: 5000 }), STEP, 'AMQP connect');
  conn.on('error', (e) => console.log(`  amqp connection error: ${e.message}`));
  ch = await conn.createConfirmChannel();
  await ch.assertQueue(queue, { durable: false, autoDelete: false });
  for (const b of bodies) ch.sendToQueue(queue, Buffer.from(b), { contentType: 'text/plain' });
  await withTimeout(ch.waitForConfirms(), STEP, 'publisher confirms');

  step('overview charts have samples');
  await page.waitForFunction(() => {
    const l = document.querySelector('svg[data-chart="queued"] polyline[data-series="ready"]');
    return l && l.getAttribute('points').split(' ').length >= 4;
  }, null, { timeout: QUEUE_WAIT });
  if ((await page.locator('svg[data-chart="rates"] polyline').count()) !== 3) fail('rates chart should have 3 series');
  await page.waitForFunction(() => {
    const v = document.querySelector('[data-stat="object_totals.queues"] .v');
    return v && Number(v.textContent) >= 1;
  }, null, { timeout: QUEUE_WAIT });

  step('queues page shows the queue with messages = 3 (page refreshes itself)');
  await page.click('#nav a[data-nav="queues"]');
  await page.locator('table[data-table="queues"]').waitFor();
  const row = page.locator(`table[data-table="queues"] tr[data-name="${queue}"]`);
  try {
    await page.waitForFunction((q) => {
      const r = [...document.querySelectorAll('table[data-table="queues"] tbody tr')].find((tr) => tr.dataset.name === q);
      const c = r && r.querySelector('td[data-col="messages"]');
      return c && c.textContent.trim() === '3';
    }, queue, { timeout: QUEUE_WAIT, polling: 200 });
  } catch (e) {
    const shown = (await row.count()) ? await row.locator('td[data-col="messages"]').textContent() : '(no row)';
    fail(`queue ${queue} did not show messages = 3 within ${QUEUE_WAIT} ms (shows: ${shown})`);
  }
  const ready = (await row.locator('td[data-col="messages_ready"]').textContent()).trim();
  if (ready !== '3') fail(`messages_ready column shows ${ready}, expected 3`);
  await row.scrollIntoViewIfNeeded();
  await page.screenshot({ path: path.join(SHOTS, 'queues.png'), fullPage: true });

  step('open the queue page');
  await row.locator('td[data-col="name"] a').click();
  await page.locator(`section[data-page="queue"]`).waitFor();
  const hash = await page.evaluate(() => location.hash);
  if (hash !== `#/queues/%2F/${encodeURIComponent(queue)}`) fail(`unexpected queue page hash ${hash}`);
  await page.waitForFunction(() => {
    const d = document.querySelector('section[data-page="queue"] dd[data-field="messages"]');
    return d && d.textContent.trim() === '3';
  });
  await page.locator('table[data-table="bindings"] tbody tr[data-name=""]').waitFor(); // default-exchange binding

  step('publish a message from the UI form');
  const pub = page.locator('form[data-form="publish"]');
  if ((await pub.locator('[name="routing_key"]').inputValue()) !== queue) fail('publish form routing key is not the queue name');
  await pub.locator('[name="payload"]').fill(uiPayload);
  await pub.locator('[name="headers"]').fill('{"x-ui-test": "yes"}');
  await pub.locator('button[type="submit"]').click();
  await page.locator('[data-result="publish"][data-routed]').waitFor();
  const routed = await page.locator('[data-result="publish"]').getAttribute('data-routed');
  const routedText = (await page.locator('[data-result="publish"]').textContent()).trim();
  if (routed !== 'true') fail(`UI publish was not routed: ${routedText}`);
  console.log(`  ${routedText}`);

  step('get messages through the UI (requeue) and check payloads');
  await page.waitForFunction(() => {
    const d = document.querySelector('section[data-page="queue"] dd[data-field="messages"]');
    return d && d.textContent.trim() === '4';
  }, null, { timeout: QUEUE_WAIT, polling: 200 });
  const getForm = page.locator('form[data-form="get"]');
  await getForm.locator('[name="ackmode"]').selectOption('ack_requeue_true');
  await getForm.locator('[name="count"]').fill('4');
  await getForm.locator('button[type="submit"]').click();
  await page.locator('[data-result="get"][data-count="4"]').waitFor();
  const payloads = await page.locator('[data-result="get"] .message pre[data-field="payload"]').allTextContents();
  const expected = [...bodies, uiPayload];
  if (JSON.stringify(payloads) !== JSON.stringify(expected)) fail(`UI get shows payloads ${JSON.stringify(payloads)}, expected ${JSON.stringify(expected)}`);
  const rk = (await page.locator('[data-result="get"] .message[data-message="3"] dd[data-field="routing_key"]').textContent()).trim();
  if (rk !== queue) fail(`UI get shows routing key ${rk}, expected ${queue}`);
  const props = await page.locator('[data-result="get"] .message[data-message="3"] dd[data-field="properties"]').textContent();
  if (!/"delivery_mode": 2/.test(props) || !/x-ui-test/.test(props)) fail(`UI get shows properties ${props}`);
  await page.screenshot({ path: path.join(SHOTS, 'queue.png'), fullPage: true });

  step('overview shows the queued messages (totals and chart); screenshot');
  await page.click('#nav a[data-nav="overview"]');
  await page.locator('section[data-page="overview"]').waitFor();
  await page.waitForFunction(() => {
    const v = document.querySelector('[data-stat="queue_totals.messages"] .v');
    const total = document.querySelector('.legend li[data-series="messages"] b');
    return v && Number(v.textContent) >= 4 && total && Number(total.textContent) >= 4;
  }, null, { timeout: QUEUE_WAIT, polling: 200 });
  await page.screenshot({ path: path.join(SHOTS, 'overview.png'), fullPage: true });

  step('amqplib consumer receives the UI-published payload');
  const got = [];
  await ch.prefetch(10);
  await ch.consume(queue, (m) => { if (m) { got.push(m); ch.ack(m); } });
  const deadline = Date.now() + STEP;
  while (got.length < 4 && Date.now() < deadline) await sleep(20);
  await sleep(200);
  const gotBodies = got.map((m) => m.content.toString('utf8'));
  if (JSON.stringify(gotBodies) !== JSON.stringify(expected)) fail(`amqplib consumer got ${JSON.stringify(gotBodies)}, expected ${JSON.stringify(expected)}`);
  const last = got[3];
  if (last.properties.deliveryMode !== 2) fail(`UI message delivery mode ${last.properties.deliveryMode}, expected 2`);
  if (!last.properties.headers || last.properties.headers['x-ui-test'] !== 'yes') fail(`UI message headers ${JSON.stringify(last.properties.headers)}`);

  if (pageErrors.length) fail(`errors in the page:\n  ${pageErrors.join('\n  ')}`);
  const errs = await page.locator('#messages .msg[data-kind="error"]').allTextContents();
  if (errs.length) fail(`the UI shows error messages: ${errs.join(' | ')}`);
}

let rc = 0;
try {
  await main();
  console.log(`ui test: OK (queue ${queue}; screenshots in ${SHOTS})`);
  console.log('1 passed, 0 failed');
} catch (e) {
  rc = 1;
  console.error(`ui test FAILED at step "${stepName}": ${e && e.message ? e.message : e}`);
  if (pageErrors.length) console.error(`page errors:\n  ${pageErrors.join('\n  ')}`);
  console.log('0 passed, 1 failed');
  try {
    const pages = browser ? browser.contexts().flatMap((c) => c.pages()) : [];
    if (pages[0]) { await pages[0].screenshot({ path: path.join(SHOTS, 'failure.png'), fullPage: true }); console.error(`screenshot: ${path.join(SHOTS, 'failure.png')}`); }
  } catch { /* ignore */ }
} finally {
  try {
    if (conn) {
      const c2 = await conn.createChannel();
      await c2.deleteQueue(queue);
      await conn.close();
    }
  } catch (e) { console.error(`cleanup: could not delete queue ${queue}: ${e.message}`); }
  if (browser) await browser.close().catch(() => {});
}
process.exit(rc);
