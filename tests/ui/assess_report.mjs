// report.html of `keel assess run` in Debian's Chromium (headless): one cell
// per provision, the counts of report.json, a FAIL cell leading to its
// section, hostile banners shown as text (no dialog, no element made from
// them), the stylesheet allowed by the CSP's hash, readable contrast of every
// verdict's colours, evidence visible when printed. Fails on any console
// error, uncaught exception, CSP violation, dialog, or request other than the
// page itself.
//
// Run by tests/integration/assess_report_ui.sh. Environment:
//   KEEL_UI_URL          the page, e.g. http://127.0.0.1:8080/out/report.html
//   KEEL_UI_REPORT       the report.json it was rendered from
//   KEEL_UI_ARTIFACTS    directory for screenshots and the PDF (created)
//   KEEL_CHROMIUM        optional: the browser (default: chromium on PATH)
//   KEEL_UI_NODE_DIR     optional: where `npm ci` installed playwright-core
import { mkdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { envReader, launch, Failure, check, tid, watchedPage } from './lib.mjs';

const env = envReader('assess_report');
const URL_ = env('KEEL_UI_URL');
const REPORT = JSON.parse(readFileSync(env('KEEL_UI_REPORT'), 'utf8'));
const ARTIFACTS = env('KEEL_UI_ARTIFACTS');
const text = async (loc) => ((await loc.textContent()) || '').trim();
mkdirSync(ARTIFACTS, { recursive: true });

// WCAG 2 contrast ratio of two computed colours "rgb(r, g, b)".
function contrast(fg, bg) {
  const lum = (c) => {
    const [r, g, b] = c.match(/\d+(\.\d+)?/g).slice(0, 3).map((x) => {
      const s = Number(x) / 255;
      return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
  return (a + 0.05) / (b + 0.05);
}

const problems = [];
const browser = await launch('assess_report');
let failed = 0;
try {
  const { context, page } = await watchedPage(browser, { viewport: { width: 1200, height: 900 } }, problems);
  page.on('dialog', async (d) => {
    problems.push(`a ${d.type()} dialog opened: ${d.message()}`);
    await d.dismiss().catch(() => {});
  });
  page.on('request', (req) => {
    if (req.url().split('#')[0] !== URL_) problems.push(`request to ${req.url()}`);
  });
  try {
    const res = await page.goto(URL_);
    check(res && res.status() === 200, `GET ${URL_}: ${res && res.status()}`);
    await tid(page, 'grid').waitFor({ state: 'visible' });
    await page.screenshot({ path: join(ARTIFACTS, 'report-1-top.png') });

    // Nothing from the report became an element.
    const made = await page.evaluate(
      () => document.querySelectorAll('script, img, svg, iframe, object, embed, link, meta[http-equiv="refresh"], a[href^="javascript"]').length,
    );
    check(made === 0, `${made} script/img/svg/iframe/link elements on the page`);
    check((await page.locator('style').count()) === 1, 'more than the one stylesheet');
    const product = await text(tid(page, 'product'));
    const want = `${REPORT.product.manufacturer} ${REPORT.product.model} ${REPORT.product.firmware_version}`;
    check(product === want, `product shown as "${product}", expected "${want}"`);
    check((await page.title()).includes(REPORT.product.model), `title "${await page.title()}" lacks the model`);
    console.log('ok   the hostile product name and banners made no element; the header shows them as text');

    // One cell per provision, in the report's order, each with its verdict in words.
    const cells = tid(page, 'cell');
    check((await cells.count()) === 78 && REPORT.provisions.length === 78, `${await cells.count()} cells`);
    const hrefs = await cells.evaluateAll((as) => as.map((a) => [a.getAttribute('href'), a.dataset.verdict, a.textContent]));
    REPORT.provisions.forEach((p, i) => {
      const [href, verdict, label] = hrefs[i];
      check(href === `#p-${p.id}`, `cell ${i} links to ${href}, expected #p-${p.id}`);
      check(verdict === p.verdict, `cell ${p.id} says ${verdict}, report.json ${p.verdict}`);
      const word = { PASS: 'PASS', FAIL: 'FAIL', NOT_APPLICABLE: 'N/A', INCONCLUSIVE: 'INCONCL.' }[p.verdict];
      check(label.includes(p.id) && label.includes(word) && label.includes(p.status), `cell ${p.id} reads "${label}"`);
    });
    const targets = await page.evaluate(
      (ids) => ids.map((id) => document.querySelectorAll(`[id="p-${id}"]`).length),
      REPORT.provisions.map((p) => p.id),
    );
    check(targets.every((n) => n === 1), 'a cell links to a section that is missing or twice');
    console.log('ok   78 cells in the order of report.json, each with id, M/R and verdict, each linking to one section');

    // The counts are those of report.json.
    const s = REPORT.summary;
    for (const k of ['PASS', 'FAIL', 'NOT_APPLICABLE', 'INCONCLUSIVE']) {
      const shown = await text(tid(page, `count-${k}`));
      check(shown === String(s[k]), `${k}: page ${shown}, report.json ${s[k]}`);
    }
    check((await text(tid(page, 'count-provisions'))) === String(s.provisions), 'provision total');
    check((await text(tid(page, 'count-mandatory'))) === String(s.mandatory), 'mandatory total');
    check((await text(tid(page, 'mandatory-FAIL'))) === String(s.mandatory_fail), 'mandatory FAIL count');
    const overall = await text(tid(page, 'overall'));
    const wantOverall = s.conforming ? /^conforming: no mandatory provision fails/ : new RegExp(`^NOT conforming: ${s.mandatory_fail} mandatory provisions? fails?`);
    check(wantOverall.test(overall), `overall line "${overall}"`);
    console.log(`ok   counts match report.json; "${overall}"`);

    // The stylesheet applies (its hash is in the CSP) and every verdict's colours are readable.
    for (const v of ['PASS', 'FAIL', 'NOT_APPLICABLE', 'INCONCLUSIVE']) {
      const cell = page.locator(`[data-testid="cell"][data-verdict="${v}"]`).first();
      const [fg, bg] = await cell.evaluate((el) => [getComputedStyle(el).color, getComputedStyle(el).backgroundColor]);
      check(bg !== 'rgba(0, 0, 0, 0)', `${v} cell has no background: the stylesheet did not apply`);
      const ratio = contrast(fg, bg);
      check(ratio >= 4.5, `${v} cell: contrast ${ratio.toFixed(2)} (${fg} on ${bg}) is below 4.5`);
    }
    const failBg = await page.locator('[data-testid="cell"][data-verdict="FAIL"]').first().evaluate((el) => getComputedStyle(el).backgroundColor);
    check(failBg === 'rgb(185, 28, 28)', `FAIL cell background ${failBg}`);
    console.log('ok   the stylesheet applies; text on every verdict colour has a contrast of 4.5:1 or more');

    // A FAIL cell leads to its section.
    const firstFail = REPORT.provisions.find((p) => p.verdict === 'FAIL');
    await page.locator(`[data-testid="cell"][href="#p-${firstFail.id}"]`).click();
    await page.waitForFunction((h) => location.hash === h, `#p-${firstFail.id}`);
    const section = page.locator(`[id="p-${firstFail.id}"]`);
    check((await section.getAttribute('data-verdict')) === 'FAIL', 'the linked section is not a FAIL');
    const box = await section.boundingBox();
    check(box && box.y >= -1 && box.y < 900, `the section of ${firstFail.id} is not in view (y ${box && box.y})`);
    check((await text(section.locator('h3'))).startsWith(`${firstFail.id} ${firstFail.title}`), 'the section has the wrong heading');
    check((await text(section.locator('[data-testid="reason"]'))) === firstFail.reason, 'the section does not show the reason');
    await page.screenshot({ path: join(ARTIFACTS, 'report-2-fail.png') });
    console.log(`ok   the FAIL cell ${firstFail.id} leads to its section, with the reason as text`);

    // The evidence: closed, then opened, showing the hostile banner as text.
    const details = section.locator('details').first();
    const ev = details.locator('td.x').nth(1);
    check(!(await ev.isVisible()), 'evidence is shown before its <details> is opened');
    await details.locator('summary').click();
    check(await ev.isVisible(), 'evidence is not shown once opened');
    const obs = firstFail.tests.find((t) => t.evidence.length > 0).evidence[0].observed;
    check((await text(ev)) === obs, `evidence reads "${await text(ev)}", report.json "${obs}"`);
    check(/<script>alert\(1\)<\/script>|<img src=x onerror|<svg onload|<img src=http/.test(obs), 'the evidence chosen is not hostile');
    await page.screenshot({ path: join(ARTIFACTS, 'report-3-evidence.png') });
    console.log(`ok   evidence opens on demand and shows "${obs.slice(0, 60)}..." as text`);

    // Printed, closed evidence is shown too.
    await details.locator('summary').click();
    check(!(await ev.isVisible()), 'evidence did not close');
    await page.emulateMedia({ media: 'print' });
    check(await ev.isVisible(), 'closed evidence is not printed');
    await page.pdf({ path: join(ARTIFACTS, 'report.pdf'), format: 'A4', printBackground: true });
    check(statSync(join(ARTIFACTS, 'report.pdf')).size > 10000, 'the PDF is empty');
    await page.emulateMedia({ media: 'screen' });
    console.log('ok   printing shows the evidence and keeps the colours (report.pdf)');
    await page.screenshot({ path: join(ARTIFACTS, 'report-4-full.png'), fullPage: true });
  } catch (e) {
    failed += 1;
    console.log(`FAIL ${e instanceof Failure ? e.message : e.stack || e}`);
    await page.screenshot({ path: join(ARTIFACTS, 'report-failure.png'), fullPage: true }).catch(() => {});
  }
  if (problems.length) {
    failed += 1;
    for (const p of problems) console.log(`FAIL ${p}`);
  }
  await context.close();
} finally {
  await browser.close();
}
console.log(`assess_report: ${failed ? 'FAILED' : 'passed'}`);
process.exit(failed ? 1 : 0);
