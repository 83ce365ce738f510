/**
 * Grants are the group's (docs/SCALE-OUT.md, "Holds across gateways"): two gateways in this
 * process on one real PostgreSQL store, B approved by A, the same hold rules on both, two HTTP
 * connections to one upstream that keeps what it received.
 *
 * - a hold on A approved with `grant: "30m"`: the same agent's next request through B passes at
 *   once (the upstream receives it, within a second of the approval), recorded in B's chain as a
 *   pass by grant naming A's hold and A, citing A's `hold.resolved`;
 * - another rule, another connection, another agent on B: still held;
 * - a grant of "2s" no longer applies on B once it has ended; the grants A gave end on B once A is
 *   removed from the group (run last: A serves nothing after);
 * - forgeries, as data, one entry each: a grant row written by hand unsigned; one signed by a key
 *   under a gateway row also written by hand; a genuine row with its subject, rule or connection
 *   edited; its expiry extended (B restarted after the edit, so it reads the row afresh), or a copy
 *   under a new id with its expiry extended. Each checked by the effect: the request on B is held, and the
 *   upstream receives nothing.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { sign } from 'node:crypto';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import Database from 'better-sqlite3';
import type pg from 'pg';
import type { HoldView } from '../../shared/holds';
import type { Gateway } from '../../proxy/gateway';
import { type GrantRow, storedGrantText } from '../../proxy/audit/shared-store/grant-rows';
import { startEchoUpstream, type EchoUpstream } from '../support/echo-upstream';
import { createTestDatabase, type TestDatabase } from '../support/pg-database';
import { memberApi, approveMember, forgedMember, restartStoreMember, sendThrough, type StoreMember, startStoreMember } from '../support/store-member';
import { tempDir } from '../support/tmp';
import { until } from '../support/until';

type Member = StoreMember;

const root = tempDir('custody-scale-grants-');
let db: TestDatabase;
let echo: EchoUpstream;
let sql: pg.Client;
const running: Gateway[] = [];

async function startMember(name: string, url: string): Promise<Member> {
  const m = await startStoreMember(join(root, name), {
    listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
    connections: [
      { name: 'echo', kind: 'http', upstream: echo.url },
      { name: 'echo2', kind: 'http', upstream: echo.url },
    ],
    policies: [
      { name: 'hold-one', match: { paths: ['/held/*'] }, action: 'hold', hold: { approvers: ['ops'], min: 1, timeout: '2m' } },
      { name: 'hold-two', match: { paths: ['/two/*'] }, action: 'hold', hold: { approvers: ['ops'], min: 1, timeout: '2m' } },
    ],
    store: { url },
  });
  running.push(m.gw);
  return m;
}

const tagged = (path: string) => `${path}-${Math.random().toString(36).slice(2)}`;
/** A tagged target's path past its connection: what the upstream receives, and what a hold's summary shows. */
const pathOf = (tag: string) => tag.slice(tag.indexOf('/') + 1);
const reached = (tag: string) => echo.requests.filter((q) => q.target.includes(pathOf(tag))).length;
const request = (m: Member, key: string, target: string, signal?: AbortSignal) => fetch(`${m.http}/${target}`, { headers: { authorization: `Bearer ${key}` }, ...(signal ? { signal } : {}) });
const pendingOn = async (m: Member) => (await memberApi<{ holds: HoldView[] }>(m, 'GET', '/api/holds?state=pending')).holds;

/** A new agent key made on A for a new person, once it works on B; the key and its identity's subject. */
async function agent(a: Member, b: Member, name: string): Promise<{ key: string; subject: string }> {
  const { key, id } = await memberApi<{ key: string; id: string }>(a, 'POST', '/api/keys', { name, groups: ['dev'], newOwner: name });
  await until(`${name}'s key works on B`, async () => (await sendThrough(b, key, echo)).status === 200);
  return { key, subject: `key:${id}` };
}

/** A request of `key` held on A and approved there by A's admin with `grant`; the hold and its store row. */
async function grantOnA(a: Member, key: string, grant: string): Promise<{ hold: HoldView; approvedAt: number; row: GrantRow }> {
  const tag = tagged('echo/held/x');
  const response = request(a, key, tag);
  const held = await until('the hold on A', async () => (await pendingOn(a)).find((h) => h.summary.includes(pathOf(tag))));
  const hold = await memberApi<HoldView>(a, 'POST', `/api/holds/${held.id}/decision`, { decision: 'approve', reason: 'ticket 42', grant });
  const approvedAt = Date.now();
  assert.equal((await response).status, 200);
  assert.equal(reached(tag), 1);
  const row = await until('the grant in the store', async () => (await sql.query<GrantRow>('SELECT * FROM custody_grants WHERE hold = $1', [held.id])).rows[0]);
  return { hold, approvedAt, row };
}

/**
 * Sends `target` through B as `key` until a request passes (the upstream receives it); a request
 * B holds instead is given up after 250 ms (its hold cancelled). Returns when it passed, in ms after `since`.
 */
async function passesOnB(b: Member, key: string, target: string, since: number): Promise<{ ms: number; tag: string }> {
  for (;;) {
    const tag = tagged(target);
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), 250);
    const r = await request(b, key, tag, ac.signal).catch(() => undefined);
    clearTimeout(timer);
    if (r) {
      assert.equal(r.status, 200, await r.text());
      assert.equal(reached(tag), 1);
      return { ms: Date.now() - since, tag };
    }
    if (Date.now() - since > 10_000) throw new Error(`B still holds ${target} 10 s after the approval`);
  }
}

/** `target` through B as `key` is held: B lists it pending and the upstream has nothing; then denied on B. */
async function heldOnB(b: Member, key: string, target: string): Promise<void> {
  const tag = tagged(target);
  const response = request(b, key, tag);
  let passed: Response | undefined;
  void response.then((r) => (passed = r), () => {});
  const hold = await until(`${target} held on B`, async () => {
    if (passed) throw new Error(`B let ${target} through (${passed.status}) without a hold`);
    return (await pendingOn(b)).find((h) => h.summary.includes(pathOf(tag)));
  });
  assert.equal(reached(tag), 0, 'held: the upstream has not seen it');
  await memberApi(b, 'POST', `/api/holds/${hold.id}/decision`, { decision: 'deny', reason: 'probe' });
  assert.equal((await response).status, 403);
  assert.equal(reached(tag), 0, 'the upstream never received it');
}

/** The `hold.resolved` events of `m`'s chain. */
function resolvedOn(m: Member): Record<string, unknown>[] {
  const d = new Database(join(dirname(m.configFile), 'custody.db'), { readonly: true });
  try {
    return (d.prepare("SELECT payload FROM events WHERE kind = 'hold.resolved' ORDER BY seq").all() as { payload: string }[]).map((r) => JSON.parse(r.payload) as Record<string, unknown>);
  } finally {
    d.close();
  }
}

/** Writes `row` as a new grant row (numbered and announced as a gateway's write would be). */
async function insertGrant(row: GrantRow): Promise<void> {
  await sql.query(
    `INSERT INTO custody_grants (id, gateway, subject, connection, rule, hold, granted_by, resolved_seq, resolved_hash, expires_at, created_at, signature, change)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, nextval('custody_hold_change'))`,
    [row.id, row.gateway, row.subject, row.connection, row.rule, row.hold, row.granted_by, row.resolved_seq, row.resolved_hash, row.expires_at, row.created_at, row.signature],
  );
  await sql.query("SELECT pg_notify('custody_holds', $1)", [row.hold]);
}

/** Edits a genuine grant row in place, renumbered and announced so every gateway reads it again. */
async function editGrant(id: string, column: 'subject' | 'connection' | 'rule' | 'expires_at', value: string | number): Promise<void> {
  await sql.query(`UPDATE custody_grants SET ${column} = $2, change = nextval('custody_hold_change') WHERE id = $1`, [id, value]);
  await sql.query("SELECT pg_notify('custody_holds', $1)", [id]);
}

interface Forgery {
  name: string;
  /** The genuine grant the entry starts from. */
  grant: string;
  /** What the forger writes, given the genuine row and another agent's subject. */
  forge(genuine: GrantRow, other: string): Promise<void>;
  /** The request on B that must still be held: as the other agent, or as the granted one. */
  probe: { as: 'other' | 'agent'; target: string };
  /** Wait this long after the genuine grant was given before probing (its expiry). */
  afterMs?: number;
  /** Restart B before probing. */
  restartB?: true;
}

/** What someone who can write to the store, and holds no gateway's key, writes to get a request through B. */
const FORGERIES: Forgery[] = [
  {
    name: 'a grant row written by hand, unsigned',
    grant: '30m',
    forge: (g, other) => insertGrant({ ...g, id: `${g.id}x`, subject: other, expires_at: String(Date.now() + 3_600_000), signature: null }),
    probe: { as: 'other', target: 'echo/held/x' },
  },
  {
    name: 'a grant row signed by a key under a gateway row also written by hand',
    grant: '30m',
    async forge(g, other) {
      const mallory = await forgedMember(sql, 'custody/mallory-grants');
      const row: GrantRow = { ...g, id: `${g.id}m`, gateway: mallory.id, subject: other, expires_at: String(Date.now() + 3_600_000), signature: null };
      await insertGrant({ ...row, signature: sign(null, Buffer.from(storedGrantText(row)), mallory.privateKey).toString('base64') });
    },
    probe: { as: 'other', target: 'echo/held/x' },
  },
  { name: 'a genuine grant row with its subject edited', grant: '30m', forge: (g, other) => editGrant(g.id, 'subject', other), probe: { as: 'other', target: 'echo/held/x' } },
  { name: 'a genuine grant row with its rule edited', grant: '30m', forge: (g) => editGrant(g.id, 'rule', 'hold-two'), probe: { as: 'agent', target: 'echo/two/x' } },
  { name: 'a genuine grant row with its connection edited', grant: '30m', forge: (g) => editGrant(g.id, 'connection', 'echo2'), probe: { as: 'agent', target: 'echo2/held/x' } },
  {
    name: 'a genuine grant row with its expiry extended by an hour',
    grant: '3s',
    forge: (g) => editGrant(g.id, 'expires_at', Number(g.expires_at) + 3_600_000),
    probe: { as: 'agent', target: 'echo/held/x' },
    afterMs: 3500,
    // B restarted after the edit: it knows of no grant, and reads every running one from the store.
    restartB: true,
  },
  {
    // B already holds the genuine grant by its id, so the edit above is not taken in any case; a
    // copy under a new id, with the genuine signature, is judged by its signature alone.
    name: 'a genuine grant row copied under a new id, its expiry extended by an hour',
    grant: '3s',
    forge: (g) => insertGrant({ ...g, id: `${g.id}e`, expires_at: String(Number(g.expires_at) + 3_600_000) }),
    probe: { as: 'agent', target: 'echo/held/x' },
    afterMs: 3500,
  },
];

describe('grants are the group\'s', () => {
  let a: Member;
  let b: Member;

  before(async () => {
    db = await createTestDatabase('custody_test_scale_grants');
    sql = await db.client();
    echo = await startEchoUpstream();
    a = await startMember('a', db.url);
    b = await startMember('b', db.url);
    await approveMember(a, b, async () => (await sendThrough(b, b.gw.firstKey!, echo)).status === 200);
  });
  after(async () => {
    for (const gw of running) await gw.stop();
    await echo?.close();
    await db?.drop();
  });

  it('a grant given on A lets the same request through B within a second, recorded in B\'s chain', async () => {
    const { key } = await agent(a, b, 'agent-one');
    const { key: other } = await agent(a, b, 'agent-other');
    const { hold, approvedAt, row } = await grantOnA(a, key, '30m');
    assert.equal(row.gateway, a.id);
    const { ms } = await passesOnB(b, key, 'echo/held/y', approvedAt);
    console.log(`# a grant approved on A applied on B ${ms} ms after the approval returned`);
    assert.ok(ms < 1000, `B let the request through ${ms} ms after the approval on A`);

    const pass = resolvedOn(b).find((p) => p['via'] === 'grant' && p['grantHold'] === hold.id);
    assert.ok(pass, 'B recorded the pass by grant');
    assert.equal(pass['state'], 'approved');
    assert.equal(pass['grant'], row.id);
    assert.equal(pass['grantGateway'], a.id);
    assert.deepEqual(pass['refs'], [{ gateway: a.id, seq: Number(row.resolved_seq), hash: row.resolved_hash }]);
    const aResolved = resolvedOn(a).find((p) => p['id'] === hold.id);
    assert.equal((aResolved?.['grant'] as { id: string } | undefined)?.id, row.id, "the pass cites the grant A's resolution gave");

    // Another rule, another connection, another agent: held on B.
    await heldOnB(b, key, 'echo/two/x');
    await heldOnB(b, key, 'echo2/held/x');
    await heldOnB(b, other, 'echo/held/x');
  });

  it('a grant that has ended no longer applies on B', async () => {
    const { key } = await agent(a, b, 'agent-brief');
    const { approvedAt, row } = await grantOnA(a, key, '2s');
    await passesOnB(b, key, 'echo/held/z', approvedAt);
    const wait = Number(row.expires_at) - Date.now() + 100;
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    await heldOnB(b, key, 'echo/held/z');
  });

  for (const [i, f] of FORGERIES.entries()) {
    it(`forgery: ${f.name} gets nothing through B`, async () => {
      const { key } = await agent(a, b, `agent-f${i}`);
      const other = await agent(a, b, `victim-f${i}`);
      const { approvedAt, row } = await grantOnA(a, key, f.grant);
      // B applied the genuine grant before the forger writes: what it already has is not stretched.
      await passesOnB(b, key, 'echo/held/ok', approvedAt);
      await f.forge(row, other.subject);
      // Several rounds of B's hold worker (it reads on each announcement and every second).
      await new Promise((r) => setTimeout(r, Math.max(1500, (f.afterMs ?? 0) - (Date.now() - approvedAt))));
      if (f.restartB) {
        running.splice(running.indexOf(b.gw), 1);
        b = await restartStoreMember(b);
        running.push(b.gw);
        await until('B serves again', async () => (await sendThrough(b, b.gw.firstKey!, echo)).status === 200);
        // Its hold worker follows the group's grants again (proving A a member first): a grant given after the restart passes.
        const ready = await agent(a, b, `ready-f${i}`);
        await passesOnB(b, ready.key, 'echo/held/ready', (await grantOnA(a, ready.key, '30m')).approvedAt);
      }
      await heldOnB(b, f.probe.as === 'other' ? other.key : key, f.probe.target);
    });
  }

  it('the grants A gave end on B once A is removed from the group', async () => {
    const { key } = await agent(a, b, 'agent-removal');
    const { approvedAt } = await grantOnA(a, key, '30m');
    await passesOnB(b, key, 'echo/held/before', approvedAt);
    const removed = await promisify(execFile)(process.execPath, ['bin/custody.mjs', 'gateways', 'remove', a.id, '--reason', 'host lost', '--config', b.configFile], { encoding: 'utf8', timeout: 60_000 });
    assert.match(removed.stdout, /removed/);
    // B finds the removal within a few of its hold worker's rounds; until then the grant may still pass.
    await until('B no longer lets the grant through', async () => {
      const ac = new AbortController();
      const timer = setTimeout(() => ac.abort(), 300);
      const r = await request(b, key, tagged('echo/held/after'), ac.signal).catch(() => undefined);
      clearTimeout(timer);
      return r === undefined;
    });
    await heldOnB(b, key, 'echo/held/after');
  });
});
