/**
 * The group part of an evidence bundle (bundle-format.ts, GroupSection), verified by the checks of
 * `custody verify --store` (shared-store.ts, `verifyChains`) read from the bundle's files instead of
 * the store's tables: every chain, who signed it, the cross-references and the combined
 * checkpoints, with the same findings and messages ("the bundle" where they say "the store").
 *
 * The witnesses' cosignatures on the group log (group-witness-cosignatures.jsonl) are held to the
 * group log as the bundle gives it: unfiltered, its combined checkpoints (every one, as in the
 * store); filtered, group-log.bin, the leaf of every combined checkpoint when the bundle was cut,
 * each combined checkpoint the bundle carries being the leaf at its place. A
 * bundle exported before these files existed carries no cosignatures, and says so under
 * `--witness-key`.
 *
 * What the bundle's files are is checked here: each line read, each chain's hashes where the
 * manifest says, no event twice. And that the gateway which exported and signed the bundle is one
 * of the trusted chains, so a bundle cannot speak for a group its signer is not part of.
 */
import { GROUP_BUNDLE_FILES, type BundleEvent, type BundleManifest, type GroupSection } from '../bundle-format';
import { publicKeyInfo } from '../checkpoint-signer';
import { HASH_SIZE } from '../merkle';
import { parseVerifierKey } from '../signed-note';
import { canonicalPayload } from '../chain';
import type { GatewayRow } from '../shared-store/enrolment';
import type { PgEventRow } from '../shared-store/schema';
import { type GroupLogView, groupLogOf, type GroupWitnessRow, type StoredCombined } from './combined';
import { groupLogLeaf } from '../shared-store/group-log';
import type { NoteVerifier } from '../signed-note';
import { safeParse } from './checks';
import { type ChainEntry, type ChainSource, type SharedStoreFailure, type SharedStoreReport, type StoredChainCheckpoint, verifyChains } from './shared-store';

/** The manifest's group part, when the bundle was exported in a group. */
export function groupSectionOf(files: ReadonlyMap<string, Buffer>): GroupSection | undefined {
  const manifest = safeParse(files.get('manifest.json')?.toString('utf8') ?? '') as Partial<BundleManifest> | undefined;
  return manifest?.group;
}

interface BundleChain {
  hashes: Buffer;
  rows: Map<number, PgEventRow>;
  /** The largest seq with a row. */
  last: number;
}

/** A JSONL file's lines, parsed; each malformed line is reported and skipped. */
function jsonLines(files: ReadonlyMap<string, Buffer>, name: string, bad: (message: string) => void): unknown[] {
  const out: unknown[] = [];
  const text = files.get(name)?.toString('utf8') ?? '';
  text.split('\n').forEach((line, i) => {
    if (!line) return;
    const v = safeParse(line);
    if (v === undefined || v === null || typeof v !== 'object') bad(`${name} line ${i + 1} cannot be read`);
    else out.push(v);
  });
  return out;
}

/** A stored row as the store holds it, from a line of group-events.jsonl (payload and spans back to their canonical text). */
function rowOf(e: BundleEvent): PgEventRow {
  let payload: string | null;
  let spans: string;
  try {
    payload = e.purged ? null : canonicalPayload(e.payload);
    spans = canonicalPayload(e.spans ?? []);
  } catch {
    // what cannot be re-encoded cannot match its payload hash: verify reports the row modified
    payload = '';
    spans = '';
  }
  return { seq: String(e.seq), time: String(e.time), kind: String(e.kind), session: e.session ?? null, actor: e.actor ?? null, connection: e.connection ?? null, payload, purged: !!e.purged, spans, payload_hash: String(e.payloadHash), prev_hash: String(e.prevHash), hash: String(e.hash) };
}

/** The bundle's group files as a ChainSource, and what is wrong with the files themselves. */
export function groupBundleSource(files: ReadonlyMap<string, Buffer>, section: GroupSection): { source: ChainSource; problems: SharedStoreFailure[] } {
  const problems: SharedStoreFailure[] = [];
  const bad = (message: string, chain = '', seq?: number) => problems.push({ chain, ...(seq !== undefined ? { seq } : {}), problem: 'bundle-modified', message });
  for (const name of GROUP_BUNDLE_FILES) if (!files.has(name)) bad(`the bundle lacks ${name}, which its manifest's group part needs`);

  let gateways: GatewayRow[] = [];
  const rawGateways = safeParse(files.get('group-gateways.json')?.toString('utf8') ?? '[]');
  if (Array.isArray(rawGateways)) gateways = rawGateways.filter((g): g is GatewayRow => typeof (g as Partial<GatewayRow>)?.id === 'string' && typeof (g as Partial<GatewayRow>).publicKey === 'string');
  else bad('group-gateways.json cannot be read');

  // Each chain's hashes, in the order the manifest lists the chains.
  const chains = new Map<string, BundleChain>();
  const allHashes = files.get('group-hashes.bin') ?? Buffer.alloc(0);
  const listed = Array.isArray(section.chains) ? section.chains : [];
  const expected = listed.reduce((n, c) => n + (Number.isSafeInteger(c.size) && c.size > 0 ? c.size : 0), 0) * HASH_SIZE;
  if (allHashes.length !== expected) bad(`group-hashes.bin holds ${allHashes.length} bytes, but the manifest's chains need ${expected}`);
  let offset = 0;
  for (const c of listed) {
    const size = Number.isSafeInteger(c.size) && c.size > 0 ? c.size : 0;
    const end = Math.min(offset + size * HASH_SIZE, allHashes.length - (allHashes.length % HASH_SIZE));
    chains.set(c.gateway, { hashes: allHashes.subarray(Math.min(offset, end), end), rows: new Map(), last: 0 });
    offset += size * HASH_SIZE;
  }
  const chainOf = (gateway: string) => chains.get(gateway) ?? chains.set(gateway, { hashes: Buffer.alloc(0), rows: new Map(), last: 0 }).get(gateway)!;

  for (const v of jsonLines(files, 'group-events.jsonl', bad)) {
    const e = v as BundleEvent & { gateway?: unknown };
    if (typeof e.gateway !== 'string' || !Number.isSafeInteger(e.seq) || e.seq < 1) {
      bad('group-events.jsonl has a line that is not an event of a chain');
      continue;
    }
    const chain = chainOf(e.gateway);
    if (chain.rows.has(e.seq)) {
      bad(`chain ${e.gateway} at seq ${e.seq}: group-events.jsonl lists it twice`, e.gateway, e.seq);
      continue;
    }
    chain.rows.set(e.seq, rowOf(e));
    chain.last = Math.max(chain.last, e.seq);
  }

  const checkpoints = new Map<string, StoredChainCheckpoint[]>();
  for (const v of jsonLines(files, 'group-checkpoints.jsonl', bad)) {
    const c = v as Partial<StoredChainCheckpoint & { gateway: string }>;
    if (typeof c.gateway !== 'string' || !Number.isSafeInteger(c.treeSize) || typeof c.note !== 'string') {
      bad('group-checkpoints.jsonl has a line that is not a checkpoint of a chain');
      continue;
    }
    const list = checkpoints.get(c.gateway) ?? checkpoints.set(c.gateway, []).get(c.gateway)!;
    list.push({ treeSize: c.treeSize!, time: Number(c.time), rootHash: String(c.rootHash), note: c.note });
  }
  for (const list of checkpoints.values()) list.sort((a, b) => a.treeSize - b.treeSize || a.time - b.time);

  const combined: StoredCombined[] = [];
  for (const v of jsonLines(files, 'group-combined.jsonl', bad)) {
    const c = v as Partial<StoredCombined>;
    if (typeof c.maker !== 'string' || typeof c.note !== 'string' || !Array.isArray(c.cosignatures)) {
      bad('group-combined.jsonl has a line that is not a combined checkpoint');
      continue;
    }
    combined.push({ interval: Number(c.interval), maker: c.maker, madeAt: Number(c.madeAt), chains: Number(c.chains), rootHash: String(c.rootHash), note: c.note, ranges: '', cosignatures: c.cosignatures });
  }
  combined.sort((a, b) => a.interval - b.interval);

  // The group log: an unfiltered bundle carries every combined checkpoint, so they are the log, as
  // the store's are; a filtered one has group-log.bin's leaves, each carried combined checkpoint at its place among them.
  let groupLog: GroupLogView = groupLogOf(combined);
  const logBin = files.get('group-log.bin');
  if (logBin && !section.full) {
    const leaves: Buffer[] = [];
    for (let at = 0; at + HASH_SIZE <= logBin.length; at += HASH_SIZE) leaves.push(logBin.subarray(at, at + HASH_SIZE));
    if (logBin.length % HASH_SIZE || (section.groupLog !== undefined && leaves.length !== section.groupLog)) bad(`group-log.bin holds ${logBin.length} bytes, but the manifest's group log of ${section.groupLog ?? '?'} combined checkpoints needs ${(section.groupLog ?? 0) * HASH_SIZE}`);
    const place = new Map(leaves.map((l, i) => [l.toString('hex'), i + 1]));
    const carried = new Map<number, StoredCombined>();
    let previous = 0;
    let placed = true;
    for (const c of combined) {
      const i = place.get(groupLogLeaf(c.note).toString('hex'));
      const label = `the combined checkpoint of ${Number.isFinite(c.madeAt) ? new Date(c.madeAt).toISOString() : '?'} (made by ${c.maker})`;
      if (i === undefined || i <= previous) {
        bad(`group-combined.jsonl: ${label} is not ${i === undefined ? 'in the group log of group-log.bin' : `after combined checkpoint #${previous} in the group log of group-log.bin`}`);
        placed = false;
      } else {
        carried.set(i, c);
        previous = i;
      }
    }
    if (placed && leaves.length && !carried.has(leaves.length)) bad(`group-combined.jsonl lacks the newest combined checkpoint of the group log (#${leaves.length} in group-log.bin)`);
    groupLog = { leaves, at: (i) => carried.get(i) };
  }
  let witnessRows: GroupWitnessRow[] | undefined;
  if (files.has('group-witness-cosignatures.jsonl')) {
    witnessRows = [];
    for (const v of jsonLines(files, 'group-witness-cosignatures.jsonl', bad)) {
      const r = v as Partial<GroupWitnessRow>;
      if (typeof r.witness !== 'string' || typeof r.keyId !== 'string' || !Number.isSafeInteger(r.treeSize) || typeof r.checkpoint !== 'string' || typeof r.signature !== 'string') {
        bad('group-witness-cosignatures.jsonl has a line that is not a witness cosignature');
        continue;
      }
      witnessRows.push({ witness: r.witness, keyId: r.keyId, treeSize: r.treeSize!, checkpoint: r.checkpoint, signature: r.signature, cosignedAt: Number(r.cosignedAt) });
    }
  }

  const hashAt = (chain: BundleChain | undefined, seq: number): string | undefined => (chain && seq >= 1 && seq * HASH_SIZE <= chain.hashes.length ? chain.hashes.toString('hex', (seq - 1) * HASH_SIZE, seq * HASH_SIZE) : undefined);

  const source: ChainSource = {
    label: 'the bundle',
    gateways: async () => gateways,
    chainIds: async () => new Set([...[...chains].filter(([, c]) => c.hashes.length || c.rows.size).map(([id]) => id), ...checkpoints.keys()]),
    combined: async () => combined,
    ...(witnessRows ? { groupWitnessRows: async () => witnessRows } : {}),
    groupLog: async () => groupLog,
    group: async () => section.group,
    checkpoints: async (gateway) => checkpoints.get(gateway) ?? [],
    entries: async (gateway, from, limit) => {
      const chain = chains.get(gateway);
      if (!chain) return [];
      const out: ChainEntry[] = [];
      const size = chain.hashes.length / HASH_SIZE;
      for (let seq = from; seq <= Math.max(size, chain.last) && out.length < limit; seq++) {
        const row = chain.rows.get(seq);
        const hash = hashAt(chain, seq);
        if (row) out.push({ seq, hash, row });
        // A filtered bundle carries every other seq by its hash; in a full one a missing row is a gap.
        else if (!section.full && hash !== undefined) out.push({ seq, hash });
      }
      return out;
    },
    hashesAt: async (refs) => {
      const out = new Map<string, string>();
      for (const r of refs) {
        const hash = hashAt(chains.get(r.gateway), r.seq);
        if (hash !== undefined) out.set(`${r.gateway} ${r.seq}`, hash);
      }
      return out;
    },
  };
  return { source, problems };
}

/**
 * Verifies the group part of a bundle: every chain, the references and the combined checkpoints
 * (as `verify --store`), the files it is read from, and that the bundle's own signer is a trusted
 * chain. `pinned`: the keys the auditor trusts (`--keys`); without, the first enrolled gateway.
 * `witnesses` (`--witness-key`): each must have cosigned the group log the bundle carries.
 */
export async function verifyGroupBundle(files: ReadonlyMap<string, Buffer>, path: string, section: GroupSection, opts: { pinned?: Set<string>; witnesses?: NoteVerifier[] } = {}): Promise<SharedStoreReport> {
  const { source, problems } = groupBundleSource(files, section);
  const report = await verifyChains(source, { store: path, pinned: opts.pinned, witnesses: opts.witnesses });
  report.failures.unshift(...problems);
  let signer: string | undefined;
  try {
    signer = publicKeyInfo(parseVerifierKey(files.get('public-key.txt')?.toString('utf8').split('\n')[0] ?? '')).fingerprint;
  } catch {
    signer = undefined;
  }
  const own = report.chains.find((c) => c.gateway === signer);
  if (!signer || !own?.trust) {
    report.failures.push({
      chain: signer ?? '',
      problem: 'unapproved-signer',
      message: `the bundle was exported and signed by ${signer ?? 'an unreadable key'}, which is not a trusted gateway of the group it carries${own ? ` (chain ${signer} is not trusted)` : ' (no chain of the bundle is its)'}`,
    });
  }
  report.ok = report.failures.length === 0;
  return report;
}
