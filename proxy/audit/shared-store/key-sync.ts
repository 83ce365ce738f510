/**
 * API keys shared by every gateway of a group (docs/SCALE-OUT.md, "One configuration, never
 * stale"). Each gateway keeps its keys in its own SQLite `api_keys` table, as a lone gateway does;
 * the shared store's `custody_api_keys` is where they meet. Run by the shared store's worker thread
 * once a round (shipper-worker.ts), off the proxies' thread:
 *
 * - push: rows of the local table that changed since this gateway last pushed or pulled them go to
 *   the store. A revocation is sticky: once a key is revoked anywhere, no gateway's copy un-revokes
 *   it (the earliest revocation time wins). `last_used_at` stays local.
 * - pull: rows of the store that differ from the local table are handed to the gateway's thread,
 *   which writes them on the commit thread and re-reads its key index (`applyPulledKeys`).
 *
 * The event that records a key's creation or revocation (`key.created`, `key.revoked`) is in the
 * chain of the gateway where it happened; the others only copy the row.
 */
import type Database from 'better-sqlite3';
import type pg from 'pg';
import type { ApiKeyRow } from '../../identity/api-keys';

/** A key's row as shared (the local table's columns without `last_used_at`). */
export type SharedKeyRow = Omit<ApiKeyRow, 'last_used_at'>;

const COLUMNS = 'id, name, hash, groups, created_at, created_by, expires_at, revoked_at';

const signature = (r: SharedKeyRow): string => JSON.stringify([r.name, r.hash, r.groups, r.created_at, r.created_by, r.expires_at, r.revoked_at]);

/** BIGINT columns come back from `pg` as strings. */
function fromStore(r: Record<string, unknown>): SharedKeyRow {
  const n = (v: unknown) => (v === null || v === undefined ? null : Number(v));
  return { id: String(r['id']), name: String(r['name']), hash: String(r['hash']), groups: String(r['groups']), created_at: Number(r['created_at']), created_by: (r['created_by'] as string | null) ?? null, expires_at: n(r['expires_at']), revoked_at: n(r['revoked_at']) };
}

export class KeySync {
  /** What this gateway last pushed or pulled, per key id: a row that still matches is not pushed again. */
  private readonly known = new Map<string, string>();

  constructor(
    private readonly db: Database.Database,
    private readonly gateway: string,
  ) {}

  /** One round: push local changes, then return the store's rows this gateway's table lacks or holds differently. */
  async round(c: pg.Client): Promise<SharedKeyRow[]> {
    const local = new Map((this.db.prepare(`SELECT ${COLUMNS} FROM api_keys`).all() as SharedKeyRow[]).map((r) => [r.id, r]));
    const changed = [...local.values()].filter((r) => this.known.get(r.id) !== signature(r));
    if (changed.length) {
      await c.query('BEGIN');
      try {
        for (const r of changed) {
          await c.query(
            `INSERT INTO custody_api_keys (${COLUMNS}, origin, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (id) DO UPDATE SET
               name = EXCLUDED.name, groups = EXCLUDED.groups, expires_at = EXCLUDED.expires_at,
               revoked_at = CASE WHEN custody_api_keys.revoked_at IS NULL THEN EXCLUDED.revoked_at
                                 WHEN EXCLUDED.revoked_at IS NULL THEN custody_api_keys.revoked_at
                                 ELSE LEAST(custody_api_keys.revoked_at, EXCLUDED.revoked_at) END,
               updated_at = EXCLUDED.updated_at
             WHERE custody_api_keys.hash = EXCLUDED.hash`,
            [r.id, r.name, r.hash, r.groups, r.created_at, r.created_by, r.expires_at, r.revoked_at, this.gateway, Date.now()],
          );
        }
        await c.query('COMMIT');
      } catch (err) {
        await c.query('ROLLBACK').catch(() => {});
        throw err;
      }
      for (const r of changed) this.known.set(r.id, signature(r));
    }
    const pulled: SharedKeyRow[] = [];
    for (const raw of (await c.query(`SELECT ${COLUMNS} FROM custody_api_keys`)).rows as Record<string, unknown>[]) {
      const r = fromStore(raw);
      const mine = local.get(r.id);
      if (mine && signature(mine) === signature(r)) continue;
      // A row whose hash differs from a local key of the same id is not the same key: never copied over it.
      if (mine && mine.hash !== r.hash) continue;
      pulled.push(r);
      this.known.set(r.id, signature(r));
    }
    return pulled;
  }
}

/**
 * Writes pulled rows into the local table (on the commit thread, through `exec`), keeping a local
 * revocation: a key revoked here stays revoked whatever the store says.
 */
export const APPLY_PULLED_KEY_SQL = `INSERT INTO api_keys (${COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
  ON CONFLICT(id) DO UPDATE SET name = excluded.name, groups = excluded.groups, expires_at = excluded.expires_at,
    revoked_at = CASE WHEN api_keys.revoked_at IS NULL THEN excluded.revoked_at WHEN excluded.revoked_at IS NULL THEN api_keys.revoked_at ELSE min(api_keys.revoked_at, excluded.revoked_at) END
  WHERE api_keys.hash = excluded.hash`;

export function pulledKeyParams(r: SharedKeyRow): unknown[] {
  return [r.id, r.name, r.hash, r.groups, r.created_at, r.created_by, r.expires_at, r.revoked_at];
}
