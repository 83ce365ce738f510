/**
 * Console sign-in sessions: an opaque random id in an HttpOnly cookie, the identity server-side.
 * Only SHA-256 of the id is stored, so a copy of the database does not let anyone sign in.
 */
import { createHash, randomBytes } from 'node:crypto';
import type Database from 'better-sqlite3';
import type { Identity } from '../../shared/identity';
import { LOCAL_PERSON } from './persons';

export const SESSION_COOKIE = 'custody_session';
const DEFAULT_TTL_MS = 12 * 3_600_000;

const digest = (id: string) => createHash('sha256').update(id).digest('hex');

/**
 * Re-derives a session's identity from its credential's current state at each request: roles from
 * current groups, the person's lock, the key's revocation. Undefined ends the session.
 */
export type SessionRefresh = (stored: Identity) => Identity | undefined;

/** A console session as the gateways of a shared store exchange it: by the digest of its cookie. */
export interface PeerSession {
  digest: string;
  /** The identity as the group knows it (see `ConsoleSessions.share`). */
  identity: Identity;
  createdAt: number;
  expiresAt: number;
  /** The gateway that made it. */
  gateway: string;
}

/**
 * The other gateways of a shared store (proxy/audit/shared-store/team.ts): sessions made here are
 * written there, a cookie this gateway does not know is looked up there, and ends go there.
 */
export interface ConsoleSessionPeers {
  /** This gateway's id in the group. */
  self: string;
  put(session: PeerSession): void;
  /** The session with this cookie digest made on another gateway, `ended`, or undefined (unknown, untrusted, expired, or the store did not answer). */
  lookup(digest: string): Promise<PeerSession | 'ended' | undefined>;
  end(digests: string[]): void;
}

/** A session cookie as `create` makes it: 32 random bytes, base64url. */
const COOKIE_SHAPE = /^[A-Za-z0-9_-]{43}$/;

/** Ends this gateway heard of, kept so a cookie that ended is not looked up again (bounded). */
const ENDED_KEPT = 10_000;

export class ConsoleSessions {
  private peers: ConsoleSessionPeers | undefined;
  private readonly ended = new Set<string>();

  constructor(
    private readonly db: Database.Database,
    private readonly refresh?: SessionRefresh,
  ) {}

  /**
   * Shares this gateway's console sessions with the other gateways of a shared store, and accepts
   * theirs. The local user (`local:<user>`, person `person_local`) is one per gateway: in the group
   * it is `person_local@<gateway>`, and on another gateway its subject is `local:<user>@<gateway>`,
   * so it is never taken for that gateway's own local user.
   */
  share(peers: ConsoleSessionPeers): void {
    this.peers = peers;
  }

  private toGroup(identity: Identity): Identity {
    const self = this.peers!.self;
    return identity.person === LOCAL_PERSON ? { ...identity, person: `${LOCAL_PERSON}@${self}` } : identity;
  }

  private fromGroup(s: PeerSession): Identity {
    const self = this.peers!.self;
    const i = s.identity;
    if (s.gateway === self) return i.person === `${LOCAL_PERSON}@${self}` ? { ...i, person: LOCAL_PERSON } : i;
    return i.subject.startsWith('local:') ? { ...i, subject: `${i.subject}@${s.gateway}` } : i;
  }

  create(identity: Identity, ttlMs = DEFAULT_TTL_MS): { id: string; expiresAt: number } {
    const id = randomBytes(32).toString('base64url');
    const now = Date.now();
    this.db.prepare('INSERT INTO console_sessions (id, identity, created_at, expires_at) VALUES (?, ?, ?, ?)').run(digest(id), JSON.stringify(identity), now, now + ttlMs);
    this.peers?.put({ digest: digest(id), identity: this.toGroup(identity), createdAt: now, expiresAt: now + ttlMs, gateway: this.peers.self });
    return { id, expiresAt: now + ttlMs };
  }

  /**
   * `get`, and with a shared store, a session another gateway of the group made: looked up there
   * (off this thread) when this gateway has no row for the cookie, then kept here as a copy until
   * it ends (on any gateway) or expires. Re-derived from the credential here like any session.
   */
  async resolve(id: string, now = Date.now()): Promise<Identity | undefined> {
    const d = digest(id);
    // Only what `create` makes is looked up in the store: a cookie of any other shape costs no query.
    if (!this.peers || !COOKIE_SHAPE.test(id) || this.db.prepare('SELECT 1 FROM console_sessions WHERE id = ?').get(d) || this.ended.has(d)) return this.get(id, now);
    const found = await this.peers.lookup(d);
    if (found === 'ended') this.remember([d]);
    if (!found || found === 'ended' || found.expiresAt <= now) return undefined;
    this.db.prepare('INSERT OR IGNORE INTO console_sessions (id, identity, created_at, expires_at) VALUES (?, ?, ?, ?)').run(d, JSON.stringify(this.fromGroup(found)), found.createdAt, found.expiresAt);
    return this.get(id, now);
  }

  /** Drops the copies of sessions ended on another gateway of the group. */
  dropEnded(digests: string[]): number {
    this.remember(digests);
    const del = this.db.prepare('DELETE FROM console_sessions WHERE id = ?');
    let n = 0;
    for (const d of digests) n += del.run(d).changes;
    return n;
  }

  private remember(digests: string[]): void {
    for (const d of digests) {
      this.ended.add(d);
      if (this.ended.size > ENDED_KEPT) this.ended.delete(this.ended.values().next().value!);
    }
  }

  /** Tells the group that these sessions ended here. */
  private ends(digests: string[]): void {
    if (!this.peers || !digests.length) return;
    this.remember(digests);
    this.peers.end(digests);
  }

  get(id: string, now = Date.now()): Identity | undefined {
    const row = this.db.prepare('SELECT identity, expires_at FROM console_sessions WHERE id = ?').get(digest(id)) as { identity: string; expires_at: number } | undefined;
    if (!row || row.expires_at <= now) return undefined;
    const stored = JSON.parse(row.identity) as Identity;
    if (!this.refresh) return stored;
    const current = this.refresh(stored);
    // Only here: a revoked key or a locked person ends the session everywhere through deleteForKey
    // and deleteForPerson; a copy whose key this gateway has not received yet must not end it there.
    if (!current) this.db.prepare('DELETE FROM console_sessions WHERE id = ?').run(digest(id));
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
    if (!this.peers) return;
    // The group's copy follows (only the gateway that made a session rewrites it there).
    const row = this.db.prepare('SELECT created_at, expires_at FROM console_sessions WHERE id = ?').get(digest(id)) as { created_at: number; expires_at: number } | undefined;
    if (row) this.peers.put({ digest: digest(id), identity: this.toGroup(identity), createdAt: row.created_at, expiresAt: row.expires_at, gateway: this.peers.self });
  }

  /** Ends a session (logout): here, and with a shared store on every gateway of the group. */
  delete(id: string): void {
    this.db.prepare('DELETE FROM console_sessions WHERE id = ?').run(digest(id));
    this.ends([digest(id)]);
  }

  /** Ends every session of a person (locked). */
  deleteForPerson(person: string): number {
    return this.deleteWhere("json_extract(identity, '$.person') = ?", person);
  }

  /** Ends every session signed in with API key `keyId` (the key was revoked or expired). */
  deleteForKey(keyId: string): number {
    return this.deleteWhere("json_extract(identity, '$.keyId') = ?", keyId);
  }

  private deleteWhere(where: string, value: string): number {
    const digests = this.peers ? (this.db.prepare(`SELECT id FROM console_sessions WHERE ${where}`).all(value) as { id: string }[]).map((r) => r.id) : [];
    const n = this.db.prepare(`DELETE FROM console_sessions WHERE ${where}`).run(value).changes;
    this.ends(digests);
    return n;
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
