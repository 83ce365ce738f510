/**
 * The gateway's checkpoint signing key: Ed25519, generated at first start and kept as PKCS#8 PEM in
 * `<dataDir>/checkpoint-signing.key` (mode 0600). Its key name is the checkpoint origin, fixed when
 * the key is made (recorded in the store's meta table and announced in the chained log), so the key
 * id — and therefore every earlier checkpoint — stays verifiable if the config's origin changes.
 */
import { createHash, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { loadOrCreateKeyFile } from '../key-files';
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
  signNote,
} from './signed-note';

export const SIGNING_KEY_FILE = 'checkpoint-signing.key';
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

  /** Loads the data dir's key, creating it (mode 0600) when missing. */
  static loadOrCreate(dataDir: string, name: string): { signer: CheckpointSigner; created: boolean } {
    if (!isValidKeyName(name)) throw new Error(`checkpoint origin "${name}" cannot be a key name (no spaces or "+")`);
    const created = !existsSync(join(dataDir, SIGNING_KEY_FILE));
    const pem = loadOrCreateKeyFile(dataDir, SIGNING_KEY_FILE, () => {
      const { privateKey } = generateKeyPairSync('ed25519');
      return Buffer.from(privateKey.export({ format: 'pem', type: 'pkcs8' }) as string);
    });
    return { signer: new CheckpointSigner(name, loadKey(pem, join(dataDir, SIGNING_KEY_FILE))), created };
  }

  /** Loads the data dir's key without creating one; undefined when there is none. */
  static load(dataDir: string, name: string): CheckpointSigner | undefined {
    const file = join(dataDir, SIGNING_KEY_FILE);
    if (!existsSync(file)) return undefined;
    return new CheckpointSigner(name, loadKey(readFileSync(file), file));
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

function loadKey(pem: Buffer, file: string): KeyObject {
  try {
    return loadEd25519PrivateKey(pem);
  } catch (err) {
    throw new Error(`${file}: not a usable Ed25519 signing key (${(err as Error).message})`);
  }
}
