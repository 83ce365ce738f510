/**
 * Verification of a data dir: its SQLite file, its checkpoints and its signing key. Recomputes
 * every payload hash, the hash chain and the RFC 6962 tree, checks every checkpoint's Ed25519
 * signature (checks.ts), and names the first row where history stops being what was recorded.
 *
 * The row pass reads raw rows and hashes the stored canonical text directly (no JSON parsing
 * except the few key and retention events it needs), so a million events verify in seconds. It
 * works on seq ranges: `verifyStore` scans the whole log as one range in this thread;
 * verify-runner.ts scans ranges in worker threads and hands them to `concludeStore` to stitch.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { inflateRawSync } from 'node:zlib';
import Database from 'better-sqlite3';
import { CheckpointSigner, KEY_NAME_META, publicKeyInfo, type PublicKeyInfo, SIGNING_KEY_FILE } from '../checkpoint-signer';
import { HASH_SIZE, MerkleAccumulator } from '../merkle';
import { type NoteVerifier, parseNote, parseVerifierKey } from '../signed-note';
import { canonicalEventBody, chainHashOfText, GENESIS_HASH, sha256hex } from '../store';
import { checkCheckpoint, checkExpectedKeyFormat, checkSince, checkWitnessed, type CosignatureRowData, describeKey, emptyReport, keyMatches, parseWitnessKeys, PROGRESS_EVERY, seqRange, reportFinisher, safeParse, type VerifyFailure, VerifyInputError, type VerifyOptions, type VerifyReport } from './checks';

/** A row of RANGE_SQL, read raw (arrays are faster than objects over millions of rows); index it with the column constants below. */
type RawRow = [
  seq: number,
  time: number,
  kind: string,
  session: string | null,
  actor: string | null,
  connection: string | null,
  payload: Buffer | string | null,
  encoding: string,
  spans: string | null,
  payloadHash: string,
  prevHash: string,
  hash: string,
];
const SEQ = 0;
const TIME = 1;
const KIND = 2;
const SESSION = 3;
const ACTOR = 4;
const CONNECTION = 5;
const PAYLOAD = 6;
const ENCODING = 7;
const SPANS = 8;
const PAYLOAD_HASH = 9;
const PREV_HASH = 10;
const HASH = 11;

interface RowFault {
  kind: 'gap' | 'payload' | 'inflate' | 'link' | 'hash';
  row: RawRow;
  expectSeq: number;
  running: string;
}

function bodyText(r: RawRow, seq = r[SEQ]): string {
  return canonicalEventBody({ seq, time: r[TIME], kind: r[KIND] as never, session: r[SESSION], actor: r[ACTOR], connection: r[CONNECTION], payloadHash: r[PAYLOAD_HASH] });
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
    const seq = r[SEQ];
    if (scan.count === 0) {
      scan.firstSeq = seq;
      scan.firstPrev = r[PREV_HASH];
      running = r[PREV_HASH];
      expect = seq;
    }
    if (seq !== expect) {
      scan.fault = { kind: 'gap', row: r, expectSeq: expect, running };
      break;
    }
    const encoding = r[ENCODING];
    if (encoding === 'purged') {
      scan.purged++;
      if (r[TIME] > scan.maxPurgedTime) scan.maxPurgedTime = r[TIME];
    } else {
      let text: string;
      const payload = r[PAYLOAD];
      if (encoding === 'deflate') {
        try {
          text = inflateRawSync(payload as Buffer).toString('utf8');
        } catch {
          scan.fault = { kind: 'inflate', row: r, expectSeq: expect, running };
          break;
        }
      } else text = typeof payload === 'string' ? payload : payload === null ? 'null' : Buffer.from(payload).toString('utf8');
      if (sha256hex(`{"payload":${text},"spans":${r[SPANS] ?? '[]'}}`) !== r[PAYLOAD_HASH]) {
        scan.fault = { kind: 'payload', row: r, expectSeq: expect, running };
        break;
      }
      scan.checked++;
      if (r[KIND] === 'key.created' || r[KIND] === 'retention.run') {
        const p = safeParse(text) as Record<string, unknown> | undefined;
        if (r[KIND] === 'retention.run' && typeof p?.['cutoff'] === 'number') scan.retentionCutoff = Math.max(scan.retentionCutoff, p['cutoff']);
        if (r[KIND] === 'key.created' && p?.['purpose'] === 'checkpoint-signing' && typeof p['verifierKey'] === 'string') scan.announcements.push({ seq, verifierKey: p['verifierKey'] });
      }
    }
    if (r[PREV_HASH] !== running) {
      scan.fault = { kind: 'link', row: r, expectSeq: expect, running };
      break;
    }
    if (chainHashOfText(running, bodyText(r)) !== r[HASH]) {
      scan.fault = { kind: 'hash', row: r, expectSeq: expect, running };
      break;
    }
    running = r[HASH];
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
    const first = scan.count ? scan.firstSeq : scan.fault!.row[SEQ];
    if (first !== expect) {
      pass.fault = { kind: 'gap', row: rowAt(first), expectSeq: expect, running };
      break;
    }
    // The range's first row was not linked to its predecessor inside the range; do it here, in the
    // same order of checks as a single pass (a payload fault on that row is reported before its link).
    const firstPrev = scan.count ? scan.firstPrev : scan.fault!.row[PREV_HASH];
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

function storeCosignatures(db: Database.Database): CosignatureRowData[] {
  const has = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'checkpoint_cosignatures'").get();
  return has ? (db.prepare('SELECT * FROM checkpoint_cosignatures ORDER BY tree_size').all() as CosignatureRowData[]) : [];
}

/**
 * A store opened read-only for verification, with what the row pass needs to know up front: the
 * stored checkpoints and the tree sizes whose roots the checks will ask for.
 */
export interface StoreUnderVerification {
  dataDir: string;
  /** The SQLite file, for worker threads that open it themselves. */
  file: string;
  db: Database.Database;
  checkpoints: CheckpointRowData[];
  /** Tree sizes whose roots the row pass must record (checkpoints, --since-checkpoint, cosignatures). */
  wanted: Set<number>;
  /** Events stored, and the largest seq, when the store was opened. */
  total: number;
  maxSeq: number;
  opts: VerifyOptions;
  started: number;
}

/** Checks the options, then opens `<dataDir>/custody.db`; the caller closes `db`. */
export function openStoreForVerification(dataDir: string, opts: VerifyOptions = {}): StoreUnderVerification {
  const started = performance.now();
  checkExpectedKeyFormat(opts.expectedKey);
  parseWitnessKeys(opts.witnessKeys);
  const db = openStore(dataDir);
  try {
    const checkpoints = storeCheckpoints(db);
    const { n: total, max: maxSeq } = db.prepare('SELECT count(*) AS n, coalesce(max(seq), 0) AS max FROM events').get() as { n: number; max: number };
    return { dataDir, file: join(dataDir, 'custody.db'), db, checkpoints, wanted: wantedSizes(db, checkpoints, opts), total, maxSeq, opts, started };
  } catch (err) {
    db.close();
    throw err;
  }
}

/** The whole log as one range, in this thread. */
export function scanWholeStore(s: StoreUnderVerification): RangeScan[] {
  const { opts, total } = s;
  const scan = scanRange(s.db, 1, Number.MAX_SAFE_INTEGER, s.wanted, opts.onProgress && ((done) => opts.onProgress!(done, total)));
  opts.onProgress?.(scan.count, total);
  return [scan];
}

/** Verifies `<dataDir>/custody.db` with its checkpoints and signing key, in this thread. */
export function verifyStore(dataDir: string, opts: VerifyOptions = {}): VerifyReport {
  const s = openStoreForVerification(dataDir, opts);
  try {
    return concludeStore(s, scanWholeStore(s));
  } finally {
    s.db.close();
  }
}

/**
 * Everything after the row pass: the scanned ranges (in seq order) stitched into one log, then
 * keys, the auditor's anchor, stored checkpoints, witnesses and retention.
 */
export function concludeStore(s: StoreUnderVerification, scans: RangeScan[]): VerifyReport {
  const { db, dataDir, checkpoints, opts } = s;
  const pass = stitch(db, scans, s.wanted);
  const report = emptyReport(dataDir, 'store');
  const finish = reportFinisher(report, s.started);
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
  let fileVerifier: NoteVerifier | undefined;
  try {
    // A key sealed by the desktop app is checked by the public half kept beside it.
    fileVerifier = keyName ? CheckpointSigner.loadVerifier(dataDir, keyName) : undefined;
  } catch (err) {
    return finish({ problem: 'key-replaced', seq: announcements.at(-1)?.seq, message: `${SIGNING_KEY_FILE} is unreadable: ${(err as Error).message}` });
  }
  const fileInfo = fileVerifier && publicKeyInfo(fileVerifier);
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
  const trusted: NoteVerifier[] = announcements.length ? announcements.map((a) => a.verifier) : fileVerifier ? [fileVerifier] : [];

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
  const seq = r[SEQ];
  switch (f.kind) {
    case 'gap':
      return { seq: f.expectSeq, problem: 'deleted', message: `seq ${seqRange(f.expectSeq, seq - 1)} ${seq - 1 > f.expectSeq ? 'are' : 'is'} missing: the log jumps from seq ${f.expectSeq - 1} to seq ${seq}` };
    case 'inflate':
      return { seq, problem: 'modified', message: 'its stored payload is corrupt (it cannot be decompressed)' };
    case 'payload':
      return { seq, problem: 'modified', message: 'its payload does not match the payload hash recorded for it' };
    case 'hash':
      return { seq, problem: 'modified', message: 'its fields (time, kind, session, actor, connection or payload hash) do not match its hash' };
    case 'link': {
      const moved = db.prepare('SELECT seq FROM events WHERE prev_hash = ? AND seq > ? ORDER BY seq LIMIT 1').get(f.running, seq) as { seq: number } | undefined;
      if (moved) return { seq, problem: 'reordered', message: `events are out of order: the event recorded after seq ${seq - 1} is stored at seq ${moved.seq}` };
      if (chainHashOfText(r[PREV_HASH], bodyText(r)) === r[HASH]) {
        // This row is intact and was written after a different version of its predecessor.
        return { seq: seq - 1, problem: 'modified', message: `seq ${seq} was chained to a different version of it (its hash was rewritten)` };
      }
      for (let k = 1; k <= 10_000; k++) {
        if (chainHashOfText(r[PREV_HASH], bodyText(r, seq + k)) === r[HASH]) {
          return { seq, problem: 'deleted', message: `seq ${seqRange(seq, seq + k - 1)} ${k > 1 ? 'were' : 'was'} deleted and the later events renumbered to hide the gap` };
        }
      }
      return { seq, problem: 'modified', message: `it does not chain to seq ${seq - 1} (its previous-hash differs)` };
    }
  }
}
