// Audit, dashboard and sign-in screens in a real browser: integrity status and an on-demand
// verification; an evidence bundle built with a progress bar, downloaded through the browser and
// verified offline by `custody verify`; the dashboard's counts agree with the traffic; the login
// page offers the configured identity providers.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import OpenAI from 'openai';
import type { Page } from 'playwright-core';
import { newPage, screenshot, signIn } from '../support/browser';
import { type ConsoleEnv, eventually, startConsoleEnv } from './console-harness';

let env: ConsoleEnv;
let page: Page;
let errors: string[];
const CLI = join(import.meta.dirname, '../../bin/custody.mjs');

describe('console: audit, evidence export and dashboard', () => {
  before(async () => {
    env = await startConsoleEnv({
      config: {
        masking: [{ id: 'pii', detectors: ['credit_card', 'email'] }],
        policies: [
          { name: 'deny-legacy-model', match: { model: ['gpt-3.5-turbo'] }, action: 'deny', reason: 'model not approved' },
          { name: 'hold-bulk-export', match: { content: '(?i)export all' }, action: 'hold', hold: { approvers: ['security'], timeout: '1s' } },
        ],
      },
    });
    const client = new OpenAI({ baseURL: `${env.proxy}/openai`, apiKey: env.key('maya.chen', ['engineering']), maxRetries: 0 });
    const prompts = ['Card 4111 1111 1111 1111 was charged twice', 'Email jane@example.com and omar@example.org', 'Also li.wei@example.net', 'plain question'];
    for (const p of prompts) await client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: p }] });
    await client.chat.completions.create({ model: 'gpt-3.5-turbo', messages: [{ role: 'user', content: 'hi' }] }).catch(() => {});
    await client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'export all customers' }] }).catch(() => {}); // times out → denied
    ({ page, errors } = await newPage(env.browser, { acceptDownloads: true }));
    await signIn(page, env.control, env.adminKey);
  });
  after(async () => {
    await page?.close().catch(() => {});
    await env?.stop();
  });

  it('shows integrity status and runs a verification', async () => {
    await page.goto(`${env.control}/#/audit`);
    const status = page.getByTestId('audit-status');
    await status.waitFor();
    const fingerprint = await page.getByTestId('fingerprint').innerText();
    const key = (await (await fetch(`${env.control}/api/audit/status`, { headers: { authorization: `Bearer ${env.adminKey}` } })).json()) as { fingerprint: string };
    assert.equal(fingerprint, key.fingerprint);
    await page.getByTestId('run-verify').click();
    const result = page.getByTestId('verify-result');
    await result.waitFor({ timeout: 30_000 });
    assert.match(await result.innerText(), /Intact/);
    await eventually(async () => /intact/.test(await status.innerText()), 'the last verification to show');
  });

  it('builds an evidence bundle with progress, downloads it, and custody verify accepts it', async () => {
    await page.getByTestId('export-start').click();
    const download = page.getByTestId('export-download');
    await download.waitFor({ timeout: 60_000 });
    await screenshot(page, 'audit');
    const [file] = await Promise.all([page.waitForEvent('download'), download.click()]);
    assert.match(file.suggestedFilename(), /^custody-evidence-exp_[a-z0-9]+\.tar\.gz$/);
    const path = join(tmpdir(), `console-${process.pid}-${file.suggestedFilename()}`);
    await file.saveAs(path);
    try {
      assert.ok(statSync(path).size > 1000);
      const r = spawnSync(process.execPath, [CLI, 'verify', path], { encoding: 'utf8', timeout: 60_000 });
      assert.equal(r.status, 0, `custody verify failed:\n${r.stdout}\n${r.stderr}`);
    } finally {
      rmSync(path, { force: true });
    }
  });

  it('charts the traffic: requests, masked values by type, holds by outcome and policy hits', async () => {
    await page.goto(`${env.control}/#/dashboard`);
    const dash = page.getByTestId('dashboard');
    await dash.waitFor();
    const text = await dash.innerText();
    assert.match(text, /REQUESTS\s*\n\s*6\b/i);
    const byType = await page.getByTestId('masked-by-type').innerText();
    assert.match(byType, /CREDIT_CARD\s+1/);
    assert.match(byType, /EMAIL\s+3/);
    assert.match(text, /deny-legacy-model · deny/);
    assert.match(text, /HOLDS REFUSED\s*\n\s*1\s*\n\s*0 denied · 1 timed out/i);
    assert.ok((await dash.locator('svg path').count()) > 2, 'charts are drawn');
  });

  it('draws a day of history (the dashboard screenshot)', async () => {
    // A day of recorded traffic, appended to the store with past timestamps, so the screenshot
    // shows the charts the way a team sees them; the figures come from the same queries.
    const { store } = env.gw.services;
    const now = Date.now();
    const types = ['EMAIL', 'CREDIT_CARD', 'EMAIL', 'PHONE', 'AWS_ACCESS_KEY', 'EMAIL', 'IBAN'];
    const insertHold = store.db.prepare('INSERT INTO holds (id, state, session, connection, requester, created_at, expires_at, resolved_at, view) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)');
    for (let h = 23; h >= 1; h--) {
      const busy = Math.round(6 + 5 * Math.sin(h / 3.5) + (h % 5));
      const t = now - h * 3_600_000;
      const session = `ses_history${h}`;
      const events = [];
      for (let i = 0; i < busy; i++) {
        const spans = i % 3 === 0 ? [{ type: types[(h + i) % types.length]!, start: 0, end: 7, rule: 'pii', path: '/body/messages/0/content' }] : [];
        events.push({ kind: 'http.request' as const, session, actor: 'key:history', connection: 'openai', time: t + i * 60_000, payload: { method: 'POST', path: '/chat/completions', body: { messages: [{ role: 'user', content: '[EMAIL] …' }] } }, spans });
        if (i % 4 === 1) {
          const deny = (h + i) % 3 === 0;
          events.push({ kind: 'policy.decision' as const, session, actor: 'key:history', connection: 'openai', time: t + i * 60_000, payload: deny ? { action: 'deny', rule: 'deny-legacy-model' } : { action: 'hold', rule: 'hold-bulk-export' } });
        }
      }
      store.appendMany(events);
      if (h % 3 === 0) {
        const state = h % 9 === 0 ? 'denied' : h % 6 === 0 ? 'expired' : 'approved';
        insertHold.run(`hold_history${h}`, state, session, 'openai', 'key:history', t, t + 300_000, t + 120_000, JSON.stringify({ id: `hold_history${h}`, state }));
      }
    }
    await page.reload();
    await page.getByTestId('dashboard').waitFor();
    await page.waitForTimeout(300);
    await screenshot(page, 'dashboard');
  });

  it('raised no script errors', () => {
    assert.deepEqual(errors.filter((e) => !/Failed to load resource/.test(e)), []);
  });
});
