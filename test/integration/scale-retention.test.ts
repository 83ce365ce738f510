/**
 * Payload retention in a group (docs/AUDIT.md, "Retention"; docs/SCALE-OUT.md): two gateways, A
 * and B, on one real PostgreSQL store, chat completions through each with the OpenAI SDK against
 * the local stand-in (a card number masked, so rows carry masked spans), then a retention run on A
 * (runRetention with a clock, as the local retention tests use it, bounded as an archive bounds it).
 *
 * - The store's copy of A's chain is purged as A's SQLite file is (same seqs: payload and spans
 *   gone, marked purged, hashes kept; nothing after the run's archive bound), in the transaction that ships the `retention.run` row (the
 *   store never shows the run without the purge); newer rows keep theirs; B's chain is untouched.
 * - Rows purged on A before they were shipped (A stopped) ship as purged.
 * - B's console replays A's purged session (payloads null, nothing reported altered) and its
 *   dashboard and session list still answer.
 * - `custody verify --store` passes and reports each chain's purged count; a payload removed by
 *   hand in the store, with no later retention run covering it, fails naming chain and seq.
 * - Group bundles exported after the run, whole and filtered, carry the purged rows as purged and
 *   verify.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import OpenAI from 'openai';
import type pg from 'pg';
import type { SessionEvents, SessionList } from '../../shared/api';
import type { DashboardData } from '../../shared/dashboard';
import { Config } from '../../shared/config';
import { RETENTION_KEEPS, runRetention } from '../../proxy/audit/retention';
import { AuditStore } from '../../proxy/audit/store';
import { Gateway } from '../../proxy/gateway';
import { silentLogger } from '../../proxy/log';
import { custodyAsync as custody } from '../support/custody-process';
import { exportOverRest } from '../support/exports';
import { type LlmUpstream, startLlmUpstream } from '../support/llm-upstream';
import { createTestDatabase, type TestDatabase } from '../support/pg-database';
import { localChain } from '../support/shared-store-chains';
import { approveMember, type StoreMember, startStoreMember } from '../support/store-member';
import { tempDir } from '../support/tmp';
import { until } from '../support/until';

const root = tempDir('custody-scale-retention-');
const OPENAI_SECRET = 'sk-scale-retention';
const CARD = '4111 1111 1111 1111';
const DAY = 86_400_000;
let upstream: LlmUpstream;
let db: TestDatabase;
let sql: pg.Client;
let a: StoreMember;
let b: StoreMember;
/** Each gateway's first key (printed at its first start only): kept across A's restart. */
const keys = new Map<string, string>();

const configOf = () => ({
  listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
  connections: [{ name: 'openai', kind: 'openai', upstream: `${upstream.url}/v1`, secret: { value: OPENAI_SECRET } }],
  masking: [{ id: 'cards', detectors: ['credit_card'], scope: ['client', 'upstream', 'log'], connections: ['openai'] }],
  store: { url: db.url },
  audit: { groupCheckpointInterval: '1s' },
});

function chatVia(m: StoreMember, text: string) {
  return new OpenAI({ baseURL: `${m.http}/openai`, apiKey: keys.get(m.id)!, maxRetries: 0 }).chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: text }] });
}

async function call<T>(m: StoreMember, path: string): Promise<{ status: number; body: T }> {
  const res = await fetch(`${m.control}${path}`, { headers: { authorization: `Bearer ${keys.get(m.id)}` } });
  return { status: res.status, body: (await res.json()) as T };
}

interface StoreRow {
  seq: number;
  time: number;
  kind: string;
  session: string | null;
  payload: string | null;
  spans: string | null;
  purged: boolean;
}

async function storeRows(id: string): Promise<StoreRow[]> {
  return (await sql.query<StoreRow & { seq: string; time: string }>('SELECT seq, time, kind, session, payload, spans, purged FROM custody_events WHERE gateway = $1 ORDER BY seq', [id])).rows.map((r) => ({ ...r, seq: Number(r.seq), time: Number(r.time) }));
}

/** The seqs A's (or B's) SQLite file holds purged. */
function locallyPurged(dir: string): number[] {
  const d = new Database(join(dir, 'custody.db'), { readonly: true });
  try {
    return (d.prepare("SELECT seq FROM events WHERE encoding = 'purged' ORDER BY seq").all() as { seq: number }[]).map((r) => r.seq);
  } finally {
    d.close();
  }
}

/** Waits until the store holds `m`'s whole local chain. */
async function shipped(m: StoreMember, dir: string): Promise<void> {
  m.gw.services.store.settle();
  const head = localChain(dir).length;
  await until(`${m.id} shipped`, async () => Number((await sql.query<{ n: string | null }>('SELECT max(seq) AS n FROM custody_events WHERE gateway = $1', [m.id])).rows[0]?.n ?? 0) >= head);
}

const verify = (...args: string[]) => custody('verify', ...args);
const escape = (s: string) => s.replace(/[+/]/g, '\\$&');
/** What verify says of a chain's purged rows, on its line of the chains summary. */
const purgedLine = (id: string, n: number) => new RegExp(`${escape(id)} \\([^)]*\\): [\\d,]+ events \\(${n} payloads purged by retention\\)`);

describe('payload retention reaches the shared store', () => {
  const dirA = join(root, 'a');
  const dirB = join(root, 'b');
  /** Events before this were purged by A's run (its cutoff). */
  let cutoff = 0;
  let runSeq = 0;
  /** The archive bound of A's first run. */
  let bound = 0;
  /** An event A recorded after its last run with a time before that run's cutoff (its clock set back): no run covers it. */
  let lateSeq = 0;
  /** The first of the rows only A's last run explains. */
  let offlineSeq = 0;
  let bBefore: StoreRow[] = [];

  before(async () => {
    upstream = await startLlmUpstream({ openaiKey: OPENAI_SECRET, reply: 'Noted.' });
    db = await createTestDatabase('custody_test_scale_retention');
    sql = await db.client();
    a = await startStoreMember(dirA, configOf());
    keys.set(a.id, a.gw.firstKey!);
    b = await startStoreMember(dirB, configOf());
    keys.set(b.id, b.gw.firstKey!);
    await approveMember(a, b, async () => b.gw.services.sharedStore?.refusal() === undefined);
  });
  after(async () => {
    await a?.gw.stop();
    await b?.gw.stop();
    await upstream?.close();
    await sql?.end();
    await db?.drop();
  });

  it("a run purges the store's copy of its own chain in the transaction that ships it; newer rows and B's chain keep their payloads", async () => {
    for (let i = 0; i < 2; i++) await chatVia(a, `old-${i} card ${CARD}`);
    await chatVia(b, `b-old card ${CARD}`);
    await new Promise((r) => setTimeout(r, 20));
    cutoff = Date.now();
    await new Promise((r) => setTimeout(r, 20));
    await chatVia(a, `new-0 card ${CARD}`);
    await shipped(a, dirA);
    await shipped(b, dirB);
    bBefore = await storeRows(b.id);
    assert.ok((await storeRows(a.id)).some((r) => r.kind === 'http.request' && r.time < cutoff && r.spans !== null), 'before the run, old requests are in the store with their masked spans');

    // Bounded as with an archive (its verified end): the second old request and nothing after it.
    const local = localChain(dirA);
    bound = local.filter((r) => r.kind === 'http.request')[1]!.seq;
    const run = runRetention(a.gw.services.store, '1d', { now: cutoff + DAY, archivedThrough: bound });
    assert.ok(run.purged > 0);
    runSeq = run.event.seq;
    // Each look is one statement (one snapshot): the run's row is never there while a row it covers still has its payload.
    await until('the run shipped with its purge', async () => {
      const r = (
        await sql.query<{ run: string; unpurged: string }>(
          `SELECT (SELECT count(*) FROM custody_events WHERE gateway = $1 AND seq = $2) AS run,
                  (SELECT count(*) FROM custody_events WHERE gateway = $1 AND seq <= $5 AND time < $3 AND NOT purged AND kind <> ALL($4)) AS unpurged`,
          [a.id, runSeq, cutoff, [...RETENTION_KEEPS], bound],
        )
      ).rows[0]!;
      assert.ok(!(Number(r.run) && Number(r.unpurged)), `the store shows the run at seq ${runSeq} with ${r.unpurged} rows it covers unpurged`);
      return Number(r.run) > 0;
    });

    const rows = await storeRows(a.id);
    const purged = rows.filter((r) => r.purged);
    assert.deepEqual(
      purged.map((r) => r.seq),
      locallyPurged(dirA),
      'the store holds purged exactly the rows A holds purged',
    );
    assert.equal(purged.length, run.purged);
    for (const r of purged) {
      assert.equal(r.payload, null, `seq ${r.seq} has no payload`);
      assert.equal(r.spans, null, `seq ${r.seq} has no spans`);
      assert.ok(r.time < cutoff && r.seq <= bound);
    }
    assert.ok(
      rows.some((r) => r.seq > bound && r.time < cutoff && !r.purged && r.payload !== null && r.kind === 'http.response'),
      'old rows after the archive bound keep their payloads in the store',
    );
    const oldRequests = purged.filter((r) => r.kind === 'http.request');
    assert.equal(oldRequests.length, 2, 'both old requests are purged');
    const newer = rows.filter((r) => r.kind === 'http.request' && r.time >= cutoff);
    assert.equal(newer.length, 1);
    assert.ok(newer[0]!.payload!.includes('new-0') && newer[0]!.spans !== null && !newer[0]!.purged, 'the newer request keeps its payload and masked spans');
    assert.ok(!JSON.stringify(rows).includes('old-0'), 'the old prompts are nowhere in the store');
    // What the group is verified by stays readable.
    const enrolled = rows.find((r) => r.kind === 'gateway.enrolled');
    assert.ok(enrolled && !enrolled.purged && JSON.parse(enrolled.payload!).id === a.id);
    assert.ok(rows.some((r) => r.kind === 'gateway.approved' && !r.purged && JSON.parse(r.payload!).id === b.id));

    const bAfter = await storeRows(b.id);
    assert.deepEqual(bAfter.slice(0, bBefore.length), bBefore, "B's rows are untouched by A's run");
    assert.ok(bAfter.every((r) => !r.purged));
    assert.ok(bAfter.some((r) => r.payload?.includes('b-old')));
  });

  it('rows purged before they were shipped ship as purged', async () => {
    await a.gw.stop();
    const store = AuditStore.open(dirA);
    const old = Date.now() - 3 * DAY;
    const first = store.append({ kind: 'pg.statement', session: 'offline', actor: 'key:bob', connection: 'warehouse', payload: { sql: 'select 1' }, time: old }).seq;
    store.append({ kind: 'pg.statement', session: 'offline', actor: 'key:bob', connection: 'warehouse', payload: { sql: 'select 2' }, time: old + 1 });
    const run = runRetention(store, '1d');
    assert.equal(run.purged, 2);
    offlineSeq = first;
    lateSeq = store.append({ kind: 'pg.statement', session: 'offline', actor: 'key:bob', connection: 'warehouse', payload: { sql: 'select 3' }, time: old + 2 }).seq;
    store.close();
    const gw = await Gateway.start({ config: Config.parse({ dataDir: dirA, ...configOf() }), dataDir: dirA, configFile: a.configFile, log: silentLogger });
    a = { ...a, gw, http: `http://${gw.address('http')}`, control: `http://${gw.address('control')}` };
    await shipped(a, dirA);
    const rows = (await storeRows(a.id)).filter((r) => r.seq === first || r.seq === first + 1);
    assert.equal(rows.length, 2);
    for (const r of rows) assert.ok(r.purged && r.payload === null && r.spans === null, `seq ${r.seq} shipped purged`);
    assert.deepEqual(
      (await storeRows(a.id)).filter((r) => r.purged).map((r) => r.seq),
      locallyPurged(dirA),
    );
  });

  it("B's console replays A's purged session, and its dashboard and session list still answer", async () => {
    const purgedRequest = (await storeRows(a.id)).find((r) => r.kind === 'http.request' && r.purged)!;
    const replay = await call<SessionEvents>(b, `/api/sessions/${purgedRequest.session}/events`);
    assert.equal(replay.status, 200, JSON.stringify(replay.body));
    assert.equal(replay.body.session.gateway, a.id);
    assert.equal(replay.body.altered, undefined, 'a purged row is not an altered one');
    const event = replay.body.events.find((e) => e.seq === purgedRequest.seq);
    assert.ok(event, 'the purged request is in the replay');
    assert.equal(event.payload, null, 'shown as purged (no payload), as the local replay shows it');
    assert.deepEqual(event.spans, []);
    const list = await call<SessionList>(b, '/api/sessions');
    assert.equal(list.status, 200);
    assert.ok(list.body.sessions.some((s) => s.id === purgedRequest.session));
    const dash = await call<DashboardData>(b, `/api/dashboard?from=${Date.now() - 3_600_000}`);
    assert.equal(dash.status, 200, JSON.stringify(dash.body));
    assert.ok(dash.body.totals.requests >= 4, `B's dashboard counts the group's requests (${dash.body.totals.requests})`);
  });

  it('verify --store passes and reports the purged payloads of each chain', async () => {
    const purged = (await storeRows(a.id)).filter((r) => r.purged).length;
    const ok = await verify('--store', db.url);
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, purgedLine(a.id, purged));
    assert.doesNotMatch(ok.stdout, new RegExp(`${escape(b.id)} \\([^)]*\\): [\\d,]+ events \\(`), 'B has nothing purged');
  });

  // Payloads removed by hand in the store: none is covered by a later retention run of its own chain.
  // Each pick: the row whose payload is removed, and the seq verify must name (the first purged row no later run covers).
  const forgeries: { name: string; pick: () => Promise<{ chain: string; seq: number; named?: number }> }[] = [
    {
      name: "a request of A's chain newer than the run's cutoff",
      pick: async () => ({ chain: a.id, seq: (await storeRows(a.id)).find((r) => r.kind === 'http.request' && r.time >= cutoff)!.seq }),
    },
    {
      name: "a request of B's chain, which never ran retention",
      pick: async () => ({ chain: b.id, seq: (await storeRows(b.id)).find((r) => r.kind === 'http.request')!.seq }),
    },
    {
      name: "A's last run itself: the rows only it purged are left unexplained",
      pick: async () => ({ chain: a.id, seq: Math.max(...(await storeRows(a.id)).filter((r) => r.kind === 'retention.run').map((r) => r.seq)), named: offlineSeq }),
    },
    {
      name: "an event of A's chain older than its first run's cutoff but after that run's archive bound",
      pick: async () => ({ chain: a.id, seq: (await storeRows(a.id)).find((r) => r.seq > bound && r.seq < runSeq && r.time < cutoff && !r.purged && r.kind === 'http.response')!.seq }),
    },
    {
      name: "an event of A's chain older than its last run's cutoff but recorded after that run",
      pick: async () => ({ chain: a.id, seq: lateSeq }),
    },
  ];
  for (const f of forgeries) {
    it(`fails a payload removed by hand in the store: ${f.name}`, async () => {
      const { chain, seq, named = seq } = await f.pick();
      const saved = (await sql.query<{ payload: string | null; spans: string | null }>('SELECT payload, spans FROM custody_events WHERE gateway = $1 AND seq = $2', [chain, seq])).rows[0]!;
      await sql.query('UPDATE custody_events SET payload = NULL, spans = NULL, purged = true WHERE gateway = $1 AND seq = $2', [chain, seq]);
      try {
        const r = await verify('--store', db.url);
        assert.equal(r.status, 1, r.stdout);
        assert.match(r.stderr, new RegExp(`FAILED: modified — chain ${escape(chain)} at seq ${named}: its payload was removed, but no recorded retention run covers it`));
      } finally {
        await sql.query('UPDATE custody_events SET payload = $3, spans = $4, purged = false WHERE gateway = $1 AND seq = $2', [chain, seq, saved.payload, saved.spans]);
      }
      assert.equal((await verify('--store', db.url)).status, 0, 'intact again once the row is put back');
    });
  }

  it('group bundles exported after the run carry the purged rows as purged and verify, whole and filtered', async () => {
    // A bundle cut before the newest run still carries it (group-export.ts): exported at once.
    const purged = (await storeRows(a.id)).filter((r) => r.purged).length;
    const whole = join(root, 'whole.tar.gz');
    await exportOverRest(b.control, keys.get(b.id)!, whole);
    const r = await verify(whole);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, purgedLine(a.id, purged));
    // Cut for the openai connection: the purged requests, and A's runs carried beside them.
    const filtered = join(root, 'filtered.tar.gz');
    await exportOverRest(b.control, keys.get(b.id)!, filtered, { connection: 'openai' });
    const f = await verify(filtered);
    assert.equal(f.status, 0, f.stderr);
    assert.match(f.stdout, /payloads purged by retention/);
  });
});
