/**
 * The hold worker's messages (hold-sync-worker.ts), and how it is started: from here, so the
 * worker's file sits beside the caller both under tsx and in the bundle.
 */
import { Worker } from 'node:worker_threads';
import { workerSource } from '../../worker-source';
import type { GrantRowWrite, StoredGrant } from './grant-rows';
import type { HoldChanges, HoldRowWrite, OrphanedHold, VoteRowWrite } from './hold-rows';
import type { SigningKeySpec } from '../checkpoint-signer';
import type { StoreConnection } from './schema';

export type HoldWorkerCommand =
  | { type: 'hold'; req: number; row: HoldRowWrite }
  | { type: 'vote'; req: number; row: VoteRowWrite }
  /** A grant an approval of a hold of this gateway gave, for the group (grant-rows.ts). */
  | { type: 'grant'; req: number; row: GrantRowWrite }
  | { type: 'stop'; ms: number };
export type HoldWorkerMessage =
  | { type: 'changes'; changes: HoldChanges; snapshot: boolean }
  | { type: 'written'; req: number; written: boolean }
  | { type: 'orphans'; holds: OrphanedHold[] }
  /** `NOTIFY custody_config` heard; or the listening connection (re)connected or was lost (`listening`). */
  | { type: 'config'; listening?: boolean }
  /** `NOTIFY custody_events` from another gateway (it shipped session events), or the listening connection (re)connected. */
  | { type: 'shipped' }
  | { type: 'status'; connected: boolean; error?: string }
  /** Rows written under the name of gateway `gateway` are ignored: it is not proven a member (member-trust.ts). Said once per gateway and reason. */
  | { type: 'refused'; gateway: string; reason: string }
  /** The vote row of `gateway` at `seq` on hold `hold` is ignored: unsigned, or not signed by that gateway's proven key. Said once per row. */
  | { type: 'vote-refused'; hold: string; gateway: string; seq: number; reason: string }
  /** Grants of other gateways, each signed by the key proven for the gateway that held the request, not yet ended. */
  | { type: 'grants'; grants: StoredGrant[] }
  /** The grant row `id` under the name of gateway `gateway` is ignored: unsigned, or not signed by that gateway's proven key. Said once per row. */
  | { type: 'grant-refused'; id: string; gateway: string; reason: string }
  /** Gateway `gateway` was removed from the group (proven, member-trust.ts): its grants end here too. */
  | { type: 'member-removed'; gateway: string }
  | { type: 'stopped' };

/**
 * Starts the hold worker of gateway `self` on the store `conn` reaches; `dbPath`: its SQLite file,
 * where its trust roots are (key-sync.ts, LocalTrust); `signingKey`: its checkpoint key, which signs
 * the vote rows it writes.
 */
export function startHoldSyncWorker(conn: StoreConnection, self: { id: string; publicKey: string }, dbPath: string, signingKey: SigningKeySpec): Worker {
  const src = workerSource(import.meta.url, './hold-sync-worker');
  if (!src) throw new Error('the shared store hold worker cannot be loaded from this build');
  return new Worker(src.entry, { ...src.options, workerData: { conn, gateway: self.id, publicKey: self.publicKey, dbPath, signingKey } });
}
