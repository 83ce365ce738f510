/** Worker-thread entry for verification, so a large store or bundle is checked off the gateway's event loop. */
import { parentPort, workerData } from 'node:worker_threads';
import { verifyBundle } from './verify/bundle';
import type { SinceAnchor } from './verify/checks';
import { verifyStore } from './verify/store';

const data = workerData as { dataDir?: string; bundle?: string; since?: SinceAnchor; expectedKey?: string };
// Buffers arrive as plain Uint8Arrays after the structured clone.
if (data.since) {
  data.since.body.rootHash = Buffer.from(data.since.body.rootHash);
  if (data.since.hashes) data.since.hashes = Buffer.from(data.since.hashes);
}
try {
  const opts = {
    since: data.since,
    expectedKey: data.expectedKey,
    onProgress: (done: number, total: number) => parentPort!.postMessage({ type: 'progress', done, total }),
  };
  const report = data.bundle !== undefined ? verifyBundle(data.bundle, opts) : verifyStore(data.dataDir!, opts);
  parentPort!.postMessage({ type: 'report', report });
} catch (err) {
  parentPort!.postMessage({ type: 'error', message: err instanceof Error ? err.message : String(err) });
}
