/** A request the gateway is holding until approvers decide. */
export type HoldState = 'pending' | 'approved' | 'denied' | 'expired' | 'abandoned' | 'cancelled';

export interface HoldVote {
  by: string;
  /** The voter's person: k-of-N counts persons, and one person votes once whatever credentials they hold. */
  person?: string;
  byName: string;
  decision: 'approve' | 'deny';
  reason: string;
  at: number;
  /** With a shared store: the gateway where the vote was cast, when not the hold's own. */
  gateway?: string;
}

export interface HoldView {
  id: string;
  state: HoldState;
  /** With a shared store: the gateway whose request waits (set on holds of other gateways). */
  gateway?: string;
  /** Its host name as the group lists it (for people; `gateway` is what identifies it). */
  gatewayName?: string;
  session: string | null;
  connection: string;
  protocol: 'http' | 'postgres' | 'ssh';
  requester: string;
  /** The requester's person: none of their credentials may approve this hold. */
  requesterPerson?: string;
  requesterName: string;
  rule: string;
  /** Why the rule exists (its `reason`), if any. */
  ruleReason?: string;
  /**
   * What is being asked for, with masking applied: e.g. `POST /chat/completions gpt-4o: "export all…"`.
   * Short enough for a notification; when shortened it ends with a visible marker (`shortenForSummary`)
   * and `statement` holds the whole text.
   */
  summary: string;
  /** SQL holds: the whole statement that will run, masked for the log like the recorded statement. */
  statement?: string;
  /** The statement's length in characters when `statement` had to be cut (it then ends with a marker). */
  statementLength?: number;
  /** SQL holds: the bound parameters ($1, $2, …), masked for the log; null is SQL NULL. */
  params?: (string | null)[];
  approvers: string[];
  min: number;
  denyMin: number;
  reasonRequired: boolean;
  createdAt: number;
  expiresAt: number;
  resolvedAt?: number;
  votes: HoldVote[];
  /** Final decision's reason (the deciding vote, or "timed out"). */
  resolution?: string;
  /** Time-boxed grant given with the approval, in ms. */
  grantMs?: number;
  /**
   * For the viewer of a pending hold (filled in by the control plane, never stored): why they may
   * not decide it (`you asked for this`), or absent when they may.
   */
  youMayNotDecide?: { code: string; message: string };
  /** For a pending hold (filled in by the control plane): the persons who may still approve it. */
  approversWhoCan?: string[];
  /** The held statement waits inside an open transaction, whose locks stay held until the decision. */
  inTransaction?: boolean;
}

export interface HoldDecisionRequest {
  decision: 'approve' | 'deny';
  reason?: string;
  /** Approve for this identity on this connection for a while, e.g. `30m`. */
  grant?: string;
}

/**
 * `text` cut to `max` characters with a visible marker saying how much is left out, so a shortened
 * statement never reads as complete (a tautology after a long comment must not be cut away
 * silently). Text within the limit is returned as it is.
 */
export function shortenForSummary(text: string, max: number): string {
  if (text.length <= max) return text;
  return `${text.slice(0, max)}… [+${text.length - max} more characters, full text on the hold]`;
}
