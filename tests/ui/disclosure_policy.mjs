// The vulnerability disclosure policy page written by `keel disclose`, in
// Debian's Chromium (headless), served by nginx over TLS: the title and
// headings, one link per contact with the right href, the timeline with the
// days that were asked for, safe harbour and scope; the hostile vendor name
// (markup that would run script or load an image) shown as text and nothing
// made from it; the stylesheet applied (its hash is in the CSP). Fails on any
// console error, uncaught exception, CSP violation, dialog, or request other
// than the page itself.
//
// Run by tests/integration/disclose.sh. Environment:
//   KEEL_UI_URL          the page, e.g. https://127.0.0.1:8443/disclosure-policy.html
//   KEEL_UI_EXPECT       JSON: {vendor, product, contacts: [URI...], ack, update, fix}
//   KEEL_UI_ARTIFACTS    directory for screenshots (created)
//   KEEL_CHROMIUM        optional: the browser (default: chromium on PATH)
//   KEEL_UI_NODE_DIR     optional: where `npm ci` installed playwright-core
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { envReader, launch, Failure, check, eq, tid, noJunk, watchedPage } from './lib.mjs';

const env = envReader('disclosure_policy');
const URL_ = env('KEEL_UI_URL');
const WANT = JSON.parse(env('KEEL_UI_EXPECT'));
const ARTIFACTS = env('KEEL_UI_ARTIFACTS');
const text = async (loc) => ((await loc.textContent()) || '').replace(/\s+/g, ' ').trim();
mkdirSync(ARTIFACTS, { recursive: true });

const problems = [];
const requests = [];
const browser = await launch('disclosure_policy');
let failed = 0;
let passed = 0;
const ok = (what) => {
  passed += 1;
  console.log(`ok   ${what}`);
};
try {
  const { context, page } = await watchedPage(browser, { ignoreHTTPSErrors: true, viewport: { width: 1000, height: 900 } },
    problems);
  page.on('dialog', async (d) => {
    problems.push(`a ${d.type()} dialog opened: ${d.message()}`);
    await d.dismiss().catch(() => {});
  });
  page.on('request', (req) => {
    requests.push(req.url());
    if (req.url().split('#')[0] !== URL_) problems.push(`request to ${req.url()}`);
  });
  try {
    const res = await page.goto(URL_);
    check(res && res.status() === 200, `GET ${URL_}: ${res && res.status()}`);
    check((res.headers()['content-type'] || '').startsWith('text/html'), `content-type ${res.headers()['content-type']}`);
    await tid(page, 'title').waitFor({ state: 'visible' });
    await page.screenshot({ path: join(ARTIFACTS, 'policy-1-top.png') });

    // The title names the product and the vendor, as text.
    const wantTitle = `Vulnerability disclosure policy: ${WANT.product} by ${WANT.vendor}`;
    eq(await text(tid(page, 'title')), wantTitle, 'the h1');
    eq(await page.title(), wantTitle, 'the document title');
    const made = await page.evaluate(
      () => document.querySelectorAll('script, img, svg, iframe, object, embed, link, form, input, meta[http-equiv="refresh"]').length,
    );
    eq(made, 0, 'script/img/svg/iframe/link/form elements on the page');
    eq(await page.locator('style').count(), 1, 'style elements');
    ok('the title names product and vendor; the hostile vendor name made no element');

    // The sections a reporter needs, in order.
    const headings = await page.locator('h2').allTextContents();
    eq(JSON.stringify(headings), JSON.stringify(['Scope', 'How to report a vulnerability', 'What to send',
      'What happens next', 'Safe harbour', 'Recognition']), 'the h2 headings');
    check((await text(tid(page, 'scope'))).includes(`This policy covers ${WANT.product} by ${WANT.vendor}`),
      'the scope does not name the product');
    check(/legal action/.test(await text(tid(page, 'safe-harbour'))), 'no safe harbour text');
    check(/proof of concept/.test(await text(tid(page, 'what-to-send'))), 'what to send is missing');
    ok(`headings: ${headings.join(' / ')}`);

    // One link per contact, in order, each with the href asked for.
    const contacts = await tid(page, 'contact').evaluateAll((as) => as.map((a) => [a.getAttribute('href'), a.textContent]));
    eq(contacts.length, WANT.contacts.length, 'contact links');
    WANT.contacts.forEach((c, i) => {
      eq(contacts[i][0], c, `contact ${i} href`);
      eq(contacts[i][1], c.replace(/^(mailto|tel):/, ''), `contact ${i} text`);
    });
    const mail = tid(page, 'contact').first();
    check(await mail.isVisible(), 'the first contact is not visible');
    ok(`${contacts.length} contact links: ${contacts.map((c) => c[0]).join(', ')}`);

    // The timeline with the days that were asked for.
    check((await text(tid(page, 'ack'))).includes(`within ${WANT.ack} working days`), `ack: ${await text(tid(page, 'ack'))}`);
    check((await text(tid(page, 'updates'))).includes(`at least every ${WANT.update} days`), 'status updates');
    check((await text(tid(page, 'fix'))).includes(`within ${WANT.fix} days`), 'fix target');
    const days = await tid(page, 'timeline').locator('strong').allTextContents();
    eq(JSON.stringify(days), JSON.stringify([`${WANT.ack} working days`, `${WANT.update} days`, `${WANT.fix} days`]),
      'the emphasised days');
    ok(`timeline: ${days.join(', ')}`);

    // The stylesheet applies: the CSP let it in by its hash.
    const [font, maxw] = await page.evaluate(() => [getComputedStyle(document.body).fontFamily, getComputedStyle(document.body).maxWidth]);
    check(/system-ui/.test(font) && maxw !== 'none', `the stylesheet did not apply (font ${font}, max-width ${maxw})`);
    const link = await tid(page, 'policy-url').evaluate((a) => getComputedStyle(a).color);
    eq(link, 'rgb(29, 78, 216)', 'link colour');
    ok('the stylesheet applies under the CSP');

    await noJunk(page);
    await page.screenshot({ path: join(ARTIFACTS, 'policy-2-full.png'), fullPage: true });
    await context.close();
  } catch (e) {
    failed += 1;
    console.log(`FAIL ${e instanceof Failure ? e.message : e.stack || e}`);
    await page.screenshot({ path: join(ARTIFACTS, 'policy-failure.png'), fullPage: true }).catch(() => {});
  }
} finally {
  await browser.close();
}
if (problems.length) {
  failed += 1;
  console.log('FAIL the page stayed clean:');
  for (const p of problems) console.log(`     ${p}`);
} else {
  ok(`the page stayed clean (no console error, CSP violation, dialog; requests: ${requests.length})`);
}
console.log(`disclosure_policy: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
