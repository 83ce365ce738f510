/**
 * Persons shared by the gateways of a group (docs/SCALE-OUT.md, "Persons"), in the pattern of
 * key-sync.ts. Each gateway keeps its persons and credential links in its own SQLite `persons` and
 * `person_credentials` tables, as a lone gateway does; the shared store is where they meet, and
 * every row there is signed by a gateway's checkpoint key, because whoever can write to the store
 * must not be able to make a person, move a credential to another person, or lock one:
 *
 * - `custody_persons` (+ `custody_person_signatures`): a person's creation fields (id, name, when,
 *   by whom), immutable, signed by each gateway that holds the person. A gateway copies a person
 *   only when a gateway it trusts signed it, then signs it too, so persons spread as keys do.
 * - `custody_person_links`: which person a credential (`key:<id>`, `<issuer>#<subject>`) belongs
 *   to, one row per gateway, signed by it. The newest link a trusted gateway signed wins (a link
 *   moved with `persons link` moves on every gateway). Login links (`local:<user>`) are a
 *   gateway's own and are not shared.
 * - `custody_person_locks`: a lock, signed by the gateway that made or accepted it. Sticky like a
 *   revocation: the earliest trusted lock of a person applies everywhere, and nothing unlocks (no
 *   gateway has an unlock, so there is none to forge).
 *
 * The local user's person (`person_local`) is one per gateway: in the store it is
 * `person_local@<gateway id>`, as for holds (proxy/approvals/shared-holds.ts), so a key made by
 * A's local user is, on B, a key of the person `person_local@A`.
 *
 * Run by the shared store's worker thread (shipper-worker.ts): `push` before the key round and
 * `pull` after it, and a key is pushed only once its link is in the store (`keyReady`), so a key
 * copied from the store always finds its owner's link there first. The
 * rows to apply are written on the commit thread by the gateway's thread (`PERSON_APPLY_SQL`),
 * before the keys of the same round, and the person directory is re-read.
 */
import type Database from 'better-sqlite3';
import type pg from 'pg';
import { canonicalize } from '../../../shared/canonical-json';
import { type CredentialKind, LOCAL_PERSON } from '../../../shared/identity';
import type { ConfigMirror, SharedPerson } from './config-changes';
import { inTransaction, signedByTrusted, type TrustSet } from './key-sync';

export type { SharedPerson };

export interface SharedLink {
  credential: string;
  person: string;
  kind: CredentialKind;
  linked_at: number;
  linked_by: string;
}

export interface SharedLock {
  id: string;
  at: number;
  by: string;
}

/** What the local tables should take from the group: new persons, newer links, locks. */
export interface PulledPersons {
  persons: SharedPerson[];
  links: SharedLink[];
  locks: SharedLock[];
}

const SHARED_KINDS = new Set<string>(['api-key', 'oidc']);

const personText = (p: SharedPerson) => `custody-person/v1\n${canonicalize([p.id, p.name, p.created_at, p.created_by])}`;
const linkText = (l: SharedLink) => `custody-person-link/v1\n${canonicalize([l.credential, l.person, l.kind, l.linked_at, l.linked_by])}`;
const lockText = (l: SharedLock) => `custody-person-lock/v1\n${canonicalize([l.id, l.at, l.by])}`;

interface LocalPerson extends SharedPerson {
  locked_at: number | null;
  locked_by: string | null;
}

/** A key without a link after this long (one from before persons existed) is shared without one. */
const LINK_WAIT_MS = 5000;

export class PersonSync {
  /** What this gateway has signed in the store (read from it at the first round), in store ids. */
  private signed: { persons: Set<string>; links: Set<string>; locks: Set<string> } | undefined;
  /** Credentials whose link this gateway has written to the store. */
  private readonly linked = new Set<string>();

  constructor(
    private readonly db: Database.Database,
    private readonly gateway: string,
    /** This gateway's signature over a text, base64 (its checkpoint key: shipper-worker.ts). */
    private readonly sign: (text: string) => Promise<string>,
  ) {}

  /** The store's id for a local person id (the local user's person is one per gateway). */
  private toStore(id: string): string {
    return id === LOCAL_PERSON ? `${LOCAL_PERSON}@${this.gateway}` : id;
  }

  private fromStore(id: string): string {
    return id === `${LOCAL_PERSON}@${this.gateway}` ? LOCAL_PERSON : id;
  }

  private localPersons(): Map<string, LocalPerson> {
    return new Map((this.db.prepare('SELECT id, name, created_at, created_by, locked_at, locked_by FROM persons').all() as LocalPerson[]).map((p) => [p.id, p]));
  }

  private localLinks(): Map<string, SharedLink> {
    return new Map((this.db.prepare("SELECT credential, person, kind, linked_at, linked_by FROM person_credentials WHERE kind != 'local'").all() as SharedLink[]).map((l) => [l.credential, l]));
  }

  /** Signs and writes what the local tables hold that this gateway has not signed in the store yet. */
  async push(c: pg.Client): Promise<void> {
    if (!this.signed) {
      const mine = (await c.query<{ credential: string; person: string; linked_at: string }>('SELECT credential, person, linked_at FROM custody_person_links WHERE gateway = $1', [this.gateway])).rows;
      for (const r of mine) this.linked.add(r.credential);
      this.signed = {
        persons: new Set((await c.query<{ id: string }>('SELECT id FROM custody_person_signatures WHERE gateway = $1', [this.gateway])).rows.map((r) => r.id)),
        links: new Set(mine.map((r) => `${r.credential}/${r.person}/${Number(r.linked_at)}`)),
        locks: new Set((await c.query<{ id: string; at: string }>('SELECT id, at FROM custody_person_locks WHERE gateway = $1', [this.gateway])).rows.map((r) => `${r.id}/${Number(r.at)}`)),
      };
    }
    const signed = this.signed;
    const persons = [...this.localPersons().values()].map((p) => ({ ...p, id: this.toStore(p.id) }));
    const newPersons = persons.filter((p) => !signed.persons.has(p.id));
    const links = [...this.localLinks().values()].map((l) => ({ ...l, person: this.toStore(l.person) })).filter((l) => !signed.links.has(`${l.credential}/${l.person}/${l.linked_at}`));
    const locks = persons.filter((p) => p.locked_at !== null && !signed.locks.has(`${p.id}/${p.locked_at}`)).map((p) => ({ id: p.id, at: p.locked_at!, by: p.locked_by ?? 'unknown' }));
    if (!newPersons.length && !links.length && !locks.length) return;
    await inTransaction(c, async () => {
      for (const p of newPersons) {
        // Creation fields are immutable: a different person already stored under this id is left alone (and not signed).
        await c.query('INSERT INTO custody_persons (id, name, created_at, created_by, origin) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING', [p.id, p.name, p.created_at, p.created_by, this.gateway]);
        const stored = (await c.query<SharedPerson & { created_at: string }>('SELECT id, name, created_at, created_by FROM custody_persons WHERE id = $1', [p.id])).rows[0];
        if (!stored || personText({ ...stored, created_at: Number(stored.created_at) }) !== personText(p)) continue;
        await c.query('INSERT INTO custody_person_signatures (id, gateway, signature) VALUES ($1, $2, $3) ON CONFLICT (id, gateway) DO NOTHING', [p.id, this.gateway, await this.sign(personText(p))]);
      }
      for (const l of links) {
        await c.query(
          `INSERT INTO custody_person_links (credential, gateway, person, kind, linked_at, linked_by, signature) VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (credential, gateway) DO UPDATE SET person = EXCLUDED.person, kind = EXCLUDED.kind, linked_at = EXCLUDED.linked_at, linked_by = EXCLUDED.linked_by, signature = EXCLUDED.signature
           WHERE EXCLUDED.linked_at >= custody_person_links.linked_at`,
          [l.credential, this.gateway, l.person, l.kind, l.linked_at, l.linked_by, await this.sign(linkText(l))],
        );
      }
      for (const l of locks) {
        await c.query(
          `INSERT INTO custody_person_locks (id, gateway, at, locked_by, signature) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (id, gateway) DO UPDATE SET at = EXCLUDED.at, locked_by = EXCLUDED.locked_by, signature = EXCLUDED.signature WHERE EXCLUDED.at < custody_person_locks.at`,
          [l.id, this.gateway, l.at, l.by, await this.sign(lockText(l))],
        );
      }
    });
    for (const p of newPersons) signed.persons.add(p.id);
    for (const l of links) {
      signed.links.add(`${l.credential}/${l.person}/${l.linked_at}`);
      this.linked.add(l.credential);
    }
    for (const l of locks) signed.locks.add(`${l.id}/${l.at}`);
  }

  /**
   * Whether key `id` (created at `createdAt`) may go to the store: once its owner's link is there,
   * so that another gateway never has the key without its owner (it would make the key a person
   * of its own at its first request). A key with no link for a while goes without one.
   */
  keyReady(id: string, createdAt: number, now = Date.now()): boolean {
    return this.linked.has(`key:${id}`) || now - createdAt > LINK_WAIT_MS;
  }

  /** The rows the local tables should take, from the store's rows as `mirror` last read them, trusting only `trust`'s signatures. */
  pull(mirror: ConfigMirror, trust: TrustSet): PulledPersons {
    const out: PulledPersons = { persons: [], links: [], locks: [] };
    const local = this.localPersons();
    // Persons this gateway holds, or takes now: only those may own a credential or be locked here.
    const known = new Set(local.keys());
    for (const p of mirror.persons.values()) {
      const id = this.fromStore(p.id);
      if (known.has(id)) continue;
      if (!signedByTrusted(mirror.personSignatures.get(p.id), personText(p), trust)) continue;
      known.add(id);
      out.persons.push({ ...p, id });
    }
    // Per credential, the newest link a trusted gateway signed (ties: the smallest gateway id).
    const newest = new Map<string, SharedLink & { gateway: string }>();
    for (const raw of [...mirror.links.values()].sort((x, y) => (x.gateway < y.gateway ? -1 : x.gateway > y.gateway ? 1 : 0))) {
      const l = { credential: raw.credential, person: raw.person, kind: raw.kind as CredentialKind, linked_at: raw.linked_at, linked_by: raw.linked_by, gateway: raw.gateway };
      if (!SHARED_KINDS.has(l.kind) || !trust.verify(raw.gateway, linkText(l), raw.signature)) continue;
      const best = newest.get(l.credential);
      if (!best || l.linked_at > best.linked_at) newest.set(l.credential, l);
    }
    const links = this.localLinks();
    for (const l of newest.values()) {
      const person = this.fromStore(l.person);
      if (!known.has(person)) continue;
      const mine = links.get(l.credential);
      if (mine && (mine.person === person || mine.linked_at >= l.linked_at)) continue;
      out.links.push({ credential: l.credential, person, kind: l.kind, linked_at: l.linked_at, linked_by: l.linked_by });
    }
    // The earliest lock a trusted gateway signed, for each person not locked here yet.
    const earliest = new Map<string, SharedLock>();
    for (const raw of mirror.locks.values()) {
      const l: SharedLock = { id: raw.id, at: raw.at, by: raw.locked_by };
      if (!trust.verify(raw.gateway, lockText(l), raw.signature)) continue;
      const id = this.fromStore(l.id);
      if (!known.has(id) || (earliest.get(id)?.at ?? Infinity) <= l.at) continue;
      earliest.set(id, { ...l, id });
    }
    for (const l of earliest.values()) if ((local.get(l.id)?.locked_at ?? null) === null) out.locks.push(l);
    return out;
  }
}

/** Applying pulled rows locally, in this order, on the commit thread (`AuditStore.writeBehind`). */
export const PERSON_APPLY_SQL = {
  person: 'INSERT INTO persons (id, name, created_at, created_by) VALUES (?, ?, ?, ?) ON CONFLICT(id) DO NOTHING',
  // Only a newer link moves a credential: a pulled link never undoes a later one made here.
  link: `INSERT INTO person_credentials (credential, person, kind, linked_at, linked_by) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT(credential) DO UPDATE SET person = excluded.person, kind = excluded.kind, linked_at = excluded.linked_at, linked_by = excluded.linked_by
    WHERE excluded.linked_at > person_credentials.linked_at AND person_credentials.kind != 'local'`,
  // Sticky: a lock already here stays as it is.
  lock: 'UPDATE persons SET locked_at = ?, locked_by = ? WHERE id = ? AND locked_at IS NULL',
} as const;

/** The statements and parameters that apply `p`, persons first (links and locks name them). */
export function personApplyStatements(p: PulledPersons): { sql: string; params: unknown[] }[] {
  return [
    ...p.persons.map((r) => ({ sql: PERSON_APPLY_SQL.person, params: [r.id, r.name, r.created_at, r.created_by] })),
    ...p.links.map((r) => ({ sql: PERSON_APPLY_SQL.link, params: [r.credential, r.person, r.kind, r.linked_at, r.linked_by] })),
    ...p.locks.map((r) => ({ sql: PERSON_APPLY_SQL.lock, params: [r.at, r.by, r.id] })),
  ];
}
