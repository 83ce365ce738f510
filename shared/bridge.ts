/**
 * The desktop bridge: the one contract between the Electron preload (main/preload.ts) and the
 * console. The preload exposes exactly `CustodyBridge` as `window.custody`; in a plain browser
 * `window.custody` is undefined and the console falls back to the Web Notification API (or hides
 * the feature). Every method is a domain call on a fixed channel: there is no raw IPC.
 *
 * Renderer use:
 * ```ts
 * import { desktopBridge } from '../shared/bridge';
 * const bridge = desktopBridge(window);          // CustodyBridge | undefined
 * if (bridge) await bridge.setBadgeCount(pending);
 * ```
 *
 * Hold notifications are raised by the main process itself (it subscribes to `/api/events`, so they
 * arrive while the window is closed); the console must not call `notify` for `hold.created` when the
 * bridge is present, or approvers get each hold twice.
 */

/** A notification the console asks the desktop to show. Clicking it focuses the window. */
export interface BridgeNotification {
  title: string;
  body: string;
  /** When set, clicking opens the console on this hold (`#/holds/<id>`). */
  holdId?: string;
}

/** Where the console's control plane is and how this launch signs in to it. */
export interface ControlPlaneInfo {
  /** Origin of the control plane, e.g. `http://127.0.0.1:7420` (no trailing slash). */
  url: string;
  /** Always null: the renderer never receives a reusable credential (kept for the bridge's shape). */
  token: string | null;
  /** `local`: the gateway runs inside this app; `remote`: a team gateway elsewhere. */
  mode: 'local' | 'remote';
}

export interface CustodyBridge {
  /** Always true: lets the console tell the desktop app from a browser without sniffing. */
  readonly desktop: true;
  /** The desktop app's version (package.json `version`). */
  appVersion(): Promise<string>;
  /** The control-plane address and this launch's console token. */
  controlPlane(): Promise<ControlPlaneInfo>;
  /** Shows a native notification (for anything but holds, which the main process raises itself). */
  notify(notification: BridgeNotification): Promise<void>;
  /** Sets the dock/taskbar badge and the tray count; 0 clears it. */
  setBadgeCount(count: number): Promise<void>;
  /** Opens an http(s) URL in the system browser; other schemes are refused. */
  openExternal(url: string): Promise<void>;
}

/** The key under which the preload exposes the bridge: `window.custody`. */
export const BRIDGE_GLOBAL = 'custody';

/** IPC channels, one per method. Only the preload and the main process use these names. */
export const BRIDGE_CHANNELS = {
  appVersion: 'custody:app-version',
  controlPlane: 'custody:control-plane',
  notify: 'custody:notify',
  setBadgeCount: 'custody:set-badge-count',
  openExternal: 'custody:open-external',
} as const satisfies Record<Exclude<keyof CustodyBridge, 'desktop'>, `custody:${string}`>;

export type BridgeMethod = keyof typeof BRIDGE_CHANNELS;
export type BridgeChannel = (typeof BRIDGE_CHANNELS)[BridgeMethod];

/** Arguments and result of each method, derived from `CustodyBridge` so the two cannot drift. */
export type BridgeArgs<M extends BridgeMethod> = Parameters<CustodyBridge[M]>;
export type BridgeResult<M extends BridgeMethod> = Awaited<ReturnType<CustodyBridge[M]>>;

/** Limits the main process enforces on what the renderer sends (a compromised page gets no more). */
export const BRIDGE_LIMITS = {
  titleChars: 200,
  bodyChars: 1000,
  urlChars: 4096,
  maxBadge: 9999,
} as const;

/** The bridge when running in the desktop app, else undefined. Pass `window`. */
export function desktopBridge(scope: object): CustodyBridge | undefined {
  const candidate = (scope as { [BRIDGE_GLOBAL]?: CustodyBridge })[BRIDGE_GLOBAL];
  return candidate && candidate.desktop === true ? candidate : undefined;
}
