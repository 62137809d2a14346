// The owner's privacy page in Debian's Chromium (headless): what the device
// senses, keeps and sends and why, consent withdrawn and given again (the
// history shows both), "Download my data" (a JSON file holding the consent
// history), the cloud link figures on the Device page and the cloud erase
// requests on the Factory reset page. Fails on any console error, uncaught
// exception, CSP violation or 5xx answer.
//
// Run by tests/integration/keeld_privacy.sh against a keeld that was set up
// (own password) with the thermostat's declaration, after one factory reset.
// Environment:
//   KEEL_UI_URL          base URL, e.g. https://127.0.0.1:8443
//   KEEL_UI_PASSWORD     the administrator password
//   KEEL_UI_ARTIFACTS    directory for screenshots (created)
//   KEEL_CHROMIUM        optional: the browser (default: chromium on PATH)
//   KEEL_UI_NODE_DIR     optional: where `npm ci` installed playwright-core
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { envReader, launch, Failure, check, tid, noJunk, watchedPage } from './lib.mjs';

const env = envReader('privacy');
const BASE = env('KEEL_UI_URL').replace(/\/+$/, '');
const PASSWORD = env('KEEL_UI_PASSWORD');
const ARTIFACTS = env('KEEL_UI_ARTIFACTS');
const text = async (page, id) => ((await tid(page, id).textContent()) || '').trim();
mkdirSync(ARTIFACTS, { recursive: true });

async function gotoTab(page, name) {
  await tid(page, `tab-${name}`).click();
  await page.locator(`[data-testid="page-${name}"][aria-busy="false"]`).waitFor({ state: 'visible' });
}

const problems = [];
const browser = await launch('privacy');
let failed = 0;
try {
  const { context, page } = await watchedPage(browser, { ignoreHTTPSErrors: true, acceptDownloads: true, viewport: { width: 1100, height: 900 } },
    problems, /^Failed to load resource: the server responded with a status of 4\d\d/);
  try {
    await page.goto(BASE + '/');
    await tid(page, 'view-login').waitFor({ state: 'visible' });
    await page.fill('#login-username', 'admin');
    await page.fill('#login-password', PASSWORD);
    await tid(page, 'login-submit').click();
    await tid(page, 'view-dashboard').waitFor({ state: 'visible' });
    console.log('ok   logged in');

    // The Device page: no broker is configured, one message may wait.
    await gotoTab(page, 'device');
    check(/No cloud service/.test(await text(page, 'link-state')), `link state: ${await text(page, 'link-state')}`);
    check((await tid(page, 'outbox-pending').getAttribute('data-pending')) !== '', 'outbox figures missing');
    console.log('ok   the Device page shows the cloud link and the outbox');

    await gotoTab(page, 'privacy');
    check(/Thermo One/.test(await text(page, 'privacy-product')), 'the product name is not shown');
    check(/temperature sensor/i.test(await text(page, 'privacy-sensing')), 'what the device senses is not shown');
    const climate = await text(page, 'category-climate');
    check(/30 days/.test(climate) && /your consent/.test(climate) && /Acme cloud/.test(climate),
      `the climate category lacks retention, basis or recipients: ${climate}`);
    for (const f of ['temperature', 'setpoint', 'heating']) {
      check(await page.locator(`[data-testid="privacy-telemetry"] tr[data-field="${f}"]`).count() === 1, `telemetry field ${f} not listed`);
    }
    await page.screenshot({ path: join(ARTIFACTS, 'privacy-1-page.png'), fullPage: true });
    console.log('ok   the privacy page shows senses, categories, recipients, retention and fields');

    // After the reset the consent is gone: give it, withdraw it, give it again.
    const row = tid(page, 'consent-climate');
    const toggle = tid(page, 'consent-toggle-climate');
    for (const want of ['true', 'false', 'true']) {
      await toggle.click();
      await page.locator(`[data-testid="consent-climate"][data-given="${want}"]`).waitFor();
    }
    check(/version 1/.test((await row.textContent()) || ''), 'the consent version is not shown');
    const log = page.locator('[data-testid="consent-log"] li');
    check(await log.count() === 3, `consent history has ${await log.count()} entries, expected 3`);
    check(/withdrawn/.test((await log.nth(1).textContent()) || ''), 'the withdrawal is not in the history');
    check(/web page/.test((await log.nth(0).textContent()) || ''), 'the history does not say it came from the web page');
    await page.screenshot({ path: join(ARTIFACTS, 'privacy-2-consent.png'), fullPage: true });
    console.log('ok   consent given, withdrawn and given again; the history shows all three');

    const [download] = await Promise.all([page.waitForEvent('download'), tid(page, 'privacy-export').click()]);
    check(/^keel-export-.*\.json$/.test(download.suggestedFilename()), `download name ${download.suggestedFilename()}`);
    const file = await download.path();
    const data = JSON.parse(readFileSync(file, 'utf8'));
    check(data.format === 'keel-export-1', 'the download is not an export');
    check(data.privacy.consent.log.length === 3, 'the export lacks the consent history');
    check(!/argon2/i.test(readFileSync(file, 'utf8')), 'the export holds a password hash');
    console.log('ok   "Download my data" saves the export');

    await gotoTab(page, 'reset');
    const items = page.locator('[data-testid="erase-list"] li');
    check(await items.count() === 1, `erase requests shown: ${await items.count()}`);
    check((await items.first().getAttribute('data-status')) === 'pending', 'the erase request is not pending');
    check(/What it asks of the cloud/.test(await text(page, 'page-reset')), 'no deletion instructions for the cloud');
    await page.screenshot({ path: join(ARTIFACTS, 'privacy-3-reset.png'), fullPage: true });
    console.log('ok   the Factory reset page explains the erase and shows the pending cloud request');
    await noJunk(page);
  } catch (e) {
    failed += 1;
    console.log(`FAIL ${e instanceof Failure ? e.message : e.stack || e}`);
    await page.screenshot({ path: join(ARTIFACTS, 'privacy-failure.png'), fullPage: true }).catch(() => {});
  }
  if (problems.length) {
    failed += 1;
    for (const p of problems) console.log(`FAIL ${p}`);
  }
  await context.close();
} finally {
  await browser.close();
}
console.log(`privacy: ${failed ? 'FAILED' : 'passed'}`);
process.exit(failed ? 1 : 0);
