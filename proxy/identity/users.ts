/**
 * The people and services the gateway has seen (the `users` table): subject, display name and
 * the groups they last presented. Kept so history can be read later — the console shows names,
 * and a policy dry-run evaluates recorded requests with the groups their identity had.
 * Writes are throttled per subject so the proxy's hot path does no I/O on repeat requests.
 */
import type Database from 'better-sqlite3';
import type { Identity } from '../../shared/identity';

export interface KnownUser {
  subject: string;
  name: string;
  groups: string[];
  firstSeen: number;
  lastSeen: number;
}

const UPSERT = `INSERT INTO users (subject, name, groups, first_seen, last_seen) VALUES (?, ?, ?, ?, ?)
  ON CONFLICT(subject) DO UPDATE SET name = excluded.name, groups = excluded.groups, last_seen = excluded.last_seen`;

export class UserDirectory {
  private lastWrite = new Map<string, { at: number; groups: string }>();

  /**
   * `writeBehind` (the gateway: AuditStore.writeBehind) writes on the store's commit thread, so a
   * sighting never waits on SQLite; without it the write happens here.
   */
  constructor(
    private readonly db: Database.Database,
    private readonly throttleMs = 60_000,
    private readonly writeBehind?: (sql: string, params: unknown[], done: (err: Error | null) => void) => void,
  ) {}

  /** Notes that `identity` was seen now. Never throws: a directory write is not worth refusing a request. */
  seen(identity: Identity, now = Date.now()): void {
    const groups = JSON.stringify(identity.groups);
    const last = this.lastWrite.get(identity.subject);
    if (last && now - last.at < this.throttleMs && last.groups === groups) return;
    if (this.lastWrite.size > 50_000) this.lastWrite.clear();
    // Noted before the write lands, so repeat sightings do not queue more; a failed write forgets it
    // (read-only or busy store: the next sighting tries again).
    this.lastWrite.set(identity.subject, { at: now, groups });
    const forget = () => {
      if (this.lastWrite.get(identity.subject)?.at === now) this.lastWrite.delete(identity.subject);
    };
    const params = [identity.subject, identity.name, groups, now, now];
    if (this.writeBehind) {
      this.writeBehind(UPSERT, params, (err) => err && forget());
      return;
    }
    try {
      this.db.prepare(UPSERT).run(...params);
    } catch {
      forget();
    }
  }

  /** Everyone seen, most recent first (bounded: the console shows who could act, not a directory). */
  list(limit = 5000): KnownUser[] {
    const rows = this.db.prepare('SELECT * FROM users ORDER BY last_seen DESC LIMIT ?').all(limit) as { subject: string; name: string; groups: string; first_seen: number; last_seen: number }[];
    return rows.map((r) => ({ subject: r.subject, name: r.name, groups: JSON.parse(r.groups) as string[], firstSeen: r.first_seen, lastSeen: r.last_seen }));
  }

  get(subject: string): KnownUser | undefined {
    const r = this.db.prepare('SELECT * FROM users WHERE subject = ?').get(subject) as { subject: string; name: string; groups: string; first_seen: number; last_seen: number } | undefined;
    return r && { subject: r.subject, name: r.name, groups: JSON.parse(r.groups) as string[], firstSeen: r.first_seen, lastSeen: r.last_seen };
  }
}
