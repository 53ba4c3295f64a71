// Drives the console's candidate buttons in a real headless Chromium (Debian's `chromium`,
// driven by playwright-core), for tests/gateway_console.rs:
//
//   node candidate.mjs http://127.0.0.1:9464 TOKEN promote|discard
//
// Loads the console, reads the candidate shown, presses ACTION with a wrong operator token
// (refused), goes back, presses it with TOKEN, then loads the console again; prints what it
// read as one JSON object. Every wait is bounded.
import { chromium } from 'playwright-core';

const [base, token, action] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const browser = await chromium.launch({
  executablePath, headless: true, timeout: 20_000,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
const out = {};
const text = async (page, sel) => ((await page.textContent(sel)) ?? '').trim();
const press = async (page, withToken) => {
  await page.goto(base + '/', { waitUntil: 'load' });
  await page.fill('#operator-token', withToken);
  const [response] = await Promise.all([
    page.waitForNavigation({ waitUntil: 'load' }),
    page.click('#' + action),
  ]);
  return { status: response.status(), result: await text(page, '#action-result') };
};
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  page.setDefaultTimeout(10_000);
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));

  await page.goto(base + '/', { waitUntil: 'load' });
  out.candidateBefore = await text(page, '#candidate-sequence');
  out.inForceBefore = await text(page, '#sequence');
  out.buttons = await page.$$eval('#candidate-form button', (bs) => bs.map((b) => b.id));
  // The token field is a password field: what is typed is not shown.
  out.tokenType = await page.getAttribute('#operator-token', 'type');

  out.wrong = await press(page, 'not-the-token');
  out.right = await press(page, token);
  await page.click('#back');
  await page.waitForURL(base + '/');
  out.inForceAfter = await text(page, '#sequence');
  out.candidateAfter = (await page.$('#candidate-sequence')) ? await text(page, '#candidate-sequence') : null;
  out.history = await text(page, '#reloads');
  out.errors = errors;
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
