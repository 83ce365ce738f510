/** Connection status of the live feed, and short-lived toasts. */
import { createStore } from 'zustand/vanilla';

export type LiveStatus = 'connecting' | 'live' | 'offline';

export interface Toast {
  id: number;
  tone: 'ok' | 'error' | 'info';
  text: string;
}

export interface UiState {
  live: LiveStatus;
  toasts: Toast[];
  setLive(s: LiveStatus): void;
  toast(tone: Toast['tone'], text: string, ms?: number): void;
  dismiss(id: number): void;
}

let nextToast = 1;

export function createUiStore() {
  return createStore<UiState>()((set, get) => ({
    live: 'connecting',
    toasts: [],
    setLive(live) {
      if (get().live !== live) set({ live });
    },
    toast(tone, text, ms = 4000) {
      const id = nextToast++;
      // The same message again replaces the one still showing (and its time starts over): one fact, one toast.
      set((s) => ({ toasts: [...s.toasts.filter((t) => t.text !== text || t.tone !== tone).slice(-3), { id, tone, text }] }));
      setTimeout(() => get().dismiss(id), ms);
    },
    dismiss(id) {
      set((s) => ({ toasts: s.toasts.filter((t) => t.id !== id) }));
    },
  }));
}
