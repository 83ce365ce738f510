/**
 * SSH public keys registered for API keys (`custody keys add-ssh`, POST /api/keys/:id/ssh-keys):
 * a client that offers one of them to an `ssh` connection's listener, and signs with its private
 * half, logs in as that API key — same groups, same person, same expiry, and refused once the key is
 * revoked or its person locked. This is how an OIDC user, whose token is longer than OpenSSH takes
 * as a password, reaches a host: they register their own public key under a key they own.
 *
 * Only the public key is stored (its blob and fingerprint); adding and removing are recorded
 * (`key.created` / `key.revoked` with `credential: "ssh-key"`). The gateway reads the table once per
 * login, off its thread, so keys the CLI adds beside a running gateway work at once.
 */
import { createHash } from 'node:crypto';
import type Database from 'better-sqlite3';
import ssh2 from 'ssh2';
import type { SshKeyCreationRow } from '../audit/shared-store/config-changes';

export interface SshKeyRecord {
  fingerprint: string;
  keyId: string;
  algo: string;
  /** base64 of the public key blob (the middle field of an authorized_keys line). */
  publicKey: string;
  comment: string | null;
  createdAt: number;
  createdBy: string;
  removedAt: number | null;
}

/** A row of the `ssh_keys` table (shared by the gateways of a group: key-sync.ts). */
/** A row of the `ssh_keys` table: its creation fields (shared by the group as they are) and its removal. */
export interface SshKeyRow extends SshKeyCreationRow {
  removed_at: number | null;
}

export class SshKeyError extends Error {
  constructor(
    readonly status: 400 | 404 | 409,
    message: string,
  ) {
    super(message);
    this.name = 'SshKeyError';
  }
}

/** `SHA256:<base64 without padding>` of a public key blob, as `ssh-keygen -l` prints it. */
export function sshFingerprint(blob: Buffer): string {
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
}

/** Reads one OpenSSH public key (an `id_ed25519.pub` line); throws SshKeyError saying what is wrong. */
export function parseSshPublicKey(text: string): { algo: string; blob: Buffer; comment: string | null; fingerprint: string } {
  const line = text.trim();
  if (!line) throw new SshKeyError(400, 'no public key given (expected one line such as "ssh-ed25519 AAAA… me@laptop")');
  if (/PRIVATE KEY/.test(line)) throw new SshKeyError(400, 'this is a private key; register the public half (the .pub file), and keep the private key to yourself');
  if (line.includes('\n')) throw new SshKeyError(400, 'give one public key (one line); register each key on its own');
  const parsed = ssh2.utils.parseKey(line);
  if (parsed instanceof Error) throw new SshKeyError(400, `not an OpenSSH public key: ${parsed.message}`);
  const key = Array.isArray(parsed) ? parsed[0] : parsed;
  if (!key || key.isPrivateKey()) throw new SshKeyError(400, 'not an OpenSSH public key');
  const blob = key.getPublicSSH();
  return { algo: key.type, blob, comment: key.comment || null, fingerprint: sshFingerprint(blob) };
}

function toRecord(r: SshKeyRow): SshKeyRecord {
  return { fingerprint: r.fingerprint, keyId: r.key_id, algo: r.algo, publicKey: r.public_key, comment: r.comment, createdAt: r.created_at, createdBy: r.created_by, removedAt: r.removed_at };
}

/** Reads rows off the gateway's thread (AuditStore.readAsync). */
export type SshKeyReader = <T>(sql: string, params?: unknown[]) => Promise<T[]>;

export class SshKeyStore {
  constructor(
    private readonly db: Database.Database,
    private readonly reader?: SshKeyReader,
  ) {}

  /** Registers `publicKey` for API key `keyId` (the caller checks that the key exists and may be used). */
  add(keyId: string, publicKey: string, createdBy: string, now = Date.now()): SshKeyRecord {
    const k = parseSshPublicKey(publicKey);
    const existing = this.db.prepare('SELECT * FROM ssh_keys WHERE fingerprint = ?').get(k.fingerprint) as SshKeyRow | undefined;
    if (existing && existing.removed_at === null) throw new SshKeyError(409, `the SSH key ${k.fingerprint} is already registered (for API key ${existing.key_id}); remove it there first`);
    this.db
      .prepare(
        'INSERT INTO ssh_keys (fingerprint, key_id, algo, public_key, comment, created_at, created_by, removed_at) VALUES (?, ?, ?, ?, ?, ?, ?, NULL) ' +
          'ON CONFLICT(fingerprint) DO UPDATE SET key_id = excluded.key_id, algo = excluded.algo, public_key = excluded.public_key, comment = excluded.comment, created_at = excluded.created_at, created_by = excluded.created_by, removed_at = NULL',
      )
      .run(k.fingerprint, keyId, k.algo, k.blob.toString('base64'), k.comment, now, createdBy);
    return this.get(k.fingerprint)!;
  }

  /** Stops a registered key from logging in. Returns the record it removed, if one was active. */
  remove(fingerprint: string, now = Date.now()): SshKeyRecord | undefined {
    const changed = this.db.prepare('UPDATE ssh_keys SET removed_at = ? WHERE fingerprint = ? AND removed_at IS NULL').run(now, fingerprint).changes;
    return changed ? this.get(fingerprint) : undefined;
  }

  get(fingerprint: string): SshKeyRecord | undefined {
    const r = this.db.prepare('SELECT * FROM ssh_keys WHERE fingerprint = ?').get(fingerprint) as SshKeyRow | undefined;
    return r && toRecord(r);
  }

  /** Active keys, of one API key or all. */
  list(keyId?: string): SshKeyRecord[] {
    const rows = keyId
      ? (this.db.prepare('SELECT * FROM ssh_keys WHERE key_id = ? AND removed_at IS NULL ORDER BY created_at').all(keyId) as SshKeyRow[])
      : (this.db.prepare('SELECT * FROM ssh_keys WHERE removed_at IS NULL ORDER BY created_at').all() as SshKeyRow[]);
    return rows.map(toRecord);
  }

  /** The active key with this public key blob (at login; off the gateway's thread when a reader is set). */
  async find(blob: Buffer): Promise<SshKeyRecord | undefined> {
    const fp = sshFingerprint(blob);
    const sql = 'SELECT * FROM ssh_keys WHERE fingerprint = ? AND removed_at IS NULL';
    const rows = this.reader ? await this.reader<SshKeyRow>(sql, [fp]) : (this.db.prepare(sql).all(fp) as SshKeyRow[]);
    const r = rows[0];
    // The fingerprint names the blob; compare the blob itself all the same.
    return r && Buffer.from(r.public_key, 'base64').equals(blob) ? toRecord(r) : undefined;
  }
}
