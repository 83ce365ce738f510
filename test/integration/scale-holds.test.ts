/**
 * Holds across gateways (docs/SCALE-OUT.md, "Holds across gateways"): two `custody serve`
 * processes, A and B, on one real PostgreSQL store, an HTTP connection to an upstream that keeps
 * what it received, and hold rules on two paths.
 *
 * - a request held on A is in B's pending list within a second; an approval through B's API
 *   releases it on A (the upstream receives it); B's chain records the vote citing A's
 *   `hold.created` by its hash, and A's resolution cites B's vote;
 * - a denial through B refuses the request on A;
 * - k-of-N counts persons wherever they vote: one person voting on A and again on B (two keys)
 *   counts once; a second person on B completes it;
 * - A killed with SIGKILL while a request waits: once A's lease expires, B records the hold
 *   abandoned in its own chain, citing A's `hold.created`, and B's inbox clears; A started again
 *   at once (its lease still valid) ends its leftover hold in the store itself;
 * - `custody verify --store` passes on everything both chains shipped, and every cross-reference
 *   resolves; with the cited rows gone it reports the references that no longer do.
 */
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import pg from 'pg';
import type { HoldView } from '../../shared/holds';
import type { ServerMessage } from '../../shared/messages';
import { type CustodyServe, custody, startServe, writeConfig } from '../support/custody-process';
import { startEchoUpstream, type EchoUpstream } from '../support/echo-upstream';
import { createTestDatabase, type TestDatabase } from '../support/pg-database';
import { freePort } from '../support/ports';
import { tempDir } from '../support/tmp';
import { EventsClient } from './holds-ws-client';

const root = tempDir('custody-scale-holds-');
let echo: EchoUpstream;
let db: TestDatabase;
let sql: pg.Client;
const pgClient = pg.Client;
const serving: CustodyServe[] = [];

interface Member {
  dir: string;
  file: string;
  gw?: CustodyServe;
  id?: string;
  pgPort?: number;
  keys: Record<string, string>;
}
const a: Member = { dir: '', file: '', keys: {} };
const b: Member = { dir: '', file: '', keys: {} };

async function until<T>(what: string, fn: () => Promise<T | undefined | false>, ms = 30_000, every = 20): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, every));
  }
}

function cli(m: Member, ...args: string[]): string {
  const r = custody(...args, '--config', m.file);
  assert.equal(r.status, 0, `custody ${args.join(' ')}: ${r.stderr}`);
  return r.stdout.trim();
}

async function setUp(m: Member, name: string, keys: [string, string | undefined, string][]): Promise<void> {
  m.dir = join(root, name);
  mkdirSync(m.dir);
  m.pgPort = await freePort();
  m.file = writeConfig(m.dir, {
    dataDir: m.dir,
    listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
    // The upstream database is the test's own (a table beside the store's).
    connections: [
      { name: 'echo', kind: 'http', upstream: echo.url },
      { name: 'warehouse', kind: 'postgres', upstream: db.url, listen: `127.0.0.1:${m.pgPort}` },
    ],
    policies: [
      { name: 'hold-delete', match: { connections: ['warehouse'], sql: ['delete', 'delete_without_where'] }, action: 'hold', hold: { approvers: ['ops'], min: 1, timeout: '2m' } },
      { name: 'hold-one', match: { paths: ['/held/*'] }, action: 'hold', hold: { approvers: ['ops'], min: 1, timeout: '2m' } },
      { name: 'hold-two', match: { paths: ['/two/*'] }, action: 'hold', hold: { approvers: ['ops'], min: 2, timeout: '2m' } },
    ],
    store: { url: db.url },
  });
  // The same persons, with the same ids, made on both gateways before they join (the way before
  // persons were shared through the store; test/integration/scale-persons.test.ts shares them).
  cli(m, 'persons', 'create', 'Alice', '--id', 'person_alice');
  cli(m, 'persons', 'create', 'Bob', '--id', 'person_bob');
  for (const [key, owner, groups] of keys) m.keys[key] = cli(m, 'keys', 'create', '--name', key, ...(owner ? ['--owner', owner] : []), '--groups', groups);
}

const send = (m: Member, path: string) => fetch(`http://${m.gw!.http}/echo/${path}`, { headers: { authorization: `Bearer ${m.keys['requester']}` } });

async function api<T>(m: Member, key: string, path: string, body?: unknown): Promise<{ status: number; body: T }> {
  const res = await fetch(`http://${m.gw!.control}${path}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { authorization: `Bearer ${m.keys[key]}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: res.status, body: (await res.json()) as T };
}

const pendingOn = async (m: Member, key: string) => (await api<{ holds: HoldView[] }>(m, key, '/api/holds?state=pending')).body.holds;
const decide = (m: Member, key: string, id: string, decision: 'approve' | 'deny', reason = '') => api<HoldView & { error?: { code: string } }>(m, key, `/api/holds/${id}/decision`, { decision, reason });

/** A held request sent through A, and the hold as B's API shows it, with how long B took to see it. */
async function holdOnA(path: string): Promise<{ response: Promise<Response>; hold: HoldView; seenAfterMs: number }> {
  const t0 = Date.now();
  const response = send(a, path);
  response.catch(() => {});
  const hold = await until(`the hold for ${path} on B`, async () => (await pendingOn(b, 'alice-b')).find((h) => h.summary.includes(path)), 10_000);
  return { response, hold, seenAfterMs: Date.now() - t0 };
}

function chain(m: Member): { seq: number; kind: string; hash: string; payload: Record<string, unknown> }[] {
  const d = new Database(join(m.dir, 'custody.db'), { readonly: true });
  try {
    return (d.prepare("SELECT seq, kind, hash, payload, encoding FROM events WHERE kind LIKE 'hold.%' ORDER BY seq").all() as { seq: number; kind: string; hash: string; payload: string; encoding: string }[]).map((r) => ({
      ...r,
      payload: JSON.parse(r.payload) as Record<string, unknown>,
    }));
  } finally {
    d.close();
  }
}

before(async () => {
  echo = await startEchoUpstream();
  db = await createTestDatabase('custody_test_scale_holds');
  sql = await db.client();
  await sql.query('CREATE TABLE orders (id int); INSERT INTO orders SELECT generate_series(1, 3)');
  await setUp(a, 'a', [
    ['requester', undefined, 'dev'],
    ['alice-a', 'person_alice', 'ops'],
  ]);
  await setUp(b, 'b', [
    ['alice-b', 'person_alice', 'ops'],
    ['bob-b', 'person_bob', 'ops'],
    ['requester', undefined, 'dev'],
  ]);
  a.gw = await startServe(a.file);
  serving.push(a.gw);
  a.id = await until('A enrolled', async () => (await sql.query<{ id: string }>("SELECT id FROM custody_gateways WHERE status = 'enrolled'")).rows[0]?.id);
  b.gw = await startServe(b.file);
  serving.push(b.gw);
  b.id = await until('B pending', async () => (await sql.query<{ id: string }>("SELECT id FROM custody_gateways WHERE status = 'pending'")).rows[0]?.id);
  cli(a, 'gateways', 'approve', b.id);
  await until('B serving', async () => (await send(b, 'plain')).status === 200);
});

after(async () => {
  for (const gw of serving.splice(0)) await gw.kill();
  await echo?.close();
  await db?.drop();
});

describe('holds across two gateways on one store', () => {
  it('a hold on A is seen on B within a second; an approval on B releases the request on A, each chain citing the other', async () => {
    const events = await EventsClient.connect(`http://${b.gw!.control}`, { bearer: b.keys['alice-b'] });
    const arrived = new Map<string, number>();
    events.onMessage = (m, at) => {
      if (m.type === 'hold.created') arrived.set(m.hold.id, at);
    };
    const t0 = performance.now();
    const { response, hold, seenAfterMs } = await holdOnA('held/approve-me');
    assert.ok(seenAfterMs < 1000, `B listed the hold ${seenAfterMs} ms after the request was sent to A`);
    const pushed = await events.next<Extract<ServerMessage, { type: 'hold.created' }>>((m) => m.type === 'hold.created' && m.hold.id === hold.id, 1000);
    assert.equal(pushed.hold.gateway, a.id, "pushed over B's WebSocket like a local hold");
    const pushedAfterMs = arrived.get(hold.id)! - t0;
    assert.ok(pushedAfterMs < 1000, `B pushed the hold ${pushedAfterMs.toFixed(0)} ms after the request was sent to A`);
    assert.equal(hold.gateway, a.id, 'B shows whose request waits');
    assert.equal(echo.requests.filter((r) => r.target.includes('approve-me')).length, 0, 'held: the upstream has not seen it');

    const decided = await decide(b, 'alice-b', hold.id, 'approve', 'looks fine');
    assert.equal(decided.status, 200, JSON.stringify(decided.body));
    const res = await response;
    assert.equal(res.status, 200, await res.clone().text());
    assert.equal(echo.requests.filter((r) => r.target.includes('approve-me')).length, 1, 'the upstream received the released request once');

    // B: approved (pushed, and over REST), and nothing pending.
    await events.next((m) => m.type === 'hold.resolved' && m.hold.id === hold.id && m.hold.state === 'approved', 5000);
    await events.close();
    await until('B shows it approved', async () => (await api<HoldView>(b, 'alice-b', `/api/holds/${hold.id}`)).body.state === 'approved');
    assert.equal((await pendingOn(b, 'alice-b')).length, 0);

    // B's vote cites A's hold.created by its hash; A's resolution cites B's vote.
    const created = chain(a).find((e) => e.kind === 'hold.created' && e.payload['id'] === hold.id)!;
    const vote = chain(b).find((e) => e.kind === 'hold.vote' && e.payload['id'] === hold.id)!;
    assert.deepEqual(vote.payload['refs'], [{ gateway: a.id, seq: created.seq, hash: created.hash }]);
    assert.equal(vote.payload['person'], 'person_alice');
    const resolved = chain(a).find((e) => e.kind === 'hold.resolved' && e.payload['id'] === hold.id)!;
    assert.equal(resolved.payload['state'], 'approved');
    assert.deepEqual(resolved.payload['refs'], [{ gateway: b.id, seq: vote.seq, hash: vote.hash }]);
    assert.equal(chain(a).filter((e) => e.kind === 'hold.vote' && e.payload['id'] === hold.id).length, 0, 'the vote is in B\'s chain only');
  });

  it('a DELETE held on A runs in the database once approved through B', async () => {
    const client = new pgClient({ host: '127.0.0.1', port: a.pgPort, user: 'me', password: a.keys['requester'], database: db.name, ssl: { rejectUnauthorized: false } });
    await client.connect();
    try {
      const t0 = Date.now();
      const deleted = client.query('DELETE FROM orders WHERE id > 1');
      deleted.catch(() => {});
      const hold = await until('the DELETE on B', async () => (await pendingOn(b, 'alice-b')).find((h) => h.protocol === 'postgres'), 10_000);
      assert.ok(Date.now() - t0 < 1000, `seen on B after ${Date.now() - t0} ms`);
      assert.equal(hold.statement, 'DELETE FROM orders WHERE id > 1');
      assert.equal((await sql.query('SELECT count(*)::int AS n FROM orders')).rows[0].n, 3, 'nothing deleted while held');
      assert.equal((await decide(b, 'alice-b', hold.id, 'approve', 'cleanup ticket')).status, 200);
      assert.equal((await deleted).rowCount, 2);
      assert.deepEqual((await sql.query('SELECT id FROM orders')).rows, [{ id: 1 }], 'the statement ran in the database');
    } finally {
      await client.end();
    }
  });

  it('a denial on B refuses the request on A', async () => {
    const { response, hold } = await holdOnA('held/deny-me');
    const decided = await decide(b, 'bob-b', hold.id, 'deny', 'not today');
    assert.equal(decided.status, 200, JSON.stringify(decided.body));
    const res = await response;
    assert.equal(res.status, 403);
    assert.match(await res.text(), /not today/);
    assert.equal(echo.requests.filter((r) => r.target.includes('deny-me')).length, 0, 'the upstream never saw it');
  });

  it('k-of-N counts persons wherever they vote: one person on A and on B counts once, a second person completes it', async () => {
    const { response, hold } = await holdOnA('two/needs-two');
    let settled = false;
    void response.then(() => (settled = true), () => (settled = true));
    const onA = await decide(a, 'alice-a', hold.id, 'approve');
    assert.equal(onA.status, 200, JSON.stringify(onA.body));
    // Alice again, with her other key, on B: refused there once B has heard of her vote, and never counted twice.
    await until('B sees Alice\'s vote on A', async () => (await api<HoldView>(b, 'alice-b', `/api/holds/${hold.id}`)).body.votes.length === 1, 5000);
    const again = await decide(b, 'alice-b', hold.id, 'approve');
    assert.equal(again.status, 409, JSON.stringify(again.body));
    assert.equal(again.body.error?.code, 'already_voted');
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(settled, false, 'one person is one vote: still held');
    assert.equal(echo.requests.filter((r) => r.target.includes('needs-two')).length, 0);

    const bob = await decide(b, 'bob-b', hold.id, 'approve');
    assert.equal(bob.status, 200, JSON.stringify(bob.body));
    assert.equal((await response).status, 200);
    assert.equal(echo.requests.filter((r) => r.target.includes('needs-two')).length, 1);
    const view = (await api<HoldView>(a, 'alice-a', `/api/holds/${hold.id}`)).body;
    assert.deepEqual(view.votes.map((v) => [v.person, v.gateway ?? a.id]), [
      ['person_alice', a.id],
      ['person_bob', b.id],
    ]);
  });

  it('a vote cast on B before B has heard of an earlier vote by the same person is not counted by A', async () => {
    const { response, hold } = await holdOnA('two/same-person');
    let settled = false;
    void response.then(() => (settled = true), () => (settled = true));
    // Both at once: B cannot know of the vote on A yet, so both may be recorded; A counts Alice once.
    const [onA, onB] = await Promise.all([decide(a, 'alice-a', hold.id, 'approve'), decide(b, 'alice-b', hold.id, 'approve')]);
    assert.equal(onA.status, 200, JSON.stringify(onA.body));
    assert.ok(onB.status === 200 || onB.status === 409, JSON.stringify(onB.body));
    process.stderr.write(`# the same person on both gateways at once: B answered ${onB.status}\n`);
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal(settled, false, 'Alice counted once: still held');
    const view = (await api<HoldView>(a, 'alice-a', `/api/holds/${hold.id}`)).body;
    assert.equal(view.state, 'pending');
    assert.equal(view.votes.filter((v) => v.person === 'person_alice').length, 1, JSON.stringify(view.votes));
    assert.equal((await decide(b, 'bob-b', hold.id, 'approve')).status, 200);
    assert.equal((await response).status, 200);
  });

  it('a gateway whose listening session is cut reconnects and still sees new holds', async () => {
    const cut = await sql.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'custody-holds'");
    assert.ok((cut.rowCount ?? 0) >= 2, `both gateways' listening sessions were cut (${cut.rowCount})`);
    const { response, hold, seenAfterMs } = await holdOnA('held/after-cut');
    assert.ok(seenAfterMs < 3000, `seen after ${seenAfterMs} ms`);
    assert.equal((await decide(b, 'alice-b', hold.id, 'approve')).status, 200);
    assert.equal((await response).status, 200);
  });

  it('when A dies, B records its pending hold abandoned once A\'s lease expires, citing A\'s hold.created', async () => {
    const { response, hold } = await holdOnA('held/orphan');
    response.catch(() => {});
    // Let A ship its hold.created, so the store holds the event B cites.
    await until('A shipped the hold', async () => (await sql.query("SELECT 1 FROM custody_events WHERE kind = 'hold.created' AND payload LIKE $1", [`%${hold.id}%`])).rowCount === 1, 10_000);
    await a.gw!.kill();
    serving.splice(serving.indexOf(a.gw!), 1);
    const killedAt = Date.now();
    await until('B shows it abandoned', async () => (await api<HoldView>(b, 'alice-b', `/api/holds/${hold.id}`)).body.state === 'abandoned', 20_000, 100);
    const tookMs = Date.now() - killedAt;
    assert.ok(tookMs < 12_000, `abandoned ${tookMs} ms after A died`);
    process.stderr.write(`# A's hold recorded abandoned by B ${tookMs} ms after A was killed\n`);
    assert.equal((await pendingOn(b, 'alice-b')).length, 0, 'B\'s inbox is clear');
    const created = (await sql.query<{ seq: string; hash: string }>("SELECT seq, hash FROM custody_events WHERE gateway = $1 AND kind = 'hold.created' AND payload LIKE $2", [a.id, `%${hold.id}%`])).rows[0]!;
    const abandoned = chain(b).find((e) => e.kind === 'hold.resolved' && e.payload['id'] === hold.id)!;
    assert.equal(abandoned.payload['state'], 'abandoned');
    assert.equal(abandoned.payload['owner'], a.id);
    assert.deepEqual((abandoned.payload['refs'] as unknown[])[0], { gateway: a.id, seq: Number(created.seq), hash: created.hash });
    assert.match(String(abandoned.payload['reason']), /stopped renewing its lease/);
  });

  it('A started again after a crash ends its leftover holds in the store itself', async () => {
    a.gw = await startServe(a.file);
    serving.push(a.gw);
    const { response, hold } = await holdOnA('held/leftover');
    response.catch(() => {});
    await a.gw.kill();
    serving.splice(serving.indexOf(a.gw), 1);
    // A's lease is made to last, so only A can end this hold: at its next start.
    await sql.query('UPDATE custody_leases SET expires_at = expires_at + 600000 WHERE gateway = $1', [a.id]);
    a.gw = await startServe(a.file);
    serving.push(a.gw);
    await until('B shows it abandoned', async () => (await api<HoldView>(b, 'alice-b', `/api/holds/${hold.id}`)).body.state === 'abandoned', 15_000, 100);
    const row = (await sql.query<{ state: string; resolved_by: string | null }>('SELECT state, resolved_by FROM custody_holds WHERE id = $1', [hold.id])).rows[0]!;
    assert.deepEqual(row, { state: 'abandoned', resolved_by: null }, 'written by its owner, not claimed by B');
    assert.equal(chain(b).filter((e) => e.kind === 'hold.resolved' && e.payload['id'] === hold.id).length, 0, 'B recorded nothing for it');
    assert.equal(chain(a).filter((e) => e.kind === 'hold.resolved' && e.payload['id'] === hold.id && e.payload['state'] === 'abandoned').length, 1);
  });

  it('the combined history passes custody verify --store', async () => {
    for (const gw of serving.splice(0)) assert.equal(await gw.stop(), 0);
    const r = custody('verify', '--store', db.url);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    // Every cross-reference in the store resolves to an event with that hash.
    const rows = (await sql.query<{ gateway: string; payload: string }>("SELECT gateway, payload FROM custody_events WHERE kind IN ('hold.vote', 'hold.resolved') AND payload LIKE '%\"refs\"%'")).rows;
    assert.ok(rows.length >= 4, `${rows.length} events with references`);
    for (const row of rows) {
      for (const ref of (JSON.parse(row.payload) as { refs: { gateway: string; seq: number; hash: string }[] }).refs) {
        const hit = await sql.query('SELECT 1 FROM custody_events WHERE gateway = $1 AND seq = $2 AND hash = $3', [ref.gateway, ref.seq, ref.hash]);
        assert.equal(hit.rowCount, 1, `reference ${JSON.stringify(ref)} from ${row.gateway} resolves`);
      }
    }
    // verify checks them too: with A's chain cut before the first hold it created, B's vote cites nothing.
    const first = (await sql.query<{ seq: string }>("SELECT min(seq) AS seq FROM custody_events WHERE gateway = $1 AND kind = 'hold.created'", [a.id])).rows[0]!.seq;
    await sql.query('DELETE FROM custody_events WHERE gateway = $1 AND seq >= $2', [a.id, first]);
    const cut = custody('verify', '--store', db.url, '--json');
    assert.equal(cut.status, 1, cut.stdout + cut.stderr);
    const failures = (JSON.parse(cut.stdout) as { failures: { chain: string; problem: string; message: string }[] }).failures;
    const bad = failures.filter((f) => f.problem === 'bad-reference' && f.chain === b.id);
    assert.ok(bad.length >= 1, JSON.stringify(failures, null, 1));
    assert.match(bad[0]!.message, /hold\.vote cites an event of another chain that does not resolve/);
  });
});
