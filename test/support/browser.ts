/**
 * Real-browser support for the console's end-to-end tests: Debian's Chromium driven by
 * playwright-core (no bundled browser download), a 1280×800 page, and screenshots into
 * docs/screenshots/ for the README's console tour.
 */
import { mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core';

export const CHROMIUM = '/usr/bin/chromium';
export const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run'];
/**
 * Where screenshots go: `docs/screenshots/` when `CUSTODY_SCREENSHOTS=1` (to refresh the README's
 * images), else a temp folder, so an ordinary test run leaves the checkout untouched.
 */
export const SCREENSHOTS = process.env['CUSTODY_SCREENSHOTS'] === '1' ? join(import.meta.dirname, '../../docs/screenshots') : join(tmpdir(), 'custody-screenshots');

export async function launchBrowser(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
}

/** A fresh context (own cookies) at 1280×800; records console errors of the page in `errors`. */
export async function newPage(browser: Browser, opts: { acceptDownloads?: boolean } = {}): Promise<{ context: BrowserContext; page: Page; errors: string[] }> {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, deviceScaleFactor: 1, acceptDownloads: opts.acceptDownloads ?? true });
  const page = await context.newPage();
  const errors: string[] = [];
  page.on('pageerror', (err) => errors.push(`pageerror: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error') errors.push(`console: ${msg.text()}`);
  });
  return { context, page, errors };
}

/** Signs in through the console's login page by pasting an API key. */
export async function signIn(page: Page, control: string, key: string): Promise<void> {
  await page.goto(`${control}/#/inbox`);
  await page.getByTestId('login-key').fill(key);
  await page.getByTestId('login-submit').click();
  await page.getByTestId('sign-out').waitFor();
}

/** Saves `docs/screenshots/<name>.png` of the current viewport. */
export async function screenshot(page: Page, name: string): Promise<string> {
  mkdirSync(SCREENSHOTS, { recursive: true });
  const path = join(SCREENSHOTS, `${name}.png`);
  // Let countdowns, charts and fonts settle so the image shows the screen as a person sees it;
  // transient toasts are left out.
  await page.evaluate('document.fonts.ready');
  await page.waitForTimeout(150);
  await page.screenshot({ path, style: '.toasts { display: none !important; }' });
  return path;
}
