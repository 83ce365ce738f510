/**
 * The audit store's commit thread (see commit-thread.ts). Holds its own SQLite connection to the
 * store's file and appends what the gateway's thread sends, in the order sent. Appends waiting
 * in the port when one arrives are committed with it in one transaction (group commit across
 * everything the other thread queued meanwhile). After each reply it bumps a shared counter, so
 * a thread blocked on a synchronous call wakes.
 */
import { type MessagePort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { ChainWriter } from './chain-writer';
import type { CommitReply, CommitRequest } from './commit-thread';

const { path, port, signal } = workerData as { path: string; port: MessagePort; signal: Int32Array };

let writer: ChainWriter;
let db: Database.Database;
try {
  db = new Database(path, { timeout: 2000 });
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  writer = new ChainWriter(db);
} catch (err) {
  reply({ id: 0, ok: false, message: messageOf(err) });
  process.exit(1);
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function reply(r: CommitReply): void {
  port.postMessage(r);
  Atomics.add(signal, 0, 1);
  Atomics.notify(signal, 0);
}

/** Commits a run of appends in one transaction and answers each. */
function commit(run: Extract<CommitRequest, { op: 'append' }>[]): void {
  if (run.some((r) => r.reload)) writer.reloadHead();
  const all = run.length === 1 ? run[0]!.events : run.flatMap((r) => r.events);
  let appended;
  try {
    appended = writer.append(all);
  } catch (err) {
    const code = (err as { code?: string }).code;
    for (const r of run) reply({ id: r.id, ok: false, message: messageOf(err), code });
    return;
  }
  let i = 0;
  for (const r of run) {
    reply({ id: r.id, ok: true, appended: appended.slice(i, i + r.events.length) });
    i += r.events.length;
  }
}

function handle(req: CommitRequest): void {
  try {
    switch (req.op) {
      case 'flushSessions':
        writer.flushSessions();
        break;
      case 'pragma':
        db.pragma(req.sql);
        break;
      case 'close':
        writer.close();
        db.close();
        reply({ id: req.id, ok: true });
        port.close();
        return;
      default:
        break;
    }
    reply({ id: req.id, ok: true });
  } catch (err) {
    reply({ id: req.id, ok: false, message: messageOf(err) });
  }
}

port.on('message', (first: CommitRequest) => {
  // Everything already queued behind this message is handled now; consecutive appends share one commit.
  const queued: CommitRequest[] = [first];
  for (let m = receiveMessageOnPort(port); m; m = receiveMessageOnPort(port)) queued.push(m.message as CommitRequest);
  let run: Extract<CommitRequest, { op: 'append' }>[] = [];
  for (const req of queued) {
    if (req.op === 'append') {
      run.push(req);
      continue;
    }
    if (run.length) commit(run);
    run = [];
    handle(req);
  }
  if (run.length) commit(run);
});
