// Drives the operators' console in a real headless Chromium (Debian's `chromium`, driven by
// playwright-core; no browser download), for tests/gateway_console.rs:
//
//   node console.mjs http://127.0.0.1:9464 CERT_AS_TYPED PRODUCT_CODE SHOT.png BLANK.png
//
// Loads the console, looks up CERT_AS_TYPED with the lookup form, explains a listing of it
// (PRODUCT_CODE, a model it does not cover) with the explain form, takes a screenshot of the
// explained page (and one of an empty page to compare sizes with), and prints what it read
// as one JSON object. Every wait is bounded.
import { chromium } from 'playwright-core';

const [base, cert, productCode, shot, blank] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const browser = await chromium.launch({
  executablePath, headless: true, timeout: 20_000,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
const out = {};
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  page.setDefaultTimeout(10_000);
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('requestfailed', (r) => {
    // A refresh cut short by leaving the page is not a failure.
    if (r.failure()?.errorText !== 'net::ERR_ABORTED') errors.push(`request failed: ${r.url()}`);
  });

  const index = await page.goto(base + '/', { waitUntil: 'load' });
  out.indexStatus = index.status();
  out.title = await page.title();
  out.sequence = (await page.textContent('#sequence')).trim();
  out.sections = await page.$$eval('section h2', (hs) => hs.map((h) => h.textContent));

  await page.fill('#cert', cert);
  await Promise.all([page.waitForURL(/\/lookup\?/), page.click('#lookup button')]);
  out.lookupNumber = (await page.textContent('#number')).trim();
  out.lookupStatus = (await page.textContent('#status')).trim();
  out.lookupExpiry = (await page.textContent('#expiry')).trim();
  // The form keeps what was typed, for the next try.
  out.lookupTyped = await page.inputValue('#cert');

  await page.fill('#product_code', productCode);
  await page.fill('#certificate_number', cert);
  await page.fill('#model', '<b>NOT-A-MODEL</b>');
  await Promise.all([page.waitForURL(/\/explain\?/), page.click('#explain-form button')]);
  out.verdict = (await page.textContent('#verdict')).trim();
  out.facts = await page.$$eval('#facts tr', (rows) =>
    rows.map((r) => [r.querySelector('th').textContent, r.querySelector('td').textContent]));
  // Escaped, so shown as text: no <b> element was made from the input.
  out.injected = await page.$$eval('#facts b', (bs) => bs.length);
  await page.screenshot({ path: shot, fullPage: true });

  const empty = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  await empty.setContent('<html><body></body></html>');
  await empty.screenshot({ path: blank, fullPage: true });
  out.errors = errors;
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
