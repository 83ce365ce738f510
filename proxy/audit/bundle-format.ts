/**
 * The evidence bundle's format: its file names, its manifest, and the header of the manifest's
 * signed digest. The exporter (export.ts) writes it, the archiver writes it over a range of the log
 * (archive/segment.ts: an archive segment is a bundle), and the verifier (verify/bundle.ts) reads
 * it; none of them owns it.
 *
 *   manifest.json        what is inside: filter or segment, checkpoint, counts, SHA-256 and size of every file
 *   manifest.note        C2SP signed note over SHA-256(manifest.json), same key as the checkpoints
 *   checkpoint.txt       a checkpoint signed for this bundle (tree size T)
 *   public-key.txt       verifier key (`name+id+key`) and fingerprint
 *   events.jsonl         the selected events, payloads as recorded (masked), with their hashes
 *   ocsf.jsonl           the same events as OCSF records (see ocsf.ts)
 *   proofs.jsonl         an RFC 6962 inclusion proof per event against checkpoint.txt
 *   hashes.bin           the 32-byte hash of every event 1..T (exports; a segment does without)
 *   checkpoints.jsonl    stored checkpoints up to T; consistency.jsonl proves each a prefix of T
 *   cosignatures.jsonl   witness cosignatures of checkpoints up to T (see witnessing.ts)
 *   holds.json           holds (with their votes) in the window; policy-versions.json the rules in force
 *   report.html          the self-contained human-readable report (report.ts)
 *   ssh-<session>-<channel>.cast   recorded SSH terminals as asciicast v2 (exports with SSH sessions)
 *
 * A gateway in a group (`store.url`) adds every chain of the shared store (manifest `group`,
 * GroupSection below), which `custody verify` checks as `custody verify --store` checks the store:
 *
 *   group-gateways.json     the store's gateway rows: each key, and its enrolment request signed by it
 *   group-checkpoints.jsonl every chain's signed checkpoints
 *   group-combined.jsonl    the combined checkpoints with their cosignatures
 *   group-hashes.bin        the 32-byte hash of every event 1..size of each chain, chains in manifest order
 *   group-events.jsonl      the selected events of every chain, and every chain's gateway.enrolled,
 *                           gateway.approved and gateway.removed events (who may sign)
 *   group-log.bin           the group log's leaf hashes (one per combined checkpoint, oldest first), 32 bytes each
 *   group-witness-cosignatures.jsonl  the witnesses' cosignatures on heads of the group log
 *
 * Bundles exported before the last two existed lack them: they verify as before, and
 * `--witness-key` then says the bundle carries no witness cosignatures of the group log.
 */
import { createHash } from 'node:crypto';
import { createReadStream, statSync } from 'node:fs';
import type { HoldView } from '../../shared/holds';

/** `manifest.json` → `format`. */
export const BUNDLE_FORMAT = 'custody-evidence-bundle/1';

/** First line of the text `manifest.note` signs: `<header>\nsha256 <hex of manifest.json>\n`. */
export const MANIFEST_NOTE_HEADER = 'custody-evidence-manifest';

/** Every file a bundle may hold, in the order the exporter writes them. */
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
] as const;

export type BundleFileName = (typeof BUNDLE_FILES)[number];

/** Files of a bundle exported in a group, beside BUNDLE_FILES (manifest `group`). */
export const GROUP_BUNDLE_FILES = ['group-gateways.json', 'group-checkpoints.jsonl', 'group-combined.jsonl', 'group-hashes.bin', 'group-events.jsonl'] as const;

/** Files of a group bundle for its witnesses (GROUP_BUNDLE_FILES beside them; absent from bundles exported before them). */
export const GROUP_WITNESS_FILES = ['group-log.bin', 'group-witness-cosignatures.jsonl'] as const;

/** Events a group bundle carries from every chain whatever its filter: they say who may sign, what the group refused, and which purged payloads retention explains. */
export const GROUP_TRUST_KINDS = ['gateway.enrolled', 'gateway.approved', 'gateway.removed', 'group.checkpoint.refused', 'store.tampered', 'retention.run'] as const;

/** Names of the files a bundle holds beyond BUNDLE_FILES (listed in its manifest): one plain file name, no folders. */
export const BUNDLE_EXTRA_FILE = /^ssh-[A-Za-z0-9._-]+\.cast$/;

/** Files without which a bundle cannot be verified. */
export const REQUIRED_BUNDLE_FILES: readonly BundleFileName[] = ['manifest.json', 'manifest.note', 'checkpoint.txt', 'public-key.txt', 'events.jsonl', 'proofs.jsonl'];

/** The text `manifest.note` signs for a manifest with this SHA-256. */
export function manifestNoteText(manifestSha256: string): string {
  return `${MANIFEST_NOTE_HEADER}\nsha256 ${manifestSha256}\n`;
}

/** The manifest digest a signed `manifest.note` text names, or undefined when the text is not one. */
export function manifestDigestOf(noteText: string): string | undefined {
  const m = /^custody-evidence-manifest\nsha256 ([0-9a-f]{64})\n$/.exec(noteText);
  return m?.[1];
}

/** One line of `events.jsonl`. */
export interface BundleEvent {
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

/** One line of `proofs.jsonl`. */
export interface BundleProof {
  seq: number;
  leafIndex?: number;
  treeSize: number;
  path: string[];
}

/** One line of `consistency.jsonl`: the tree of `from` events is a prefix of the tree of `to`. */
export interface BundleConsistency {
  from: number;
  to: number;
  fromRoot: string;
  toRoot: string;
  path: string[];
}

/**
 * A bundle cut over a contiguous range of the log (an archive segment) rather than a filter:
 * events `firstSeq..lastSeq` all present, `checkpoint.txt` covering exactly `lastSeq`, and
 * `previous` naming what the range continues: the tree of `firstSeq - 1` events (its root, and the
 * hash of its last event, which the first event's prevHash must be), proven a prefix of the
 * checkpoint by the one line of `consistency.jsonl`.
 */
export interface BundleSegment {
  index: number;
  firstSeq: number;
  lastSeq: number;
  previous: { treeSize: number; rootHash: string; lastHash: string };
}

/** One chain of a group bundle (manifest `group.chains`, in the order of group-hashes.bin). */
export interface GroupChain {
  gateway: string;
  name: string;
  /** Hashes of seq 1..size in group-hashes.bin. */
  size: number;
  /** Its rows in group-events.jsonl. */
  events: number;
}

/**
 * The group part of a bundle exported by a gateway with a shared store: every chain of the store,
 * each cut where a signed checkpoint of its own or the newest combined checkpoint commits to it, or
 * an event another chain cites from within its cut (rows after that are not evidence yet), read in
 * one snapshot of the store.
 */
export interface GroupSection {
  /** The store, as it may be shown (no user, no query). */
  store: string;
  group: string;
  chains: GroupChain[];
  /** Combined checkpoints carried: those made in the filter's time window, and the newest. */
  combined: number;
  /** True: every row of every chain up to its size (no filter). False: the filter's rows and GROUP_TRUST_KINDS, the rest by hash. */
  full: boolean;
  /** The group log's size: combined checkpoints in the store when the bundle was cut (group-log.bin holds a leaf for each). */
  groupLog?: number;
}

/**
 * What the OCSF mapper (ocsf.ts) was given beside the events, so that `custody verify` maps every
 * exported event again and holds ocsf.jsonl to it: the product, and each connection's kind (from
 * the exporting gateway's configuration; the events do not say it).
 */
export interface BundleOcsfContext {
  product: { name: string; version: string };
  connectionKinds: Record<string, string>;
}

/**
 * What the group part's reader hands the exporter beside the group files, for `ocsf.jsonl`,
 * `holds.json` and `report.html` to cover every chain (export.ts). Not itself in the bundle.
 */
export interface GroupExport {
  section: GroupSection;
  /**
   * Rows of group-events.jsonl outside the filter, carried only because they say who may sign
   * (GROUP_TRUST_KINDS), as `<gateway> <seq>`: the report and the OCSF records follow the filter,
   * as the exporting gateway's part does. Empty without a filter.
   */
  carriedOnly: string[];
  /** Every gateway's holds in the filter's window, each as its owner last wrote it to the store (with the votes cast on any gateway). */
  holds: { gateway: string; view: HoldView }[];
}

export type BundleFilter = { from?: number; to?: number; user?: string; connection?: string };

export interface BundleManifest {
  format: string;
  createdAt: string;
  origin: string;
  filter: BundleFilter;
  segment?: BundleSegment;
  group?: GroupSection;
  /** Absent from bundles exported before verify mapped the events again. */
  ocsf?: BundleOcsfContext;
  checkpoint: { treeSize: number; rootHash: string; time: number };
  events: number;
  purged: number;
  files: Record<string, { sha256: string; bytes: number }>;
}

/** A stored event as `events.jsonl` holds it; payload and spans are canonical JSON text, as stored. */
export type StoredEventText = Omit<BundleEvent, 'payload' | 'spans' | 'purged'> & { payloadText: string; spansText: string; purged: boolean };

/** One line of `events.jsonl` (without its newline), written from the stored text, never re-serialised. */
export function eventLine(e: StoredEventText): string {
  return `{"seq":${e.seq},"time":${e.time},"kind":${JSON.stringify(e.kind)},"session":${JSON.stringify(e.session)},"actor":${JSON.stringify(e.actor)},"connection":${JSON.stringify(e.connection)},"payload":${e.payloadText},"spans":${e.spansText}${e.purged ? ',"purged":true' : ''},"payloadHash":"${e.payloadHash}","prevHash":"${e.prevHash}","hash":"${e.hash}"}`;
}

/** One line of `group-events.jsonl`: an events.jsonl line with its chain first. */
export function groupEventLine(gateway: string, e: StoredEventText): string {
  return `{"gateway":${JSON.stringify(gateway)},${eventLine(e).slice(1)}`;
}

/** One line of `proofs.jsonl`: the inclusion proof of event `seq` in the tree of `treeSize` events. */
export function proofLine(seq: number, treeSize: number, path: readonly Uint8Array[]): string {
  return JSON.stringify({ seq, leafIndex: seq - 1, treeSize, path: path.map((h) => Buffer.from(h).toString('base64')) } satisfies BundleProof);
}

/** A file's entry in `manifest.json` → `files`: its SHA-256 (hex) and size, read in chunks. */
export async function manifestFileEntry(path: string): Promise<{ sha256: string; bytes: number }> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return { sha256: h.digest('hex'), bytes: statSync(path).size };
}
