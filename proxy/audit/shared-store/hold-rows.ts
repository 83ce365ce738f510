/**
 * Holds across gateways in the shared store (docs/SCALE-OUT.md, "Holds across gateways"): the rows
 * and the statements on them, run by the hold worker (hold-sync-worker.ts), never on the proxies'
 * thread.
 *
 * - `custody_holds`: one row per hold, written by its owner (the gateway whose request waits) when
 *   the hold is created, voted on and resolved; a final state is never overwritten, so the first
 *   resolution written wins (the owner's decision, or another gateway's abandonment once the
 *   owner's lease expired).
 * - `custody_hold_votes`: one row per vote, written by the gateway where it was cast, with where
 *   its `hold.vote` sits in that gateway's chain, signed by that gateway's checkpoint key over all
 *   of them (`voteText`): the owner counts a vote only when it is signed by the key proven for the
 *   gateway the row names (hold-sync-worker.ts), so whoever can write to the store cannot cast one.
 * - `custody_leases`: each gateway renews its lease every second, on the store's clock.
 *
 * Every write takes HOLDS_LOCK, then the next change number, then announces the hold with
 * `NOTIFY custody_holds, '<hold id>'`, all in one transaction: notifications arrive on commit, and
 * change numbers are committed in order, so a reader that keeps the highest number it has seen
 * misses nothing when it reads `change > cursor` after a reconnect.
 */
import type pg from 'pg';
import { canonicalize } from '../../../shared/canonical-json';
import type { EventRef } from '../../../shared/events';
import type { HoldView, HoldVote } from '../../../shared/holds';
import { HOLDS_LOCK } from './schema';

export const HOLDS_CHANNEL = 'custody_holds';
/** A lease lasts this long after its last renewal (renewed every second). */
export const LEASE_MS = 5000;
/** A claim on an expired owner's holds that was not finished within this long may be taken over. */
const CLAIM_MS = 10_000;

export type { EventRef };

export interface HoldRowWrite {
  id: string;
  gateway: string;
  view: HoldView;
  created: { seq: number; hash: string };
  /** The event that records the resolution, in the chain of the gateway that wrote it. */
  resolved?: EventRef;
}

/** A vote with the grant its approval asked for. */
export type StoredVoteBody = HoldVote & { grantMs?: number };

export interface VoteRowWrite {
  hold: string;
  /** Where it was cast, and its hold.vote there. */
  event: EventRef;
  vote: StoredVoteBody;
}

export interface StoredHold {
  id: string;
  gateway: string;
  view: HoldView;
  created: EventRef;
  resolvedBy: string | null;
  change: number;
  /** The owner's host name as its gateway row gives it (display only). */
  gatewayName?: string;
}

export interface StoredVote {
  hold: string;
  event: EventRef;
  vote: StoredVoteBody;
  change: number;
}

/** A vote as read, with the text its row's signature must be over (`voteText`) and that signature (null: unsigned). */
export type SignedStoredVote = StoredVote & { signed: { text: string; signature: string | null } };

export interface HoldChanges<V extends StoredVote = StoredVote> {
  holds: StoredHold[];
  votes: V[];
  /** The highest change number read (the next cursor). */
  cursor: number;
}

const STORE_NOW = '(extract(epoch from clock_timestamp()) * 1000)::bigint';

/** Runs `fn` with the next change number, under HOLDS_LOCK, in one transaction (every hold table's write: hold-rows.ts, grant-rows.ts). */
export async function inHoldTransaction<T>(c: pg.ClientBase, fn: (change: number) => Promise<T>): Promise<T> {
  await c.query('BEGIN');
  try {
    await c.query('SELECT pg_advisory_xact_lock($1)', [HOLDS_LOCK]);
    const change = Number((await c.query<{ n: string }>("SELECT nextval('custody_hold_change') AS n")).rows[0]!.n);
    const r = await fn(change);
    await c.query('COMMIT');
    return r;
  } catch (err) {
    await c.query('ROLLBACK').catch(() => {});
    throw err;
  }
}

/** Writes a hold's row (not over a final state); returns whether it was written. */
export function writeHoldRow(c: pg.ClientBase, h: HoldRowWrite): Promise<boolean> {
  return inHoldTransaction(c, async (change) => {
    const r = await c.query(
      `INSERT INTO custody_holds (id, gateway, state, view, created_seq, created_hash, resolved_by, resolved_seq, resolved_hash, created_at, change)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
       ON CONFLICT (id) DO UPDATE SET state = excluded.state, view = excluded.view, resolved_by = excluded.resolved_by,
         resolved_seq = excluded.resolved_seq, resolved_hash = excluded.resolved_hash, change = excluded.change
       WHERE custody_holds.state = 'pending'`,
      [h.id, h.gateway, h.view.state, JSON.stringify(h.view), h.created.seq, h.created.hash, h.resolved?.gateway ?? null, h.resolved?.seq ?? null, h.resolved?.hash ?? null, h.view.createdAt, change],
    );
    if (r.rowCount) await c.query('SELECT pg_notify($1, $2)', [HOLDS_CHANNEL, h.id]);
    return (r.rowCount ?? 0) > 0;
  });
}

/** The columns of a vote's row that its signature covers (the vote as the JSON text stored). */
interface VoteColumns {
  hold: string;
  gateway: string;
  seq: number;
  hash: string;
  person: string;
  vote: string;
}

/** What the casting gateway signs: every column of the row but its change number. */
export const voteText = (v: VoteColumns) => `custody-hold-vote/v1\n${canonicalize([v.hold, v.gateway, v.seq, v.hash, v.person, v.vote])}`;

const voteColumns = (v: VoteRowWrite): VoteColumns => ({ hold: v.hold, gateway: v.event.gateway, seq: v.event.seq, hash: v.event.hash, person: v.vote.person ?? v.vote.by, vote: JSON.stringify(v.vote) });

/** Signs a vote's row with `signRaw` (the casting gateway's key: a key file, or the audit.signer program); base64. */
export async function signVoteRow(v: VoteRowWrite, signRaw: (message: Buffer) => Promise<Buffer>): Promise<string> {
  return (await signRaw(Buffer.from(voteText(voteColumns(v))))).toString('base64');
}

/**
 * Writes a vote's row (once: a retry of the same vote changes nothing), with its signature
 * (`signVoteRow`); a row without one is written (an older gateway's) but never counted.
 */
export function writeVoteRow(c: pg.ClientBase, v: VoteRowWrite, signature?: string): Promise<boolean> {
  const row = voteColumns(v);
  return inHoldTransaction(c, async (change) => {
    const r = await c.query('INSERT INTO custody_hold_votes (hold, gateway, seq, hash, person, vote, change, signature) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING', [
      row.hold,
      row.gateway,
      row.seq,
      row.hash,
      row.person,
      row.vote,
      change,
      signature ?? null,
    ]);
    if (r.rowCount) await c.query('SELECT pg_notify($1, $2)', [HOLDS_CHANNEL, v.hold]);
    return (r.rowCount ?? 0) > 0;
  });
}

interface HoldRow {
  id: string;
  gateway: string;
  view: string;
  created_seq: string;
  created_hash: string;
  resolved_by: string | null;
  change: string;
  gateway_name: string | null;
}

interface VoteRow {
  hold: string;
  gateway: string;
  seq: string;
  hash: string;
  person: string;
  vote: string;
  change: string;
  signature: string | null;
}

const HOLD_COLUMNS = 'h.id, h.gateway, h.view, h.created_seq, h.created_hash, h.resolved_by, h.change, (SELECT g.name FROM custody_gateways g WHERE g.id = h.gateway) AS gateway_name';
const VOTE_COLUMNS = 'v.hold, v.gateway, v.seq, v.hash, v.person, v.vote, v.change, v.signature';
/**
 * Only members of the group count: a row written under a pending or unknown gateway's name is
 * ignored. The table's status is only a first filter: the hold worker keeps a row only when its
 * gateway is proven a member from the chains (member-trust.ts), as a store writer can write a row
 * claiming any status.
 */
const MEMBER = "IN (SELECT id FROM custody_gateways WHERE status IN ('enrolled', 'approved'))";

function holdOf(r: HoldRow): StoredHold {
  return { id: r.id, gateway: r.gateway, view: JSON.parse(r.view) as HoldView, created: { gateway: r.gateway, seq: Number(r.created_seq), hash: r.created_hash }, resolvedBy: r.resolved_by, change: Number(r.change), ...(r.gateway_name ? { gatewayName: r.gateway_name } : {}) };
}

function voteOf(r: VoteRow): SignedStoredVote {
  const text = voteText({ hold: r.hold, gateway: r.gateway, seq: Number(r.seq), hash: r.hash, person: r.person, vote: r.vote });
  return { hold: r.hold, event: { gateway: r.gateway, seq: Number(r.seq), hash: r.hash }, vote: JSON.parse(r.vote) as StoredVoteBody, change: Number(r.change), signed: { text, signature: r.signature } };
}

/** Everything changed after `cursor`, in change order. */
export async function readHoldChanges(c: pg.ClientBase, cursor: number): Promise<HoldChanges<SignedStoredVote>> {
  const holds = (await c.query<HoldRow>(`SELECT ${HOLD_COLUMNS} FROM custody_holds h WHERE h.change > $1 AND h.gateway ${MEMBER} ORDER BY h.change`, [cursor])).rows.map(holdOf);
  const votes = (await c.query<VoteRow>(`SELECT ${VOTE_COLUMNS} FROM custody_hold_votes v WHERE v.change > $1 AND v.gateway ${MEMBER} ORDER BY v.change`, [cursor])).rows.map(voteOf);
  return { holds, votes, cursor: Math.max(cursor, ...holds.map((h) => h.change), ...votes.map((v) => v.change)) };
}

/**
 * What a gateway needs when it (re)starts: every pending hold and the votes on them, and the
 * cursor to read changes after, from one snapshot.
 */
export async function readPendingHolds(c: pg.ClientBase): Promise<HoldChanges<SignedStoredVote>> {
  await c.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  try {
    const cursor = Number((await c.query<{ n: string }>('SELECT greatest((SELECT max(change) FROM custody_holds), (SELECT max(change) FROM custody_hold_votes), 0) AS n')).rows[0]!.n);
    const holds = (await c.query<HoldRow>(`SELECT ${HOLD_COLUMNS} FROM custody_holds h WHERE h.state = 'pending' AND h.gateway ${MEMBER} ORDER BY h.change`)).rows.map(holdOf);
    const votes = (await c.query<VoteRow>(`SELECT ${VOTE_COLUMNS} FROM custody_hold_votes v JOIN custody_holds h ON h.id = v.hold WHERE h.state = 'pending' AND v.gateway ${MEMBER} ORDER BY v.change`)).rows.map(voteOf);
    await c.query('COMMIT');
    return { holds, votes, cursor };
  } catch (err) {
    await c.query('ROLLBACK').catch(() => {});
    throw err;
  }
}

/** Renews `gateway`'s lease for LEASE_MS on the store's clock. */
export async function renewLease(c: pg.ClientBase, gateway: string): Promise<void> {
  await c.query(`INSERT INTO custody_leases (gateway, renewed_at, expires_at) VALUES ($1, ${STORE_NOW}, ${STORE_NOW} + $2) ON CONFLICT (gateway) DO UPDATE SET renewed_at = excluded.renewed_at, expires_at = excluded.expires_at`, [gateway, LEASE_MS]);
}

/** A pending hold whose owner's lease expired, claimed by this gateway to be recorded abandoned. */
export interface OrphanedHold {
  hold: StoredHold;
  /** The owner's lease: when it was last renewed (store clock, ms). */
  leaseRenewedAt: number;
  /** The owner's last event in the store (its chain's shipped head), cited by the abandonment. */
  lastEvent: EventRef | null;
}

/**
 * Claims the pending holds of other gateways whose lease has expired (a claim not finished within
 * CLAIM_MS may be taken over), so one gateway records each abandonment.
 */
export async function claimOrphanedHolds(c: pg.ClientBase, me: string): Promise<OrphanedHold[]> {
  const r = await c.query<HoldRow & { renewed_at: string; shipped_seq: string | null; shipped_hash: string | null }>(
    `UPDATE custody_holds h SET abandoning = $1, abandoning_at = ${STORE_NOW}
     FROM custody_leases l LEFT JOIN custody_gateways g ON g.id = l.gateway
     WHERE l.gateway = h.gateway AND h.state = 'pending' AND h.gateway <> $1 AND l.expires_at < ${STORE_NOW}
       AND (h.abandoning IS NULL OR h.abandoning_at < ${STORE_NOW} - $2) AND $1 ${MEMBER}
     RETURNING ${HOLD_COLUMNS}, l.renewed_at, g.shipped_seq, g.shipped_hash`,
    [me, CLAIM_MS],
  );
  return r.rows.map((row) => ({
    hold: holdOf(row),
    leaseRenewedAt: Number(row.renewed_at),
    lastEvent: row.shipped_seq && Number(row.shipped_seq) > 0 ? { gateway: row.gateway, seq: Number(row.shipped_seq), hash: row.shipped_hash! } : null,
  }));
}
