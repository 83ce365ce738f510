/**
 * Payload retention (`retention: { payloadsAfter: 400d }`): payloads and masked spans of events
 * older than the window are deleted, their `payload_hash` stays, so the chain and the Merkle tree
 * verify exactly as before and the verifier reports how many payloads were purged. Each run is
 * itself a chained `retention.run` event whose `cutoff` lets the verifier tell a retention purge
 * from a payload deleted by hand.
 */
import { parseDuration, type Config } from '../../shared/config';
import type { AuditEvent } from '../../shared/events';
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

/** Purges payloads older than `payloadsAfter` and records the run. Throws if the run cannot be recorded. */
export function runRetention(store: AuditStore, payloadsAfter: string, opts: { now?: number; actor?: string } = {}): RetentionResult {
  const windowMs = parseDuration(payloadsAfter);
  const now = opts.now ?? Date.now();
  const cutoff = now - windowMs;
  let purged = 0;
  let event!: AuditEvent;
  // Purge and record in one transaction: there is never a purge without its retention.run event.
  store.transaction(() => {
    purged = store.db.prepare("UPDATE events SET payload = NULL, spans = NULL, encoding = 'purged' WHERE time < ? AND encoding != 'purged'").run(cutoff).changes;
    event = store.append({ kind: 'retention.run', actor: opts.actor ?? 'system', payload: { payloadsAfter, cutoff, purged } });
  });
  return { purged, cutoff, event };
}

/**
 * Runs retention now and then daily when the config asks for it. Returns the function that stops
 * the timer (which never keeps the process alive). Failures are logged and retried next time.
 */
export function startRetention(store: AuditStore, config: Pick<Config, 'retention'>, log?: Logger): () => void {
  const window = config.retention.payloadsAfter;
  if (!window) return () => {};
  const run = () => {
    try {
      const r = runRetention(store, window);
      if (r.purged) log?.info(`retention: purged ${r.purged} payloads older than ${window} (hashes kept)`);
    } catch (err) {
      log?.error(`retention: ${(err as Error).message}`);
    }
  };
  run();
  const timer = setInterval(run, DAY);
  timer.unref();
  return () => clearInterval(timer);
}
