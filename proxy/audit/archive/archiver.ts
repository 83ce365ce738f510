/**
 * Seals the log into segments and ships them to object storage (audit.archive). Every `every`
 * (and at start), the events since the last segment are cut at a signed checkpoint, packed as a
 * segment (segment.ts), uploaded, then downloaded again and verified as an auditor would, before
 * the segment counts as archived. Only then may retention purge the payloads it holds.
 *
 * A segment is recorded in `archive_segments` when it is sealed, before the upload: a gateway that
 * stops mid-upload resumes the same range under the same object name, so the bucket never holds
 * two segments that overlap. Where the bucket has Object Lock and `retention.archiveFor` is set,
 * each segment is written with that retention date (mode `lockMode`); where it has not, the
 * archive says so in its status.
 *
 * Off the request path: the work runs on timers and on the archive's worker thread
 * (archive-thread.ts: building, uploading, reading back and verifying a segment), a failure is retried with
 * exponential backoff (1 s doubling to 5 min) and shown as failing in health and on the Audit
 * page, and traffic never waits for it.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { parseDuration, type AuditArchive, type Config } from '../../../shared/config';
import type { ArchiveStatus } from '../../../shared/evidence';
import type { Logger } from '../../log';
import type { AuditTrail, Checkpoint } from '../checkpoints';
import { formatCosignerKey } from '../cosignature';
import { emptyRoot } from '../merkle';
import { keyIdHex, type NoteVerifier } from '../signed-note';
import type { CosignatureRowData } from '../verify/checks';
import { GENESIS_HASH, type AuditStore } from '../store';
import { describeLocation, type LockMode, type ObjectLockSupport, S3ObjectStore, type S3Location } from './object-store';
import { segmentObjectName } from './layout';
import { ArchiveThread } from './archive-thread';
import { packSegment } from './segment';

const MIN_BACKOFF_MS = 1000;
const MAX_BACKOFF_MS = 5 * 60_000;
/** A backlog (an archive enabled on a large log) is sealed in segments of about this many events, at stored checkpoints. */
export const DEFAULT_SEGMENT_EVENTS = 100_000;

type CutRow = { tree_size: number; root_hash: string; time: number; note: string };

interface SegmentRow {
  idx: number;
  first_seq: number;
  last_seq: number;
  root_hash: string;
  last_hash: string;
  checkpoint: string;
  checkpoint_time: number;
  prev_root_hash: string;
  prev_last_hash: string;
  object_key: string;
  sealed_at: number;
  verified_at: number | null;
  bytes: number | null;
  retain_until: number | null;
}

export type { ArchiveStatus };

export interface ArchiverOptions {
  store: AuditStore;
  trail: AuditTrail;
  archive: AuditArchive;
  retention: Config['retention'];
  /** Where segments are staged while they are built and read back (a folder of the data dir). */
  workDir: string;
  location: S3Location;
  log?: Logger;
  /** A segment was verified in the bucket; payloads up to `archivedThrough()` may now be purged. */
  onArchived?: () => void;
  /** A checkpoint the archiver wrote to cut a segment (handed to the witnesses). */
  onCheckpoint?: (cp: Checkpoint) => void;
  segmentEvents?: number;
  /**
   * The configured witnesses (audit.witnesses[]). With any, a segment is cut at a checkpoint every
   * working one of them cosigned, and carries those cosignatures (`cosignatures.jsonl`).
   */
  witnesses?: ArchiveWitnesses;
}

/** What the archiver needs of the witness publisher (witnessing.ts). */
export interface ArchiveWitnesses {
  /** Each configured witness: its name in the config, its key, and the error of its last try (null: it cosigned). */
  list(): { name: string; verifier: NoteVerifier; error: string | null }[];
  /** Resolves once every witness has had a try at the newest checkpoint. */
  flush(): Promise<void>;
}

export class Archiver {
  readonly objects: S3ObjectStore;
  /** Where segments are built, uploaded, read back and verified (archive-thread.ts). */
  private readonly thread: ArchiveThread;
  private readonly everyMs: number;
  private readonly retainForMs: number | undefined;
  private running?: Promise<void>;
  private again = false;
  private stopped = false;
  private timer?: NodeJS.Timeout;
  private failures = 0;
  private lastError: string | null = null;
  private nextRetryAt: number | null = null;
  private lock: ObjectLockSupport = { state: 'unknown', detail: 'not asked yet' };
  private readonly abort = new AbortController();

  constructor(private readonly opts: ArchiverOptions) {
    this.objects = new S3ObjectStore(opts.location);
    this.thread = new ArchiveThread(opts.store.db, this.objects);
    this.everyMs = parseDuration(opts.archive.every);
    this.retainForMs = opts.retention.archiveFor ? parseDuration(opts.retention.archiveFor) : undefined;
  }

  /** Seals now, then every `every`. */
  start(): void {
    void this.run();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.abort.abort();
    this.thread.close();
    void this.objects.close();
  }

  /** Runs a cycle now (or waits for the one running, then runs again) and resolves when done; never throws. */
  async flush(): Promise<void> {
    await this.run();
  }

  /** The last seq in a segment that was read back from the bucket and verified (0: none). */
  archivedThrough(): number {
    return (this.opts.store.db.prepare('SELECT coalesce(max(last_seq), 0) AS n FROM archive_segments WHERE verified_at IS NOT NULL').get() as { n: number }).n;
  }

  status(): ArchiveStatus {
    const last = this.opts.store.db.prepare('SELECT * FROM archive_segments WHERE verified_at IS NOT NULL ORDER BY idx DESC LIMIT 1').get() as SegmentRow | undefined;
    const through = last?.last_seq ?? 0;
    return {
      location: describeLocation(this.opts.location),
      every: this.opts.archive.every,
      state: this.lastError ? 'failing' : last ? 'ok' : 'pending',
      lastSegment: last
        ? { index: last.idx, firstSeq: last.first_seq, lastSeq: last.last_seq, key: last.object_key, bytes: last.bytes ?? 0, sealedAt: last.sealed_at, verifiedAt: last.verified_at!, retainUntil: last.retain_until }
        : null,
      archivedThrough: through,
      behind: Math.max(0, this.opts.store.head().size - through),
      objectLock: { state: this.lock.state, mode: this.opts.archive.lockMode, retainFor: this.opts.retention.archiveFor ?? null, detail: this.lockDetail() },
      lastError: this.lastError,
      failures: this.failures,
      nextRetryAt: this.nextRetryAt,
    };
  }

  private lockDetail(): string | null {
    if (this.lock.state === 'enabled') return this.retainForMs === undefined ? 'the bucket has Object Lock, but retention.archiveFor is not set: segments get the bucket\'s default retention, if any' : null;
    return this.lock.detail;
  }

  private run(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = (async () => {
      clearTimeout(this.timer);
      this.nextRetryAt = null;
      let delay = this.everyMs;
      try {
        do {
          this.again = false;
          await this.cycle();
        } while (this.again && !this.stopped);
        if (this.lastError) this.opts.log?.info(`audit: archive ${this.objects.description} works again`);
        this.failures = 0;
        this.lastError = null;
      } catch (err) {
        if (this.stopped) return;
        this.failures++;
        this.lastError = (err as Error).message;
        delay = Math.min(MIN_BACKOFF_MS * 2 ** (this.failures - 1), MAX_BACKOFF_MS, this.everyMs);
        this.nextRetryAt = Date.now() + delay;
        if (this.failures === 1 || this.failures % 10 === 0) this.opts.log?.error(`audit: archive segment not stored (attempt ${this.failures}, next in ${Math.round(delay / 1000)} s): ${this.lastError}`);
      } finally {
        this.running = undefined;
      }
      if (!this.stopped) {
        this.timer = setTimeout(() => void this.run(), delay);
        this.timer.unref();
      }
    })();
    return this.running;
  }

  /**
   * Ships the pending segment, or seals and ships new ones, until the archive reaches what was
   * recorded when the cycle began: events recorded meanwhile wait for the next cycle, so steady
   * traffic does not turn one cycle into a stream of small segments.
   */
  private async cycle(): Promise<void> {
    const target = this.opts.trail.checkpoints.head().size;
    for (;;) {
      if (this.stopped) return;
      // Sealing is local: it is recorded even while the bucket is unreachable, so the range is fixed.
      const row = this.pending() ?? (this.sealedThrough() < target ? await this.seal() : undefined);
      if (!row) return;
      if (this.lock.state === 'unknown') this.lock = await this.objects.objectLock(this.abort.signal);
      await this.ship(row);
    }
  }

  private sealedThrough(): number {
    return (this.opts.store.db.prepare('SELECT coalesce(max(last_seq), 0) AS n FROM archive_segments').get() as { n: number }).n;
  }

  private pending(): SegmentRow | undefined {
    return this.opts.store.db.prepare('SELECT * FROM archive_segments WHERE verified_at IS NULL ORDER BY idx LIMIT 1').get() as SegmentRow | undefined;
  }

  /**
   * Records the next segment: from the event after the last segment to a signed checkpoint. The
   * checkpoint covers the head when the backlog fits one segment (written now if none does); a
   * larger backlog is cut at stored checkpoints of about `segmentEvents` events apart. With
   * witnesses, a checkpoint the working witnesses all cosigned (`witnessedCut`).
   */
  private async seal(): Promise<SegmentRow | undefined> {
    const { store, trail } = this.opts;
    const prev = store.db.prepare('SELECT * FROM archive_segments ORDER BY idx DESC LIMIT 1').get() as SegmentRow | undefined;
    const from = (prev?.last_seq ?? 0) + 1;
    const head = trail.checkpoints.head().size;
    if (head < from) return undefined;
    const limit = from + (this.opts.segmentEvents ?? DEFAULT_SEGMENT_EVENTS) - 1;
    const cp = this.opts.witnesses?.list().length ? await this.witnessedCut(from, limit, head) : await this.plainCut(from, limit, head);
    // The sealing may have waited for the witnesses: another cycle must not have sealed meanwhile.
    if (this.sealedThrough() !== from - 1) return undefined;
    const lastHash = (store.db.prepare('SELECT hash FROM events WHERE seq = ?').get(cp.tree_size) as { hash: string } | undefined)?.hash;
    if (!lastHash) throw new Error(`the log has no event ${cp.tree_size}, which a checkpoint covers; run custody verify`);
    const row: SegmentRow = {
      idx: (prev?.idx ?? 0) + 1,
      first_seq: from,
      last_seq: cp.tree_size,
      root_hash: cp.root_hash,
      last_hash: lastHash,
      checkpoint: cp.note,
      checkpoint_time: cp.time,
      prev_root_hash: prev?.root_hash ?? emptyRoot().toString('hex'),
      prev_last_hash: prev?.last_hash ?? GENESIS_HASH,
      object_key: this.objects.key(segmentObjectName(from, cp.tree_size)),
      sealed_at: Date.now(),
      verified_at: null,
      bytes: null,
      retain_until: null,
    };
    store.db
      .prepare(
        'INSERT INTO archive_segments (idx, first_seq, last_seq, root_hash, last_hash, checkpoint, checkpoint_time, prev_root_hash, prev_last_hash, object_key, sealed_at) VALUES (@idx, @first_seq, @last_seq, @root_hash, @last_hash, @checkpoint, @checkpoint_time, @prev_root_hash, @prev_last_hash, @object_key, @sealed_at)',
      )
      .run(row);
    return row;
  }

  /** The checkpoint at the head when the backlog fits a segment (written if there is none), else a stored one near `limit`. */
  private async plainCut(from: number, limit: number, head: number): Promise<CutRow> {
    const { store } = this.opts;
    let cp: CutRow | undefined;
    if (head <= limit) cp = this.checkpointAt(head);
    else {
      const within = store.db.prepare('SELECT max(tree_size) AS n FROM checkpoints WHERE tree_size >= ? AND tree_size <= ?').get(from, limit) as { n: number | null };
      const beyond = store.db.prepare('SELECT min(tree_size) AS n FROM checkpoints WHERE tree_size > ?').get(limit) as { n: number | null };
      const size = within.n ?? beyond.n;
      if (size !== null) cp = this.checkpointAt(size);
    }
    return cp ?? (await this.writeCheckpoint());
  }

  private checkpointAt(size: number): CutRow | undefined {
    return this.opts.store.db.prepare('SELECT tree_size, root_hash, time, note FROM checkpoints WHERE tree_size = ? ORDER BY time DESC LIMIT 1').get(size) as CutRow | undefined;
  }

  private async writeCheckpoint(): Promise<CutRow> {
    const written = await this.opts.trail.checkpoints.write();
    this.opts.onCheckpoint?.(written);
    return { tree_size: written.treeSize, root_hash: written.rootHash, time: written.time, note: written.note };
  }

  /**
   * The cut of a witnessed archive: a stored checkpoint of `from` events or more that every
   * configured witness cosigned — the largest up to `limit`, else the smallest beyond. Witnesses
   * cosign only the newest checkpoint they are sent (and never one older than they hold), so when
   * none reaches that far the checkpoint at the head is written if need be, sent, and awaited.
   * A witness that could not cosign it (unreachable, or refusing) does not hold the archive back:
   * the cut is then a checkpoint the others all cosigned, the segment lacks that witness's
   * cosignature, and the log says so; with no witness working, the cut is the plain one.
   */
  private async witnessedCut(from: number, limit: number, head: number): Promise<CutRow> {
    const witnesses = this.opts.witnesses!;
    const find = (required: NoteVerifier[]): CutRow | undefined => {
      const keys = required.map((v) => `${v.name} ${keyIdHex(v.keyId)}`);
      const rows = this.opts.store.db
        .prepare(
          `SELECT c.tree_size, c.root_hash, c.time, c.note, group_concat(s.witness || ' ' || s.key_id, char(10)) AS cosigners
             FROM checkpoints c JOIN checkpoint_cosignatures s ON s.tree_size = c.tree_size AND s.root_hash = c.root_hash
            WHERE c.tree_size >= ? GROUP BY c.tree_size, c.root_hash ORDER BY c.tree_size`,
        )
        .all(from) as (CutRow & { cosigners: string })[];
      const cosigned = rows.filter((r) => keys.every((k) => r.cosigners.split('\n').includes(k)));
      return cosigned.filter((r) => r.tree_size <= limit).pop() ?? cosigned[0];
    };
    const found = find(witnesses.list().map((w) => w.verifier));
    if (found && found.tree_size >= Math.min(head, limit)) return found;
    if (!this.checkpointAt(head)) await this.writeCheckpoint();
    await witnesses.flush();
    const list = witnesses.list();
    const working = list.filter((w) => !w.error);
    const cut = working.length ? find(working.map((w) => w.verifier)) : undefined;
    const missing = list.filter((w) => w.error || !cut);
    if (!cut && working.length) throw new Error(`witnesses ${working.map((w) => w.name).join(', ')} answered, but no checkpoint after seq ${from - 1} carries their cosignatures`);
    const chosen = cut ?? (await this.plainCut(from, limit, head));
    if (missing.length) {
      this.opts.log?.error(
        `audit: archive segment of seq ${from}–${chosen.tree_size} is sealed without the cosignature of ${missing.map((w) => `witness ${w.name} (${w.error ?? 'no cosignature'})`).join(', ')}`,
      );
    }
    return chosen;
  }

  /** Builds, uploads, reads back and verifies one segment, then marks it archived. */
  private async ship(row: SegmentRow): Promise<void> {
    const { store, trail } = this.opts;
    mkdirSync(this.opts.workDir, { recursive: true, mode: 0o700 });
    const stage = mkdtempSync(join(this.opts.workDir, 'segment-'));
    try {
      // The tree continues the compact range the segment before ended with, so sealing costs this
      // segment's events rather than the whole log's. A stored range that is unreadable, or does not
      // give the root the segment before was signed over, is not trusted: the range is rebuilt from the events.
      const stored = store.db.prepare('SELECT compact_range FROM archive_segments WHERE idx = ?').pluck().get(row.idx - 1) as string | null | undefined;
      let built = stored
        ? await Promise.resolve()
            .then(() => this.thread.segment(row.first_seq, row.last_seq, stage, JSON.parse(stored) as string[]))
            .catch(() => undefined)
        : undefined;
      if (built?.previousRootHash !== row.prev_root_hash) built = await this.thread.segment(row.first_seq, row.last_seq, stage);
      if (built.rootHash !== row.root_hash) throw new Error(`the log no longer matches the checkpoint of ${row.last_seq} events; run custody verify`);
      if (built.previousRootHash !== row.prev_root_hash || built.previousLastHash !== row.prev_last_hash) {
        throw new Error(`the log before seq ${row.first_seq} no longer matches the archived segment ${row.idx - 1}; run custody verify`);
      }
      // The witnesses' cosignatures on the segment's checkpoint, exactly that tree.
      const cosignatures = store.db
        .prepare('SELECT witness, key_id, tree_size, root_hash, checkpoint, signature, cosigned_at FROM checkpoint_cosignatures WHERE tree_size = ? AND root_hash = ? ORDER BY witness, key_id')
        .all(row.last_seq, row.root_hash) as CosignatureRowData[];
      const packed = await packSegment(
        stage,
        {
          index: row.idx,
          firstSeq: row.first_seq,
          lastSeq: row.last_seq,
          previous: { treeSize: row.first_seq - 1, rootHash: row.prev_root_hash, lastHash: row.prev_last_hash },
          checkpoint: { treeSize: row.last_seq, rootHash: row.root_hash, time: row.checkpoint_time, note: row.checkpoint },
          sealedAt: row.sealed_at,
          events: built,
          cosignatures,
        },
        trail.signer,
      );
      const lock = this.lockFor(row);
      const put = await this.thread.put(row.object_key, packed.file, lock);
      const uploadedAt = Date.now();

      // Read it back as an auditor would: the bytes the bucket returns, verified on their own.
      const readBack = join(stage, 'read-back.tar.gz');
      await this.thread.get(row.object_key, readBack);
      // Every cosignature the segment carries by a configured witness must verify in what came back.
      const cosigners = (this.opts.witnesses?.list() ?? []).map((w) => w.verifier).filter((v) => cosignatures.some((c) => c.witness === v.name && c.key_id === keyIdHex(v.keyId)));
      const report = await this.thread.verify(readBack, trail.signer.info().verifierKey, cosigners.map((v) => formatCosignerKey(v.name, v.publicKey)));
      if (!report.ok) {
        const f = report.failure!;
        throw new Error(`segment ${row.object_key} read back from the bucket does not verify: ${f.seq !== undefined ? `seq ${f.seq}: ` : ''}${f.problem}: ${f.message}`);
      }
      if (report.segment?.firstSeq !== row.first_seq || report.segment.lastSeq !== row.last_seq || report.rootHash !== row.root_hash) {
        throw new Error(`segment ${row.object_key} read back from the bucket is not the one uploaded`);
      }
      store.db
        .prepare('UPDATE archive_segments SET uploaded_at = ?, verified_at = ?, bytes = ?, sha256 = ?, version_id = ?, lock_mode = ?, retain_until = ?, compact_range = ? WHERE idx = ?')
        .run(uploadedAt, Date.now(), packed.bytes, packed.sha256, put.versionId ?? null, lock?.mode ?? null, lock?.retainUntil.getTime() ?? null, JSON.stringify(built.range), row.idx);
      this.opts.log?.info(`audit: archived seq ${row.first_seq}–${row.last_seq} as ${row.object_key} (${packed.bytes} bytes${lock ? `, ${lock.mode} until ${lock.retainUntil.toISOString()}` : ''})`);
      this.opts.onArchived?.();
    } finally {
      rmSync(stage, { recursive: true, force: true });
    }
  }

  private lockFor(row: SegmentRow): { mode: LockMode; retainUntil: Date } | undefined {
    if (this.lock.state !== 'enabled' || this.retainForMs === undefined) return undefined;
    return { mode: this.opts.archive.lockMode, retainUntil: new Date(row.sealed_at + this.retainForMs) };
  }
}
