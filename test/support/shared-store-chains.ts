/** A gateway's chain as its SQLite file holds it, and as the shared store holds it (the scale-* tests compare them). */
import { join } from 'node:path';
import Database from 'better-sqlite3';
import type pg from 'pg';

export function localChain(dir: string): { seq: number; kind: string; hash: string }[] {
  const db = new Database(join(dir, 'custody.db'), { readonly: true });
  try {
    return db.prepare('SELECT seq, kind, hash FROM events ORDER BY seq').all() as { seq: number; kind: string; hash: string }[];
  } finally {
    db.close();
  }
}

export async function storedChain(sql: pg.Client, id: string): Promise<{ seq: number; kind: string; hash: string; payload: string | null }[]> {
  return (await sql.query<{ seq: string; kind: string; hash: string; payload: string | null }>('SELECT seq, kind, hash, payload FROM custody_events WHERE gateway = $1 ORDER BY seq', [id])).rows.map((r) => ({ ...r, seq: Number(r.seq) }));
}
