// Drives keel-fleetd's read-only dashboard in Debian's Chromium (headless):
// the security headers of the shell and its assets, the token prompt (a
// refused token, then a read token), the device counts and the versions
// chart, a campaign's progress bar, the alert table with a hostile alert
// detail shown as text (no element, no script), the 10-second refresh, the
// token kept per tab, and forgetting it. It also fails on any console error,
// uncaught exception, CSP violation, 5xx answer or request elsewhere.
//
// Run by tests/integration/fleet_dashboard.sh against a real keel-fleetd. Environment:
//   KEEL_UI_URL            base URL, e.g. https://127.0.0.1:8445
//   KEEL_UI_TOKEN          a read-only operator token
//   KEEL_UI_DEVICES        number of registered devices
//   KEEL_UI_VERSIONS       expected bars: "model version count,..." (e.g. "plug-1 1.0.0 2,plug-1 1.1.0 1")
//   KEEL_UI_CAMPAIGN       the id of a running campaign
//   KEEL_UI_HOSTILE        the hostile text an alert's detail carries
//   KEEL_UI_ADD_ALERT      a command that adds an alert with detail text "late-alert" (run once)
//   KEEL_UI_ARTIFACTS      directory for screenshots (created)
//   KEEL_CHROMIUM          optional: the browser (default: chromium on PATH)
//   KEEL_UI_NODE_DIR       optional: where `npm ci` installed playwright-core
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { execSync } from 'node:child_process';
import { envReader, launch, check, eq, until, tid, watchedPage, runScenarios } from './lib.mjs';

const env = envReader('fleet_dashboard');
const BASE = env('KEEL_UI_URL').replace(/\/+$/, '');
const TOKEN = env('KEEL_UI_TOKEN');
const DEVICES = Number(env('KEEL_UI_DEVICES'));
const VERSIONS = env('KEEL_UI_VERSIONS').split(',').map((s) => s.trim().split(/\s+/));
const CAMPAIGN = env('KEEL_UI_CAMPAIGN');
const HOSTILE = env('KEEL_UI_HOSTILE');
const ADD_ALERT = env('KEEL_UI_ADD_ALERT');
const ARTIFACTS = env('KEEL_UI_ARTIFACTS');
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; " +
  "base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

mkdirSync(ARTIFACTS, { recursive: true });
let shot = 0;
async function screenshot(page, name) {
  shot += 1;
  await page.screenshot({ path: join(ARTIFACTS, `fleet-${String(shot).padStart(2, '0')}-${name}.png`), fullPage: true });
}

const text = async (page, id) => ((await tid(page, id).first().textContent()) || '').trim();

async function enterToken(page, token) {
  await tid(page, 'view-token').waitFor({ state: 'visible' });
  await page.fill('#token-input', token);
  await tid(page, 'token-submit').click();
}

async function dashboardShown(page) {
  await page.locator('[data-testid="view-dash"][aria-busy="false"]').waitFor({ state: 'visible' });
}

const scenarios = [];
const scenario = (name, fn) => scenarios.push({ name, fn });

scenario('the shell and its assets: strict headers, nothing to read without a token', async ({ page }) => {
  for (const path of ['/', '/dashboard']) {
    const res = await page.request.get(BASE + path);
    eq(res.status(), 200, `GET ${path}`);
    const h = res.headers();
    eq(h['content-security-policy'], CSP, `Content-Security-Policy of ${path}`);
    eq(h['x-frame-options'], 'DENY', `X-Frame-Options of ${path}`);
    eq(h['x-content-type-options'], 'nosniff', `X-Content-Type-Options of ${path}`);
    eq(h['referrer-policy'], 'no-referrer', `Referrer-Policy of ${path}`);
    check((h['content-type'] || '').startsWith('text/html'), `content type of ${path}: ${h['content-type']}`);
    check(!('server' in h), `a Server header on ${path}: ${h.server}`);
  }
  for (const [path, type] of [['/dashboard.js', 'text/javascript'], ['/dashboard.css', 'text/css'], ['/index.html', 'text/html']]) {
    const r = await page.request.get(BASE + path);
    eq(r.status(), 200, `GET ${path}`);
    check((r.headers()['content-type'] || '').startsWith(type), `content type of ${path}`);
    eq(r.headers()['content-security-policy'], CSP, `CSP of ${path}`);
  }
  eq((await page.request.get(BASE + '/app.js')).status(), 404, "GET /app.js (keeld's UI is not served here)");
  eq((await page.request.get(BASE + '/api/v1/status')).status(), 401, 'GET /api/v1/status without a token');
  eq((await page.request.post(BASE + '/')).status(), 405, 'POST /');
  const html = await (await page.request.get(BASE + '/')).text();
  check(!/<script(?![^>]*\bsrc=)[^>]*>/i.test(html), 'an inline script in the shell');
  check(!/\bstyle=|<style/i.test(html), 'inline style in the shell');
  check(!/\bon[a-z]+=/i.test(html), 'an inline event handler in the shell');
  await page.goto(BASE + '/');
  await tid(page, 'view-token').waitFor({ state: 'visible' });
  check(!(await tid(page, 'view-dash').isVisible()), 'the dashboard shows before a token');
  await screenshot(page, 'token');
});

scenario('a refused token: an error, nothing stored', async ({ page }) => {
  await enterToken(page, 'kft_not-a-token');
  await until(async () => (await tid(page, 'token-error').isVisible()) && /refused/i.test(await text(page, 'token-error')),
    'the refused-token message');
  eq(await page.evaluate(() => sessionStorage.getItem('keel_fleet_token')), null, 'a refused token kept in sessionStorage');
  check(!(await tid(page, 'view-dash').isVisible()), 'the dashboard shows after a refused token');
});

scenario('a read token: devices, versions chart, ingest', async ({ page }) => {
  await enterToken(page, TOKEN);
  await dashboardShown(page);
  eq(await page.evaluate(() => sessionStorage.getItem('keel_fleet_token')), TOKEN, 'the token in sessionStorage');
  eq(await page.evaluate(() => localStorage.length), 0, 'anything in localStorage');
  eq(await page.evaluate(() => document.cookie), '', 'a cookie');
  eq(await text(page, 'state-devices'), String(DEVICES), 'devices');
  eq(await text(page, 'state-active'), String(DEVICES), 'active devices');
  eq(await text(page, 'state-revoked'), '0', 'revoked devices');
  const bars = await tid(page, 'version-bar').evaluateAll((els) => els.map((e) => [e.dataset.model, e.dataset.version, e.dataset.devices, Number(e.getAttribute('width'))]));
  eq(bars.length, VERSIONS.length, `version bars ${JSON.stringify(bars)}`);
  for (const [model, version, count] of VERSIONS) {
    const b = bars.find((x) => x[0] === model && x[1] === version);
    check(b, `no bar for ${model} ${version}: ${JSON.stringify(bars)}`);
    eq(b[2], count, `devices of ${model} ${version}`);
  }
  // the widest bar is the largest count
  const widest = bars.reduce((a, b) => (b[3] > a[3] ? b : a));
  eq(Number(widest[2]), Math.max(...VERSIONS.map((v) => Number(v[2]))), 'the widest bar');
  eq(await tid(page, 'versions').locator('svg').count(), 1, 'the chart is one inline SVG');
  eq(await text(page, 'ingest-broker'), 'not configured', 'broker in the ingest box');
  await screenshot(page, 'dashboard');
});

scenario('campaigns: a progress bar per campaign, by state', async ({ page }) => {
  const c = page.locator(`[data-testid="campaign"][data-id="${CAMPAIGN}"]`);
  await c.waitFor({ state: 'visible' });
  eq(await c.getAttribute('data-state'), 'running', 'campaign state');
  const parts = await c.locator('rect[data-state]').evaluateAll((els) => els.map((e) => [e.dataset.state, e.dataset.count]));
  check(parts.length >= 1, 'a campaign bar without a segment');
  check(parts.some(([s]) => s === 'notified'), `no notified segment: ${JSON.stringify(parts)}`);
  check(/plug-1 1\.1\.0/.test((await c.textContent()) || ''), 'the campaign title');
});

scenario('alerts: a hostile detail is text, never markup', async ({ page }) => {
  const rows = tid(page, 'alert');
  await until(async () => (await rows.count()) >= 1, 'the alert row');
  const details = await page.locator('#alerts td.detail').allTextContents();
  check(details.some((d) => d.includes(HOSTILE)), `the hostile detail is not shown as text: ${JSON.stringify(details)}`);
  eq(await page.locator('#alerts img, #alerts script, #alerts iframe, #alerts svg').count(), 0, 'elements from an alert');
  eq(await page.evaluate(() => window.__pwned === undefined), true, 'the hostile detail ran');
  await screenshot(page, 'alerts');
});

scenario('the dashboard refreshes by itself within 10 s', async ({ page }) => {
  execSync(ADD_ALERT, { stdio: 'inherit' });
  await until(async () => (await page.locator('#alerts td.detail').allTextContents()).some((d) => d.includes('late-alert')),
    'the new alert after a refresh', 15000);
});

scenario('the token stays in its tab: a reload keeps it, a new session asks again', async ({ page, context }) => {
  await page.reload();
  await dashboardShown(page);
  const other = await context.browser().newContext({ ignoreHTTPSErrors: true });
  const p2 = await other.newPage();
  await p2.goto(BASE + '/');
  await tid(p2, 'view-token').waitFor({ state: 'visible' });
  await other.close();
});

scenario('forget token: back to the prompt, nothing stored', async ({ page }) => {
  await tid(page, 'logout').click();
  await tid(page, 'view-token').waitFor({ state: 'visible' });
  eq(await page.evaluate(() => sessionStorage.getItem('keel_fleet_token')), null, 'the token after forgetting it');
  check(!(await tid(page, 'view-dash').isVisible()), 'the dashboard after forgetting the token');
});

const problems = [];
const browser = await launch('fleet_dashboard');
let r;
try {
  const { context, page } = await watchedPage(browser, { ignoreHTTPSErrors: true, viewport: { width: 1200, height: 900 } }, problems,
    /^Failed to load resource: the server responded with a status of 401/); // the refused token's 401, on purpose
  page.on('request', (req) => {
    if (!req.url().startsWith(BASE) && !req.url().startsWith('data:')) problems.push(`a request elsewhere: ${req.url()}`);
  });
  r = await runScenarios(scenarios, { page, context }, problems, {
    shoot: screenshot,
    junk: /\[object \w+\]|\bundefined\b|\bNaN\b/,
    clean: 'no console errors, uncaught exceptions, CSP violations, 5xx answers or requests elsewhere',
  });
  await context.close();
} finally {
  await browser.close();
}
const { passed, failed } = r;
console.log(`fleet_dashboard: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 && passed === scenarios.length + 1 ? 0 : 1);
