/**
 * Console sign-in sessions shared by the gateways of a group (docs/SCALE-OUT.md, "Console
 * sessions"). The gateway that signs someone in keeps the session in its own SQLite table as a
 * lone gateway does, and writes it to `custody_console_sessions`: the SHA-256 of the cookie (never
 * the cookie), the identity, when it expires, and an Ed25519 signature by its checkpoint key over
 * all of them. Another gateway shown that cookie finds the row by the digest and accepts it only
 * when a gateway it trusts signed it (whoever can write to the store cannot mint a session), and
 * not after an end was written for it.
 *
 * Ends (logout, a locked person, a revoked key) are rows of `custody_console_session_ends`, written
 * by whichever gateway ended it, numbered in commit order; every gateway reads those after its
 * cursor about once a second and drops its copy.
 */
import type pg from 'pg';
import { canonicalize } from '../../../shared/canonical-json';
import type { TrustSet } from './key-sync';
import { proveMember } from './member-trust';
import { CONSOLE_ENDS_LOCK } from './schema';

export interface SharedConsoleSession {
  digest: string;
  /** canonical JSON of the Identity, as the signing gateway wrote it */
  identity: string;
  createdAt: number;
  expiresAt: number;
  gateway: string;
}

const sessionText = (s: SharedConsoleSession) => `custody-console-session/v1\n${canonicalize([s.digest, s.identity, s.createdAt, s.expiresAt, s.gateway])}`;

/** Signs a session's row with `signRaw` (the gateway's key: a key file, or the audit.signer program). */
export async function signConsoleSession(s: SharedConsoleSession, signRaw: (message: Buffer) => Promise<Buffer>): Promise<string> {
  return (await signRaw(Buffer.from(sessionText(s)))).toString('base64');
}

/** Writes (or, for its own gateway, rewrites: a refreshed identity) a session signed through `signRaw`. */
export async function putConsoleSession(client: pg.ClientBase, s: SharedConsoleSession, signRaw: (message: Buffer) => Promise<Buffer>): Promise<void> {
  await client.query(
    `INSERT INTO custody_console_sessions (digest, identity, created_at, expires_at, gateway, signature) VALUES ($1, $2, $3, $4, $5, $6)
     ON CONFLICT (digest) DO UPDATE SET identity = excluded.identity, expires_at = excluded.expires_at, signature = excluded.signature
     WHERE custody_console_sessions.gateway = excluded.gateway`,
    [s.digest, s.identity, s.createdAt, s.expiresAt, s.gateway, await signConsoleSession(s, signRaw)],
  );
}

/** `untrusted`: the row claims a signer this gateway cannot prove a member (member-trust.ts); the gateway logs it. */
export type ConsoleSessionLookup = { found: SharedConsoleSession } | { ended: true } | { missing: string; untrusted?: true };

/**
 * The session with cookie digest `digest`, when a gateway `trust` holds (or one proven a member from
 * those through signed approvals in the store, member-trust.ts) signed it, it has not ended and has
 * not expired. A `removed` gateway is never added.
 */
export async function lookupConsoleSession(client: pg.ClientBase, digest: string, trust: TrustSet, now = Date.now(), removed?: (id: string) => boolean): Promise<ConsoleSessionLookup> {
  const r = (
    await client.query<{ identity: string; created_at: string; expires_at: string; gateway: string; signature: string; ended: string | null }>(
      `SELECT s.identity, s.created_at, s.expires_at, s.gateway, s.signature, e.at AS ended
         FROM custody_console_sessions s LEFT JOIN custody_console_session_ends e ON e.digest = s.digest WHERE s.digest = $1`,
      [digest],
    )
  ).rows[0];
  if (!r) return { missing: 'no such session in the shared store' };
  if (r.ended !== null) return { ended: true };
  const s: SharedConsoleSession = { digest, identity: r.identity, createdAt: Number(r.created_at), expiresAt: Number(r.expires_at), gateway: r.gateway };
  if (s.expiresAt <= now) return { missing: 'the session has expired' };
  const untrusted = await proveMember(client, trust, s.gateway, removed);
  if (untrusted) return { missing: `a console session in the store is signed by gateway ${s.gateway}, which this gateway cannot prove a member of the group: ${untrusted}`, untrusted: true };
  if (!trust.verify(s.gateway, sessionText(s), r.signature)) return { missing: `the session is not signed by a gateway this one trusts (${s.gateway})` };
  return { found: s };
}

/** Records that the sessions with these digests ended (here); idempotent. */
export async function endConsoleSessions(client: pg.ClientBase, digests: readonly string[], gateway: string, at = Date.now()): Promise<void> {
  if (!digests.length) return;
  await client.query('BEGIN');
  try {
    await client.query('SELECT pg_advisory_xact_lock($1)', [CONSOLE_ENDS_LOCK]);
    await client.query(
      `INSERT INTO custody_console_session_ends (digest, at, gateway, change) SELECT d, $2, $3, nextval('custody_console_session_change') FROM unnest($1::text[]) AS d ON CONFLICT (digest) DO NOTHING`,
      [digests, at, gateway],
    );
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  }
}

/**
 * Ends recorded after change `cursor`, and the new cursor. A gateway starts from 0: copies kept in
 * its SQLite table across a restart are dropped when they ended meanwhile (ends are kept until a
 * day after their session expired).
 */
export async function readConsoleSessionEnds(client: pg.ClientBase, cursor: number): Promise<{ digests: string[]; cursor: number }> {
  const rows = (await client.query<{ digest: string; change: string }>('SELECT digest, change FROM custody_console_session_ends WHERE change > $1 ORDER BY change', [cursor])).rows;
  return { digests: rows.map((r) => r.digest), cursor: rows.length ? Number(rows[rows.length - 1]!.change) : cursor };
}

/** Drops sessions (and their ends) that expired more than a day ago. */
export async function pruneConsoleSessions(client: pg.ClientBase, now = Date.now()): Promise<void> {
  const before = now - 86_400_000;
  await client.query('DELETE FROM custody_console_session_ends e USING custody_console_sessions s WHERE s.digest = e.digest AND s.expires_at < $1', [before]);
  await client.query('DELETE FROM custody_console_sessions WHERE expires_at < $1', [before]);
}
