/**
 * Persons: the humans (or services) behind credentials. Separation of duties counts persons, not
 * credentials: two API keys of one person, or a key and an OIDC subject linked to one person, are
 * one vote on a hold. Every credential belongs to exactly one person (`person_credentials`):
 *
 * - an API key gets its owner at creation (a named person, or the signed-in person who minted it);
 * - an OIDC identity (issuer + verified subject) is its own person the first time it is seen;
 * - the local login link and the first-start admin key are the same local person.
 *
 * Creating a person, linking a credential to another person and locking a person are recorded in
 * the chain (`person.created`, `person.linked`, `person.locked`). Lookups are cached in memory so
 * the proxy's hot path does no I/O; every write goes through this class and updates the cache.
 */
import { randomBytes } from 'node:crypto';
import type { PersonCreatedPayload, PersonLinkedPayload, PersonLockedPayload } from '../../shared/events';
import { type CredentialKind, LOCAL_PERSON, type Person } from '../../shared/identity';
import type { AuditStore } from '../audit/store';

interface PersonRow {
  id: string;
  name: string;
  created_at: number;
  created_by: string;
  locked_at: number | null;
  locked_by: string | null;
}

interface CredentialRow {
  credential: string;
  person: string;
  kind: CredentialKind;
  linked_at: number;
  linked_by: string;
}

export { LOCAL_PERSON };

export class PersonError extends Error {
  constructor(
    readonly status: 400 | 404 | 409,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'PersonError';
  }
}

const NAME_MAX = 200;
/** Changes when a link or a lock is added (what `refresh` compares). */
const SIGNATURE_SQL =
  "SELECT (SELECT count(*) || ':' || ifnull(max(linked_at), 0) FROM person_credentials) || '/' || (SELECT count(*) || ':' || ifnull(max(locked_at), 0) FROM persons WHERE locked_at IS NOT NULL) AS s";
const LINKS_SQL = 'SELECT credential, person, kind FROM person_credentials';
const LOCKED_SQL = 'SELECT id FROM persons WHERE locked_at IS NOT NULL';

export class PersonDirectory {
  private readonly byCredential = new Map<string, string>();
  private readonly locked = new Set<string>();
  private readonly idp = new Set<string>();
  private readonly lockListeners = new Set<(person: string, reason: string) => void>();
  private signature = '';
  /** Count of links and locks written here: an asynchronous refresh that read before one is stale. */
  private writes = 0;

  constructor(private readonly store: AuditStore) {
    for (const r of store.db.prepare(LINKS_SQL).all() as CredentialRow[]) this.cacheLink(r.credential, r.person, r.kind);
    for (const r of store.db.prepare(LOCKED_SQL).all() as { id: string }[]) this.locked.add(r.id);
  }

  /**
   * Reloads links and locks when another process (the CLI) changed them; fires onLock for persons
   * newly locked there. The gateway calls this every second; it reads two aggregates when nothing
   * changed.
   */
  refresh(): void {
    const sig = this.store.db.prepare(SIGNATURE_SQL).get() as { s: string };
    if (sig.s === this.signature) return;
    this.apply(sig.s, this.store.db.prepare(LINKS_SQL).all() as CredentialRow[], this.store.db.prepare(LOCKED_SQL).all() as { id: string }[]);
  }

  /**
   * `refresh`, with the reads on the store's commit thread (the gateway's timer: no SQLite on its
   * thread). `force` re-reads even when the aggregates did not change (a link from the group may
   * move a credential without changing them).
   */
  async refreshAsync(force = false): Promise<void> {
    const before = this.writes;
    const [sig] = await this.store.readAsync<{ s: string }>(SIGNATURE_SQL);
    if (!sig || (sig.s === this.signature && !force)) return;
    const links = await this.store.readAsync<CredentialRow>(LINKS_SQL);
    const locked = await this.store.readAsync<{ id: string }>(LOCKED_SQL);
    // A link made here while the reads were under way is not in them; the next refresh reads it
    // (a forced one reads again now: the aggregates may not show what it was asked to read).
    if (this.writes !== before) return force ? this.refreshAsync(true) : undefined;
    this.apply(sig.s, links, locked);
  }

  private apply(signature: string, links: CredentialRow[], locked: { id: string }[]): void {
    this.signature = signature;
    this.byCredential.clear();
    this.idp.clear();
    for (const r of links) this.cacheLink(r.credential, r.person, r.kind);
    for (const r of locked) {
      if (this.locked.has(r.id)) continue;
      this.locked.add(r.id);
      for (const fn of this.lockListeners) fn(r.id, 'locked by an administrator');
    }
  }

  /** The person a credential (identity subject) belongs to, if it has one yet. No I/O. */
  personOf(credential: string): string | undefined {
    return this.byCredential.get(credential);
  }

  isLocked(person: string): boolean {
    return this.locked.has(person);
  }

  isIdpBacked(person: string): boolean {
    return this.idp.has(person);
  }

  get(id: string): Person | undefined {
    const r = this.store.db.prepare('SELECT * FROM persons WHERE id = ?').get(id) as PersonRow | undefined;
    if (!r) return undefined;
    const creds = this.store.db.prepare('SELECT * FROM person_credentials WHERE person = ? ORDER BY linked_at').all(id) as CredentialRow[];
    return {
      id: r.id,
      name: r.name,
      createdAt: r.created_at,
      createdBy: r.created_by,
      lockedAt: r.locked_at,
      lockedBy: r.locked_by,
      credentials: creds.map((c) => ({ credential: c.credential, kind: c.kind, linkedAt: c.linked_at, linkedBy: c.linked_by })),
      idpBacked: this.idp.has(r.id),
    };
  }

  list(): Person[] {
    return (this.store.db.prepare('SELECT id FROM persons ORDER BY created_at, id').all() as { id: string }[]).map((r) => this.get(r.id)!);
  }

  /** Persons with this exact name (names are labels, not unique). */
  findByName(name: string): Person[] {
    return (this.store.db.prepare('SELECT id FROM persons WHERE name = ? ORDER BY created_at').all(name) as { id: string }[]).map((r) => this.get(r.id)!);
  }

  /** A person by id, or by name when exactly one person has it. */
  resolve(idOrName: string): Person {
    const byId = this.get(idOrName);
    if (byId) return byId;
    const named = this.findByName(idOrName);
    if (named.length === 1) return named[0]!;
    if (named.length > 1) throw new PersonError(409, 'ambiguous_person', `${named.length} persons are named "${idOrName}"; use an id (${named.map((p) => p.id).join(', ')})`);
    throw new PersonError(404, 'not_found', `no person "${idOrName}"`);
  }

  /** Creates a person (recorded as `person.created` by `actor`). */
  create(name: string, actor: string, reason: string, id = `person_${randomBytes(9).toString('base64url').replace(/[^A-Za-z0-9]/g, '0')}`): Person {
    const clean = name.trim();
    if (!clean || clean.length > NAME_MAX || [...clean].some((ch) => ch.charCodeAt(0) < 0x20)) throw new PersonError(400, 'bad_request', `a person's name is 1 to ${NAME_MAX} printable characters`);
    const now = Date.now();
    this.store.transaction(() => {
      this.store.db.prepare('INSERT INTO persons (id, name, created_at, created_by) VALUES (?, ?, ?, ?)').run(id, clean, now, actor);
      this.store.append({ kind: 'person.created', actor, payload: { person: id, name: clean, reason } satisfies PersonCreatedPayload, time: now });
    });
    return this.get(id)!;
  }

  /** The person `credential` belongs to, creating one named `name` on first sight (recorded). */
  ensure(credential: string, kind: CredentialKind, name: string, actor: string, reason: string, id?: string): string {
    const known = this.byCredential.get(credential);
    if (known) return known;
    const existing = id ? this.get(id) : undefined;
    const person = existing ?? this.create(name, actor, reason, id);
    this.attach(credential, kind, person.id, actor);
    return person.id;
  }

  /** Gives a new credential its owner (no event of its own: the key's creation names the person). */
  attach(credential: string, kind: CredentialKind, person: string, actor: string): void {
    const now = Date.now();
    this.store.db.prepare('INSERT INTO person_credentials (credential, person, kind, linked_at, linked_by) VALUES (?, ?, ?, ?, ?)').run(credential, person, kind, now, actor);
    this.cacheLink(credential, person, kind);
  }

  /**
   * Moves `credential` to `person` (an admin action, recorded as `person.linked`): from now on it
   * votes, and is locked, as that person.
   */
  link(credential: string, kind: CredentialKind, person: string, actor: string): { from: string | undefined } {
    if (!this.get(person)) throw new PersonError(404, 'not_found', `no person ${person}`);
    const from = this.byCredential.get(credential);
    if (from === person) throw new PersonError(409, 'already_linked', `${credential} already belongs to ${person}`);
    const now = Date.now();
    this.store.transaction(() => {
      this.store.db
        .prepare('INSERT INTO person_credentials (credential, person, kind, linked_at, linked_by) VALUES (?, ?, ?, ?, ?) ON CONFLICT(credential) DO UPDATE SET person = excluded.person, linked_at = excluded.linked_at, linked_by = excluded.linked_by')
        .run(credential, person, kind, now, actor);
      this.store.append({ kind: 'person.linked', actor, payload: { credential, credentialKind: kind, person, from: from ?? null } satisfies PersonLinkedPayload, time: now });
    });
    this.cacheLink(credential, person, kind);
    if (from) this.recomputeIdp(from);
    return { from };
  }

  /**
   * Locks a person: their credentials stop authenticating at once and `onLock` listeners end
   * their live sessions. The caller revokes their API keys; the lock itself is recorded here.
   */
  lock(person: string, actor: string, details: Omit<PersonLockedPayload, 'person'>, reason = 'locked by an administrator'): void {
    const now = Date.now();
    this.store.transaction(() => {
      const changed = this.store.db.prepare('UPDATE persons SET locked_at = ?, locked_by = ? WHERE id = ? AND locked_at IS NULL').run(now, actor, person).changes;
      if (!changed) throw new PersonError(this.get(person) ? 409 : 404, this.get(person) ? 'already_locked' : 'not_found', this.get(person) ? `${person} is already locked` : `no person ${person}`);
      this.store.append({ kind: 'person.locked', actor, payload: { person, ...details } satisfies PersonLockedPayload, time: now });
    });
    this.locked.add(person);
    for (const fn of this.lockListeners) fn(person, reason);
  }

  /** Called with each locked person (to end live sessions on every plane). Returns the remover. */
  onLock(fn: (person: string, reason: string) => void): () => void {
    this.lockListeners.add(fn);
    return () => this.lockListeners.delete(fn);
  }

  credentialsOf(person: string): string[] {
    return (this.store.db.prepare('SELECT credential FROM person_credentials WHERE person = ?').all(person) as { credential: string }[]).map((r) => r.credential);
  }

  private cacheLink(credential: string, person: string, kind: CredentialKind): void {
    this.writes++;
    this.byCredential.set(credential, person);
    if (kind === 'oidc') this.idp.add(person);
  }

  private recomputeIdp(person: string): void {
    const n = this.store.db.prepare("SELECT count(*) AS n FROM person_credentials WHERE person = ? AND kind = 'oidc'").get(person) as { n: number };
    if (n.n === 0) this.idp.delete(person);
  }
}

/**
 * Locks a person everywhere the store reaches: revokes every API key they own, ends every console
 * session of theirs, and records the lock. Live sessions in this process (HTTP holds, psql) end
 * through PersonDirectory.onLock; a running gateway notices a lock made by `custody persons lock`
 * within a second (PersonDirectory.refresh).
 */
export function lockPerson(
  deps: { persons: PersonDirectory; keys: { revoke(id: string): boolean }; consoleSessions: { deleteForKey(id: string): number; deleteForPerson(person: string): number } },
  person: string,
  actor: string,
): { keysRevoked: string[]; consoleSessionsEnded: number } {
  const keysRevoked: string[] = [];
  let consoleSessionsEnded = 0;
  for (const credential of deps.persons.credentialsOf(person)) {
    if (!credential.startsWith('key:')) continue;
    const id = credential.slice(4);
    if (deps.keys.revoke(id)) keysRevoked.push(id);
    consoleSessionsEnded += deps.consoleSessions.deleteForKey(id);
  }
  consoleSessionsEnded += deps.consoleSessions.deleteForPerson(person);
  deps.persons.lock(person, actor, { keysRevoked, consoleSessionsEnded });
  return { keysRevoked, consoleSessionsEnded };
}
