/**
 * Connections added from the console are the group's (docs/SCALE-OUT.md, "One configuration"),
 * against the real PostgreSQL server, two gateways on one store: a connection with an env secret
 * added on A is listed on B within a second and, once B restarts (connections apply at start),
 * served by B with the credential from the environment B started with; one with a value secret
 * arrives on B without it, marked, refused until an admin sets the secret on B, and its value is in
 * no row of the store; a policy naming a connection that arrives in the same round is enforced on
 * B; an edit made on B reaches A, which keeps its own secret value; a removal on A reaches B; rows written into the store by hand change nothing on B. Checked by
 * what the upstream received and what the databases hold.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes, sign } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { ConnectionView } from '../../shared/api';
import { canonicalize } from '../../shared/canonical-json';
import { startEchoUpstream, type EchoUpstream } from '../support/echo-upstream';
import { createTestDatabase, type TestDatabase } from '../support/pg-database';
import { freePort } from '../support/ports';
import { approveMember, forgedMember, memberApi, restartStoreMember, type StoreMember, startStoreMember } from '../support/store-member';
import { startRelay } from '../support/tcp-relay';
import { tempDir } from '../support/tmp';
import { until } from '../support/until';

const root = tempDir('custody-scale-connections-');
let db: TestDatabase;
let echo: EchoUpstream;
const running: StoreMember[] = [];
/** A's first admin key: keys are the group's, so it works on B too (B restarted has no firstKey). */
let key: string;

const ENV = 'CUSTODY_SECRET_SCALE_CONNECTIONS';

/** A request through `m` to `/<connection>/<tag…>`; the status, the body, and what the upstream received for it. */
async function through(m: StoreMember, connection: string, prefix = 't'): Promise<{ status: number; body: string; received: { authorization?: string } | undefined }> {
  const tag = `${prefix}-${randomBytes(6).toString('hex')}`;
  const r = await fetch(`${m.http}/${connection}/${tag}`, { headers: { authorization: `Bearer ${key}` } });
  const body = await r.text();
  const seen = echo.requests.find((q) => q.target.includes(tag));
  return { status: r.status, body, received: seen && { authorization: seen.headers['authorization'] as string | undefined } };
}

const listed = async (m: StoreMember) => (await memberApi<{ connections: ConnectionView[] }>(m, 'GET', '/api/connections', undefined, key)).connections;

/** Waits until `m` lists `name` (or, with `gone`, no longer does); returns its view and how long it took. */
async function untilListed(m: StoreMember, name: string, gone = false): Promise<{ view: ConnectionView | undefined; ms: number }> {
  const t0 = Date.now();
  const view = await until(`${name} ${gone ? 'gone from' : 'listed on'} B`, async () => {
    const v = (await listed(m)).find((c) => c.name === name);
    return gone ? !v && { none: true } : v;
  });
  return { view: 'name' in view ? view : undefined, ms: Date.now() - t0 };
}

async function restartB(b: StoreMember): Promise<StoreMember> {
  running.splice(running.indexOf(b), 1);
  const again = await restartStoreMember(b);
  running.push(again);
  await until('B serves again', async () => (await through(again, 'echo')).status === 200);
  // And exchanges configuration with the store again (its worker does once the store admits it).
  await until('B ships again', async () => {
    const h = again.gw.services.sharedStore!.health();
    return h.shippedSeq > 0 && h.lagEvents === 0;
  });
  return again;
}

/** Every row of every custody_* table of the store, as text, that contains `needle`. */
async function rowsHolding(needle: string): Promise<string[]> {
  const sql = await db.client();
  try {
    const tables = (await sql.query<{ t: string }>("SELECT table_name AS t FROM information_schema.tables WHERE table_schema = 'public' AND table_name LIKE 'custody\\_%'")).rows.map((r) => r.t);
    assert.ok(tables.includes('custody_documents') && tables.includes('custody_events'));
    const found: string[] = [];
    for (const t of tables) {
      const rows = (await sql.query<{ r: string }>(`SELECT row_to_json(x)::text AS r FROM ${t} x`)).rows;
      for (const { r } of rows) if (r.includes(needle)) found.push(`${t}: ${r.slice(0, 200)}`);
    }
    return found;
  } finally {
    await sql.end();
  }
}

/** One statement on the store; its rows. */
async function storeRows<T extends Record<string, unknown>>(text: string, params: unknown[] = []): Promise<T[]> {
  const sql = await db.client();
  try {
    return (await sql.query<T>(text, params)).rows;
  } finally {
    await sql.end();
  }
}

const connectionVersions = async () => (await storeRows<{ n: number }>("SELECT count(*)::int AS n FROM custody_documents WHERE kind = 'connections'"))[0]!.n;

const documentText = (kind: string, hash: string, gateway: string, version: number, at: number) => `custody-document/v1\n${canonicalize([kind, hash, gateway, version, at])}`;
const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

/**
 * Forged `connections` versions, one per attempt, each adding a connection to the upstream under a
 * name of its own: the store's writer may write any row, but signs only with keys no gateway trusts.
 */
const FORGERIES: { name: string; write(sql: Awaited<ReturnType<TestDatabase['client']>>, a: StoreMember, content: string): Promise<void> }[] = [
  {
    name: 'a row written by hand, naming gateway A, with no valid signature',
    async write(sql, a, content) {
      await sql.query('INSERT INTO custody_documents (kind, content, hash, gateway, version, author, author_name, created_at, signature) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)', ['connections', content, sha256(content), a.id, 90_001, 'mallory', 'mallory', Date.now(), randomBytes(64).toString('base64')]);
    },
  },
  {
    name: 'a row signed by a gateway row also written by hand',
    async write(sql, _a, content) {
      const { privateKey, id } = await forgedMember(sql, 'custody/mallory-connections');
      const at = Date.now();
      const hash = sha256(content);
      await sql.query('INSERT INTO custody_documents (kind, content, hash, gateway, version, author, author_name, created_at, signature) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)', ['connections', content, hash, id, 90_002, 'mallory', 'mallory', at, sign(null, Buffer.from(documentText('connections', hash, id, 90_002, at)), privateKey).toString('base64')]);
    },
  },
  {
    name: "A's newest genuine row with its content edited (hash kept)",
    async write(sql, a, content) {
      await sql.query("UPDATE custody_documents SET content = $1 WHERE seq = (SELECT max(seq) FROM custody_documents WHERE kind = 'connections' AND gateway = $2)", [content, a.id]);
    },
  },
  {
    name: "A's newest genuine row with its content edited and its hash recomputed",
    async write(sql, a, content) {
      await sql.query("UPDATE custody_documents SET content = $1, hash = $2 WHERE seq = (SELECT max(seq) FROM custody_documents WHERE kind = 'connections' AND gateway = $3)", [content, sha256(content), a.id]);
    },
  },
];

describe("console connections are the group's", () => {
  let a: StoreMember;
  let b: StoreMember;
  let relay: Awaited<ReturnType<typeof startRelay>>;

  async function start(name: string, url: string): Promise<StoreMember> {
    const m = await startStoreMember(join(root, name), { listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' }, connections: [{ name: 'echo', kind: 'http', upstream: echo.url }], store: { url, staleAfter: '5s' } });
    running.push(m);
    return m;
  }

  before(async () => {
    db = await createTestDatabase('custody_test_scale_connections');
    echo = await startEchoUpstream();
    a = await start('a', db.url);
    key = a.gw.firstKey!;
    const port = await freePort();
    relay = await startRelay(port);
    b = await start('b', db.url.replace('127.0.0.1:5432', `127.0.0.1:${port}`));
    await approveMember(a, b, async () => (await fetch(`${b.http}/echo/x`, { headers: { authorization: `Bearer ${b.gw.firstKey}` } })).status === 200);
    await until('A\'s key works on B', async () => (await through(b, 'echo')).status === 200);
  });
  after(async () => {
    for (const m of running) await m.gw.stop();
    await relay?.close();
    await echo?.close();
    await db?.drop();
    delete process.env[ENV];
  });

  it('a connection with an env secret added on A is listed on B within a second, and served by B after its restart with the credential of its own environment', async () => {
    await memberApi(a, 'POST', '/api/connections', { name: 'env-conn', kind: 'http', upstream: echo.url, secret: { env: ENV } }, key);
    const { view, ms } = await untilListed(b, 'env-conn');
    console.log(`# connection added on A listed on B in ${ms} ms`);
    assert.ok(ms < 1000, `B listed it ${ms} ms after A saved it`);
    assert.deepEqual(view!.secret, { kind: 'env', env: ENV });
    assert.equal(view!.pendingRestart, true);
    assert.equal(view!.secretMissing, undefined);
    // The environment B starts with (A, which never restarts, never reads it).
    const fromB = `b-env-${randomBytes(16).toString('hex')}`;
    process.env[ENV] = fromB;
    b = await restartB(b);
    const r = await through(b, 'env-conn');
    assert.equal(r.status, 200, r.body);
    assert.equal(r.received?.authorization, `Bearer ${fromB}`, 'the upstream received the credential from B\'s environment');
  });

  it('a connection with a value secret reaches B without it, marked, refused until set on B; the value is in no row of the store', async () => {
    const value = `a-value-${randomBytes(16).toString('hex')}`;
    await memberApi(a, 'POST', '/api/connections', { name: 'value-conn', kind: 'http', upstream: echo.url, secret: value }, key);
    const { view } = await untilListed(b, 'value-conn');
    assert.equal(view!.secretMissing, true);
    assert.deepEqual(view!.secret, { kind: 'value' });
    const onA = (await listed(a)).find((c) => c.name === 'value-conn')!;
    assert.equal(onA.secretMissing, undefined, 'A holds the value');
    b = await restartB(b);
    const refused = await through(b, 'value-conn');
    assert.equal(refused.status, 503);
    assert.match(refused.body, /secret is not set on this gateway/);
    assert.equal(refused.received, undefined, 'the upstream received nothing');
    await until('A shipped its events', async () => a.gw.services.sharedStore!.health().lagEvents === 0);
    for (const needle of [value, Buffer.from(value).toString('base64')]) assert.deepEqual(await rowsHolding(needle), [], 'the secret value is in no row of the store');

    // Set on B: served by B with B's value, which goes nowhere else (no new version: nothing the group shares changed).
    const versionsBefore = await connectionVersions();
    const onB = `b-value-${randomBytes(16).toString('hex')}`;
    const set = await memberApi<ConnectionView>(b, 'PUT', '/api/connections/value-conn', { secret: onB }, key);
    assert.equal(set.secretMissing, undefined);
    b = await restartB(b);
    const served = await through(b, 'value-conn');
    assert.equal(served.status, 200, served.body);
    assert.equal(served.received?.authorization, `Bearer ${onB}`);
    await until('B shipped its events', async () => b.gw.services.sharedStore!.health().lagEvents === 0);
    assert.equal(await connectionVersions(), versionsBefore, 'setting the secret on B pushed no version');
    for (const needle of [onB, Buffer.from(onB).toString('base64')]) assert.deepEqual(await rowsHolding(needle), [], 'B\'s value is in no row of the store');
  });

  it('a policy naming a connection that arrives in the same round is enforced on B', async () => {
    // B hears nothing while A makes both changes, then reads them in one round.
    await relay.cut();
    await memberApi(a, 'POST', '/api/connections', { name: 'pol-conn', kind: 'http', upstream: echo.url, secret: { env: ENV } }, key);
    await memberApi(a, 'PUT', '/api/policies', { rules: [{ name: 'no-blocked', match: { connections: ['pol-conn'], paths: ['/blocked*'] }, action: 'deny', reason: 'blocked by the group' }] }, key);
    await relay.restore();
    await until('B enforces the policy made on A', async () => {
      const p = await memberApi<{ source: string; rules: { name: string }[] }>(b, 'GET', '/api/policies', undefined, key);
      return p.source === 'group' && p.rules.some((r) => r.name === 'no-blocked');
    });
    b = await restartB(b);
    const denied = await through(b, 'pol-conn', 'blocked');
    assert.equal(denied.status, 403, denied.body);
    assert.equal(denied.received, undefined, 'the upstream never saw the denied request');
    const allowed = await through(b, 'pol-conn');
    assert.equal(allowed.status, 200, allowed.body);
  });

  it('an edit made on B reaches A, and A keeps the secret value it holds', async () => {
    await memberApi(b, 'PUT', '/api/connections/pol-conn', { description: 'edited on B' }, key);
    await until('A has the edit made on B', async () => (await listed(a)).find((c) => c.name === 'pol-conn')?.description === 'edited on B');
    const valueOnA = (await listed(a)).find((c) => c.name === 'value-conn')!;
    assert.deepEqual([valueOnA.secret, valueOnA.secretMissing], [{ kind: 'value' }, undefined]);
    const row = a.gw.services.store.db.prepare('SELECT secret FROM connections WHERE name = ?').get('value-conn') as { secret: Buffer | null };
    assert.ok(row.secret, "A's sealed value is still there");
    // B's own edit stays on B (the group's newest is B's now).
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal((await listed(b)).find((c) => c.name === 'pol-conn')?.description, 'edited on B');
  });

  it('a connection removed on A is removed on B', async () => {
    await memberApi(a, 'DELETE', '/api/connections/env-conn', undefined, key);
    const { ms } = await untilListed(b, 'env-conn', true);
    console.log(`# connection removed on A gone from B in ${ms} ms`);
    assert.ok(ms < 1000, `B removed it ${ms} ms after A did`);
    const row = b.gw.services.store.db.prepare('SELECT name FROM connections WHERE name = ?').get('env-conn');
    assert.equal(row, undefined);
    b = await restartB(b);
    const r = await through(b, 'env-conn');
    assert.equal(r.status, 404);
    assert.equal(r.received, undefined);
  });

  for (const [i, forgery] of FORGERIES.entries()) {
    it(`a forged connections version changes nothing on B: ${forgery.name}`, async () => {
      const name = `forged-${i}`;
      const genuine = (await storeRows<{ content: string }>("SELECT content FROM custody_documents WHERE kind = 'connections' AND gateway = $1 ORDER BY seq DESC LIMIT 1", [a.id]))[0]!.content;
      const content = JSON.parse(genuine) as { connections: unknown[] };
      content.connections.push({ name, kind: 'http', upstream: echo.url });
      const sql = await db.client();
      try {
        await forgery.write(sql, a, canonicalize(content));
      } finally {
        await sql.end();
      }
      // Several rounds of both gateways' workers.
      await new Promise((r) => setTimeout(r, 2500));
      for (const m of [a, b]) assert.equal(m.gw.services.store.db.prepare('SELECT name FROM connections WHERE name = ?').get(name), undefined, `${m === a ? 'A' : 'B'} stored the forged connection`);
      const r = await through(b, name);
      assert.equal(r.received, undefined);
    });
  }
});
