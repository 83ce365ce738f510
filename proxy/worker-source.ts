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
import { existsSync } from 'node:fs';
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
