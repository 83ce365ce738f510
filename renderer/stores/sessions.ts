/**
 * The sessions list: filters, pages fetched on demand as the virtual list scrolls, live updates.
 */
import { createStore } from 'zustand/vanilla';
import type { AuditEvent, SessionFilter, SessionSummary } from '../../shared/events';
import type { ConsoleApi } from '../lib/api-types';
import { applySessionEvent, applySessionSummary, emptyList, PAGE_SIZE, pagesFor, type SessionListState, withPage } from '../lib/sessions';

export interface SessionsStore {
  filter: SessionFilter;
  list: SessionListState;
  loading: Record<number, boolean>;
  loaded: boolean;
  error?: string;
  /** With a shared store: why the last page lacks the other gateways' sessions. */
  incomplete?: string;
  /** Bumped on every reload so stale page answers are dropped. */
  generation: number;
  setFilter(f: SessionFilter): void;
  reload(): void;
  ensureRows(start: number, end: number): void;
  sessionChanged(s: SessionSummary): void;
  /** `gateway`: the event is another gateway's (shared store). */
  eventArrived(e: AuditEvent, gateway?: string): void;
}

export function createSessionsStore(api: ConsoleApi) {
  const store = createStore<SessionsStore>()((set, get) => ({
    filter: {},
    list: emptyList(),
    loading: {},
    loaded: false,
    generation: 0,
    setFilter(filter) {
      set({ filter });
      get().reload();
    },
    reload() {
      set((s) => ({ list: emptyList(), loading: {}, loaded: false, error: undefined, generation: s.generation + 1 }));
      void loadPage(0);
    },
    ensureRows(start, end) {
      const s = get();
      const head = s.list.head.length;
      for (const p of pagesFor(Math.max(0, start - head), Math.max(0, end - head), PAGE_SIZE)) if (!s.list.pages[p] && !s.loading[p]) void loadPage(p);
    },
    sessionChanged(summary) {
      set((s) => ({ list: applySessionSummary(s.list, summary, s.filter) }));
    },
    eventArrived(e, gateway) {
      set((s) => ({ list: applySessionEvent(s.list, e, gateway) }));
    },
  }));

  async function loadPage(page: number): Promise<void> {
    const { generation, filter } = store.getState();
    store.setState((s) => ({ loading: { ...s.loading, [page]: true } }));
    try {
      const r = await api.sessions(filter, page * PAGE_SIZE, PAGE_SIZE);
      if (store.getState().generation !== generation) return;
      store.setState((s) => ({ list: withPage(s.list, page, r.total, r.sessions), loaded: true, error: undefined, incomplete: r.incomplete, loading: { ...s.loading, [page]: false } }));
    } catch (err) {
      if (store.getState().generation !== generation) return;
      store.setState((s) => ({ error: (err as Error).message, loaded: true, loading: { ...s.loading, [page]: false } }));
    }
  }
  return store;
}

export type SessionsStoreApi = ReturnType<typeof createSessionsStore>;
