// Accessibility: axe-core scans every console page (and the login page) in Chromium against a
// gateway with recorded traffic, a pending hold and connections; no serious or critical violation.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { after, before, describe, it } from 'node:test';
import OpenAI from 'openai';
import type { Page } from 'playwright-core';
import { newPage, signIn } from '../support/browser';
import { type ConsoleEnv, eventually, startConsoleEnv } from './console-harness';

const AXE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

interface Violation {
  id: string;
  impact: string | null;
  help: string;
  nodes: { target: string[]; failureSummary?: string }[];
}

async function scan(page: Page): Promise<Violation[]> {
  // Evaluated over the debugging protocol: the console's CSP (script-src 'self') stays as it is.
  if (!(await page.evaluate(() => 'axe' in globalThis))) await page.evaluate(AXE);
  const result = await page.evaluate(async () => {
    const page = globalThis as unknown as { document: unknown; axe: { run(ctx: unknown, opts: unknown): Promise<{ violations: Violation[] }> } };
    return page.axe.run(page.document, { resultTypes: ['violations'] });
  });
  return result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
}

function describeViolations(vs: Violation[]): string {
  return vs.map((v) => `${v.impact} ${v.id}: ${v.help}\n${v.nodes.slice(0, 5).map((n) => `    ${n.target.join(' ')} — ${n.failureSummary?.split('\n').join(' ')}`).join('\n')}`).join('\n');
}

let env: ConsoleEnv;
let page: Page;
let session = '';

describe('console: accessibility (axe-core)', () => {
  before(async () => {
    env = await startConsoleEnv({
      config: {
        masking: [{ id: 'pii', detectors: ['credit_card', 'email'] }],
        policies: [{ name: 'hold-exports', match: { connections: ['openai'], content: '(?i)export all' }, action: 'hold', hold: { approvers: ['security'], timeout: '5m' } }],
      },
    });
    const client = new OpenAI({ baseURL: `${env.proxy}/openai`, apiKey: env.key('maya.chen', ['engineering']), maxRetries: 0, timeout: 60_000 });
    await client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'Card 4111 1111 1111 1111, mail jane@example.com' }] });
    void client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'export all customers' }] }).catch(() => {});
    ({ page } = await newPage(env.browser));
    await signIn(page, env.control, env.adminKey);
    const list = (await (await fetch(`${env.control}/api/sessions`, { headers: { authorization: `Bearer ${env.adminKey}` } })).json()) as { sessions: { id: string }[] };
    session = list.sessions[0]!.id;
  });
  after(async () => {
    await page?.close().catch(() => {});
    await env?.stop();
  });

  it('the login page', async () => {
    const { page: anon } = await newPage(env.browser);
    await anon.goto(`${env.control}/`);
    await anon.getByTestId('login-key').waitFor();
    const v = await scan(anon);
    await anon.close();
    assert.deepEqual(v.map((x) => x.id), [], describeViolations(v));
  });

  for (const [name, hash, ready] of [
    ['approvals', '#/inbox', 'hold-card'],
    ['approval history', '#/inbox/history', null],
    ['sessions', '#/sessions', 'session-row'],
    ['replay', 'REPLAY', 'replay'],
    ['policies', '#/policies', null],
    ['connections', '#/connections', null],
    ['audit', '#/audit', null],
    ['dashboard', '#/dashboard', 'dashboard'],
    ['API keys', '#/keys', null],
  ] as const) {
    it(`the ${name} page`, async () => {
      await page.goto(`${env.control}/${hash === 'REPLAY' ? `#/sessions/${session}` : hash}`);
      if (ready) await page.getByTestId(ready).first().waitFor();
      else await eventually(async () => (await page.locator('.page').count()) > 0, `the ${name} page`);
      await page.waitForTimeout(300);
      const v = await scan(page);
      assert.deepEqual(v.map((x) => x.id), [], describeViolations(v));
    });
  }
});
