/**
 * The group's configuration rows as this gateway last read them from the shared store (keys and
 * their SSH keys, persons, their links and locks, policy and masking versions: key-sync.ts,
 * person-sync.ts, doc-sync.ts), kept in memory on the shared store's worker thread and brought up to date by
 * reading only what changed.
 *
 * Migration 6 numbers every row written to those tables from one change order (`change`), under
 * CONFIG_LOCK in the writing transaction, so numbers are committed in order; and announces the
 * commit with `NOTIFY custody_config`. A read takes the rows with a number above the cursor, all
 * tables in one statement (one snapshot, so a transaction that wrote to two tables is seen whole
 * or not at all), and moves the cursor to the highest number read. The first read, from 0, reads
 * everything; later ones, after a notification, a reconnect or the safety poll, only the new rows.
 *
 * Rows are kept whether or not a trusted gateway signed them: whom this gateway trusts grows
 * (approvals), and the evaluation against the trust set happens each round, in memory.
 * Deleted rows are not noticed, on purpose: a revocation or a lock once read stays (both are
 * sticky, and a row removed from the store must not undo them here).
 */
import type pg from 'pg';
import type { ApiKeyRow } from '../migrations';
import { CONFIG_TABLES, type ConfigTable } from './schema';

/** A key's creation fields (immutable, signed: key-sync.ts). */
export type KeyCreationRow = Pick<ApiKeyRow, 'id' | 'name' | 'hash' | 'groups' | 'created_at' | 'created_by'>;
export interface KeyChangeRow {
  id: string;
  kind: 'revoked' | 'expired';
  at: number;
  gateway: string;
  signature: string;
}
/** An SSH key's registration as the group shares it (immutable, signed: key-sync.ts). */
export interface SshKeyCreationRow {
  fingerprint: string;
  key_id: string;
  algo: string;
  public_key: string;
  comment: string | null;
  created_at: number;
  created_by: string;
}
export interface SshKeyRemovalRow {
  fingerprint: string;
  created_at: number;
  key_id: string;
  at: number;
  gateway: string;
  signature: string;
}
/** The id of one registration of an SSH key (a key removed and registered again is another). */
export const sshRegistration = (r: { fingerprint: string; created_at: number }): string => `${r.fingerprint} ${r.created_at}`;
/** A person as the group shares it (person-sync.ts signs and copies these). */
export interface SharedPerson {
  id: string;
  name: string;
  created_at: number;
  created_by: string;
}

export type PersonRow = SharedPerson;
export interface LinkRow {
  credential: string;
  gateway: string;
  person: string;
  kind: string;
  linked_at: number;
  linked_by: string;
  signature: string;
}
export interface LockRow {
  id: string;
  gateway: string;
  at: number;
  locked_by: string;
  signature: string;
}
export interface DocumentRow {
  kind: string;
  content: string;
  hash: string;
  gateway: string;
  version: number;
  author: string;
  author_name: string;
  created_at: number;
  signature: string;
  /** Its place in the store's change order: the newest is the highest. */
  change: number;
}

/** Signatures of immutable creation fields, by row id, then by signing gateway. */
type Signatures = Map<string, Map<string, string>>;

const READ_SQL = CONFIG_TABLES.map((t) => `SELECT '${t}' AS t, change, row_to_json(x)::text AS r FROM ${t} x WHERE change > $1`).join('\nUNION ALL\n');

function addSignature(to: Signatures, id: string, gateway: string, signature: string): void {
  (to.get(id) ?? to.set(id, new Map()).get(id)!).set(gateway, signature);
}

export class ConfigMirror {
  readonly keys = new Map<string, KeyCreationRow>();
  readonly keySignatures: Signatures = new Map();
  /** By `id/kind/gateway` (one row per gateway, updated to an earlier time). */
  readonly keyChanges = new Map<string, KeyChangeRow>();
  /** By registration (`sshRegistration`). */
  readonly sshKeys = new Map<string, SshKeyCreationRow>();
  readonly sshKeySignatures: Signatures = new Map();
  /** By `registration/gateway` (one row per gateway, updated to an earlier time). */
  readonly sshKeyRemovals = new Map<string, SshKeyRemovalRow>();
  readonly persons = new Map<string, PersonRow>();
  readonly personSignatures: Signatures = new Map();
  /** By `credential/gateway`. */
  readonly links = new Map<string, LinkRow>();
  /** By `id/gateway`. */
  readonly locks = new Map<string, LockRow>();
  /** Versions not yet superseded by one this gateway took (doc-sync.ts drops the older ones). */
  documents: DocumentRow[] = [];
  /** The highest change number read. */
  cursor = 0;

  /** Reads every row changed after the cursor; returns how many. */
  async read(c: pg.ClientBase): Promise<number> {
    const rows = (await c.query<{ t: ConfigTable; change: string; r: string }>(READ_SQL, [this.cursor])).rows;
    for (const { t, change, r } of rows) {
      this.take(t, JSON.parse(r) as Record<string, unknown>);
      this.cursor = Math.max(this.cursor, Number(change));
    }
    return rows.length;
  }

  private take(table: ConfigTable, r: Record<string, unknown>): void {
    const s = (k: string) => r[k] as string;
    const n = (k: string) => Number(r[k]);
    switch (table) {
      case 'custody_api_keys':
        this.keys.set(s('id'), { id: s('id'), name: s('name'), hash: s('hash'), groups: s('groups'), created_at: n('created_at'), created_by: (r['created_by'] as string | null) ?? null });
        return;
      case 'custody_api_key_signatures':
        addSignature(this.keySignatures, s('id'), s('gateway'), s('signature'));
        return;
      case 'custody_api_key_changes':
        this.keyChanges.set(`${s('id')}/${s('kind')}/${s('gateway')}`, { id: s('id'), kind: s('kind') as KeyChangeRow['kind'], at: n('at'), gateway: s('gateway'), signature: s('signature') });
        return;
      case 'custody_ssh_keys': {
        const k: SshKeyCreationRow = { fingerprint: s('fingerprint'), key_id: s('key_id'), algo: s('algo'), public_key: s('public_key'), comment: (r['comment'] as string | null) ?? null, created_at: n('created_at'), created_by: s('created_by') };
        this.sshKeys.set(sshRegistration(k), k);
        return;
      }
      case 'custody_ssh_key_signatures':
        addSignature(this.sshKeySignatures, sshRegistration({ fingerprint: s('fingerprint'), created_at: n('created_at') }), s('gateway'), s('signature'));
        return;
      case 'custody_ssh_key_removals': {
        const x: SshKeyRemovalRow = { fingerprint: s('fingerprint'), created_at: n('created_at'), key_id: s('key_id'), at: n('at'), gateway: s('gateway'), signature: s('signature') };
        this.sshKeyRemovals.set(`${sshRegistration(x)}/${x.gateway}`, x);
        return;
      }
      case 'custody_persons':
        this.persons.set(s('id'), { id: s('id'), name: s('name'), created_at: n('created_at'), created_by: s('created_by') });
        return;
      case 'custody_person_signatures':
        addSignature(this.personSignatures, s('id'), s('gateway'), s('signature'));
        return;
      case 'custody_person_links':
        this.links.set(`${s('credential')}/${s('gateway')}`, { credential: s('credential'), gateway: s('gateway'), person: s('person'), kind: s('kind'), linked_at: n('linked_at'), linked_by: s('linked_by'), signature: s('signature') });
        return;
      case 'custody_person_locks':
        this.locks.set(`${s('id')}/${s('gateway')}`, { id: s('id'), gateway: s('gateway'), at: n('at'), locked_by: s('locked_by'), signature: s('signature') });
        return;
      case 'custody_documents':
        this.documents.push({ kind: s('kind'), content: s('content'), hash: s('hash'), gateway: s('gateway'), version: n('version'), author: s('author'), author_name: s('author_name'), created_at: n('created_at'), signature: s('signature'), change: n('change') });
        return;
    }
  }
}
