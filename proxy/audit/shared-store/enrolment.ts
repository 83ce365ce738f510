/**
 * Who may write a chain to the shared store (docs/SCALE-OUT.md, "Who may sign"). A gateway is
 * known by the fingerprint of its checkpoint-signing key. The first gateway on an empty store is
 * enrolled by that act; every later one writes a pending row carrying an enrolment request signed
 * by its own key, and serves nothing until an enrolled gateway approves it: the approval is a
 * `gateway.approved` event in the approver's own chain, shipped to the store, and the row's status
 * is only an index of it.
 */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type pg from 'pg';
import { keyFingerprint } from '../checkpoint-signer';
import { ed25519KeyId, ed25519PublicKeyObject, type NoteVerifier, parseNote, verifyNote } from '../signed-note';
import { ENROLMENT_LOCK, PG_EVENT_COLUMNS, payloadIntact, type PgEventRow, rowChainHash } from './schema';

/** What a gateway says about itself when it joins: its key and a request signed with it. */
export interface GatewayIdentity {
  /** keyFingerprint(publicKey) */
  id: string;
  /** base64 raw Ed25519 public key */
  publicKey: string;
  keyName: string;
  name: string;
  /** A signed note: `custody-enrolment-request`, the id, the host name, the time. */
  request: string;
}

export type EnrolmentStatus = 'enrolled' | 'pending' | 'approved' | 'removed';

export interface GatewayRow {
  id: string;
  publicKey: string;
  keyName: string;
  name: string;
  status: EnrolmentStatus;
  request: string;
  requestedAt: number;
  approvedBy: string | null;
  approvalSeq: number | null;
  /** The gateway that removed it, and where its gateway.removed event sits in that chain. */
  removedBy: string | null;
  removalSeq: number | null;
  shippedSeq: number;
  lastSeen: number;
}

/** The enrolment request text a gateway signs (a signed note's text). */
export function enrolmentRequestText(id: string, name: string, time: number): string {
  return `custody-enrolment-request\n${id}\n${name}\n${new Date(time).toISOString()}\n`;
}

/** The identity of the gateway holding `signer` (its checkpoint-signing key). */
export async function gatewayIdentity(signer: { name: string; publicKey: Buffer; signText(text: string): Promise<string> }, time = Date.now()): Promise<GatewayIdentity> {
  const id = keyFingerprint(signer.publicKey);
  const name = hostname() || 'localhost';
  return { id, publicKey: signer.publicKey.toString('base64'), keyName: signer.name, name, request: await signer.signText(enrolmentRequestText(id, name, time)) };
}

/** The signed-note verifier for a row's key. */
export function rowVerifier(row: Pick<GatewayRow, 'publicKey' | 'keyName'>): NoteVerifier {
  const raw = Buffer.from(row.publicKey, 'base64');
  return { name: row.keyName, keyId: ed25519KeyId(row.keyName, raw), publicKey: raw, key: ed25519PublicKeyObject(raw) };
}

/**
 * Why a row's key and request cannot be trusted to be what they claim (anyone who can write to the
 * store can write a row), or undefined: the id must be the key's fingerprint and the request must
 * be signed by that key and name that id.
 */
export function rowProblem(row: Pick<GatewayRow, 'id' | 'publicKey' | 'keyName' | 'request'>): string | undefined {
  let raw: Buffer;
  try {
    raw = Buffer.from(row.publicKey, 'base64');
    if (raw.length !== 32) return 'its public key is not an Ed25519 key';
  } catch {
    return 'its public key cannot be read';
  }
  if (keyFingerprint(raw) !== row.id) return 'its id is not the fingerprint of its key';
  try {
    const check = verifyNote(parseNote(row.request), rowVerifier(row));
    if (!check.ok) return 'its enrolment request is not signed by its key';
    if (check.text.split('\n')[1] !== row.id) return 'its enrolment request names another gateway';
  } catch (err) {
    return `its enrolment request cannot be read (${(err as Error).message})`;
  }
  return undefined;
}

interface RawRow {
  id: string;
  public_key: string;
  key_name: string;
  name: string;
  status: EnrolmentStatus;
  request: string;
  requested_at: string;
  approved_by: string | null;
  approval_seq: string | null;
  removed_by?: string | null;
  removal_seq?: string | null;
  shipped_seq: string;
  last_seen: string;
}

const toRow = (r: RawRow): GatewayRow => ({
  id: r.id,
  publicKey: r.public_key,
  keyName: r.key_name,
  name: r.name,
  status: r.status,
  request: r.request,
  requestedAt: Number(r.requested_at),
  approvedBy: r.approved_by,
  approvalSeq: r.approval_seq === null ? null : Number(r.approval_seq),
  removedBy: r.removed_by ?? null,
  removalSeq: r.removal_seq === null || r.removal_seq === undefined ? null : Number(r.removal_seq),
  shippedSeq: Number(r.shipped_seq),
  lastSeen: Number(r.last_seen),
});

export async function listGateways(client: pg.ClientBase): Promise<GatewayRow[]> {
  return (await client.query<RawRow>('SELECT * FROM custody_gateways ORDER BY requested_at, id')).rows.map(toRow);
}

export async function gatewayRow(client: pg.ClientBase, id: string): Promise<GatewayRow | undefined> {
  const r = (await client.query<RawRow>('SELECT * FROM custody_gateways WHERE id = $1', [id])).rows[0];
  return r && toRow(r);
}

export async function groupId(client: pg.ClientBase): Promise<string | undefined> {
  return (await client.query<{ group_id: string }>('SELECT group_id FROM custody_group')).rows[0]?.group_id;
}

export interface Enrolment {
  group: string;
  status: EnrolmentStatus;
  /** True when this call enrolled the gateway as the store's first. */
  first: boolean;
  row: GatewayRow;
}

/**
 * Joins the store: the first gateway (no enrolled or approved one yet) is enrolled, unless it may
 * not found a group (`mayFound` false: store.trust does not name it); any later one writes a
 * pending row. Under an advisory lock, so two gateways starting together on an empty
 * store do not both become the first. A gateway that already has a row keeps it.
 */
export async function enrol(client: pg.ClientBase, me: GatewayIdentity, mayFound = true): Promise<Enrolment> {
  await client.query('BEGIN');
  try {
    await client.query('SELECT pg_advisory_xact_lock($1)', [ENROLMENT_LOCK]);
    let group = await groupId(client);
    if (!group) {
      group = randomUUID();
      await client.query('INSERT INTO custody_group (group_id, created_at) VALUES ($1, $2)', [group, Date.now()]);
    }
    let row = await gatewayRow(client, me.id);
    let first = false;
    if (!row) {
      // A group whose members were all removed is still a group: a new gateway waits for approval.
      const members = (await client.query<{ n: string }>("SELECT count(*) AS n FROM custody_gateways WHERE status IN ('enrolled', 'approved', 'removed')")).rows[0]!.n;
      // A gateway that may not found a group (store.trust does not name it) waits on an empty store.
      first = Number(members) === 0 && mayFound;
      const now = Date.now();
      await client.query('INSERT INTO custody_gateways (id, public_key, key_name, name, status, request, requested_at, last_seen) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)', [
        me.id,
        me.publicKey,
        me.keyName,
        me.name,
        first ? 'enrolled' : 'pending',
        me.request,
        now,
      ]);
      row = (await gatewayRow(client, me.id))!;
    }
    await client.query('COMMIT');
    return { group, status: row.status, first, row };
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  }
}

/**
 * Whether the store holds the approval of gateway `id`: a `gateway.approved` event naming it, in
 * the chain of a gateway that is itself enrolled or approved (and `among` accepts), whose hashes
 * recompute. Returns the approver and seq, or why not. This trusts the store's gateways table for
 * who the members are: a joining gateway goes on to prove the approval from keys it pins
 * (shipper-worker.ts, `admission`), as `custody verify --keys` does.
 */
export async function findApproval(client: pg.ClientBase, id: string, among: (gateway: string) => boolean = () => true): Promise<{ by: string; seq: number } | { missing: string }> {
  const rows = await membersEventsNaming(client, 'gateway.approved', id);
  const r = rows.find((x) => among(x.gateway) && approvalEventIntact(x));
  if (r) return { by: r.gateway, seq: Number(r.seq) };
  return { missing: rows.length ? 'the approval found in the store does not match its hashes' : 'no enrolled gateway has approved it yet' };
}

/** A `gateway.removed` event: the remover, where it sits in the remover's chain, and why. */
export interface Removal {
  by: string;
  seq: number;
  hash: string;
  reason: string;
}

/** Events of `kind` whose payload names gateway `id`, in the chains of other gateways that are (or were) members. */
async function membersEventsNaming(client: pg.ClientBase, kind: 'gateway.approved', id: string): Promise<(PgEventRow & { gateway: string })[]> {
  return (
    await client.query<PgEventRow & { gateway: string }>(
      `SELECT e.gateway, e.seq, e.time, e.kind, e.session, e.actor, e.connection, e.payload, e.purged, e.spans, e.payload_hash, e.prev_hash, e.hash
         FROM custody_events e JOIN custody_gateways g ON g.id = e.gateway AND g.status IN ('enrolled', 'approved', 'removed')
        WHERE e.kind = $2 AND e.gateway <> $1 AND e.payload IS NOT NULL AND (e.payload::jsonb ->> 'id') = $1
        ORDER BY e.seq`,
      [id, kind],
    )
  ).rows;
}

/**
 * Marks the row of gateway `id` approved (or removed) by gateway `by`, whose chain records it at
 * `seq`: the index of the `gateway.approved` (`gateway.removed`) event, written once that event is
 * in the store under a signed checkpoint. Only a pending row is approved; a row is removed once,
 * but for `unproven`, a row marked removed without a proven removal behind it (member-status.ts),
 * whose index is replaced by the real one.
 */
export async function markGateway(client: pg.ClientBase, action: 'approved' | 'removed', id: string, by: string, seq: number, unproven = false): Promise<void> {
  await client.query(
    action === 'approved'
      ? "UPDATE custody_gateways SET status = 'approved', approved_by = $2, approval_seq = $3 WHERE id = $1 AND status = 'pending'"
      : `UPDATE custody_gateways SET status = 'removed', removed_by = $2, removal_seq = $3 WHERE id = $1${unproven ? '' : " AND status <> 'removed'"}`,
    [id, by, seq],
  );
}

/**
 * The gateways removed from the group, each with the removal events naming it, in the order of
 * their seqs: every `gateway.removed` in the store naming a gateway other than its chain's, whose
 * hashes recompute, whatever the gateways table says (a row edited back from removed, or a
 * remover's row edited, hides nothing: each event is proven by its reader, member-trust.ts,
 * provenNewRemovals). `known` are skipped (each removal is checked once per reader).
 */
export async function newRemovals(client: pg.ClientBase, known: ReadonlySet<string>): Promise<Map<string, Removal[]>> {
  const out = new Map<string, Removal[]>();
  const rows = (
    await client.query<PgEventRow & { gateway: string }>(
      `SELECT gateway, ${PG_EVENT_COLUMNS} FROM custody_events WHERE kind LIKE 'gateway.%' AND kind = 'gateway.removed' AND payload IS NOT NULL AND NOT purged ORDER BY seq, gateway`,
    )
  ).rows;
  for (const r of rows) {
    let p: { id?: unknown; reason?: unknown };
    try {
      p = JSON.parse(r.payload!) as typeof p;
    } catch {
      continue; // a removal no one can read removes nothing
    }
    if (typeof p.id !== 'string' || p.id === r.gateway || known.has(p.id) || !approvalEventIntact(r)) continue;
    const list = out.get(p.id) ?? out.set(p.id, []).get(p.id)!;
    list.push({ by: r.gateway, seq: Number(r.seq), hash: r.hash, reason: typeof p.reason === 'string' ? p.reason : '' });
  }
  return out;
}

function approvalEventIntact(r: PgEventRow): boolean {
  return !r.purged && payloadIntact(r) && rowChainHash(r.prev_hash, r) === r.hash;
}

/**
 * Why gateway `me` cannot approve `target` (undefined: it can): only a member approves (`standing`
 * says why `me` is not one, from its own records: member-status.ts, selfStanding, never its row's
 * status), a pending row, signed by its own key. `proof` is whether the target's status is proven
 * (member-status.ts), for what a refusal says.
 */
export function approvalProblem(me: string, standing: string | undefined, target: GatewayRow, proof?: { proven: boolean; problem?: string }): string | undefined {
  if (standing) return standing;
  if (target.id === me) return 'a gateway cannot approve itself';
  if (target.status !== 'pending') return proof && !proof.proven ? `gateway ${target.id} is not pending: the store's table says ${target.status}, which is not proven (${proof.problem}); only a pending row can be approved` : `gateway ${target.id} is already ${target.status}`;
  const problem = rowProblem(target);
  return problem ? `gateway ${target.id} cannot be approved: ${problem}` : undefined;
}

/**
 * Why gateway `me` cannot remove `target` (undefined: it can). Only a member removes (`standing`,
 * as for approvalProblem), never itself, and a gateway is removed once: a row marked removed whose
 * removal is not proven (`proof`) can be removed for real. A pending gateway can be removed too:
 * its request is refused.
 */
export function removalProblem(me: string, standing: string | undefined, target: GatewayRow, proof?: { proven: boolean }): string | undefined {
  if (standing) return standing;
  if (target.id === me) return 'a gateway cannot remove itself: remove it from another gateway of the group';
  if (target.status === 'removed' && proof?.proven !== false) return `gateway ${target.id} is already removed`;
  return undefined;
}

/** Why gateway `me` is not a member when its row is missing from the store. */
export const notInStore = (me: string) => `this gateway (${me}) is not in the shared store: only an enrolled or approved gateway can approve or remove another`;

/** The one gateway row `idOrPrefix` names (a full id, or a unique prefix of one, with or without `SHA256:`). */
export function pickGateway(rows: readonly GatewayRow[], idOrPrefix: string): GatewayRow {
  const want = idOrPrefix.startsWith('SHA256:') ? idOrPrefix : `SHA256:${idOrPrefix}`;
  const exact = rows.find((r) => r.id === want);
  if (exact) return exact;
  const matches = rows.filter((r) => r.id.startsWith(want));
  if (matches.length === 1) return matches[0]!;
  if (!matches.length) throw new Error(`no gateway ${idOrPrefix} in the shared store (custody gateways list shows them)`);
  throw new Error(`${idOrPrefix} names ${matches.length} gateways; give more of the id`);
}
