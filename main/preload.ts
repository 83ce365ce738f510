/**
 * The console window's preload (sandboxed: bundled into dist/main/preload.cjs, it may require only
 * `electron`). Exposes the typed bridge of shared/bridge.ts as `window.custody` and nothing else.
 */
import { contextBridge, ipcRenderer } from 'electron';
import { BRIDGE_GLOBAL } from '../shared/bridge';
import { createBridge } from './preload-bridge';

contextBridge.exposeInMainWorld(BRIDGE_GLOBAL, createBridge((channel, ...args) => ipcRenderer.invoke(channel, ...args)));
