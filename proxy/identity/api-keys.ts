/**
 * Gateway-issued API keys: `cst_<id>_<secret>`. Only SHA-256 of the whole key is stored (the
 * key has 192 bits of randomness, so a fast hash is enough; there is nothing to brute-force).
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type Database from 'better-sqlite3';
import type { ApiKeyRecord } from '../../shared/identity';

export type { ApiKeyRecord };

export type KeyCheck = { ok: true; key: ApiKeyRecord } | { ok: false; reason: 'malformed' | 'unknown' | 'expired' | 'revoked' };

const KEY_RE = /^cst_([a-z0-9]{12})_([A-Za-z0-9_-]{32})$/;

function hashKey(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}

interface Row {
  id: string;
  name: string;
  hash: string;
  groups: string;
  created_at: number;
  created_by: string | null;
  expires_at: number | null;
  revoked_at: number | null;
  last_used_at: number | null;
}

function toRecord(r: Row): ApiKeyRecord {
  return {
    id: r.id,
    name: r.name,
    groups: JSON.parse(r.groups) as string[],
    createdAt: r.created_at,
    createdBy: r.created_by,
    expiresAt: r.expires_at,
    revokedAt: r.revoked_at,
    lastUsedAt: r.last_used_at,
  };
}

export class ApiKeyStore {
  /** Rows read in the last 5 s, with the record and the key that last matched (no hashing then). */
  private cache = new Map<string, { row: Row; checkedAt: number; record?: ApiKeyRecord; matched?: Buffer }>();

  constructor(private readonly db: Database.Database) {}

  /** Creates a key and returns it in full; this is the only time the secret exists outside the caller. */
  create(opts: { name: string; groups: string[]; expiresAt?: number | null; createdBy?: string }): { key: string; record: ApiKeyRecord } {
    const id = randomBytes(9).toString('base64url').toLowerCase().replace(/[^a-z0-9]/g, '0').slice(0, 12).padEnd(12, '0');
    const key = `cst_${id}_${randomBytes(24).toString('base64url')}`;
    const now = Date.now();
    this.db
      .prepare('INSERT INTO api_keys (id, name, hash, groups, created_at, created_by, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)')
      .run(id, opts.name, hashKey(key), JSON.stringify(opts.groups), now, opts.createdBy ?? null, opts.expiresAt ?? null);
    return { key, record: this.get(id)! };
  }

  /** Checks a presented key. Constant-time on the hash; cached briefly so the proxy path does no I/O. */
  check(key: string, now = Date.now()): KeyCheck {
    const m = KEY_RE.exec(key);
    if (!m) return { ok: false, reason: 'malformed' };
    const id = m[1]!;
    let entry = this.cache.get(id);
    if (!entry || now - entry.checkedAt > 5000) {
      const row = this.db.prepare('SELECT * FROM api_keys WHERE id = ?').get(id) as Row | undefined;
      if (!row) return { ok: false, reason: 'unknown' };
      entry = { row, checkedAt: now };
      this.cache.set(id, entry);
    }
    const presented = Buffer.from(key, 'utf8');
    const m2 = entry.matched;
    if (!m2 || m2.length !== presented.length || !timingSafeEqual(m2, presented)) {
      const a = Buffer.from(entry.row.hash, 'hex');
      const b = Buffer.from(hashKey(key), 'hex');
      if (a.length !== b.length || !timingSafeEqual(a, b)) return { ok: false, reason: 'unknown' };
      entry.matched = presented;
    }
    if (entry.row.revoked_at !== null) return { ok: false, reason: 'revoked' };
    if (entry.row.expires_at !== null && entry.row.expires_at <= now) return { ok: false, reason: 'expired' };
    // Shared by every request with this key until the row is read again: frozen.
    if (!entry.record) {
      const r = toRecord(entry.row);
      entry.record = Object.freeze({ ...r, groups: Object.freeze(r.groups) as string[] });
    }
    return { ok: true, key: entry.record };
  }

  /**
   * `key:<id>` when `credential` is shaped like a key whose id exists (right or wrong secret): the
   * prefix failed attempts are counted under, so a wrong secret for a real key is noticed at once.
   */
  knownPrefix(credential: string | undefined): string | undefined {
    const id = /^cst_([a-z0-9]{12})_/.exec(credential ?? '')?.[1];
    if (!id) return undefined;
    return this.cache.has(id) || this.db.prepare('SELECT 1 FROM api_keys WHERE id = ?').get(id) ? `key:${id}` : undefined;
  }

  get(id: string): ApiKeyRecord | undefined {
    const row = this.db.prepare('SELECT * FROM api_keys WHERE id = ?').get(id) as Row | undefined;
    return row && toRecord(row);
  }

  list(): ApiKeyRecord[] {
    return (this.db.prepare('SELECT * FROM api_keys ORDER BY created_at').all() as Row[]).map(toRecord);
  }

  count(): number {
    return (this.db.prepare('SELECT count(*) AS n FROM api_keys').get() as { n: number }).n;
  }

  revoke(id: string, now = Date.now()): boolean {
    this.cache.delete(id);
    return this.db.prepare('UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL').run(now, id).changes > 0;
  }

  expire(id: string, at = Date.now()): boolean {
    this.cache.delete(id);
    return this.db.prepare('UPDATE api_keys SET expires_at = ? WHERE id = ?').run(at, id).changes > 0;
  }
}
