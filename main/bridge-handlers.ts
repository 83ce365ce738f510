/**
 * The main-process side of the preload bridge (shared/bridge.ts): one handler per channel, each
 * validating what the renderer sent and refusing callers outside the console's origin. A page that
 * is compromised or navigated elsewhere gets nothing beyond these five calls with bounded input.
 */
import { BRIDGE_CHANNELS, BRIDGE_LIMITS, type BridgeArgs, type BridgeMethod, type BridgeNotification, type BridgeResult, type ControlPlaneInfo } from '../shared/bridge';
import { httpOrigin, isSafeExternalUrl } from './navigation-policy';

export type BridgeHandlers = { [M in BridgeMethod]: (...args: BridgeArgs<M>) => BridgeResult<M> | Promise<BridgeResult<M>> };

export class BridgeInputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BridgeInputError';
  }
}

export function validateNotification(value: unknown): BridgeNotification {
  if (typeof value !== 'object' || value === null) throw new BridgeInputError('notify: expected {title, body, holdId?}');
  const { title, body, holdId } = value as Record<string, unknown>;
  if (typeof title !== 'string' || !title.trim()) throw new BridgeInputError('notify: title must be a non-empty string');
  if (typeof body !== 'string') throw new BridgeInputError('notify: body must be a string');
  if (holdId !== undefined && (typeof holdId !== 'string' || !/^[A-Za-z0-9_-]{1,100}$/.test(holdId))) throw new BridgeInputError('notify: holdId must be a hold id');
  return {
    title: title.slice(0, BRIDGE_LIMITS.titleChars),
    body: body.slice(0, BRIDGE_LIMITS.bodyChars),
    ...(holdId !== undefined ? { holdId } : {}),
  };
}

export function validateBadgeCount(value: unknown): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) throw new BridgeInputError('setBadgeCount: expected a whole number ≥ 0');
  return Math.min(value, BRIDGE_LIMITS.maxBadge);
}

export function validateExternalUrl(value: unknown): string {
  if (!isSafeExternalUrl(value)) throw new BridgeInputError('openExternal: only http(s) URLs without credentials may be opened');
  return value;
}

export interface BridgeDeps {
  appVersion(): string;
  controlPlane(): ControlPlaneInfo;
  notify(n: BridgeNotification): void;
  setBadgeCount(count: number): void;
  openExternal(url: string): Promise<void>;
}

/** Builds the handlers from the app's capabilities, with input validation in front of each. */
export function bridgeHandlers(deps: BridgeDeps): BridgeHandlers {
  return {
    appVersion: async () => deps.appVersion(),
    controlPlane: async () => deps.controlPlane(),
    notify: async (n) => deps.notify(validateNotification(n)),
    setBadgeCount: async (count) => deps.setBadgeCount(validateBadgeCount(count)),
    openExternal: async (url) => deps.openExternal(validateExternalUrl(url)),
  };
}

/** The part of Electron's ipcMain used here. */
export interface IpcMainLike {
  handle(channel: string, fn: (event: { senderFrame?: { url: string } | null }, ...args: unknown[]) => unknown): void;
  removeHandler(channel: string): void;
}

/**
 * Registers every bridge channel on ipcMain. Calls from frames outside `appOrigin()` are refused.
 * Returns a function that removes the handlers.
 */
export function registerBridge(ipcMain: IpcMainLike, handlers: BridgeHandlers, appOrigin: () => string): () => void {
  const methods = Object.keys(BRIDGE_CHANNELS) as BridgeMethod[];
  for (const method of methods) {
    const handler = handlers[method] as (...args: unknown[]) => unknown;
    ipcMain.handle(BRIDGE_CHANNELS[method], (event, ...args) => {
      const from = event.senderFrame?.url;
      if (!from || httpOrigin(from) !== appOrigin()) throw new BridgeInputError(`${method}: refused for a page outside the console (${from ?? 'unknown frame'})`);
      return handler(...args);
    });
  }
  return () => methods.forEach((m) => ipcMain.removeHandler(BRIDGE_CHANNELS[m]));
}
