/**
 * The console of any gateway on one store (docs/SCALE-OUT.md, "The console of any gateway"): two
 * `custody serve` processes, A and B, on one real PostgreSQL store, an OpenAI connection to the
 * local stand-in with a masking rule for card numbers.
 *
 * - B, waiting for enrolment, is approved through A's REST API (what the Gateways view does): the
 *   approval is in A's own chain under a signed checkpoint, the row says approved, and B serves;
 * - a chat completion made with the OpenAI SDK through A is listed by B's /api/sessions, marked as
 *   A's, and B replays it event for event as A does (same seqs, hashes, payloads and masked spans);
 *   the dashboard on B counts it; a session made through B is listed by A;
 * - a console cookie A issued is accepted by B; logout on A ends it on B; a cookie B issued works on
 *   A; the store holds only the cookie's digest; a session row written into the store by hand (even
 *   signed by a key of its own) is refused.
 */
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import OpenAI from 'openai';
import type pg from 'pg';
import type { GatewayList, GatewayView, SessionEvents, SessionList } from '../../shared/api';
import { canonicalize } from '../../shared/canonical-json';
import type { DashboardData } from '../../shared/dashboard';
import { keyFingerprint } from '../../proxy/audit/checkpoint-signer';
import { type CustodyServe, startServe, writeConfig } from '../support/custody-process';
import { type LlmUpstream, startLlmUpstream } from '../support/llm-upstream';
import { createTestDatabase, type TestDatabase } from '../support/pg-database';
import { tempDir } from '../support/tmp';
import { until } from '../support/until';

const root = tempDir('custody-scale-console-');
const OPENAI_SECRET = 'sk-scale-console';
const CARD = '4111 1111 1111 1111';
let upstream: LlmUpstream;
let db: TestDatabase;
let sql: pg.Client;

interface Member {
  dir: string;
  file: string;
  gw?: CustodyServe;
  id?: string;
  key?: string;
}
const a: Member = { dir: '', file: '' };
const b: Member = { dir: '', file: '' };
const c: Member = { dir: '', file: '' };

function setUp(m: Member, name: string): void {
  m.dir = join(root, name);
  mkdirSync(m.dir);
  m.file = writeConfig(m.dir, {
    dataDir: m.dir,
    listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
    connections: [{ name: 'openai', kind: 'openai', upstream: `${upstream.url}/v1`, secret: { value: OPENAI_SECRET } }],
    masking: [{ id: 'cards', detectors: ['credit_card'], scope: ['client', 'upstream', 'log'], connections: ['openai'] }],
    store: { url: db.url },
  });
}

interface Auth {
  key?: string;
  cookie?: string;
}

async function call<T>(m: Member, path: string, auth: Auth, method = 'GET', body?: unknown): Promise<{ status: number; body: T; headers: Headers }> {
  const headers: Record<string, string> = {};
  if (auth.key) headers['authorization'] = `Bearer ${auth.key}`;
  if (auth.cookie) headers['cookie'] = `custody_session=${auth.cookie}`;
  if (method !== 'GET') headers['origin'] = `http://${m.gw!.control}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`http://${m.gw!.control}${path}`, { method, headers, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
  const text = await res.text();
  return { status: res.status, body: (text ? JSON.parse(text) : undefined) as T, headers: res.headers };
}

/** Signs in to `m`'s console with an API key; returns the session cookie's value. */
async function signIn(m: Member, key: string): Promise<string> {
  const res = await fetch(`http://${m.gw!.control}/api/auth/key`, { method: 'POST', headers: { 'content-type': 'application/json', origin: `http://${m.gw!.control}` }, body: JSON.stringify({ key }) });
  assert.equal(res.status, 200, await res.text());
  const cookie = /custody_session=([^;]+)/.exec(res.headers.get('set-cookie') ?? '')?.[1];
  assert.ok(cookie, 'the login set a session cookie');
  return decodeURIComponent(cookie);
}

function chatVia(m: Member, key: string, text: string) {
  return new OpenAI({ baseURL: `http://${m.gw!.http}/openai`, apiKey: key, maxRetries: 0 }).chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: text }] });
}

function localEvents(m: Member, kind: string): { seq: number; actor: string | null; payload: Record<string, unknown> }[] {
  const d = new Database(join(m.dir, 'custody.db'), { readonly: true });
  try {
    return (d.prepare('SELECT seq, actor, payload FROM events WHERE kind = ? ORDER BY seq').all(kind) as { seq: number; actor: string | null; payload: string }[]).map((r) => ({ ...r, payload: JSON.parse(r.payload) as Record<string, unknown> }));
  } finally {
    d.close();
  }
}

before(async () => {
  upstream = await startLlmUpstream({ openaiKey: OPENAI_SECRET, reply: 'Noted.' });
  db = await createTestDatabase('custody_test_scale_console');
  sql = await db.client();
  setUp(a, 'a');
  setUp(b, 'b');
  setUp(c, 'c');
  a.gw = await startServe(a.file);
  a.key = a.gw.key;
  // Until the first gateway has migrated the store, its tables do not exist yet.
  a.id = await until('A enrolled', async () => (await sql.query<{ id: string }>("SELECT id FROM custody_gateways WHERE status = 'enrolled'").catch(() => undefined))?.rows[0]?.id);
  b.gw = await startServe(b.file);
  b.key = b.gw.key;
  b.id = await until('B pending', async () => (await sql.query<{ id: string }>("SELECT id FROM custody_gateways WHERE status = 'pending'")).rows[0]?.id);
});

after(async () => {
  await a.gw?.kill();
  await b.gw?.kill();
  await c.gw?.kill();
  await upstream?.close();
  await db?.drop();
});

describe('the console of any gateway on one store', () => {
  it('approves a pending gateway through the REST API, recorded in the approving chain', async () => {
    const list = await call<GatewayList>(a, '/api/gateways', { key: a.key });
    assert.equal(list.status, 200);
    assert.equal(list.body.self, a.id);
    const pending = list.body.gateways.find((g) => g.id === b.id)!;
    assert.equal(pending.status, 'pending');
    assert.equal(list.body.gateways.find((g) => g.id === a.id)!.status, 'enrolled');
    assert.equal(((await chatVia(b, b.key!, 'hello').catch((e: unknown) => e)) as { status?: number }).status, 503, 'B serves nothing while pending');

    // A pending gateway cannot approve anyone.
    const own = await call<{ error: { code: string } }>(b, `/api/gateways/${encodeURIComponent(a.id!)}/approve`, { key: b.key }, 'POST');
    assert.equal(own.status, 409, `B, itself pending, cannot approve: ${JSON.stringify(own.body)}`);
    const approved = await call<GatewayView>(a, `/api/gateways/${encodeURIComponent(b.id!)}/approve`, { key: a.key }, 'POST');
    assert.equal(approved.status, 200, JSON.stringify(approved.body));
    assert.equal(approved.body.status, 'approved');
    assert.equal(approved.body.approvedBy, a.id);
    const row = (await sql.query<{ status: string; approved_by: string; approval_seq: string }>('SELECT status, approved_by, approval_seq FROM custody_gateways WHERE id = $1', [b.id])).rows[0]!;
    assert.deepEqual([row.status, row.approved_by], ['approved', a.id]);
    const event = await until('gateway.approved in A', async () => localEvents(a, 'gateway.approved').at(-1));
    assert.equal(event.seq, Number(row.approval_seq), "the row points at the approval in A's chain");
    assert.equal(event.payload['id'], b.id);
    assert.match(event.actor ?? '', /^key:/, 'recorded as the admin who approved');
    const shipped = (await sql.query<{ n: string }>("SELECT count(*) AS n FROM custody_checkpoints WHERE gateway = $1 AND tree_size >= $2", [a.id, event.seq])).rows[0]!.n;
    assert.ok(Number(shipped) >= 1, 'a signed checkpoint covering the approval is in the store');
    await until('B serving', async () => (await chatVia(b, b.key!, 'hello').catch(() => undefined))?.choices.length);
    const again = await call<{ error: { code: string } }>(a, `/api/gateways/${encodeURIComponent(b.id!)}/approve`, { key: a.key }, 'POST');
    assert.equal(again.status, 409, 'an approved gateway is not approved twice');
  });

  it("lists and replays on B a session recorded on A, with A's masked spans", async () => {
    await chatVia(a, a.key!, `Charge ${CARD} for the team lunch`);
    const sent = upstream.requestsTo('/v1/chat/completions').pop()!.body.toString();
    assert.ok(!sent.includes(CARD), 'masked on its way upstream');
    const onA = (await call<SessionList>(a, '/api/sessions?protocol=http', { key: a.key })).body.sessions.find((s) => s.masked > 0)!;
    assert.ok(onA, 'A lists its own session');
    assert.equal(onA.gateway, a.id, 'marked as recorded by A');

    const t0 = Date.now();
    const listed = await until('the session on B', async () => (await call<SessionList>(b, '/api/sessions', { key: b.key })).body.sessions.find((s) => s.id === onA.id));
    const seenMs = Date.now() - t0;
    assert.equal(listed.gateway, a.id, 'B marks it as recorded by A');
    assert.equal(listed.requests, onA.requests);
    assert.equal(listed.masked, onA.masked);
    assert.ok(listed.masked > 0);
    // Filters apply to the other gateways' sessions too.
    assert.ok((await call<SessionList>(b, '/api/sessions?hadMasking=true', { key: b.key })).body.sessions.some((s) => s.id === onA.id));
    assert.ok(!(await call<SessionList>(b, '/api/sessions?protocol=postgres', { key: b.key })).body.sessions.some((s) => s.id === onA.id));
    assert.equal((await call(b, `/api/sessions/${onA.id}`, { key: b.key })).status, 200);

    const replayA = (await call<SessionEvents>(a, `/api/sessions/${onA.id}/events`, { key: a.key })).body;
    // Wait until A's session has ended everywhere, so both replays hold the same events.
    const replayB = await until('the whole session on B', async () => {
      const r = (await call<SessionEvents>(b, `/api/sessions/${onA.id}/events`, { key: b.key })).body;
      return r.events.length >= replayA.events.length && r;
    });
    assert.equal(replayB.session.gateway, a.id);
    assert.equal(replayB.altered, undefined, 'every row matches its hashes');
    const pick = (e: SessionEvents['events'][number]) => ({ seq: e.seq, kind: e.kind, hash: e.hash, payload: e.payload, spans: e.spans });
    assert.deepEqual(replayB.events.slice(0, replayA.events.length).map(pick), replayA.events.map(pick), 'B replays the same events, spans and hashes as A');
    const request = replayB.events.find((e) => e.kind === 'http.request')!;
    assert.ok(request.spans.length > 0, 'the masked field is marked in the replayed request');
    assert.ok(!JSON.stringify(replayB.events).includes(CARD), 'the card is nowhere in the replay');
    // Only the gateway holding a session's connection can end it.
    const end = await call<{ error: { code: string; message: string } }>(b, `/api/sessions/${onA.id}/end`, { key: b.key }, 'POST', { reason: 'testing' });
    assert.equal(end.status, 409);
    assert.ok(end.body.error.message.includes(a.id!), end.body.error.message);
    // Opening it on B is recorded in B's chain, naming A.
    const viewed = await until('recording.viewed in B', async () => localEvents(b, 'recording.viewed').find((e) => e.payload['session'] === onA.id));
    assert.equal(viewed.payload['gateway'], a.id);

    const dash = (await call<DashboardData>(b, `/api/dashboard?from=${Date.now() - 3_600_000}`, { key: b.key })).body;
    const dashA = (await call<DashboardData>(a, `/api/dashboard?from=${Date.now() - 3_600_000}`, { key: a.key })).body;
    assert.ok(dash.totals.sessions >= dashA.totals.sessions, `B counts A's sessions too (${dash.totals.sessions} vs ${dashA.totals.sessions})`);

    // And the other way: B's session on A.
    await chatVia(b, b.key!, 'from B');
    const onB = (await call<SessionList>(b, '/api/sessions', { key: b.key })).body.sessions.find((s) => s.gateway === b.id && s.protocol === 'http')!;
    assert.ok(onB);
    await until("B's session on A", async () => (await call<SessionList>(a, '/api/sessions', { key: a.key })).body.sessions.some((s) => s.id === onB.id && s.gateway === b.id));
    // Nothing is listed twice: A's own sessions come from its SQLite index only.
    const all = (await call<SessionList>(a, '/api/sessions?limit=1000', { key: a.key })).body;
    assert.equal(new Set(all.sessions.map((s) => `${s.gateway}/${s.id}`)).size, all.sessions.length);
    assert.equal(all.total, all.sessions.length);
    process.stdout.write(`# a session made on A was listed by B after ${seenMs} ms\n`);
  });

  it('a console cookie from A works on B, and logout on A ends it on B', async () => {
    // A's first key reaches B through the store (key sync) before B can derive its identity.
    await until("A's key on B", async () => (await call(b, '/api/me', { key: a.key })).status === 200);
    const cookie = await signIn(a, a.key!);
    assert.equal((await call(a, '/api/me', { cookie })).status, 200);
    const digest = createHash('sha256').update(cookie).digest('hex');
    await until('the session in the store', async () => (await sql.query('SELECT 1 FROM custody_console_sessions WHERE digest = $1', [digest])).rowCount === 1);
    const stored = await sql.query<{ identity: string }>('SELECT identity FROM custody_console_sessions');
    assert.ok(!stored.rows.some((r) => r.identity.includes(cookie)), 'the store holds the digest, never the cookie');

    const me = await call<{ subject: string; roles: string[] }>(b, '/api/me', { cookie });
    assert.equal(me.status, 200, 'B accepts the cookie A issued');
    assert.ok(me.body.roles.includes('admin'));
    assert.equal((await call(b, '/api/sessions', { cookie })).status, 200);

    const out = await call(a, '/api/auth/logout', { cookie }, 'POST');
    assert.equal(out.status, 204);
    const t0 = Date.now();
    await until('B refuses the cookie', async () => (await call(b, '/api/me', { cookie })).status === 401, 5000);
    const endedMs = Date.now() - t0;
    assert.equal((await call(a, '/api/me', { cookie })).status, 401);
    process.stdout.write(`# a logout on A ended the session on B after ${endedMs} ms\n`);

    // A cookie from B works on A, and a logout on B ends it on A.
    await until("B's key on A", async () => (await call(a, '/api/me', { key: b.key })).status === 200);
    const fromB = await signIn(b, b.key!);
    await until('A accepts the cookie B issued', async () => (await call(a, '/api/me', { cookie: fromB })).status === 200);
    assert.equal((await call(b, '/api/auth/logout', { cookie: fromB }, 'POST')).status, 204);
    await until('A refuses it after logout on B', async () => (await call(a, '/api/me', { cookie: fromB })).status === 401, 5000);
  });

  it('a person locked on A is signed out of B', async () => {
    const created = await call<{ key: string; person: string }>(a, '/api/keys', { key: a.key }, 'POST', { name: 'dana-admin', groups: ['admin'], newOwner: 'Dana' });
    assert.equal(created.status, 200, JSON.stringify(created.body));
    const dana = created.body.key;
    await until("Dana's key on B", async () => (await call(b, '/api/me', { key: dana })).status === 200);
    const cookie = await signIn(a, dana);
    await until('B accepts her cookie', async () => (await call(b, '/api/me', { cookie })).status === 200);
    const locked = await call(a, `/api/persons/${encodeURIComponent(created.body.person)}/lock`, { key: a.key }, 'POST');
    assert.equal(locked.status, 200, JSON.stringify(locked.body));
    const t0 = Date.now();
    await until('B refuses her cookie', async () => (await call(b, '/api/me', { cookie })).status === 401, 5000);
    process.stdout.write(`# a person locked on A was signed out of B's console after ${Date.now() - t0} ms\n`);
    const digest = createHash('sha256').update(cookie).digest('hex');
    assert.equal((await sql.query('SELECT 1 FROM custody_console_session_ends WHERE digest = $1', [digest])).rowCount, 1, 'the end is in the store for every gateway');
  });

  it("marks replayed events whose rows in the store were changed", async () => {
    const session = (await call<SessionList>(a, '/api/sessions?protocol=http&hadMasking=true', { key: a.key })).body.sessions[0]!;
    const row = (await sql.query<{ seq: string }>("SELECT seq FROM custody_events WHERE gateway = $1 AND session = $2 AND kind = 'http.request'", [a.id, session.id])).rows[0]!;
    await sql.query("UPDATE custody_events SET payload = replace(payload, 'lunch', 'dinner') WHERE gateway = $1 AND seq = $2", [a.id, row.seq]);
    const replay = (await call<SessionEvents>(b, `/api/sessions/${session.id}/events`, { key: b.key })).body;
    assert.deepEqual(replay.altered, [Number(row.seq)]);
    assert.equal((await call<SessionEvents>(a, `/api/sessions/${session.id}/events`, { key: a.key })).body.altered, undefined, "A replays its own log, which still holds the row");
  });

  it('a third gateway, approved by A: its sessions and sign-ins reach B, which trusts it through A', async () => {
    c.gw = await startServe(c.file);
    c.key = c.gw.key;
    c.id = await until('C pending', async () => (await sql.query<{ id: string }>("SELECT id FROM custody_gateways WHERE status = 'pending'")).rows[0]?.id);
    // Only admins see and approve gateways.
    const reviewer = (await call<{ key: string }>(a, '/api/keys', { key: a.key }, 'POST', { name: 'rita', groups: ['reviewer'], newOwner: 'Rita' })).body.key;
    assert.equal((await call(a, '/api/gateways', { key: reviewer })).status, 403);
    assert.equal((await call(a, `/api/gateways/${encodeURIComponent(c.id)}/approve`, { key: reviewer }, 'POST')).status, 403);
    assert.equal((await call(a, '/api/gateways', {})).status, 401);
    assert.equal((await call<GatewayView>(a, `/api/gateways/${encodeURIComponent(c.id)}/approve`, { key: a.key }, 'POST')).status, 200);
    await until('C serving', async () => (await chatVia(c, c.key!, 'from C').catch(() => undefined))?.choices.length);
    const onC = (await call<SessionList>(c, '/api/sessions', { key: c.key })).body.sessions.find((s) => s.gateway === c.id)!;
    assert.ok(onC);
    // B lists all three gateways' sessions.
    await until("C's session on B", async () => (await call<SessionList>(b, '/api/sessions', { key: b.key })).body.sessions.some((s) => s.id === onC.id && s.gateway === c.id));
    const gateways = new Set((await call<SessionList>(b, '/api/sessions?limit=1000', { key: b.key })).body.sessions.map((s) => s.gateway));
    assert.deepEqual([...gateways].sort(), [a.id, b.id, c.id].sort());
    // B was approved by A, C too: B trusts C through A's approval of it.
    const cookie = await signIn(c, c.key!);
    await until("C's key on B", async () => (await call(b, '/api/me', { key: c.key })).status === 200);
    await until('B accepts the cookie C issued', async () => (await call(b, '/api/me', { cookie })).status === 200);
    const gw = await call<GatewayList>(b, '/api/gateways', { key: b.key });
    assert.deepEqual(gw.body.gateways.map((g) => g.status).sort(), ['approved', 'approved', 'enrolled']);
    assert.equal(gw.body.gateways.find((g) => g.id === c.id)!.approvedBy, a.id);
  });

  it("lists this gateway's sessions, saying what is missing, when the store's index cannot be read", async () => {
    await sql.query('ALTER TABLE custody_sessions RENAME TO custody_sessions_away');
    try {
      const r = await call<SessionList>(b, '/api/sessions', { key: b.key });
      assert.equal(r.status, 200);
      assert.match(r.body.incomplete ?? '', /other gateways' sessions could not be read/);
      assert.ok(r.body.sessions.length > 0 && r.body.sessions.every((s) => s.gateway === b.id));
    } finally {
      await sql.query('ALTER TABLE custody_sessions_away RENAME TO custody_sessions');
    }
  });

  it('refuses a session row written into the store by hand', async () => {
    // Shaped like a real cookie (32 random bytes, base64url), so the gateways do look it up.
    const forged = randomBytes(32).toString('base64url');
    const forged2 = randomBytes(32).toString('base64url');
    const digest = createHash('sha256').update(forged).digest('hex');
    const identity = canonicalize({ subject: 'key:forged', name: 'mallory', groups: ['admin'], roles: ['admin', 'user'], via: 'console' });
    const now = Date.now();
    // Claimed to be A's: a signature that is not A's.
    await sql.query('INSERT INTO custody_console_sessions (digest, identity, created_at, expires_at, gateway, signature) VALUES ($1, $2, $3, $4, $5, $6)', [digest, identity, now, now + 3_600_000, a.id, Buffer.alloc(64).toString('base64')]);
    assert.equal((await call(b, '/api/me', { cookie: forged })).status, 401);
    // Signed by a key of its own, under a gateway row written by hand.
    const { publicKey, privateKey } = generateKeyPairSync('ed25519');
    const raw = publicKey.export({ format: 'der', type: 'spki' }).subarray(-32);
    const id = keyFingerprint(raw);
    await sql.query("INSERT INTO custody_gateways (id, public_key, key_name, name, status, request, requested_at, last_seen) VALUES ($1, $2, 'forged', 'forged', 'approved', '', 0, 0)", [id, raw.toString('base64')]);
    const digest2 = createHash('sha256').update(forged2).digest('hex');
    const text = `custody-console-session/v1\n${canonicalize([digest2, identity, now, now + 3_600_000, id])}`;
    await sql.query('INSERT INTO custody_console_sessions (digest, identity, created_at, expires_at, gateway, signature) VALUES ($1, $2, $3, $4, $5, $6)', [digest2, identity, now, now + 3_600_000, id, sign(null, Buffer.from(text), privateKey).toString('base64')]);
    assert.equal((await call(b, '/api/me', { cookie: forged2 })).status, 401);
    assert.equal((await call(a, '/api/me', { cookie: forged2 })).status, 401);
  });
});
