/**
 * RFC 6962 consistency proofs from the store, for the witnesses. Reading every event hash up to
 * the checkpoint and building the tree takes seconds at a million events (the tree alone took
 * 1.3 s on the development machine), so the gateway asks a worker thread for it (proof-worker.ts)
 * and only falls back to its own thread where workers cannot load.
 */
import type Database from 'better-sqlite3';
import { workerSource } from '../worker-source';
import { MerkleTree } from './merkle';
import { runWorkerOnce } from './verify-runner';

export function consistencyProofFromStore(db: Database.Database, first: number, second: number): Buffer[] {
  const hashes = Buffer.allocUnsafe(second * 32);
  let i = 0;
  for (const [h] of db.prepare('SELECT hash FROM events WHERE seq <= ? ORDER BY seq').raw().iterate(second) as IterableIterator<[string]>) hashes.write(h, 32 * i++, 32, 'hex');
  if (i !== second) throw new Error(`the log holds ${i} of the ${second} events the checkpoint covers`);
  return MerkleTree.fromEventHashes(hashes).consistencyProof(first, second);
}

export function consistencyProofOffThread(db: Database.Database, first: number, second: number): Promise<Buffer[]> {
  const src = workerSource(import.meta.url, './proof-worker');
  if (!src || db.memory) return Promise.resolve(consistencyProofFromStore(db, first, second));
  return runWorkerOnce(src, { file: db.name, first, second }, 'proof', (m) => (m['proof'] as string[]).map((p) => Buffer.from(p, 'base64')));
}
