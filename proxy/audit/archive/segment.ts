/**
 * An archive segment: an evidence bundle (bundle-format.ts) over a contiguous range of the log,
 * seq `firstSeq..lastSeq`, cut at a signed checkpoint of exactly `lastSeq` events. It holds the
 * events as recorded, an inclusion proof per event against that checkpoint, a consistency proof
 * from the tree the previous segment ended with, the witnesses' cosignatures on the checkpoint
 * (where there are witnesses), the public key and a signed manifest, so it
 * verifies on its own (`custody verify segment.tar.gz`) and chains to its neighbours
 * (`custody verify s3://bucket/prefix`, verify/archive.ts).
 *
 * Building the events and proofs reads the segment's events and the compact range of the tree it
 * continues (the segment before's `range`, a hash per set bit of its size): O(segment + log n),
 * whatever the log held before (merkle.ts, `MerkleTree.continuing`). Without a range (the first
 * segment after an upgrade) it is rebuilt from every event hash before the segment, once. The
 * archiver runs this on its worker thread (archive-thread.ts) where one can load. Signing and
 * packing stay with the caller, which holds the key.
 */
import { closeSync, openSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type Database from 'better-sqlite3';
import { BUNDLE_FORMAT, type BundleManifest, type BundleSegment, eventLine, manifestFileEntry, manifestNoteText, proofLine } from '../bundle-format';
import type { Checkpoint } from '../checkpoints';
import type { CheckpointSigner } from '../checkpoint-signer';
import { HASH_SIZE, MerkleAccumulator, MerkleTree } from '../merkle';
import { GENESIS_HASH, sha256hex, storedPayloadText } from '../store';
import { writeTarGz } from '../tar';

/** The files of the segment a worker writes, and what the caller checks them against. */
export interface SegmentEvents {
  events: number;
  purged: number;
  /** Root of the tree of `lastSeq` events (hex): must equal the checkpoint's. */
  rootHash: string;
  /** Root of the tree of `firstSeq - 1` events and the hash of event `firstSeq - 1` (genesis for the first segment). */
  previousRootHash: string;
  previousLastHash: string;
  lastHash: string;
  /** The compact range of the tree of `lastSeq` events (hex, largest subtree first): the next segment continues it. */
  range: string[];
  /** SHA-256 computations the tree and its proofs took (leaves included). */
  treeHashes: number;
}

const PAGE = 2000;
const EVENT_SQL = 'SELECT seq, time, kind, session, actor, connection, payload, encoding, spans, payload_hash, prev_hash, hash FROM events WHERE seq >= ? AND seq <= ? ORDER BY seq LIMIT ?';
type EventRow = [number, number, string, string | null, string | null, string | null, Buffer | string | null, string, string | null, string, string, string];

/**
 * Writes `events.jsonl`, `proofs.jsonl` and `consistency.jsonl` for seq `firstSeq..lastSeq` into
 * `stage`. `range`: the compact range of the tree of `firstSeq - 1` events (`SegmentEvents.range`
 * of the segment before); the caller checks the root it gives against that segment's. Throws when
 * the stored rows do not form that range or do not chain.
 */
export function writeSegmentEvents(db: Database.Database, firstSeq: number, lastSeq: number, stage: string, range?: readonly string[]): SegmentEvents {
  const start = firstSeq - 1;
  const compact = range ? rangeOf(range, start) : compactRangeFromLog(db, start);
  // Without a stored range, each event before the segment was hashed as a leaf, and all but one per subtree of the range merged.
  const rangeHashes = range ? 0 : 2 * start - compact.length;
  const hashes = Buffer.allocUnsafe((lastSeq - start) * HASH_SIZE);
  let n = start;
  for (const [seq, hash] of db.prepare('SELECT seq, hash FROM events WHERE seq >= ? AND seq <= ? ORDER BY seq').raw().iterate(firstSeq, lastSeq) as IterableIterator<[number, string]>) {
    if (seq !== n + 1) throw new Error(`the log skips from seq ${n} to ${seq}; run custody verify`);
    hashes.write(hash, (n - start) * HASH_SIZE, HASH_SIZE, 'hex');
    n++;
  }
  if (n !== lastSeq) throw new Error(`the log holds ${n} of the ${lastSeq} events the segment's checkpoint covers`);
  const tree = MerkleTree.continuing(compact, start, hashes);
  const before = start === 0 ? GENESIS_HASH : (db.prepare('SELECT hash FROM events WHERE seq = ?').pluck().get(start) as string | undefined);
  if (before === undefined) throw new Error(`the log has no event ${start}; run custody verify`);
  const hashAt = (seq: number) => (seq === start ? before : hashes.toString('hex', (seq - 1 - start) * HASH_SIZE, (seq - start) * HASH_SIZE));

  const eventsFd = openSync(join(stage, 'events.jsonl'), 'w', 0o600);
  const proofsFd = openSync(join(stage, 'proofs.jsonl'), 'w', 0o600);
  let events = 0;
  let purged = 0;
  let prev = hashAt(firstSeq - 1);
  try {
    const page = db.prepare(EVENT_SQL).raw();
    for (let from = firstSeq; from <= lastSeq; ) {
      const rows = page.all(from, lastSeq, PAGE) as EventRow[];
      if (!rows.length) break;
      const ev: string[] = [];
      const pr: string[] = [];
      for (const [seq, time, kind, session, actor, connection, payload, encoding, spansText, payloadHash, prevHash, hash] of rows) {
        if (prevHash !== prev) throw new Error(`seq ${seq} does not chain to seq ${seq - 1}; run custody verify`);
        const isPurged = encoding === 'purged';
        if (isPurged) purged++;
        ev.push(eventLine({ seq, time, kind, session, actor, connection, payloadText: storedPayloadText(encoding, payload), spansText: spansText ?? '[]', purged: isPurged, payloadHash, prevHash, hash }));
        pr.push(proofLine(seq, lastSeq, tree.inclusionProof(seq - 1, lastSeq)));
        prev = hash;
        events++;
      }
      writeSync(eventsFd, `${ev.join('\n')}\n`);
      writeSync(proofsFd, `${pr.join('\n')}\n`);
      from = rows[rows.length - 1]![0] + 1;
    }
  } finally {
    closeSync(eventsFd);
    closeSync(proofsFd);
  }
  if (events !== lastSeq - firstSeq + 1) throw new Error(`the log holds ${events} of the ${lastSeq - firstSeq + 1} events of seq ${firstSeq}–${lastSeq}`);
  const previousRootHash = tree.root(firstSeq - 1).toString('hex');
  const rootHash = tree.root(lastSeq).toString('hex');
  const consistency =
    firstSeq > 1 ? `${JSON.stringify({ from: firstSeq - 1, to: lastSeq, fromRoot: previousRootHash, toRoot: rootHash, path: tree.consistencyProof(firstSeq - 1, lastSeq).map((h) => h.toString('base64')) })}\n` : '';
  writeFileSync(join(stage, 'consistency.jsonl'), consistency, { mode: 0o600 });
  const next = tree.compactRange().map((r) => r.hash.toString('hex'));
  return { events, purged, rootHash, previousRootHash, previousLastHash: hashAt(start), lastHash: hashAt(lastSeq), range: next, treeHashes: rangeHashes + tree.hashCount };
}

/** A stored compact range (hex, largest first) with its heights: one per set bit of `size`. */
function rangeOf(hex: readonly string[], size: number): { hash: Buffer; height: number }[] {
  const heights: number[] = [];
  for (let k = 52; k >= 0; k--) if (Math.floor(size / 2 ** k) % 2) heights.push(k);
  if (hex.length !== heights.length || hex.some((h) => !/^[0-9a-f]{64}$/.test(h))) throw new Error(`the stored compact range of the tree of ${size} events is malformed`);
  return hex.map((h, i) => ({ hash: Buffer.from(h, 'hex'), height: heights[i]! }));
}

/** The compact range of the tree of the first `size` events, from every event hash (the slow path: no range was stored). */
function compactRangeFromLog(db: Database.Database, size: number): { hash: Buffer; height: number }[] {
  const acc = new MerkleAccumulator();
  for (const [seq, hash] of db.prepare('SELECT seq, hash FROM events WHERE seq <= ? ORDER BY seq').raw().iterate(size) as IterableIterator<[number, string]>) {
    if (seq !== acc.size + 1) throw new Error(`the log skips from seq ${acc.size} to ${seq}; run custody verify`);
    acc.pushEventHashHex(hash);
  }
  if (acc.size !== size) throw new Error(`the log holds ${acc.size} of the ${size} events before the segment`);
  return acc.subtrees();
}

/** The files a segment holds, in the order they are packed. */
export const SEGMENT_FILES = ['manifest.json', 'manifest.note', 'checkpoint.txt', 'public-key.txt', 'events.jsonl', 'proofs.jsonl', 'consistency.jsonl', 'cosignatures.jsonl'] as const;

export interface PackedSegment {
  file: string;
  bytes: number;
  sha256: string;
  manifestSha256: string;
}

/**
 * Completes a segment's stage (checkpoint, public key, manifest and its signed note) and packs it
 * into `<stage>/segment.tar.gz`.
 */
export async function packSegment(
  stage: string,
  seg: { index: number; firstSeq: number; lastSeq: number; previous: BundleSegment['previous']; checkpoint: Checkpoint; sealedAt: number; events: SegmentEvents; cosignatures: readonly object[] },
  signer: CheckpointSigner,
): Promise<PackedSegment> {
  const key = signer.info();
  writeFileSync(join(stage, 'checkpoint.txt'), seg.checkpoint.note, { mode: 0o600 });
  writeFileSync(join(stage, 'public-key.txt'), `${key.verifierKey}\n${key.fingerprint}\n`, { mode: 0o600 });
  // Witnesses' cosignatures on this checkpoint (rows of checkpoint_cosignatures), as bundles carry them.
  writeFileSync(join(stage, 'cosignatures.jsonl'), seg.cosignatures.map((c) => `${JSON.stringify(c)}\n`).join(''), { mode: 0o600 });
  const files: BundleManifest['files'] = {};
  for (const name of SEGMENT_FILES.slice(2)) files[name] = await manifestFileEntry(join(stage, name));
  const manifest: BundleManifest & Record<string, unknown> = {
    format: BUNDLE_FORMAT,
    id: `seg_${seg.index}`,
    createdAt: new Date(seg.sealedAt).toISOString(),
    createdBy: 'system',
    origin: signer.name,
    filter: {},
    segment: { index: seg.index, firstSeq: seg.firstSeq, lastSeq: seg.lastSeq, previous: seg.previous },
    checkpoint: { treeSize: seg.checkpoint.treeSize, rootHash: seg.checkpoint.rootHash, time: seg.checkpoint.time },
    events: seg.events.events,
    firstSeq: seg.firstSeq,
    lastSeq: seg.lastSeq,
    purged: seg.events.purged,
    key: { verifierKey: key.verifierKey, fingerprint: key.fingerprint },
    files,
  };
  const manifestText = `${JSON.stringify(manifest, null, 2)}\n`;
  const manifestSha256 = sha256hex(manifestText);
  writeFileSync(join(stage, 'manifest.json'), manifestText, { mode: 0o600 });
  writeFileSync(join(stage, 'manifest.note'), await signer.signText(manifestNoteText(manifestSha256)), { mode: 0o600 });
  const out = join(stage, 'segment.tar.gz');
  await writeTarGz(
    out,
    SEGMENT_FILES.map((name) => ({ name, file: join(stage, name), size: statSync(join(stage, name)).size, mtime: seg.sealedAt })),
  );
  const packed = await manifestFileEntry(out);
  return { file: out, bytes: packed.bytes, sha256: packed.sha256, manifestSha256 };
}
