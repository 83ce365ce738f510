/** A request the gateway is holding until approvers decide. */
export type HoldState = 'pending' | 'approved' | 'denied' | 'expired' | 'abandoned' | 'cancelled';

export interface HoldVote {
  by: string;
  byName: string;
  decision: 'approve' | 'deny';
  reason: string;
  at: number;
}

export interface HoldView {
  id: string;
  state: HoldState;
  session: string | null;
  connection: string;
  protocol: 'http' | 'postgres';
  requester: string;
  requesterName: string;
  rule: string;
  /** Why the rule exists (its `reason`), if any. */
  ruleReason?: string;
  /** What is being asked for, with masking applied: e.g. `POST /chat/completions gpt-4o: "export all…"`. */
  summary: string;
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
  /** The held statement waits inside an open transaction, whose locks stay held until the decision. */
  inTransaction?: boolean;
}

export interface HoldDecisionRequest {
  decision: 'approve' | 'deny';
  reason?: string;
  /** Approve for this identity on this connection for a while, e.g. `30m`. */
  grant?: string;
}
