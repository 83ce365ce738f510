/**
 * Runs a store verification in a worker thread when the worker entry can be loaded (the TypeScript
 * sources under tsx, as `custody` and the tests run), else inline. Verifying a million events takes
 * seconds; a gateway should keep proxying meanwhile.
 */
import { Worker } from 'node:worker_threads';
import { verifyStore, type VerifyOptions, type VerifyReport } from './verify';

function workerSource(): { code: string } | undefined {
  const self = import.meta.url;
  if (!self.endsWith('.ts')) return undefined; // bundled build: no separate worker file to load
  let tsxApi: string;
  try {
    tsxApi = import.meta.resolve('tsx/esm/api');
  } catch {
    return undefined;
  }
  const entry = new URL('./verify-worker.ts', self).href;
  return { code: `import(${JSON.stringify(tsxApi)}).then(({ register }) => { register(); return import(${JSON.stringify(entry)}); });` };
}

export async function runVerification(dataDir: string, opts: VerifyOptions = {}): Promise<VerifyReport> {
  const src = workerSource();
  if (!src) return verifyStore(dataDir, opts);
  return new Promise<VerifyReport>((resolve, reject) => {
    const worker = new Worker(src.code, { eval: true, workerData: { dataDir, since: opts.since, expectedKey: opts.expectedKey } });
    let settled = false;
    const settle = (fn: () => void) => {
      if (settled) return;
      settled = true;
      fn();
      void worker.terminate();
    };
    worker.on('message', (m: { type: string; done?: number; total?: number; report?: VerifyReport; message?: string }) => {
      if (m.type === 'progress') opts.onProgress?.(m.done!, m.total!);
      else if (m.type === 'report') settle(() => resolve(m.report!));
      else if (m.type === 'error') settle(() => reject(new Error(m.message)));
    });
    worker.on('error', (err) => settle(() => reject(err)));
    worker.on('exit', (code) => settle(() => reject(new Error(`verification worker exited with code ${code}`))));
  });
}
