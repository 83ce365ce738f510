/**
 * The other gateways' sessions, live, in the console of any gateway (docs/SCALE-OUT.md, "The
 * desktop app in team mode"): three `custody serve` processes, A, B and C, on one real PostgreSQL
 * store, each with an OpenAI connection to the local stand-in and a PostgreSQL connection to a
 * real database.
 *
 * - a WebSocket client signed in on B receives a PostgreSQL session made through A as it happens:
 *   `session.started` naming A, each statement's event before the next statement runs, and
 *   `session.ended` with the counts; the events are A's, seq for seq and hash for hash, as A's
 *   own SQLite file holds them;
 * - an HTTP session made through C reaches the same client, naming C;
 * - a client that drops and resumes on B gets what it missed, A's events and not B's own events
 *   of the same seqs;
 * - a signed-in approver (no reviewer role) gets none of it;
 * - the dashboard on B counts A's and C's requests, masked values, denials and hold outcomes, bucket
 *   by bucket, as their own SQLite files hold them, and each gateway's share.
 */
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import OpenAI from 'openai';
import pg from 'pg';
import type { GatewayView } from '../../shared/api';
import type { DashboardData } from '../../shared/dashboard';
import { DASHBOARD_ROWS } from '../../proxy/audit/shared-store/schema';
import type { AuditEvent } from '../../shared/events';
import type { ServerMessage } from '../../shared/messages';
import { type CustodyServe, startServe, writeConfig } from '../support/custody-process';
import { type LlmUpstream, startLlmUpstream } from '../support/llm-upstream';
import { createTestDatabase, type TestDatabase } from '../support/pg-database';
import { freePort } from '../support/ports';
import { tempDir } from '../support/tmp';
import { until } from '../support/until';
import { EventsClient } from './holds-ws-client';

const root = tempDir('custody-scale-console-live-');
const OPENAI_SECRET = 'sk-scale-console-live';
const CARD = '4111 1111 1111 1111';
let upstream: LlmUpstream;
let store: TestDatabase;
let warehouse: TestDatabase;
let sql: pg.Client;

interface Member {
  name: string;
  dir: string;
  pgPort: number;
  gw?: CustodyServe;
  id?: string;
  key?: string;
}
const a: Member = { name: 'a', dir: '', pgPort: 0 };
const b: Member = { name: 'b', dir: '', pgPort: 0 };
const c: Member = { name: 'c', dir: '', pgPort: 0 };
const clients: EventsClient[] = [];

async function setUp(m: Member): Promise<string> {
  m.dir = join(root, m.name);
  mkdirSync(m.dir);
  m.pgPort = await freePort();
  return writeConfig(m.dir, {
    dataDir: m.dir,
    listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
    connections: [
      { name: 'openai', kind: 'openai', upstream: `${upstream.url}/v1`, secret: { value: OPENAI_SECRET } },
      { name: 'warehouse', kind: 'postgres', upstream: warehouse.url, listen: `127.0.0.1:${m.pgPort}` },
    ],
    masking: [{ id: 'cards', detectors: ['credit_card'], scope: ['client', 'upstream', 'log'], connections: ['openai'] }],
    policies: [
      { name: 'no-gpt-3', match: { connections: ['openai'], model: ['gpt-3.5-turbo'] }, action: 'deny', reason: 'retired model' },
      { name: 'hold-o1', match: { connections: ['openai'], model: ['o1'] }, action: 'hold', hold: { approvers: ['admin'], min: 1, timeout: '1s' } },
    ],
    store: { url: store.url },
  });
}

async function call<T>(m: Member, path: string, key: string, method = 'GET', body?: unknown): Promise<{ status: number; body: T }> {
  const headers: Record<string, string> = { authorization: `Bearer ${key}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`http://${m.gw!.control}${path}`, { method, headers, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
  const text = await res.text();
  return { status: res.status, body: (text ? JSON.parse(text) : undefined) as T };
}

async function join_(m: Member): Promise<void> {
  m.gw = await startServe(await setUp(m));
  m.key = m.gw.key;
  m.id = await until(`${m.name} pending`, async () => (await sql.query<{ id: string }>("SELECT id FROM custody_gateways WHERE status = 'pending'")).rows[0]?.id);
  const approved = await call<GatewayView>(a, `/api/gateways/${encodeURIComponent(m.id)}/approve`, a.key!, 'POST');
  assert.equal(approved.status, 200, JSON.stringify(approved.body));
  await until(`${m.name} serving`, async () => (await chatVia(m, 'hello').catch(() => undefined))?.choices.length);
}

/**
 * Traffic through `m`. Tried twice: the stand-in closes idle keep-alive sockets after 5 s, and a
 * request the gateway sends on one just then is answered 502 (what is tested here is the record).
 */
async function chatVia(m: Member, text: string, model = 'gpt-4o') {
  const ask = () => new OpenAI({ baseURL: `http://${m.gw!.http}/openai`, apiKey: m.key!, maxRetries: 0 }).chat.completions.create({ model, messages: [{ role: 'user', content: text }] });
  return ask().catch((err: { status?: number }) => (err.status === 502 ? ask() : Promise.reject(err as Error)));
}

/** A session's events as `m`'s own SQLite file holds them. */
function localSession(m: Member, session: string): Pick<AuditEvent, 'seq' | 'kind' | 'hash'>[] {
  const d = new Database(join(m.dir, 'custody.db'), { readonly: true });
  try {
    return d.prepare('SELECT seq, kind, hash FROM events WHERE session = ? ORDER BY seq').all(session) as Pick<AuditEvent, 'seq' | 'kind' | 'hash'>[];
  } finally {
    d.close();
  }
}

/** What the dashboard counts in [from, to), read from `m`'s own SQLite file: requests and denials per bucket, masked values by type, expired holds. */
function localCounts(m: Member, from: number, to: number, bucketMs: number) {
  const d = new Database(join(m.dir, 'custody.db'), { readonly: true });
  try {
    const w = { from, to, b: bucketMs };
    const rows = <T>(q: string) => d.prepare(q).all(w) as T[];
    return {
      requests: rows<{ i: number; n: number }>("SELECT CAST((time - @from) / @b AS INTEGER) AS i, count(*) AS n FROM events WHERE time >= @from AND time < @to AND kind IN ('http.request', 'pg.statement') GROUP BY i"),
      denied: rows<{ i: number; n: number }>("SELECT CAST((time - @from) / @b AS INTEGER) AS i, count(*) AS n FROM events WHERE time >= @from AND time < @to AND kind = 'policy.decision' AND json_extract(payload, '$.action') = 'deny' GROUP BY i"),
      masked: rows<{ type: string; n: number }>("SELECT json_extract(j.value, '$.type') AS type, count(*) AS n FROM events, json_each(events.spans) AS j WHERE time >= @from AND time < @to AND spans IS NOT NULL GROUP BY 1"),
      expired: rows<{ n: number }>("SELECT count(*) AS n FROM holds WHERE state = 'expired' AND resolved_at >= @from AND resolved_at < @to")[0]!.n,
    };
  } finally {
    d.close();
  }
}

async function watch(m: Member, key = m.key!): Promise<EventsClient> {
  const client = await EventsClient.connect(`http://${m.gw!.control}`, { bearer: key });
  clients.push(client);
  return client;
}

type SessionMessage = Extract<ServerMessage, { type: 'session.started' | 'session.ended' }>;
type EventMessage = Extract<ServerMessage, { type: 'session.event' }>;
const isEvent = (session: string, kind?: string) => (m: ServerMessage) => m.type === 'session.event' && m.event.session === session && (kind === undefined || m.event.kind === kind);
const ofSession = (client: EventsClient, session: string) => client.messages.filter((m): m is EventMessage => m.type === 'session.event' && m.event.session === session);

/** Latencies in ms, as "min–max, median". */
function spread(ms: number[]): string {
  const s = [...ms].sort((x, y) => x - y);
  return `${s[0]!.toFixed(0)}–${s[s.length - 1]!.toFixed(0)} ms, median ${s[Math.floor(s.length / 2)]!.toFixed(0)} ms (${s.length} messages)`;
}

before(async () => {
  upstream = await startLlmUpstream({ openaiKey: OPENAI_SECRET, reply: 'Noted.' });
  store = await createTestDatabase('custody_test_scale_live');
  warehouse = await createTestDatabase('custody_test_scale_live_wh');
  sql = await store.client();
  a.gw = await startServe(await setUp(a));
  a.key = a.gw.key;
  a.id = await until('A enrolled', async () => (await sql.query<{ id: string }>("SELECT id FROM custody_gateways WHERE status = 'enrolled'").catch(() => undefined))?.rows[0]?.id);
  await join_(b);
  await join_(c);
});

after(async () => {
  for (const client of clients) await client.close().catch(() => {});
  await a.gw?.kill();
  await b.gw?.kill();
  await c.gw?.kill();
  await upstream?.close();
  await store?.drop();
  await warehouse?.drop();
});

describe("the other gateways' sessions, live", () => {
  /** Per event of A's, when A's own client got it and when B's did. */
  const arrivals = new Map<number, { a?: number; b?: number }>();
  let onB: EventsClient;
  let sessionOnA: string;

  it('a client on B receives a PostgreSQL session made through A as it happens: started, each statement, ended', async () => {
    // A's key reaches B through the store first: the client on B signs in with it.
    await until("A's key on B", async () => (await call(b, '/api/me', a.key!)).status === 200);
    const onA = await watch(a);
    onB = await watch(b, a.key!);
    onA.onMessage = (m, at) => {
      if (m.type === 'session.event' && m.event.session) arrivals.set(m.event.seq, { ...arrivals.get(m.event.seq), a: at });
    };
    onB.onMessage = (m, at) => {
      if (m.type === 'session.event' && m.gateway === a.id && m.event.session) arrivals.set(m.event.seq, { ...arrivals.get(m.event.seq), b: at });
    };
    const db = new pg.Client({ host: '127.0.0.1', port: a.pgPort, user: 'tester', password: a.key, database: warehouse.name });
    await db.connect();
    const started = await onB.waitNew<SessionMessage>((m) => m.type === 'session.started' && m.session.gateway === a.id && m.session.protocol === 'postgres', 5000);
    sessionOnA = started.session.id;
    assert.ok(started.session.gatewayName, 'the gateway is named by its host name');
    assert.equal(started.session.endedAt, null);
    assert.ok(localSession(a, sessionOnA).length > 0, "it is A's session");
    assert.equal(localSession(b, sessionOnA).length, 0, 'B did not record it');

    // Each statement reaches B before the next one runs: the session grows on B as it happens.
    for (const probe of ['first', 'second', 'third']) {
      await db.query(`SELECT '${probe}' AS probe`);
      const ev = await onB.next<EventMessage>((m) => isEvent(sessionOnA, 'pg.statement')(m) && JSON.stringify((m as EventMessage).event.payload).includes(probe), 5000);
      assert.equal(ev.gateway, a.id);
    }
    await db.end();
    const ended = await onB.next<SessionMessage>((m) => m.type === 'session.ended' && m.session.id === sessionOnA, 5000);

    // What B's client received is A's chain, seq for seq and hash for hash.
    const recorded = localSession(a, sessionOnA);
    const received = ofSession(onB, sessionOnA).map((m) => ({ seq: m.event.seq, kind: m.event.kind, hash: m.event.hash }));
    assert.deepEqual(received, recorded);
    assert.ok(ofSession(onB, sessionOnA).every((m) => m.gateway === a.id));
    assert.equal(ended.session.gateway, a.id);
    assert.equal(ended.session.events, recorded.length, 'the ended summary counts every event');
    assert.equal(ended.session.requests, 3);
    assert.ok(ended.session.endedAt !== null);
    // The order a console needs: started before the session's second event, ended after its last.
    const order = onB.messages.filter((m) => (m.type === 'session.event' && m.event.session === sessionOnA) || ((m.type === 'session.started' || m.type === 'session.ended') && m.session.id === sessionOnA)).map((m) => m.type);
    assert.deepEqual([order[0], order[1], order.at(-1)], ['session.event', 'session.started', 'session.ended']);
    // The same session reaches A's own client once, as its own (no gateway).
    assert.ok(ofSession(onA, sessionOnA).every((m) => m.gateway === undefined));

    const lag = [...arrivals.values()].filter((x) => x.a !== undefined && x.b !== undefined).map((x) => x.b! - x.a!);
    assert.ok(lag.length >= recorded.length - 1, `B got ${lag.length} of A's ${recorded.length} events with A's own client`);
    assert.ok(Math.max(...lag) < 2000, `every event reached B within 2 s of reaching A's own console (${spread(lag)})`);
    process.stdout.write(`# a session made through A reached a console on B ${spread(lag)} after it reached a console on A\n`);
  });

  it('a session made through C reaches the same client on B, naming C', async () => {
    // A new identity on C opens a new HTTP session there (C's own key has one open since it joined).
    const created = await call<{ key: string }>(c, '/api/keys', c.key!, 'POST', { name: 'cleo', groups: ['user'], newOwner: 'Cleo' });
    assert.equal(created.status, 200, JSON.stringify(created.body));
    await new OpenAI({ baseURL: `http://${c.gw!.http}/openai`, apiKey: created.body.key, maxRetries: 0 }).chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'from C' }] });
    // (C's own session, from its last check before these tests, may arrive first: shipped after B's client connected.)
    const started = await onB.next<SessionMessage>((m) => m.type === 'session.started' && m.session.gateway === c.id && m.session.actorName === 'cleo', 5000);
    const request = await onB.next<EventMessage>(isEvent(started.session.id, 'http.request'), 5000);
    assert.equal(request.gateway, c.id);
    assert.equal(started.session.protocol, 'http');
    const recorded = localSession(c, started.session.id).find((e) => e.kind === 'http.request')!;
    assert.deepEqual([request.event.seq, request.event.hash], [recorded.seq, recorded.hash]);
  });

  it("a client that drops and resumes on B gets what it missed: A's events, not B's own of the same seqs", async () => {
    const last = onB.lastSeq;
    const epoch = onB.messages[0]!.epoch;
    await onB.close();
    // B records traffic of its own meanwhile, so its chain has events at the seqs A's session gets.
    await chatVia(b, 'from B while the client is away');
    const db = new pg.Client({ host: '127.0.0.1', port: a.pgPort, user: 'tester', password: a.key, database: warehouse.name });
    await db.connect();
    await db.query("SELECT 'while away' AS probe");
    await db.end();
    // Shipped by A, and read by B's console worker (still following: the client left a moment ago).
    const missed = await until('the session in the store, ended', async () => (await sql.query<{ session: string }>("SELECT session FROM custody_events WHERE gateway = $1 AND kind = 'session.end' AND session <> $2 ORDER BY seq DESC LIMIT 1", [a.id, sessionOnA])).rows[0]?.session);
    await new Promise((r) => setTimeout(r, 1500));
    const again = await watch(b, a.key!);
    again.send({ type: 'resume', epoch, after: last });
    await again.next((m) => m.type === 'session.ended' && m.session.id === missed, 5000);
    const recorded = localSession(a, missed);
    const received = ofSession(again, missed).map((m) => ({ seq: m.event.seq, kind: m.event.kind, hash: m.event.hash }));
    assert.deepEqual(received, recorded, "the resumed messages are A's events as A recorded them");
    assert.ok(ofSession(again, missed).every((m) => m.gateway === a.id));
  });

  it('a signed-in approver, who may not see sessions, gets none of them', async () => {
    const created = await call<{ key: string }>(b, '/api/keys', b.key!, 'POST', { name: 'ada', groups: ['approver'], newOwner: 'Ada' });
    assert.equal(created.status, 200, JSON.stringify(created.body));
    const approver = await watch(b, created.body.key);
    const reviewer = await watch(b, a.key!);
    await chatVia(a, 'seen by reviewers only');
    const request = await reviewer.next<EventMessage>((m) => m.type === 'session.event' && m.gateway === a.id && m.event.kind === 'http.request' && JSON.stringify(m.event.payload).includes('seen by reviewers only'), 5000);
    await reviewer.next((m) => m.type === 'session.started' && m.session.id === request.event.session, 5000);
    assert.equal(approver.messages.filter((m) => m.type.startsWith('session.')).length, 0);
  });

  it("the dashboard on B counts every gateway's traffic, bucket by bucket, with each gateway's share", async () => {
    const from = Date.now() - 3_600_000;
    await chatVia(a, `Charge ${CARD} for the offsite`);
    const denied = await chatVia(a, 'an old model', 'gpt-3.5-turbo').catch((e: { status?: number }) => e);
    assert.equal((denied as { status?: number }).status, 403);
    const held = await chatVia(a, 'think hard', 'o1').catch((e: { status?: number }) => e);
    assert.ok((held as { status?: number }).status! >= 400, 'the hold timed out and the request was refused');
    await chatVia(c, `Card ${CARD} from C`);
    // Everything A and C recorded (journaled: their SQLite files may not hold it all yet) is in the store.
    for (const m of [a, c]) {
      await until(`${m.name} shipped`, async () => {
        const { events } = (await call<{ events: number }>(m, '/api/health', m.key!)).body;
        const shipped = Number((await sql.query<{ shipped_seq: string }>('SELECT shipped_seq FROM custody_gateways WHERE id = $1', [m.id])).rows[0]!.shipped_seq);
        return shipped >= events;
      });
    }
    // And A's hold row in the store says how it ended (written by A's hold worker, after its event).
    await until('no hold pending in the store', async () => (await sql.query<{ n: number }>("SELECT count(*)::int AS n FROM custody_holds WHERE state = 'pending'")).rows[0]!.n === 0);
    const to = Date.now();
    const r = await call<DashboardData>(b, `/api/dashboard?from=${from}&to=${to}&buckets=12`, b.key!);
    assert.equal(r.status, 200);
    const dash = r.body;
    assert.equal(dash.incomplete, undefined);
    const counts = new Map([a, b, c].map((m) => [m.id!, localCounts(m, from, to, dash.bucketMs)]));
    const perBucket = (pick: (x: ReturnType<typeof localCounts>) => { i: number; n: number }[]) => {
      const out = dash.series.map(() => 0);
      for (const x of counts.values()) for (const row of pick(x)) out[row.i]! += row.n;
      return out;
    };
    assert.deepEqual(dash.series.map((x) => x.requests), perBucket((x) => x.requests), "requests in each bucket: the three gateways' files");
    assert.deepEqual(dash.series.map((x) => x.denied), perBucket((x) => x.denied), 'denials in each bucket');
    const byType = new Map<string, number>();
    for (const x of counts.values()) for (const m of x.masked) byType.set(m.type, (byType.get(m.type) ?? 0) + m.n);
    assert.deepEqual(Object.fromEntries(dash.maskedByType.map((m) => [m.type, m.count])), Object.fromEntries(byType));
    assert.ok((byType.get('CREDIT_CARD') ?? 0) >= 2, 'the cards masked on A and on C');
    assert.equal(dash.totals.holds.expired, [...counts.values()].reduce((n, x) => n + x.expired, 0));
    assert.ok(dash.totals.holds.expired >= 1, "A's hold that timed out");
    const sum = (xs: { n: number }[]) => xs.reduce((n, x) => n + x.n, 0);
    assert.ok(dash.policyHits.some((p) => p.rule === 'no-gpt-3' && p.action === 'deny' && p.count === sum(counts.get(a.id!)!.denied)));

    // Each gateway's share: this one first.
    assert.deepEqual(
      dash.gateways!.map((g) => [g.id, g.self, g.requests, g.denied]),
      [b, a, c].map((m) => [m.id, m === b, sum(counts.get(m.id!)!.requests), sum(counts.get(m.id!)!.denied)]),
    );
    assert.ok(dash.gateways!.find((g) => g.id === a.id)!.sessions >= 2, "A's sessions in the window");
    assert.equal(dash.totals.sessions, dash.gateways!.reduce((n, g) => n + g.sessions, 0));
    // A's dashboard over the same window tells the same story.
    const onA = (await call<DashboardData>(a, `/api/dashboard?from=${from}&to=${to}&buckets=12`, a.key!)).body;
    assert.deepEqual(onA.series, dash.series);
    assert.deepEqual(onA.totals, dash.totals);
    process.stdout.write(`# the dashboard on B: ${dash.totals.requests} requests (${dash.gateways!.map((g) => `${g.requests} on ${g.self ? 'B' : g.id === a.id ? 'A' : 'C'}`).join(', ')})\n`);
  });

  it("migration 10's index serves the dashboard's window (its predicate is the queries' own)", async () => {
    const applied = (await sql.query<{ version: number }>('SELECT version FROM custody_schema_migrations ORDER BY version')).rows.map((r) => r.version);
    assert.ok(applied.includes(10) && applied.at(-1)! >= 10, `migrations applied: ${applied.join(', ')}`);
    // Sequential scans priced out: a partial index whose predicate the query does not imply would not be used at all.
    await sql.query('SET enable_seqscan = off');
    try {
      const plan = (await sql.query<{ 'QUERY PLAN': unknown }>(`EXPLAIN (FORMAT JSON) SELECT count(*) FROM custody_events WHERE gateway <> $1 AND time >= $2 AND time < $3 AND ${DASHBOARD_ROWS}`, [b.id, Date.now() - 3_600_000, Date.now()])).rows[0]!['QUERY PLAN'];
      assert.match(JSON.stringify(plan), /"Index Name":"custody_events_dashboard"/);
    } finally {
      await sql.query('RESET enable_seqscan');
    }
  });

  it("says so when the other gateways' counts cannot be read", async () => {
    await sql.query('ALTER TABLE custody_sessions RENAME TO custody_sessions_away');
    try {
      const r = await call<DashboardData>(b, '/api/dashboard', b.key!);
      assert.equal(r.status, 200);
      assert.match(r.body.incomplete ?? '', /other gateways' counts could not be read/);
      assert.equal(r.body.gateways, undefined);
    } finally {
      await sql.query('ALTER TABLE custody_sessions_away RENAME TO custody_sessions');
    }
  });
});
