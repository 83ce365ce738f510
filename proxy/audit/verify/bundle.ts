/**
 * Verification of an exported evidence bundle on its own, with no data dir: the bundle's signed
 * checkpoint, every event's payload hash, hash and place in the chain, its inclusion proof against
 * that checkpoint, the earlier checkpoints it carries, and the signed manifest over every file.
 * The format is bundle-format.ts; the shared checks are checks.ts.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { publicKeyInfo } from '../checkpoint-signer';
import { BUNDLE_EXTRA_FILE, BUNDLE_FILES, GROUP_BUNDLE_FILES, GROUP_WITNESS_FILES, type BundleConsistency, type BundleEvent, type BundleManifest, type BundleProof, type BundleSegment, manifestDigestOf, REQUIRED_BUNDLE_FILES } from '../bundle-format';
import { emptyRoot, eventLeafHash, HASH_SIZE, MerkleTree, rootFromBase64InclusionProof, verifyConsistency } from '../merkle';
import { type CheckpointBody, type NoteVerifier, parseCheckpointText, parseNote, parseVerifierKey } from '../signed-note';
import { canonicalEventBody, canonicalPayload, chainHashOfText, GENESIS_HASH, sha256hex } from '../store';
import { readTar } from '../tar';
import { checkCheckpoint, checkExpectedKeyFormat, checkSignature, checkSince, checkWitnessed, type CosignatureRowData, describeKey, emptyReport, keyMatches, parseWitnessKeys, PROGRESS_EVERY, seqRange, reportFinisher, safeParse, type SinceAnchor, type VerifyFailure, VerifyInputError, type VerifyOptions, type VerifyReport, signedAt } from './checks';

/** Reads a --since-checkpoint argument: a signed checkpoint note, or an exported bundle (file or directory). */
export function loadSinceAnchor(path: string): SinceAnchor {
  if (!existsSync(path)) throw new VerifyInputError(`${path}: no such file`);
  let note: string;
  let hashes: Buffer | undefined;
  if (statSync(path).isDirectory() || !looksLikeNote(path)) {
    const files = readBundleFiles(path);
    const cp = files.get('checkpoint.txt');
    if (!cp) throw new VerifyInputError(`${path}: neither a checkpoint note nor an evidence bundle with checkpoint.txt`);
    note = cp.toString('utf8');
    hashes = files.get('hashes.bin');
  } else note = readFileSync(path, 'utf8');
  try {
    const parsed = parseNote(note);
    return { source: path, note, body: parseCheckpointText(parsed.text), hashes };
  } catch (err) {
    throw new VerifyInputError(`${path}: not a signed checkpoint (${(err as Error).message})`);
  }
}

function looksLikeNote(path: string): boolean {
  const head = readFileSync(path).subarray(0, 2);
  return !(head[0] === 0x1f && head[1] === 0x8b) && statSync(path).size < 100_000 && readFileSync(path, 'utf8').includes('\n\n\u2014 ');
}

/** Files of an evidence bundle: a .tar.gz / .tar archive or a directory it was extracted into. */
export function readBundleFiles(path: string): Map<string, Buffer> {
  if (statSync(path).isDirectory()) {
    const files = new Map<string, Buffer>();
    for (const name of [...BUNDLE_FILES, ...GROUP_BUNDLE_FILES, ...GROUP_WITNESS_FILES]) if (existsSync(join(path, name))) files.set(name, readFileSync(join(path, name)));
    // Files named per bundle (ssh-<session>.cast terminals) are found through the manifest.
    const manifest = safeParse(files.get('manifest.json')?.toString('utf8') ?? '') as { files?: Record<string, unknown> } | undefined;
    for (const name of Object.keys(manifest?.files ?? {})) {
      if (!files.has(name) && BUNDLE_EXTRA_FILE.test(name) && existsSync(join(path, name))) files.set(name, readFileSync(join(path, name)));
    }
    return files;
  }
  try {
    return readTar(readFileSync(path));
  } catch (err) {
    throw new VerifyInputError(`${path}: not a readable evidence bundle (${(err as Error).message})`);
  }
}

export interface BundleVerifyOptions extends VerifyOptions {
  /** Each event once it has passed every check, in seq order (the archive verifier chains segments with it). */
  onEvent?: (e: BundleEvent) => void;
}

export function verifyBundle(path: string, opts: BundleVerifyOptions = {}): VerifyReport {
  checkExpectedKeyFormat(opts.expectedKey);
  return verifyBundleFiles(readBundleFiles(path), path, opts);
}

/** Verifies a bundle's files (from a file, a directory or an archive segment); `path` names it in the report. */
export function verifyBundleFiles(files: Map<string, Buffer>, path: string, opts: BundleVerifyOptions = {}): VerifyReport {
  const witnesses = parseWitnessKeys(opts.witnessKeys);
  const started = performance.now();
  checkExpectedKeyFormat(opts.expectedKey);
  const report = emptyReport(path, 'bundle');
  const finish = reportFinisher(report, started);
  const missing = REQUIRED_BUNDLE_FILES.filter((f) => !files.has(f));
  if (missing.length) return finish({ problem: 'bundle-modified', message: `the bundle lacks ${missing.join(', ')}` });

  // The key: from the bundle, pinned by --key when the auditor has it from elsewhere.
  let verifier: NoteVerifier;
  try {
    verifier = parseVerifierKey(files.get('public-key.txt')!.toString('utf8').split('\n')[0]!);
  } catch (err) {
    return finish({ problem: 'bundle-modified', message: `public-key.txt: ${(err as Error).message}` });
  }
  const info = publicKeyInfo(verifier);
  report.key = info;
  if (opts.expectedKey && !keyMatches(info, opts.expectedKey)) {
    return finish({ problem: 'key-replaced', message: `the bundle is signed with key ${describeKey(info)}, not the expected ${opts.expectedKey}` });
  }

  // The fresh checkpoint the bundle was cut against.
  const cpNote = files.get('checkpoint.txt')!.toString('utf8');
  let cp: CheckpointBody;
  try {
    const parsed = parseNote(cpNote);
    cp = parseCheckpointText(parsed.text);
    const sig = checkSignature(parsed, [verifier], `the bundle's checkpoint (${cp.treeSize} events${signedAt(cp.time)})`);
    if (sig) return finish(sig);
  } catch (err) {
    return finish({ problem: 'signature-invalid', message: `checkpoint.txt: ${(err as Error).message}` });
  }
  report.treeSize = cp.treeSize;
  report.rootHash = cp.rootHash.toString('hex');
  report.latestCheckpoint = { treeSize: cp.treeSize, time: cp.time };

  let manifest: BundleManifest;
  try {
    manifest = JSON.parse(files.get('manifest.json')!.toString('utf8')) as BundleManifest;
  } catch {
    return finish({ problem: 'bundle-modified', message: 'manifest.json is not valid JSON' });
  }
  const filter = manifest.filter ?? {};
  report.filtered = Object.values(filter).some((v) => v !== undefined && v !== null);
  // An archive segment: a contiguous range that continues a tree of `start` events.
  const segment = manifest.segment;
  if (segment !== undefined) {
    const f = checkSegmentShape(segment, cp, report.filtered, files);
    if (f) return finish(f);
    report.segment = { index: segment.index, firstSeq: segment.firstSeq, lastSeq: segment.lastSeq, previous: segment.previous };
  }
  const start = segment ? segment.firstSeq - 1 : 0;

  // All event hashes up to the checkpoint, when present, must hash to its root.
  const hashes = files.get('hashes.bin');
  const tree = hashes && hashes.length === cp.treeSize * HASH_SIZE ? MerkleTree.fromEventHashes(hashes) : undefined;
  if (hashes && !tree?.root().equals(cp.rootHash)) {
    return finish({ problem: 'bundle-modified', message: `hashes.bin does not hash to the signed checkpoint's root` });
  }
  const rootAt = (size: number) => (tree ? tree.root(Math.min(size, tree.size)).toString('hex') : size === cp.treeSize ? cp.rootHash.toString('hex') : undefined);
  const hashAt = (seq: number) => hashes?.toString('hex', (seq - 1) * HASH_SIZE, seq * HASH_SIZE);

  // Inclusion proofs, one per exported event. The exporter writes them in event order, so they are
  // read alongside the events; any out of order are looked up among the rest.
  const proofLines = lines(files.get('proofs.jsonl')!);
  const pendingProofs = new Map<number, BundleProof>();
  let malformedProof = false;
  const nextProof = (): BundleProof | undefined => {
    const r = proofLines.next();
    if (r.done) return undefined;
    const p = safeParse(r.value) as BundleProof | undefined;
    if (!p || typeof p.seq !== 'number' || !Array.isArray(p.path) || p.treeSize !== cp.treeSize) {
      malformedProof = true;
      return undefined;
    }
    return p;
  };
  const proofFor = (seq: number): BundleProof | undefined => {
    const held = pendingProofs.get(seq);
    if (held) {
      pendingProofs.delete(seq);
      return held;
    }
    for (let p = nextProof(); p; p = nextProof()) {
      if (p.seq === seq) return p;
      pendingProofs.set(p.seq, p);
    }
    return undefined;
  };

  // Each exported event: payload hash, its own hash, its place in the chain and in the tree.
  const total = manifest.events ?? 0;
  const listed = new Set<number>();
  for (const line of lines(files.get('events.jsonl')!)) {
    const m = /^\{"seq":(\d+),/.exec(line);
    if (m) listed.add(Number(m[1]));
  }
  let prevSeq = start;
  let prevHash = segment ? segment.previous.lastHash : GENESIS_HASH;
  const seen = new Set<number>();
  for (const line of lines(files.get('events.jsonl')!)) {
    const e = safeParse(line) as BundleEvent | undefined;
    if (!e || typeof e.seq !== 'number' || typeof e.hash !== 'string') return finish({ seq: prevSeq + 1, problem: 'modified', message: 'events.jsonl has a line that is not an exported event' });
    const seq = e.seq;
    if (seq <= prevSeq) return finish({ seq, problem: 'reordered', message: `events.jsonl lists seq ${seq} after seq ${prevSeq}` });
    if (!report.filtered && seq !== prevSeq + 1 && listed.has(prevSeq + 1)) return finish({ seq: prevSeq + 1, problem: 'reordered', message: `events.jsonl lists seq ${seq} before seq ${prevSeq + 1}` });
    if (!report.filtered && seq !== prevSeq + 1) return finish({ seq: prevSeq + 1, problem: 'deleted', message: `seq ${seqRange(prevSeq + 1, seq - 1)} ${seq - 1 > prevSeq + 1 ? 'are' : 'is'} missing from events.jsonl` });
    if (seq > cp.treeSize) return finish({ seq, problem: 'modified', message: `it lies beyond the bundle's checkpoint of ${cp.treeSize} events` });
    if (seq <= start) return finish({ seq, problem: 'bundle-modified', message: `it lies before the segment, which starts at seq ${start + 1}` });
    if (e.purged) report.payloadsPurged++;
    else {
      let ph: string;
      try {
        ph = sha256hex(`{"payload":${canonicalPayload(e.payload)},"spans":${canonicalPayload(e.spans ?? [])}}`);
      } catch {
        ph = '';
      }
      if (ph !== e.payloadHash) return finish({ seq, problem: 'modified', message: 'its payload does not match the payload hash recorded for it' });
      report.payloadsChecked++;
    }
    const body = canonicalEventBody({ seq, time: e.time, kind: e.kind as never, session: e.session, actor: e.actor, connection: e.connection, payloadHash: e.payloadHash });
    if (chainHashOfText(e.prevHash, body) !== e.hash) return finish({ seq, problem: 'modified', message: 'its fields do not match its hash' });
    // The hash before it: from hashes.bin, or the event listed just before it in a contiguous bundle.
    const expectedPrev = seq === 1 ? GENESIS_HASH : (hashAt(seq - 1) ?? (prevSeq === seq - 1 && !report.filtered ? prevHash : undefined));
    if (expectedPrev !== undefined && e.prevHash !== expectedPrev) return finish({ seq, problem: 'modified', message: `it does not chain to seq ${seq - 1} of the log` });
    if (hashes && hashAt(seq) !== e.hash) return finish({ seq, problem: 'modified', message: 'its hash differs from the one the signed checkpoint commits to' });
    const proof = proofFor(seq);
    if (malformedProof) return finish({ problem: 'bundle-modified', message: 'proofs.jsonl has a malformed proof' });
    if (!proof) return finish({ seq, problem: 'bundle-modified', message: 'proofs.jsonl has no inclusion proof for it' });
    if (!rootFromBase64InclusionProof(seq - 1, cp.treeSize, eventLeafHash(Buffer.from(e.hash, 'hex')), proof.path)?.equals(cp.rootHash)) {
      return finish({ seq, problem: 'modified', message: `its inclusion proof does not lead to the signed checkpoint's root` });
    }
    seen.add(seq);
    prevSeq = seq;
    prevHash = e.hash;
    report.events++;
    opts.onEvent?.(e);
    if (opts.onProgress && report.events % PROGRESS_EVERY === 0) opts.onProgress(report.events, total);
  }
  for (let p = nextProof(); p; p = nextProof()) pendingProofs.set(p.seq, p);
  if (malformedProof) return finish({ problem: 'bundle-modified', message: 'proofs.jsonl has a malformed proof' });
  const orphan = [...pendingProofs.keys()].filter((seq) => !seen.has(seq)).sort((a, b) => a - b)[0];
  if (orphan !== undefined) return finish({ seq: orphan, problem: report.filtered ? 'deleted' : 'truncated', message: 'the bundle has an inclusion proof for this event but the event is missing from events.jsonl' });
  if (!report.filtered && report.events !== cp.treeSize - start) {
    return finish({ seq: start + report.events + 1, problem: 'truncated', message: `events.jsonl ends at seq ${start + report.events} but the bundle's checkpoint covers ${cp.treeSize} events` });
  }
  if (report.events !== total) return finish({ problem: 'bundle-modified', message: `manifest.json lists ${total} events, events.jsonl holds ${report.events}` });

  // Earlier checkpoints carried in the bundle must be prefixes of this one.
  const stored = files.get('checkpoints.jsonl');
  if (stored) {
    for (const line of lines(stored)) {
      const c = safeParse(line) as { note?: string } | undefined;
      if (!c?.note) return finish({ problem: 'bundle-modified', message: 'checkpoints.jsonl has a malformed entry' });
      const f = checkCheckpoint(c.note, [verifier], cp.treeSize, rootAt, undefined, 0);
      if (f && !(f.problem === 'inconsistent' && !hashes)) return finish(f);
      report.checkpointsChecked++;
    }
  }

  // The auditor's earlier checkpoint.
  if (opts.since) {
    const f = checkSince(opts.since, [verifier], cp.treeSize, rootAt, () => hashes ?? Buffer.alloc(0));
    report.since = { treeSize: opts.since.body.treeSize, source: opts.since.source };
    if (f) return finish(f);
  }

  // Finally the manifest: signed, and every other file as listed.
  try {
    const parsed = parseNote(files.get('manifest.note')!.toString('utf8'));
    const sig = checkSignature(parsed, [verifier], 'manifest.note');
    if (sig) return finish(sig);
    if (manifestDigestOf(parsed.text) !== sha256hex(files.get('manifest.json')!)) return finish({ problem: 'bundle-modified', message: 'manifest.json does not match its signed digest in manifest.note' });
  } catch (err) {
    return finish({ problem: 'signature-invalid', message: `manifest.note: ${(err as Error).message}` });
  }
  for (const [name, f] of Object.entries(manifest.files ?? {})) {
    const data = files.get(name);
    if (!data) return finish({ problem: 'bundle-modified', message: `${name} is listed in the manifest but missing` });
    if (sha256hex(data) !== f.sha256) return finish({ problem: 'bundle-modified', message: `${name} was changed after export (its SHA-256 differs from the manifest)` });
  }
  // Witness cosignatures carried in the bundle (each self-authenticating by the witness's key).
  if (witnesses.length) {
    const rows: CosignatureRowData[] = [];
    for (const line of lines(files.get('cosignatures.jsonl') ?? Buffer.alloc(0))) {
      const c = safeParse(line) as Partial<CosignatureRowData> | undefined;
      if (!c || typeof c.witness !== 'string' || typeof c.key_id !== 'string' || typeof c.tree_size !== 'number' || typeof c.checkpoint !== 'string' || typeof c.signature !== 'string') {
        return finish({ problem: 'bundle-modified', message: 'cosignatures.jsonl has a malformed entry' });
      }
      rows.push(c as CosignatureRowData);
    }
    const f = checkWitnessed(rows, witnesses, cp.treeSize, rootAt, verifier.name, report, segment ? { treeSize: cp.treeSize } : undefined);
    if (f) return finish(f);
  }
  return finish();
}

/** Lines of a JSONL file, decoded one at a time (a large bundle's file can exceed V8's string limit). */
function* lines(buf: Buffer): Generator<string> {
  let start = 0;
  while (start < buf.length) {
    let end = buf.indexOf(0x0a, start);
    if (end < 0) end = buf.length;
    if (end > start) yield buf.toString('utf8', start, end);
    start = end + 1;
  }
}

/**
 * A segment's manifest against its checkpoint: the range ends where the checkpoint does, follows
 * the tree it names as previous, and that tree is proven a prefix of the checkpoint's
 * (consistency.jsonl), so each segment on its own proves it continues the one before.
 */
function checkSegmentShape(segment: BundleSegment, cp: CheckpointBody, filtered: boolean | undefined, files: Map<string, Buffer>): VerifyFailure | undefined {
  const bad = (message: string): VerifyFailure => ({ problem: 'bundle-modified', message });
  const p = segment.previous as Partial<BundleSegment['previous']> | undefined;
  const hex = (v: unknown) => typeof v === 'string' && /^[0-9a-f]{64}$/.test(v);
  if (!Number.isSafeInteger(segment.index) || !Number.isSafeInteger(segment.firstSeq) || !Number.isSafeInteger(segment.lastSeq) || !p || !Number.isSafeInteger(p.treeSize) || !hex(p.rootHash) || !hex(p.lastHash)) {
    return bad('manifest.json has a malformed segment');
  }
  if (filtered) return bad('manifest.json describes a segment and a filter at once');
  if (segment.firstSeq < 1 || segment.lastSeq < segment.firstSeq) return bad(`manifest.json describes an empty segment (seq ${segment.firstSeq} to ${segment.lastSeq})`);
  if (cp.treeSize !== segment.lastSeq) return bad(`the segment ends at seq ${segment.lastSeq} but its checkpoint covers ${cp.treeSize} events`);
  if (p.treeSize !== segment.firstSeq - 1) return bad(`the segment starts at seq ${segment.firstSeq} but continues a tree of ${p.treeSize} events`);
  if (p.treeSize === 0) {
    if (p.lastHash !== GENESIS_HASH || p.rootHash !== emptyRoot().toString('hex')) return bad('the first segment does not start from the empty log');
    return undefined;
  }
  const proofs = [...lines(files.get('consistency.jsonl') ?? Buffer.alloc(0))].map((l) => safeParse(l) as Partial<BundleConsistency> | undefined);
  const c = proofs.find((x) => x?.from === p.treeSize && x?.to === cp.treeSize);
  if (!c || !Array.isArray(c.path) || c.fromRoot !== p.rootHash || c.toRoot !== cp.rootHash.toString('hex')) {
    return bad(`consistency.jsonl has no proof that the tree of ${p.treeSize} events this segment continues is a prefix of its checkpoint`);
  }
  const ok = verifyConsistency(p.treeSize, cp.treeSize, Buffer.from(p.rootHash!, 'hex'), cp.rootHash, c.path.map((h) => Buffer.from(String(h), 'base64')));
  if (!ok) return { seq: segment.firstSeq, problem: 'inconsistent', message: `the segment's checkpoint is not consistent with the tree of ${p.treeSize} events it claims to continue` };
  return undefined;
}
