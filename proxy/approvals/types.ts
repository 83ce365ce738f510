/**
 * The hold queue's contract with the proxies: `request` parks a request until approvers decide,
 * the hold times out, or the caller aborts (client went away). Implemented in hold-queue.ts.
 */
import type { HoldSpec } from '../../shared/config';
import type { HoldView } from '../../shared/holds';
import type { Identity } from '../../shared/identity';

export interface HoldRequest {
  identity: Identity;
  connection: string;
  protocol: 'http' | 'postgres' | 'ssh';
  session: string | null;
  rule: string;
  ruleReason?: string;
  /** What is asked for, already masked for the log; short (a notification shows it). */
  summary: string;
  /** SQL: the whole statement, masked for the log; the card shows it in full. */
  statement?: string;
  /** SQL: the bound parameters, masked for the log. */
  params?: (string | null)[];
  spec: HoldSpec;
  /** The statement waits inside an open transaction whose locks stay held meanwhile (PostgreSQL). */
  inTransaction?: boolean;
  /** Aborted when the client disconnects: the hold is cancelled. */
  signal: AbortSignal;
}

export interface HoldOutcome {
  state: 'approved' | 'denied' | 'expired' | 'cancelled' | 'abandoned';
  hold: HoldView;
  /** The deciding reason ("timed out after 5m" for expiry). */
  reason: string;
  /** Who decided (identity names), for the client's error message. */
  decidedBy: string[];
}

export interface HoldGate {
  /**
   * Resolves when the hold ends. Resolves immediately with `approved` when a time-boxed grant
   * covers this identity on this connection for this rule.
   */
  request(req: HoldRequest): Promise<HoldOutcome>;
}
