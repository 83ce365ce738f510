/**
 * API keys shared by the gateways of a group (docs/SCALE-OUT.md, "Keys"). Each gateway keeps its
 * keys in its own SQLite `api_keys` table, as a lone gateway does; the shared store is where they
 * meet, and every row there is signed by a gateway's checkpoint key, because whoever can write to
 * the store must not be able to mint a key:
 *
 * - `custody_api_keys`: a key's creation fields (id, name, hash of the secret, groups, when, by
 *   whom). Immutable once written.
 * - `custody_api_key_signatures`: each gateway that holds a key signs its creation fields. A gateway
 *   copies a key into its table only when a gateway it trusts signed it, and then signs it too, so a
 *   key vouched for by any trusted gateway spreads through the gateways that trust that one.
 * - `custody_api_key_changes`: revocations and expiries, each signed by the gateway that made or
 *   accepted it. They only ever shorten a key's life: the earliest revocation and expiry win, and no
 *   copy un-revokes a key.
 *
 * Whom a gateway trusts (`TrustSet`): itself, the gateways it approved (the `gateway.approved`
 * events of its own chain, which name their keys), and the gateway that approved it (learned from
 * the store when it was admitted, as the admission itself was). Run by the shared store's worker
 * thread once a round (shipper-worker.ts), off the proxies' thread; the rows to copy are written on
 * the commit thread by the gateway's thread (`APPLY_PULLED_KEY_SQL`).
 *
 * The event that records a key's creation or revocation (`key.created`, `key.revoked`) is in the
 * chain of the gateway where it happened; the others copy the row.
 *
 * The SSH public keys registered under API keys (proxy/identity/ssh-keys.ts, the local `ssh_keys`
 * table) travel the same way, in the same round (migration 14):
 *
 * - `custody_ssh_keys` (+ `custody_ssh_key_signatures`): one registration's creation fields
 *   (fingerprint, API key, algorithm, public key blob, comment, when, by whom), immutable, signed by
 *   each gateway that holds it. A key removed and registered again is a new registration.
 * - `custody_ssh_key_removals`: a removal of one registration, signed by the gateway that made or
 *   accepted it. Sticky like a revocation: the earliest trusted one wins and nothing un-removes.
 *
 * An SSH key goes to the store only once this gateway has signed its API key there, and a gateway
 * copies one only when a trusted gateway signed it and it holds (or takes in the same round) the
 * API key it logs in as: the API key first, then its SSH keys, as persons before keys. Of several
 * registrations of one public key, the newest a trusted gateway signed is the one held.
 */
import { type KeyObject, verify } from 'node:crypto';
import type Database from 'better-sqlite3';
import type pg from 'pg';
import { canonicalize } from '../../../shared/canonical-json';
import type { ApiKeyRow } from '../migrations';
import { type ConfigMirror, type SshKeyCreationRow, sshRegistration } from './config-changes';
import { keyFingerprint } from '../checkpoint-signer';
import { ed25519PublicKeyObject } from '../signed-note';

/** A key's row as shared (the local table's columns without `last_used_at`). */
export type SharedKeyRow = Omit<ApiKeyRow, 'last_used_at'>;

/** An SSH key's registration as shared, with its removal as this gateway's table should hold it. */
export type SharedSshKeyRow = SshKeyCreationRow & { removed_at: number | null };

type CreationFields = Pick<ApiKeyRow, 'id' | 'name' | 'hash' | 'groups' | 'created_at' | 'created_by'>;
type ChangeKind = 'revoked' | 'expired';

const creationText = (k: CreationFields) => `custody-api-key/v1\n${canonicalize([k.id, k.name, k.hash, k.groups, k.created_at, k.created_by])}`;
const changeText = (id: string, kind: ChangeKind, at: number) => `custody-api-key-change/v1\n${canonicalize([id, kind, at])}`;
const sshCreationText = (k: SshKeyCreationRow) => `custody-ssh-key/v1\n${canonicalize([k.fingerprint, k.key_id, k.algo, k.public_key, k.comment, k.created_at, k.created_by])}`;
const sshRemovalText = (k: Pick<SshKeyCreationRow, 'fingerprint' | 'created_at' | 'key_id'>, at: number) => `custody-ssh-key-removal/v1\n${canonicalize([k.fingerprint, k.created_at, k.key_id, at])}`;

/** Whether a gateway in `trust` signed `text` among a row's signatures (by signing gateway). */
export function signedByTrusted(signatures: Map<string, string> | undefined, text: string, trust: TrustSet): boolean {
  return [...(signatures ?? [])].some(([gateway, signature]) => trust.verify(gateway, text, signature));
}

/** Runs `work` in one transaction on `c`: every row it writes is committed (and announced) together, or none. */
export async function inTransaction(c: pg.Client, work: () => Promise<void>): Promise<void> {
  await c.query('BEGIN');
  try {
    await work();
    await c.query('COMMIT');
  } catch (err) {
    await c.query('ROLLBACK').catch(() => {});
    throw err;
  }
}

/** The gateways whose signatures this gateway accepts, by id (the fingerprint of the key). */
export class TrustSet {
  private readonly keys = new Map<string, KeyObject>();
  /** The raw public keys (base64), as added. */
  private readonly raw = new Map<string, string>();
  /** Signatures found good (gateway, signature, text): the rows every round reads are not verified again. */
  private readonly good = new Set<string>();

  /** Adds a gateway by its raw Ed25519 public key (base64), if the key's fingerprint is the id given. */
  add(id: string, publicKey: string): void {
    const raw = Buffer.from(publicKey, 'base64');
    if (raw.length !== 32 || keyFingerprint(raw) !== id) return;
    this.keys.set(id, ed25519PublicKeyObject(raw));
    this.raw.set(id, publicKey);
  }

  /** The raw public key (base64) trusted for `id`, if any. */
  publicKey(id: string): string | undefined {
    return this.raw.get(id);
  }

  /** The gateways trusted, by id. */
  ids(): string[] {
    return [...this.keys.keys()];
  }

  has(id: string): boolean {
    return this.keys.has(id);
  }

  /** Stops trusting a gateway (removed from the group): nothing it signed is accepted from now on. */
  delete(id: string): void {
    this.keys.delete(id);
    this.raw.delete(id);
  }

  verify(id: string, text: string, signature: string): boolean {
    const key = this.keys.get(id);
    if (!key) return false;
    const memo = `${id}\n${signature}\n${text}`;
    if (this.good.has(memo)) return true;
    let ok = false;
    try {
      ok = verify(null, Buffer.from(text), key, Buffer.from(signature, 'base64'));
    } catch {
      ok = false;
    }
    if (ok) this.good.add(memo);
    return ok;
  }

  get size(): number {
    return this.keys.size;
  }
}

/** BIGINT columns come back from `pg` as strings. */
const num = (v: unknown): number => Number(v);

/** What the local tables should take from the group: keys first, then the SSH keys that log in as them. */
export interface PulledKeys {
  keys: SharedKeyRow[];
  sshKeys: SharedSshKeyRow[];
}

export class KeySync {
  /** Keys and changes this gateway has signed in the store (read from it at the first round). */
  private signedKeys: Set<string> | undefined;
  private signedChanges: Set<string> | undefined;
  /** SSH key registrations (`sshRegistration`) and their removals (`registration/at`) this gateway has signed. */
  private signedSsh: Set<string> | undefined;
  private signedSshRemovals: Set<string> | undefined;

  constructor(
    private readonly db: Database.Database,
    private readonly gateway: string,
    /** This gateway's signature over a text, base64 (its checkpoint key: shipper-worker.ts). */
    private readonly sign: (text: string) => Promise<string>,
  ) {}

  /**
   * One round: sign and push what the local table holds that this gateway has not signed yet, then
   * return the rows the local table should take (new keys, or stricter revocation and expiry),
   * trusting only `trust`'s signatures, from the store's rows as `mirror` last read them. A key for
   * which `ready` says no is pushed at a later round (person-sync.ts: a key goes to the store only
   * after its owner's link).
   */
  async round(c: pg.Client, trust: TrustSet, mirror: ConfigMirror, ready: (key: SharedKeyRow) => boolean = () => true): Promise<PulledKeys> {
    if (!this.signedKeys || !this.signedChanges || !this.signedSsh || !this.signedSshRemovals) {
      this.signedKeys = new Set((await c.query<{ id: string }>('SELECT id FROM custody_api_key_signatures WHERE gateway = $1', [this.gateway])).rows.map((r) => r.id));
      this.signedChanges = new Set((await c.query<{ id: string; kind: string; at: string }>('SELECT id, kind, at FROM custody_api_key_changes WHERE gateway = $1', [this.gateway])).rows.map((r) => `${r.id}/${r.kind}/${num(r.at)}`));
      const regs = await c.query<{ fingerprint: string; created_at: string }>('SELECT fingerprint, created_at FROM custody_ssh_key_signatures WHERE gateway = $1', [this.gateway]);
      this.signedSsh = new Set(regs.rows.map((r) => sshRegistration({ fingerprint: r.fingerprint, created_at: num(r.created_at) })));
      const gone = await c.query<{ fingerprint: string; created_at: string; at: string }>('SELECT fingerprint, created_at, at FROM custody_ssh_key_removals WHERE gateway = $1', [this.gateway]);
      this.signedSshRemovals = new Set(gone.rows.map((r) => `${sshRegistration({ fingerprint: r.fingerprint, created_at: num(r.created_at) })}/${num(r.at)}`));
    }
    const local = new Map((this.db.prepare('SELECT id, name, hash, groups, created_at, created_by, expires_at, revoked_at FROM api_keys').all() as SharedKeyRow[]).map((r) => [r.id, r]));
    const localSsh = new Map((this.db.prepare('SELECT fingerprint, key_id, algo, public_key, comment, created_at, created_by, removed_at FROM ssh_keys').all() as SharedSshKeyRow[]).map((r) => [r.fingerprint, r]));
    await this.push(c, local, ready);
    // After the keys' transaction: an SSH key reaches the store in the same snapshot as its API key or later.
    await this.pushSsh(c, localSsh);
    const keys = this.pull(mirror, local, trust);
    return { keys, sshKeys: this.pullSsh(mirror, localSsh, new Set([...local.keys(), ...keys.map((k) => k.id)]), trust) };
  }

  private async push(c: pg.Client, local: Map<string, SharedKeyRow>, ready: (key: SharedKeyRow) => boolean): Promise<void> {
    const signedKeys = this.signedKeys!;
    const signedChanges = this.signedChanges!;
    const keys = [...local.values()].filter((r) => !signedKeys.has(r.id) && ready(r));
    const changes: { id: string; kind: ChangeKind; at: number }[] = [];
    for (const r of local.values()) {
      if (r.revoked_at !== null && !signedChanges.has(`${r.id}/revoked/${r.revoked_at}`)) changes.push({ id: r.id, kind: 'revoked', at: r.revoked_at });
      if (r.expires_at !== null && !signedChanges.has(`${r.id}/expired/${r.expires_at}`)) changes.push({ id: r.id, kind: 'expired', at: r.expires_at });
    }
    if (!keys.length && !changes.length) return;
    await inTransaction(c, async () => {
      for (const r of keys) {
        // Creation fields are immutable: a different key already stored under this id is left alone (and not signed).
        await c.query(
          `INSERT INTO custody_api_keys (id, name, hash, groups, created_at, created_by, origin) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING`,
          [r.id, r.name, r.hash, r.groups, r.created_at, r.created_by, this.gateway],
        );
        const stored = (await c.query<CreationFields & { created_at: string }>('SELECT id, name, hash, groups, created_at, created_by FROM custody_api_keys WHERE id = $1', [r.id])).rows[0];
        if (!stored || creationText({ ...stored, created_at: num(stored.created_at) }) !== creationText(r)) continue;
        await c.query('INSERT INTO custody_api_key_signatures (id, gateway, signature) VALUES ($1, $2, $3) ON CONFLICT (id, gateway) DO NOTHING', [r.id, this.gateway, await this.sign(creationText(r))]);
      }
      for (const ch of changes) {
        await c.query('INSERT INTO custody_api_key_changes (id, kind, at, gateway, signature) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id, kind, gateway) DO UPDATE SET at = LEAST(custody_api_key_changes.at, EXCLUDED.at), signature = CASE WHEN EXCLUDED.at < custody_api_key_changes.at THEN EXCLUDED.signature ELSE custody_api_key_changes.signature END', [
          ch.id,
          ch.kind,
          ch.at,
          this.gateway,
          await this.sign(changeText(ch.id, ch.kind, ch.at)),
        ]);
      }
    });
    for (const r of keys) signedKeys.add(r.id);
    for (const ch of changes) signedChanges.add(`${ch.id}/${ch.kind}/${ch.at}`);
  }

  /**
   * Signs and writes the SSH key registrations and removals the local table holds that this gateway
   * has not signed yet, each once this gateway has signed its API key in the store.
   */
  private async pushSsh(c: pg.Client, local: Map<string, SharedSshKeyRow>): Promise<void> {
    const signedKeys = this.signedKeys!;
    const signed = this.signedSsh!;
    const removals = this.signedSshRemovals!;
    const ready = [...local.values()].filter((r) => signedKeys.has(r.key_id));
    const regs = ready.filter((r) => !signed.has(sshRegistration(r)));
    const gone = ready.filter((r) => r.removed_at !== null && !removals.has(`${sshRegistration(r)}/${r.removed_at}`));
    if (!regs.length && !gone.length) return;
    await inTransaction(c, async () => {
      for (const r of regs) {
        // Creation fields are immutable: a different registration already stored under this one's id is left alone (and not signed).
        const fields = [r.fingerprint, r.created_at, r.key_id, r.algo, r.public_key, r.comment, r.created_by, this.gateway];
        await c.query('INSERT INTO custody_ssh_keys (fingerprint, created_at, key_id, algo, public_key, comment, created_by, origin) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (fingerprint, created_at) DO NOTHING', fields);
        const stored = (await c.query<SshKeyCreationRow & { created_at: string }>('SELECT fingerprint, key_id, algo, public_key, comment, created_at, created_by FROM custody_ssh_keys WHERE fingerprint = $1 AND created_at = $2', [r.fingerprint, r.created_at])).rows[0];
        if (!stored || sshCreationText({ ...stored, created_at: num(stored.created_at) }) !== sshCreationText(r)) continue;
        await c.query('INSERT INTO custody_ssh_key_signatures (fingerprint, created_at, gateway, signature) VALUES ($1, $2, $3, $4) ON CONFLICT (fingerprint, created_at, gateway) DO NOTHING', [r.fingerprint, r.created_at, this.gateway, await this.sign(sshCreationText(r))]);
      }
      for (const r of gone) {
        await c.query(
          `INSERT INTO custody_ssh_key_removals (fingerprint, created_at, key_id, at, gateway, signature) VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (fingerprint, created_at, gateway) DO UPDATE SET at = EXCLUDED.at, key_id = EXCLUDED.key_id, signature = EXCLUDED.signature WHERE EXCLUDED.at < custody_ssh_key_removals.at`,
          [r.fingerprint, r.created_at, r.key_id, r.removed_at, this.gateway, await this.sign(sshRemovalText(r, r.removed_at!))],
        );
      }
    });
    for (const r of regs) signed.add(sshRegistration(r));
    for (const r of gone) removals.add(`${sshRegistration(r)}/${r.removed_at}`);
  }

  /**
   * The SSH key rows the local table should take: per public key, the newest registration a trusted
   * gateway signed whose API key is `held` (here, or taken this round), unless this table holds that
   * one or a newer; and the earliest trusted removal of each registration held here.
   */
  private pullSsh(mirror: ConfigMirror, local: Map<string, SharedSshKeyRow>, held: Set<string>, trust: TrustSet): SharedSshKeyRow[] {
    const removed = new Map<string, number>();
    for (const x of mirror.sshKeyRemovals.values()) {
      if (!trust.verify(x.gateway, sshRemovalText(x, x.at), x.signature)) continue;
      const id = `${sshRegistration(x)}/${x.key_id}`;
      removed.set(id, Math.min(removed.get(id) ?? Infinity, x.at));
    }
    const removedAt = (r: SshKeyCreationRow) => removed.get(`${sshRegistration(r)}/${r.key_id}`);
    const newest = new Map<string, SshKeyCreationRow>();
    for (const [id, k] of mirror.sshKeys) {
      if (!held.has(k.key_id) || (newest.get(k.fingerprint)?.created_at ?? -Infinity) >= k.created_at) continue;
      if (signedByTrusted(mirror.sshKeySignatures.get(id), sshCreationText(k), trust)) newest.set(k.fingerprint, k);
    }
    const out: SharedSshKeyRow[] = [];
    for (const k of newest.values()) {
      const mine = local.get(k.fingerprint);
      if (mine && mine.created_at >= k.created_at) continue; // held here (its removal below), or a newer one made here
      out.push({ ...k, removed_at: removedAt(k) ?? null });
    }
    for (const mine of local.values()) {
      const at = removedAt(mine);
      if (at !== undefined && (mine.removed_at === null || at < mine.removed_at)) out.push({ ...mine, removed_at: at });
    }
    return out;
  }

  /** The rows the local table should take, from the store's rows as last read (`mirror`), trusting only `trust`'s signatures. */
  private pull(mirror: ConfigMirror, local: Map<string, SharedKeyRow>, trust: TrustSet): SharedKeyRow[] {
    // The earliest trusted revocation and expiry of each key.
    const earliest = new Map<string, { revoked?: number; expired?: number }>();
    for (const ch of mirror.keyChanges.values()) {
      if (!trust.verify(ch.gateway, changeText(ch.id, ch.kind, ch.at), ch.signature)) continue;
      const e = earliest.get(ch.id) ?? earliest.set(ch.id, {}).get(ch.id)!;
      e[ch.kind] = Math.min(e[ch.kind] ?? Infinity, ch.at);
    }
    const out: SharedKeyRow[] = [];
    for (const k of mirror.keys.values()) {
      const mine = local.get(k.id);
      if (mine && mine.hash !== k.hash) continue; // not the same key: never copied over a local one
      if (!mine && !signedByTrusted(mirror.keySignatures.get(k.id), creationText(k), trust)) continue;
      const e = earliest.get(k.id) ?? {};
      const revoked = minOf(mine?.revoked_at, e.revoked);
      const expires = minOf(mine?.expires_at, e.expired);
      if (mine && revoked === mine.revoked_at && expires === mine.expires_at) continue;
      out.push({ ...k, expires_at: expires, revoked_at: revoked });
    }
    return out;
  }
}

function minOf(a: number | null | undefined, b: number | undefined): number | null {
  const v = Math.min(a ?? Infinity, b ?? Infinity);
  return v === Infinity ? null : v;
}

/**
 * The gateways this one trusts for signed rows: itself, those its own chain approved, and the one
 * that approved it (`approver`, from the store at admission). Kept across rounds: each call reads
 * only the events recorded since the last (the approvals are few, the log is long).
 */
export class LocalTrust {
  private readonly trust = new TrustSet();
  /** The local chain's seq up to which approvals have been read. */
  private scanned = 0;

  constructor(
    private readonly db: Database.Database,
    self: { id: string; publicKey: string },
  ) {
    this.trust.add(self.id, self.publicKey);
  }

  /** Gateways removed from the group (`gateway.removed`): never trusted again, approvals or not. */
  private readonly removed = new Set<string>();

  /** A gateway was removed from the group: its signatures are no longer accepted. */
  remove(id: string): void {
    this.removed.add(id);
    this.trust.delete(id);
  }

  isRemoved(id: string): boolean {
    return this.removed.has(id);
  }

  /** The set, with `roots` (keys pinned locally: the approver, the group's enrolled gateway) added unless removed. */
  current(...roots: ({ id: string; publicKey: string } | undefined)[]): TrustSet {
    for (const r of roots) if (r && !this.trust.has(r.id) && !this.removed.has(r.id)) this.trust.add(r.id, r.publicKey);
    const head = (this.db.prepare('SELECT coalesce(max(seq), 0) AS n FROM events').get() as { n: number }).n;
    if (head > this.scanned) {
      for (const r of this.db.prepare("SELECT payload FROM events WHERE seq > ? AND seq <= ? AND kind = 'gateway.approved' AND encoding = 'json'").all(this.scanned, head) as { payload: string | Buffer }[]) {
        try {
          const p = JSON.parse(String(r.payload)) as { id?: string; publicKey?: string };
          if (p.id && p.publicKey && !this.removed.has(p.id)) this.trust.add(p.id, p.publicKey);
        } catch {
          // not an approval this gateway can read: not trusted
        }
      }
      this.scanned = head;
    }
    return this.trust;
  }
}

/**
 * Writes a pulled row into the local table (on the commit thread, through `writeBehind`): a new key
 * as signed, or an existing one's earlier revocation or expiry. A local revocation or expiry stays.
 */
export const APPLY_PULLED_KEY_SQL = `INSERT INTO api_keys (id, name, hash, groups, created_at, created_by, expires_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
  ON CONFLICT(id) DO UPDATE SET
    expires_at = CASE WHEN api_keys.expires_at IS NULL THEN excluded.expires_at WHEN excluded.expires_at IS NULL THEN api_keys.expires_at ELSE min(api_keys.expires_at, excluded.expires_at) END,
    revoked_at = CASE WHEN api_keys.revoked_at IS NULL THEN excluded.revoked_at WHEN excluded.revoked_at IS NULL THEN api_keys.revoked_at ELSE min(api_keys.revoked_at, excluded.revoked_at) END
  WHERE api_keys.hash = excluded.hash`;

export function pulledKeyParams(r: SharedKeyRow): unknown[] {
  return [r.id, r.name, r.hash, r.groups, r.created_at, r.created_by, r.expires_at, r.revoked_at];
}

/**
 * Writes a pulled SSH key row into the local table (on the commit thread, after the keys of the
 * same round): a registration newer than the one held, or the held one's earlier removal. A local
 * removal stays, and a registration held here is never moved to another API key.
 */
export const APPLY_PULLED_SSH_KEY_SQL = `INSERT INTO ssh_keys (fingerprint, key_id, algo, public_key, comment, created_at, created_by, removed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
  ON CONFLICT(fingerprint) DO UPDATE SET
    key_id = excluded.key_id, algo = excluded.algo, public_key = excluded.public_key, comment = excluded.comment, created_at = excluded.created_at, created_by = excluded.created_by,
    removed_at = CASE WHEN excluded.created_at > ssh_keys.created_at OR ssh_keys.removed_at IS NULL THEN excluded.removed_at WHEN excluded.removed_at IS NULL THEN ssh_keys.removed_at ELSE min(ssh_keys.removed_at, excluded.removed_at) END
  WHERE excluded.created_at > ssh_keys.created_at OR (excluded.created_at = ssh_keys.created_at AND excluded.key_id = ssh_keys.key_id AND excluded.public_key = ssh_keys.public_key)`;

export function pulledSshKeyParams(r: SharedSshKeyRow): unknown[] {
  return [r.fingerprint, r.key_id, r.algo, r.public_key, r.comment, r.created_at, r.created_by, r.removed_at];
}
