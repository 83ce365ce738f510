/**
 * The checks that store and bundle verification share: the report and its problems, the signing
 * key the auditor expects, signed checkpoints against recomputed roots, the auditor's own earlier
 * checkpoint (--since-checkpoint), and witness cosignatures (--witness-key). Store verification
 * (store.ts) and bundle verification (bundle.ts) recompute the log their own way and hand the
 * roots they found to these checks; verify-runner.ts runs either off the caller's thread.
 *
 * Problems a verification reports, at the first seq where history stops being what was recorded:
 *
 *   modified   a payload or an event's fields no longer match their hashes
 *   deleted    events are missing from the middle of the log
 *   reordered  events are stored out of their chained order
 *   truncated  the log ends before a checkpoint's tree size
 *   signature-invalid / key-replaced   a checkpoint's signature fails, or comes from another key
 *   inconsistent  the log (or a bundle) no longer matches a checkpoint given with --since-checkpoint
 *   bundle-modified / unreadable / unwitnessed   a bundle's own files, unreadable input, no cosignature
 */
import { existsSync, readFileSync } from 'node:fs';
import type { BundleSegment } from '../bundle-format';
import { keyFingerprint, type PublicKeyInfo, SIGNING_KEY_FILE } from '../checkpoint-signer';
import { findCosignature, parseCosignerKey } from '../cosignature';
import { eventLeafHash, HASH_SIZE, rootOfLeafHashes } from '../merkle';
import { type CheckpointBody, keyIdHex, type NoteFormatError, type NoteVerifier, parseCheckpointText, parseNote, parseVerifierKey, verifyNote } from '../signed-note';

export type Problem =
  | 'modified'
  | 'deleted'
  | 'reordered'
  | 'truncated'
  | 'signature-invalid'
  | 'key-replaced'
  | 'inconsistent'
  | 'bundle-modified'
  | 'unreadable'
  | 'unwitnessed';

export interface VerifyFailure {
  /** First bad sequence number, when the problem sits at one. */
  seq?: number;
  problem: Problem;
  message: string;
}

export interface VerifyReport {
  ok: boolean;
  source: 'store' | 'bundle' | 'archive';
  path: string;
  /** Events checked. */
  events: number;
  /** Tree size and root the checked events commit to. */
  treeSize: number;
  rootHash: string;
  payloadsChecked: number;
  payloadsPurged: number;
  checkpointsChecked: number;
  latestCheckpoint?: { treeSize: number; time?: number };
  key?: PublicKeyInfo;
  /** Signing keys announced in the log after the first (rotations), with the seq announcing each. */
  keyRotations: { seq: number; fingerprint: string }[];
  /** Bundle only: an export filtered by time, user or connection (verified by inclusion proofs). */
  filtered?: boolean;
  /** Bundle only: the archive segment it is (a contiguous range continuing an earlier tree). */
  segment?: BundleSegment;
  /** Archive only: segments checked. */
  segments?: number;
  /** --since-checkpoint: the tree size of the anchor that was checked. */
  since?: { treeSize: number; source: string };
  /** --witness-key: per witness, the largest tree it cosigned that the log still matches. */
  witnessed?: { witness: string; treeSize: number; cosignedAt: number }[];
  failure?: VerifyFailure;
  durationMs: number;
  verifiedAt: number;
}

/** An earlier checkpoint to hold the log to (`--since-checkpoint`): a note, or the bundle it came in. */
export interface SinceAnchor {
  source: string;
  note: string;
  body: CheckpointBody;
  /** Event hashes 1..treeSize when the anchor came with a bundle: lets a rewrite be located exactly. */
  hashes?: Buffer;
}

export interface VerifyOptions {
  since?: SinceAnchor;
  /** Expected signing key: a verifier key (`name+id+key`) or a fingerprint (`SHA256:…`). */
  expectedKey?: string;
  /** Witness verifier keys (cosignature/v1) whose cosignatures the store must hold and match. */
  witnessKeys?: string[];
  onProgress?: (done: number, total: number) => void;
}

export class VerifyInputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'VerifyInputError';
  }
}

/** Progress is reported every this many events. */
export const PROGRESS_EVERY = 65_536;

/** True when `expected` (a verifier key or a `SHA256:` fingerprint) names this key. */
export function keyMatches(info: PublicKeyInfo, expected: string): boolean {
  const e = expected.trim();
  if (e.startsWith('SHA256:')) return e.replace(/=+$/, '') === info.fingerprint;
  try {
    const v = parseVerifierKey(e);
    return v.publicKey.toString('base64') === info.publicKey && v.name === info.name;
  } catch {
    return false;
  }
}

export function checkExpectedKeyFormat(expected: string | undefined): void {
  if (!expected || expected.startsWith('SHA256:')) return;
  try {
    parseVerifierKey(expected);
  } catch (err) {
    throw new VerifyInputError(`--key: ${(err as Error).message} (or give the fingerprint, SHA256:…)`);
  }
}

export const describeKey = (i: { fingerprint: string; keyId: string }) => `${i.fingerprint} (key id ${i.keyId})`;
export const signedAt = (t: number | undefined) => (t === undefined ? '' : ` signed ${new Date(t).toISOString()}`);
export const seqRange = (a: number, b: number) => (b > a ? `${a}–${b}` : `${a}`);

export function emptyReport(path: string, source: VerifyReport['source']): VerifyReport {
  return { ok: false, source, path, events: 0, treeSize: 0, rootHash: '', payloadsChecked: 0, payloadsPurged: 0, checkpointsChecked: 0, keyRotations: [], durationMs: 0, verifiedAt: Date.now() };
}
/** The `finish` both verifiers end with: records the verdict and the time taken. */
export function reportFinisher(report: VerifyReport, started: number): (failure?: VerifyFailure) => VerifyReport {
  return (failure) => {
    report.failure = failure;
    report.ok = !failure;
    report.durationMs = Math.round(performance.now() - started);
    return report;
  };
}

export type CosignatureRowData = { witness: string; key_id: string; tree_size: number; root_hash: string; checkpoint: string; signature: string; cosigned_at: number };

/** --witness-key values: each a witness key, or a file holding one (as `custody witness serve` prints it). */
export function parseWitnessKeys(keys: string[] | undefined): NoteVerifier[] {
  return (keys ?? []).map((k) => {
    let text = k;
    if (!k.includes('+') && existsSync(k)) {
      try {
        text = readFileSync(k, 'utf8').trim().replace(/^witness key:\s*/, '');
      } catch (err) {
        throw new VerifyInputError(`--witness-key ${k}: cannot read (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
      }
    }
    try {
      return parseCosignerKey(text);
    } catch (err) {
      throw new VerifyInputError(`--witness-key ${k}: ${(err as Error).message}`);
    }
  });
}

/**
 * Holds the log to what each required witness cosigned. The witness refuses to cosign two
 * different trees of one size, so a history rewritten and re-signed with the gateway's own key
 * cannot carry a matching cosignature: the stored one commits to the old root.
 */
/**
 * Holds what was verified to the witnesses' cosignatures (--witness-key): each witness must have
 * cosigned at least one checkpoint, and the log must still have, at each cosigned size, the root it
 * cosigned. `segment`: the rows are an archive segment's, which must cosign its own checkpoint.
 */
export function checkWitnessed(
  rows: CosignatureRowData[],
  witnesses: NoteVerifier[],
  lastSeq: number,
  rootAt: (size: number) => string | undefined,
  origin: string | undefined,
  report: VerifyReport,
  segment?: { treeSize: number },
): VerifyFailure | undefined {
  report.witnessed = [];
  for (const w of witnesses) {
    const mine = rows.filter((r) => r.witness === w.name && r.key_id === keyIdHex(w.keyId));
    const label = `witness ${w.name}`;
    if (segment && !mine.some((r) => r.tree_size === segment.treeSize)) {
      return {
        problem: 'unwitnessed',
        message: `the segment's checkpoint of ${segment.treeSize} events is not cosigned by ${label} (the segment was sealed before that witness was configured, or its cosignature was removed)`,
      };
    }
    if (!mine.length) return { problem: 'unwitnessed', message: `no checkpoint in this store is cosigned by ${label} (its cosignatures were removed, or it never received a checkpoint)` };
    let best: { treeSize: number; cosignedAt: number } | undefined;
    for (const r of mine) {
      let body: CheckpointBody;
      try {
        const c = findCosignature(r.checkpoint, r.signature, w);
        if (!c.ok) return { seq: r.tree_size || undefined, problem: 'signature-invalid', message: `the cosignature by ${label} on the checkpoint of ${r.tree_size} events does not verify (the stored checkpoint or signature was altered)` };
        body = parseCheckpointText(r.checkpoint);
      } catch (err) {
        return { seq: r.tree_size || undefined, problem: 'signature-invalid', message: `a stored cosignature by ${label} is unreadable: ${(err as Error).message}` };
      }
      if (origin && body.origin !== origin) return { problem: 'key-replaced', message: `${label} cosigned a checkpoint of log "${body.origin}", not of this log ("${origin}")` };
      const cosigned = `${label} cosigned ${body.treeSize} events with root ${body.rootHash.toString('hex').slice(0, 16)}…${signedAt(body.time)}`;
      if (body.treeSize > lastSeq) return { seq: lastSeq + 1, problem: 'truncated', message: `${cosigned}, but the log ends at seq ${lastSeq}` };
      const now = rootAt(body.treeSize);
      if (now !== body.rootHash.toString('hex')) {
        return {
          seq: body.treeSize,
          problem: 'inconsistent',
          message: `history up to seq ${body.treeSize} was rewritten after the witness saw it: ${cosigned}, but the log's root at that size is now ${now?.slice(0, 16)}… (re-signed locally; the witness never cosigned it)`,
        };
      }
      if (!best || body.treeSize >= best.treeSize) best = { treeSize: body.treeSize, cosignedAt: Number(r.cosigned_at) };
    }
    report.witnessed.push({ witness: w.name, ...best! });
  }
  return undefined;
}

/** Checks one signed checkpoint against the trusted keys and the recomputed roots. */
export function checkCheckpoint(
  note: string,
  trusted: NoteVerifier[],
  lastSeq: number,
  rootAt: (size: number) => string | undefined,
  row: { treeSize: number; rootHash: string } | undefined,
  lastGood: number,
): VerifyFailure | undefined {
  let body: CheckpointBody;
  let parsed: ReturnType<typeof parseNote>;
  try {
    parsed = parseNote(note);
    body = parseCheckpointText(parsed.text);
  } catch (err) {
    return { seq: row?.treeSize, problem: 'signature-invalid', message: `a stored checkpoint is unreadable: ${(err as NoteFormatError).message}` };
  }
  const label = `the checkpoint of ${body.treeSize} events${signedAt(body.time)}`;
  if (row && (row.treeSize !== body.treeSize || row.rootHash !== body.rootHash.toString('hex'))) {
    return { seq: row.treeSize, problem: 'signature-invalid', message: `a checkpoint row does not match its signed note` };
  }
  const sig = checkSignature(parsed, trusted, label);
  if (sig) return { seq: body.treeSize || undefined, ...sig };
  if (body.key !== undefined && !trusted.some((t) => keyFingerprint(t.publicKey) === body.key)) {
    return { seq: body.treeSize || undefined, problem: 'key-replaced', message: `${label} names signing key ${body.key}, which the log never announced` };
  }
  if (body.treeSize > lastSeq) {
    return { seq: lastSeq + 1, problem: 'truncated', message: `seq ${seqRange(lastSeq + 1, body.treeSize)} ${body.treeSize > lastSeq + 1 ? 'are' : 'is'} missing: ${label} covers ${body.treeSize} events but the log ends at seq ${lastSeq}` };
  }
  const root = rootAt(body.treeSize);
  if (root !== body.rootHash.toString('hex')) {
    return {
      seq: lastGood + 1,
      problem: 'inconsistent',
      message: `history between seq ${lastGood + 1} and ${body.treeSize} was rewritten: the log no longer matches ${label} (the chain was recomputed after it was signed)`,
    };
  }
  return undefined;
}

export function checkSignature(parsed: ReturnType<typeof parseNote>, trusted: NoteVerifier[], label: string): Omit<VerifyFailure, 'seq'> | undefined {
  if (!trusted.length) return { problem: 'key-replaced', message: `no signing key to check ${label} with (${SIGNING_KEY_FILE} is missing and the log announces none)` };
  for (const v of trusted) {
    const r = verifyNote(parsed, v);
    if (r.ok) return undefined;
    if (r.reason === 'bad-signature') return { problem: 'signature-invalid', message: `${label}: the Ed25519 signature does not verify (the note was altered)` };
  }
  const s = parsed.signatures[0]!;
  return { problem: 'key-replaced', message: `${label} is signed by key ${s.name} ${s.keyId.toString(16).padStart(8, '0')}, not by the log's key ${trusted.map((t) => t.keyId.toString(16).padStart(8, '0')).join(', ')}` };
}

export function checkSince(
  since: SinceAnchor,
  trusted: NoteVerifier[],
  lastSeq: number,
  rootAt: (size: number) => string | undefined,
  hashesUpTo: (size: number) => Buffer,
): VerifyFailure | undefined {
  let parsed: ReturnType<typeof parseNote>;
  try {
    parsed = parseNote(since.note);
  } catch (err) {
    return { problem: 'signature-invalid', message: `${since.source}: ${(err as Error).message}` };
  }
  const size = since.body.treeSize;
  const label = `the checkpoint in ${since.source} (${size} events${signedAt(since.body.time)})`;
  const sig = checkSignature(parsed, trusted, label);
  if (sig) return sig;
  if (size > lastSeq) {
    return { seq: lastSeq + 1, problem: 'truncated', message: `seq ${seqRange(lastSeq + 1, size)} ${size > lastSeq + 1 ? 'are' : 'is'} missing: ${label} covers ${size} events but the log ends at seq ${lastSeq}` };
  }
  if (rootAt(size) === since.body.rootHash.toString('hex')) return undefined;
  if (since.hashes && since.hashes.length >= size * HASH_SIZE && rootOfLeafHashes(leafHashesOf(since.hashes, size)).equals(since.body.rootHash)) {
    const now = hashesUpTo(size);
    for (let i = 0; i < size; i++) {
      if (Buffer.compare(now.subarray(i * HASH_SIZE, (i + 1) * HASH_SIZE), since.hashes.subarray(i * HASH_SIZE, (i + 1) * HASH_SIZE)) !== 0) {
        return { seq: i + 1, problem: 'inconsistent', message: `history was rewritten: this event differs from the one ${label} committed to` };
      }
    }
  }
  return { seq: size, problem: 'inconsistent', message: `history up to seq ${size} was rewritten: the log is not consistent with ${label}` };
}

function leafHashesOf(eventHashes: Buffer, size: number): Buffer {
  const out = Buffer.alloc(size * HASH_SIZE);
  for (let i = 0; i < size; i++) eventLeafHash(eventHashes.subarray(i * HASH_SIZE, (i + 1) * HASH_SIZE)).copy(out, i * HASH_SIZE);
  return out;
}

export function safeParse(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
