/**
 * Keys are the group's, and a gateway that cannot hear the store stops admitting (docs/SCALE-OUT.md,
 * "One configuration, never stale"), against the real PostgreSQL server: a key created on gateway
 * A works on gateway B; revoked on A, B refuses it, and a key revoked on B is refused by A; a key
 * written into the store by someone who can write to it (with a signature by a gateway row they
 * also wrote) works on neither; B, whose
 * store connection goes through a relay the test cuts, refuses every request once `store.staleAfter`
 * has passed without an answer from the store, and serves again when the store returns. Checked by
 * what the upstream received, not by what the gateways say.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes, sign } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { canonicalize } from '../../shared/canonical-json';
import { Gateway } from '../../proxy/gateway';
import { startEchoUpstream, type EchoUpstream } from '../support/echo-upstream';
import { createTestDatabase, type TestDatabase } from '../support/pg-database';
import { freePort } from '../support/ports';
import { approveMember, forgedMember, memberApi, type StoreMember, startStoreMember } from '../support/store-member';
import { startRelay } from '../support/tcp-relay';
import { tempDir } from '../support/tmp';
import { until } from '../support/until';

type Member = StoreMember;

const root = tempDir('custody-scale-keys-');
let db: TestDatabase;
let echo: EchoUpstream;
const running: Gateway[] = [];

async function startMember(name: string, url: string): Promise<Member> {
  const m = await startStoreMember(join(root, name), { listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' }, connections: [{ name: 'echo', kind: 'http', upstream: echo.url }], store: { url, staleAfter: '2s' } });
  running.push(m.gw);
  return m;
}

/** A request through `m` with `key`; the status, the body, and whether the upstream saw it. */
async function send(m: Member, key: string): Promise<{ status: number; body: string; reached: boolean }> {
  const tag = `t-${Math.random().toString(36).slice(2)}`;
  const r = await fetch(`${m.http}/echo/${tag}`, { headers: { authorization: `Bearer ${key}` } });
  const body = await r.text();
  return { status: r.status, body, reached: echo.requests.some((q) => q.target.includes(tag)) };
}

/** Sends through `m` with `key` until it is refused; the refusal and how long it took. */
async function untilRefused(m: Member, key: string, what: string): Promise<{ refused: Awaited<ReturnType<typeof send>>; ms: number }> {
  const t0 = Date.now();
  const refused = await until(what, async () => {
    const r = await send(m, key);
    return r.status !== 200 && r;
  });
  return { refused, ms: Date.now() - t0 };
}

const api = memberApi;

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
    await approveMember(a, b, async () => (await send(b, b.gw.firstKey!)).status === 200);
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
    const { refused, ms: revokedAfter } = await untilRefused(b, key, 'B refuses the revoked key');
    assert.equal(refused.status, 401);
    assert.equal(refused.reached, false, 'the upstream never received the refused request');
    // Announced by the store on commit (NOTIFY custody_config): within a second, not a polling round.
    assert.ok(revokedAfter < 1000, `B refused the key ${revokedAfter} ms after A revoked it`);
    console.log(`# key shared to B in ${shared} ms; revocation effective on B in ${revokedAfter} ms`);
  });

  it('a key revoked on B is refused by A', async () => {
    const { key, id } = await api<{ key: string; id: string }>(a, 'POST', '/api/keys', { name: 'agent-two' });
    await until('the key works on B', async () => (await send(b, key)).status === 200);
    await api(b, 'POST', `/api/keys/${id}/revoke`);
    const { refused } = await untilRefused(a, key, 'A refuses the key revoked on B');
    assert.equal(refused.status, 401);
    assert.equal(refused.reached, false);
  });

  it('a revocation made while B is cut off from the store is read when B reconnects', async () => {
    const { key, id } = await api<{ key: string; id: string }>(a, 'POST', '/api/keys', { name: 'agent-unheard' });
    await until('the key works on B', async () => (await send(b, key)).status === 200);
    // Every connection of B (the listening one too) is reset: the announcement of the revocation
    // reaches nobody on B. B reads it after its cursor when it is back.
    await relay.cut();
    await api(a, 'POST', `/api/keys/${id}/revoke`);
    await new Promise((r) => setTimeout(r, 400));
    await relay.restore();
    const { refused, ms: after } = await untilRefused(b, key, 'B refuses the key revoked while it was cut off');
    assert.equal(refused.status, 401);
    assert.equal(refused.reached, false);
    // Within the workers' reconnect backoff (they failed for 0.4 s: at most 0.8 s more) and a read.
    assert.ok(after < 2500, `B refused the key ${after} ms after the store returned`);
    console.log(`# revocation made while B was cut off effective on B ${after} ms after the store returned`);
    await until('B serves again', async () => (await send(b, b.gw.firstKey!)).status === 200);
  });

  it('a key written into the store by hand, signed by a gateway row also written by hand, works on no gateway', async () => {
    const sql = await db.client();
    try {
      const { privateKey, id: mallory } = await forgedMember(sql, 'custody/mallory');
      const id = 'forged000001';
      const key = `cst_${id}_${randomBytes(24).toString('base64url')}`;
      const row = { id, name: 'forged', hash: createHash('sha256').update(key).digest('hex'), groups: '["admin"]', created_at: Date.now(), created_by: 'mallory' };
      await sql.query("INSERT INTO custody_api_keys (id, name, hash, groups, created_at, created_by, origin) VALUES ($1, $2, $3, $4, $5, $6, $7)", [row.id, row.name, row.hash, row.groups, row.created_at, row.created_by, mallory]);
      const text = `custody-api-key/v1\n${canonicalize([row.id, row.name, row.hash, row.groups, row.created_at, row.created_by])}`;
      await sql.query('INSERT INTO custody_api_key_signatures (id, gateway, signature) VALUES ($1, $2, $3)', [id, mallory, sign(null, Buffer.from(text), privateKey).toString('base64')]);
      // Several rounds of both gateways' workers.
      await new Promise((r) => setTimeout(r, 3500));
      for (const m of [a, b]) {
        const r = await send(m, key);
        assert.equal(r.status, 401, `${m === a ? 'A' : 'B'} let the forged key through`);
        assert.equal(r.reached, false);
      }
      const admin = await fetch(`${b.control}/api/keys`, { headers: { authorization: `Bearer ${key}` } });
      // 401, or 429 once the failed attempts above count against it: never the console.
      assert.ok([401, 429].includes(admin.status), `the forged admin key got ${admin.status} from the console`);
      const signers = (await sql.query<{ gateway: string }>('SELECT gateway FROM custody_api_key_signatures WHERE id = $1', [id])).rows.map((r) => r.gateway);
      assert.deepEqual(signers, [mallory], 'no gateway vouched for it');
    } finally {
      await sql.end();
    }
  });

  /** A request through `m` to the path `/blocked-…`, which the shared rule denies. */
  async function sendBlocked(m: Member): Promise<{ status: number; reached: boolean }> {
    const tag = `blocked-${Math.random().toString(36).slice(2)}`;
    const r = await fetch(`${m.http}/echo/${tag}`, { headers: { authorization: `Bearer ${m.gw.firstKey}` } });
    await r.arrayBuffer();
    return { status: r.status, reached: echo.requests.some((q) => q.target.includes(tag)) };
  }

  it('a policy changed on A is enforced by B; one changed on B by A; a version written into the store by hand by neither', async () => {
    const deny = [{ name: 'no-blocked', match: { connections: ['echo'], paths: ['/blocked*'] }, action: 'deny', reason: 'blocked by the group' }];
    assert.equal((await sendBlocked(b)).status, 200);
    await api(a, 'PUT', '/api/policies', { rules: deny });
    const t0 = Date.now();
    const refused = await until('B enforces the rule made on A', async () => {
      const r = await sendBlocked(b);
      return r.status !== 200 && r;
    });
    const enforcedAfter = Date.now() - t0;
    console.log(`# policy made on A enforced by B in ${enforcedAfter} ms`);
    assert.equal(refused.status, 403);
    assert.ok(enforcedAfter < 1000, `B enforced the rule ${enforcedAfter} ms after A saved it`);
    assert.equal(refused.reached, false, 'the upstream never saw the denied request');
    const onB = await api<{ source: string; rules: unknown[] }>(b, 'GET', '/api/policies');
    assert.equal(onB.source, 'group');
    assert.deepEqual((onB.rules as { name: string }[]).map((r) => r.name), ['no-blocked']);

    // A version signed by a gateway row written by hand: enforced by nobody.
    const sql = await db.client();
    try {
      const { privateKey, id: mallory } = await forgedMember(sql, 'custody/mallory2');
      const content = canonicalize({ rules: [] });
      const hash = createHash('sha256').update(content).digest('hex');
      const at = Date.now();
      const text = `custody-document/v1\n${canonicalize(['policies', hash, mallory, 99, at])}`;
      await sql.query('INSERT INTO custody_documents (kind, content, hash, gateway, version, author, author_name, created_at, signature) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)', ['policies', content, hash, mallory, 99, 'mallory', 'mallory', at, sign(null, Buffer.from(text), privateKey).toString('base64')]);
    } finally {
      await sql.end();
    }
    await new Promise((r) => setTimeout(r, 3000));
    for (const m of [a, b]) assert.equal((await sendBlocked(m)).status, 403, 'the forged version was not enforced');

    await api(b, 'PUT', '/api/policies', { rules: [] });
    await until('A enforces the rules made on B', async () => (await sendBlocked(a)).status === 200);
    assert.equal((await sendBlocked(b)).status, 200);
  });

  it('rows deleted from the tail of A\'s chain in the store are noticed by A within seconds, and recorded in its own chain', async () => {
    const sql = await db.client();
    try {
      await send(a, a.gw.firstKey!);
      await until('A shipped', async () => a.gw.services.sharedStore!.health().lagEvents === 0);
      const deleted = await sql.query("DELETE FROM custody_events WHERE gateway = $1 AND seq > (SELECT max(seq) - 3 FROM custody_events WHERE gateway = $1) RETURNING seq", [a.id]);
      assert.equal(deleted.rowCount, 3);
      const t0 = Date.now();
      // Traffic goes on meanwhile: new rows shipped after the deleted ones must not hide them.
      await send(a, a.gw.firstKey!);
      const health = await until('A notices', async () => {
        const h = a.gw.services.sharedStore!.health();
        return h.cause?.includes('deleted from its tail') && h;
      });
      console.log(`# deleted tail noticed in ${Date.now() - t0} ms`);
      assert.equal(health.state, 'degraded');
      assert.match(health.cause!, /3 row\(s\) were deleted from its tail/);
      a.gw.services.store.settle();
      const recorded = a.gw.services.store.events(1, 100_000).filter((e) => e.kind === 'store.tampered');
      assert.equal(recorded.length, 1);
      assert.equal((recorded[0]!.payload as { foundSeq: number; shippedSeq: number }).shippedSeq - (recorded[0]!.payload as { foundSeq: number }).foundSeq, 3);
      await new Promise((r) => setTimeout(r, 1500));
      assert.match(a.gw.services.sharedStore!.health().cause ?? '', /deleted from its tail/, 'it stays in health after later rows are shipped');
    } finally {
      await sql.end();
    }
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
