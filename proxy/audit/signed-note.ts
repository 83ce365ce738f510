/**
 * C2SP signed notes (https://c2sp.org/signed-note) with Ed25519 signatures, and the transparency-log
 * checkpoint body they carry (https://c2sp.org/tlog-checkpoint).
 *
 *   <origin>\n<tree size>\n<base64 root hash>\n[extension lines\n]
 *   \n
 *   — <key name> <base64(4-byte key id ‖ 64-byte Ed25519 signature)>\n
 *
 * key id = SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ 32-byte public key)[:4]; the verifier key is written
 * `<name>+<hex key id>+<base64(0x01 ‖ public key)>`, as Go's golang.org/x/mod/sumdb/note does.
 */
import { createHash, createPrivateKey, createPublicKey, type KeyObject, sign, verify } from 'node:crypto';

const ED25519 = 0x01;
const SIG_PREFIX = '\u2014 ';

export class NoteFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NoteFormatError';
  }
}

/** A key name per signed-note: non-empty, no Unicode spaces, no '+'. */
export function isValidKeyName(name: string): boolean {
  return name.length > 0 && !/[\s+]/u.test(name);
}

/** First 4 bytes of SHA-256(name ‖ "\n" ‖ 0x01 ‖ publicKey), as a big-endian uint32. */
export function ed25519KeyId(name: string, publicKey: Uint8Array): number {
  const h = createHash('sha256').update(name, 'utf8').update(Buffer.from([0x0a, ED25519])).update(publicKey).digest();
  return h.readUInt32BE(0);
}

export function keyIdHex(id: number): string {
  return id.toString(16).padStart(8, '0');
}

/** A public key that verifies notes. */
export interface NoteVerifier {
  name: string;
  keyId: number;
  publicKey: Buffer;
  key: KeyObject;
}

/** `<name>+<hex key id>+<base64(0x01 ‖ public key)>` */
export function formatVerifierKey(v: Pick<NoteVerifier, 'name' | 'keyId' | 'publicKey'>): string {
  return `${v.name}+${keyIdHex(v.keyId)}+${Buffer.concat([Buffer.from([ED25519]), v.publicKey]).toString('base64')}`;
}

/**
 * Splits `<name>+<hex key id>+<base64(type ‖ key)>` and checks the name, the id's form, the type
 * byte and the key length. The key's base64 may itself contain '+': only the first two separate
 * fields (as in Go's note.NewVerifier).
 */
export function parseKeyFields(text: string, type: number, what: string): { name: string; idHex: string; publicKey: Buffer } {
  const t = text.trim();
  const a = t.indexOf('+');
  const b = a < 0 ? -1 : t.indexOf('+', a + 1);
  if (a < 0 || b < 0) throw new NoteFormatError(`a ${what} looks like <name>+<8 hex digits>+<base64 key>`);
  const [name, idHex, keyB64] = [t.slice(0, a), t.slice(a + 1, b), t.slice(b + 1)];
  if (!isValidKeyName(name)) throw new NoteFormatError(`invalid key name "${name}"`);
  if (!/^[0-9a-f]{8}$/.test(idHex)) throw new NoteFormatError(`the key id in a ${what} is 8 lower-case hex digits`);
  const raw = Buffer.from(keyB64, 'base64');
  if (raw.length !== 33 || raw[0] !== type) throw new NoteFormatError(type === ED25519 ? 'only Ed25519 verifier keys (type 0x01, 32 bytes) are supported' : `a ${what} is an Ed25519 cosignature/v1 key (type 0x04, 32 bytes)`);
  return { name, idHex, publicKey: Buffer.from(raw.subarray(1)) };
}

/** Parses a verifier key string; throws NoteFormatError naming what is wrong. */
export function parseVerifierKey(text: string): NoteVerifier {
  const { name, idHex, publicKey } = parseKeyFields(text, ED25519, 'verifier key');
  const keyId = ed25519KeyId(name, publicKey);
  if (keyIdHex(keyId) !== idHex) throw new NoteFormatError(`the key id ${idHex} does not match the key (expected ${keyIdHex(keyId)})`);
  return { name, keyId, publicKey, key: ed25519PublicKeyObject(publicKey) };
}

export function ed25519PublicKeyObject(raw: Uint8Array): KeyObject {
  return createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(raw).toString('base64url') }, format: 'jwk' });
}

/** Raw 32-byte public key of an Ed25519 private or public KeyObject. */
export function ed25519RawPublicKey(key: KeyObject): Buffer {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  const jwk = pub.export({ format: 'jwk' }) as { x?: string; crv?: string };
  if (jwk.crv !== 'Ed25519' || !jwk.x) throw new Error('not an Ed25519 key');
  return Buffer.from(jwk.x, 'base64url');
}

/** Signs note text (which must end in a newline) and returns the whole signed note. */
export function signNote(text: string, name: string, privateKey: KeyObject): string {
  checkNoteText(text, name);
  return assembleNote(text, name, ed25519KeyId(name, ed25519RawPublicKey(privateKey)), sign(null, Buffer.from(text, 'utf8'), privateKey));
}

/** Throws NoteFormatError unless `text` can be signed as a note under key name `name`. */
export function checkNoteText(text: string, name: string): void {
  if (!text.endsWith('\n')) throw new NoteFormatError('note text must end with a newline');
  if (!isValidKeyName(name)) throw new NoteFormatError(`invalid key name "${name}"`);
  if ([...text].some((c) => c < ' ' && c !== '\n')) throw new NoteFormatError('note text must not contain control characters other than newline');
}

/** The signed note: `text`, a blank line and the signature line for a signature made elsewhere. */
export function assembleNote(text: string, name: string, keyId: number, signature: Buffer): string {
  const idBytes = Buffer.alloc(4);
  idBytes.writeUInt32BE(keyId);
  return `${text}\n${SIG_PREFIX}${name} ${Buffer.concat([idBytes, signature]).toString('base64')}\n`;
}

export interface NoteSignature {
  name: string;
  keyId: number;
  signature: Buffer;
}

export interface ParsedNote {
  text: string;
  signatures: NoteSignature[];
}

/** Splits a signed note into its text and signature lines (at the last blank line). */
export function parseNote(note: string): ParsedNote {
  if (note.length > 1_000_000) throw new NoteFormatError('note is too large');
  const split = note.lastIndexOf('\n\n');
  if (split < 0) throw new NoteFormatError('a signed note has its text, a blank line, then signature lines');
  const text = note.slice(0, split + 1);
  const sigText = note.slice(split + 2);
  if (!sigText.endsWith('\n')) throw new NoteFormatError('signature lines must end with a newline');
  const signatures: NoteSignature[] = [];
  for (const line of sigText.slice(0, -1).split('\n')) {
    if (!line.startsWith(SIG_PREFIX)) throw new NoteFormatError(`malformed signature line "${line.slice(0, 40)}"`);
    const rest = line.slice(SIG_PREFIX.length);
    const sp = rest.lastIndexOf(' ');
    if (sp <= 0) throw new NoteFormatError('a signature line is "— <key name> <base64 signature>"');
    const name = rest.slice(0, sp);
    const raw = Buffer.from(rest.slice(sp + 1), 'base64');
    if (!isValidKeyName(name) || raw.length < 5 || raw.toString('base64') !== rest.slice(sp + 1)) throw new NoteFormatError(`malformed signature line for "${name}"`);
    signatures.push({ name, keyId: raw.readUInt32BE(0), signature: raw.subarray(4) });
  }
  if (!signatures.length) throw new NoteFormatError('the note has no signatures');
  if (signatures.length > 100) throw new NoteFormatError('the note has too many signatures');
  return { text, signatures };
}

export type NoteCheck =
  | { ok: true; text: string }
  | { ok: false; reason: 'unknown-key'; text: string; signers: NoteSignature[] }
  | { ok: false; reason: 'bad-signature'; text: string };

/**
 * Verifies a note against one known key. Per signed-note, signatures from other keys are ignored;
 * a signature from the known key that fails rejects the note.
 */
export function verifyNote(note: string | ParsedNote, verifier: NoteVerifier): NoteCheck {
  const parsed = typeof note === 'string' ? parseNote(note) : note;
  const mine = parsed.signatures.filter((s) => s.name === verifier.name && s.keyId === verifier.keyId);
  if (!mine.length) return { ok: false, reason: 'unknown-key', text: parsed.text, signers: parsed.signatures };
  for (const s of mine) {
    if (s.signature.length !== 64 || !verify(null, Buffer.from(parsed.text, 'utf8'), verifier.key, s.signature)) return { ok: false, reason: 'bad-signature', text: parsed.text };
  }
  return { ok: true, text: parsed.text };
}

/** A tree head as a checkpoint body carries it. */
export interface CheckpointBody {
  origin: string;
  treeSize: number;
  rootHash: Buffer;
  /** Signing time (ms since epoch), carried in a `time <RFC 3339>` extension line so idle hours are provable. */
  time?: number;
  /**
   * Fingerprint (`SHA256:…`) of the key that signs it, in a `key <fingerprint>` extension line: a
   * witness that pinned the log's key, or an auditor holding a cosigned checkpoint, sees a replaced
   * key by name, not only as a signature that fails.
   */
  key?: string;
}

const KEY_LINE = /^key (SHA256:[A-Za-z0-9+/]{43})$/;

export function formatCheckpointText(c: CheckpointBody): string {
  if (!c.origin || /\n/.test(c.origin)) throw new NoteFormatError('a checkpoint origin is one non-empty line');
  if (!Number.isSafeInteger(c.treeSize) || c.treeSize < 0) throw new NoteFormatError('tree size must be a non-negative integer');
  if (c.rootHash.length !== 32) throw new NoteFormatError('root hash must be 32 bytes');
  if (c.key !== undefined && !KEY_LINE.test(`key ${c.key}`)) throw new NoteFormatError('a key fingerprint is SHA256: and 43 base64 characters');
  return `${c.origin}\n${c.treeSize}\n${c.rootHash.toString('base64')}\n${c.time !== undefined ? `time ${new Date(c.time).toISOString()}\n` : ''}${c.key !== undefined ? `key ${c.key}\n` : ''}`;
}

export function parseCheckpointText(text: string): CheckpointBody {
  const lines = text.split('\n');
  if (lines.length < 4 || lines[lines.length - 1] !== '') throw new NoteFormatError('a checkpoint has an origin, a tree size and a root hash, one per line');
  const [origin, size, root] = lines as [string, string, string];
  if (!origin) throw new NoteFormatError('the checkpoint origin is empty');
  if (!/^(0|[1-9][0-9]*)$/.test(size) || !Number.isSafeInteger(Number(size))) throw new NoteFormatError(`invalid tree size "${size}"`);
  const rootHash = Buffer.from(root, 'base64');
  if (rootHash.length !== 32 || rootHash.toString('base64') !== root) throw new NoteFormatError('the root hash line is not 32 bytes of base64');
  const body: CheckpointBody = { origin, treeSize: Number(size), rootHash };
  for (const ext of lines.slice(3, -1)) {
    if (!ext) throw new NoteFormatError('checkpoint extension lines must not be empty');
    const k = KEY_LINE.exec(ext);
    if (k) body.key = k[1];
    const m = /^time (\S+)$/.exec(ext);
    if (m) {
      const t = Date.parse(m[1]!);
      if (!Number.isFinite(t)) throw new NoteFormatError(`invalid time extension "${ext}"`);
      body.time = t;
    }
  }
  return body;
}

/** Loads a PKCS#8 PEM Ed25519 private key. */
export function loadEd25519PrivateKey(pem: string | Buffer): KeyObject {
  const key = createPrivateKey(pem);
  if (key.asymmetricKeyType !== 'ed25519') throw new Error(`the signing key is ${key.asymmetricKeyType ?? 'not an asymmetric key'}, not Ed25519`);
  return key;
}
