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

export interface RetentionOptions {
  now?: number;
  actor?: string;
  /** Purge nothing after this seq (the archive's verified end); undefined: no archive, no bound. */
  archivedThrough?: number;
}

/** True when a run now would purge something. */
export function retentionDue(store: AuditStore, payloadsAfter: string, opts: RetentionOptions = {}): boolean {
  const cutoff = (opts.now ?? Date.now()) - parseDuration(payloadsAfter);
  return !!store.db.prepare("SELECT 1 FROM events WHERE time < ? AND seq <= ? AND encoding != 'purged' LIMIT 1").get(cutoff, opts.archivedThrough ?? Number.MAX_SAFE_INTEGER);
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
    purged = store.db.prepare("UPDATE events SET payload = NULL, spans = NULL, encoding = 'purged' WHERE time < ? AND seq <= ? AND encoding != 'purged'").run(cutoff, upTo).changes;
    const bound = opts.archivedThrough === undefined ? {} : { archivedThrough: opts.archivedThrough };
    event = store.append({ kind: 'retention.run', actor: opts.actor ?? 'system', payload: { payloadsAfter, cutoff, purged, ...bound } satisfies RetentionRunPayload });
  });
  return { purged, cutoff, event };
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
