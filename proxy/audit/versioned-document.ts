/**
 * A versioned document: content the gateway enforces (the policy rules, the masking rules) whose
 * every version is kept with its author and time, in the `policy_versions` table under its kind,
 * and recorded in the chained log with its full content, so an auditor can tell which version
 * applied to any recorded event. Version numbers are shared across kinds: "version 12" names one
 * change whatever it touched.
 *
 * A change is recorded first (row and event in one transaction), then applied, then announced on
 * the bus. At start the config file's content wins when it changed since the previous start (and is
 * recorded as a new version); otherwise the latest version, which may come from the console, so
 * console edits survive restarts. proxy/policy/versions.ts and proxy/masking/versions.ts are the
 * two documents.
 */
import { createHash } from 'node:crypto';
import type { VersionMeta, VersionPage, VersionSource } from '../../shared/api';
import { canonicalize } from '../../shared/canonical-json';
import type { EventPayloads, VersionChangedCommon } from '../../shared/events';
import type { EventBus } from '../bus';
import type { Logger } from '../log';
import { type AuditStore, StoreUnavailableError } from './store';

/** What one kind of document is: how it is stored, hashed, recorded and announced. */
export interface DocumentKind<C extends object, Summary> {
  /** The `policy_versions.kind` of its rows. */
  kind: 'policies' | 'masking';
  /** How log lines name it: "policy version 3", "masking version 4". */
  noun: string;
  /** How log lines name the config file's content: "the config file's rules". */
  fileNoun: string;
  /** The chained event each version is recorded as (one whose payload type is the common fields and the content). */
  changedEvent: ChangedEventFor<C>;
  /** The bus message a change is announced with. */
  updatedMessage: 'policy.updated' | 'masking.updated';
  /** The store meta key holding the hash of the config file's content at the previous start. */
  configHashKey: string;
  /** Reads the content out of a stored body (older rows may lack fields). */
  decode(body: Partial<C>): C;
  /** What the version hash covers (kept as it was when the first versions were recorded). */
  hashed(content: C): unknown;
  /** A version as listings show it. */
  summarize(version: Version<C>): Summary;
}

type VersionedEvent = 'policy.changed' | 'masking.changed';

/** The versioned-document event whose payload type is exactly the common fields and content `C`. */
type ChangedEventFor<C> = { [K in VersionedEvent]: [VersionChangedCommon & C] extends [EventPayloads[K]] ? ([EventPayloads[K]] extends [VersionChangedCommon & C] ? K : never) : never }[VersionedEvent];

/** A change to record: new content and who made it. */
export interface DocumentChange<C> {
  content: C;
  author: { subject: string; name: string };
  source: VersionSource;
  note?: string;
}

export type Version<C> = VersionMeta & C;

interface VersionRow {
  version: number;
  author: string;
  created_at: number;
  body: string;
}

/** What a stored body holds besides the content. */
export interface BodyExtra {
  authorName?: string;
  source?: VersionSource;
  note?: string;
}

export class VersionedDocument<C extends object, Summary = Version<C>> {
  constructor(
    private readonly store: AuditStore,
    private readonly spec: DocumentKind<C, Summary>,
  ) {}

  hash(content: C): string {
    return createHash('sha256').update(canonicalize(this.spec.hashed(content))).digest('hex');
  }

  latest(): Version<C> | undefined {
    const row = this.store.db.prepare('SELECT version, author, created_at, body FROM policy_versions WHERE kind = ? ORDER BY version DESC LIMIT 1').get(this.spec.kind) as VersionRow | undefined;
    return row && this.toVersion(row);
  }

  get(version: number): Version<C> | undefined {
    const row = this.store.db.prepare('SELECT version, author, created_at, body FROM policy_versions WHERE kind = ? AND version = ?').get(this.spec.kind, version) as VersionRow | undefined;
    return row && this.toVersion(row);
  }

  /** Newest first, summarized. */
  list(limit = 200, offset = 0): VersionPage<Summary> {
    const total = (this.store.db.prepare('SELECT count(*) AS n FROM policy_versions WHERE kind = ?').get(this.spec.kind) as { n: number }).n;
    const rows = this.store.db.prepare('SELECT version, author, created_at, body FROM policy_versions WHERE kind = ? ORDER BY version DESC LIMIT ? OFFSET ?').all(this.spec.kind, limit, offset) as VersionRow[];
    return { total, versions: rows.map((row) => this.spec.summarize(this.toVersion(row))) };
  }

  /**
   * Records a new version (row + chained event, one transaction), then `apply`s it and announces
   * it on `bus`. Throws StoreUnavailableError when it cannot be recorded; nothing is applied then.
   */
  change(change: DocumentChange<C>, apply: (content: C) => void, bus: EventBus): Version<C> {
    const previous = this.latest()?.version ?? null;
    const now = Date.now();
    const note = change.note ? { note: change.note } : {};
    let version = 0;
    try {
      this.store.transaction(() => {
        version = this.insert(change.content, change.author.subject, { authorName: change.author.name, source: change.source, ...note }, now);
        this.store.append({
          kind: this.spec.changedEvent,
          actor: change.author.subject,
          payload: { version, previousVersion: previous, source: change.source, actorName: change.author.name, ...change.content, hash: this.hash(change.content), ...note } satisfies VersionChangedCommon & C,
          time: now,
        });
      });
    } catch (err) {
      throw err instanceof StoreUnavailableError ? err : new StoreUnavailableError(err);
    }
    apply(change.content);
    bus.publish({ type: this.spec.updatedMessage, version, author: change.author.name });
    return { version, author: change.author.subject, authorName: change.author.name, createdAt: now, source: change.source, ...note, ...change.content };
  }

  /**
   * At gateway start: enforce the config file's content when it changed since the previous start
   * (recording it as a version when it is new), else the latest version. `load` checks a stored
   * version and returns the content to apply, or the problems that keep it from loading (then the
   * file's content is enforced instead). Returns the version in force.
   */
  atStart(deps: { bus: EventBus; log: Logger; configFile: string | undefined }, fileContent: C, load: (stored: C) => { ok: true; content: C } | { ok: false; problems: string[] }, apply: (content: C) => void): Version<C> {
    const hash = this.hash(fileContent);
    const latest = this.latest();
    const author = { subject: 'config', name: deps.configFile ? `config file ${deps.configFile}` : 'embedded default config' };
    const fromConfig = () => {
      const version = latest && this.hash(latest) === hash ? latest : this.change({ content: fileContent, author, source: 'config' }, apply, deps.bus);
      this.store.setMeta(this.spec.configHashKey, hash);
      return version;
    };
    if (!latest || this.store.meta(this.spec.configHashKey) !== hash) return fromConfig();
    // The file is unchanged since the last start: keep enforcing the latest version (console edits).
    const loaded = load(latest);
    if (!loaded.ok) {
      deps.log.error(`${this.spec.noun} version ${latest.version} cannot be loaded (${loaded.problems.join('; ')}); enforcing ${this.spec.fileNoun}`);
      return fromConfig();
    }
    apply(loaded.content);
    return latest;
  }

  private insert(content: C, author: string, extra: BodyExtra, now: number): number {
    return insertVersion(this.store, this.spec.kind, content, author, extra, now);
  }

  private toVersion(row: VersionRow): Version<C> {
    const body = JSON.parse(row.body) as Partial<C> & BodyExtra;
    return {
      version: row.version,
      author: row.author,
      authorName: body.authorName ?? row.author,
      createdAt: row.created_at,
      source: body.source ?? 'console',
      ...(body.note ? { note: body.note } : {}),
      ...this.spec.decode(body),
    };
  }
}

/**
 * Inserts the next `policy_versions` row of `kind` (numbers shared across kinds; the console's
 * connections are versioned there too, proxy/connections/store.ts). Call inside a transaction.
 */
export function insertVersion(store: Pick<AuditStore, 'db'>, kind: string, content: object, author: string, extra: BodyExtra, now: number): number {
  const next = (store.db.prepare('SELECT COALESCE(MAX(version), 0) + 1 AS v FROM policy_versions').get() as { v: number }).v;
  store.db.prepare('INSERT INTO policy_versions (version, kind, author, created_at, body) VALUES (?, ?, ?, ?, ?)').run(next, kind, author, now, JSON.stringify({ ...content, ...extra }));
  return next;
}
