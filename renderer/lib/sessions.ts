/**
 * The sessions list: fixed-height row windowing (only the rows in view, plus overscan, exist in the
 * DOM, so 100,000 sessions scroll like 100), page caching over `GET /api/sessions?limit&offset`, and
 * live updates from `session.started`, `session.event` and `session.ended`.
 */
import type { AuditEvent, SessionFilter, SessionSummary } from '../../shared/events';

export interface Window {
  /** First row index rendered. */
  start: number;
  /** One past the last row index rendered. */
  end: number;
  /** Pixels above the first rendered row. */
  offsetTop: number;
  /** Height of the whole (virtual) list. */
  totalHeight: number;
}

export function visibleWindow(scrollTop: number, viewportHeight: number, rowHeight: number, total: number, overscan = 8): Window {
  const first = Math.floor(Math.max(0, scrollTop) / rowHeight);
  const count = Math.ceil(Math.max(0, viewportHeight) / rowHeight) + 1;
  const start = Math.max(0, Math.min(total, first - overscan));
  const end = Math.max(start, Math.min(total, first + count + overscan));
  return { start, end, offsetTop: start * rowHeight, totalHeight: total * rowHeight };
}

export const PAGE_SIZE = 200;

/** Page numbers that cover rows [start, end). */
export function pagesFor(start: number, end: number, pageSize = PAGE_SIZE): number[] {
  if (end <= start) return [];
  const out: number[] = [];
  for (let p = Math.floor(start / pageSize); p <= Math.floor((end - 1) / pageSize); p++) out.push(p);
  return out;
}


/** Query string for `GET /api/sessions`. */
export function sessionQuery(f: SessionFilter, offset: number, limit: number): string {
  const q = new URLSearchParams();
  if (f.user) q.set('user', f.user);
  if (f.connection) q.set('connection', f.connection);
  if (f.protocol) q.set('protocol', f.protocol);
  if (f.from !== undefined) q.set('from', String(f.from));
  if (f.to !== undefined) q.set('to', String(f.to));
  if (f.hadHolds) q.set('hadHolds', 'true');
  if (f.hadMasking) q.set('hadMasking', 'true');
  q.set('limit', String(limit));
  q.set('offset', String(offset));
  return q.toString();
}

/** Whether a session belongs in a filtered list (client side, for live rows). */
export function matchesFilter(s: SessionSummary, f: SessionFilter): boolean {
  if (f.user) {
    const u = f.user.toLowerCase();
    if (s.actor !== f.user && !(s.actorName ?? '').toLowerCase().includes(u)) return false;
  }
  if (f.connection && s.connection !== f.connection) return false;
  if (f.protocol && s.protocol !== f.protocol) return false;
  if (f.from !== undefined && s.lastEventAt < f.from) return false;
  if (f.to !== undefined && s.startedAt > f.to) return false;
  if (f.hadHolds && s.holds <= 0) return false;
  if (f.hadMasking && s.masked <= 0) return false;
  return true;
}

/**
 * The list as the view sees it: rows from the server by page, plus `head` — sessions that started
 * or moved to the top since the pages were fetched (ordered newest first, as the server orders).
 */
export interface SessionListState {
  total: number;
  pages: Record<number, SessionSummary[]>;
  head: SessionSummary[];
  /** Bumped on every change, so views re-render cheaply. */
  version: number;
}

export function emptyList(): SessionListState {
  return { total: 0, pages: {}, head: [], version: 0 };
}

/**
 * Stores a fetched page. A live head row that the server now lists is dropped from the head (its
 * start arrived before this page was fetched), so no session is shown twice.
 */
export function withPage(state: SessionListState, page: number, total: number, rows: SessionSummary[]): SessionListState {
  const ids = new Set(rows.map((r) => r.id));
  const head = state.head.some((h) => ids.has(h.id)) ? state.head.filter((h) => !ids.has(h.id)) : state.head;
  return { ...state, head, total: total + head.length, pages: { ...state.pages, [page]: rows }, version: state.version + 1 };
}

/** Row at virtual index `i`: head rows first, then server rows; undefined while its page loads. */
export function rowAt(state: SessionListState, i: number, pageSize = PAGE_SIZE): SessionSummary | undefined {
  if (i < state.head.length) return state.head[i];
  const j = i - state.head.length;
  return state.pages[Math.floor(j / pageSize)]?.[j % pageSize];
}

/** The row of session `id`; with `gateway` (another gateway's session), only that gateway's. */
function rowOf(id: string, gateway: string | undefined): (r: SessionSummary) => boolean {
  return (r) => r.id === id && (gateway === undefined || r.gateway === gateway);
}

function patchPages(state: SessionListState, match: (r: SessionSummary) => boolean, patch: (s: SessionSummary) => SessionSummary): { pages: Record<number, SessionSummary[]>; found: boolean } {
  let found = false;
  const pages: Record<number, SessionSummary[]> = {};
  for (const [k, rows] of Object.entries(state.pages)) {
    const i = rows.findIndex(match);
    if (i >= 0) {
      found = true;
      const copy = rows.slice();
      copy[i] = patch(rows[i]!);
      pages[Number(k)] = copy;
    } else pages[Number(k)] = rows;
  }
  return { pages, found };
}

/** A session started (or ended) live: add it to the head if new and it matches, else update in place. */
export function applySessionSummary(state: SessionListState, s: SessionSummary, filter: SessionFilter): SessionListState {
  const match = rowOf(s.id, s.gateway);
  const hi = state.head.findIndex(match);
  if (hi >= 0) {
    const head = state.head.slice();
    head[hi] = s;
    return { ...state, head, version: state.version + 1 };
  }
  const { pages, found } = patchPages(state, match, (r) => ({ ...s, gateway: s.gateway ?? r.gateway, gatewayName: s.gatewayName ?? r.gatewayName }));
  if (found) return { ...state, pages, version: state.version + 1 };
  if (!matchesFilter(s, filter)) return state;
  return { ...state, head: [s, ...state.head], total: state.total + 1, version: state.version + 1 };
}

/**
 * Whether a live message about a session is about `session` as this console shows it: with a
 * shared store, a message naming another gateway (`gateway`) applies only to that gateway's
 * session, one naming none only to this gateway's (`self`). Ids are unique in practice; seqs are
 * per chain, so an event must never be added to another chain's session.
 */
export function recordedBy(gateway: string | undefined, session: Pick<SessionSummary, 'gateway'>, self: string | undefined): boolean {
  if (gateway !== undefined) return session.gateway === gateway;
  return session.gateway === undefined || self === undefined || session.gateway === self;
}

/** One event arrived for a session (`gateway`: recorded by another gateway of a shared store): bump its counters where it is shown. */
export function applySessionEvent(state: SessionListState, e: AuditEvent, gateway?: string): SessionListState {
  if (!e.session) return state;
  const patch = (s: SessionSummary): SessionSummary => {
    const p = (e.payload ?? {}) as Record<string, unknown>;
    const decision = e.kind === 'policy.decision' ? p['action'] : e.kind === 'hold.resolved' ? p['state'] ?? (p['hold'] as { state?: string } | undefined)?.state : undefined;
    return {
      ...s,
      lastEventAt: Math.max(s.lastEventAt, e.time),
      endedAt: e.kind === 'session.end' ? e.time : s.endedAt,
      events: s.events + 1,
      requests: s.requests + (e.kind === 'http.request' || e.kind === 'pg.statement' ? 1 : 0),
      holds: s.holds + (e.kind === 'hold.created' ? 1 : 0),
      masked: s.masked + e.spans.length,
      denied: s.denied + (decision === 'deny' || decision === 'denied' || decision === 'expired' ? 1 : 0),
      errors: s.errors + (e.kind === 'http.error' || e.kind === 'pg.error' ? 1 : 0),
    };
  };
  const match = rowOf(e.session, gateway);
  const hi = state.head.findIndex(match);
  if (hi >= 0) {
    const head = state.head.slice();
    head[hi] = patch(head[hi]!);
    return { ...state, head, version: state.version + 1 };
  }
  const { pages, found } = patchPages(state, match, patch);
  return found ? { ...state, pages, version: state.version + 1 } : state;
}
