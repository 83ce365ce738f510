/**
 * Builds the `window.custody` object from an invoke function. The preload passes
 * `ipcRenderer.invoke`; each method calls its own fixed channel, so the page never sees a way to
 * send on an arbitrary channel.
 */
import { BRIDGE_CHANNELS, type BridgeChannel, type CustodyBridge } from '../shared/bridge';

export type Invoke = (channel: BridgeChannel, ...args: unknown[]) => Promise<unknown>;

export function createBridge(invoke: Invoke): CustodyBridge {
  const bridge: CustodyBridge = {
    desktop: true,
    appVersion: () => invoke(BRIDGE_CHANNELS.appVersion) as Promise<string>,
    controlPlane: () => invoke(BRIDGE_CHANNELS.controlPlane) as ReturnType<CustodyBridge['controlPlane']>,
    notify: (n) => invoke(BRIDGE_CHANNELS.notify, { title: n.title, body: n.body, holdId: n.holdId }) as Promise<void>,
    setBadgeCount: (count) => invoke(BRIDGE_CHANNELS.setBadgeCount, count) as Promise<void>,
    openExternal: (url) => invoke(BRIDGE_CHANNELS.openExternal, url) as Promise<void>,
  };
  return Object.freeze(bridge);
}
