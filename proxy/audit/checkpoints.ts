/**
 * Signed checkpoints of the audit log: the RFC 6962 root over every event hash so far, signed as a
 * C2SP tlog checkpoint, kept in the store's `checkpoints` table. Written on a timer (also when
 * nothing happened, so a quiet hour is provable) and at every export.
 *
 * The writer keeps a compact range of the tree in memory and catches up from the store before each
 * checkpoint, checking as it reads that the chain links and that it agrees with the last checkpoint
 * it finds; a log that fails either check is not signed (a log must never sign two inconsistent
 * checkpoints).
 */
import type { Config } from '../../shared/config';
import { parseDuration } from '../../shared/config';
import type { KeyCreatedPayload } from '../../shared/events';
import type { Logger } from '../log';
import { plainSecrets, type SecretWrapper } from '../secret-wrapper';
import { CheckpointSigner, defaultOrigin, KEY_NAME_META, keyFingerprint, type PublicKeyInfo } from './checkpoint-signer';
import { MerkleAccumulator } from './merkle';
import { GENESIS_HASH, type AuditStore } from './store';

export interface Checkpoint {
  treeSize: number;
  /** hex */
  rootHash: string;
  time: number;
  /** The signed note, as written. */
  note: string;
}

export class CheckpointRefusedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CheckpointRefusedError';
  }
}

interface CheckpointRow {
  tree_size: number;
  root_hash: string;
  time: number;
  note: string;
}

const toCheckpoint = (r: CheckpointRow): Checkpoint => ({ treeSize: r.tree_size, rootHash: r.root_hash, time: r.time, note: r.note });

/** Reads every stored checkpoint, oldest first. */
export function listCheckpoints(store: AuditStore): Checkpoint[] {
  return (store.db.prepare('SELECT * FROM checkpoints ORDER BY tree_size, time').all() as CheckpointRow[]).map(toCheckpoint);
}

export function latestCheckpoint(store: AuditStore): Checkpoint | undefined {
  const r = store.db.prepare('SELECT * FROM checkpoints ORDER BY time DESC, tree_size DESC LIMIT 1').get() as CheckpointRow | undefined;
  return r && toCheckpoint(r);
}

export class CheckpointLog {
  private acc = new MerkleAccumulator();
  private lastHash = GENESIS_HASH;
  private checkedAgainst = false;

  constructor(
    readonly store: AuditStore,
    readonly signer: CheckpointSigner,
  ) {}

  /** The current tree head (size and root), after catching up with the store. */
  head(): { size: number; root: Buffer } {
    this.catchUp();
    return { size: this.acc.size, root: this.acc.root() };
  }

  /** Signs and stores a checkpoint of everything appended so far. */
  write(time = Date.now()): Checkpoint {
    const { size, root } = this.head();
    const note = this.signer.signCheckpoint({ origin: this.signer.name, treeSize: size, rootHash: root, time, key: keyFingerprint(this.signer.publicKey) });
    const cp: Checkpoint = { treeSize: size, rootHash: root.toString('hex'), time, note };
    this.store.db.prepare('INSERT OR IGNORE INTO checkpoints (tree_size, root_hash, time, note) VALUES (?, ?, ?, ?)').run(size, cp.rootHash, time, note);
    return cp;
  }

  latest(): Checkpoint | undefined {
    return latestCheckpoint(this.store);
  }

  list(): Checkpoint[] {
    return listCheckpoints(this.store);
  }

  /**
   * Writes a checkpoint now and then every `intervalMs` (the timer does not keep the process
   * alive). Returns the function that stops it. Failures are logged, never thrown from the timer.
   * `onWritten` hands each checkpoint on (to the witnesses); it must not throw or block.
   */
  startTimer(intervalMs: number, log?: Logger, onWritten?: (cp: Checkpoint) => void): () => void {
    const tick = () => {
      try {
        onWritten?.(this.write());
      } catch (err) {
        log?.error(`audit: checkpoint not written: ${(err as Error).message}`);
      }
    };
    tick();
    const timer = setInterval(tick, intervalMs);
    timer.unref();
    return () => clearInterval(timer);
  }

  private catchUp(): void {
    // max(seq) from the file, not the store's cached head: another process may have appended.
    const target = (this.store.db.prepare('SELECT max(seq) AS n FROM events').get() as { n: number | null }).n ?? 0;
    if (this.acc.size >= target) return;
    const latest = this.checkedAgainst ? undefined : this.store.db.prepare('SELECT tree_size, root_hash FROM checkpoints ORDER BY tree_size DESC LIMIT 1').get() as { tree_size: number; root_hash: string } | undefined;
    const rows = this.store.db.prepare('SELECT seq, prev_hash, hash FROM events WHERE seq > ? ORDER BY seq').raw().iterate(this.acc.size) as IterableIterator<[number, string, string]>;
    const acc = this.acc.clone();
    let last = this.lastHash;
    for (const [seq, prev, hash] of rows) {
      if (seq !== acc.size + 1) throw new CheckpointRefusedError(`the log skips from seq ${acc.size} to ${seq}; run custody verify`);
      if (prev !== last) throw new CheckpointRefusedError(`seq ${seq} does not chain to seq ${seq - 1}; run custody verify`);
      acc.pushEventHashHex(hash);
      last = hash;
      if (latest && acc.size === latest.tree_size && acc.root().toString('hex') !== latest.root_hash) {
        throw new CheckpointRefusedError(`the log no longer matches the checkpoint of ${latest.tree_size} events; run custody verify`);
      }
    }
    if (latest && latest.tree_size > acc.size) throw new CheckpointRefusedError(`the log has ${acc.size} events but a checkpoint covers ${latest.tree_size}; run custody verify`);
    this.checkedAgainst = true;
    this.acc = acc;
    this.lastHash = last;
  }
}

/** The audit trail's key and checkpoint writer for one store. */
export interface AuditTrail {
  signer: CheckpointSigner;
  checkpoints: CheckpointLog;
  /** True when this call created the signing key. */
  keyCreated: boolean;
}

/**
 * Loads (or, on first use, creates and announces) the data dir's checkpoint signing key. The
 * announcement is a chained `key.created` event with `purpose: "checkpoint-signing"`, so a later
 * swap of the key file shows up in verification as a replaced key.
 */
export function openAuditTrail(store: AuditStore, dataDir: string, config: Pick<Config, 'audit'>, actor = 'system', secrets: SecretWrapper = plainSecrets): AuditTrail {
  const established = store.meta(KEY_NAME_META);
  const name = established ?? config.audit.origin ?? defaultOrigin();
  const { signer, created } = CheckpointSigner.loadOrCreate(dataDir, name, secrets);
  if (created || !established) {
    store.setMeta(KEY_NAME_META, name);
    store.append({ kind: 'key.created', actor, payload: { purpose: 'checkpoint-signing', ...signer.info(), reason: created ? 'first start' : 'key name recorded' } satisfies KeyCreatedPayload });
  }
  return { signer, checkpoints: new CheckpointLog(store, signer), keyCreated: created };
}

export function checkpointIntervalMs(config: Pick<Config, 'audit'>): number {
  return parseDuration(config.audit.checkpointInterval);
}

export type { PublicKeyInfo };
