/**
 * Secrets at rest: per-install keys (checkpoint signing key, masking HMAC key) and connection
 * secrets stored in the database.
 *
 * Headless (`custody serve`): `plainSecrets`, the secret bytes as they are, in files with mode 0600
 * (and the store file's own permissions) — the same protection as an SSH key.
 *
 * Desktop: envelope encryption. The OS keychain (Electron `safeStorage`, available only in the main
 * process) protects one random 32-byte vault key (main/secret-wrap.ts); the main process hands that
 * key to this gateway process at start, and `vaultSecrets` seals every secret with AES-256-GCM under
 * it. A copy of the data dir without the user's keychain opens nothing.
 *
 * Sealed format: `CSTV1\0` ‖ 12-byte nonce ‖ 16-byte GCM tag ‖ ciphertext (NIST SP 800-38D).
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { SecretProtection } from '../shared/gateway-process';
import { loadOrCreateKeyFile } from './key-files';

export interface SecretWrapper {
  /** `plain`: stored as is (0600 files); `vault`: sealed under the desktop app's vault key. */
  readonly kind: SecretProtection;
  /** Returns the form to store. */
  wrap(plain: Buffer): Buffer;
  /** Returns the secret from its stored form; throws SecretUnwrapError if it cannot. */
  unwrap(stored: Buffer): Buffer;
}

export class SecretUnwrapError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SecretUnwrapError';
  }
}

const MAGIC = Buffer.from('CSTV1\0', 'latin1');
const NONCE = 12;
const TAG = 16;

export const plainSecrets: SecretWrapper = {
  kind: 'plain',
  wrap: (plain) => Buffer.from(plain),
  unwrap: (stored) => {
    if (isSealed(stored)) throw new SecretUnwrapError('this secret is sealed by the Custody desktop app (OS keychain); open the data dir with the desktop app');
    return Buffer.from(stored);
  },
};

export function isSealed(stored: Buffer): boolean {
  return stored.length >= MAGIC.length && stored.subarray(0, MAGIC.length).equals(MAGIC);
}

/** AES-256-GCM under the desktop app's vault key. */
export function vaultSecrets(key: Buffer): SecretWrapper {
  if (key.length !== 32) throw new Error(`the vault key must be 32 bytes, got ${key.length}`);
  const vaultKey = Buffer.from(key);
  return {
    kind: 'vault',
    wrap(plain) {
      const nonce = randomBytes(NONCE);
      const cipher = createCipheriv('aes-256-gcm', vaultKey, nonce);
      const body = Buffer.concat([cipher.update(plain), cipher.final()]);
      return Buffer.concat([MAGIC, nonce, cipher.getAuthTag(), body]);
    },
    unwrap(stored) {
      if (!isSealed(stored) || stored.length < MAGIC.length + NONCE + TAG) {
        throw new SecretUnwrapError('the stored secret is not sealed (expected a CSTV1 envelope)');
      }
      const nonce = stored.subarray(MAGIC.length, MAGIC.length + NONCE);
      const tag = stored.subarray(MAGIC.length + NONCE, MAGIC.length + NONCE + TAG);
      const decipher = createDecipheriv('aes-256-gcm', vaultKey, nonce);
      decipher.setAuthTag(tag);
      try {
        return Buffer.concat([decipher.update(stored.subarray(MAGIC.length + NONCE + TAG)), decipher.final()]);
      } catch {
        throw new SecretUnwrapError('the sealed secret does not open with this vault key (was it sealed on another machine or account, or was the OS keychain reset?)');
      }
    },
  };
}

/**
 * Reads the per-install secret `<dataDir>/<name>`, creating it on first use.
 * Plain: the 0600 key file, as `loadOrCreateKeyFile` keeps it; refuses when only a sealed copy exists
 * (a headless gateway must not silently mint a new signing key for a desktop data dir).
 * Vault: `<name>.sealed`; an existing plain file is sealed and then removed (migration to desktop).
 */
export function loadOrCreateSecretFile(dataDir: string, name: string, secrets: SecretWrapper, create: () => Buffer = () => randomBytes(32)): Buffer {
  const plainFile = join(dataDir, name);
  const sealedFile = join(dataDir, `${name}.sealed`);
  if (secrets.kind === 'plain') {
    if (!existsSync(plainFile) && existsSync(sealedFile)) {
      throw new SecretUnwrapError(`${sealedFile} is sealed by the Custody desktop app's OS keychain; run this data dir with the desktop app`);
    }
    return loadOrCreateKeyFile(dataDir, name, create);
  }
  if (existsSync(sealedFile)) {
    try {
      return secrets.unwrap(readFileSync(sealedFile));
    } catch (err) {
      throw new SecretUnwrapError(`${sealedFile}: ${(err as Error).message}`);
    }
  }
  const value = existsSync(plainFile) ? readFileSync(plainFile) : create();
  const tmp = `${sealedFile}.tmp-${process.pid}`;
  writeFileSync(tmp, secrets.wrap(value), { mode: 0o600 });
  renameSync(tmp, sealedFile);
  if (existsSync(plainFile)) {
    writeFileSync(plainFile, Buffer.alloc(value.length)); // overwrite before unlinking
    rmSync(plainFile);
  }
  return value;
}
