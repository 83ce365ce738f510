/**
 * Console sign-in sessions: an opaque random id in an HttpOnly cookie, the identity server-side.
 * Only SHA-256 of the id is stored, so a copy of the database does not let anyone sign in.
 */
import { createHash, randomBytes } from 'node:crypto';
import type Database from 'better-sqlite3';
import type { Identity } from '../../shared/identity';

export const SESSION_COOKIE = 'custody_session';
const DEFAULT_TTL_MS = 12 * 3_600_000;

const digest = (id: string) => createHash('sha256').update(id).digest('hex');

/**
 * Re-derives a session's identity from its credential's current state at each request: roles from
 * current groups, the person's lock, the key's revocation. Undefined ends the session.
 */
export type SessionRefresh = (stored: Identity) => Identity | undefined;

export class ConsoleSessions {
  constructor(
    private readonly db: Database.Database,
    private readonly refresh?: SessionRefresh,
  ) {}

  create(identity: Identity, ttlMs = DEFAULT_TTL_MS): { id: string; expiresAt: number } {
    const id = randomBytes(32).toString('base64url');
    const now = Date.now();
    this.db.prepare('INSERT INTO console_sessions (id, identity, created_at, expires_at) VALUES (?, ?, ?, ?)').run(digest(id), JSON.stringify(identity), now, now + ttlMs);
    return { id, expiresAt: now + ttlMs };
  }

  get(id: string, now = Date.now()): Identity | undefined {
    const row = this.db.prepare('SELECT identity, expires_at FROM console_sessions WHERE id = ?').get(digest(id)) as { identity: string; expires_at: number } | undefined;
    if (!row || row.expires_at <= now) return undefined;
    const stored = JSON.parse(row.identity) as Identity;
    if (!this.refresh) return stored;
    const current = this.refresh(stored);
    if (!current) this.delete(id);
    return current;
  }

  /** The stored identity and expiry, without re-deriving it (for a token refresh). */
  peek(id: string, now = Date.now()): { identity: Identity; expiresAt: number } | undefined {
    const row = this.db.prepare('SELECT identity, expires_at FROM console_sessions WHERE id = ?').get(digest(id)) as { identity: string; expires_at: number } | undefined;
    if (!row || row.expires_at <= now) return undefined;
    return { identity: JSON.parse(row.identity) as Identity, expiresAt: row.expires_at };
  }

  /** Replaces a session's identity after its credential was refreshed (the 12 h limit stays). */
  replace(id: string, identity: Identity): void {
    this.db.prepare('UPDATE console_sessions SET identity = ? WHERE id = ?').run(JSON.stringify(identity), digest(id));
  }

  delete(id: string): void {
    this.db.prepare('DELETE FROM console_sessions WHERE id = ?').run(digest(id));
  }

  /** Ends every session of a person (locked). */
  deleteForPerson(person: string): number {
    return this.db.prepare("DELETE FROM console_sessions WHERE json_extract(identity, '$.person') = ?").run(person).changes;
  }

  /** Ends every session signed in with API key `keyId` (the key was revoked or expired). */
  deleteForKey(keyId: string): number {
    return this.db.prepare("DELETE FROM console_sessions WHERE json_extract(identity, '$.keyId') = ?").run(keyId).changes;
  }

  /** Drops expired sessions (called at start; expired ones are never accepted anyway). */
  prune(now = Date.now()): number {
    return this.db.prepare('DELETE FROM console_sessions WHERE expires_at <= ?').run(now).changes;
  }
}

/**
 * Cookies of a request. A value that is not valid percent-encoding is skipped rather than thrown
 * on: a malformed cookie (`custody_session=%`) reads as no cookie, never as a server error.
 */
export function parseCookies(header: string | undefined): Record<string, string> {
  const out: Record<string, string> = Object.create(null) as Record<string, string>;
  if (typeof header !== 'string') return out;
  for (const part of header.split(';')) {
    const i = part.indexOf('=');
    if (i <= 0) continue;
    const name = part.slice(0, i).trim();
    let value = part.slice(i + 1).trim();
    if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) value = value.slice(1, -1);
    try {
      value = decodeURIComponent(value);
    } catch {
      continue;
    }
    // The first occurrence wins (RFC 6265 §5.4 orders the more specific path first).
    if (name && !(name in out)) out[name] = value;
  }
  return out;
}
