// Drives keeld's setup UI in Debian's Chromium (headless), the way an owner
// would on first run: a failed login and the throttle's message, the forced
// password change with the policy's refusals, the secure-setup guide, the
// dashboard (the certificate fingerprint must be the one on the label), the
// security check, an update upload (when given bundles), logout, and a
// factory reset that brings the label password back. It also fails on any
// console error, uncaught exception, CSP violation or 5xx answer.
//
// Run by tests/integration/keeld_ui.sh against a real keeld. Environment:
//   KEEL_UI_URL              base URL, e.g. https://127.0.0.1:8443
//   KEEL_UI_LABEL_PASSWORD   the password printed on the label
//   KEEL_UI_MODEL, KEEL_UI_SERIAL, KEEL_UI_DEVICE_ID
//   KEEL_UI_CERT_SHA256      the fingerprint on the label (AA:BB:...)
//   KEEL_UI_ARTIFACTS        directory for screenshots (created)
//   KEEL_UI_SUPPORT_UNTIL    optional: the support date the device must show
//   KEEL_UI_FIRMWARE         optional: the firmware version the device must show
//   KEEL_UI_BUNDLE           optional: a signed bundle that raises the security version
//   KEEL_UI_BUNDLE_VERSION   optional: its version
//   KEEL_UI_BAD_BUNDLE       optional: a file the device must refuse
//   KEEL_CHROMIUM            optional: the browser (default: chromium on PATH)
//   KEEL_UI_NODE_DIR         optional: where `npm ci` installed playwright-core
//                            (default: tests/ui/node_modules)
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { envReader, launch, Failure, check, eq, sleep, until, tid, watchedPage, runScenarios } from './lib.mjs';

const env = envReader('first_run');
const BASE = env('KEEL_UI_URL').replace(/\/+$/, '');
const LABEL = env('KEEL_UI_LABEL_PASSWORD');
const MODEL = env('KEEL_UI_MODEL');
const SERIAL = env('KEEL_UI_SERIAL');
const DEVICE_ID = env('KEEL_UI_DEVICE_ID');
const FINGERPRINT = env('KEEL_UI_CERT_SHA256').toUpperCase();
const ARTIFACTS = env('KEEL_UI_ARTIFACTS');
const SUPPORT_UNTIL = env('KEEL_UI_SUPPORT_UNTIL', '');
const FIRMWARE = env('KEEL_UI_FIRMWARE', '');
const BUNDLE = env('KEEL_UI_BUNDLE', '');
const BUNDLE_VERSION = env('KEEL_UI_BUNDLE_VERSION', '');
const BAD_BUNDLE = env('KEEL_UI_BAD_BUNDLE', '');
const NEW_PASSWORD = `garden-lantern-${randomBytes(4).toString('hex')}-river`;

const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
  "base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

mkdirSync(ARTIFACTS, { recursive: true });
let shot = 0;
async function screenshot(page, name) {
  shot += 1;
  const file = join(ARTIFACTS, `${String(shot).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
}

// ---- page helpers -----------------------------------------------------------

const visible = (page, id) => tid(page, id).isVisible();
const text = async (page, id) => ((await tid(page, id).textContent()) || '').trim();

async function waitView(page, name) {
  await tid(page, `view-${name}`).waitFor({ state: 'visible' });
}

async function login(page, user, password) {
  await waitView(page, 'login');
  await page.fill('#login-username', user);
  await page.fill('#login-password', password);
  await tid(page, 'login-submit').click();
}

// The login error, once the submit has been answered.
async function loginError(page) {
  return until(async () => (await visible(page, 'login-error')) && (await text(page, 'login-error')), 'the login error');
}

// fetch from inside the page (same origin, the page's cookie).
async function pageFetch(page, method, path, body, csrf) {
  return page.evaluate(async ([m, p, b, c]) => {
    const headers = {};
    if (b !== null) headers['Content-Type'] = 'application/json';
    if (c) headers['X-CSRF-Token'] = sessionStorage.getItem('keel_csrf') || '';
    const r = await fetch(p, { method: m, headers, body: b === null ? undefined : JSON.stringify(b), credentials: 'same-origin' });
    const t = await r.text();
    let j = null;
    try { j = JSON.parse(t); } catch { j = null; }
    return { status: r.status, body: j };
  }, [method, path, body === undefined ? null : body, !!csrf]);
}

async function sessionCookie(context) {
  return (await context.cookies(BASE)).find((c) => c.name === 'keel_session');
}

// Opens a dashboard page and waits until it has loaded (aria-busy back to false).
async function gotoTab(page, name) {
  await tid(page, `tab-${name}`).click();
  await page.locator(`[data-testid="page-${name}"][aria-busy="false"]`).waitFor({ state: 'visible' });
}

async function securityVerdicts(page) {
  await gotoTab(page, 'security');
  const ids = ['check-password', 'check-auto-updates', 'check-firmware', 'check-support'];
  return until(async () => {
    const out = {};
    for (const id of ids) {
      const v = await tid(page, id).getAttribute('data-verdict');
      if (!v) return null;
      out[id] = v;
    }
    return out;
  }, 'the security check verdicts');
}

async function setAutomaticUpdates(page, on) {
  await gotoTab(page, 'updates');
  await until(async () => (await text(page, 'update-state')) !== '', 'the update page to load');
  await tid(page, 'set-automatic').setChecked(on);
  await tid(page, 'settings-save').click();
  await until(async () => /saved/i.test(await text(page, 'settings-status')), 'settings saved');
  eq(await tid(page, 'set-automatic').isChecked(), on, 'automatic updates checkbox after save');
}

// ---- the scenarios ------------------------------------------------------------

const scenarios = [];
const scenario = (name, fn) => scenarios.push({ name, fn });

scenario('landing page: security headers, login screen for a device to set up', async ({ page }) => {
  const res = await page.goto(BASE + '/');
  eq(res.status(), 200, 'GET /');
  const h = res.headers();
  eq(h['content-security-policy'], CSP, 'Content-Security-Policy of /');
  eq(h['x-content-type-options'], 'nosniff', 'X-Content-Type-Options of /');
  check(/max-age=\d+/.test(h['strict-transport-security'] || ''), 'Strict-Transport-Security on /');
  eq(h['referrer-policy'], 'no-referrer', 'Referrer-Policy of /');
  check(!('server' in h), `a Server header on /: ${h.server}`);
  check((h['content-type'] || '').startsWith('text/html'), `content type of /: ${h['content-type']}`);
  for (const [path, type] of [['/app.js', 'text/javascript'], ['/app.css', 'text/css'], ['/favicon.svg', 'image/svg+xml'], ['/index.html', 'text/html']]) {
    const r = await page.request.get(BASE + path);
    eq(r.status(), 200, `GET ${path}`);
    check((r.headers()['content-type'] || '').startsWith(type), `content type of ${path}: ${r.headers()['content-type']}`);
    eq(r.headers()['x-content-type-options'], 'nosniff', `X-Content-Type-Options of ${path}`);
  }
  eq((await page.request.get(BASE + '/no-such-page.html')).status(), 404, 'GET of a file the UI does not have');
  await waitView(page, 'login');
  check(await page.locator('#login-first-run').isVisible(), 'first-run hint on the login screen');
  eq(await text(page, 'topbar-model'), MODEL, 'model in the top bar');
  check(await page.getByLabel('Password', { exact: true }).isVisible(), 'the password field has a label');
  await screenshot(page, 'login');
});

scenario('failed login: generic error, no session; throttled: wait N seconds', async ({ page, context }) => {
  await login(page, 'admin', LABEL + 'x');
  const err = await loginError(page);
  check(/user name or password is wrong/i.test(err), `login error says: ${err}`);
  await login(page, 'root', LABEL);
  const err2 = await loginError(page);
  eq(err2, err, 'a wrong user name gets the same answer as a wrong password');
  check(!(await sessionCookie(context)), 'a failed login set a session cookie');
  eq(await page.evaluate(() => sessionStorage.getItem('keel_csrf')), null, 'CSRF token after a failed login');
  eq((await pageFetch(page, 'GET', '/api/v1/device')).status, 401, 'GET /api/v1/device after a failed login');
  await screenshot(page, 'login-failed');

  // Keep failing until the throttle answers (the first few failures are free).
  let throttled = null;
  for (let i = 0; i < 6 && !throttled; i++) {
    await page.fill('#login-password', '');
    await login(page, 'admin', `wrong-${i}-${LABEL}`);
    const e = await loginError(page);
    if (/too many attempts/i.test(e)) throttled = e;
    else check(/user name or password is wrong/i.test(e), `login error says: ${e}`);
  }
  check(throttled, 'no "too many attempts" after 8 failed logins');
  const m = /wait (\d+) seconds?/i.exec(throttled);
  check(m, `throttle message without "wait N seconds": ${throttled}`);
  await screenshot(page, 'login-throttled');
  const wait = Number(m[1]);
  check(wait >= 1 && wait <= 60, `retry_after ${wait} out of range`);
  await sleep((wait + 1) * 1000);
});

scenario('first run: label password, forced change with policy refusals, guide, dashboard', async ({ page, context }) => {
  await login(page, 'admin', LABEL);
  await waitView(page, 'password');
  check(await tid(page, 'password-policy').isVisible(), 'the password policy is explained');
  check(/10 characters/.test(await text(page, 'password-policy')), 'the policy names the minimum length');
  check(!(await page.locator('#cp-current').isVisible()), 'the label password is asked twice');
  const cookie = await sessionCookie(context);
  check(cookie, 'no keel_session cookie after login');
  check(cookie.httpOnly && cookie.secure && cookie.sameSite === 'Strict', `cookie flags ${JSON.stringify(cookie)}`);
  check(!(await page.evaluate(() => document.cookie)).includes('keel_session'), 'the session cookie is readable by script');
  check((await page.evaluate(() => sessionStorage.getItem('keel_csrf') || '')).length >= 32, 'CSRF token kept');
  // Until the change, only the password route answers.
  const dev = await pageFetch(page, 'GET', '/api/v1/device');
  eq(dev.status, 403, 'GET /api/v1/device before the password change');
  eq(dev.body && dev.body.error, 'password_change_required', 'error of GET /api/v1/device before the change');
  await screenshot(page, 'password-forced');

  const refuse = async (pw, reason) => {
    await page.fill('#cp-new', pw);
    await page.fill('#cp-confirm', pw);
    await tid(page, 'cp-submit').click();
    await until(async () => (await tid(page, 'cp-error').getAttribute('data-reason')) !== null && (await visible(page, 'cp-error')),
      `the refusal of ${reason}`);
    eq(await tid(page, 'cp-error').getAttribute('data-reason'), reason, `reason for refusing "${pw}"`);
    const msg = await text(page, 'cp-error');
    check(msg.length > 10, `refusal of ${reason} has no explanation: "${msg}"`);
    await waitView(page, 'password');
    return msg;
  };
  const short = await refuse('Ab1-xyz', 'too_short');
  check(/10/.test(short), `the too-short message does not name the minimum: ${short}`);
  await screenshot(page, 'password-too-short');
  await refuse('1234567890', 'common');
  await refuse(`home-${SERIAL.toLowerCase()}-x`, 'contains_serial');
  await refuse(`My${MODEL.toUpperCase()}device!`, 'contains_model');
  await screenshot(page, 'password-refused');

  // A reload forgets the label password: the page asks for it, and a wrong one is refused.
  await page.reload();
  await waitView(page, 'password');
  check(await page.locator('#cp-current').isVisible(), 'the current password is not asked after a reload');
  await page.fill('#cp-current', LABEL + 'x');
  await page.fill('#cp-new', NEW_PASSWORD);
  await page.fill('#cp-confirm', NEW_PASSWORD);
  await tid(page, 'cp-submit').click();
  const wrong = await until(async () => (await visible(page, 'cp-error')) && text(page, 'cp-error'), 'the wrong-current-password error');
  check(/current password is wrong/i.test(wrong), `a wrong current password: ${wrong}`);
  await waitView(page, 'password');
  await page.fill('#cp-current', LABEL);

  await page.fill('#cp-new', NEW_PASSWORD);
  await page.fill('#cp-confirm', NEW_PASSWORD + 'x');
  await tid(page, 'cp-submit').click();
  check(/not the same/i.test(await until(() => text(page, 'cp-error'), 'the mismatch error')), 'mismatch error');

  await page.fill('#cp-confirm', NEW_PASSWORD);
  await tid(page, 'cp-submit').click();
  await waitView(page, 'guide');
  await until(async () => (await text(page, 'guide-fingerprint')) !== '', 'the fingerprint in the guide');
  eq((await text(page, 'guide-fingerprint')).toUpperCase(), FINGERPRINT, 'certificate fingerprint in the guide');
  const guide = await text(page, 'view-guide');
  for (const topic of [/automatic updates/i, /fingerprint/i, /support/i, /factory reset/i]) {
    check(topic.test(guide), `the guide does not mention ${topic}`);
  }
  await screenshot(page, 'guide');

  await tid(page, 'guide-done').click();
  await waitView(page, 'dashboard');
  await tid(page, 'page-device').waitFor({ state: 'visible' });
  await until(async () => (await text(page, 'device-model')) === MODEL, 'the model on the dashboard');
  eq(await text(page, 'device-serial'), SERIAL, 'serial on the dashboard');
  eq(await text(page, 'device-id'), DEVICE_ID, 'device id on the dashboard');
  eq((await text(page, 'device-fingerprint')).toUpperCase(), FINGERPRINT, 'certificate fingerprint on the dashboard');
  const support = await text(page, 'device-support-until');
  check(support !== '' && support !== '—', 'no support period on the dashboard');
  if (SUPPORT_UNTIL) eq(support, SUPPORT_UNTIL, 'support period on the dashboard');
  eq(await tid(page, 'device-support-status').getAttribute('data-expired'), 'false', 'support period over');
  if (FIRMWARE) eq(await text(page, 'device-firmware'), FIRMWARE, 'firmware version on the dashboard');
  const st = await pageFetch(page, 'GET', '/api/v1/status');
  eq(st.body && st.body.setup_required, false, 'setup_required after the password change');
  await screenshot(page, 'dashboard');
  // The same on a phone.
  const size = page.viewportSize();
  await page.setViewportSize({ width: 390, height: 844 });
  check(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1), 'the dashboard scrolls sideways on a phone');
  await screenshot(page, 'dashboard-phone');
  await page.setViewportSize(size);
});

scenario('security check: automatic updates off fails, on passes; CSRF enforced', async ({ page }) => {
  let v = await securityVerdicts(page);
  eq(v['check-password'], 'pass', 'password check');
  eq(v['check-auto-updates'], 'pass', 'automatic updates check');
  eq(v['check-firmware'], 'pass', 'firmware check');
  eq(v['check-support'], 'pass', 'support period check');
  await screenshot(page, 'security-pass');

  await setAutomaticUpdates(page, false);
  check(await visible(page, 'settings-warning'), 'no warning with automatic updates off');
  v = await securityVerdicts(page);
  eq(v['check-auto-updates'], 'fail', 'automatic updates check when off');
  eq(v['check-password'], 'pass', 'password check');
  check(/1 of 4/.test(await text(page, 'security-summary')), 'summary counts the failure');
  await screenshot(page, 'security-auto-off');

  await setAutomaticUpdates(page, true);
  v = await securityVerdicts(page);
  eq(v['check-auto-updates'], 'pass', 'automatic updates check when back on');

  // Postponing is kept and shown; clearing it sends null.
  await gotoTab(page, 'updates');
  await until(async () => (await text(page, 'update-state')) !== '', 'the update page to load');
  await page.fill('#set-postpone', '2031-01-15');
  await tid(page, 'settings-save').click();
  await until(async () => /saved/i.test(await text(page, 'settings-status')), 'postponement saved');
  eq((await pageFetch(page, 'GET', '/api/v1/settings')).body.postpone_until, '2031-01-15', 'postpone_until after saving');
  v = await securityVerdicts(page);
  check(/postponed until 2031-01-15/i.test(await text(page, 'check-auto-updates')), 'postponement in the security check');
  await gotoTab(page, 'updates');
  await until(async () => (await tid(page, 'set-postpone').inputValue()) === '2031-01-15', 'the saved postponement in the form');
  await page.locator('#set-postpone-clear').click();
  await tid(page, 'settings-save').click();
  await until(async () => /saved/i.test(await text(page, 'settings-status')), 'postponement cleared');
  eq((await pageFetch(page, 'GET', '/api/v1/settings')).body.postpone_until, null, 'postpone_until after clearing');

  // The cookie alone does not change anything.
  const noCsrf = await pageFetch(page, 'PUT', '/api/v1/settings', { automatic_updates: false });
  eq(noCsrf.status, 403, 'PUT /api/v1/settings without X-CSRF-Token');
  eq(noCsrf.body && noCsrf.body.error, 'csrf_failed', 'error of a PUT without X-CSRF-Token');
  const s = await pageFetch(page, 'GET', '/api/v1/settings');
  eq(s.body && s.body.automatic_updates, true, 'automatic updates after a refused PUT');
});

scenario('updates: a refused file, a security update staged, banner, install', async ({ page }) => {
  if (!BUNDLE) return 'skipped: no KEEL_UI_BUNDLE';
  await gotoTab(page, 'updates');
  await until(async () => (await text(page, 'update-state')) !== '', 'the update page to load');
  check(!(await visible(page, 'update-banner')), 'security banner with nothing staged');
  if (BAD_BUNDLE) {
    await tid(page, 'bundle-file').setInputFiles(BAD_BUNDLE);
    await tid(page, 'bundle-upload').click();
    const e = await until(async () => (await visible(page, 'bundle-error')) && text(page, 'bundle-error'), 'the refusal of a bad bundle');
    check(/refused/i.test(e), `bad bundle error: ${e}`);
    await screenshot(page, 'update-refused');
  }
  await tid(page, 'bundle-file').setInputFiles(BUNDLE);
  await tid(page, 'bundle-upload').click();
  await until(() => visible(page, 'update-staged'), 'the staged update', 60000);
  check(await visible(page, 'update-banner'), 'no "Security update required" banner');
  check(/security update required/i.test(await text(page, 'update-banner')), 'banner text');
  if (BUNDLE_VERSION) eq(await text(page, 'staged-version'), BUNDLE_VERSION, 'staged version');
  check(/CVE-/.test(await text(page, 'staged-fixes')), 'security fixes of the staged update');
  eq(await tid(page, 'staged-disruptive').getAttribute('data-disruptive'), 'true', 'disruptive flag');
  check(/\d+ seconds?/.test(await text(page, 'staged-disruptive')), 'downtime shown');
  check(!/^—$/.test(await text(page, 'staged-risk')), 'risk of not installing shown');
  eq(await tid(page, 'update-state').getAttribute('data-state'), 'staged', 'update state');
  await screenshot(page, 'update-staged');

  let v = await securityVerdicts(page);
  eq(v['check-firmware'], 'fail', 'firmware check with a security update waiting');
  check(await visible(page, 'security-banner-top'), 'no security update banner on the dashboard');
  await screenshot(page, 'security-update-waiting');

  await gotoTab(page, 'updates');
  await until(async () => !(await tid(page, 'update-apply').isDisabled()), 'the install button');
  await tid(page, 'update-apply').click();
  await until(async () => {
    if (await visible(page, 'update-apply-error')) throw new Failure(`install refused: ${await text(page, 'update-apply-error')}`);
    if (await visible(page, 'update-last-error')) throw new Failure(`install failed: ${await text(page, 'update-last-error')}`);
    return (await tid(page, 'update-state').getAttribute('data-state')) === 'installed';
  }, 'the installed state', 120000);
  check(await visible(page, 'update-pending'), 'no restart hint once installed');
  check(/slot [AB]\b.*restart/i.test(await text(page, 'update-pending')), `restart hint: ${await text(page, 'update-pending')}`);
  check(!(await visible(page, 'update-banner')), 'security banner once installed');
  await screenshot(page, 'update-installed');
  v = await securityVerdicts(page);
  eq(v['check-firmware'], 'fail', 'firmware check with an update waiting for a restart');
  return undefined;
});

scenario('logout: the label password no longer logs in, the new one does', async ({ page, context }) => {
  await tid(page, 'logout').click();
  await waitView(page, 'login');
  check(/logged out/i.test(await text(page, 'notice')), 'logout notice');
  eq((await pageFetch(page, 'GET', '/api/v1/device')).status, 401, 'GET /api/v1/device after logout');
  check(!(await page.locator('#login-first-run').isVisible()), 'first-run hint after setup');
  await login(page, 'admin', LABEL);
  const e = await loginError(page);
  check(/user name or password is wrong/i.test(e), `label password after the change: ${e}`);
  check(!(await sessionCookie(context)), 'the label password made a session');
  await screenshot(page, 'label-password-refused');
  await login(page, 'admin', NEW_PASSWORD);
  await waitView(page, 'dashboard');
  await until(async () => (await text(page, 'device-model')) === MODEL, 'the dashboard after logging in again');
});

scenario('factory reset: password re-asked, then the label password is back', async ({ page }) => {
  await gotoTab(page, 'reset');
  check(/erase/i.test(await text(page, 'page-reset')), 'reset instructions');
  await page.fill('#reset-password', NEW_PASSWORD);
  await tid(page, 'reset-submit').click();
  check(/tick the box/i.test(await until(() => text(page, 'reset-error'), 'the confirm-box error')), 'reset without the box');
  await tid(page, 'reset-confirm').check();
  await page.fill('#reset-password', NEW_PASSWORD + 'x');
  await tid(page, 'reset-submit').click();
  const e = await until(async () => (await visible(page, 'reset-error')) && !/tick/i.test(await text(page, 'reset-error')) && text(page, 'reset-error'),
    'the wrong-password error');
  check(/password is wrong/i.test(e), `reset with a wrong password: ${e}`);
  await waitView(page, 'dashboard');
  await screenshot(page, 'reset-wrong-password');

  await page.fill('#reset-password', NEW_PASSWORD);
  await tid(page, 'reset-submit').click();
  await waitView(page, 'login');
  check(/reset/i.test(await text(page, 'notice')), 'reset notice');
  check(await page.locator('#login-first-run').isVisible(), 'first-run hint after the reset');
  await screenshot(page, 'reset-done');
  await login(page, 'admin', NEW_PASSWORD);
  check(/user name or password is wrong/i.test(await loginError(page)), 'the erased password still logs in');
  await login(page, 'admin', LABEL);
  await waitView(page, 'password');
  await screenshot(page, 'after-reset-forced-change');
});

// ---- run ----------------------------------------------------------------------

const problems = [];
const browser = await launch('first_run');
let r;
try {
  const { context, page } = await watchedPage(browser, { ignoreHTTPSErrors: true, viewport: { width: 1100, height: 800 } }, problems,
    /^Failed to load resource: the server responded with a status of 4\d\d/); // the scenarios provoke 4xx answers on purpose
  page.on('requestfailed', (req) => {
    if (!req.url().startsWith(BASE)) problems.push(`request outside the device: ${req.url()}`);
  });
  page.on('request', (req) => {
    if (!req.url().startsWith(BASE) && !req.url().startsWith('data:')) problems.push(`request outside the device: ${req.url()}`);
  });
  r = await runScenarios(scenarios, { page, context }, problems, {
    shoot: screenshot,
    clean: 'no console errors, uncaught exceptions, CSP violations or 5xx answers',
  });
  await context.close();
} finally {
  await browser.close();
}
const { passed, failed, skipped } = r;
console.log(`screenshots in ${ARTIFACTS}`);
console.log(`first_run: ${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
process.exit(failed ? 1 : 0);
