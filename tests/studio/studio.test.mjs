// The studio in a real headless Chromium (Debian's), driven by playwright-core, against the real
// `nanoimg serve` with the bundled model. Run by scripts/test.sh; NANOIMG_BIN names the binary,
// NANOIMG_SCREENSHOTS a folder for the screenshots (docs/screenshots when refreshing them).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const BIN = process.env.NANOIMG_BIN || 'target/debug/nanoimg';
const SHOTS = process.env.NANOIMG_SCREENSHOTS || mkdtempSync(join(tmpdir(), 'nanoimg-shots-'));
mkdirSync(SHOTS, { recursive: true });

let server;
let base;
let adminKey;
let browser;
const home = mkdtempSync(join(tmpdir(), 'nanoimg-studio-'));

/** Starts `nanoimg serve` on a free port and reads its address and the admin key. */
function serve() {
  return new Promise((resolve, reject) => {
    const child = spawn(BIN, ['serve', '--bind', '127.0.0.1:0', '--data-dir', join(home, 'data')], {
      env: { ...process.env, NANOIMG_HOME: home, NANOIMG_MODELS: join(home, 'no-models'), NANOIMG_LOG: 'warn' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    child.on('error', reject);
    child.once('exit', (code) => reject(new Error(`nanoimg serve exited with ${code}`)));
    let key = null;
    createInterface({ input: child.stdout }).on('line', (line) => {
      const t = line.trim();
      if (t.startsWith('nimg_')) key = t;
      const m = line.match(/^NanoImg listening on (http:\/\/\S+)/);
      if (m) resolve({ child, url: m[1], key });
    });
  });
}

before(async () => {
  const s = await serve();
  server = s.child;
  base = s.url;
  adminKey = s.key;
  browser = await chromium.launch({
    executablePath: process.env.NANOIMG_CHROMIUM || '/usr/bin/chromium',
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
});

after(async () => {
  await browser?.close();
  if (server && server.exitCode === null) {
    const exited = new Promise((r) => server.once('exit', r));
    server.kill();
    await exited;
  }
  rmSync(home, { recursive: true, force: true, maxRetries: 3 });
});

async function signedIn(page) {
  await page.goto(`${base}/`);
  await page.getByLabel('API key').fill(adminKey);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByText('Signed in to admin').waitFor();
}

test('a wrong key is refused with a clear message, and nothing is kept', async () => {
  const page = await browser.newPage();
  await page.goto(`${base}/`);
  await page.screenshot({ path: join(SHOTS, 'sign-in.png') });
  await page.getByLabel('API key').fill('nimg_not-a-real-key');
  await page.getByRole('button', { name: 'Sign in' }).click();
  const alert = page.getByRole('alert');
  await alert.waitFor();
  assert.match(await alert.innerText(), /not accepted/);
  assert.equal(await page.evaluate(() => sessionStorage.length), 0);
  await page.close();
});

test('sign in, generate with the bundled model while watching progress, download', async () => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
  await signedIn(page);
  // The key is in this tab's session storage only, never in the URL or local storage.
  assert.ok(!page.url().includes(adminKey));
  assert.equal(await page.evaluate(() => localStorage.length), 0);
  assert.equal(await page.evaluate(() => sessionStorage.getItem('nanoimg.key')), adminKey);

  await page.getByLabel('Prompt', { exact: true }).fill('a smiling cat face');
  await page.getByLabel('Steps').fill('30');
  await page.getByLabel('Seed').fill('7');
  await page.getByLabel('How many').fill('2');
  await page.getByRole('button', { name: 'Generate' }).click();
  await page.locator('#progress[data-done="true"]').waitFor({ timeout: 120_000 });
  assert.ok(await page.getByRole('button', { name: 'Cancel' }).isHidden(), 'no Cancel once done');
  const events = Number(await page.locator('#progress').getAttribute('data-events'));
  assert.ok(events > 0, 'progress events were shown');
  const shots = page.locator('#gallery figure');
  assert.equal(await shots.count(), 2);
  // The images are real pictures, shown from the page's own blob: URLs.
  const natural = await shots.first().locator('img').evaluate((i) => [i.naturalWidth, i.src.slice(0, 5)]);
  assert.deepEqual(natural, [64, 'blob:']);
  const text = await shots.first().innerText();
  assert.match(text, /a smiling cat face/);
  assert.match(text, /seed\s*\n?\s*7\b/, 'the first image (seed 7) is on top');
  await page.screenshot({ path: join(SHOTS, 'generate.png'), fullPage: true });

  // Download gives the PNG.
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    shots.first().getByRole('link', { name: 'Download' }).click(),
  ]);
  assert.match(download.suggestedFilename(), /^nanoimg-img_\w+\.png$/);

  // "Reuse seed" puts the image's seed back in the form.
  await shots.last().getByRole('button', { name: 'Reuse seed' }).click();
  assert.match(await page.getByLabel('Seed').inputValue(), /^(7|8)$/);
  await page.close();
});

test('a refused prompt gets a plain message with its category', async () => {
  const page = await browser.newPage();
  await signedIn(page);
  await page.getByLabel('Prompt', { exact: true }).fill('a nude figure study');
  await page.getByLabel('Prompt', { exact: true }).press('Control+Enter');
  const alert = page.locator('#generate-error');
  await alert.waitFor();
  const msg = await alert.innerText();
  assert.match(msg, /content policy \(sexual\)/);
  assert.match(msg, /rephrase/);
  assert.equal(await page.locator('#gallery figure').count(), 0);
  await page.screenshot({ path: join(SHOTS, 'refused.png') });
  await page.close();
});

test('works at phone width and from the keyboard', async () => {
  const page = await browser.newPage({ viewport: { width: 390, height: 844 } });
  await page.goto(`${base}/`);
  // Keyboard only: the key field has focus; type, Enter signs in.
  await page.keyboard.type(adminKey);
  await page.keyboard.press('Enter');
  await page.getByText('Signed in to admin').waitFor();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no sideways scrolling (${overflow}px)`);
  await page.screenshot({ path: join(SHOTS, 'phone.png'), fullPage: true });
  // Signing out forgets the key.
  await page.getByRole('button', { name: 'Sign out' }).click();
  assert.equal(await page.evaluate(() => sessionStorage.length), 0);
  await page.close();
});
