/**
 * Verification of a whole archive in object storage (`custody verify s3://bucket/prefix`): every
 * segment under `<prefix>/segments/` verified as a bundle on its own (bundle.ts), and the segments
 * held to each other. They must cover seq 1 onwards with no gap and no overlap, each must continue
 * the tree the one before ended with (its root and last event hash), every event hash of the
 * archive must rebuild each segment's signed root, and each segment's signing key must have been
 * announced in the log (a `key.created` event) by the end of that segment. With --witness-key, each
 * segment's checkpoint must carry a valid cosignature by every one of those witnesses.
 *
 * The archive alone cannot show that segments were removed from its end; an auditor's earlier
 * checkpoint (--since-checkpoint) or Object Lock on the bucket does.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { publicKeyInfo, type PublicKeyInfo } from '../checkpoint-signer';
import { HASH_SIZE, MerkleAccumulator } from '../merkle';
import { type NoteVerifier, parseVerifierKey } from '../signed-note';
import { parseSegmentObjectName, SEGMENTS_FOLDER } from '../archive/layout';
import type { StoredObject } from '../archive/object-store';
import { verifyBundle } from './bundle';
import { checkExpectedKeyFormat, checkSince, emptyReport, parseWitnessKeys, reportFinisher, seqRange, type VerifyOptions, type VerifyReport } from './checks';

/** What the verifier needs of the bucket. */
export interface ArchiveReader {
  /** `<prefix>/<name>`. */
  key(name: string): string;
  list(under: string): Promise<StoredObject[]>;
  getToFile(key: string, file: string): Promise<number>;
}

interface SegmentObject {
  key: string;
  firstSeq: number;
  lastSeq: number;
}

/** Verifies every segment of the archive and how they chain; `label` (its s3:// address) names it in the report. */
export async function verifyArchive(reader: ArchiveReader, label: string, opts: VerifyOptions = {}): Promise<VerifyReport> {
  checkExpectedKeyFormat(opts.expectedKey);
  parseWitnessKeys(opts.witnessKeys);
  const started = performance.now();
  const report = emptyReport(label, 'archive');
  report.segments = 0;
  const finish = reportFinisher(report, started);

  const root = reader.key('');
  const segments: SegmentObject[] = [];
  for (const o of await reader.list(SEGMENTS_FOLDER)) {
    const range = parseSegmentObjectName(o.key.slice(root.length));
    if (!range) return finish({ problem: 'bundle-modified', message: `${o.key} is not a segment (segments are named ${SEGMENTS_FOLDER}<first seq>-<last seq>.tar.gz)` });
    segments.push({ key: o.key, ...range });
  }
  segments.sort((a, b) => a.firstSeq - b.firstSeq || a.lastSeq - b.lastSeq);
  if (!segments.length) return finish({ problem: 'truncated', message: `${label} holds no segments (nothing under ${reader.key(SEGMENTS_FOLDER)})` });

  const since = opts.since;
  const sinceHashes = since ? Buffer.alloc(since.body.treeSize * HASH_SIZE) : undefined;
  let sinceRoot: string | undefined;
  const acc = new MerkleAccumulator();
  const announced = new Set<string>();
  const trusted = new Map<string, NoteVerifier>();
  let prev: { seg: SegmentObject; rootHash: string; lastHash: string; key: PublicKeyInfo } | undefined;
  let lastEventHash = '';
  const tmp = mkdtempSync(join(tmpdir(), 'custody-archive-verify-'));
  try {
    for (const [i, seg] of segments.entries()) {
      const expect = (prev?.seg.lastSeq ?? 0) + 1;
      if (seg.firstSeq > expect) {
        const where = prev ? `${prev.seg.key} ends at seq ${prev.seg.lastSeq}` : 'the archive must start at seq 1';
        return finish({ seq: expect, problem: 'deleted', message: `seq ${seqRange(expect, seg.firstSeq - 1)} ${seg.firstSeq - 1 > expect ? 'are' : 'is'} missing from the archive: no segment holds ${seg.firstSeq - 1 > expect ? 'them' : 'it'} (${where}, ${seg.key} starts at seq ${seg.firstSeq})` });
      }
      if (seg.firstSeq < expect) {
        return finish({ seq: seg.firstSeq, problem: 'bundle-modified', message: `segments overlap: ${seg.key} holds seq ${seqRange(seg.firstSeq, seg.lastSeq)}, but seq ${seqRange(seg.firstSeq, Math.min(seg.lastSeq, expect - 1))} ${prev ? `are already in ${prev.seg.key}` : ''}` });
      }
      const file = join(tmp, `${i}.tar.gz`);
      await reader.getToFile(seg.key, file);
      const r = verifyBundle(file, {
        expectedKey: opts.expectedKey,
        witnessKeys: opts.witnessKeys,
        onEvent: (e) => {
          acc.pushEventHashHex(e.hash);
          lastEventHash = e.hash;
          if (sinceHashes && acc.size <= since!.body.treeSize) sinceHashes.write(e.hash, (acc.size - 1) * HASH_SIZE, HASH_SIZE, 'hex');
          if (since && acc.size === since.body.treeSize) sinceRoot = acc.root().toString('hex');
          const p = e.payload as { purpose?: unknown; verifierKey?: unknown } | null;
          if (e.kind === 'key.created' && p?.purpose === 'checkpoint-signing' && typeof p.verifierKey === 'string') {
            try {
              const v = parseVerifierKey(p.verifierKey);
              announced.add(publicKeyInfo(v).fingerprint);
              trusted.set(publicKeyInfo(v).fingerprint, v);
            } catch {
              // an unreadable announcement announces nothing
            }
          }
        },
      });
      rmSync(file, { force: true });
      if (!r.ok) return finish({ ...r.failure!, message: `${seg.key}: ${r.failure!.message}` });
      if (!r.segment) return finish({ problem: 'bundle-modified', message: `${seg.key} is an evidence bundle, not an archive segment (its manifest names no segment)` });
      if (r.segment.firstSeq !== seg.firstSeq || r.segment.lastSeq !== seg.lastSeq) {
        return finish({ problem: 'bundle-modified', message: `${seg.key} is named for seq ${seqRange(seg.firstSeq, seg.lastSeq)} but holds seq ${seqRange(r.segment.firstSeq, r.segment.lastSeq)}` });
      }
      if (prev && (r.segment.previous.rootHash !== prev.rootHash || r.segment.previous.lastHash !== prev.lastHash)) {
        return finish({ seq: seg.firstSeq, problem: 'inconsistent', message: `${seg.key} does not continue ${prev.seg.key}: it was cut from a different history of the first ${seg.firstSeq - 1} events` });
      }
      if (acc.root().toString('hex') !== r.rootHash) {
        return finish({ seq: seg.firstSeq, problem: 'inconsistent', message: `the events of the archive up to seq ${seg.lastSeq} do not rebuild the root ${seg.key} is signed over` });
      }
      const key = r.key!;
      if (!announced.has(key.fingerprint)) {
        return finish({ seq: seg.firstSeq, problem: 'key-replaced', message: `${seg.key} is signed with key ${key.fingerprint}, which the log never announced (no key.created event for it up to seq ${seg.lastSeq})` });
      }
      if (prev && prev.key.fingerprint !== key.fingerprint) report.keyRotations.push({ seq: seg.firstSeq, fingerprint: key.fingerprint });
      report.events += r.events;
      report.payloadsChecked += r.payloadsChecked;
      report.payloadsPurged += r.payloadsPurged;
      report.checkpointsChecked++;
      report.segments++;
      report.latestCheckpoint = r.latestCheckpoint;
      if (r.witnessed) report.witnessed = r.witnessed;
      report.key = key;
      report.treeSize = seg.lastSeq;
      report.rootHash = r.rootHash;
      prev = { seg, rootHash: r.rootHash, lastHash: lastEventHash, key };
      opts.onProgress?.(report.events, report.events);
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }

  if (since) {
    const f = checkSince(since, [...trusted.values()], report.treeSize, (size) => (size === since.body.treeSize ? sinceRoot : size === report.treeSize ? report.rootHash : undefined), () => sinceHashes!);
    report.since = { treeSize: since.body.treeSize, source: since.source };
    if (f) return finish(f);
  }
  return finish();
}

