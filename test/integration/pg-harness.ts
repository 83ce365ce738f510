/**
 * Test harness (call `close` in an `after` hook) for the PostgreSQL proxy: a listener on an ephemeral port in front of the real
 * server at 127.0.0.1:5432, with a real store, API keys, authenticator and policy engine.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ConfigInput } from '../../shared/config';
import { Config } from '../../shared/config';
import type { HoldGate } from '../../proxy/approvals/types';
import { AuditStore } from '../../proxy/audit/store';
import { EventBus } from '../../proxy/bus';
import { ApiKeyStore } from '../../proxy/identity/api-keys';
import { Authenticator } from '../../proxy/identity/authenticator';
import { silentLogger } from '../../proxy/log';
import type { MaskingEngine, RowMasker } from '../../proxy/masking/types';
import { PolicyEngine } from '../../proxy/policy/engine';
import { startPgListener, type PgListener } from '../../proxy/postgres/listener';

export const UPSTREAM = process.env['CUSTODY_TEST_PG'] ?? 'postgres://postgres@127.0.0.1:5432/postgres';

export const passthroughRows: RowMasker = { active: false, value: () => null, text: (text) => ({ text, spans: [], counts: {} }), detectorHits: () => [] };

export function maskingWith(rows: RowMasker): MaskingEngine {
  return { forConnection: () => null, rows: () => rows, reload() {} };
}

export interface Harness {
  listener: PgListener;
  store: AuditStore;
  key: string;
  host: string;
  port: number;
  dataDir: string;
  /** libpq connection string (without sslmode). */
  conninfo: string;
  policy: PolicyEngine;
  /** Stops the listener, closes the store, removes the data dir. */
  close(): Promise<void>;
  /** Resolves once every client session has ended (so its results are in the log). */
  idle(): Promise<void>;
}

export async function startHarness(opts: {
  policies?: ConfigInput['policies'];
  /** A hold gate, or a factory for one that needs the store (the real HoldQueue). */
  holds?: HoldGate | ((store: AuditStore, bus: EventBus) => HoldGate);
  masking?: MaskingEngine;
  upstream?: string;
  connection?: Partial<ConfigInput['connections'] extends (infer C)[] | undefined ? C : never>;
  recordRows?: number;
  groups?: string[];
  connectTimeoutMs?: number;
} = {}): Promise<Harness> {
  const dataDir = mkdtempSync(join(tmpdir(), 'custody-pg-'));
  const store = AuditStore.open(dataDir, { commitThread: true });
  const keys = new ApiKeyStore(store.db);
  const { key } = keys.create({ name: 'tester', groups: opts.groups ?? ['dev'] });
  const config = Config.parse({
    connections: [{ name: 'warehouse', kind: 'postgres', upstream: opts.upstream ?? UPSTREAM, listen: '127.0.0.1:0', ...opts.connection }],
    policies: opts.policies ?? [],
  });
  const policy = new PolicyEngine(config.policies);
  const bus = new EventBus();
  const holds: HoldGate =
    typeof opts.holds === 'function' ? opts.holds(store, bus) : (opts.holds ?? { request: () => Promise.reject(new Error('no hold gate in this test')) });
  const listener = await startPgListener({
    connection: config.connections[0]!,
    dataDir,
    recordRows: opts.recordRows ?? 50,
    connectTimeoutMs: opts.connectTimeoutMs,
    services: {
      auth: new Authenticator(keys, config.identity),
      policy,
      holds,
      masking: opts.masking ?? maskingWith(passthroughRows),
      store,
      bus,
      log: silentLogger,
    },
  });
  const idle = async () => {
    for (let i = 0; i < 500 && listener.sessions > 0; i++) await new Promise((r) => setTimeout(r, 10));
    if (listener.sessions > 0) throw new Error(`${listener.sessions} sessions still open`);
  };
  const close = async () => {
    await listener.close();
    store.close();
    rmSync(dataDir, { recursive: true, force: true });
  };
  const [host, port] = [listener.address.slice(0, listener.address.lastIndexOf(':')), Number(listener.address.slice(listener.address.lastIndexOf(':') + 1))];
  return { listener, store, key, host, port, dataDir, conninfo: `host=${host} port=${port} user=tester password=${key} dbname=postgres`, policy, close, idle };
}

/** Events of one kind, oldest first. */
export function eventsOf(store: AuditStore, kind: string) {
  return store.events(1, 100_000).filter((e) => e.kind === kind);
}

/** Polls `fn` until it returns something other than undefined, or fails after `ms`. */
export async function until<T>(what: string, fn: () => T | undefined | Promise<T | undefined>, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const v = await fn();
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out waiting for ${what}`);
}
