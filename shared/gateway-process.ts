/**
 * Messages between the gateway process (proxy/entry.ts) and whoever started it: Electron's main
 * process (main/gateway-supervisor.ts), a test that forks it, or a terminal reading its stdout.
 *
 * Reports to the parent (`GatewayReport`): `ready` with the listener addresses and the console
 * login link, `error` with one line saying why it could not start (then exit 1), `stopped`.
 * Commands from the parent (`GatewayCommand`): `vault-key`, `stop`, `login-link`.
 */

export interface ListenerReport {
  name: string;
  address: string;
}

/** How the gateway protects secrets at rest in this run: sealed by the desktop's vault key, or not. */
export type SecretProtection = 'plain' | 'vault';

export type GatewayReport =
  | {
      type: 'ready';
      pid: number;
      version: string;
      /** Control-plane origin, e.g. `http://127.0.0.1:7420`. */
      controlUrl: string;
      /** A single-use console login link (10 minutes), when the gateway issues one; more on `login-link`. */
      loginUrl: string | null;
      /** The token inside `loginUrl`. */
      loginToken: string | null;
      listeners: ListenerReport[];
      /** The first admin API key, only on the start that created it (shown once). */
      firstKey: string | null;
      /** How secrets at rest are protected in this run. */
      secrets: SecretProtection;
    }
  | { type: 'error'; message: string }
  | { type: 'stopped' }
  /** Answer to `login-link`: a fresh single-use link (null before the gateway is ready). */
  | { type: 'login-link'; id: number; url: string | null };

export type GatewayCommand = { type: 'stop' } | { type: 'vault-key'; key: string } | { type: 'login-link'; id: number };
