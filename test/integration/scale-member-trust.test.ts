/**
 * Who is a member of the group, against someone who can write to the shared store and holds no
 * gateway's key (docs/SCALE-OUT.md, "Who may sign: enrolment"). Two gateways on one real
 * PostgreSQL store, A (the first, enrolled) and B (approved by A), an HTTP upstream that keeps what
 * it receives, and a hold rule. Each attempt below forges, with SQL only, a member that the store's
 * gateways table lists as enrolled or approved, and then, signed by the forged member's key:
 *
 * - an API key (admin): a request with it through A and B gets 401, and the upstream sees nothing;
 * - a console sign-in session (admin): A and B answer 401 to its cookie;
 * - a vote approving a request held on A, written under the forged member's name: the request
 *   stays held (the upstream sees nothing), and A's hold shows no such vote.
 *
 * A vote cast on B (a proven member) on the same hold then releases it: the votes of real members
 * still count, so the refusals above are the forgery's, not a hold that never syncs.
 *
 * And a vote row written by hand under B's own name (a real member), unsigned or signed by another
 * key: A does not count it (the upstream sees nothing) and logs why once, while the vote cast on B,
 * whose row B signed, releases the request.
 *
 * What an admin is shown: `custody gateways list --json` (the real CLI, on A's and on B's config)
 * and `GET /api/gateways` (the console's Gateways view, on A and on B) say each forged row's status
 * is not proven, while A, B and C (approved by B, so proven on A from B's chain) are. A removal
 * forged three ways (the row marked by SQL, a `gateway.removed` in a forged member's chain under
 * its own checkpoint, one rewritten into A's real chain) is not proven either, and does not stop B
 * from removing C for real, which is then proven. C's row edited back to approved by SQL does not
 * undo the removal: C restarted on its data dir serves nothing, and A and B show the row not proven.
 * A pending gateway whose row is marked approved by SQL approves nothing, by the CLI or its console.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import Database from 'better-sqlite3';
import type pg from 'pg';
import { canonicalize } from '../../shared/canonical-json';
import type { GatewayList, GatewayView } from '../../shared/api';
import type { HoldView } from '../../shared/holds';
import { voteText, writeVoteRow } from '../../proxy/audit/shared-store/hold-rows';
import { Config } from '../../shared/config';
import { Gateway } from '../../proxy/gateway';
import { type Logger, silentLogger } from '../../proxy/log';
import { startEchoUpstream, type EchoUpstream } from '../support/echo-upstream';
import { approvalOf, type ForgedKey, forgedKey, rewriteInChain, signAs, writeChain, writeForgedRoot, writeGatewayRow } from '../support/forged-member';
import { createTestDatabase, type TestDatabase } from '../support/pg-database';
import { approveMember, type StoreMember, startStoreMember } from '../support/store-member';
import { tempDir } from '../support/tmp';
import { until } from '../support/until';

const root = tempDir('custody-scale-member-trust-');
let db: TestDatabase;
let echo: EchoUpstream;
let sql: pg.Client;
const running: Gateway[] = [];
let a: StoreMember;
let b: StoreMember;
/** A's warnings (its log). */
const warned: string[] = [];
const logA: Logger = { info() {}, debug() {}, error() {}, warn: (m: string) => void warned.push(m) };

/** The rows of A's chain rewritten by hand (early ones, long shipped; not its last, which its shipping checks). */
let rewrittenSeq = 2;

/** One forgery: what it writes to the store, returning the key that then signs as a member. One line each. */
const attempts: { name: string; forge: () => Promise<ForgedKey> }[] = [
  {
    name: "an 'enrolled' gateway row with a key of its own and a request that key signs",
    forge: async () => {
      const f = forgedKey('custody/mallory-1');
      await writeGatewayRow(sql, f, 'enrolled');
      return f;
    },
  },
  {
    name: "an 'approved' row whose approval sits in the chain of a forged 'enrolled' member, under a checkpoint that member's key signs",
    forge: async () => {
      const approver = forgedKey('custody/mallory-root');
      const f = forgedKey('custody/mallory-2');
      await writeForgedRoot(sql, approver, [f]);
      await writeGatewayRow(sql, f, 'approved', { approvedBy: approver.id, approvalSeq: 2 });
      await writeChain(sql, f, [{ kind: 'session.start', payload: { note: 'forged' } }]);
      return f;
    },
  },
  {
    name: "an 'approved' row whose approval is a row of A's chain in the store rewritten by hand (its own hashes recompute; A's checkpoints no longer match)",
    forge: async () => {
      const f = forgedKey('custody/mallory-3');
      const seq = rewrittenSeq++;
      await rewriteInChain(sql, a.id, seq, 'gateway.approved', approvalOf(f, a.id));
      await writeGatewayRow(sql, f, 'approved', { approvedBy: a.id, approvalSeq: seq });
      return f;
    },
  },
  {
    name: "the same, with a checkpoint of A's chain over it signed by the forger's key",
    forge: async () => {
      const f = forgedKey('custody/mallory-4');
      const seq = rewrittenSeq++;
      await rewriteInChain(sql, a.id, seq, 'gateway.approved', approvalOf(f, a.id), f);
      await writeGatewayRow(sql, f, 'approved', { approvedBy: a.id, approvalSeq: seq });
      return f;
    },
  },
];

/** A request through `m` with `key`: its status, and whether the upstream saw it. */
async function send(m: StoreMember, key: string, path = 'open'): Promise<{ status: number; reached: boolean }> {
  const tag = `t-${randomBytes(6).toString('hex')}`;
  const r = await fetch(`${m.http}/echo/${path}/${tag}`, { headers: { authorization: `Bearer ${key}` } });
  await r.text();
  return { status: r.status, reached: echo.requests.some((q) => q.target.includes(tag)) };
}

async function api<T>(m: StoreMember, method: string, path: string, body?: unknown): Promise<{ status: number; body: T }> {
  const r = await fetch(`${m.control}${path}`, { method, headers: { authorization: `Bearer ${m.gw.firstKey}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: r.status, body: (await r.json()) as T };
}

/** An admin API key signed by `f` as gateways sign the keys they share (key-sync.ts). */
async function plantKey(f: ForgedKey): Promise<string> {
  const id = `forged${randomBytes(4).toString('hex')}`;
  const key = `cst_${id}_${randomBytes(24).toString('base64url')}`;
  const row = { id, name: 'forged', hash: createHash('sha256').update(key).digest('hex'), groups: '["admin"]', created_at: Date.now(), created_by: 'mallory' };
  await sql.query('INSERT INTO custody_api_keys (id, name, hash, groups, created_at, created_by, origin) VALUES ($1, $2, $3, $4, $5, $6, $7)', [row.id, row.name, row.hash, row.groups, row.created_at, row.created_by, f.id]);
  const text = `custody-api-key/v1\n${canonicalize([row.id, row.name, row.hash, row.groups, row.created_at, row.created_by])}`;
  await sql.query('INSERT INTO custody_api_key_signatures (id, gateway, signature) VALUES ($1, $2, $3)', [id, f.id, signAs(f, text)]);
  return key;
}

/** An admin console session signed by `f` (console-session-rows.ts); returns its cookie. */
async function plantSession(f: ForgedKey): Promise<string> {
  const cookie = randomBytes(32).toString('base64url');
  const digest = createHash('sha256').update(cookie).digest('hex');
  const identity = canonicalize({ subject: 'key:forged', name: 'mallory', groups: ['admin'], roles: ['admin', 'user'], via: 'console' });
  const now = Date.now();
  const text = `custody-console-session/v1\n${canonicalize([digest, identity, now, now + 3_600_000, f.id])}`;
  await sql.query('INSERT INTO custody_console_sessions (digest, identity, created_at, expires_at, gateway, signature) VALUES ($1, $2, $3, $4, $5, $6)', [digest, identity, now, now + 3_600_000, f.id, signAs(f, text)]);
  return cookie;
}

/** A request held on A: its tag, the response to come, and the hold as A lists it. */
async function holdOnA(): Promise<{ tag: string; response: Promise<Response>; hold: HoldView }> {
  const tag = `h-${randomBytes(6).toString('hex')}`;
  const response = fetch(`${a.http}/echo/held/${tag}`, { headers: { authorization: `Bearer ${a.gw.firstKey}` } });
  response.catch(() => {});
  const hold = await until('the hold on A', async () => (await api<{ holds: HoldView[] }>(a, 'GET', '/api/holds?state=pending')).body.holds.find((h) => h.summary.includes(tag)));
  return { tag, response, hold };
}

const me = async (m: StoreMember, cookie: string) => (await fetch(`${m.control}/api/me`, { headers: { cookie: `custody_session=${cookie}` } })).status;

before(async () => {
  db = await createTestDatabase('custody_test_scale_member_trust');
  echo = await startEchoUpstream();
  sql = await db.client();
  const config = {
    listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
    connections: [{ name: 'echo', kind: 'http', upstream: echo.url }],
    policies: [{ name: 'hold-one', match: { paths: ['/held/*'] }, action: 'hold', hold: { approvers: ['admin'], min: 1, timeout: '2m' } }],
    store: { url: db.url, staleAfter: '5s' },
  };
  a = await startStoreMember(join(root, 'a'), config, logA);
  running.push(a.gw);
  b = await startStoreMember(join(root, 'b'), config);
  running.push(b.gw);
  await approveMember(a, b, async () => (await send(b, b.gw.firstKey!)).status === 200);
});

after(async () => {
  for (const gw of running) await gw.stop();
  await sql?.end();
  await echo?.close();
  await db?.drop();
});

const forged: { name: string; key: ForgedKey }[] = [];

describe('a member forged in the store with SQL only signs nothing the gateways accept', () => {
  it('forges every attempt', async () => {
    for (const t of attempts) forged.push({ name: t.name, key: await t.forge() });
    const rows = (await sql.query<{ id: string; status: string }>('SELECT id, status FROM custody_gateways')).rows;
    for (const f of forged) assert.ok(rows.some((r) => r.id === f.key.id && (r.status === 'enrolled' || r.status === 'approved')), `${f.name}: the table lists it as a member`);
  });

  it('an API key signed by the forged member is refused (401) by A and B, and the upstream sees nothing', async () => {
    const keys = await Promise.all(forged.map(async (f) => ({ name: f.name, key: await plantKey(f.key) })));
    // Several rounds of both gateways' workers (a key is copied within a second when it is trusted).
    await new Promise((r) => setTimeout(r, 3000));
    for (const k of keys)
      for (const m of [a, b]) {
        const r = await send(m, k.key);
        assert.equal(r.status, 401, `${k.name}: ${m === a ? 'A' : 'B'} answered ${r.status}`);
        assert.equal(r.reached, false, `${k.name}: the upstream received the request`);
      }
  });

  it('a console session signed by the forged member is refused (401) by A and B', async () => {
    for (const f of forged) {
      const cookie = await plantSession(f.key);
      for (const m of [a, b]) assert.equal(await me(m, cookie), 401, `${f.name}: ${m === a ? 'A' : 'B'} accepted the forged console session`);
    }
  });

  it("a vote under the forged member's name does not release a request held on A; a vote cast on B does", async () => {
    const { tag, response, hold } = await holdOnA();
    await until('the hold in the store', async () => (await sql.query('SELECT 1 FROM custody_holds WHERE id = $1', [hold.id])).rowCount === 1);
    for (const [i, f] of forged.entries()) {
      const vote = { by: `key:mallory${i}`, person: `person_mallory${i}`, byName: 'mallory', decision: 'approve' as const, reason: 'forged', at: Date.now() };
      assert.equal(await writeVoteRow(sql, { hold: hold.id, event: { gateway: f.key.id, seq: 1, hash: createHash('sha256').update(`vote-${i}`).digest('hex') }, vote }), true, `${f.name}: the vote row is in the store`);
    }
    // The hold worker reads at the notification, and at least once a second.
    await new Promise((r) => setTimeout(r, 3000));
    assert.equal(echo.requests.some((q) => q.target.includes(tag)), false, 'a forged vote released the held request');
    const now = (await api<HoldView>(a, 'GET', `/api/holds/${hold.id}`)).body;
    assert.equal(now.state, 'pending', 'the hold is still pending on A');
    for (const f of forged) assert.ok(!now.votes.some((v) => v.gateway === f.key.id), `${f.name}: A counted its vote`);

    // A real member's vote still counts.
    const decided = await fetch(`${b.control}/api/holds/${hold.id}/decision`, { method: 'POST', headers: { authorization: `Bearer ${b.gw.firstKey}`, 'content-type': 'application/json' }, body: JSON.stringify({ decision: 'approve', reason: 'ok' }) });
    assert.equal(decided.status, 200, `B's vote: ${decided.status} ${await decided.clone().text()}`);
    assert.equal((await response).status, 200);
    assert.ok(echo.requests.some((q) => q.target.includes(tag)), 'the upstream received the request released by B');
  });

  it("a vote row written by hand under a real member's name (B), unsigned or signed by another key, does not release a request held on A; B's own vote does", async () => {
    const { tag, response, hold } = await holdOnA();
    await until('the hold in the store', async () => (await sql.query('SELECT 1 FROM custody_holds WHERE id = $1', [hold.id])).rowCount === 1);
    const vote = (i: number) => ({ by: `key:mallory-b${i}`, person: `person_mallory_b${i}`, byName: 'mallory', decision: 'approve' as const, reason: 'forged', at: Date.now() });
    const event = (i: number) => ({ gateway: b.id, seq: 999_990 + i, hash: createHash('sha256').update(`forged-vote-${i}`).digest('hex') });
    // Unsigned.
    assert.equal(await writeVoteRow(sql, { hold: hold.id, event: event(0), vote: vote(0) }), true);
    // Signed, over the very text B would sign, by a key that is not B's.
    const other = forgedKey('custody/mallory-b');
    const v1 = vote(1);
    const text = voteText({ hold: hold.id, gateway: b.id, seq: event(1).seq, hash: event(1).hash, person: v1.person, vote: JSON.stringify(v1) });
    assert.equal(await writeVoteRow(sql, { hold: hold.id, event: event(1), vote: v1 }, signAs(other, text)), true);
    const stored = (await sql.query<{ seq: string; signature: string | null }>('SELECT seq, signature FROM custody_hold_votes WHERE hold = $1 AND gateway = $2 ORDER BY seq', [hold.id, b.id])).rows;
    assert.deepEqual(stored.map((r) => [Number(r.seq), r.signature === null]), [[999_990, true], [999_991, false]], 'both forged rows are in the store under B\'s name');

    // The hold worker reads at the notification, and at least once a second.
    await new Promise((r) => setTimeout(r, 3000));
    assert.equal(echo.requests.some((q) => q.target.includes(tag)), false, "a vote row written under B's name released the held request");
    const now = (await api<HoldView>(a, 'GET', `/api/holds/${hold.id}`)).body;
    assert.equal(now.state, 'pending', 'the hold is still pending on A');
    assert.deepEqual(now.votes, [], 'A counted a forged vote');
    const said = (seq: number) => warned.filter((w) => w.includes(hold.id) && w.includes(`seq ${seq}`));
    assert.equal(said(999_990).length, 1, `A says once why the unsigned row is ignored: ${JSON.stringify(warned)}`);
    assert.match(said(999_990)[0]!, /not signed/);
    assert.equal(said(999_991).length, 1, `A says once why the badly signed row is ignored: ${JSON.stringify(warned)}`);
    assert.match(said(999_991)[0]!, /does not verify under the key proven for gateway/);

    // B's own vote, whose row B signs, releases it.
    const decided = await fetch(`${b.control}/api/holds/${hold.id}/decision`, { method: 'POST', headers: { authorization: `Bearer ${b.gw.firstKey}`, 'content-type': 'application/json' }, body: JSON.stringify({ decision: 'approve', reason: 'ok' }) });
    assert.equal(decided.status, 200, `B's vote: ${decided.status} ${await decided.clone().text()}`);
    assert.equal((await response).status, 200);
    assert.ok(echo.requests.some((q) => q.target.includes(tag)), 'the upstream received the request released by B');
    const real = (await sql.query<{ signature: string | null }>('SELECT signature FROM custody_hold_votes WHERE hold = $1 AND gateway = $2 AND seq < 999990', [hold.id, b.id])).rows;
    assert.equal(real.length, 1);
    assert.ok(real[0]!.signature, "B's vote row is signed");
  });
});

/** A row of `custody gateways list --json`. */
type ListedRow = { id: string; status: string; proven: boolean; provenBy?: string; problem?: string };

/** The real CLI, as the gateway of `m`'s config. */
async function custody(m: StoreMember, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await promisify(execFile)(process.execPath, ['bin/custody.mjs', ...args, '--config', m.configFile], { encoding: 'utf8', timeout: 60_000 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : 1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

/** What `m` shows an admin of the group: the CLI's JSON and the console's REST list, by gateway id. */
async function shown(m: StoreMember): Promise<{ cli: Map<string, ListedRow>; console: Map<string, GatewayView> }> {
  const r = await custody(m, 'gateways', 'list', '--json');
  assert.equal(r.code, 0, r.stderr);
  const rows = JSON.parse(r.stdout) as ListedRow[];
  const list = await api<GatewayList>(m, 'GET', '/api/gateways');
  assert.equal(list.status, 200);
  return { cli: new Map(rows.map((x) => [x.id, x])), console: new Map(list.body.gateways.map((g) => [g.id, g])) };
}

describe('what custody gateways list and the console show: a status counts only when proven, as the gateways prove members', () => {
  let c: StoreMember;
  const names = () => new Map([[a.id, 'A'], [b.id, 'B'], [c.id, 'C']]);
  // A joiner proves its admission (scale-admission): the forged rows above list more than one
  // enrolled gateway, and rows of A's chain were rewritten in the store, so neither the founder nor
  // A's approval of B can be taken from it. C pins A and B, as a group whose store was tampered
  // with would.
  const configC = () => ({
    listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
    connections: [{ name: 'echo', kind: 'http', upstream: echo.url }],
    store: { url: db.url, staleAfter: '5s', trust: [a.id, b.id] },
  });

  before(async () => {
    c = await startStoreMember(join(root, 'c'), configC());
    running.push(c.gw);
    // B approves C: A trusts C only through B's chain, under B's signed checkpoint.
    await approveMember(b, c, async () => (await send(c, c.gw.firstKey!)).status === 200);
  });

  it('every forged row (the attempts above, and the forged approver) is shown not proven on A and B; A, B and C are shown proven', async () => {
    assert.ok(forged.length === attempts.length, 'the attempts were forged first');
    const genuine = names();
    for (const [who, m] of [['A', a], ['B', b]] as const) {
      const { cli, console: rest } = await shown(m);
      assert.equal(cli.size, genuine.size + forged.length + 1, `${who} lists the three gateways, the forged members and the forged approver`);
      for (const [id, name] of genuine) {
        for (const [how, row] of [['CLI', cli.get(id)], ['console', rest.get(id)]] as const) {
          assert.ok(row, `${who}'s ${how} lists ${name}`);
          assert.equal(row.proven, true, `${who}'s ${how}: ${name} (${row.status}) is proven: ${row.problem}`);
          assert.ok(row.provenBy, `${who}'s ${how} says how ${name} is proven`);
        }
      }
      // C is approved in B's chain: A proves it there, under B's signed checkpoint.
      if (m === a) {
        const viaB = new RegExp(`^approval at seq \\d+ in chain ${b.id.replace(/[+/]/g, '\\$&')}, checkpoint-signed`);
        assert.match(cli.get(c.id)!.provenBy!, viaB);
        assert.match(rest.get(c.id)!.provenBy!, viaB);
        // The console keeps what it proved: asked again, it still says where.
        assert.match((await shown(a)).console.get(c.id)!.provenBy!, viaB);
      }
      for (const [id, row] of cli) {
        if (genuine.has(id)) continue;
        const name = forged.find((f) => f.key.id === id)?.name ?? 'the forged approver';
        assert.ok(row.status === 'enrolled' || row.status === 'approved', `${name}: the table says ${row.status}`);
        for (const [how, shownRow] of [['CLI', row], ['console', rest.get(id)]] as const) {
          assert.ok(shownRow, `${who}'s ${how} lists ${name}`);
          assert.equal(shownRow.proven, false, `${who}'s ${how} shows ${name} as proven: ${shownRow.provenBy}`);
          assert.ok(shownRow.problem && !shownRow.provenBy, `${who}'s ${how} says why ${name} is not proven`);
        }
      }
    }
    // The text list says it in words.
    const text = await custody(a, 'gateways', 'list');
    for (const f of forged) assert.match(text.stdout.split('\n').find((l) => l.startsWith(f.key.id)) ?? '', /in the table only — not proven: /, f.name);
    assert.match(text.stdout.split('\n').find((l) => l.startsWith(c.id)) ?? '', /approved by .* \(proven: approval at seq \d+ in chain /);
  });

  it('a removal forged three ways is shown not proven; B then removes C for real, which A and B show proven', async () => {
    // 1. C's row marked removed by SQL, naming B; 2. a gateway.removed of C in a forged member's
    // chain under that member's signed checkpoint; 3. one rewritten into A's real chain.
    const remover = forgedKey('custody/mallory-remover');
    await writeGatewayRow(sql, remover, 'enrolled');
    await writeChain(sql, remover, [
      { kind: 'gateway.enrolled', payload: { group: 'forged', id: remover.id, fingerprint: remover.id, publicKey: remover.publicKey, keyName: remover.keyName, name: 'mallory', first: true } },
      { kind: 'gateway.removed', payload: { id: c.id, fingerprint: c.id, name: 'c', reason: 'forged', by: remover.id } },
    ]);
    await rewriteInChain(sql, a.id, rewrittenSeq++, 'gateway.removed', { id: c.id, fingerprint: c.id, name: 'c', reason: 'forged', by: a.id });
    await sql.query("UPDATE custody_gateways SET status = 'removed', removed_by = $2, removal_seq = 999 WHERE id = $1", [c.id, b.id]);
    for (const [who, m] of [['A', a], ['B', b]] as const) {
      const { cli, console: rest } = await shown(m);
      for (const [how, row] of [['CLI', cli.get(c.id)!], ['console', rest.get(c.id)!]] as const) {
        assert.equal(row.status, 'removed');
        assert.equal(row.proven, false, `${who}'s ${how} shows the forged removal as proven: ${row.provenBy}`);
        assert.ok(row.problem, `${who}'s ${how} says why the removal is not proven`);
      }
    }
    assert.equal((await send(c, c.gw.firstKey!)).status, 200, 'C still serves');

    // The row says removed, but no removal is proven: B removes C for real (its console).
    const removed = await api<GatewayView>(b, 'POST', `/api/gateways/${encodeURIComponent(c.id)}/remove`, { reason: 'host retired' });
    assert.equal(removed.status, 200, JSON.stringify(removed.body));
    const row = (await sql.query<{ removed_by: string; removal_seq: string }>('SELECT removed_by, removal_seq FROM custody_gateways WHERE id = $1', [c.id])).rows[0]!;
    assert.equal(row.removed_by, b.id, "the row's index now names B's real removal");
    assert.notEqual(Number(row.removal_seq), 999);
    for (const [who, m] of [['A', a], ['B', b]] as const) {
      const { cli, console: rest } = await shown(m);
      for (const [how, r] of [['CLI', cli.get(c.id)!], ['console', rest.get(c.id)!]] as const) {
        assert.equal(r.proven, true, `${who}'s ${how}: B's removal of C is proven: ${r.problem}`);
        const seq = /^removal at seq (\d+) in chain (\S+), checkpoint-signed$/.exec(r.provenBy ?? '');
        assert.ok(seq && seq[2] === b.id, `${who}'s ${how}: ${r.provenBy}`);
        // The event it names is B's removal of C, in the store.
        const event = (await sql.query<{ kind: string; payload: string }>('SELECT kind, payload FROM custody_events WHERE gateway = $1 AND seq = $2', [b.id, Number(seq[1])])).rows[0];
        assert.equal(event?.kind, 'gateway.removed');
        assert.equal((JSON.parse(event.payload) as { id: string }).id, c.id);
      }
    }
    await until('C refuses', async () => (await send(c, c.gw.firstKey!)).status === 503);
  });

  it("C's row edited back to approved by SQL undoes nothing: C restarted on its data dir serves nothing, and the row is shown not proven", async () => {
    await sql.query("UPDATE custody_gateways SET status = 'approved', removed_by = NULL, removal_seq = NULL WHERE id = $1", [c.id]);
    const key = c.gw.firstKey!;
    await c.gw.stop();
    running.splice(running.indexOf(c.gw), 1);
    const dir = join(root, 'c');
    const gw = await Gateway.start({ config: Config.parse({ dataDir: dir, ...configC() }), dataDir: dir, configFile: c.configFile, log: silentLogger });
    running.push(gw);
    const again: StoreMember = { ...c, gw, http: `http://${gw.address('http')}`, control: `http://${gw.address('control')}` };
    // Its first round on the store finds the removal (until then it serves, as a gateway admitted before does while the store cannot be read).
    await until('C restarted refusing', async () => gw.services.admissionRefusal!() !== undefined, 15_000);
    const r = await send(again, key);
    assert.equal(r.status, 503, 'C restarted serves again');
    assert.equal(r.reached, false, 'the upstream received a request through C');
    assert.match(gw.services.admissionRefusal!() ?? '', /removed from the group by /);
    for (const [who, m] of [['A', a], ['B', b]] as const) {
      const { cli, console: rest } = await shown(m);
      for (const [how, row] of [['CLI', cli.get(c.id)!], ['console', rest.get(c.id)!]] as const) {
        assert.equal(row.status, 'approved');
        assert.equal(row.proven, false, `${who}'s ${how} shows C as approved: ${row.provenBy}`);
        assert.match(row.problem ?? '', new RegExp(`^it was removed from the group: removal at seq \\d+ in chain ${b.id.replace(/[+/]/g, '\\$&')}`));
      }
    }
  });

  it('a pending gateway whose row is marked approved by SQL approves nothing, by the CLI or its console', async () => {
    const d = await startStoreMember(join(root, 'd'), {
      listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
      connections: [{ name: 'echo', kind: 'http', upstream: echo.url }],
      store: { url: db.url, staleAfter: '5s' },
    });
    running.push(d.gw);
    await until('D pending', async () => d.gw.services.sharedStore?.health().phase === 'pending');
    await sql.query("UPDATE custody_gateways SET status = 'approved', approved_by = $2, approval_seq = 1 WHERE id = $1", [d.id, a.id]);
    const target = forgedKey('custody/mallory-pending');
    await writeGatewayRow(sql, target, 'pending');

    const cli = await custody(d, 'gateways', 'approve', target.id);
    assert.notEqual(cli.code, 0, `D's CLI approved: ${cli.stdout}`);
    assert.match(cli.stderr, /itself waiting for approval: it has no record of being admitted/);
    const rest = await api<{ error?: { message?: string } }>(d, 'POST', `/api/gateways/${encodeURIComponent(target.id)}/approve`);
    assert.equal(rest.status, 409, JSON.stringify(rest.body));
    assert.match(JSON.stringify(rest.body), /itself waiting for approval: it has no record of being admitted/);

    // The effect: no approval in D's chain, nor in the store, and the row is still pending.
    const local = new Database(join(root, 'd', 'custody.db'), { readonly: true });
    try {
      assert.equal((local.prepare("SELECT count(*) AS n FROM events WHERE kind = 'gateway.approved'").get() as { n: number }).n, 0, "D's chain records an approval");
    } finally {
      local.close();
    }
    assert.equal((await sql.query("SELECT 1 FROM custody_events WHERE kind = 'gateway.approved' AND payload::jsonb ->> 'id' = $1", [target.id])).rowCount, 0);
    assert.equal((await sql.query<{ status: string }>('SELECT status FROM custody_gateways WHERE id = $1', [target.id])).rows[0]!.status, 'pending');
  });
});
