// The hold queue's lifecycle against a real store in a temp dir: k-of-N, deny thresholds, timeout,
// self-approval, reasons, grants, cancellation, abandonment, and failing closed.
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { describe, it } from 'node:test';
import { HoldSpec } from '../../shared/config';
import type { Identity } from '../../shared/identity';
import type { ServerMessage } from '../../shared/messages';
import { HoldDecisionError, HoldQueue, sqlHoldText } from '../../proxy/approvals/hold-queue';
import { shortenForSummary } from '../../shared/holds';
import type { HoldRequest } from '../../proxy/approvals/types';
import { AuditStore, StoreUnavailableError } from '../../proxy/audit/store';
import { EventBus } from '../../proxy/bus';
import { rolesFor } from '../../proxy/identity/authenticator';
import { tempDir } from '../support/tmp';

const ROLES = { admin: ['admin'], approver: ['approver'], reviewer: ['reviewer'] };
function who(name: string, groups: string[]): Identity {
  return { subject: `key:${name}`, name, groups, roles: rolesFor(groups, ROLES), via: 'api-key', keyId: name };
}
const dev = who('dev', ['engineering']);
const alice = who('alice', ['dba']);
const bob = who('bob', ['dba']);
const carol = who('carol', ['dba']);
const root = who('root', ['admin']);
const outsider = who('eve', ['marketing']);

function setup(dir = tempDir(), now?: () => number, commitThread = false) {
  const store = AuditStore.open(dir, { commitThread });
  const bus = new EventBus();
  const messages: ServerMessage[] = [];
  bus.subscribe((m) => messages.push(m));
  const queue = new HoldQueue({ store, bus, now });
  return { dir, store, bus, queue, messages };
}

function hold(spec: Partial<HoldSpec> = {}, over: Partial<HoldRequest> = {}): HoldRequest {
  return {
    identity: dev,
    connection: 'warehouse',
    protocol: 'postgres',
    session: 'sess_1',
    rule: 'hold-destructive-sql',
    ruleReason: 'destructive statements need a DBA',
    summary: 'DROP TABLE customers',
    spec: HoldSpec.parse({ approvers: ['dba'], ...spec }),
    signal: new AbortController().signal,
    ...over,
  };
}

/** Waits until the queue has published the hold.created for the next request. */
async function created(messages: ServerMessage[], n = 1): Promise<string> {
  for (let i = 0; i < 200; i++) {
    const c = messages.filter((m) => m.type === 'hold.created');
    if (c.length >= n) return (c[n - 1] as Extract<ServerMessage, { type: 'hold.created' }>).hold.id;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error('no hold.created published');
}

async function refused(fn: () => Promise<unknown>, status: number, code: string): Promise<void> {
  await assert.rejects(fn, (err: unknown) => err instanceof HoldDecisionError && err.status === status && err.code === code);
}

function kinds(store: AuditStore): string[] {
  return store.events(1, 1000).map((e) => e.kind);
}

describe('HoldQueue', () => {
  it('approves after k distinct approvers, recording every step in the chained log', async () => {
    const { store, queue, messages } = setup();
    const pending = queue.request(hold({ min: 2 }));
    const id = await created(messages);
    const view1 = await queue.decide(id, alice, { decision: 'approve', reason: 'planned migration' });
    assert.equal(view1.state, 'pending');
    assert.equal(view1.votes.length, 1);
    await refused(() => queue.decide(id, alice, { decision: 'approve', reason: 'again' }), 409, 'already_voted');
    await queue.decide(id, bob, { decision: 'approve', reason: 'confirmed with the owner' });
    const outcome = await pending;
    assert.equal(outcome.state, 'approved');
    assert.deepEqual(outcome.decidedBy, ['alice', 'bob']);
    assert.equal(outcome.reason, 'confirmed with the owner');
    assert.deepEqual(messages.map((m) => m.type), ['hold.created', 'hold.updated', 'hold.resolved']);
    assert.deepEqual(kinds(store), ['hold.created', 'hold.vote', 'hold.vote', 'hold.resolved']);
    const events = store.sessionEvents('sess_1');
    assert.equal(events.length, 4, 'every hold event is in the request session');
    assert.equal(events[3]!.actor, 'key:bob');
    assert.equal(events[1]!.prevHash, events[0]!.hash);
    const stored = queue.get(id)!;
    assert.equal(stored.state, 'approved');
    assert.deepEqual(stored.votes.map((v) => [v.byName, v.reason]), [['alice', 'planned migration'], ['bob', 'confirmed with the owner']]);
    await refused(() => queue.decide(id, carol, { decision: 'approve' }), 409, 'not_pending');
    store.close();
  });

  it('denies on the first denial by default, with the denier and the reason', async () => {
    const { store, queue, messages } = setup();
    const pending = queue.request(hold({ min: 2 }));
    const id = await created(messages);
    await queue.decide(id, alice, { decision: 'approve', reason: 'fine by me' });
    await queue.decide(id, bob, { decision: 'deny', reason: 'not during business hours' });
    const outcome = await pending;
    assert.equal(outcome.state, 'denied');
    assert.equal(outcome.reason, 'not during business hours');
    assert.deepEqual(outcome.decidedBy, ['bob']);
    assert.equal(store.session('sess_1')!.denied, 1);
    store.close();
  });

  it('needs denyMin distinct denials when configured', async () => {
    const { store, queue, messages } = setup();
    const pending = queue.request(hold({ min: 3, denyMin: 2 }));
    const id = await created(messages);
    assert.equal((await queue.decide(id, alice, { decision: 'deny', reason: 'no' })).state, 'pending');
    await queue.decide(id, bob, { decision: 'deny', reason: 'no either' });
    assert.equal((await pending).state, 'denied');
    store.close();
  });

  it('expires after the timeout, denying the client', async () => {
    const { store, queue, messages } = setup();
    const t0 = Date.now();
    const outcome = await queue.request(hold({ timeout: '150ms' }));
    assert.ok(Date.now() - t0 >= 140);
    assert.equal(outcome.state, 'expired');
    assert.match(outcome.reason, /timed out after 150ms/);
    assert.equal(messages.at(-1)!.type, 'hold.resolved');
    assert.equal(queue.get(outcome.hold.id)!.state, 'expired');
    assert.equal(store.events(1, 100).at(-1)!.actor, 'system');
    store.close();
  });

  it('keeps a hold with a timeout longer than a timer can wait', async () => {
    const { store, queue, messages } = setup();
    const ac = new AbortController();
    const pending = queue.request(hold({ timeout: '30d' }, { signal: ac.signal }));
    const id = await created(messages);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(queue.get(id)!.state, 'pending', 'a 30-day timeout does not overflow into an immediate expiry');
    ac.abort();
    assert.equal((await pending).state, 'cancelled');
    store.close();
  });

  it('never lets the requester approve their own hold, and refuses non-approvers', async () => {
    const { store, queue, messages } = setup();
    const self = who('alice', ['dba']);
    const pending = queue.request(hold({}, { identity: self }));
    const id = await created(messages);
    await refused(() => queue.decide(id, self, { decision: 'approve', reason: 'trust me' }), 403, 'self_approval');
    await refused(() => queue.decide(id, outsider, { decision: 'approve', reason: 'sure' }), 403, 'not_an_approver');
    await refused(() => queue.decide(id, who('rev', ['reviewer']), { decision: 'approve' }), 403, 'not_an_approver');
    assert.equal(queue.get(id)!.votes.length, 0, 'refused decisions leave no vote');
    await queue.decide(id, root, { decision: 'approve', reason: 'admin override' });
    assert.equal((await pending).state, 'approved');
    store.close();
  });

  it('requires a reason when the rule says so, and validates the body', async () => {
    const { store, queue, messages } = setup();
    const pending = queue.request(hold({ reason: 'required' }));
    const id = await created(messages);
    await refused(() => queue.decide(id, alice, { decision: 'approve' }), 400, 'reason_required');
    await refused(() => queue.decide(id, alice, { decision: 'approve', reason: '   ' }), 400, 'reason_required');
    await refused(() => queue.decide(id, alice, { decision: 'maybe' as 'approve', reason: 'x' }), 400, 'bad_request');
    await refused(() => queue.decide(id, alice, { decision: 'deny', reason: 'x', grant: '30m' }), 400, 'bad_request');
    await refused(() => queue.decide(id, alice, { decision: 'approve', reason: 'x', grant: 'forever' }), 400, 'bad_request');
    await refused(() => queue.decide(id, alice, { decision: 'approve', reason: 'x', grant: '30d' }), 400, 'bad_request');
    await refused(() => queue.decide('hold_nope', alice, { decision: 'approve', reason: 'x' }), 404, 'not_found');
    await queue.decide(id, alice, { decision: 'approve', reason: 'ticket OPS-42' });
    assert.equal((await pending).hold.votes[0]!.reason, 'ticket OPS-42');
    store.close();
  });

  it('grants time-boxed access: same identity, connection and rule pass at once (recorded) until it ends', async () => {
    let clock = Date.now();
    const { dir, store, queue, messages } = setup(tempDir(), () => clock);
    const first = queue.request(hold());
    const id = await created(messages);
    await queue.decide(id, alice, { decision: 'approve', reason: 'on call tonight', grant: '30m' });
    const o1 = await first;
    assert.equal(o1.hold.grantMs, 30 * 60_000);

    const o2 = await queue.request(hold());
    assert.equal(o2.state, 'approved');
    assert.match(o2.reason, /covered by a grant from alice/);
    const last = store.events(1, 100).at(-1)!;
    assert.equal(last.kind, 'hold.resolved');
    assert.equal((last.payload as { via: string }).via, 'grant');
    assert.equal(messages.filter((m) => m.type === 'hold.created').length, 1, 'a grant pass does not page approvers');

    // another rule, another connection or another identity still waits
    const ac = new AbortController();
    const other = queue.request(hold({}, { rule: 'other-rule', signal: ac.signal }));
    await created(messages, 2);
    assert.equal(queue.pendingCount, 1);
    ac.abort();
    assert.equal((await other).state, 'cancelled');
    const ac2 = new AbortController();
    const otherUser = queue.request(hold({}, { identity: who('dev2', ['engineering']), signal: ac2.signal }));
    await created(messages, 3);
    assert.equal(queue.pendingCount, 1);
    ac2.abort();
    await otherUser;

    // the grant survives a restart
    store.close();
    const again = setup(dir, () => clock);
    assert.equal((await again.queue.request(hold())).state, 'approved');
    // ... and ends on time
    clock += 31 * 60_000;
    const ac3 = new AbortController();
    const later = again.queue.request(hold({}, { signal: ac3.signal }));
    await created(again.messages);
    assert.equal(again.queue.pendingCount, 1);
    ac3.abort();
    assert.equal((await later).state, 'cancelled');
    again.store.close();
  });

  it('gives the smallest grant all approvers asked for, and none if one approver gave none', async () => {
    const { store, queue, messages } = setup();
    const p1 = queue.request(hold({ min: 2 }));
    const id1 = await created(messages, 1);
    await queue.decide(id1, alice, { decision: 'approve', reason: 'ok', grant: '1h' });
    await queue.decide(id1, bob, { decision: 'approve', reason: 'ok', grant: '15m' });
    assert.equal((await p1).hold.grantMs, 15 * 60_000);

    const p2 = queue.request(hold({ min: 2 }, { rule: 'second' }));
    const id2 = await created(messages, 2);
    await queue.decide(id2, alice, { decision: 'approve', reason: 'ok', grant: '1h' });
    await queue.decide(id2, bob, { decision: 'approve', reason: 'just this once' });
    assert.equal((await p2).hold.grantMs, undefined);
    store.close();
  });

  it('cancels the hold when the client disconnects, also when it was gone before the hold began', async () => {
    const { store, queue, messages } = setup();
    const ac = new AbortController();
    const pending = queue.request(hold({}, { signal: ac.signal }));
    const id = await created(messages);
    ac.abort();
    const outcome = await pending;
    assert.equal(outcome.state, 'cancelled');
    assert.equal(queue.get(id)!.state, 'cancelled');
    await refused(() => queue.decide(id, alice, { decision: 'approve', reason: 'late' }), 409, 'not_pending');
    const gone = AbortSignal.abort();
    assert.equal((await queue.request(hold({}, { signal: gone }))).state, 'cancelled');
    assert.equal(queue.pendingCount, 0);
    store.close();
  });

  it('records holds a crashed run left pending as abandoned on the next start', async () => {
    const dir = tempDir();
    const a = setup(dir);
    void a.queue.request(hold({ timeout: '1h' }));
    const id = await created(a.messages);
    a.store.close(); // the process dies: no resolution is recorded
    const b = setup(dir);
    const v = b.queue.get(id)!;
    assert.equal(v.state, 'abandoned');
    assert.match(v.resolution!, /gateway stopped/);
    const last = b.store.events(1, 100).at(-1)!;
    assert.equal(last.kind, 'hold.resolved');
    assert.equal((last.payload as { state: string }).state, 'abandoned');
    assert.equal(b.queue.list({ state: 'pending' }).total, 0);
    b.store.close();
    await a.queue.close(); // stops the dead run's timer; its store is closed, so nothing more is written
  });

  it('abandons pending holds when the gateway stops, answering the waiting clients', async () => {
    const { store, queue, messages } = setup();
    const pending = queue.request(hold());
    await created(messages);
    await queue.close();
    const outcome = await pending;
    assert.equal(outcome.state, 'abandoned');
    await assert.rejects(queue.request(hold()), /closed/);
    store.close();
  });

  it('lists history by state and filters what a user may see', async () => {
    const { store, queue, messages } = setup();
    const p1 = queue.request(hold());
    const id1 = await created(messages, 1);
    await queue.decide(id1, alice, { decision: 'deny', reason: 'no' });
    await p1;
    void queue.request(hold({ approvers: ['security'] }, { rule: 'sec' }));
    await created(messages, 2);
    assert.equal(queue.list().total, 2);
    assert.deepEqual(queue.list({ state: 'denied' }).holds.map((h) => h.id), [id1]);
    assert.equal(queue.list({ state: 'pending' }).holds[0]!.rule, 'sec');
    const forAlice = queue.list({ visible: (v) => v.approvers.some((g) => alice.groups.includes(g)) });
    assert.deepEqual(forAlice.holds.map((h) => h.id), [id1]);
    await queue.close();
    store.close();
  });

  it('fails closed: no hold without a record, no vote without a record, no approval without a record', async () => {
    const { store, queue, messages } = setup();
    store.db.pragma('query_only = ON');
    await assert.rejects(queue.request(hold()), StoreUnavailableError);
    assert.equal(queue.pendingCount, 0);
    store.db.pragma('query_only = OFF');

    const pending = queue.request(hold());
    const id = await created(messages);
    store.db.pragma('query_only = ON');
    await assert.rejects(queue.decide(id, alice, { decision: 'approve', reason: 'ok' }), StoreUnavailableError);
    store.db.pragma('query_only = OFF');
    assert.equal(queue.get(id)!.votes.length, 0);

    // The vote is recorded but the approval cannot be: the client is denied, never let through.
    store.db.exec(`CREATE TRIGGER no_approvals BEFORE UPDATE OF state ON holds WHEN NEW.state = 'approved' BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END`);
    await queue.decide(id, alice, { decision: 'approve', reason: 'ok' });
    const outcome = await pending;
    assert.equal(outcome.state, 'denied');
    assert.match(outcome.reason, /could not be recorded/);
    store.close();
  });
});

describe('hold writes with a commit thread (the gateway)', () => {
  it('never wait on the database on the gateway thread: a hold is created and decided while the thread is busy folding', async () => {
    const { store, queue, messages } = setup(tempDir(), undefined, true);
    assert.ok(store.threaded, 'the store runs a commit thread');
    try {
      // A large backlog of journaled events keeps the commit thread busy folding for a while: as
      // large as it takes on this machine (doubled until folding it takes over 80 ms).
      let batches = 20;
      const busy = () => {
        for (let i = 0; i < batches; i++) store.appendMany(Array.from({ length: 1000 }, (_, j) => ({ kind: 'http.chunk' as const, session: 'sess_busy', payload: { offset: j, events: [{ data: 'x'.repeat(400) }] } })));
      };
      let t0 = 0;
      let foldMs = 0;
      for (;;) {
        busy();
        t0 = performance.now();
        store.settle();
        foldMs = performance.now() - t0;
        if (foldMs > 80 || batches >= 160) break;
        batches *= 2;
      }
      busy();
      t0 = performance.now();
      const pending = queue.request(hold({ min: 2 }));
      const requestMs = performance.now() - t0;
      const id = await created(messages);
      busy();
      t0 = performance.now();
      const voted = queue.decide(id, alice, { decision: 'approve', reason: 'fine' });
      const decideMs = performance.now() - t0;
      assert.equal((await voted).votes.length, 1);
      // What the gateway thread spent inside the calls, against what a wait for the fold costs.
      assert.ok(foldMs > 80, `the backlog kept the commit thread busy for ${foldMs.toFixed(1)} ms`);
      assert.ok(requestMs < 40 && decideMs < 40, `request ${requestMs.toFixed(1)} ms, decide ${decideMs.toFixed(1)} ms on the gateway thread`);
      await queue.decide(id, bob, { decision: 'approve', reason: 'also fine' });
      assert.equal((await pending).state, 'approved');
      store.settle();
      const rows = store.db.prepare("SELECT kind FROM events WHERE kind LIKE 'hold.%' ORDER BY seq").all() as { kind: string }[];
      assert.deepEqual(rows.map((r) => r.kind), ['hold.created', 'hold.vote', 'hold.vote', 'hold.resolved']);
      assert.equal(queue.get(id)!.state, 'approved', 'the row and its events were written together');
      console.log(`hold request ${requestMs.toFixed(1)} ms, decide ${decideMs.toFixed(1)} ms on the gateway thread; waiting for such a fold takes ${foldMs.toFixed(1)} ms`);
    } finally {
      await queue.close();
      store.close();
    }
  });

  it('a vote that cannot be written is refused, and the chain goes on intact', async () => {
    const { store, queue, messages } = setup(tempDir(), undefined, true);
    try {
      const pending = queue.request(hold());
      const id = await created(messages);
      store.settle();
      store.db.exec(`CREATE TRIGGER no_votes BEFORE UPDATE OF view ON holds BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END`);
      await assert.rejects(queue.decide(id, alice, { decision: 'approve', reason: 'ok' }), StoreUnavailableError);
      store.db.exec('DROP TRIGGER no_votes');
      store.appendMany([{ kind: 'http.chunk', session: 'sess_1', payload: { after: 'the refused vote' } }]);
      await queue.decide(id, alice, { decision: 'approve', reason: 'ok' });
      assert.equal((await pending).state, 'approved');
      store.settle();
      const kinds = (store.db.prepare('SELECT kind FROM events ORDER BY seq').all() as { kind: string }[]).map((r) => r.kind);
      assert.deepEqual(kinds, ['hold.created', 'http.chunk', 'hold.vote', 'hold.resolved']);
      const chain = store.db.prepare('SELECT seq, prev_hash, hash FROM events ORDER BY seq').all() as { seq: number; prev_hash: string; hash: string }[];
      for (let i = 1; i < chain.length; i++) assert.equal(chain[i]!.prev_hash, chain[i - 1]!.hash, `seq ${chain[i]!.seq} follows seq ${chain[i - 1]!.seq}`);
    } finally {
      await queue.close();
      store.close();
    }
  });
});

describe('what a held statement shows', () => {
  it('keeps the whole statement and its parameters; a short summary says it is shortened', async () => {
    const { queue, messages, store } = setup();
    const sql = `DELETE FROM t WHERE x = 1 /* ${'c'.repeat(480)} */ OR true`;
    const ctl = new AbortController();
    const p = queue.request(hold({}, { ...sqlHoldText(sql, ['1', null], 500), signal: ctl.signal }));
    const id = await created(messages);
    const view = queue.get(id)!;
    assert.equal(view.statement, sql);
    assert.deepEqual(view.params, ['1', null]);
    assert.equal(view.statementLength, undefined);
    assert.ok(view.summary.startsWith(sql.slice(0, 500)));
    assert.match(view.summary, /… \[\+\d+ more characters, full text on the hold\]$/);
    // The log's hold.created carries the same statement.
    const ev = store.events(1, 1000).find((e) => e.kind === 'hold.created')!;
    assert.equal((ev.payload as { statement: string }).statement, sql);
    ctl.abort();
    await p;
  });

  it('cuts only a statement over its limit, with a visible marker and the full length', async () => {
    const { queue, messages } = setup();
    const sql = `SELECT ${'x'.repeat(300_000)} OR true`;
    const ctl = new AbortController();
    const p = queue.request(hold({}, { ...sqlHoldText(sql, undefined, 500), signal: ctl.signal }));
    const view = queue.get(await created(messages))!;
    assert.equal(view.statementLength, sql.length);
    const tail = view.statement!.slice(-120);
    assert.ok(tail.endsWith(`[cut at ${256 * 1024} of ${sql.length} characters: the session's replay has the rest]`), tail);
    ctl.abort();
    await p;
  });

  it('never cuts a summary silently', () => {
    assert.equal(shortenForSummary('short', 10), 'short');
    assert.equal(shortenForSummary('abcdefghijkl', 10), 'abcdefghij… [+2 more characters, full text on the hold]');
  });
});
