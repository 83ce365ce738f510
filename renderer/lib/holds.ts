/**
 * The approvals inbox as pure state transitions over the control-plane messages `hold.created`,
 * `hold.updated` and `hold.resolved` (shared/messages.ts). A resolved hold leaves the pending list
 * at once and stays visible for a few seconds as "Approved by …" so approvers see who decided.
 */
import type { HoldState, HoldView } from '../../shared/holds';

export interface InboxState {
  /** Pending holds by id. */
  pending: Record<string, HoldView>;
  /** Holds that just resolved, shown briefly in the inbox with who decided; id → when it resolved locally. */
  settled: Record<string, { hold: HoldView; shownAt: number }>;
  /** Resolved holds seen live this session (newest first), merged into the history tab. */
  recent: HoldView[];
}

export const SETTLED_VISIBLE_MS = 6000;
const RECENT_MAX = 500;

export function emptyInbox(): InboxState {
  return { pending: {}, settled: {}, recent: [] };
}

/** Replaces the pending set with a fresh list from `GET /api/holds?state=pending`. */
export function loadPending(state: InboxState, holds: HoldView[]): InboxState {
  const pending: Record<string, HoldView> = {};
  for (const h of holds) if (h.state === 'pending') pending[h.id] = h;
  return { ...state, pending };
}

export type HoldMessage = { type: 'hold.created' | 'hold.updated' | 'hold.resolved'; hold: HoldView };

export function applyHoldMessage(state: InboxState, msg: HoldMessage, now: number): InboxState {
  const h = msg.hold;
  if (msg.type !== 'hold.resolved' && h.state === 'pending') {
    // A late `updated` for a hold we already saw resolve must not bring it back.
    if (state.settled[h.id] || state.recent.some((r) => r.id === h.id)) return state;
    return { ...state, pending: { ...state.pending, [h.id]: h } };
  }
  const { [h.id]: _gone, ...pending } = state.pending;
  const recent = [h, ...state.recent.filter((r) => r.id !== h.id)].slice(0, RECENT_MAX);
  return { pending, settled: { ...state.settled, [h.id]: { hold: h, shownAt: now } }, recent };
}

/** Drops "just resolved" cards older than SETTLED_VISIBLE_MS. */
export function pruneSettled(state: InboxState, now: number): InboxState {
  const keep = Object.entries(state.settled).filter(([, s]) => now - s.shownAt < SETTLED_VISIBLE_MS);
  if (keep.length === Object.keys(state.settled).length) return state;
  return { ...state, settled: Object.fromEntries(keep) };
}

/** Pending holds, the ones expiring first at the top. */
export function pendingList(state: InboxState): HoldView[] {
  return Object.values(state.pending).sort((a, b) => a.expiresAt - b.expiresAt || a.createdAt - b.createdAt);
}

export function timeLeft(hold: HoldView, now: number): number {
  return Math.max(0, hold.expiresAt - now);
}

/** Fraction of the hold's lifetime still left, for the countdown bar. */
export function timeLeftFraction(hold: HoldView, now: number): number {
  const life = hold.expiresAt - hold.createdAt;
  return life > 0 ? Math.min(1, timeLeft(hold, now) / life) : 0;
}

export interface Progress {
  approvals: number;
  min: number;
  denials: number;
  denyMin: number;
}

/** k-of-N: approvals counted once per approver. */
export function progress(hold: HoldView): Progress {
  const approvers = new Set(hold.votes.filter((v) => v.decision === 'approve').map((v) => v.by));
  const deniers = new Set(hold.votes.filter((v) => v.decision === 'deny').map((v) => v.by));
  return { approvals: approvers.size, min: hold.min, denials: deniers.size, denyMin: hold.denyMin };
}

/** Who decided a resolved hold: the voters on the winning side; "timed out"/"abandoned" otherwise. */
export function decidedBy(hold: HoldView): string {
  const side = hold.state === 'approved' ? 'approve' : hold.state === 'denied' ? 'deny' : undefined;
  if (!side) return hold.state === 'expired' ? 'timed out' : hold.state === 'abandoned' ? 'gateway restarted' : hold.state;
  const names = [...new Set(hold.votes.filter((v) => v.decision === side).map((v) => v.byName || v.by))];
  return names.length ? names.join(', ') : 'policy';
}

export const STATE_LABEL: Record<HoldState, string> = {
  pending: 'Pending',
  approved: 'Approved',
  denied: 'Denied',
  expired: 'Timed out',
  abandoned: 'Abandoned',
  cancelled: 'Cancelled',
};

export interface HistoryFilter {
  state?: HoldState | '';
  connection?: string;
  /** Matches requester, approver names, rule, summary. */
  text?: string;
  from?: number;
  to?: number;
}

export function filterHistory(holds: HoldView[], f: HistoryFilter): HoldView[] {
  const text = f.text?.trim().toLowerCase();
  return holds.filter((h) => {
    if (h.state === 'pending') return false;
    if (f.state && h.state !== f.state) return false;
    if (f.connection && h.connection !== f.connection) return false;
    const at = h.resolvedAt ?? h.createdAt;
    if (f.from !== undefined && at < f.from) return false;
    if (f.to !== undefined && at > f.to) return false;
    if (text) {
      const hay = [h.requesterName, h.requester, h.rule, h.summary, h.connection, h.resolution ?? '', ...h.votes.map((v) => `${v.byName} ${v.reason}`)]
        .join(' ')
        .toLowerCase();
      if (!hay.includes(text)) return false;
    }
    return true;
  });
}

/** Merges fetched history with holds resolved live, newest first, one entry per id. */
export function mergeHistory(fetched: HoldView[], recent: HoldView[]): HoldView[] {
  const byId = new Map<string, HoldView>();
  for (const h of [...fetched, ...recent]) {
    const prev = byId.get(h.id);
    if (!prev || (h.resolvedAt ?? 0) >= (prev.resolvedAt ?? 0)) byId.set(h.id, h);
  }
  return [...byId.values()].sort((a, b) => (b.resolvedAt ?? b.createdAt) - (a.resolvedAt ?? a.createdAt));
}

/** Whether a decision may be sent: a reason is required when the rule says so. */
export function decisionError(hold: HoldView, reason: string): string | undefined {
  if (hold.reasonRequired && !reason.trim()) return 'This rule requires a reason.';
  return undefined;
}

/** The console link to a hold's session replayed up to the moment the hold was created. */
export function holdReplayHref(hold: Pick<HoldView, 'id' | 'session'>): string | undefined {
  return hold.session ? `#/sessions/${encodeURIComponent(hold.session)}?hold=${encodeURIComponent(hold.id)}` : undefined;
}

/** Seq of the `hold.created` event of hold `id` in a session's events (where its replay stops). */
export function holdCreatedSeq(events: readonly { seq: number; kind: string; payload: unknown }[], id: string): number | undefined {
  return events.find((e) => e.kind === 'hold.created' && (e.payload as { id?: unknown } | null)?.id === id)?.seq;
}

/** `$1 = 'value'` lines for a held statement's parameters (already masked); NULL as SQL NULL. */
export function paramLines(params: readonly (string | null)[]): string[] {
  return params.map((p, i) => `$${i + 1} = ${p === null ? 'NULL' : `'${p}'`}`);
}
