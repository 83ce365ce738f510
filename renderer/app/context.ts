/** The console's stores, created once for the page, and hooks to read them from components. */
import { useStore } from 'zustand';
import { httpApi } from '../api';
import { createAuthStore, type AuthState } from '../stores/auth';
import { createInboxStore, type InboxStore } from '../stores/inbox';
import { createSessionsStore, type SessionsStore } from '../stores/sessions';
import { createUiStore, type UiState } from '../stores/ui';

export const api = httpApi;
export const authStore = createAuthStore(api);
export const inboxStore = createInboxStore(api);
export const sessionsStore = createSessionsStore(api);
export const uiStore = createUiStore();

export const useAuth = <T,>(sel: (s: AuthState) => T): T => useStore(authStore, sel);
export const useInbox = <T,>(sel: (s: InboxStore) => T): T => useStore(inboxStore, sel);
export const useSessions = <T,>(sel: (s: SessionsStore) => T): T => useStore(sessionsStore, sel);
export const useUi = <T,>(sel: (s: UiState) => T): T => useStore(uiStore, sel);

export const toast = (tone: 'ok' | 'error' | 'info', text: string) => uiStore.getState().toast(tone, text);
