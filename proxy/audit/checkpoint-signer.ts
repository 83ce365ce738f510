/**
 * The gateway's checkpoint signing key: Ed25519, generated at first start and kept as PKCS#8 PEM in
 * `<dataDir>/checkpoint-signing.key` (mode 0600) — or, when the desktop app runs the gateway, sealed
 * under its OS-keychain vault key (`checkpoint-signing.key.sealed`, proxy/secret-wrapper.ts), so a
 * copy of the data dir cannot sign; the public half is then kept beside it in the clear
 * (`checkpoint-signing.pub`, a verifier key line) for offline verification. Its key name is the checkpoint origin, fixed when
 * the key is made (recorded in the store's meta table and announced in the chained log), so the key
 * id — and therefore every earlier checkpoint — stays verifiable if the config's origin changes.
 *
 * With `audit.signer` the key is held elsewhere (a PKCS#11 token, a cloud KMS) and every signature
 * is made by the configured program (external-signer.ts); the data dir then holds only the public
 * half (`checkpoint-signing.pub`). Signing is asynchronous either way: a key file signs at once, a
 * program is awaited without holding up the gateway's thread.
 */
import { createHash, generateKeyPairSync, type KeyObject, sign } from 'node:crypto';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { AuditSigner } from '../../shared/config';
import { parseDuration } from '../../shared/config';
import type { SignerStatus } from '../../shared/evidence';
import { loadOrCreateSecretFile, plainSecrets, type SecretWrapper } from '../secret-wrapper';
import { signerProgramName, signWithCommand } from './external-signer';
import {
  assembleNote,
  type CheckpointBody,
  checkNoteText,
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
} from './signed-note';

export const SIGNING_KEY_FILE = 'checkpoint-signing.key';
/** The public half of a sealed key or of one held elsewhere (audit.signer), in the clear: a verifier key line. */
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

/**
 * How the key signs: a key in this process (a file, or sealed by the desktop app), or the
 * audit.signer program. Handed as is to a worker thread that signs on this gateway's behalf (the
 * shared store's key rows, key-sync.ts): a private key never leaves the process, a program is run
 * from that thread.
 */
export type SigningKeySpec = { kind: 'file' | 'sealed'; key: KeyObject } | { kind: 'command'; command: string[]; timeoutMs: number; publicKey: Uint8Array };

/** Raw Ed25519 signatures as `spec` makes them (a program's are checked against its pinned key). */
export function rawSigner(spec: SigningKeySpec): (message: Buffer) => Promise<Buffer> {
  if (spec.kind !== 'command') return (message) => Promise.resolve(sign(null, message, spec.key));
  const publicKey = ed25519PublicKeyObject(spec.publicKey);
  return (message) => signWithCommand(spec, message, publicKey);
}

/** The raw public key of a spec. */
export function specPublicKey(spec: SigningKeySpec): Buffer {
  return spec.kind === 'command' ? Buffer.from(spec.publicKey) : ed25519RawPublicKey(spec.key);
}

/** The raw key `audit.signer.publicKey` pins, and the key name when it is a verifier key line. */
export function pinnedSignerKey(config: Pick<AuditSigner, 'publicKey'>): { name?: string; publicKey: Buffer } {
  const text = config.publicKey.trim();
  // base64 of 32 bytes is 43 characters and one '=' (and may itself hold '+'); anything else is a verifier key line.
  if (!/^[A-Za-z0-9+/]{43}=$/.test(text)) {
    try {
      const v = parseVerifierKey(text);
      return { name: v.name, publicKey: v.publicKey };
    } catch (err) {
      throw new Error(`audit.signer.publicKey: ${(err as Error).message}`);
    }
  }
  const raw = Buffer.from(text, 'base64');
  if (raw.length !== 32) throw new Error('audit.signer.publicKey: a base64 raw Ed25519 public key is 32 bytes');
  return { publicKey: raw };
}

export class CheckpointSigner {
  readonly publicKey: Buffer;
  readonly keyId: number;
  private readonly signRaw: (message: Buffer) => Promise<Buffer>;
  private failures = 0;
  private lastError: string | null = null;
  private failingSince: number | null = null;
  private lastSignedAt: number | null = null;

  private constructor(
    readonly name: string,
    private readonly spec: SigningKeySpec,
  ) {
    this.publicKey = specPublicKey(spec);
    this.keyId = ed25519KeyId(name, this.publicKey);
    this.signRaw = rawSigner(spec);
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
    const signer = new CheckpointSigner(name, { kind: secrets.kind === 'vault' ? 'sealed' : 'file', key: loadKey(pem, join(dataDir, SIGNING_KEY_FILE)) });
    if (secrets.kind === 'vault') writePublicKeyFile(dataDir, signer);
    return { signer, created };
  }

  /**
   * The key held outside the data dir (audit.signer): its program signs, its public key is pinned
   * in the config and kept in the data dir for offline verification. A key file or sealed key left
   * in the data dir stops the start: it would still sign for whoever copies the data dir.
   */
  static external(dataDir: string, name: string, config: AuditSigner): CheckpointSigner {
    if (!isValidKeyName(name)) throw new Error(`checkpoint origin "${name}" cannot be a key name (no spaces or "+")`);
    const pinned = pinnedSignerKey(config);
    if (pinned.name !== undefined && pinned.name !== name) throw new Error(`audit.signer.publicKey names the key "${pinned.name}", but this log's checkpoints are signed as "${name}": use that name, or give the base64 public key alone`);
    for (const f of [SIGNING_KEY_FILE, `${SIGNING_KEY_FILE}.sealed`]) {
      if (existsSync(join(dataDir, f))) {
        throw new Error(`${join(dataDir, f)} is a checkpoint signing key in the data dir, and audit.signer signs with a key held elsewhere: move that file out of the data dir (earlier checkpoints stay verifiable: the log announced its key), then start again`);
      }
    }
    const signer = new CheckpointSigner(name, { kind: 'command', command: [...config.command], timeoutMs: parseDuration(config.timeout), publicKey: pinned.publicKey });
    writePublicKeyFile(dataDir, signer);
    return signer;
  }

  /** The signer for commands run on a gateway's data dir: audit.signer when configured, else the key file (undefined if none). */
  static forDataDir(dataDir: string, name: string, config: { signer?: AuditSigner | undefined }): CheckpointSigner | undefined {
    return config.signer ? CheckpointSigner.external(dataDir, name, config.signer) : CheckpointSigner.load(dataDir, name);
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
    return new CheckpointSigner(name, { kind: 'file', key: loadKey(readFileSync(file), file) });
  }

  /**
   * The data dir's public key: from its key file, or from the public half kept beside a sealed key
   * or for a key held elsewhere (audit.signer).
   */
  static loadVerifier(dataDir: string, name: string): NoteVerifier | undefined {
    if (existsSync(join(dataDir, SIGNING_KEY_FILE))) return CheckpointSigner.load(dataDir, name)?.verifier();
    const pub = join(dataDir, SIGNING_PUBLIC_KEY_FILE);
    if (!existsSync(pub)) return undefined;
    try {
      return parseVerifierKey(readFileSync(pub, 'utf8').trim());
    } catch (err) {
      throw new Error(`${pub}: not a verifier key (${(err as Error).message})`);
    }
  }

  /**
   * How this key signs, for a worker thread of this process that signs on this gateway's behalf
   * (the shared store's key rows, key-sync.ts). A private key never leaves the process.
   */
  signingKeyForThread(): SigningKeySpec {
    return this.spec;
  }

  /** Signs a checkpoint body as a C2SP signed note. */
  signCheckpoint(body: CheckpointBody): Promise<string> {
    return this.signText(formatCheckpointText(body));
  }

  /**
   * Signs arbitrary note text (ending in a newline), e.g. an export manifest digest. With
   * audit.signer this waits for the program; a failure (SignerError) is counted in `status()`.
   */
  async signText(text: string): Promise<string> {
    checkNoteText(text, this.name);
    let signature: Buffer;
    try {
      signature = await this.signRaw(Buffer.from(text, 'utf8'));
    } catch (err) {
      this.failures++;
      this.lastError = (err as Error).message;
      this.failingSince ??= Date.now();
      throw err;
    }
    this.failures = 0;
    this.lastError = null;
    this.failingSince = null;
    this.lastSignedAt = Date.now();
    return assembleNote(text, this.name, this.keyId, signature);
  }

  /** Where the key lives and whether its last signature succeeded. */
  status(): SignerStatus {
    return {
      kind: this.spec.kind,
      program: this.spec.kind === 'command' ? signerProgramName(this.spec.command) : null,
      state: this.lastError ? 'failing' : this.lastSignedAt === null ? 'pending' : 'ok',
      failures: this.failures,
      lastError: this.lastError,
      failingSince: this.failingSince,
      lastSignedAt: this.lastSignedAt,
    };
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

/** Keeps the public half of a sealed or external key in the data dir (rewritten only when it changed). */
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
