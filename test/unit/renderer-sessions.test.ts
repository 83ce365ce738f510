// The sessions list (renderer/lib/sessions.ts, renderer/stores/sessions.ts): fixed-height windowing
// keeps the DOM small for 100,000 sessions, pages load on demand, live events update rows.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AuditEvent, SessionSummary } from '../../shared/events';
import type { ConsoleApi } from '../../renderer/lib/api-types';
import { applySessionEvent, applySessionSummary, emptyList, matchesFilter, PAGE_SIZE, pagesFor, recordedBy, rowAt, sessionQuery, visibleWindow, withPage } from '../../renderer/lib/sessions';
import { createSessionsStore } from '../../renderer/stores/sessions';

const T0 = 1_700_000_000_000;

function session(i: number, over: Partial<SessionSummary> = {}): SessionSummary {
  return { id: `ses_${i}`, connection: 'openai', protocol: 'http', actor: 'key:dev', actorName: 'dev', startedAt: T0 - i * 1000, lastEventAt: T0 - i * 1000, endedAt: null, events: 3, requests: 1, holds: 0, masked: 0, denied: 0, errors: 0, ...over };
}

function event(over: Partial<AuditEvent>): AuditEvent {
  return { seq: 1, time: T0 + 5000, kind: 'http.request', session: 'ses_1', actor: 'key:dev', connection: 'openai', payload: {}, spans: [], payloadHash: '', prevHash: '', hash: '', ...over };
}

describe('windowing', () => {
  it('renders only the rows in view plus overscan, however long the list', () => {
    const w = visibleWindow(36 * 50_000, 720, 36, 100_000, 8);
    assert.equal(w.start, 49_992);
    assert.equal(w.end, 50_029);
    assert.ok(w.end - w.start < 60);
    assert.equal(w.offsetTop, 49_992 * 36);
    assert.equal(w.totalHeight, 3_600_000);
  });

  it('clamps at both ends', () => {
    assert.deepEqual(visibleWindow(0, 720, 36, 5), { start: 0, end: 5, offsetTop: 0, totalHeight: 180 });
    const end = visibleWindow(999_999, 720, 36, 100);
    assert.equal(end.end, 100);
    assert.ok(end.start <= 100);
    assert.deepEqual(visibleWindow(0, 720, 36, 0), { start: 0, end: 0, offsetTop: 0, totalHeight: 0 });
  });

  it('maps a row range to the pages that hold it', () => {
    assert.deepEqual(pagesFor(0, 40), [0]);
    assert.deepEqual(pagesFor(190, 230), [0, 1]);
    assert.deepEqual(pagesFor(5, 5), []);
  });
});

describe('list state', () => {
  it('reads rows from pages, with live head rows first', () => {
    let s = withPage(emptyList(), 0, 2, [session(1), session(2)]);
    assert.equal(rowAt(s, 1)!.id, 'ses_2');
    assert.equal(rowAt(s, PAGE_SIZE), undefined);
    s = applySessionSummary(s, session(0, { id: 'ses_new' }), {});
    assert.equal(s.total, 3);
    assert.equal(rowAt(s, 0)!.id, 'ses_new');
    assert.equal(rowAt(s, 2)!.id, 'ses_2');
  });

  it('never lists a session twice when its page arrives after its live start', () => {
    let s = applySessionSummary(emptyList(), session(0, { id: 'ses_new' }), {});
    s = withPage(s, 0, 2, [session(0, { id: 'ses_new' }), session(1)]);
    assert.equal(s.total, 2);
    assert.deepEqual([rowAt(s, 0)!.id, rowAt(s, 1)!.id], ['ses_new', 'ses_1']);
  });

  it('does not add a live session the filter excludes, but updates one that is shown', () => {
    let s = withPage(emptyList(), 0, 1, [session(1)]);
    s = applySessionSummary(s, session(9, { id: 'pg', protocol: 'postgres', connection: 'warehouse' }), { protocol: 'http' });
    assert.equal(s.head.length, 0);
    s = applySessionSummary(s, session(1, { endedAt: T0 }), { protocol: 'http' });
    assert.equal(rowAt(s, 0)!.endedAt, T0);
  });

  it('bumps counters as events arrive', () => {
    let s = withPage(emptyList(), 0, 1, [session(1)]);
    s = applySessionEvent(s, event({ kind: 'http.request', spans: [{ type: 'EMAIL', start: 0, end: 5, rule: 'pii' }] }));
    s = applySessionEvent(s, event({ kind: 'hold.created' }));
    s = applySessionEvent(s, event({ kind: 'hold.resolved', payload: { state: 'denied' } }));
    s = applySessionEvent(s, event({ kind: 'session.end', time: T0 + 9000 }));
    const r = rowAt(s, 0)!;
    assert.deepEqual([r.events, r.requests, r.masked, r.holds, r.denied, r.endedAt, r.lastEventAt], [7, 2, 1, 1, 1, T0 + 9000, T0 + 9000]);
    assert.equal(applySessionEvent(s, event({ session: 'elsewhere' })), s);
  });

  it("applies another gateway's live messages to that gateway's row only", () => {
    const mine = session(1, { gateway: 'SHA256:B', gatewayName: 'b' });
    let s = withPage(emptyList(), 0, 1, [mine]);
    // The same id recorded by A (ids are unique in practice; seqs are per chain, so it must not mix).
    assert.equal(applySessionEvent(s, event({ kind: 'http.request' }), 'SHA256:A'), s);
    s = applySessionEvent(s, event({ kind: 'http.request' }));
    assert.equal(rowAt(s, 0)!.requests, 2, "this gateway's event (no gateway named) still counts");
    const started = session(0, { id: 'ses_a', gateway: 'SHA256:A', gatewayName: 'a', events: 1, requests: 0 });
    s = applySessionSummary(s, started, {});
    assert.deepEqual([rowAt(s, 0)!.id, rowAt(s, 0)!.gatewayName], ['ses_a', 'a']);
    s = applySessionEvent(s, event({ session: 'ses_a', kind: 'http.request' }), 'SHA256:A');
    assert.equal(rowAt(s, 0)!.requests, 1);
    // A summary without a gateway (this gateway's, from the bus) keeps the row's gateway.
    s = applySessionSummary(s, session(1, { endedAt: T0 }), {});
    assert.deepEqual([rowAt(s, 1)!.endedAt, rowAt(s, 1)!.gateway], [T0, 'SHA256:B']);
  });

  it("tells which gateway's messages a replay takes", () => {
    assert.equal(recordedBy('SHA256:A', { gateway: 'SHA256:A' }, 'SHA256:B'), true);
    assert.equal(recordedBy('SHA256:A', { gateway: 'SHA256:B' }, 'SHA256:B'), false);
    assert.equal(recordedBy(undefined, { gateway: 'SHA256:B' }, 'SHA256:B'), true);
    assert.equal(recordedBy(undefined, { gateway: 'SHA256:A' }, 'SHA256:B'), false, "this gateway's event never joins another's session");
    assert.equal(recordedBy(undefined, {}, undefined), true, 'without a shared store');
  });

  it('filters like the server and builds its query', () => {
    const x = session(1, { holds: 1, masked: 0, actorName: 'Maya Chen' });
    assert.equal(matchesFilter(x, { user: 'maya' }), true);
    assert.equal(matchesFilter(x, { hadHolds: true }), true);
    assert.equal(matchesFilter(x, { hadMasking: true }), false);
    assert.equal(matchesFilter(x, { from: T0 }), false);
    assert.equal(sessionQuery({ user: 'maya', hadHolds: true, from: 5 }, 200, 200), 'user=maya&from=5&hadHolds=true&limit=200&offset=200');
  });
});

describe('sessions store', () => {
  it('fetches only the pages scrolled into view and drops answers from before a filter change', async () => {
    const asked: { filter: unknown; offset: number }[] = [];
    let release: (() => void) | undefined;
    const api = {
      async sessions(filter: unknown, offset: number, limit: number) {
        asked.push({ filter, offset });
        if (offset === 0 && asked.length === 1) await new Promise<void>((r) => (release = r));
        return { total: 100_000, sessions: Array.from({ length: limit }, (_, i) => session(offset + i)) };
      },
    } as unknown as ConsoleApi;
    const store = createSessionsStore(api);
    store.getState().reload(); // first answer is held back
    store.getState().setFilter({ protocol: 'postgres' });
    await new Promise((r) => setTimeout(r, 10));
    release!();
    await new Promise((r) => setTimeout(r, 10));
    assert.equal(store.getState().list.total, 100_000);
    assert.deepEqual(store.getState().filter, { protocol: 'postgres' });
    assert.equal(rowAt(store.getState().list, 0)!.id, 'ses_0');
    store.getState().ensureRows(50_000, 50_040);
    await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(asked.map((a) => a.offset), [0, 0, 50_000 - (50_000 % PAGE_SIZE)]);
    assert.equal(Object.keys(store.getState().list.pages).length, 2);
    store.getState().ensureRows(50_000, 50_040);
    assert.equal(asked.length, 3, 'a loaded page is not fetched again');
  });
});
