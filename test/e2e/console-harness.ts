/**
 * Setup shared by the console's end-to-end tests: the real gateway (Gateway.start, ephemeral ports,
 * a temp data dir) in front of the LLM stand-in and the real PostgreSQL at 127.0.0.1:5432, the
 * built console served by its control plane, and Debian's Chromium.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser } from 'playwright-core';
import { Config, type ConfigInput } from '../../shared/config';
import { Gateway } from '../../proxy/gateway';
import { silentLogger } from '../../proxy/log';
import { consoleDir } from '../../proxy/control/server';
import { launchBrowser } from '../support/browser';
import { type LlmUpstream, type LlmUpstreamOptions, startLlmUpstream } from '../support/llm-upstream';

export const OPENAI_SECRET = 'sk-upstream-openai-console-0123456789';
export const ANTHROPIC_SECRET = 'sk-ant-upstream-console-0123456789';
export const PG_UPSTREAM = process.env['CUSTODY_TEST_PG'] ?? 'postgres://postgres@127.0.0.1:5432/postgres';

export interface ConsoleEnv {
  upstream: LlmUpstream;
  gw: Gateway;
  /** `http://127.0.0.1:<port>` of the control plane (serves the console). */
  control: string;
  /** `http://127.0.0.1:<port>` of the HTTP proxy. */
  proxy: string;
  adminKey: string;
  browser: Browser;
  /** Creates an API key with these groups and returns it. */
  key(name: string, groups: string[]): string;
  /** host and port of a postgres connection's listener. */
  pg(name: string): { host: string; port: number };
  /** Stops the gateway and starts it again on the same data dir and config (new ports). */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

export async function startConsoleEnv(opts: { config?: Partial<ConfigInput>; postgres?: boolean; upstream?: LlmUpstreamOptions } = {}): Promise<ConsoleEnv> {
  assert.ok(existsSync(join(consoleDir(), 'app.js')), `the console is not built (${consoleDir()}); run npm run build first`);
  const upstream = await startLlmUpstream({ openaiKey: OPENAI_SECRET, anthropicKey: ANTHROPIC_SECRET, ...opts.upstream });
  // Not tempDir(): this runs inside before() hooks, where after() would fire as soon as the hook ends.
  const dataDir = mkdtempSync(join(tmpdir(), 'custody-console-'));
  const connections: ConfigInput['connections'] = [
    { name: 'openai', kind: 'openai', upstream: `${upstream.url}/v1`, secret: { value: OPENAI_SECRET }, description: 'LLM stand-in (OpenAI shape)' },
    { name: 'anthropic', kind: 'anthropic', upstream: upstream.url, secret: { value: ANTHROPIC_SECRET } },
  ];
  if (opts.postgres) connections.push({ name: 'warehouse', kind: 'postgres', upstream: PG_UPSTREAM, listen: '127.0.0.1:0', tls: { mode: 'disable' } });
  const config = Config.parse({ listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' }, connections, ...opts.config });
  const gw = await Gateway.start({ config, dataDir, log: silentLogger });
  let browser: Browser;
  try {
    browser = await launchBrowser();
  } catch (err) {
    await gw.stop();
    await upstream.close();
    throw err;
  }
  const env: ConsoleEnv = {
    upstream,
    gw,
    control: `http://${gw.address('control')}`,
    proxy: `http://${gw.address('http')}`,
    adminKey: gw.firstKey!,
    browser,
    key: (name, groups) => env.gw.services.keys.create({ name, groups }).key,
    pg(name) {
      const a = env.gw.address(`postgres:${name}`);
      const i = a.lastIndexOf(':');
      return { host: a.slice(0, i), port: Number(a.slice(i + 1)) };
    },
    async restart() {
      await env.gw.stop();
      env.gw = await Gateway.start({ config, dataDir, log: silentLogger });
      env.control = `http://${env.gw.address('control')}`;
      env.proxy = `http://${env.gw.address('http')}`;
    },
    async stop() {
      await browser.close().catch(() => {});
      await env.gw.stop();
      await upstream.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
  return env;
}

/** Polls until `check` returns a truthy value or the time runs out. */
export async function eventually<T>(check: () => T | Promise<T>, what: string, timeoutMs = 10_000): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
