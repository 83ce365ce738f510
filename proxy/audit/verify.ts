/**
 * Offline verification of the audit log: a data dir (its SQLite file, its checkpoints and its
 * signing key) or an exported evidence bundle. Recomputes every payload hash, the hash chain and
 * the RFC 6962 tree, checks every checkpoint's Ed25519 signature, and stops at the first problem
 * with the sequence number where history stops being what was recorded:
 *
 *   modified   a payload or an event's fields no longer match their hashes
 *   deleted    events are missing from the middle of the log
 *   reordered  events are stored out of their chained order
 *   truncated  the log ends before a checkpoint's tree size
 *   signature-invalid / key-replaced   a checkpoint's signature fails, or comes from another key
 *   inconsistent  the log (or a bundle) no longer matches a checkpoint given with --since-checkpoint
 *
 * The store path reads raw rows and hashes the stored canonical text directly (no JSON parsing
 * except the few key and retention events it needs), so a million events verify in seconds.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { inflateRawSync } from 'node:zlib';
import Database from 'better-sqlite3';
import { CheckpointSigner, KEY_NAME_META, keyFingerprint, publicKeyInfo, type PublicKeyInfo, SIGNING_KEY_FILE } from './checkpoint-signer';
import { findCosignature, parseCosignerKey } from './cosignature';
import { eventLeafHash, HASH_SIZE, MerkleAccumulator, MerkleTree, rootFromBase64InclusionProof, rootOfLeafHashes } from './merkle';
import { type CheckpointBody, keyIdHex, NoteFormatError, type NoteVerifier, parseCheckpointText, parseNote, parseVerifierKey, verifyNote } from './signed-note';
import { canonicalEventBody, canonicalPayload, chainHashOfText, GENESIS_HASH, sha256hex } from './store';
import { readTar } from './tar';

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
  source: 'store' | 'bundle';
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

const PROGRESS_EVERY = 65_536;

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
    for (const name of BUNDLE_FILES) if (existsSync(join(path, name))) files.set(name, readFileSync(join(path, name)));
    return files;
  }
  try {
    return readTar(readFileSync(path));
  } catch (err) {
    throw new VerifyInputError(`${path}: not a readable evidence bundle (${(err as Error).message})`);
  }
}

export const BUNDLE_FILES = [
  'manifest.json',
  'manifest.note',
  'checkpoint.txt',
  'public-key.txt',
  'events.jsonl',
  'ocsf.jsonl',
  'proofs.jsonl',
  'hashes.bin',
  'checkpoints.jsonl',
  'consistency.jsonl',
  'cosignatures.jsonl',
  'holds.json',
  'policy-versions.json',
  'report.html',
];

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

function checkExpectedKeyFormat(expected: string | undefined): void {
  if (!expected || expected.startsWith('SHA256:')) return;
  try {
    parseVerifierKey(expected);
  } catch (err) {
    throw new VerifyInputError(`--key: ${(err as Error).message} (or give the fingerprint, SHA256:…)`);
  }
}

const describeKey = (i: { fingerprint: string; keyId: string }) => `${i.fingerprint} (key id ${i.keyId})`;
const when = (t: number | undefined) => (t === undefined ? '' : ` signed ${new Date(t).toISOString()}`);
const range = (a: number, b: number) => (b > a ? `${a}–${b}` : `${a}`);

// ---------------------------------------------------------------------------------------------
// Data dir

type RawRow = [number, number, string, string | null, string | null, string | null, Buffer | string | null, string, string | null, string, string, string];

interface RowFault {
  kind: 'gap' | 'payload' | 'inflate' | 'link' | 'hash';
  row: RawRow;
  expectSeq: number;
  running: string;
}

function bodyText(r: RawRow, seq = r[0]): string {
  return canonicalEventBody({ seq, time: r[1], kind: r[2] as never, session: r[3], actor: r[4], connection: r[5], payloadHash: r[9] });
}

interface Announcement {
  seq: number;
  verifier: NoteVerifier;
  info: PublicKeyInfo;
}

/** What one pass over a contiguous range of rows found. Plain data, so a worker thread can return it. */
export interface RangeScan {
  count: number;
  firstSeq: number;
  lastSeq: number;
  /** Stored prev_hash of the first row, stored hash of the last (both checked within the range). */
  firstPrev: string;
  lastHash: string;
  /**
   * The rows' Merkle tree as a compact range (perfect subtrees, largest first) over the rows before
   * any fault; the range starts at a multiple of 2^height of its largest subtree, so it can be
   * appended whole to the tree of the rows before it.
   */
  subtrees: { hash: Uint8Array; height: number }[];
  /** The same, at each wanted tree size (seq) inside the range: what checkpoints are checked against. */
  snapshots: { size: number; subtrees: { hash: Uint8Array; height: number }[] }[];
  fault?: RowFault;
  checked: number;
  purged: number;
  maxPurgedTime: number;
  retentionCutoff: number;
  announcements: { seq: number; verifierKey: string }[];
}

const RANGE_SQL = 'SELECT seq, time, kind, session, actor, connection, payload, encoding, spans, payload_hash, prev_hash, hash FROM events WHERE seq >= ? AND seq <= ? ORDER BY seq';

/**
 * Checks every row with from ≤ seq ≤ to: consecutive seqs, payload against payload hash (the stored
 * canonical text is hashed as is; deflated payloads are inflated first), prev_hash against the
 * previous row's hash, and each hash against SHA-256(prev_hash ‖ canonical body). The first row's
 * own predecessor is the caller's to check (ranges are stitched together by `verifyStore`). Also
 * builds the range's Merkle compact range, with a snapshot at each `wanted` tree size.
 */
export function scanRange(db: Database.Database, from: number, to: number, wanted: ReadonlySet<number> = new Set(), onProgress?: (done: number) => void): RangeScan {
  const acc = new MerkleAccumulator();
  const scan: RangeScan = { count: 0, firstSeq: 0, lastSeq: 0, firstPrev: '', lastHash: '', subtrees: [], snapshots: [], checked: 0, purged: 0, maxPurgedTime: -Infinity, retentionCutoff: -Infinity, announcements: [] };
  let running = '';
  let expect = 0;
  const rows = db.prepare(RANGE_SQL).raw().iterate(from, to) as IterableIterator<RawRow>;
  for (const r of rows) {
    const seq = r[0];
    if (scan.count === 0) {
      scan.firstSeq = seq;
      scan.firstPrev = r[10];
      running = r[10];
      expect = seq;
    }
    if (seq !== expect) {
      scan.fault = { kind: 'gap', row: r, expectSeq: expect, running };
      break;
    }
    const encoding = r[7];
    if (encoding === 'purged') {
      scan.purged++;
      if (r[1] > scan.maxPurgedTime) scan.maxPurgedTime = r[1];
    } else {
      let text: string;
      const payload = r[6];
      if (encoding === 'deflate') {
        try {
          text = inflateRawSync(payload as Buffer).toString('utf8');
        } catch {
          scan.fault = { kind: 'inflate', row: r, expectSeq: expect, running };
          break;
        }
      } else text = typeof payload === 'string' ? payload : payload === null ? 'null' : Buffer.from(payload).toString('utf8');
      if (sha256hex(`{"payload":${text},"spans":${r[8] ?? '[]'}}`) !== r[9]) {
        scan.fault = { kind: 'payload', row: r, expectSeq: expect, running };
        break;
      }
      scan.checked++;
      if (r[2] === 'key.created' || r[2] === 'retention.run') {
        const p = safeParse(text) as Record<string, unknown> | undefined;
        if (r[2] === 'retention.run' && typeof p?.['cutoff'] === 'number') scan.retentionCutoff = Math.max(scan.retentionCutoff, p['cutoff']);
        if (r[2] === 'key.created' && p?.['purpose'] === 'checkpoint-signing' && typeof p['verifierKey'] === 'string') scan.announcements.push({ seq, verifierKey: p['verifierKey'] });
      }
    }
    if (r[10] !== running) {
      scan.fault = { kind: 'link', row: r, expectSeq: expect, running };
      break;
    }
    if (chainHashOfText(running, bodyText(r)) !== r[11]) {
      scan.fault = { kind: 'hash', row: r, expectSeq: expect, running };
      break;
    }
    running = r[11];
    acc.pushEventHashHex(running);
    if (wanted.has(seq)) scan.snapshots.push({ size: seq, subtrees: acc.subtrees() });
    scan.count++;
    scan.lastSeq = seq;
    scan.lastHash = running;
    expect++;
    if (onProgress && scan.count % PROGRESS_EVERY === 0) onProgress(scan.count);
  }
  scan.subtrees = acc.subtrees();
  return scan;
}

/** The whole log's pass, stitched from ranges in seq order. */
interface StorePass {
  events: number;
  lastSeq: number;
  acc: MerkleAccumulator;
  roots: Map<number, string>;
  fault?: RowFault;
  checked: number;
  purged: number;
  maxPurgedTime: number;
  retentionCutoff: number;
  announcements: Announcement[];
}

function stitch(db: Database.Database, scans: RangeScan[], wanted: Set<number>): StorePass {
  const pass: StorePass = { events: 0, lastSeq: 0, acc: new MerkleAccumulator(), roots: new Map(), checked: 0, purged: 0, maxPurgedTime: -Infinity, retentionCutoff: -Infinity, announcements: [] };
  if (wanted.has(0)) pass.roots.set(0, pass.acc.root().toString('hex'));
  let running = GENESIS_HASH;
  let expect = 1;
  const rowAt = (seq: number) => db.prepare(RANGE_SQL).raw().get(seq, seq) as RawRow;
  for (const scan of scans) {
    if (scan.count === 0 && !scan.fault) continue;
    const first = scan.count ? scan.firstSeq : scan.fault!.row[0];
    if (first !== expect) {
      pass.fault = { kind: 'gap', row: rowAt(first), expectSeq: expect, running };
      break;
    }
    // The range's first row was not linked to its predecessor inside the range; do it here, in the
    // same order of checks as a single pass (a payload fault on that row is reported before its link).
    const firstPrev = scan.count ? scan.firstPrev : scan.fault!.row[10];
    const payloadFaultFirst = scan.count === 0 && (scan.fault?.kind === 'payload' || scan.fault?.kind === 'inflate');
    if (firstPrev !== running && !payloadFaultFirst) {
      pass.fault = { kind: 'link', row: rowAt(first), expectSeq: expect, running };
      break;
    }
    pass.checked += scan.checked;
    pass.purged += scan.purged;
    pass.maxPurgedTime = Math.max(pass.maxPurgedTime, scan.maxPurgedTime);
    pass.retentionCutoff = Math.max(pass.retentionCutoff, scan.retentionCutoff);
    for (const a of scan.announcements) {
      try {
        const verifier = parseVerifierKey(a.verifierKey);
        pass.announcements.push({ seq: a.seq, verifier, info: publicKeyInfo(verifier) });
      } catch {
        // an unparsable announcement is treated as absent; the chain still covers it
      }
    }
    for (const snap of scan.snapshots) {
      if (!wanted.has(snap.size)) continue;
      const at = pass.acc.clone();
      for (const t of snap.subtrees) at.pushSubtree(t.hash, t.height);
      pass.roots.set(snap.size, at.root().toString('hex'));
    }
    for (const t of scan.subtrees) pass.acc.pushSubtree(t.hash, t.height);
    pass.events += scan.count;
    if (scan.count) {
      running = scan.lastHash;
      expect = scan.lastSeq + 1;
      pass.lastSeq = scan.lastSeq;
    }
    if (scan.fault) {
      pass.fault = { ...scan.fault, running: scan.count ? scan.fault.running : running };
      break;
    }
  }
  return pass;
}

function openStore(dataDir: string): Database.Database {
  const file = join(dataDir, 'custody.db');
  if (!existsSync(file)) throw new VerifyInputError(`${dataDir}: no audit store here (custody.db is missing)`);
  try {
    return new Database(file, { readonly: true, fileMustExist: true });
  } catch (err) {
    throw new VerifyInputError(`${file}: cannot open (${(err as Error).message})`);
  }
}

function emptyReport(path: string, source: 'store' | 'bundle'): VerifyReport {
  return { ok: false, source, path, events: 0, treeSize: 0, rootHash: '', payloadsChecked: 0, payloadsPurged: 0, checkpointsChecked: 0, keyRotations: [], durationMs: 0, verifiedAt: Date.now() };
}

type CheckpointRowData = { tree_size: number; root_hash: string; time: number; note: string };

function storeCheckpoints(db: Database.Database): CheckpointRowData[] {
  return db.prepare('SELECT tree_size, root_hash, time, note FROM checkpoints ORDER BY tree_size, time').all() as CheckpointRowData[];
}

function wantedSizes(db: Database.Database, checkpoints: CheckpointRowData[], opts: VerifyOptions): Set<number> {
  const wanted = new Set(checkpoints.map((c) => c.tree_size));
  if (opts.since) wanted.add(opts.since.body.treeSize);
  if (opts.witnessKeys?.length) for (const c of storeCosignatures(db)) wanted.add(c.tree_size);
  return wanted;
}

type CosignatureRowData = { witness: string; key_id: string; tree_size: number; root_hash: string; checkpoint: string; signature: string; cosigned_at: number };

function storeCosignatures(db: Database.Database): CosignatureRowData[] {
  const has = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'checkpoint_cosignatures'").get();
  return has ? (db.prepare('SELECT * FROM checkpoint_cosignatures ORDER BY tree_size').all() as CosignatureRowData[]) : [];
}

function parseWitnessKeys(keys: string[] | undefined): NoteVerifier[] {
  return (keys ?? []).map((k) => {
    try {
      return parseCosignerKey(k);
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
function checkWitnessed(rows: CosignatureRowData[], witnesses: NoteVerifier[], lastSeq: number, rootAt: (size: number) => string | undefined, origin: string | undefined, report: VerifyReport): VerifyFailure | undefined {
  report.witnessed = [];
  for (const w of witnesses) {
    const mine = rows.filter((r) => r.witness === w.name && r.key_id === keyIdHex(w.keyId));
    const label = `witness ${w.name}`;
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
      const cosigned = `${label} cosigned ${body.treeSize} events with root ${body.rootHash.toString('hex').slice(0, 16)}…${when(body.time)}`;
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

/** Verifies `<dataDir>/custody.db` with its checkpoints and signing key, in this thread. */
export function verifyStore(dataDir: string, opts: VerifyOptions = {}): VerifyReport {
  const started = performance.now();
  checkExpectedKeyFormat(opts.expectedKey);
  parseWitnessKeys(opts.witnessKeys);
  const db = openStore(dataDir);
  try {
    const checkpoints = storeCheckpoints(db);
    const total = (db.prepare('SELECT count(*) AS n FROM events').get() as { n: number }).n;
    const wanted = wantedSizes(db, checkpoints, opts);
    const scan = scanRange(db, 1, Number.MAX_SAFE_INTEGER, wanted, opts.onProgress && ((done) => opts.onProgress!(done, total)));
    opts.onProgress?.(scan.count, total);
    return concludeStore(db, dataDir, stitch(db, [scan], wanted), checkpoints, opts, started);
  } finally {
    db.close();
  }
}

/** Scans seq ranges of a store file elsewhere (worker threads: verify-runner.ts); undefined when it cannot. */
export type RangeScanner = (file: string, ranges: [number, number][], wanted: number[], onProgress?: (done: number) => void) => Promise<RangeScan[] | undefined>;

/**
 * Verifies a store with the row pass split into seq ranges, each checked by `scanRanges` (worker
 * threads, each opening the file read-only); the ranges are stitched and the tree built here.
 * Falls back to `verifyStore` for small stores or where the ranges cannot be scanned elsewhere.
 */
export async function verifyStoreInRanges(
  dataDir: string,
  scanRanges: RangeScanner,
  opts: VerifyOptions & { workers?: number; minEvents?: number; inThread?: boolean } = {},
): Promise<VerifyReport> {
  const started = performance.now();
  checkExpectedKeyFormat(opts.expectedKey);
  parseWitnessKeys(opts.witnessKeys);
  const db = openStore(dataDir);
  try {
    const { n: total, max } = db.prepare('SELECT count(*) AS n, coalesce(max(seq), 0) AS max FROM events').get() as { n: number; max: number };
    const workers = Math.max(1, Math.min(opts.workers ?? availableParallelism(), 8));
    if (workers < 2 || total < (opts.minEvents ?? 100_000)) return verifyStore(dataDir, opts);
    // Ranges of 2^k seqs starting at multiples of 2^k: each range's subtrees are nodes of the
    // whole tree, so stitching needs O(log n) hashes, not one per event. Events appended after
    // `max` was read are left to the next verification.
    let block = 1;
    while (block < Math.ceil(max / workers)) block *= 2;
    const ranges: [number, number][] = [];
    for (let start = 1; start <= max; start += block) ranges.push([start, Math.min(start + block - 1, max)]);
    const checkpoints = storeCheckpoints(db);
    const wanted = wantedSizes(db, checkpoints, opts);
    // inThread: the same ranges scanned one after another here (deterministic, for tests of the stitching).
    const scans = opts.inThread
      ? ranges.map(([from, to]) => scanRange(db, from, to, wanted))
      : await scanRanges(join(dataDir, 'custody.db'), ranges, [...wanted], opts.onProgress && ((done) => opts.onProgress!(done, total)));
    if (!scans) return verifyStore(dataDir, opts);
    opts.onProgress?.(scans.reduce((s, x) => s + x.count, 0), total);
    return concludeStore(db, dataDir, stitch(db, scans, wanted), checkpoints, opts, started);
  } finally {
    db.close();
  }
}

/** Everything after the row pass: keys, the auditor's anchor, stored checkpoints, retention. */
function concludeStore(db: Database.Database, dataDir: string, pass: StorePass, checkpoints: CheckpointRowData[], opts: VerifyOptions, started: number): VerifyReport {
  const report = emptyReport(dataDir, 'store');
  const finish = (failure?: VerifyFailure): VerifyReport => {
    report.failure = failure;
    report.ok = !failure;
    report.durationMs = Math.round(performance.now() - started);
    return report;
  };
  const { roots, announcements, purged, retentionCutoff, maxPurgedTime } = pass;
  report.events = pass.events;
  report.treeSize = pass.acc.size;
  report.rootHash = pass.acc.root().toString('hex');
  report.payloadsChecked = pass.checked;
  report.payloadsPurged = purged;
  if (pass.fault) return finish(classifyRowFault(db, pass.fault));
  const lastSeq = pass.lastSeq;

  // Keys: the log announces its signing key; the key file and --key must agree with it.
  const keyName = (db.prepare('SELECT value FROM meta WHERE key = ?').get(KEY_NAME_META) as { value: string } | undefined)?.value ?? announcements.at(-1)?.info.name ?? firstSignerName(checkpoints);
  let fileSigner: CheckpointSigner | undefined;
  try {
    fileSigner = keyName ? CheckpointSigner.load(dataDir, keyName) : undefined;
  } catch (err) {
    return finish({ problem: 'key-replaced', seq: announcements.at(-1)?.seq, message: `${SIGNING_KEY_FILE} is unreadable: ${(err as Error).message}` });
  }
  const fileInfo = fileSigner?.info();
  report.key = announcements.at(-1)?.info ?? fileInfo;
  report.keyRotations = announcements.slice(1).map((a) => ({ seq: a.seq, fingerprint: a.info.fingerprint }));
  const latestAnnounced = announcements.at(-1);
  if (opts.expectedKey) {
    if (latestAnnounced && !keyMatches(latestAnnounced.info, opts.expectedKey)) {
      return finish({ seq: latestAnnounced.seq, problem: 'key-replaced', message: `the log announces signing key ${describeKey(latestAnnounced.info)}, not the expected ${opts.expectedKey}` });
    }
    if (fileInfo && !keyMatches(fileInfo, opts.expectedKey)) {
      return finish({ problem: 'key-replaced', message: `${SIGNING_KEY_FILE} holds key ${describeKey(fileInfo)}, not the expected ${opts.expectedKey}` });
    }
  }
  if (latestAnnounced && fileInfo && fileInfo.publicKey !== latestAnnounced.info.publicKey) {
    return finish({
      seq: latestAnnounced.seq,
      problem: 'key-replaced',
      message: `${SIGNING_KEY_FILE} holds key ${describeKey(fileInfo)}, but seq ${latestAnnounced.seq} announced ${describeKey(latestAnnounced.info)}`,
    });
  }
  const trusted: NoteVerifier[] = announcements.length ? announcements.map((a) => a.verifier) : fileSigner ? [fileSigner.verifier()] : [];

  // The anchor the auditor brought comes first: it can locate a rewrite exactly.
  if (opts.since) {
    const f = checkSince(opts.since, trusted, lastSeq, (size) => roots.get(size), (upTo) => storeHashes(db, upTo));
    report.since = { treeSize: opts.since.body.treeSize, source: opts.since.source };
    if (f) return finish(f);
  }

  // Every stored checkpoint: signature, then the tree it commits to.
  let lastGood = 0;
  for (const c of checkpoints) {
    const f = checkCheckpoint(c.note, trusted, lastSeq, (size) => roots.get(size), { treeSize: c.tree_size, rootHash: c.root_hash }, lastGood);
    if (f) return finish(f);
    lastGood = c.tree_size;
    report.checkpointsChecked++;
  }
  const latest = checkpoints.reduce<(typeof checkpoints)[number] | undefined>((a, c) => (!a || c.time > a.time ? c : a), undefined);
  if (latest) report.latestCheckpoint = { treeSize: latest.tree_size, time: latest.time };

  if (opts.witnessKeys?.length) {
    const f = checkWitnessed(storeCosignatures(db), parseWitnessKeys(opts.witnessKeys), lastSeq, (size) => roots.get(size), keyName, report);
    if (f) return finish(f);
  }

  // Purged payloads must be explained by a recorded retention run.
  if (purged && maxPurgedTime >= retentionCutoff) {
    const bad = db.prepare("SELECT min(seq) AS seq FROM events WHERE encoding = 'purged' AND time >= ?").get(retentionCutoff === -Infinity ? -8.64e15 : retentionCutoff) as { seq: number };
    return finish({ seq: bad.seq, problem: 'modified', message: `its payload was removed, but no recorded retention run covers it` });
  }
  return finish();
}

function safeParse(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function firstSignerName(checkpoints: { note: string }[]): string | undefined {
  for (const c of checkpoints) {
    try {
      return parseNote(c.note).signatures[0]?.name;
    } catch {
      // keep looking
    }
  }
  return undefined;
}

function storeHashes(db: Database.Database, upTo: number): Buffer {
  const out = Buffer.alloc(upTo * HASH_SIZE);
  let i = 0;
  for (const [hash] of db.prepare('SELECT hash FROM events WHERE seq <= ? ORDER BY seq').raw().iterate(upTo) as IterableIterator<[string]>) {
    out.write(hash, i * HASH_SIZE, HASH_SIZE, 'hex');
    i++;
  }
  return out.subarray(0, i * HASH_SIZE);
}

/** Names what went wrong at the first bad row, looking around it in the file. */
function classifyRowFault(db: Database.Database, f: RowFault): VerifyFailure {
  const r = f.row;
  const seq = r[0];
  switch (f.kind) {
    case 'gap':
      return { seq: f.expectSeq, problem: 'deleted', message: `seq ${range(f.expectSeq, seq - 1)} ${seq - 1 > f.expectSeq ? 'are' : 'is'} missing: the log jumps from seq ${f.expectSeq - 1} to seq ${seq}` };
    case 'inflate':
      return { seq, problem: 'modified', message: 'its stored payload is corrupt (it cannot be decompressed)' };
    case 'payload':
      return { seq, problem: 'modified', message: 'its payload does not match the payload hash recorded for it' };
    case 'hash':
      return { seq, problem: 'modified', message: 'its fields (time, kind, session, actor, connection or payload hash) do not match its hash' };
    case 'link': {
      const moved = db.prepare('SELECT seq FROM events WHERE prev_hash = ? AND seq > ? ORDER BY seq LIMIT 1').get(f.running, seq) as { seq: number } | undefined;
      if (moved) return { seq, problem: 'reordered', message: `events are out of order: the event recorded after seq ${seq - 1} is stored at seq ${moved.seq}` };
      if (chainHashOfText(r[10], bodyText(r)) === r[11]) {
        // This row is intact and was written after a different version of its predecessor.
        return { seq: seq - 1, problem: 'modified', message: `seq ${seq} was chained to a different version of it (its hash was rewritten)` };
      }
      for (let k = 1; k <= 10_000; k++) {
        if (chainHashOfText(r[10], bodyText(r, seq + k)) === r[11]) {
          return { seq, problem: 'deleted', message: `seq ${range(seq, seq + k - 1)} ${k > 1 ? 'were' : 'was'} deleted and the later events renumbered to hide the gap` };
        }
      }
      return { seq, problem: 'modified', message: `it does not chain to seq ${seq - 1} (its previous-hash differs)` };
    }
  }
}

/** Checks one signed checkpoint against the trusted keys and the recomputed roots. */
function checkCheckpoint(
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
  const label = `the checkpoint of ${body.treeSize} events${when(body.time)}`;
  if (row && (row.treeSize !== body.treeSize || row.rootHash !== body.rootHash.toString('hex'))) {
    return { seq: row.treeSize, problem: 'signature-invalid', message: `a checkpoint row does not match its signed note` };
  }
  const sig = checkSignature(parsed, trusted, label);
  if (sig) return { seq: body.treeSize || undefined, ...sig };
  if (body.key !== undefined && !trusted.some((t) => keyFingerprint(t.publicKey) === body.key)) {
    return { seq: body.treeSize || undefined, problem: 'key-replaced', message: `${label} names signing key ${body.key}, which the log never announced` };
  }
  if (body.treeSize > lastSeq) {
    return { seq: lastSeq + 1, problem: 'truncated', message: `seq ${range(lastSeq + 1, body.treeSize)} ${body.treeSize > lastSeq + 1 ? 'are' : 'is'} missing: ${label} covers ${body.treeSize} events but the log ends at seq ${lastSeq}` };
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

function checkSignature(parsed: ReturnType<typeof parseNote>, trusted: NoteVerifier[], label: string): Omit<VerifyFailure, 'seq'> | undefined {
  if (!trusted.length) return { problem: 'key-replaced', message: `no signing key to check ${label} with (${SIGNING_KEY_FILE} is missing and the log announces none)` };
  for (const v of trusted) {
    const r = verifyNote(parsed, v);
    if (r.ok) return undefined;
    if (r.reason === 'bad-signature') return { problem: 'signature-invalid', message: `${label}: the Ed25519 signature does not verify (the note was altered)` };
  }
  const s = parsed.signatures[0]!;
  return { problem: 'key-replaced', message: `${label} is signed by key ${s.name} ${s.keyId.toString(16).padStart(8, '0')}, not by the log's key ${trusted.map((t) => t.keyId.toString(16).padStart(8, '0')).join(', ')}` };
}

function checkSince(
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
  const label = `the checkpoint in ${since.source} (${size} events${when(since.body.time)})`;
  const sig = checkSignature(parsed, trusted, label);
  if (sig) return sig;
  if (size > lastSeq) {
    return { seq: lastSeq + 1, problem: 'truncated', message: `seq ${range(lastSeq + 1, size)} ${size > lastSeq + 1 ? 'are' : 'is'} missing: ${label} covers ${size} events but the log ends at seq ${lastSeq}` };
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

// ---------------------------------------------------------------------------------------------
// Bundle

interface BundleEvent {
  seq: number;
  time: number;
  kind: string;
  session: string | null;
  actor: string | null;
  connection: string | null;
  payload: unknown;
  spans: unknown[];
  purged?: boolean;
  payloadHash: string;
  prevHash: string;
  hash: string;
}

export interface BundleManifest {
  format: string;
  createdAt: string;
  origin: string;
  filter: { from?: number; to?: number; user?: string; connection?: string };
  checkpoint: { treeSize: number; rootHash: string; time: number };
  events: number;
  purged: number;
  files: Record<string, { sha256: string; bytes: number }>;
}

export const BUNDLE_FORMAT = 'custody-evidence-bundle/1';
export const MANIFEST_NOTE_HEADER = 'custody-evidence-manifest';

/** Verifies an exported bundle on its own (no data dir needed). */
export function verifyBundle(path: string, opts: VerifyOptions = {}): VerifyReport {
  const witnesses = parseWitnessKeys(opts.witnessKeys);
  const started = performance.now();
  checkExpectedKeyFormat(opts.expectedKey);
  const files = readBundleFiles(path);
  const report: VerifyReport = {
    ok: false,
    source: 'bundle',
    path,
    events: 0,
    treeSize: 0,
    rootHash: '',
    payloadsChecked: 0,
    payloadsPurged: 0,
    checkpointsChecked: 0,
    keyRotations: [],
    durationMs: 0,
    verifiedAt: Date.now(),
  };
  const finish = (failure?: VerifyFailure): VerifyReport => {
    report.failure = failure;
    report.ok = !failure;
    report.durationMs = Math.round(performance.now() - started);
    return report;
  };
  const missing = ['manifest.json', 'manifest.note', 'checkpoint.txt', 'public-key.txt', 'events.jsonl', 'proofs.jsonl'].filter((f) => !files.has(f));
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
    const sig = checkSignature(parsed, [verifier], `the bundle's checkpoint (${cp.treeSize} events${when(cp.time)})`);
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
  type Proof = { seq: number; treeSize: number; path: string[] };
  const proofLines = lines(files.get('proofs.jsonl')!);
  const pendingProofs = new Map<number, Proof>();
  let malformedProof = false;
  const nextProof = (): Proof | undefined => {
    const r = proofLines.next();
    if (r.done) return undefined;
    const p = safeParse(r.value) as Proof | undefined;
    if (!p || typeof p.seq !== 'number' || !Array.isArray(p.path) || p.treeSize !== cp.treeSize) {
      malformedProof = true;
      return undefined;
    }
    return p;
  };
  const proofFor = (seq: number): Proof | undefined => {
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
  let prevSeq = 0;
  const seen = new Set<number>();
  for (const line of lines(files.get('events.jsonl')!)) {
    const e = safeParse(line) as BundleEvent | undefined;
    if (!e || typeof e.seq !== 'number' || typeof e.hash !== 'string') return finish({ seq: prevSeq + 1, problem: 'modified', message: 'events.jsonl has a line that is not an exported event' });
    const seq = e.seq;
    if (seq <= prevSeq) return finish({ seq, problem: 'reordered', message: `events.jsonl lists seq ${seq} after seq ${prevSeq}` });
    if (!report.filtered && seq !== prevSeq + 1 && listed.has(prevSeq + 1)) return finish({ seq: prevSeq + 1, problem: 'reordered', message: `events.jsonl lists seq ${seq} before seq ${prevSeq + 1}` });
    if (!report.filtered && seq !== prevSeq + 1) return finish({ seq: prevSeq + 1, problem: 'deleted', message: `seq ${range(prevSeq + 1, seq - 1)} ${seq - 1 > prevSeq + 1 ? 'are' : 'is'} missing from events.jsonl` });
    if (seq > cp.treeSize) return finish({ seq, problem: 'modified', message: `it lies beyond the bundle's checkpoint of ${cp.treeSize} events` });
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
    const expectedPrev = seq === 1 ? GENESIS_HASH : hashAt(seq - 1);
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
    report.events++;
    if (opts.onProgress && report.events % PROGRESS_EVERY === 0) opts.onProgress(report.events, total);
  }
  for (let p = nextProof(); p; p = nextProof()) pendingProofs.set(p.seq, p);
  if (malformedProof) return finish({ problem: 'bundle-modified', message: 'proofs.jsonl has a malformed proof' });
  const orphan = [...pendingProofs.keys()].filter((seq) => !seen.has(seq)).sort((a, b) => a - b)[0];
  if (orphan !== undefined) return finish({ seq: orphan, problem: report.filtered ? 'deleted' : 'truncated', message: 'the bundle has an inclusion proof for this event but the event is missing from events.jsonl' });
  if (!report.filtered && report.events !== cp.treeSize) {
    return finish({ seq: report.events + 1, problem: 'truncated', message: `events.jsonl ends at seq ${report.events} but the bundle's checkpoint covers ${cp.treeSize} events` });
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
    const m = /^custody-evidence-manifest\nsha256 ([0-9a-f]{64})\n$/.exec(parsed.text);
    if (!m || m[1] !== sha256hex(files.get('manifest.json')!)) return finish({ problem: 'bundle-modified', message: 'manifest.json does not match its signed digest in manifest.note' });
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
    const f = checkWitnessed(rows, witnesses, cp.treeSize, rootAt, verifier.name, report);
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

/** Verifies a path: a data dir (has custody.db) or a bundle (file or extracted directory). */
export function verifyPath(path: string, opts: VerifyOptions = {}): VerifyReport {
  if (!existsSync(path)) throw new VerifyInputError(`${path}: no such file or directory`);
  if (statSync(path).isDirectory() && !existsSync(join(path, 'manifest.json'))) return verifyStore(path, opts);
  return verifyBundle(path, opts);
}

/** As `verifyPath`, with a large store's row pass spread over worker threads. */
export { keyFingerprint };
