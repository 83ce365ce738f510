/**
 * Signed checkpoints of the audit log: the RFC 6962 root over every event hash so far, signed as a
 * C2SP tlog checkpoint, kept in the store's `checkpoints` table. Written on a timer (also when
 * nothing happened, so a quiet hour is provable) and at every export.
 *
 * The writer keeps a compact range of the tree in memory and catches up from the store before each
 * checkpoint, checking as it reads that the chain links and that it agrees with the last checkpoint
 * it finds; a log that fails either check is not signed (a log must never sign two inconsistent
 * checkpoints).
 *
 * Signing is awaited (audit.signer runs a program; external-signer.ts). A checkpoint whose
 * signature fails is not written at all — there is no unsigned checkpoint — and the timer tries
 * again with backoff (1 s doubling, up to the interval), while the failure shows in the log and in
 * health; traffic does not wait for it.
 */
import type { Config } from '../../shared/config';
import { parseDuration } from '../../shared/config';
import type { KeyCreatedPayload } from '../../shared/events';
import type { Logger } from '../log';
import { plainSecrets, type SecretWrapper } from '../secret-wrapper';
import { CheckpointSigner, defaultOrigin, KEY_NAME_META, keyFingerprint, pinnedSignerKey, type PublicKeyInfo } from './checkpoint-signer';
import { SignerError } from './external-signer';
import { MerkleAccumulator } from './merkle';
import { GENESIS_HASH, storedPayloadText, type AuditStore } from './store';

const MIN_RETRY_MS = 1000;

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

  /**
   * Signs and stores a checkpoint of everything appended by the time of the call (the tree head is
   * taken at once; only the signature is awaited). One at a time, in call order: a write waits for
   * the one before it, so a slow signer holds up the next checkpoint, not the log. Rejects, writing
   * nothing, when the log is inconsistent (CheckpointRefusedError) or the signer fails (SignerError).
   */
  write(time = Date.now()): Promise<Checkpoint> {
    let head: { size: number; root: Buffer };
    try {
      head = this.head();
    } catch (err) {
      return Promise.reject(err as Error);
    }
    const next = this.writing.catch(() => undefined).then(() => this.signAndStore(head.size, head.root, time));
    this.writing = next;
    return next;
  }

  private writing: Promise<unknown> = Promise.resolve();

  private async signAndStore(size: number, root: Buffer, time: number): Promise<Checkpoint> {
    const note = await this.signer.signCheckpoint({ origin: this.signer.name, treeSize: size, rootHash: root, time, key: keyFingerprint(this.signer.publicKey) });
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
   * Writes a checkpoint now and then every `intervalMs` (the timers do not keep the process alive).
   * Returns the function that stops it. Failures are logged, never thrown from the timer; one the
   * signer caused is tried again sooner (1 s doubling, up to the interval). `onWritten` hands each
   * checkpoint on (to the witnesses); it must not throw or block.
   */
  startTimer(intervalMs: number, log?: Logger, onWritten?: (cp: Checkpoint) => void): () => void {
    let stopped = false;
    let running = false;
    let failures = 0;
    let retry: NodeJS.Timeout | undefined;
    const tick = async () => {
      if (stopped || running) return;
      running = true;
      clearTimeout(retry);
      try {
        const cp = await this.write();
        if (failures) log?.info(`audit: the checkpoint signer signs again (checkpoint of ${cp.treeSize} events written after ${failures} failed attempts)`);
        failures = 0;
        onWritten?.(cp);
      } catch (err) {
        if (!(err instanceof SignerError)) {
          log?.error(`audit: checkpoint not written: ${(err as Error).message}`);
          return;
        }
        failures++;
        const delay = Math.min(MIN_RETRY_MS * 2 ** (failures - 1), intervalMs);
        if (failures === 1 || failures % 10 === 0) log?.error(`audit: checkpoint not written, the signer failed (attempt ${failures}, next in ${Math.round(delay / 1000)} s): ${err.message}`);
        if (!stopped) {
          retry = setTimeout(() => void tick(), delay);
          retry.unref();
        }
      } finally {
        running = false;
      }
    };
    void tick();
    const timer = setInterval(() => void tick(), intervalMs);
    timer.unref();
    return () => {
      stopped = true;
      clearInterval(timer);
      clearTimeout(retry);
    };
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
  const external = config.audit.signer;
  const name = established ?? config.audit.origin ?? (external && pinnedSignerKey(external).name) ?? defaultOrigin();
  let signer: CheckpointSigner;
  let created: boolean;
  let reason: string;
  if (external) {
    // A key held elsewhere is announced when it is not the one the log announced last: the first
    // start with audit.signer, or a change of its key (a rotation `custody verify` lists).
    signer = CheckpointSigner.external(dataDir, name, external);
    const announced = lastAnnouncedKey(store);
    created = announced !== signer.info().fingerprint;
    reason = announced ? 'key held by audit.signer replaces the key announced before' : 'key held by audit.signer';
  } else {
    ({ signer, created } = CheckpointSigner.loadOrCreate(dataDir, name, secrets));
    reason = 'first start';
  }
  if (created || !established) {
    store.setMeta(KEY_NAME_META, name);
    store.append({ kind: 'key.created', actor, payload: { purpose: 'checkpoint-signing', ...signer.info(), reason: created ? reason : 'key name recorded' } satisfies KeyCreatedPayload });
    store.setMeta(KEY_FINGERPRINT_META, signer.info().fingerprint);
  }
  return { signer, checkpoints: new CheckpointLog(store, signer), keyCreated: created };
}

/** meta key caching the fingerprint of the checkpoint key the log announced last. */
const KEY_FINGERPRINT_META = 'checkpoint.keyFingerprint';

/** The fingerprint of the checkpoint key the log announced last (its newest `key.created` with that purpose). */
function lastAnnouncedKey(store: AuditStore): string | undefined {
  const cached = store.meta(KEY_FINGERPRINT_META);
  if (cached) return cached;
  const rows = store.db.prepare("SELECT encoding, payload FROM events WHERE kind = 'key.created' ORDER BY seq DESC").iterate() as IterableIterator<{ encoding: string; payload: Buffer | string | null }>;
  for (const r of rows) {
    const p = JSON.parse(storedPayloadText(r.encoding, r.payload)) as { purpose?: unknown; fingerprint?: unknown } | null;
    if (p?.purpose === 'checkpoint-signing' && typeof p.fingerprint === 'string') return p.fingerprint;
  }
  return undefined;
}

export function checkpointIntervalMs(config: Pick<Config, 'audit'>): number {
  return parseDuration(config.audit.checkpointInterval);
}

export type { PublicKeyInfo };
