/**
 * Witness cosignatures (C2SP tlog-cosignature, Ed25519 `cosignature/v1`): a note signature over a
 * checkpoint by a witness that checked the checkpoint is consistent with everything it cosigned
 * before for that log.
 *
 *   key id     = SHA-256(<name> ‖ "\n" ‖ 0x04 ‖ 32-byte public key)[:4]
 *   signature  = base64(key id ‖ u64 big-endian POSIX seconds ‖ Ed25519 signature)
 *   signed msg = "cosignature/v1\ntime <seconds>\n" ‖ the checkpoint's note text
 *
 * A cosigner's verifier key is `<name>+<hex key id>+<base64(0x04 ‖ public key)>`. The type byte
 * differs from a log key's (0x01), so a witness key can never pass for the gateway's key.
 */
import { createHash, type KeyObject, sign, verify } from 'node:crypto';
import { ed25519PublicKeyObject, ed25519RawPublicKey, keyIdHex, NoteFormatError, type NoteSignature, type NoteVerifier, parseKeyFields, parseNote } from './signed-note';

const COSIGNATURE_V1 = 0x04;
const SIG_PREFIX = '\u2014 ';

export function cosignerKeyId(name: string, publicKey: Uint8Array): number {
  return createHash('sha256').update(name, 'utf8').update(Buffer.from([0x0a, COSIGNATURE_V1])).update(publicKey).digest().readUInt32BE(0);
}

export function formatCosignerKey(name: string, publicKey: Uint8Array): string {
  return `${name}+${keyIdHex(cosignerKeyId(name, publicKey))}+${Buffer.concat([Buffer.from([COSIGNATURE_V1]), publicKey]).toString('base64')}`;
}

/** Parses a witness verifier key (type 0x04); throws NoteFormatError naming what is wrong. */
export function parseCosignerKey(text: string): NoteVerifier {
  const { name, idHex, publicKey } = parseKeyFields(text, COSIGNATURE_V1, 'witness key');
  const keyId = cosignerKeyId(name, publicKey);
  if (keyIdHex(keyId) !== idHex) throw new NoteFormatError(`the key id ${idHex} does not match the witness key (expected ${keyIdHex(keyId)})`);
  return { name, keyId, publicKey, key: ed25519PublicKeyObject(publicKey) };
}

function signedMessage(noteText: string, seconds: number): Buffer {
  return Buffer.from(`cosignature/v1\ntime ${seconds}\n${noteText}`, 'utf8');
}

/** The cosignature line (with its newline) a witness named `name` adds to a checkpoint's note text. */
export function cosign(noteText: string, name: string, privateKey: KeyObject, seconds = Math.floor(Date.now() / 1000)): string {
  const id = Buffer.alloc(12);
  id.writeUInt32BE(cosignerKeyId(name, ed25519RawPublicKey(privateKey)), 0);
  id.writeBigUInt64BE(BigInt(seconds), 4);
  const sig = sign(null, signedMessage(noteText, seconds), privateKey);
  return `${SIG_PREFIX}${name} ${Buffer.concat([id, sig]).toString('base64')}\n`;
}

/**
 * `cosign` for a key that signs elsewhere (`signRaw`: raw Ed25519 signatures by the key whose public
 * half is `publicKey`, e.g. a gateway's checkpoint key through audit.signer).
 */
export async function cosignWith(noteText: string, name: string, publicKey: Uint8Array, signRaw: (message: Buffer) => Promise<Buffer>, seconds = Math.floor(Date.now() / 1000)): Promise<string> {
  const id = Buffer.alloc(12);
  id.writeUInt32BE(cosignerKeyId(name, publicKey), 0);
  id.writeBigUInt64BE(BigInt(seconds), 4);
  const sig = await signRaw(signedMessage(noteText, seconds));
  return `${SIG_PREFIX}${name} ${Buffer.concat([id, sig]).toString('base64')}\n`;
}

export type CosignatureCheck = { ok: true; time: number; line: string } | { ok: false; reason: 'absent' | 'bad-signature' };

/**
 * Looks for `witness`'s cosignature among the signature lines of a note (or lines added to its
 * text). Lines from other keys are ignored, as the protocol requires; one from this key that does
 * not verify rejects the whole answer.
 */
export function findCosignature(noteText: string, signatureLines: string, witness: NoteVerifier): CosignatureCheck {
  const parsed = parseNote(`${noteText}\n${signatureLines}`);
  const mine = parsed.signatures.filter((s) => s.name === witness.name && s.keyId === witness.keyId);
  if (!mine.length) return { ok: false, reason: 'absent' };
  let found: { time: number; sig: NoteSignature } | undefined;
  for (const s of mine) {
    if (s.signature.length !== 72) return { ok: false, reason: 'bad-signature' };
    const seconds = s.signature.readBigUInt64BE(0);
    if (seconds > BigInt(Number.MAX_SAFE_INTEGER)) return { ok: false, reason: 'bad-signature' };
    if (!verify(null, signedMessage(parsed.text, Number(seconds)), witness.key, s.signature.subarray(8))) return { ok: false, reason: 'bad-signature' };
    found = { time: Number(seconds) * 1000, sig: s };
  }
  const idBytes = Buffer.alloc(4);
  idBytes.writeUInt32BE(found!.sig.keyId);
  return { ok: true, time: found!.time, line: `${SIG_PREFIX}${found!.sig.name} ${Buffer.concat([idBytes, found!.sig.signature]).toString('base64')}\n` };
}
