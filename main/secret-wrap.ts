/**
 * The desktop side of secrets at rest. Electron `safeStorage` (macOS Keychain, Windows DPAPI,
 * libsecret/KWallet on Linux) is available only in the main process, so it protects one thing:
 * a random 32-byte vault key in `<dataDir>/vault.key.safe`. The gateway process receives that key
 * at start and seals its key files and connection secrets with it (proxy/secret-wrapper.ts). The
 * remote-gateway sign-in tokens are kept with the keychain directly.
 *
 * Fail closed: if a sealed vault key exists but the keychain cannot open it, the app stops with a
 * message instead of minting a new key (which would orphan every secret sealed so far).
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

/** Wraps bytes with the OS keychain. */
export interface OsKeychain {
  /** False when no OS keychain is usable (then the desktop falls back to plain 0600 files). */
  readonly available: boolean;
  /** Why it is unavailable or weak, for the log and the about box. */
  readonly detail: string;
  wrap(plain: Buffer): Buffer;
  unwrap(sealed: Buffer): Buffer;
}

/** The part of Electron's `safeStorage` used here (string API: bytes travel as base64). */
export interface SafeStorageLike {
  isEncryptionAvailable(): boolean;
  encryptString(plainText: string): Buffer;
  decryptString(encrypted: Buffer): string;
  getSelectedStorageBackend?(): string;
}

export class KeychainError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KeychainError';
  }
}

/**
 * An OsKeychain over `safeStorage`. On Linux, the `basic_text` backend (no keyring running) uses a
 * hard-coded password, which protects nothing: it counts as unavailable.
 */
export function safeStorageKeychain(safeStorage: SafeStorageLike, platform: string = process.platform): OsKeychain {
  const backend = platform === 'linux' ? safeStorage.getSelectedStorageBackend?.() : undefined;
  const available = safeStorage.isEncryptionAvailable() && backend !== 'basic_text';
  const detail = !safeStorage.isEncryptionAvailable()
    ? 'the OS keychain is not available'
    : backend === 'basic_text'
      ? 'no keyring is running (libsecret or KWallet); secrets stay in 0600 files'
      : `OS keychain${backend ? ` (${backend})` : ''}`;
  return {
    available,
    detail,
    wrap(plain) {
      if (!available) throw new KeychainError(`cannot seal: ${detail}`);
      return safeStorage.encryptString(plain.toString('base64'));
    },
    unwrap(sealed) {
      if (!available) throw new KeychainError(`cannot unseal: ${detail}`);
      try {
        return Buffer.from(safeStorage.decryptString(sealed), 'base64');
      } catch (err) {
        throw new KeychainError(`the OS keychain could not open it (${(err as Error).message})`);
      }
    },
  };
}

function writeAtomic(file: string, data: Buffer): void {
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, data, { mode: 0o600 });
  renameSync(tmp, file);
}

export const VAULT_KEY_FILE = 'vault.key.safe';

/**
 * The gateway's vault key for `dataDir`, created on first use. Returns null when the keychain is
 * unavailable and no vault exists yet (the gateway then keeps plain 0600 files, as headless does).
 * Throws KeychainError when a vault exists that the keychain cannot open.
 */
export function loadOrCreateVaultKey(dataDir: string, keychain: OsKeychain): Buffer | null {
  const file = join(dataDir, VAULT_KEY_FILE);
  if (existsSync(file)) {
    if (!keychain.available) throw new KeychainError(`${file} exists but ${keychain.detail}; the gateway's secrets cannot be opened without it`);
    let key: Buffer;
    try {
      key = keychain.unwrap(readFileSync(file));
    } catch (err) {
      throw new KeychainError(`${file}: ${(err as Error).message}. It was sealed by another user account or machine, or the keychain entry was removed`);
    }
    if (key.length !== 32) throw new KeychainError(`${file}: unexpected vault key length ${key.length}`);
    return key;
  }
  if (!keychain.available) return null;
  const key = randomBytes(32);
  writeAtomic(file, keychain.wrap(key));
  return key;
}

/** OIDC tokens for a remote gateway, as stored. */
export interface StoredTokens {
  issuer: string;
  clientId: string;
  gateway: string;
  accessToken: string;
  idToken?: string;
  refreshToken?: string;
  /** Epoch ms. */
  expiresAt?: number;
}

/** Keeps the remote sign-in tokens sealed with the OS keychain (never in plain text). */
export class TokenVault {
  constructor(
    private readonly file: string,
    private readonly keychain: OsKeychain,
  ) {}

  save(tokens: StoredTokens): void {
    if (!this.keychain.available) throw new KeychainError(`cannot keep sign-in tokens: ${this.keychain.detail}`);
    writeAtomic(this.file, this.keychain.wrap(Buffer.from(JSON.stringify(tokens))));
  }

  /** The saved tokens, or null when none are saved or they cannot be opened (sign in again). */
  load(): StoredTokens | null {
    if (!existsSync(this.file) || !this.keychain.available) return null;
    try {
      return JSON.parse(this.keychain.unwrap(readFileSync(this.file)).toString('utf8')) as StoredTokens;
    } catch {
      return null;
    }
  }

  clear(): void {
    rmSync(this.file, { force: true });
  }
}
