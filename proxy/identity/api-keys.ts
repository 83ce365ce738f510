/**
 * Gateway-issued API keys: `cst_<id>_<secret>`. Only SHA-256 of the whole key is stored (the
 * key has 192 bits of randomness, so a fast hash is enough; there is nothing to brute-force).
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type Database from 'better-sqlite3';
import type { ApiKeyRecord } from '../../shared/identity';

export type KeyCheck = { ok: true; key: ApiKeyRecord } | { ok: false; reason: 'malformed' | 'unknown' | 'expired' | 'revoked' };

const KEY_RE = /^cst_([a-z0-9]{12})_([A-Za-z0-9_-]{32})$/;

function hashKey(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}

/** A row of the `api_keys` table. */
export interface ApiKeyRow {
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

function toRecord(r: ApiKeyRow): ApiKeyRecord {
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

/** Reads rows off the gateway's thread (AuditStore.readAsync); without one, keys are read here. */
export type KeyReader = <T>(sql: string, params?: unknown[]) => Promise<T[]>;

interface Entry {
  row: ApiKeyRow;
  /** The record and the key that last matched (no hashing then). */
  record?: ApiKeyRecord;
  matched?: Buffer;
}

/**
 * The gateway's keys, all of them in memory: checks never touch SQLite on the proxies' thread.
 * Writers in this process (create, revoke, expire) update the index as they write; keys created or
 * revoked by another process (the CLI beside a running gateway) arrive through `refresh`, which the
 * gateway runs every few seconds, and a key the index does not know is looked up once
 * (`lookup`) before it is refused.
 */
export class ApiKeyStore {
  private readonly index = new Map<string, Entry>();
  /** Count of writes made here, and the count at each key id's last write: a refresh that read before a write here must not undo it. */
  private writes = 0;
  private readonly writtenAt = new Map<string, number>();

  constructor(
    private readonly db: Database.Database,
    private readonly reader?: KeyReader,
  ) {
    for (const row of db.prepare('SELECT * FROM api_keys').all() as ApiKeyRow[]) this.index.set(row.id, { row });
  }

  /** Creates a key and returns it in full; this is the only time the secret exists outside the caller. */
  create(opts: { name: string; groups: string[]; expiresAt?: number | null; createdBy?: string }): { key: string; record: ApiKeyRecord } {
    const id = randomBytes(9).toString('base64url').toLowerCase().replace(/[^a-z0-9]/g, '0').slice(0, 12).padEnd(12, '0');
    const key = `cst_${id}_${randomBytes(24).toString('base64url')}`;
    const now = Date.now();
    this.db
      .prepare('INSERT INTO api_keys (id, name, hash, groups, created_at, created_by, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)')
      .run(id, opts.name, hashKey(key), JSON.stringify(opts.groups), now, opts.createdBy ?? null, opts.expiresAt ?? null);
    this.reread(id);
    return { key, record: this.get(id)! };
  }

  /** Checks a presented key against the index: constant-time on the hash, no I/O. */
  check(key: string, now = Date.now()): KeyCheck {
    const m = KEY_RE.exec(key);
    if (!m) return { ok: false, reason: 'malformed' };
    const entry = this.index.get(m[1]!);
    if (!entry) return { ok: false, reason: 'unknown' };
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
    // Shared by every request with this key until the row changes: frozen.
    if (!entry.record) {
      const r = toRecord(entry.row);
      entry.record = Object.freeze({ ...r, groups: Object.freeze(r.groups) as string[] });
    }
    return { ok: true, key: entry.record };
  }

  /** True when the index knows the key id of `key` (a `check` then needs no lookup). */
  indexed(key: string): boolean {
    const id = KEY_RE.exec(key)?.[1];
    return id !== undefined && this.index.has(id);
  }

  /**
   * Reads the row of a key id the index does not know (another process created it), off the
   * gateway's thread; rejects with the store's error when it cannot be read.
   */
  async lookup(key: string): Promise<void> {
    const id = KEY_RE.exec(key)?.[1];
    if (id !== undefined) await this.lookupId(id);
  }

  /**
   * `lookup` by key id (an SSH public key names the API key it logs in as by id); `fresh` reads the
   * row even when the index has it, so a revocation made by another process counts at once.
   */
  async lookupId(id: string, fresh = false): Promise<void> {
    if (fresh) {
      const before = this.writes;
      const rows = this.reader ? await this.reader<ApiKeyRow>('SELECT * FROM api_keys WHERE id = ?', [id]) : (this.db.prepare('SELECT * FROM api_keys WHERE id = ?').all(id) as ApiKeyRow[]);
      const e = this.index.get(id);
      if (rows[0] && (this.writtenAt.get(id) ?? 0) <= before && !(e && sameRow(e.row, rows[0]))) this.index.set(id, { row: rows[0] });
      return;
    }
    if (this.index.has(id)) return;
    const rows = this.reader ? await this.reader<ApiKeyRow>('SELECT * FROM api_keys WHERE id = ?', [id]) : (this.db.prepare('SELECT * FROM api_keys WHERE id = ?').all(id) as ApiKeyRow[]);
    if (rows[0] && !this.index.has(id)) this.index.set(id, { row: rows[0] });
  }

  /** Re-reads every key (changes another process made), off the gateway's thread. */
  async refresh(): Promise<void> {
    const before = this.writes;
    const rows = this.reader ? await this.reader<ApiKeyRow>('SELECT * FROM api_keys') : (this.db.prepare('SELECT * FROM api_keys').all() as ApiKeyRow[]);
    // Rows read before a write made here while the read was under way are older than the index.
    const newer = (id: string): boolean => (this.writtenAt.get(id) ?? 0) > before;
    const seen = new Set<string>();
    for (const row of rows) {
      seen.add(row.id);
      if (newer(row.id)) continue;
      const e = this.index.get(row.id);
      if (e && sameRow(e.row, row)) continue;
      this.index.set(row.id, { row });
    }
    for (const id of this.index.keys()) if (!seen.has(id) && !newer(id)) this.index.delete(id);
  }

  /**
   * `key:<id>` when `credential` is shaped like a key whose id exists (right or wrong secret): the
   * prefix failed attempts are counted under, so a wrong secret for a real key is noticed at once.
   */
  knownPrefix(credential: string | undefined): string | undefined {
    const id = /^cst_([a-z0-9]{12})_/.exec(credential ?? '')?.[1];
    if (!id) return undefined;
    return this.index.has(id) ? `key:${id}` : undefined;
  }

  /** A key's record as the index holds it (no I/O). */
  get(id: string): ApiKeyRecord | undefined {
    const e = this.index.get(id);
    return e && toRecord(e.row);
  }

  list(): ApiKeyRecord[] {
    return (this.db.prepare('SELECT * FROM api_keys ORDER BY created_at').all() as ApiKeyRow[]).map(toRecord);
  }

  count(): number {
    return (this.db.prepare('SELECT count(*) AS n FROM api_keys').get() as { n: number }).n;
  }

  revoke(id: string, now = Date.now()): boolean {
    const changed = this.db.prepare('UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL').run(now, id).changes > 0;
    this.reread(id);
    return changed;
  }

  expire(id: string, at = Date.now()): boolean {
    const changed = this.db.prepare('UPDATE api_keys SET expires_at = ? WHERE id = ?').run(at, id).changes > 0;
    this.reread(id);
    return changed;
  }

  /** Puts the row as written into the index (after a write here). */
  private reread(id: string): void {
    this.writtenAt.set(id, ++this.writes);
    const row = this.db.prepare('SELECT * FROM api_keys WHERE id = ?').get(id) as ApiKeyRow | undefined;
    if (row) this.index.set(id, { row });
    else this.index.delete(id);
  }
}

function sameRow(a: ApiKeyRow, b: ApiKeyRow): boolean {
  return a.hash === b.hash && a.groups === b.groups && a.name === b.name && a.expires_at === b.expires_at && a.revoked_at === b.revoked_at;
}
