/**
 * What the signed-in user may do, from their roles (issue: reviewers cannot decide holds, approvers
 * cannot edit policies, only admins manage connections and keys). The gateway enforces the same
 * rules; the console hides or disables what the role cannot do so nobody meets a 403 by surprise.
 */
import type { HoldView } from '../../shared/holds';

export interface Me {
  subject: string;
  /** The person behind this credential: one person, one vote, whichever credential they use. */
  person?: string;
  name: string;
  groups: string[];
  roles: string[];
}

export interface Capabilities {
  decideHolds: boolean;
  viewSessions: boolean;
  editPolicies: boolean;
  viewPolicies: boolean;
  manageConnections: boolean;
  manageKeys: boolean;
  viewAudit: boolean;
  exportEvidence: boolean;
  viewDashboard: boolean;
}

const has = (me: Me | undefined, role: string) => !!me && (me.roles.includes('admin') || me.roles.includes(role));

export function capabilities(me: Me | undefined): Capabilities {
  const admin = has(me, 'admin');
  const approver = has(me, 'approver');
  const reviewer = has(me, 'reviewer');
  return {
    decideHolds: approver,
    viewSessions: reviewer,
    editPolicies: admin,
    viewPolicies: admin || approver || reviewer,
    manageConnections: admin,
    manageKeys: admin,
    viewAudit: reviewer,
    exportEvidence: reviewer,
    viewDashboard: admin || approver || reviewer,
  };
}

export type HoldDecidability = { ok: true } | { ok: false; why: string };

/** Whether this user may vote on this hold, and if not, why (shown instead of the buttons). */
export function canDecide(me: Me | undefined, hold: HoldView): HoldDecidability {
  if (!me) return { ok: false, why: 'not signed in' };
  if (hold.state !== 'pending') return { ok: false, why: `already ${hold.state}` };
  if (!has(me, 'approver')) return { ok: false, why: 'your role cannot decide holds' };
  const mine = me.person ?? me.subject;
  if (hold.requester === me.subject || (hold.requesterPerson ?? hold.requester) === mine) return { ok: false, why: 'You asked for this: nobody approves their own request, with any of their credentials. Other approvers decide it.' };
  if (hold.votes.some((v) => v.by === me.subject || (v.person ?? v.by) === mine)) return { ok: false, why: 'you have voted (one vote per person, whichever credential you use)' };
  // The gateway's own reason, when it sent one with the hold (e.g. only IdP-backed persons approve).
  if (hold.youMayNotDecide) return { ok: false, why: hold.youMayNotDecide.message };
  const admin = me.roles.includes('admin');
  if (!admin && hold.approvers.length && !hold.approvers.some((g) => me.groups.includes(g)))
    return { ok: false, why: `needs a member of ${hold.approvers.join(', ')}` };
  return { ok: true };
}

/**
 * Whether the gateway lets this user replay a hold's session up to the hold: as it decides who may
 * decide the hold (proxy/approvals/hold-queue.ts canDecideHold), members of its approver groups
 * (voted or not) and admins.
 */
export function mayReplayHold(me: Me | undefined, hold: Pick<HoldView, 'approvers'>): boolean {
  return !!me && (me.roles.includes('admin') || hold.approvers.some((g) => me.groups.includes(g)));
}
