/**
 * Worker-thread entry: the gateway's SIEM sinks (sinks.ts), off its event loop. Opens the store
 * read-only, runs one `SinkRunner` per configured sink, and tells the gateway's thread what it needs
 * to know: each runner's snapshot after a round that changed it, the cursors to make durable (the
 * gateway writes them through its commit thread), and log lines.
 */
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import type { OcsfContext } from './ocsf';
import { lowerThreadPriority } from '../worker-source';
import { SinkRunner, type SinkSnapshot, type SinkWorkerData, type SinkWorkerMessage } from './sinks';

// The lowest priority: evidence waits for idle cores rather than take them from the proxies.
lowerThreadPriority(19);
const data = workerData as SinkWorkerData;
const post = (m: SinkWorkerMessage) => parentPort!.postMessage(m);
const db = new Database(data.path, { readonly: true, fileMustExist: true });
const ctx: OcsfContext = { connectionKinds: new Map(data.kinds), actorNames: new Map(), product: { name: 'Custody', version: data.version }, origin: data.origin };
const log = { info: (message: string) => post({ type: 'log', level: 'info', message }), error: (message: string) => post({ type: 'log', level: 'error', message }) };

const last = new Map<string, string>();
const runners: SinkRunner[] = [];
/** Sends the runners' snapshots when one of them changed (a delivery, a failure, a recovery). */
function report(): void {
  const snaps: SinkSnapshot[] = runners.map((r) => r.snapshot());
  if (!snaps.some((s) => JSON.stringify(s) !== last.get(s.name))) return;
  for (const s of snaps) last.set(s.name, JSON.stringify(s));
  post({ type: 'status', sinks: snaps });
}

const resume = new Map((data.resume ?? []).map(([name, seq, deliveredAt]) => [name, { seq, deliveredAt }]));
for (const sink of data.sinks) {
  runners.push(new SinkRunner({ db }, sink, ctx, log, { persist: (name, seq, deliveredAt) => post({ type: 'cursor', name, seq, deliveredAt }), onTick: report, resumeAt: resume.get(sink.name) }));
}
report();
for (const r of runners) r.start();

// The port keeps this thread alive between rounds (the runners' timers do not hold it); the
// gateway's thread ends it with terminate(), keeping the last cursor it was told of.
parentPort!.on('message', () => {});
