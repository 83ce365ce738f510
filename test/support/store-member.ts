/**
 * A gateway of a shared-store group started in this process (test/integration/scale-*.test.ts),
 * and a gateway row written into the store by hand, for the tests that check such rows are ignored.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { promisify } from 'node:util';
import type pg from 'pg';
import { Config } from '../../shared/config';
import { keyFingerprint } from '../../proxy/audit/checkpoint-signer';
import { Gateway } from '../../proxy/gateway';
import { type Logger, silentLogger } from '../../proxy/log';
import { writeConfig } from './custody-process';
import { until } from './until';

export interface StoreMember {
  gw: Gateway;
  configFile: string;
  /** The gateway id: the fingerprint of its checkpoint key. */
  id: string;
  http: string;
  control: string;
}

/** Starts a gateway on `dir` (created) with the config `raw` (its dataDir set to `dir`), logging to `log`. */
export async function startStoreMember(dir: string, raw: Record<string, unknown>, log: Logger = silentLogger): Promise<StoreMember> {
  mkdirSync(dir);
  const full = { dataDir: dir, ...raw };
  return member(dir, writeConfig(dir, full), Config.parse(full), log);
}

async function member(dir: string, configFile: string, config: Config, log: Logger): Promise<StoreMember> {
  const gw = await Gateway.start({ config, dataDir: dir, configFile, log });
  return { gw, configFile, id: keyFingerprint(gw.services.audit!.trail.signer.publicKey), http: `http://${gw.address('http')}`, control: `http://${gw.address('control')}` };
}

/** Stops `m` and starts it again on its data dir and config file (same key, same chain; its listeners get new ports); its first key is kept. */
export async function restartStoreMember(m: StoreMember, log: Logger = silentLogger): Promise<StoreMember> {
  await m.gw.stop();
  const next = await member(dirname(m.configFile), m.configFile, Config.parse(JSON.parse(readFileSync(m.configFile, 'utf8'))), log);
  next.gw.firstKey ??= m.gw.firstKey;
  return next;
}

/** A gateway row written into the store by hand, marked approved, with a key only its writer holds. */
export async function forgedMember(sql: pg.Client, keyName: string): Promise<{ id: string; privateKey: KeyObject }> {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const raw = publicKey.export({ format: 'der', type: 'spki' }).subarray(-32);
  const id = keyFingerprint(raw);
  await sql.query("INSERT INTO custody_gateways (id, public_key, key_name, name, status, request, requested_at, last_seen) VALUES ($1, $2, $3, 'mallory', 'approved', '', 0, 0)", [id, raw.toString('base64'), keyName]);
  return { id, privateKey };
}

/**
 * B, started after A on A's store, waits for enrolment; A approves it with `custody gateways
 * approve` (the CLI, on A's config); returns once `serving` says B serves.
 */
export async function approveMember(a: StoreMember, b: StoreMember, serving: () => Promise<boolean>): Promise<void> {
  await until('B pending', async () => b.gw.services.sharedStore?.health().phase === 'pending');
  await until('A admitted', async () => a.gw.services.sharedStore?.health().phase === 'admitted');
  const approved = await promisify(execFile)(process.execPath, ['bin/custody.mjs', 'gateways', 'approve', b.id, '--config', a.configFile], { encoding: 'utf8', timeout: 60_000 });
  assert.match(approved.stdout + approved.stderr, /approved/i);
  await until('B serving', serving);
}

/** A request through `m` with `key` to `/<connection>/<path>-<tag>`; the status, the body, and whether `upstream` received it. */
export async function sendThrough(m: StoreMember, key: string, upstream: { requests: { target: string }[] }, path = 'plain', connection = 'echo'): Promise<{ status: number; body: string; reached: boolean }> {
  const tag = `${path}-${Math.random().toString(36).slice(2)}`;
  const r = await fetch(`${m.http}/${connection}/${tag}`, { headers: { authorization: `Bearer ${key}` } });
  const body = await r.text();
  return { status: r.status, body, reached: upstream.requests.some((q) => q.target.includes(tag)) };
}

/** A call to `m`'s control API with `key`; the status and the JSON body. */
export async function callApi<T>(m: StoreMember, key: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: T }> {
  const r = await fetch(`${m.control}${path}`, { method, headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: r.status, body: (await r.json()) as T };
}

/** A control-plane call to `m` with `key` (its first admin key by default), which must succeed; the JSON body. */
export async function memberApi<T>(m: StoreMember, method: string, path: string, body?: unknown, key = m.gw.firstKey): Promise<T> {
  const r = await callApi<T>(m, key!, method, path, body);
  assert.ok(r.status < 300, `${method} ${path}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}
