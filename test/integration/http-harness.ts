/**
 * Shared setup for the HTTP proxy tests: a gateway on ephemeral ports in front of the LLM
 * stand-in, with one connection of each HTTP kind, and helpers to read what was recorded.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Config, type ConfigInput } from '../../shared/config';
import type { AuditEvent, SessionSummary } from '../../shared/events';
import { Gateway } from '../../proxy/gateway';
import { silentLogger } from '../../proxy/log';
import type { LlmUpstream } from '../support/llm-upstream';

export const OPENAI_SECRET = 'sk-upstream-openai-0123456789';
export const ANTHROPIC_SECRET = 'sk-ant-upstream-0123456789';
export const VECTOR_SECRET = 'vec-upstream-0123456789';

export interface TestGateway {
  gw: Gateway;
  /** `http://127.0.0.1:<port>` of the HTTP proxy. */
  proxy: string;
  control: string;
  adminKey: string;
  /** GET on the control plane as the admin. */
  api<T = unknown>(path: string): Promise<T>;
  sessions(): Promise<SessionSummary[]>;
  events(session: string): Promise<AuditEvent[]>;
  /** Every event of every session, in order (for "what was recorded" assertions). */
  allEvents(): Promise<AuditEvent[]>;
  /** Stops the gateway and removes its data dir. */
  stop(): Promise<void>;
}

export function standardConnections(upstreamUrl: string): ConfigInput['connections'] {
  return [
    { name: 'openai', kind: 'openai', upstream: `${upstreamUrl}/v1`, secret: { value: OPENAI_SECRET } },
    { name: 'anthropic', kind: 'anthropic', upstream: upstreamUrl, secret: { value: ANTHROPIC_SECRET } },
    { name: 'vectors', kind: 'http', upstream: `${upstreamUrl}/vectors`, secret: { value: VECTOR_SECRET } },
  ];
}

export async function startTestGateway(upstream: LlmUpstream | { url: string }, extra: Partial<ConfigInput> = {}): Promise<TestGateway> {
  // Not tempDir(): this runs inside before() hooks, where after() would fire as soon as the hook ends.
  const dataDir = mkdtempSync(join(tmpdir(), 'custody-http-'));
  const config = Config.parse({
    listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
    connections: standardConnections(upstream.url),
    ...extra,
  });
  const gw = await Gateway.start({ config, dataDir, log: silentLogger });
  const proxy = `http://${gw.address('http')}`;
  const control = `http://${gw.address('control')}`;
  const adminKey = gw.firstKey!;
  const api = async <T>(path: string): Promise<T> => {
    const r = await fetch(`${control}${path}`, { headers: { authorization: `Bearer ${adminKey}` } });
    if (!r.ok) throw new Error(`GET ${path}: ${r.status} ${await r.text()}`);
    return (await r.json()) as T;
  };
  const sessions = async () => (await api<{ sessions: SessionSummary[] }>('/api/sessions?limit=1000')).sessions;
  const events = async (id: string) => (await api<{ events: AuditEvent[] }>(`/api/sessions/${id}/events`)).events;
  return {
    gw,
    proxy,
    control,
    adminKey,
    api,
    sessions,
    events,
    async allEvents() {
      const all = (await Promise.all((await sessions()).map((x) => events(x.id)))).flat();
      return all.sort((a, b) => a.seq - b.seq);
    },
    async stop() {
      await gw.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Waits until `check` returns a truthy value (recording of streams is batched). */
export async function eventually<T>(check: () => T | Promise<T>, what: string, timeoutMs = 3000): Promise<NonNullable<T>> {
  const until = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < until) {
    try {
      const v = await check();
      if (v) return v as NonNullable<T>;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`timed out waiting for ${what}${last ? ` (last error: ${(last as Error).message})` : ''}`);
}

/** One chat completion through the gateway's `openai` connection with its first key; fails the test unless it is answered 200. */
export async function chatThrough(gw: Pick<Gateway, 'address' | 'firstKey'>, text: string): Promise<void> {
  const r = await fetch(`http://${gw.address('http')}/openai/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${gw.firstKey!}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: text }] }),
  });
  if (r.status !== 200) throw new Error(`the gateway answered ${r.status}: ${await r.text()}`);
}
