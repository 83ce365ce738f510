/**
 * Time-boxed grants shared by the group (docs/SCALE-OUT.md, "Holds across gateways"): the rows of
 * `custody_grants` and the statements on them, run by the hold worker (hold-sync-worker.ts), never
 * on the proxies' thread.
 *
 * When a hold is approved with a grant, the gateway that held the request writes the grant here:
 * whose requests it covers (subject, connection, rule), the hold that gave it and where its
 * `hold.resolved` sits in that gateway's chain, the approvers, when it ends, and an Ed25519
 * signature by that gateway's checkpoint key over all of them (`grantText`), as vote rows are signed
 * (hold-rows.ts). Every other gateway applies a row only when that signature verifies under the key
 * it proved for the gateway the row names (member-trust.ts): whoever can write to the store can
 * neither mint a grant nor stretch one.
 *
 * Rows are numbered from the hold changes under HOLDS_LOCK and announced on `custody_holds`, so the
 * hold worker's listening connection hears them with the holds.
 */
import type pg from 'pg';
import { canonicalize } from '../../../shared/canonical-json';
import type { EventRef } from '../../../shared/events';
import { HOLDS_CHANNEL, inHoldTransaction } from './hold-rows';

/** A grant as the holding gateway writes it. */
export interface GrantRowWrite {
  id: string;
  /** The gateway that held the request (and signs the row). */
  gateway: string;
  subject: string;
  connection: string;
  rule: string;
  hold: string;
  /** The approvers' names. */
  grantedBy: string[];
  /** The `hold.resolved` that gave it, in the holding gateway's chain. */
  resolved: { seq: number; hash: string };
  expiresAt: number;
  createdAt: number;
}

export interface StoredGrant extends GrantRowWrite {
  change: number;
}

/** A grant as read, with the text its row's signature must be over and that signature (null: unsigned). */
export type SignedStoredGrant = StoredGrant & { signed: { text: string; signature: string | null } };

/** The columns a grant's signature covers, as stored (`granted_by` the JSON text). */
type GrantColumns = Omit<GrantRowWrite, 'grantedBy' | 'resolved'> & { grantedBy: string; resolvedSeq: number; resolvedHash: string };

/** What the holding gateway signs: every column of the row but its change number and signature. */
export const grantText = (g: GrantColumns) =>
  `custody-grant/v1\n${canonicalize([g.id, g.gateway, g.subject, g.connection, g.rule, g.hold, g.grantedBy, g.resolvedSeq, g.resolvedHash, g.expiresAt, g.createdAt])}`;

const grantColumns = (g: GrantRowWrite): GrantColumns => ({
  id: g.id,
  gateway: g.gateway,
  subject: g.subject,
  connection: g.connection,
  rule: g.rule,
  hold: g.hold,
  grantedBy: JSON.stringify(g.grantedBy),
  resolvedSeq: g.resolved.seq,
  resolvedHash: g.resolved.hash,
  expiresAt: g.expiresAt,
  createdAt: g.createdAt,
});

/** Signs a grant's row with `signRaw` (the holding gateway's key: a key file, or the audit.signer program); base64. */
export async function signGrantRow(g: GrantRowWrite, signRaw: (message: Buffer) => Promise<Buffer>): Promise<string> {
  return (await signRaw(Buffer.from(grantText(grantColumns(g))))).toString('base64');
}

/** Writes a grant's row with its signature (once: a retry changes nothing); returns whether it was written. */
export function writeGrantRow(c: pg.ClientBase, g: GrantRowWrite, signature: string): Promise<boolean> {
  const row = grantColumns(g);
  return inHoldTransaction(c, async (change) => {
    const r = await c.query(
      `INSERT INTO custody_grants (id, gateway, subject, connection, rule, hold, granted_by, resolved_seq, resolved_hash, expires_at, created_at, signature, change)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT (id) DO NOTHING`,
      [row.id, row.gateway, row.subject, row.connection, row.rule, row.hold, row.grantedBy, row.resolvedSeq, row.resolvedHash, row.expiresAt, row.createdAt, signature, change],
    );
    if (r.rowCount) await c.query('SELECT pg_notify($1, $2)', [HOLDS_CHANNEL, g.hold]);
    return (r.rowCount ?? 0) > 0;
  });
}

/** A row of `custody_grants` as `pg` returns it (BIGINT columns as strings). */
export type GrantRow = Pick<GrantRowWrite, 'id' | 'gateway' | 'subject' | 'connection' | 'rule' | 'hold'> & {
  granted_by: string;
  resolved_seq: string;
  resolved_hash: string;
  expires_at: string;
  created_at: string;
  signature: string | null;
  change: string;
};

/** The text a stored row's signature must be over. */
export function storedGrantText(r: Omit<GrantRow, 'signature' | 'change'>): string {
  const { granted_by, resolved_seq, resolved_hash, expires_at, created_at, ...same } = r;
  return grantText({ ...same, grantedBy: granted_by, resolvedSeq: Number(resolved_seq), resolvedHash: resolved_hash, expiresAt: Number(expires_at), createdAt: Number(created_at) });
}

/** The approvers of a stored row: a row whose list is not one of names was not written by a gateway (its signature cannot verify either). */
function namesOf(json: string): string[] {
  try {
    const v: unknown = JSON.parse(json);
    return Array.isArray(v) && v.every((n) => typeof n === 'string') ? (v as string[]) : [];
  } catch {
    return [];
  }
}

function grantOf(r: GrantRow): SignedStoredGrant {
  const { granted_by, resolved_seq, resolved_hash, expires_at, created_at, signature, change, ...same } = r;
  return {
    ...same,
    grantedBy: namesOf(granted_by),
    resolved: { seq: Number(resolved_seq), hash: resolved_hash },
    expiresAt: Number(expires_at),
    createdAt: Number(created_at),
    change: Number(change),
    signed: { text: storedGrantText(r), signature },
  };
}

/**
 * The grants written after change `cursor` that have not ended by `now` (an ended one is never
 * applied, so it is never read), in change order, and the next cursor. From cursor -1: every grant
 * still running (a gateway that starts, or reconnects after missing announcements).
 */
export async function readGrants(c: pg.ClientBase, cursor: number, now = Date.now()): Promise<{ grants: SignedStoredGrant[]; cursor: number }> {
  const rows = (
    await c.query<GrantRow>(
      `SELECT id, gateway, subject, connection, rule, hold, granted_by, resolved_seq, resolved_hash, expires_at, created_at, signature, change
         FROM custody_grants WHERE change > $1 AND expires_at > $2 ORDER BY change`,
      [cursor, now],
    )
  ).rows;
  const grants = rows.map(grantOf);
  return { grants, cursor: Math.max(cursor, ...grants.map((g) => g.change)) };
}

/** Where a grant's `hold.resolved` sits in the holding gateway's chain. */
export const grantRef = (g: Pick<GrantRowWrite, 'gateway' | 'resolved'>): EventRef => ({ gateway: g.gateway, seq: g.resolved.seq, hash: g.resolved.hash });
