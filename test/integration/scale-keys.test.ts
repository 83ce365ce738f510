/**
 * Keys are the group's, and a gateway that cannot hear the store stops admitting (docs/SCALE-OUT.md,
 * "One configuration, never stale"), against the real PostgreSQL server: a key created on gateway
 * A works on gateway B; revoked on A, B refuses it, and a key revoked on B is refused by A; B, whose
 * store connection goes through a relay the test cuts, refuses every request once `store.staleAfter`
 * has passed without an answer from the store, and serves again when the store returns. Checked by
 * what the upstream received, not by what the gateways say.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { Config } from '../../shared/config';
import { keyFingerprint } from '../../proxy/audit/checkpoint-signer';
import { Gateway } from '../../proxy/gateway';
import { silentLogger } from '../../proxy/log';
import { writeConfig } from '../support/custody-process';
import { startEchoUpstream, type EchoUpstream } from '../support/echo-upstream';
import { createTestDatabase, type TestDatabase } from '../support/pg-database';
import { freePort } from '../support/ports';
import { startRelay } from '../support/tcp-relay';
import { tempDir } from '../support/tmp';
import { until } from '../support/until';

interface Member {
  gw: Gateway;
  configFile: string;
  id: string;
  http: string;
  control: string;
}

const root = tempDir('custody-scale-keys-');
let db: TestDatabase;
let echo: EchoUpstream;
const running: Gateway[] = [];

async function startMember(name: string, url: string): Promise<Member> {
  const dir = join(root, name);
  mkdirSync(dir);
  const raw = { dataDir: dir, listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' }, connections: [{ name: 'echo', kind: 'http', upstream: echo.url }], store: { url, staleAfter: '2s' } };
  const configFile = writeConfig(dir, raw);
  const gw = await Gateway.start({ config: Config.parse(raw), dataDir: dir, configFile, log: silentLogger });
  running.push(gw);
  return { gw, configFile, id: keyFingerprint(gw.services.audit!.trail.signer.publicKey), http: `http://${gw.address('http')}`, control: `http://${gw.address('control')}` };
}

/** A request through `m` with `key`; the status, the body, and whether the upstream saw it. */
async function send(m: Member, key: string): Promise<{ status: number; body: string; reached: boolean }> {
  const tag = `t-${Math.random().toString(36).slice(2)}`;
  const r = await fetch(`${m.http}/echo/${tag}`, { headers: { authorization: `Bearer ${key}` } });
  const body = await r.text();
  return { status: r.status, body, reached: echo.requests.some((q) => q.target.includes(tag)) };
}

async function api<T>(m: Member, method: string, path: string, body?: unknown): Promise<T> {
  const r = await fetch(`${m.control}${path}`, { method, headers: { authorization: `Bearer ${m.gw.firstKey}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  assert.ok(r.ok, `${method} ${path}: ${r.status} ${await r.clone().text()}`);
  return (await r.json()) as T;
}

describe('keys are shared by the group, and a gateway cut off from the store stops admitting', () => {
  let a: Member;
  let b: Member;
  let relay: Awaited<ReturnType<typeof startRelay>>;

  before(async () => {
    db = await createTestDatabase('custody_test_scale_keys');
    echo = await startEchoUpstream();
    a = await startMember('a', db.url);
    const port = await freePort();
    relay = await startRelay(port);
    b = await startMember('b', db.url.replace('127.0.0.1:5432', `127.0.0.1:${port}`));
    await until('B pending', async () => b.gw.services.sharedStore?.health().phase === 'pending');
    await until('A admitted', async () => a.gw.services.sharedStore?.health().phase === 'admitted');
    const approved = await promisify(execFile)(process.execPath, ['bin/custody.mjs', 'gateways', 'approve', b.id, '--config', a.configFile], { encoding: 'utf8', timeout: 60_000 });
    assert.match(approved.stdout + approved.stderr, /approved/i);
    await until('B serving', async () => (await send(b, b.gw.firstKey!)).status === 200);
  });
  after(async () => {
    for (const gw of running) await gw.stop();
    await relay?.close();
    await echo?.close();
    await db?.drop();
  });

  it('a key created on A works on B; revoked on A, B refuses it', async () => {
    const { key, id } = await api<{ key: string; id: string }>(a, 'POST', '/api/keys', { name: 'agent-on-a' });
    assert.equal((await send(a, key)).status, 200);
    const t0 = Date.now();
    await until('the key works on B', async () => (await send(b, key)).status === 200);
    const shared = Date.now() - t0;
    await api(a, 'POST', `/api/keys/${id}/revoke`);
    const refusedOnA = await send(a, key);
    assert.equal(refusedOnA.status, 401);
    assert.equal(refusedOnA.reached, false);
    const t1 = Date.now();
    const refused = await until('B refuses the revoked key', async () => {
      const r = await send(b, key);
      return r.status !== 200 && r;
    });
    const revokedAfter = Date.now() - t1;
    assert.equal(refused.status, 401);
    assert.equal(refused.reached, false, 'the upstream never received the refused request');
    assert.ok(revokedAfter < 5000, `B refused the key ${revokedAfter} ms after A revoked it`);
    console.log(`# key shared to B in ${shared} ms; revocation effective on B in ${revokedAfter} ms`);
  });

  it('a key revoked on B is refused by A', async () => {
    const { key, id } = await api<{ key: string; id: string }>(a, 'POST', '/api/keys', { name: 'agent-two' });
    await until('the key works on B', async () => (await send(b, key)).status === 200);
    await api(b, 'POST', `/api/keys/${id}/revoke`);
    const refused = await until('A refuses the key revoked on B', async () => {
      const r = await send(a, key);
      return r.status !== 200 && r;
    });
    assert.equal(refused.status, 401);
    assert.equal(refused.reached, false);
  });

  it('B, cut off from the store, stops admitting after store.staleAfter and resumes when the store returns', async () => {
    assert.equal((await send(b, b.gw.firstKey!)).status, 200);
    await relay.cut();
    const cutAt = Date.now();
    const refused = await until('B refuses while stale', async () => {
      const r = await send(b, b.gw.firstKey!);
      return r.status !== 200 && r;
    });
    const after = Date.now() - cutAt;
    assert.equal(refused.status, 503);
    assert.match(refused.body, /has not heard from the shared store .* more than store\.staleAfter 2 s/);
    assert.equal(refused.reached, false, 'nothing reached the upstream while stale');
    // 2 s after the store last answered, which was up to a round (1 s) before the cut.
    assert.ok(after >= 800 && after < 6000, `refused ${after} ms after the cut`);
    assert.equal((await send(a, a.gw.firstKey!)).status, 200, 'A, which still hears the store, serves');
    await relay.restore();
    await until('B serves again', async () => (await send(b, b.gw.firstKey!)).status === 200);
  });
});
