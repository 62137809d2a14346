// Shared by the browser tests in this directory (first_run, privacy,
// assess_report, fleet_dashboard): their environment, playwright-core and
// Debian's Chromium, assertions, a page that records what must never happen
// on it, and the sequential scenario runner.
import { accessSync, constants } from 'node:fs';
import { createRequire } from 'node:module';
import { join, delimiter } from 'node:path';

// envReader(test) gives env(name, fallback): the variable's value, else the
// fallback, else (unset or empty and no fallback) exit 2 naming test.
export function envReader(test) {
  return (name, fallback) => {
    const v = process.env[name];
    if (v === undefined || v === '') {
      if (fallback !== undefined) return fallback;
      console.error(`${test}: ${name} must be set`);
      process.exit(2);
    }
    return v;
  };
}

// playwright-core from KEEL_UI_NODE_DIR (the build dir's npm cache), else from beside this file.
const { chromium } = process.env.KEEL_UI_NODE_DIR
  ? createRequire(join(process.env.KEEL_UI_NODE_DIR, 'package.json'))('playwright-core')
  : await import('playwright-core');

// The browser: KEEL_CHROMIUM, else chromium or chromium-browser on PATH.
function findChromium(test) {
  if (process.env.KEEL_CHROMIUM) return process.env.KEEL_CHROMIUM;
  for (const dir of (process.env.PATH || '').split(delimiter)) {
    for (const name of ['chromium', 'chromium-browser']) {
      const p = join(dir, name);
      try {
        accessSync(p, constants.X_OK);
        return p;
      } catch {
        // not here
      }
    }
  }
  console.error(`${test}: no chromium on PATH (set KEEL_CHROMIUM)`);
  process.exit(2);
}

// Headless Chromium for test (named in the error when there is none).
export function launch(test) {
  return chromium.launch({
    executablePath: findChromium(test),
    headless: true,
    args: ['--no-sandbox', '--disable-dev-shm-usage'],
  });
}

// ---- assertions ---------------------------------------------------------------

export class Failure extends Error {}
export function check(cond, what) {
  if (!cond) throw new Failure(what);
}
export function eq(got, want, what) {
  if (got !== want) throw new Failure(`${what}: got ${JSON.stringify(got)}, expected ${JSON.stringify(want)}`);
}
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Polls fn (async) until it returns a truthy value; fails with `what` after timeoutMs.
export async function until(fn, what, timeoutMs = 15000) {
  const end = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      if (e instanceof Failure) throw e;
      last = e;
    }
    if (Date.now() > end) throw new Failure(`timed out waiting for ${what}${last instanceof Error ? ` (${last.message})` : ''}`);
    await sleep(100);
  }
}

export const tid = (page, id) => page.locator(`[data-testid="${id}"]`);

// What a person sees must never be a script's placeholder: fails when the page
// shows one (junk: the pattern of placeholders).
export async function noJunk(page, junk = /\[object \w+\]|\bundefined\b|\bNaN\b|\bnull\b/) {
  const shown = await page.locator('body').innerText();
  const m = junk.exec(shown);
  check(!m, `the page shows "${m && m[0]}"`);
}

// ---- the watched page -----------------------------------------------------------

// A new context (contextOptions) and page, 15 s default timeout, on which
// console errors (but those matching ignoreConsole), uncaught exceptions, CSP
// violations and 5xx answers are pushed onto problems.
export async function watchedPage(browser, contextOptions, problems, ignoreConsole = null) {
  const context = await browser.newContext(contextOptions);
  // Injected by the browser's debugging protocol, not by the page: the page's CSP does not apply to it.
  await context.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI || 'inline'}`);
    });
  });
  context.setDefaultTimeout(15000);
  const page = await context.newPage();
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const t = msg.text();
    if (ignoreConsole === null || !ignoreConsole.test(t)) problems.push(`console error: ${t}`);
  });
  page.on('pageerror', (err) => problems.push(`uncaught exception: ${err.message}`));
  page.on('response', (res) => {
    if (res.status() >= 500) problems.push(`${res.status()} from ${res.request().method()} ${res.url()}`);
  });
  return { context, page };
}

// ---- the runner ---------------------------------------------------------------------

// Runs the scenarios ({name, fn}) in order with args ({page, context}); they
// build on each other, so the first failure ends the run (after a screenshot
// by shoot(page, 'failure')). A scenario that returns "skipped ..." is counted
// as skipped. Then problems (from watchedPage) count as one more check, named
// clean. Returns {passed, failed, skipped}.
export async function runScenarios(scenarios, args, problems, { shoot, junk, clean }) {
  const r = { passed: 0, failed: 0, skipped: 0 };
  for (const s of scenarios) {
    const t0 = Date.now();
    try {
      const note = await s.fn(args);
      await noJunk(args.page, junk);
      if (typeof note === 'string' && note.startsWith('skipped')) {
        r.skipped += 1;
        console.log(`SKIP ${s.name} (${note})`);
      } else {
        r.passed += 1;
        console.log(`ok   ${s.name} (${Date.now() - t0} ms)`);
      }
    } catch (e) {
      r.failed += 1;
      console.log(`FAIL ${s.name}: ${e instanceof Failure ? e.message : e.stack || e}`);
      try {
        await shoot(args.page, 'failure');
      } catch {
        // the page may be gone
      }
      break;
    }
  }
  const notRun = scenarios.length - r.passed - r.failed - r.skipped;
  if (notRun > 0) console.log(`(${notRun} later scenario(s) not run)`);
  if (problems.length) {
    r.failed += 1;
    console.log('FAIL the page stayed clean:');
    for (const p of problems) console.log(`     ${p}`);
  } else {
    r.passed += 1;
    console.log(`ok   ${clean}`);
  }
  return r;
}
