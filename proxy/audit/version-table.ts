/**
 * The `policy_versions` table: every rule set the gateway has enforced, one row per version, of a
 * kind (`policies`, `masking`). Version numbers are shared across kinds, so "version 12" names one
 * change whatever it touched. Each kind's history (proxy/policy/versions.ts,
 * proxy/masking/versions.ts) is this table with its own content shape.
 */
import type Database from 'better-sqlite3';

export interface VersionMeta {
  version: number;
  author: string;
  authorName: string;
  createdAt: number;
  /** `config`: from the config file; `console`: edited through the control plane. */
  source: 'config' | 'console';
  note?: string;
}

export interface VersionExtra {
  authorName?: string;
  source?: 'config' | 'console';
  note?: string;
}

interface Row {
  version: number;
  author: string;
  created_at: number;
  body: string;
}

export class VersionTable<C extends object> {
  constructor(
    protected readonly db: Database.Database,
    private readonly kind: 'policies' | 'masking',
    /** Reads the content out of a stored body (older rows may lack fields). */
    private readonly decode: (body: Partial<C>) => C,
  ) {}

  private toVersion(r: Row): VersionMeta & C {
    const b = JSON.parse(r.body) as Partial<C> & VersionExtra;
    return {
      version: r.version,
      author: r.author,
      authorName: b.authorName ?? r.author,
      createdAt: r.created_at,
      source: b.source ?? 'console',
      ...(b.note ? { note: b.note } : {}),
      ...this.decode(b),
    };
  }

  latest(): (VersionMeta & C) | undefined {
    const r = this.db.prepare('SELECT version, author, created_at, body FROM policy_versions WHERE kind = ? ORDER BY version DESC LIMIT 1').get(this.kind) as Row | undefined;
    return r && this.toVersion(r);
  }

  get(version: number): (VersionMeta & C) | undefined {
    const r = this.db.prepare('SELECT version, author, created_at, body FROM policy_versions WHERE kind = ? AND version = ?').get(this.kind, version) as Row | undefined;
    return r && this.toVersion(r);
  }

  /** Newest first. */
  page(limit = 200, offset = 0): { total: number; versions: (VersionMeta & C)[] } {
    const total = (this.db.prepare('SELECT count(*) AS n FROM policy_versions WHERE kind = ?').get(this.kind) as { n: number }).n;
    const rows = this.db.prepare('SELECT version, author, created_at, body FROM policy_versions WHERE kind = ? ORDER BY version DESC LIMIT ? OFFSET ?').all(this.kind, limit, offset) as Row[];
    return { total, versions: rows.map((r) => this.toVersion(r)) };
  }

  /** Inserts the next version (numbers shared across kinds). Call inside a transaction. */
  insert(content: C, author: string, extra: VersionExtra, now: number): number {
    const next = (this.db.prepare('SELECT COALESCE(MAX(version), 0) + 1 AS v FROM policy_versions').get() as { v: number }).v;
    this.db.prepare('INSERT INTO policy_versions (version, kind, author, created_at, body) VALUES (?, ?, ?, ?, ?)').run(next, this.kind, author, now, JSON.stringify({ ...content, ...extra }));
    return next;
  }
}
