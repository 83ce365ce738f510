/**
 * The gateway's audit part: the checkpoint signer and timer, retention, on-demand verification,
 * background evidence exports (progress on the control-plane bus), and the evidence that leaves the
 * box (witnesses, SIEM sinks, the archive in object storage). Built once in gateway.ts.
 */
import { existsSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { AuditHealth, VerificationRecord as StoredVerification } from '../../shared/api';
import type { Config } from '../../shared/config';
import { newId } from '../ids';
import type { Logger } from '../log';
import type { EventBus } from '../bus';
import { type AuditTrail, type Checkpoint, checkpointIntervalMs, openAuditTrail } from './checkpoints';
import type { PublicKeyInfo } from './checkpoint-signer';
import { exportBundle, type ExportFilter } from './export';
import { type RetentionSchedule, startRetention } from './retention';
import { Archiver, type ArchiveStatus } from './archive/archiver';
import { archiveLocation } from './archive/object-store';
import type { AuditStore } from './store';
import { runVerification } from './verify-runner';
import { type Sinks, type SinkStatus, startSinks } from './sinks';
import { WitnessPublisher, type WitnessStatus } from './witnessing';
import type { VerifyReport } from './verify/checks';
import type { SignerStatus } from '../../shared/evidence';
import type { SecretWrapper } from '../secret-wrapper';
import type { GroupExport } from './bundle-format';

/** What the control plane keeps of the last verification (shared/api.ts), with the verifier's own failure type. */
export interface VerificationRecord extends StoredVerification {
  failure?: VerifyReport['failure'];
}

export interface ExportJob {
  id: string;
  state: 'running' | 'done' | 'failed';
  requestedBy: string;
  createdAt: number;
  filter: ExportFilter;
  done: number;
  total: number;
  bytes?: number;
  events?: number;
  error?: string;
  file: string;
}

export interface AuditStatus {
  events: number;
  headHash: string;
  key: PublicKeyInfo;
  /** Where the signing key lives, and whether it signs (a failing audit.signer: its reason). */
  signer: SignerStatus;
  checkpointInterval: string;
  lastCheckpoint: Checkpoint | null;
  lastVerification: VerificationRecord | null;
  retention: { payloadsAfter: string | null };
  witnesses: WitnessStatus[];
  sinks: SinkStatus[];
  archive: ArchiveStatus | null;
}

const LAST_VERIFICATION_META = 'audit.lastVerification';
const EXPORT_ID = /^exp_[a-z0-9]+$/;

export class AuditService {
  private stops: (() => void)[] = [];
  private jobs = new Map<string, ExportJob>();
  private verifying?: Promise<VerificationRecord>;
  readonly witnesses: WitnessPublisher;
  private sinks: Sinks = { status: () => [], stop: () => {} };
  /** The archive of sealed segments, when audit.archive is configured. */
  archiver?: Archiver;
  /** Payload retention (retention.payloadsAfter), bounded by the archive when there is one. */
  retention: RetentionSchedule = { stop: () => {}, runIfDue: () => {} };
  /** In a group: writes the group part of a bundle (every chain of the shared store) into a dir; set once the gateway has joined. */
  groupExport?: (dir: string, filter: ExportFilter) => Promise<GroupExport>;

  private constructor(
    readonly trail: AuditTrail,
    private readonly deps: { store: AuditStore; config: Config; dataDir: string; bus: EventBus; log: Logger; version: string },
  ) {
    this.witnesses = new WitnessPublisher(deps.store, deps.config.audit.witnesses, deps.log);
  }

  /** Opens the signing key (creating it on first start), starts the checkpoint timer and retention. */
  static start(deps: { store: AuditStore; config: Config; dataDir: string; bus: EventBus; log: Logger; version: string; secrets?: SecretWrapper }): AuditService {
    // Archive credentials are read first: a missing secret stops the start before anything runs.
    const archive = deps.config.audit.archive;
    const archiveAt = archive ? archiveLocation(archive) : undefined;
    // Sealed under the desktop app's vault key when it runs the gateway (deps.secrets).
    const svc = new AuditService(openAuditTrail(deps.store, deps.dataDir, deps.config, 'system', deps.secrets), deps);
    const key = svc.trail.signer.info();
    const held = svc.trail.signer.status().program;
    deps.log.info(
      `audit: ${held ? `checkpoint signing key held by audit.signer (${held})` : svc.trail.keyCreated ? 'created the checkpoint signing key' : 'checkpoint signing key'} ${key.verifierKey} (fingerprint ${key.fingerprint})`,
    );
    if (archive && archiveAt) {
      svc.archiver = new Archiver({
        store: deps.store,
        trail: svc.trail,
        archive,
        retention: deps.config.retention,
        workDir: join(deps.dataDir, 'archive'),
        location: archiveAt,
        log: deps.log,
        onArchived: () => svc.retention.runIfDue(),
        onCheckpoint: () => svc.witnesses.notify(),
        witnesses: svc.witnesses,
      });
    }
    const archiver = svc.archiver;
    svc.retention = startRetention(deps.store, deps.config, deps.log, archiver ? () => archiver.archivedThrough() : undefined);
    svc.stops.push(() => svc.retention.stop());
    svc.stops.push(svc.trail.checkpoints.startTimer(checkpointIntervalMs(deps.config), deps.log, () => svc.witnesses.notify()));
    if (svc.archiver) {
      svc.archiver.start();
      svc.stops.push(() => svc.archiver!.stop());
    }
    svc.stops.push(() => svc.witnesses.stop());
    svc.sinks = startSinks(deps.store, deps.config, key.name, deps.version, deps.log);
    svc.stops.push(() => svc.sinks.stop());
    return svc;
  }

  /**
   * Stops the timers and writes a last checkpoint covering everything recorded so far (waiting for
   * the signer, at most its timeout with audit.signer).
   */
  async stop(): Promise<void> {
    for (const s of this.stops.splice(0)) s();
    try {
      await this.trail.checkpoints.write();
    } catch (err) {
      this.deps.log.error(`audit: final checkpoint not written: ${(err as Error).message}`);
    }
  }

  get exportDir(): string {
    return join(this.deps.dataDir, 'exports');
  }

  status(): AuditStatus {
    const head = this.deps.store.head();
    const raw = this.deps.store.meta(LAST_VERIFICATION_META);
    return {
      events: head.size,
      headHash: head.hash,
      key: this.trail.signer.info(),
      signer: this.trail.signer.status(),
      checkpointInterval: this.deps.config.audit.checkpointInterval,
      lastCheckpoint: this.trail.checkpoints.latest() ?? null,
      lastVerification: raw ? (JSON.parse(raw) as VerificationRecord) : null,
      retention: { payloadsAfter: this.deps.config.retention.payloadsAfter ?? null },
      witnesses: this.witnesses.status(),
      sinks: this.sinks.status(),
      archive: this.archiver?.status() ?? null,
    };
  }

  /**
   * What /api/health (public) shows of the evidence leaving the box: names, states and counts, no
   * URLs or error texts (those are on the reviewer-only /api/audit/status).
   */
  health(): AuditHealth {
    const a = this.archiver?.status();
    const signer = this.trail.signer.status();
    return {
      signer: { kind: signer.kind, state: signer.state, failures: signer.failures, lastSignedAt: signer.lastSignedAt },
      witnesses: this.witnesses.status().map((w) => ({ name: w.name, state: w.state, cosignedTreeSize: w.lastCosigned?.treeSize ?? null, behind: w.behind, failures: w.failures })),
      sinks: this.sinks.status().map((s) => ({ name: s.name, state: s.state, backlog: s.backlog, backlogAgeMs: s.backlogAgeMs, lastDeliveryAt: s.lastDeliveryAt, failures: s.failures })),
      archive: a
        ? {
            state: a.state,
            lastSegment: a.lastSegment ? { index: a.lastSegment.index, lastSeq: a.lastSegment.lastSeq, verifiedAt: a.lastSegment.verifiedAt } : null,
            archivedThrough: a.archivedThrough,
            behind: a.behind,
            objectLock: a.objectLock.state,
            failures: a.failures,
          }
        : null,
    };
  }

  /** Verifies the store (off the event loop where possible) and records the result. One run at a time. */
  verify(by: string): Promise<VerificationRecord> {
    this.verifying ??= (async () => {
      try {
        const r = await runVerification(this.deps.dataDir);
        const rec: VerificationRecord = {
          ok: r.ok,
          verifiedAt: r.verifiedAt,
          by,
          events: r.events,
          checkpointsChecked: r.checkpointsChecked,
          payloadsPurged: r.payloadsPurged,
          durationMs: r.durationMs,
          ...(r.failure ? { failure: r.failure } : {}),
        };
        this.deps.store.setMeta(LAST_VERIFICATION_META, JSON.stringify(rec));
        if (!r.ok) this.deps.log.error(`audit: verification FAILED${r.failure?.seq !== undefined ? ` at seq ${r.failure.seq}` : ''}: ${r.failure?.problem}: ${r.failure?.message}`);
        return rec;
      } finally {
        this.verifying = undefined;
      }
    })();
    return this.verifying;
  }

  /** Starts an export in the background; progress and the outcome go out on the bus. */
  startExport(filter: ExportFilter, requestedBy: { subject: string; name: string }): ExportJob {
    mkdirSync(this.exportDir, { recursive: true, mode: 0o700 });
    const id = newId('exp');
    const job: ExportJob = { id, state: 'running', requestedBy: requestedBy.subject, createdAt: Date.now(), filter, done: 0, total: 0, file: join(this.exportDir, `${id}.tar.gz`) };
    this.jobs.set(id, job);
    let lastPublished = 0;
    void exportBundle({
      id,
      store: this.deps.store,
      trail: this.trail,
      config: this.deps.config,
      out: job.file,
      filter,
      actor: requestedBy.subject,
      actorName: requestedBy.name,
      version: this.deps.version,
      verify: () => runVerification(this.deps.dataDir),
      group: this.deps.config.store
        ? (dir) => {
            if (!this.groupExport) throw new Error('this gateway has not joined its shared store yet, so the bundle cannot carry the group\'s chains');
            return this.groupExport(dir, filter);
          }
        : undefined,
      onProgress: (done, total) => {
        job.done = done;
        job.total = total;
        const now = Date.now();
        if (now - lastPublished >= 250 || done === total) {
          lastPublished = now;
          this.deps.bus.publish({ type: 'export.progress', id, done, total });
        }
      },
    }).then(
      (r) => {
        job.state = 'done';
        job.bytes = r.bytes;
        job.events = r.events;
        this.deps.bus.publish({ type: 'export.done', id, url: `/api/exports/${id}/download`, bytes: r.bytes });
      },
      (err: unknown) => {
        job.state = 'failed';
        job.error = err instanceof Error ? err.message : String(err);
        rmSync(`${job.file}.partial`, { force: true });
        this.deps.log.error(`export ${id} failed: ${job.error}`);
        this.deps.bus.publish({ type: 'export.failed', id, error: job.error });
      },
    );
    return job;
  }

  /** A job of this run, or a finished bundle left by an earlier run. */
  job(id: string): ExportJob | undefined {
    if (!EXPORT_ID.test(id)) return undefined;
    const j = this.jobs.get(id);
    if (j) return j;
    const file = join(this.exportDir, `${id}.tar.gz`);
    if (!existsSync(file)) return undefined;
    const st = statSync(file);
    return { id, state: 'done', requestedBy: '', createdAt: st.mtimeMs, filter: {}, done: 0, total: 0, bytes: st.size, file };
  }

  listJobs(): ExportJob[] {
    const ids = new Set(this.jobs.keys());
    if (existsSync(this.exportDir)) for (const f of readdirSync(this.exportDir)) if (f.endsWith('.tar.gz')) ids.add(f.slice(0, -'.tar.gz'.length));
    return [...ids].map((id) => this.job(id)).filter((j): j is ExportJob => !!j).sort((a, b) => b.createdAt - a.createdAt);
  }
}
