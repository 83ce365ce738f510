/**
 * Payload retention (`retention: { payloadsAfter: 400d }`): payloads and masked spans of events
 * older than the window are deleted, their `payload_hash` stays, so the chain and the Merkle tree
 * verify exactly as before and the verifier reports how many payloads were purged. Each run is
 * itself a chained `retention.run` event whose `cutoff` lets the verifier tell a retention purge
 * from a payload deleted by hand.
 *
 * With an archive (audit.archive), a payload is purged only once the segment that holds it has
 * been uploaded, read back from the bucket and verified: the run takes `archivedThrough`, the last
 * seq in such a segment, and leaves every later payload in place whatever its age.
 *
 * The events whose payloads the log itself is verified and trusted by (`RETENTION_KEEPS`: key
 * announcements, a group's enrolments, approvals and removals) keep them: they name keys and
 * gateways, not people, and without them a verifier could no longer tell who signed what.
 *
 * In a group (docs/SCALE-OUT.md), the run reaches the shared store when it is shipped: the store's
 * copy of this chain is purged by the same rule (`RETENTION_PURGE_WHERE`) in the transaction that
 * ships the `retention.run` row (shared-store/shipping.ts).
 */
import { parseDuration, type Config } from '../../shared/config';
import type { AuditEvent, RetentionRunPayload } from '../../shared/events';
import type { Logger } from '../log';
import type { AuditStore } from './store';

export interface RetentionResult {
  /** Payloads purged by this run. */
  purged: number;
  /** Events older than this (ms since epoch) no longer carry payloads. */
  cutoff: number;
  event: AuditEvent;
}

const DAY = 86_400_000;

/** Kinds whose payloads retention never purges: the verifiers and the group's trust read them. */
export const RETENTION_KEEPS = ['key.created', 'gateway.enrolled', 'gateway.approved', 'gateway.removed'] as const;
/** What a run purges besides its time and seq bounds (SQLite here; the same words in PostgreSQL). */
export const RETENTION_PURGE_WHERE = `kind NOT IN (${RETENTION_KEEPS.map((k) => `'${k}'`).join(', ')})`;

export interface RetentionOptions {
  now?: number;
  actor?: string;
  /** Purge nothing after this seq (the archive's verified end); undefined: no archive, no bound. */
  archivedThrough?: number;
}

/** True when a run now would purge something. */
export function retentionDue(store: AuditStore, payloadsAfter: string, opts: RetentionOptions = {}): boolean {
  const cutoff = (opts.now ?? Date.now()) - parseDuration(payloadsAfter);
  return !!store.db.prepare(`SELECT 1 FROM events WHERE time < ? AND seq <= ? AND encoding != 'purged' AND ${RETENTION_PURGE_WHERE} LIMIT 1`).get(cutoff, opts.archivedThrough ?? Number.MAX_SAFE_INTEGER);
}

/** Purges payloads older than `payloadsAfter` (and, with an archive, archived) and records the run. Throws if the run cannot be recorded. */
export function runRetention(store: AuditStore, payloadsAfter: string, opts: RetentionOptions = {}): RetentionResult {
  const windowMs = parseDuration(payloadsAfter);
  const now = opts.now ?? Date.now();
  const cutoff = now - windowMs;
  const upTo = opts.archivedThrough ?? Number.MAX_SAFE_INTEGER;
  let purged = 0;
  let event!: AuditEvent;
  // Purge and record in one transaction: there is never a purge without its retention.run event.
  store.transaction(() => {
    purged = store.db.prepare(`UPDATE events SET payload = NULL, spans = NULL, encoding = 'purged' WHERE time < ? AND seq <= ? AND encoding != 'purged' AND ${RETENTION_PURGE_WHERE}`).run(cutoff, upTo).changes;
    const bound = opts.archivedThrough === undefined ? {} : { archivedThrough: opts.archivedThrough };
    event = store.append({ kind: 'retention.run', actor: opts.actor ?? 'system', payload: { payloadsAfter, cutoff, purged, ...bound } satisfies RetentionRunPayload });
  });
  return { purged, cutoff, event };
}

/** A recorded `retention.run`: where it sits in its chain, its cutoff and, with an archive, its bound. */
export interface RecordedRun {
  seq: number;
  cutoff: number;
  archivedThrough?: number;
}

/** The run a `retention.run` row records (payload as canonical JSON), or undefined when it cannot be read. */
export function recordedRun(seq: number, payload: string | null): RecordedRun | undefined {
  let p: Partial<RetentionRunPayload> | undefined;
  try {
    p = payload === null ? undefined : (JSON.parse(payload) as Partial<RetentionRunPayload>);
  } catch {
    return undefined;
  }
  if (typeof p?.cutoff !== 'number') return undefined;
  return { seq, cutoff: p.cutoff, ...(typeof p.archivedThrough === 'number' ? { archivedThrough: p.archivedThrough } : {}) };
}

/** Whether `run` may have purged the payload of the row at `seq`, recorded at `time`: an earlier row, older than its cutoff, within its archive bound. */
export function runCovers(run: RecordedRun, seq: number, time: number): boolean {
  return seq < run.seq && time < run.cutoff && (run.archivedThrough === undefined || seq <= run.archivedThrough);
}

export interface RetentionSchedule {
  /** Stops the daily timer. */
  stop(): void;
  /** Purges what is due now, recording a run only when something was (after an archive segment is verified). */
  runIfDue(): void;
}

/**
 * Runs retention now and then daily when the config asks for it; the timer never keeps the process
 * alive. `archivedThrough`, given when an archive is configured, bounds every run. Failures are
 * logged and retried next time.
 */
export function startRetention(store: AuditStore, config: Pick<Config, 'retention'>, log?: Logger, archivedThrough?: () => number): RetentionSchedule {
  const window = config.retention.payloadsAfter;
  if (!window) return { stop: () => {}, runIfDue: () => {} };
  const run = (onlyIfDue: boolean) => {
    try {
      const bound = archivedThrough?.();
      if (onlyIfDue && !retentionDue(store, window, { archivedThrough: bound })) return;
      const r = runRetention(store, window, { archivedThrough: bound });
      if (r.purged) log?.info(`retention: purged ${r.purged} payloads older than ${window}${bound !== undefined ? ` and archived (through seq ${bound})` : ''} (hashes kept)`);
    } catch (err) {
      log?.error(`retention: ${(err as Error).message}`);
    }
  };
  run(false);
  const timer = setInterval(() => run(false), DAY);
  timer.unref();
  return { stop: () => clearInterval(timer), runIfDue: () => run(true) };
}
