/** What an attacker with the store file and knowledge of the format can do to the audit log. */
import type Database from 'better-sqlite3';
import { canonicalize } from '../../shared/canonical-json';
import { canonicalEventBody, chainHashOfText, sha256hex } from '../../proxy/audit/store';

/** Rewrites the payload of `seq` and recomputes every later hash, as an attacker who knows the format would. */
export function rewriteFrom(db: Database.Database, seq: number, payload: unknown): void {
  const text = canonicalize(payload);
  const row = db.prepare('SELECT spans FROM events WHERE seq = ?').get(seq) as { spans: string | null };
  db.prepare("UPDATE events SET payload = ?, encoding = 'json', payload_hash = ? WHERE seq = ?").run(text, sha256hex(`{"payload":${text},"spans":${row.spans ?? '[]'}}`), seq);
  let prev = (db.prepare('SELECT hash FROM events WHERE seq = ?').get(seq - 1) as { hash: string }).hash;
  const rows = db.prepare('SELECT seq, time, kind, session, actor, connection, payload_hash FROM events WHERE seq >= ? ORDER BY seq').all(seq) as {
    seq: number;
    time: number;
    kind: string;
    session: string | null;
    actor: string | null;
    connection: string | null;
    payload_hash: string;
  }[];
  for (const r of rows) {
    const hash = chainHashOfText(prev, canonicalEventBody({ seq: r.seq, time: r.time, kind: r.kind as never, session: r.session, actor: r.actor, connection: r.connection, payloadHash: r.payload_hash }));
    db.prepare('UPDATE events SET prev_hash = ?, hash = ? WHERE seq = ?').run(prev, hash, r.seq);
    prev = hash;
  }
}
