/**
 * Who is signed in, and whether the gateway answers. `signed-out` carries a notice when the sign-in
 * expired mid-session, so the login page can say why the user is back there.
 */
import { createStore } from 'zustand/vanilla';
import type { OidcProvider } from '../../shared/identity';
import type { ConsoleApi } from '../lib/api-types';
import type { Me } from '../lib/roles';

export type AuthStatus = 'loading' | 'signed-out' | 'signed-in' | 'unreachable';

export interface AuthState {
  status: AuthStatus;
  me?: Me;
  version?: string;
  /** With a shared store: this gateway's id (the fingerprint of its key); sessions of other gateways name theirs. */
  gateway?: string;
  providers: OidcProvider[];
  notice?: string;
  /** The gateway stopped answering after sign-in (shown as a banner; the console keeps its data). */
  offline: boolean;
  init(): Promise<void>;
  loginWithKey(key: string): Promise<void>;
  logout(): Promise<void>;
  expired(): void;
  /** The live feed was closed for lack of a valid sign-in: confirm, and show the login page if so. */
  recheck(): Promise<void>;
  setOffline(offline: boolean): void;
}

function errorStatus(err: unknown): number {
  return typeof err === 'object' && err && 'status' in err ? Number((err as { status: unknown }).status) : -1;
}

export function createAuthStore(api: ConsoleApi) {
  return createStore<AuthState>()((set, get) => ({
    status: 'loading',
    providers: [],
    offline: false,
    async init() {
      try {
        const health = await api.health();
        set({ version: health.version, ...(health.sharedStore ? { gateway: health.sharedStore.gateway } : {}) });
      } catch {
        set({ status: 'unreachable' });
        return;
      }
      try {
        const me = await api.me();
        set({ status: 'signed-in', me, offline: false, notice: undefined });
      } catch (err) {
        if (errorStatus(err) === 0) return set({ status: 'unreachable' });
        const providers = await api.providers().catch(() => []);
        set({ status: 'signed-out', me: undefined, providers });
      }
    },
    async loginWithKey(key) {
      await api.loginWithKey(key.trim());
      const me = await api.me();
      set({ status: 'signed-in', me, notice: undefined, offline: false });
    },
    async logout() {
      await api.logout().catch(() => {});
      const providers = await api.providers().catch(() => get().providers);
      set({ status: 'signed-out', me: undefined, providers, notice: 'You signed out.' });
    },
    expired() {
      if (get().status !== 'signed-in') return;
      set({ status: 'signed-out', me: undefined, notice: 'Your session expired. Sign in again to continue.' });
      api
        .providers()
        .then((providers) => set({ providers }))
        .catch(() => {});
    },
    async recheck() {
      try {
        set({ me: await api.me() });
      } catch (err) {
        if (errorStatus(err) === 401) get().expired();
      }
    },
    setOffline(offline) {
      if (get().offline !== offline) set({ offline });
    },
  }));
}

export type AuthStore = ReturnType<typeof createAuthStore>;
