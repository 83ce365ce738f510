import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BRIDGE_CHANNELS, type BridgeArgs, type BridgeResult, type ControlPlaneInfo, type CustodyBridge, desktopBridge } from '../../shared/bridge';
import { bridgeHandlers, type BridgeDeps, BridgeInputError, type IpcMainLike, registerBridge } from '../../main/bridge-handlers';
import { createBridge } from '../../main/preload-bridge';

// Type-level checks: `npm test` type-checks this file, so a contract change that breaks one of
// these lines fails the build.
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
type Expect<T extends true> = T;
export type ContractTypes = [
  Expect<Equal<keyof CustodyBridge, 'desktop' | 'appVersion' | 'controlPlane' | 'notify' | 'setBadgeCount' | 'openExternal'>>,
  Expect<Equal<BridgeArgs<'setBadgeCount'>, [count: number]>>,
  Expect<Equal<BridgeArgs<'openExternal'>, [url: string]>>,
  Expect<Equal<BridgeResult<'controlPlane'>, ControlPlaneInfo>>,
  Expect<Equal<BridgeResult<'appVersion'>, string>>,
  Expect<Equal<keyof typeof BRIDGE_CHANNELS, Exclude<keyof CustodyBridge, 'desktop'>>>,
];
function typeOnly(bridge: CustodyBridge) {
  // @ts-expect-error the bridge offers no raw IPC
  bridge.invoke('custody:notify');
  // @ts-expect-error no send/on either
  bridge.send('anything');
  // @ts-expect-error badge counts are numbers
  void bridge.setBadgeCount('3');
  // @ts-expect-error a notification needs a title and a body
  void bridge.notify({ title: 'x' });
}
void typeOnly;

/** An in-memory ipcMain: the preload's invoke goes straight to the registered handlers. */
function wire(deps: BridgeDeps, frameUrl = 'http://127.0.0.1:7420/') {
  const handlers = new Map<string, Parameters<IpcMainLike['handle']>[1]>();
  const ipcMain: IpcMainLike = { handle: (ch, fn) => void handlers.set(ch, fn), removeHandler: (ch) => void handlers.delete(ch) };
  const unregister = registerBridge(ipcMain, bridgeHandlers(deps), () => 'http://127.0.0.1:7420');
  const bridge = createBridge(async (channel, ...args) => {
    const h = handlers.get(channel);
    if (!h) throw new Error(`no handler for ${channel}`);
    return h({ senderFrame: { url: frameUrl } }, ...args);
  });
  return { bridge, handlers, unregister };
}

function recordingDeps() {
  const calls: unknown[][] = [];
  const deps: BridgeDeps = {
    appVersion: () => '1.2.3',
    controlPlane: () => ({ url: 'http://127.0.0.1:7420', token: 'tok', mode: 'local' }),
    notify: (n) => void calls.push(['notify', n]),
    setBadgeCount: (c) => void calls.push(['badge', c]),
    openExternal: async (u) => void calls.push(['open', u]),
  };
  return { deps, calls };
}

describe('preload bridge contract', () => {
  it('exposes exactly the domain methods, each on its own channel', async () => {
    const { deps, calls } = recordingDeps();
    const { bridge, handlers } = wire(deps);
    assert.deepEqual(Object.keys(bridge).sort(), ['appVersion', 'controlPlane', 'desktop', 'notify', 'openExternal', 'setBadgeCount']);
    assert.ok(Object.isFrozen(bridge));
    assert.deepEqual([...handlers.keys()].sort(), Object.values(BRIDGE_CHANNELS).sort());
    assert.equal(await bridge.appVersion(), '1.2.3');
    assert.deepEqual(await bridge.controlPlane(), { url: 'http://127.0.0.1:7420', token: 'tok', mode: 'local' });
    await bridge.notify({ title: 'Export ready', body: 'evidence.zip', holdId: 'h_1' });
    await bridge.setBadgeCount(3);
    await bridge.openExternal('https://example.com/docs');
    assert.deepEqual(calls, [['notify', { title: 'Export ready', body: 'evidence.zip', holdId: 'h_1' }], ['badge', 3], ['open', 'https://example.com/docs']]);
    assert.equal(desktopBridge({ custody: bridge }), bridge);
    assert.equal(desktopBridge({}), undefined);
  });

  it('validates what the renderer sends', async () => {
    const { deps, calls } = recordingDeps();
    const { bridge } = wire(deps);
    await assert.rejects(bridge.openExternal('file:///etc/passwd'), BridgeInputError);
    await assert.rejects(bridge.openExternal('javascript:alert(1)'), BridgeInputError);
    await assert.rejects(bridge.setBadgeCount(-1), BridgeInputError);
    await assert.rejects(bridge.setBadgeCount(1.5), BridgeInputError);
    await assert.rejects(bridge.notify({ title: '', body: 'x' }), BridgeInputError);
    await assert.rejects(bridge.notify({ title: 't', body: 'b', holdId: '../../etc' }), BridgeInputError);
    await bridge.notify({ title: 'T'.repeat(1000), body: 'B'.repeat(5000) });
    await bridge.setBadgeCount(1_000_000);
    assert.deepEqual(calls, [['notify', { title: 'T'.repeat(200), body: 'B'.repeat(1000) }], ['badge', 9999]]);
  });

  it('refuses calls from pages outside the console origin', async () => {
    const { deps, calls } = recordingDeps();
    const { bridge, unregister, handlers } = wire(deps, 'https://evil.example/');
    await assert.rejects(bridge.appVersion(), /outside the console/);
    await assert.rejects(bridge.openExternal('https://example.com'), /outside the console/);
    assert.deepEqual(calls, []);
    unregister();
    assert.equal(handlers.size, 0);
  });
});
