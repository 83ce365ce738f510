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
 */
import { type KeyObject, verify } from 'node:crypto';
import type Database from 'better-sqlite3';
import type pg from 'pg';
import { canonicalize } from '../../../shared/canonical-json';
import type { ApiKeyRow } from '../migrations';
import type { ConfigMirror } from './config-changes';
import { keyFingerprint } from '../checkpoint-signer';
import { ed25519PublicKeyObject } from '../signed-note';

/** A key's row as shared (the local table's columns without `last_used_at`). */
export type SharedKeyRow = Omit<ApiKeyRow, 'last_used_at'>;

type CreationFields = Pick<ApiKeyRow, 'id' | 'name' | 'hash' | 'groups' | 'created_at' | 'created_by'>;
type ChangeKind = 'revoked' | 'expired';

const creationText = (k: CreationFields) => `custody-api-key/v1\n${canonicalize([k.id, k.name, k.hash, k.groups, k.created_at, k.created_by])}`;
const changeText = (id: string, kind: ChangeKind, at: number) => `custody-api-key-change/v1\n${canonicalize([id, kind, at])}`;

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

export class KeySync {
  /** Keys and changes this gateway has signed in the store (read from it at the first round). */
  private signedKeys: Set<string> | undefined;
  private signedChanges: Set<string> | undefined;

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
  async round(c: pg.Client, trust: TrustSet, mirror: ConfigMirror, ready: (key: SharedKeyRow) => boolean = () => true): Promise<SharedKeyRow[]> {
    if (!this.signedKeys || !this.signedChanges) {
      this.signedKeys = new Set((await c.query<{ id: string }>('SELECT id FROM custody_api_key_signatures WHERE gateway = $1', [this.gateway])).rows.map((r) => r.id));
      this.signedChanges = new Set((await c.query<{ id: string; kind: string; at: string }>('SELECT id, kind, at FROM custody_api_key_changes WHERE gateway = $1', [this.gateway])).rows.map((r) => `${r.id}/${r.kind}/${num(r.at)}`));
    }
    const local = new Map((this.db.prepare('SELECT id, name, hash, groups, created_at, created_by, expires_at, revoked_at FROM api_keys').all() as SharedKeyRow[]).map((r) => [r.id, r]));
    await this.push(c, local, ready);
    return this.pull(mirror, local, trust);
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
    await c.query('BEGIN');
    try {
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
      await c.query('COMMIT');
    } catch (err) {
      await c.query('ROLLBACK').catch(() => {});
      throw err;
    }
    for (const r of keys) signedKeys.add(r.id);
    for (const ch of changes) signedChanges.add(`${ch.id}/${ch.kind}/${ch.at}`);
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
      const text = creationText(k);
      if (!mine && ![...(mirror.keySignatures.get(k.id) ?? [])].some(([gateway, signature]) => trust.verify(gateway, text, signature))) continue;
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
