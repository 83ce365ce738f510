/**
 * What the store's gateways table says of each gateway, checked the way a running gateway proves
 * its members (member-trust.ts), for what an admin is shown (`custody gateways list`, the console's
 * Gateways view) and for who may approve or remove (docs/SCALE-OUT.md, "Who may sign: enrolment").
 * The table's `status` is written by anyone who can write to the store; here it counts only when
 * this gateway proves it from its local roots:
 *
 * - `enrolled`: this gateway itself, by its own record of its admission, or the group's enrolled
 *   gateway it pinned at admission (with the row's key);
 * - `approved`: a member proven from the local roots (its own key, its own approvals, the pinned
 *   approver and enrolled gateway) or from a `gateway.approved` in a trusted chain under a
 *   checkpoint signed by that chain's key (proveMember), with the row's key, and not removed;
 * - `removed`: a `gateway.removed` naming it in the chain of a proven member, under that member's
 *   signed checkpoint (provenRemoval);
 * - `pending`: its enrolment request is signed by its key (rowProblem), and it is not a proven member.
 */
import type Database from 'better-sqlite3';
import type pg from 'pg';
import { groupId, type GatewayRow, newRemovals, rowProblem } from './enrolment';
import { LocalTrust } from './key-sync';
import { type ApprovalProof, pinnedKeys, pinnedRoots, provenRemoval, proveMember } from './member-trust';

/** Whether a row's status is proven, and how (`provenBy`) or why not (`problem`). */
export interface RowProof {
  proven: boolean;
  provenBy?: string;
  problem?: string;
}

/** A gateway proven removed: the `gateway.removed` at `seq` of `by`'s chain. */
interface RemovalProof {
  by: string;
  seq: number;
}

/** Why gateway `self` is not a member of the store's group by its own records (its meta `store.admission`), or undefined when it is. */
async function notAdmitted(client: pg.ClientBase, db: Database.Database, self: string): Promise<string | undefined> {
  const roots = pinnedRoots(db, self);
  if (!roots.admitted) return 'it has no record of being admitted to the group';
  const group = await groupId(client);
  if (roots.group !== undefined && roots.group !== group) return `it was admitted to another group (${roots.group}), not this store's`;
  return undefined;
}

/**
 * Why this gateway (`self`) may not approve or remove another, from its own records and not the
 * table's status of its row: it must hold a record of its admission to this store's group, and no
 * proven removal of it may be in the store. Undefined when it may.
 */
export async function selfStanding(client: pg.ClientBase, db: Database.Database, self: { id: string; publicKey: string }, members: LocalTrust = new LocalTrust(db, self)): Promise<string | undefined> {
  const why = await notAdmitted(client, db, self.id);
  if (why) return `this gateway (${self.id}) is itself waiting for approval: ${why} (its row's status in the store is not proof); only an enrolled or approved gateway can approve or remove another`;
  const trust = members.current(...pinnedKeys(db, self.id));
  for (const r of (await newRemovals(client, new Set())).get(self.id) ?? []) {
    if (!(await provenRemoval(client, trust, self.id, r, (x) => members.isRemoved(x)))) return `this gateway (${self.id}) is itself removed from the group (at seq ${r.seq} of ${r.by}): it can approve or remove no other`;
  }
  return undefined;
}

/**
 * Whether each row's status is proven from the local roots of gateway `self` (its SQLite file `db`).
 * Kept across calls by the console's worker (its Gateways view asks every few seconds): like the
 * running gateways' trust sets, the keys proven stay proven, with where they were proven, and only
 * the local events recorded since the last call are read. A fresh one (the CLI) proves everything
 * from the roots, as after a restart. Removals are proven after members, as a running gateway
 * finds them: approvals a gateway made before its removal still stand; a gateway proven removed
 * leaves this trust set, and `removedElsewhere` (the worker's own finding) counts too.
 */
export class MemberStatuses {
  private readonly members: LocalTrust;
  /** Where each key added by an approval in the store was proven. */
  private readonly proofs = new Map<string, ApprovalProof>();
  /** This gateway's own approvals, by the gateway approved: the seq of the first. */
  private readonly own = new Map<string, number>();
  /** Removals proven (a removal is for good): not proven again at each call. */
  private readonly removals = new Map<string, RemovalProof>();
  private scanned = 0;

  constructor(
    private readonly db: Database.Database,
    private readonly self: { id: string; publicKey: string },
    private readonly removedElsewhere: (id: string) => boolean = () => false,
  ) {
    this.members = new LocalTrust(db, self);
  }

  /** Why this gateway may not approve or remove another (selfStanding), with this trust set. */
  standing(client: pg.ClientBase): Promise<string | undefined> {
    return selfStanding(client, this.db, this.self, this.members);
  }

  private readOwn(): void {
    const head = (this.db.prepare('SELECT coalesce(max(seq), 0) AS n FROM events').get() as { n: number }).n;
    if (head <= this.scanned) return;
    for (const e of this.db.prepare("SELECT seq, payload FROM events WHERE seq > ? AND seq <= ? AND kind = 'gateway.approved' AND encoding = 'json' ORDER BY seq").all(this.scanned, head) as { seq: number; payload: string | Buffer }[]) {
      try {
        const id = (JSON.parse(String(e.payload)) as { id?: unknown }).id;
        if (typeof id === 'string' && !this.own.has(id)) this.own.set(id, e.seq);
      } catch {
        // not an approval this gateway can read: LocalTrust does not trust it either
      }
    }
    this.scanned = head;
  }

  /** For each row of `rows`, whether its status is proven, and how or why not. */
  async of(client: pg.ClientBase, rows: readonly GatewayRow[]): Promise<Map<string, RowProof>> {
    const { db, self, members } = this;
    const out = new Map<string, RowProof>();
    const outsider = await notAdmitted(client, db, self.id);
    if (outsider) {
      for (const r of rows) out.set(r.id, r.status === 'pending' ? pendingProof(r, undefined, undefined) : { proven: false, problem: `this gateway (${self.id}) proves no member: ${outsider}` });
      return out;
    }
    const roots = pinnedRoots(db, self.id);
    const trust = members.current(roots.approvedBy, roots.groupRoot);
    this.readOwn();
    const removed = (x: string) => members.isRemoved(x) || this.removedElsewhere(x);

    // Members, to a fixed point from the roots.
    const notMember = new Map<string, string>();
    for (const r of rows) {
      const why = await proveMember(client, trust, r.id, removed, this.proofs);
      if (why) notMember.set(r.id, why);
    }
    // How each was trusted: this gateway itself, its own approvals (the local chain says where), the pinned roots, approvals in the store.
    const how = (id: string): string => {
      if (id === self.id) return `this gateway (${roots.status === 'enrolled' ? 'it enrolled the group' : 'admitted'}, by its own record)`;
      const mine = this.own.get(id);
      if (mine !== undefined) return `approval at seq ${mine} in this gateway's own chain`;
      if (roots.approvedBy?.id === id) return 'approved this gateway (pinned at its admission)';
      if (roots.groupRoot?.id === id) return "the group's enrolled gateway (pinned at this gateway's admission)";
      const p = this.proofs.get(id);
      return p ? `approval at seq ${p.seq} in chain ${p.by}, checkpoint-signed (its checkpoint of ${p.treeSize} events)` : 'a gateway this one trusts';
    };

    // Removals, each from a proven member under its signed checkpoint.
    const removals = this.removals;
    const notRemoved = new Map<string, string>();
    const events = await newRemovals(client, new Set());
    for (const r of rows) {
      if (removals.has(r.id)) continue;
      for (const e of events.get(r.id) ?? []) {
        const why = await provenRemoval(client, trust, r.id, e, removed);
        if (!why) {
          removals.set(r.id, { by: e.by, seq: e.seq });
          // As a running gateway does: its key signs nothing trusted from now on (this gateway keeps its own).
          if (r.id !== self.id) members.remove(r.id);
          break;
        }
        notRemoved.set(r.id, `its removal at seq ${e.seq} of ${e.by} is not proven: ${why}`);
      }
    }

    for (const r of rows) {
      const removal = removals.get(r.id);
      const removedText = removal && `removal at seq ${removal.seq} in chain ${removal.by}, checkpoint-signed`;
      // A member: trusted from the roots or proven, with the key its row carries.
      const member = (): { by?: string; why?: string } => {
        if (r.id === self.id) return r.publicKey === self.publicKey ? { by: how(r.id) } : { why: "its row carries another key than this gateway's own" };
        if (!trust.has(r.id)) return { why: removed(r.id) ? 'it was removed from the group' : (notMember.get(r.id) ?? 'no gateway this one trusts approved it in a signed chain') };
        if (trust.publicKey(r.id) !== r.publicKey) return { why: 'its row carries another key than the one proven for it' };
        return { by: how(r.id) };
      };
      if (r.status === 'pending') {
        out.set(r.id, pendingProof(r, removedText, member().by));
        continue;
      }
      if (r.status === 'removed') {
        out.set(r.id, removedText ? { proven: true, provenBy: removedText } : { proven: false, problem: notRemoved.get(r.id) ?? "no gateway.removed naming it is in the chain of a proven member (a row marked removed in the store's table is not proof)" });
        continue;
      }
      if (removedText) {
        out.set(r.id, { proven: false, problem: `it was removed from the group: ${removedText}` });
        continue;
      }
      const m = member();
      if (r.status === 'approved') {
        out.set(r.id, m.by ? { proven: true, provenBy: m.by } : { proven: false, problem: m.why! });
        continue;
      }
      // enrolled: the gateway that enrolled the group, as this one knows it.
      if (r.id === self.id) out.set(r.id, roots.status === 'enrolled' && m.by ? { proven: true, provenBy: m.by } : { proven: false, problem: m.why ?? 'this gateway was approved, it did not enrol the group (its own record of its admission)' });
      else if (roots.groupRoot?.id === r.id) out.set(r.id, m.by ? { proven: true, provenBy: "the group's enrolled gateway (pinned at this gateway's admission)" } : { proven: false, problem: m.why! });
      else {
        const pinned = roots.status === 'enrolled' ? `this gateway enrolled the group` : roots.groupRoot ? `the group's enrolled gateway is ${roots.groupRoot.id} (pinned at this gateway's admission)` : 'this gateway pinned no enrolled gateway at its admission';
        out.set(r.id, { proven: false, problem: m.by ? `it is a member (${m.by}), but not the gateway that enrolled the group: ${pinned}` : `${pinned}, and it is not proven a member: ${m.why}` });
      }
    }
    return out;
  }
}

/** Whether each row's status is proven from the local roots of gateway `self`, from scratch (MemberStatuses). */
export function provenStatuses(client: pg.ClientBase, db: Database.Database, self: { id: string; publicKey: string }, rows: readonly GatewayRow[]): Promise<Map<string, RowProof>> {
  return new MemberStatuses(db, self).of(client, rows);
}

/** A pending row: its request must be signed by its key; a gateway proven removed or a member is not pending. */
function pendingProof(r: GatewayRow, removed: string | undefined, member: string | undefined): RowProof {
  const problem = rowProblem(r);
  if (problem) return { proven: false, problem };
  if (removed) return { proven: false, problem: `it was removed from the group: ${removed}` };
  if (member) return { proven: false, problem: `it is already a member: ${member}` };
  return { proven: true, provenBy: 'its enrolment request is signed by its key' };
}
