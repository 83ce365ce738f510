/**
 * Setup shared by the console's team-mode end-to-end tests: gateways started in this process
 * (Gateway.start, ephemeral ports, temp data dirs) on one real PostgreSQL store, each with an OpenAI
 * connection to the LLM stand-in and a masking rule for card numbers; and Debian's Chromium with a
 * page open.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { Config } from '../../shared/config';
import { Gateway } from '../../proxy/gateway';
import { silentLogger } from '../../proxy/log';
import { launchBrowser, newPage } from '../support/browser';
import { type LlmUpstream, startLlmUpstream } from '../support/llm-upstream';
import { createTestDatabase, type TestDatabase } from '../support/pg-database';
import { eventually, OPENAI_SECRET } from './console-harness';

export interface Team {
  upstream: LlmUpstream;
  store: TestDatabase;
  browser: Browser;
  page: Page;
  /** Starts one more gateway on the store (it enrols, or waits to be approved). */
  start(): Promise<Gateway>;
  /** A, enrolled first, and B, waiting to be approved. */
  pair(): Promise<[Gateway, Gateway]>;
  /** Closes the browser, stops the gateways (last started first) and the stand-in, drops the store and the data dirs. */
  close(): Promise<void>;
}

export async function startTeam(name: string, reply: string, extra: { policies?: unknown[] } = {}): Promise<Team> {
  const upstream = await startLlmUpstream({ openaiKey: OPENAI_SECRET, reply });
  const store = await createTestDatabase(`custody_test_${name}`);
  const dirs: string[] = [];
  const gateways: Gateway[] = [];
  const browser = await launchBrowser();
  const { page } = await newPage(browser);
  const team: Team = {
    upstream,
    store,
    browser,
    page,
    async start() {
      const dataDir = mkdtempSync(join(tmpdir(), `custody-${name}-`));
      dirs.push(dataDir);
      const config = Config.parse({
        listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
        connections: [{ name: 'openai', kind: 'openai', upstream: `${upstream.url}/v1`, secret: { value: OPENAI_SECRET } }],
        masking: [{ id: 'pii', detectors: ['credit_card'], scope: ['client', 'upstream', 'log'], connections: ['openai'] }],
        store: { url: store.url },
        ...extra,
      });
      const gw = await Gateway.start({ config, dataDir, log: silentLogger });
      gateways.push(gw);
      return gw;
    },
    async pair() {
      const a = await team.start();
      await eventually(() => a.services.sharedStore!.health().phase === 'admitted', 'A enrolled');
      const b = await team.start();
      await eventually(() => b.services.sharedStore!.health().phase === 'pending', 'B pending');
      return [a, b];
    },
    async close() {
      await page.close().catch(() => {});
      await browser.close().catch(() => {});
      for (const gw of gateways.reverse()) await gw.stop().catch(() => {});
      await upstream.close();
      await store.drop();
      for (const d of dirs) rmSync(d, { recursive: true, force: true });
    },
  };
  return team;
}

export const control = (gw: Gateway) => `http://${gw.address('control')}`;
export const idOf = (gw: Gateway) => gw.services.sharedStore!.identity.id;
