// The approvals inbox's state transitions and the role rules the console applies before offering
// the approve/deny buttons (renderer/lib/holds.ts, renderer/lib/roles.ts, renderer/stores/inbox.ts).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { HoldView } from '../../shared/holds';
import type { ConsoleApi } from '../../renderer/lib/api-types';
import {
  applyHoldMessage,
  decidedBy,
  decisionError,
  emptyInbox,
  filterHistory,
  loadPending,
  mergeHistory,
  pendingList,
  progress,
  pruneSettled,
  SETTLED_VISIBLE_MS,
  timeLeft,
  timeLeftFraction,
} from '../../renderer/lib/holds';
import { canDecide, capabilities, type Me } from '../../renderer/lib/roles';
import { createInboxStore } from '../../renderer/stores/inbox';

const T0 = 1_700_000_000_000;

function hold(over: Partial<HoldView> = {}): HoldView {
  return {
    id: 'hold_1',
    state: 'pending',
    session: 'ses_1',
    connection: 'openai',
    protocol: 'http',
    requester: 'key:dev',
    requesterName: 'dev',
    rule: 'hold-bulk-export',
    summary: 'POST /chat/completions gpt-4o: "export all [CREDIT_CARD]"',
    approvers: ['security'],
    min: 2,
    denyMin: 1,
    reasonRequired: true,
    createdAt: T0,
    expiresAt: T0 + 300_000,
    votes: [],
    ...over,
  };
}

const me = (over: Partial<Me> = {}): Me => ({ subject: 'key:alice', name: 'alice', groups: ['security'], roles: ['approver', 'user'], ...over });

describe('inbox state', () => {
  it('adds a created hold to the pending list and orders by expiry', () => {
    let s = applyHoldMessage(emptyInbox(), { type: 'hold.created', hold: hold({ id: 'a', expiresAt: T0 + 90_000 }) }, T0);
    s = applyHoldMessage(s, { type: 'hold.created', hold: hold({ id: 'b', expiresAt: T0 + 10_000 }) }, T0);
    assert.deepEqual(pendingList(s).map((h) => h.id), ['b', 'a']);
  });

  it('removes a resolved hold at once and shows who decided for a few seconds', () => {
    let s = applyHoldMessage(emptyInbox(), { type: 'hold.created', hold: hold() }, T0);
    const approved = hold({
      state: 'approved',
      resolvedAt: T0 + 5000,
      votes: [
        { by: 'key:alice', byName: 'alice', decision: 'approve', reason: 'SEC-7', at: T0 + 1000 },
        { by: 'key:bob', byName: 'bob', decision: 'approve', reason: 'ok', at: T0 + 5000 },
      ],
    });
    s = applyHoldMessage(s, { type: 'hold.resolved', hold: approved }, T0 + 5000);
    assert.equal(pendingList(s).length, 0);
    assert.equal(decidedBy(s.settled['hold_1']!.hold), 'alice, bob');
    assert.equal(Object.keys(pruneSettled(s, T0 + 5000 + SETTLED_VISIBLE_MS - 1).settled).length, 1);
    assert.equal(Object.keys(pruneSettled(s, T0 + 5000 + SETTLED_VISIBLE_MS).settled).length, 0);
    assert.equal(s.recent[0]!.id, 'hold_1');
  });

  it('ignores a late update for a hold that already resolved (replayed after a reconnect)', () => {
    let s = applyHoldMessage(emptyInbox(), { type: 'hold.resolved', hold: hold({ state: 'denied', resolvedAt: T0 }) }, T0);
    s = applyHoldMessage(s, { type: 'hold.updated', hold: hold() }, T0 + 1);
    assert.equal(pendingList(s).length, 0);
  });

  it('replaces the pending set from a reload, dropping non-pending entries', () => {
    const s = loadPending(applyHoldMessage(emptyInbox(), { type: 'hold.created', hold: hold({ id: 'gone' }) }, T0), [hold({ id: 'x' }), hold({ id: 'y', state: 'expired' })]);
    assert.deepEqual(Object.keys(s.pending), ['x']);
  });

  it('counts k-of-N per distinct approver, and time left', () => {
    const h = hold({ votes: [{ by: 'key:alice', byName: 'alice', decision: 'approve', reason: '', at: T0 }] });
    assert.deepEqual(progress(h), { approvals: 1, min: 2, denials: 0, denyMin: 1 });
    assert.equal(timeLeft(h, T0 + 60_000), 240_000);
    assert.equal(timeLeft(h, T0 + 400_000), 0);
    assert.equal(timeLeftFraction(h, T0 + 150_000), 0.5);
  });

  it('names timeouts and restarts instead of a decider', () => {
    assert.equal(decidedBy(hold({ state: 'expired' })), 'timed out');
    assert.equal(decidedBy(hold({ state: 'abandoned' })), 'gateway restarted');
  });

  it('requires a reason only when the rule says so', () => {
    assert.equal(decisionError(hold(), '  '), 'This rule requires a reason.');
    assert.equal(decisionError(hold(), 'ticket 7'), undefined);
    assert.equal(decisionError(hold({ reasonRequired: false }), ''), undefined);
  });

  it('filters and merges history', () => {
    const a = hold({ id: 'a', state: 'approved', resolvedAt: T0 + 1, votes: [{ by: 'key:zoe', byName: 'zoe', decision: 'approve', reason: 'ticket 42', at: T0 }] });
    const b = hold({ id: 'b', state: 'denied', connection: 'warehouse', resolvedAt: T0 + 2 });
    const merged = mergeHistory([a], [b, { ...a, resolvedAt: T0 + 3 }]);
    assert.deepEqual(merged.map((h) => h.id), ['a', 'b']);
    assert.deepEqual(filterHistory(merged, { state: 'denied' }).map((h) => h.id), ['b']);
    assert.deepEqual(filterHistory(merged, { connection: 'warehouse' }).map((h) => h.id), ['b']);
    assert.deepEqual(filterHistory(merged, { text: 'TICKET 42' }).map((h) => h.id), ['a']);
    assert.deepEqual(filterHistory(merged, { from: T0 + 2, to: T0 + 2 }).map((h) => h.id), ['b']);
  });
});

describe('who may decide', () => {
  it('lets a member of an approver group decide once, never on their own request', () => {
    assert.deepEqual(canDecide(me(), hold()), { ok: true });
    assert.equal(canDecide(me({ subject: 'key:dev' }), hold()).ok, false);
    assert.match((canDecide(me({ subject: 'key:dev' }), hold()) as { why: string }).why, /own request/);
    const voted = hold({ votes: [{ by: 'key:alice', byName: 'alice', decision: 'approve', reason: '', at: T0 }] });
    assert.match((canDecide(me(), voted) as { why: string }).why, /voted/);
    assert.match((canDecide(me({ groups: ['dba'] }), hold()) as { why: string }).why, /security/);
  });

  it('counts persons: another credential of the requester, or of a voter, may not decide', () => {
    const mine = hold({ requesterPerson: 'person_alice' });
    const why = (canDecide(me({ subject: 'key:alice-2', person: 'person_alice' }), mine) as { why: string }).why;
    assert.match(why, /You asked for this/);
    const votedByPerson = hold({ votes: [{ by: 'https://idp#alice', person: 'person_alice', byName: 'alice', decision: 'approve', reason: '', at: T0 }] });
    assert.match((canDecide(me({ subject: 'key:alice-2', person: 'person_alice' }), votedByPerson) as { why: string }).why, /one vote per person/);
    assert.deepEqual(canDecide(me({ subject: 'key:bob', person: 'person_bob' }), votedByPerson), { ok: true });
    const idpOnly = hold({ youMayNotDecide: { code: 'not_idp_backed', message: 'approvals here count only persons your identity provider vouches for' } });
    assert.match((canDecide(me(), idpOnly) as { why: string }).why, /identity provider/);
  });

  it('keeps reviewers to reading; admins decide any hold', () => {
    assert.match((canDecide(me({ roles: ['reviewer', 'user'] }), hold()) as { why: string }).why, /role/);
    assert.deepEqual(canDecide(me({ roles: ['admin', 'user'], groups: ['admin'] }), hold()), { ok: true });
  });

  it('maps roles to what the console offers', () => {
    const reviewer = capabilities(me({ roles: ['reviewer', 'user'] }));
    assert.equal(reviewer.decideHolds, false);
    assert.equal(reviewer.viewSessions, true);
    const approver = capabilities(me());
    assert.equal(approver.editPolicies, false);
    assert.equal(approver.viewSessions, false);
    assert.equal(approver.manageConnections, false);
    const admin = capabilities(me({ roles: ['admin', 'user'] }));
    assert.ok(admin.editPolicies && admin.manageConnections && admin.manageKeys && admin.decideHolds);
    assert.equal(capabilities(undefined).viewDashboard, false);
  });
});

describe('inbox store', () => {
  function fakeApi(over: Partial<ConsoleApi>): ConsoleApi {
    return new Proxy(over as ConsoleApi, { get: (t, k) => (t as unknown as Record<string | symbol, unknown>)[k] ?? (() => Promise.reject(new Error(`unexpected ${String(k)}`))) });
  }

  it('loads pending holds, applies live messages and reports a refused decision', async () => {
    const store = createInboxStore(
      fakeApi({
        holds: async (state) => (state === 'pending' ? [hold()] : []),
        decide: async () => {
          throw Object.assign(new Error('you cannot approve your own request'), { status: 403 });
        },
      }),
      () => T0,
    );
    await store.getState().load();
    assert.equal(Object.keys(store.getState().inbox.pending).length, 1);
    assert.equal(await store.getState().decide('hold_1', { decision: 'approve', reason: 'x' }), false);
    assert.equal(store.getState().decisionErrors['hold_1'], 'you cannot approve your own request');
    assert.equal(store.getState().deciding['hold_1'], false);
    store.getState().apply({ type: 'hold.resolved', hold: hold({ state: 'denied', resolvedAt: T0 }) });
    assert.equal(Object.keys(store.getState().inbox.pending).length, 0);
    assert.equal(store.getState().history[0]!.state, 'denied');
  });

  it('applies the decision answer when the WebSocket has not delivered it', async () => {
    const store = createInboxStore(fakeApi({ holds: async () => [hold()], decide: async () => hold({ state: 'approved', resolvedAt: T0 }) }), () => T0);
    await store.getState().load();
    assert.equal(await store.getState().decide('hold_1', { decision: 'approve', reason: 'ok' }), true);
    assert.equal(Object.keys(store.getState().inbox.pending).length, 0);
    assert.equal(store.getState().inbox.settled['hold_1']!.hold.state, 'approved');
  });

  it('merges every resolved state into history and shows a load error', async () => {
    const asked: string[] = [];
    const store = createInboxStore(
      fakeApi({
        holds: async (state) => {
          asked.push(state);
          return state === 'approved' ? [hold({ id: 'a', state: 'approved', resolvedAt: T0 })] : [];
        },
      }),
    );
    await store.getState().loadHistory();
    assert.deepEqual(asked.sort(), ['abandoned', 'approved', 'cancelled', 'denied', 'expired']);
    assert.equal(store.getState().history.length, 1);
    const broken = createInboxStore(fakeApi({ holds: async () => Promise.reject(new Error('gateway unreachable')) }));
    await broken.getState().load();
    assert.equal(broken.getState().error, 'gateway unreachable');
    assert.equal(broken.getState().loaded, true);
  });
});

describe('who may replay a hold\'s session', () => {
  it('follows who may decide it: its approver groups and admins, voted or not', async () => {
    const { mayReplayHold } = await import('../../renderer/lib/roles');
    const hold = { approvers: ['dba'] };
    assert.equal(mayReplayHold({ subject: 'a', name: 'a', groups: ['dba', 'approver'], roles: ['approver'] }, hold), true);
    assert.equal(mayReplayHold({ subject: 'r', name: 'r', groups: ['admin'], roles: ['admin'] }, hold), true);
    assert.equal(mayReplayHold({ subject: 'o', name: 'o', groups: ['security', 'approver'], roles: ['approver'] }, hold), false);
    assert.equal(mayReplayHold(undefined, hold), false);
  });
});
