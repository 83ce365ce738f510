/**
 * How to start one of the gateway's worker threads, whichever way the gateway runs:
 *
 * - from the TypeScript sources under tsx (`custody`, the tests): a small ESM loader that
 *   registers tsx in the worker and imports `<name>.ts` beside the caller;
 * - bundled (the desktop app's dist/proxy/entry.mjs): the worker's own bundle, `<name>.mjs`,
 *   built beside it by scripts/build.mjs.
 *
 * Returns undefined when neither can be found; callers then do the work on their own thread.
 */
import { existsSync, readlinkSync } from 'node:fs';
import { setPriority } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { WorkerOptions } from 'node:worker_threads';

export interface WorkerSource {
  /** The first argument to `new Worker`. */
  entry: string | URL;
  /** Options `new Worker` needs for it (eval for the tsx loader). */
  options: WorkerOptions;
}

/** `name` without extension, relative to `callerUrl` (the caller's `import.meta.url`). */
export function workerSource(callerUrl: string, name: string): WorkerSource | undefined {
  if (callerUrl.endsWith('.ts')) {
    let tsxApi: string;
    try {
      tsxApi = import.meta.resolve('tsx/esm/api');
    } catch {
      return undefined;
    }
    const entry = new URL(`${name}.ts`, callerUrl).href;
    return {
      entry: `import(${JSON.stringify(tsxApi)}).then(({ register }) => { register(); return import(${JSON.stringify(entry)}); });`,
      options: { eval: true },
    };
  }
  const bundled = new URL(`${name}.mjs`, callerUrl);
  return existsSync(fileURLToPath(bundled)) ? { entry: bundled, options: {} } : undefined;
}

/**
 * Lowers the calling thread's scheduling priority, for worker threads doing background work (the
 * SIEM sinks, the archive): when the cores are busy, the kernel then runs the proxies' threads
 * first, and the background work catches up when they are idle. On Linux a thread's nice value is
 * its own (setpriority on the thread id); elsewhere, or if it is refused, the thread keeps its
 * priority.
 */
export function lowerThreadPriority(nice: number): void {
  try {
    const tid = Number(readlinkSync('/proc/thread-self').split('/').pop());
    if (Number.isInteger(tid) && tid > 0) setPriority(tid, nice);
  } catch {
    // not Linux, or not allowed: the thread runs at the process's priority
  }
}
