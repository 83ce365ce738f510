/**
 * The gateway's checkpoint signing key: Ed25519, generated at first start and kept as PKCS#8 PEM in
 * `<dataDir>/checkpoint-signing.key` (mode 0600) — or, when the desktop app runs the gateway, sealed
 * under its OS-keychain vault key (`checkpoint-signing.key.sealed`, proxy/secret-wrapper.ts), so a
 * copy of the data dir cannot sign; the public half is then kept beside it in the clear
 * (`checkpoint-signing.pub`, a verifier key line) for offline verification. Its key name is the checkpoint origin, fixed when
 * the key is made (recorded in the store's meta table and announced in the chained log), so the key
 * id — and therefore every earlier checkpoint — stays verifiable if the config's origin changes.
 */
import { createHash, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { loadOrCreateSecretFile, plainSecrets, type SecretWrapper } from '../secret-wrapper';
import {
  type CheckpointBody,
  ed25519KeyId,
  ed25519PublicKeyObject,
  ed25519RawPublicKey,
  formatCheckpointText,
  formatVerifierKey,
  isValidKeyName,
  keyIdHex,
  loadEd25519PrivateKey,
  type NoteVerifier,
  parseVerifierKey,
  signNote,
} from './signed-note';

export const SIGNING_KEY_FILE = 'checkpoint-signing.key';
/** The sealed key's public half, in the clear: a verifier key line (written only when the key is sealed). */
export const SIGNING_PUBLIC_KEY_FILE = 'checkpoint-signing.pub';

/** The data dir's signing key is sealed by the desktop app: this process cannot sign with it. */
export class SealedSigningKeyError extends Error {
  constructor(dataDir: string) {
    super(`${join(dataDir, `${SIGNING_KEY_FILE}.sealed`)} is sealed by the Custody desktop app's OS keychain: sign with this data dir from the desktop app`);
    this.name = 'SealedSigningKeyError';
  }
}
/** meta key holding the key name chosen when the signing key was made. */
export const KEY_NAME_META = 'checkpoint.keyName';

/** `custody/<hostname>`, with characters a signed-note key name cannot hold replaced. */
export function defaultOrigin(): string {
  return `custody/${hostname().replace(/[\s+]/gu, '-') || 'localhost'}`;
}

/** SSH-style fingerprint of a raw Ed25519 public key: `SHA256:<unpadded base64>`. */
export function keyFingerprint(publicKey: Uint8Array): string {
  return `SHA256:${createHash('sha256').update(publicKey).digest('base64').replace(/=+$/, '')}`;
}

/** What the CLI, the control plane and an export show about the signing key. */
export interface PublicKeyInfo {
  name: string;
  keyId: string;
  /** `<name>+<hex key id>+<base64(0x01 ‖ public key)>` */
  verifierKey: string;
  fingerprint: string;
  publicKey: string;
}

export class CheckpointSigner {
  readonly publicKey: Buffer;
  readonly keyId: number;

  private constructor(
    readonly name: string,
    private readonly privateKey: KeyObject,
  ) {
    this.publicKey = ed25519RawPublicKey(privateKey);
    this.keyId = ed25519KeyId(name, this.publicKey);
  }

  /**
   * Loads the data dir's key, creating it when missing: a 0600 PEM file with plain secrets, sealed
   * under the vault key with the desktop app's (an existing plain key is sealed, then removed: the
   * same key, no rotation).
   */
  static loadOrCreate(dataDir: string, name: string, secrets: SecretWrapper = plainSecrets): { signer: CheckpointSigner; created: boolean } {
    if (!isValidKeyName(name)) throw new Error(`checkpoint origin "${name}" cannot be a key name (no spaces or "+")`);
    const created = !existsSync(join(dataDir, SIGNING_KEY_FILE)) && !existsSync(join(dataDir, `${SIGNING_KEY_FILE}.sealed`));
    const pem = loadOrCreateSecretFile(dataDir, SIGNING_KEY_FILE, secrets, () => {
      const { privateKey } = generateKeyPairSync('ed25519');
      return Buffer.from(privateKey.export({ format: 'pem', type: 'pkcs8' }) as string);
    });
    const signer = new CheckpointSigner(name, loadKey(pem, join(dataDir, SIGNING_KEY_FILE)));
    if (secrets.kind === 'vault') writePublicKeyFile(dataDir, signer);
    return { signer, created };
  }

  /**
   * Loads the data dir's key without creating one; undefined when there is none. Throws
   * SealedSigningKeyError when only a sealed copy exists (see `loadVerifier` for its public half).
   */
  static load(dataDir: string, name: string): CheckpointSigner | undefined {
    const file = join(dataDir, SIGNING_KEY_FILE);
    if (!existsSync(file)) {
      if (existsSync(`${file}.sealed`)) throw new SealedSigningKeyError(dataDir);
      return undefined;
    }
    return new CheckpointSigner(name, loadKey(readFileSync(file), file));
  }

  /** The data dir's public key: from its key file, or from the public half kept beside a sealed one. */
  static loadVerifier(dataDir: string, name: string): NoteVerifier | undefined {
    const sealed = join(dataDir, `${SIGNING_KEY_FILE}.sealed`);
    if (existsSync(join(dataDir, SIGNING_KEY_FILE)) || !existsSync(sealed)) return CheckpointSigner.load(dataDir, name)?.verifier();
    const pub = join(dataDir, SIGNING_PUBLIC_KEY_FILE);
    if (!existsSync(pub)) return undefined;
    try {
      return parseVerifierKey(readFileSync(pub, 'utf8').trim());
    } catch (err) {
      throw new Error(`${pub}: not a verifier key (${(err as Error).message})`);
    }
  }

  /** Signs a checkpoint body as a C2SP signed note. */
  signCheckpoint(body: CheckpointBody): string {
    return signNote(formatCheckpointText(body), this.name, this.privateKey);
  }

  /** Signs arbitrary note text (ending in a newline), e.g. an export manifest digest. */
  signText(text: string): string {
    return signNote(text, this.name, this.privateKey);
  }

  verifier(): NoteVerifier {
    return { name: this.name, keyId: this.keyId, publicKey: this.publicKey, key: ed25519PublicKeyObject(this.publicKey) };
  }

  info(): PublicKeyInfo {
    return publicKeyInfo(this.verifier());
  }
}

export function publicKeyInfo(v: Pick<NoteVerifier, 'name' | 'keyId' | 'publicKey'>): PublicKeyInfo {
  return {
    name: v.name,
    keyId: keyIdHex(v.keyId),
    verifierKey: formatVerifierKey(v),
    fingerprint: keyFingerprint(v.publicKey),
    publicKey: v.publicKey.toString('base64'),
  };
}

/** Keeps the public half of a sealed key beside it (rewritten only when it changed). */
function writePublicKeyFile(dataDir: string, signer: CheckpointSigner): void {
  const file = join(dataDir, SIGNING_PUBLIC_KEY_FILE);
  const line = `${signer.info().verifierKey}\n`;
  if (existsSync(file) && readFileSync(file, 'utf8') === line) return;
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, line, { mode: 0o644 });
  renameSync(tmp, file);
}

function loadKey(pem: Buffer, file: string): KeyObject {
  try {
    return loadEd25519PrivateKey(pem);
  } catch (err) {
    throw new Error(`${file}: not a usable Ed25519 signing key (${(err as Error).message})`);
  }
}
