/**
 * The hold queue's contract with the proxies: `request` parks a request until approvers decide,
 * the hold times out, or the caller aborts (client went away). Implemented in hold-queue.ts.
 */
import type { HoldSpec } from '../../shared/config';
import type { HoldDecisionRequest, HoldView, HoldVote } from '../../shared/holds';
import type { Identity } from '../../shared/identity';
import type { GrantRowWrite } from '../audit/shared-store/grant-rows';

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

/** Where an event sits in this gateway's chain. */
export interface ChainPosition {
  seq: number;
  hash: string;
}

/** A step of a local hold the peers are told of: a vote cast here, or its resolution. */
export type HoldStep = { vote: HoldVote & { grantMs?: number }; event: ChainPosition } | { resolved: ChainPosition };

/** A time-boxed grant an approval gave: whose requests it covers, the hold that gave it, the approvers, until when. */
export type GrantGiven = Omit<GrantRowWrite, 'gateway' | 'resolved'>;

/**
 * The other gateways of a shared store, as the hold queue sees them (proxy/approvals/shared-holds.ts):
 * told of every step of a local hold, and answering for the holds of other gateways.
 */
export interface HoldPeers {
  /** A local hold was created, voted on here, or ended; `created` is its `hold.created`. */
  changed(view: HoldView, created: ChainPosition, step?: HoldStep): void;
  /** Another gateway's hold, when known. */
  get(id: string): HoldView | undefined;
  /** The holds of other gateways known here (pending, and recently ended). */
  list(): HoldView[];
  /** A local hold was approved with a grant (its `hold.resolved` at `resolved`): the group applies it too. */
  granted(grant: GrantGiven, resolved: ChainPosition): void;
  /** A vote on another gateway's hold; undefined when `id` is not one. */
  decide(id: string, identity: Identity, body: HoldDecisionRequest): Promise<HoldView> | undefined;
}
