/**
 * The approvals inbox: pending holds (live from the WebSocket), the brief "decided by" cards, and the
 * history tab. State transitions live in lib/holds.ts; this store adds loading and deciding.
 */
import { createStore } from 'zustand/vanilla';
import type { HoldDecisionRequest, HoldState, HoldView } from '../../shared/holds';
import type { ConsoleApi } from '../lib/api-types';
import { applyHoldMessage, emptyInbox, type HoldMessage, type InboxState, loadPending, mergeHistory, pruneSettled } from '../lib/holds';

export interface InboxStore {
  inbox: InboxState;
  loaded: boolean;
  error?: string;
  history: HoldView[];
  historyLoaded: boolean;
  historyError?: string;
  /** Hold ids with a decision in flight. */
  deciding: Record<string, boolean>;
  decisionErrors: Record<string, string>;
  load(): Promise<void>;
  loadHistory(): Promise<void>;
  apply(msg: HoldMessage, now?: number): void;
  decide(id: string, req: HoldDecisionRequest): Promise<boolean>;
  prune(now?: number): void;
}

const RESOLVED: HoldState[] = ['approved', 'denied', 'expired', 'abandoned', 'cancelled'];

export function createInboxStore(api: ConsoleApi, clock: () => number = Date.now) {
  return createStore<InboxStore>()((set, get) => ({
    inbox: emptyInbox(),
    loaded: false,
    history: [],
    historyLoaded: false,
    deciding: {},
    decisionErrors: {},
    async load() {
      try {
        const holds = await api.holds('pending');
        set((s) => ({ inbox: loadPending(s.inbox, holds), loaded: true, error: undefined }));
      } catch (err) {
        set({ error: (err as Error).message, loaded: true });
      }
    },
    async loadHistory() {
      try {
        const lists = await Promise.all(RESOLVED.map((st) => api.holds(st).catch((e: unknown) => (st === 'cancelled' ? [] : Promise.reject(e)))));
        set((s) => ({ history: mergeHistory(lists.flat(), s.inbox.recent), historyLoaded: true, historyError: undefined }));
      } catch (err) {
        set({ historyError: (err as Error).message, historyLoaded: true });
      }
    },
    apply(msg, now = clock()) {
      set((s) => {
        const inbox = applyHoldMessage(s.inbox, msg, now);
        return { inbox, history: msg.type === 'hold.resolved' ? mergeHistory(s.history, [msg.hold]) : s.history };
      });
    },
    async decide(id, req) {
      set((s) => ({ deciding: { ...s.deciding, [id]: true }, decisionErrors: { ...s.decisionErrors, [id]: '' } }));
      try {
        const hold = await api.decide(id, req);
        // The WebSocket normally brings the update first; apply the answer too in case it does not.
        if (hold) get().apply({ type: hold.state === 'pending' ? 'hold.updated' : 'hold.resolved', hold });
        return true;
      } catch (err) {
        set((s) => ({ decisionErrors: { ...s.decisionErrors, [id]: (err as Error).message } }));
        return false;
      } finally {
        set((s) => ({ deciding: { ...s.deciding, [id]: false } }));
      }
    },
    prune(now = clock()) {
      const next = pruneSettled(get().inbox, now);
      if (next !== get().inbox) set({ inbox: next });
    },
  }));
}

export type InboxStoreApi = ReturnType<typeof createInboxStore>;
