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
interface GrantColumns {
  id: string;
  gateway: string;
  subject: string;
  connection: string;
  rule: string;
  hold: string;
  grantedBy: string;
  resolvedSeq: number;
  resolvedHash: string;
  expiresAt: number;
  createdAt: number;
}

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

interface GrantRow {
  id: string;
  gateway: string;
  subject: string;
  connection: string;
  rule: string;
  hold: string;
  granted_by: string;
  resolved_seq: string;
  resolved_hash: string;
  expires_at: string;
  created_at: string;
  signature: string | null;
  change: string;
}

function grantOf(r: GrantRow): SignedStoredGrant {
  const cols: GrantColumns = {
    id: r.id,
    gateway: r.gateway,
    subject: r.subject,
    connection: r.connection,
    rule: r.rule,
    hold: r.hold,
    grantedBy: r.granted_by,
    resolvedSeq: Number(r.resolved_seq),
    resolvedHash: r.resolved_hash,
    expiresAt: Number(r.expires_at),
    createdAt: Number(r.created_at),
  };
  let grantedBy: unknown;
  try {
    grantedBy = JSON.parse(r.granted_by);
  } catch {
    grantedBy = undefined;
  }
  // A row whose approvers are not a list of names was not written by a gateway: it cannot verify either.
  const names = Array.isArray(grantedBy) && grantedBy.every((n) => typeof n === 'string') ? (grantedBy as string[]) : [];
  return {
    id: cols.id,
    gateway: cols.gateway,
    subject: cols.subject,
    connection: cols.connection,
    rule: cols.rule,
    hold: cols.hold,
    grantedBy: names,
    resolved: { seq: cols.resolvedSeq, hash: cols.resolvedHash },
    expiresAt: cols.expiresAt,
    createdAt: cols.createdAt,
    change: Number(r.change),
    signed: { text: grantText(cols), signature: r.signature },
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
