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

export class ConsoleSessions {
  constructor(private readonly db: Database.Database) {}

  create(identity: Identity, ttlMs = DEFAULT_TTL_MS): { id: string; expiresAt: number } {
    const id = randomBytes(32).toString('base64url');
    const now = Date.now();
    this.db.prepare('INSERT INTO console_sessions (id, identity, created_at, expires_at) VALUES (?, ?, ?, ?)').run(digest(id), JSON.stringify(identity), now, now + ttlMs);
    return { id, expiresAt: now + ttlMs };
  }

  get(id: string, now = Date.now()): Identity | undefined {
    const row = this.db.prepare('SELECT identity, expires_at FROM console_sessions WHERE id = ?').get(digest(id)) as { identity: string; expires_at: number } | undefined;
    if (!row || row.expires_at <= now) return undefined;
    return JSON.parse(row.identity) as Identity;
  }

  delete(id: string): void {
    this.db.prepare('DELETE FROM console_sessions WHERE id = ?').run(digest(id));
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

export function parseCookies(header: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of (header ?? '').split(';')) {
    const i = part.indexOf('=');
    if (i > 0) out[part.slice(0, i).trim()] = decodeURIComponent(part.slice(i + 1).trim());
  }
  return out;
}
