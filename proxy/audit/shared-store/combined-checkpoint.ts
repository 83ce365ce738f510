/**
 * The group's combined checkpoint (docs/SCALE-OUT.md, "The log's shape"): one signed note that
 * commits to every gateway's chain at once. Any gateway may make one every
 * `audit.groupCheckpointInterval` (the first to claim the interval's row wins); every other gateway
 * cosigns it once it has checked, against the store's rows, that each chain's head extends the head
 * it last signed and the head in the checkpoint before (combined-worker.ts).
 *
 *   custody-group/<group id>
 *   <number of chains>
 *   <base64 RFC 6962 root of the leaves>
 *   time <RFC 3339>
 *   key <maker's fingerprint>
 *   chain <gateway id> <tree size> <base64 root>        one line a chain, sorted by gateway id
 *
 * Each leaf is the UTF-8 text of a `chain` line (leaf hash SHA-256(0x00 ‖ line)), so the root commits
 * to every (gateway id, tree size, root) and each chain's head can be read on its own. The maker
 * signs the note with its checkpoint key; the others add C2SP tlog-cosignature/v1 lines under theirs
 * (cosignature.ts), kept in `custody_combined_cosignatures`.
 */
import type pg from 'pg';
import { GENESIS_HASH } from '../chain';
import { cosignerKeyId } from '../cosignature';
import { emptyRoot, leafHash, MerkleAccumulator, MerkleTree, rootOfLeafHashes, verifyConsistency } from '../merkle';
import { formatCheckpointText, type NoteVerifier, parseCheckpointText, parseNote, verifyNote } from '../signed-note';
import type { GroupCheckpointRefusedPayload } from '../../../shared/events';
import { type GatewayRow, listGateways, rowProblem, rowVerifier } from './enrolment';

export const COMBINED_ORIGIN_PREFIX = 'custody-group/';

/** One chain's head as a combined checkpoint commits to it. */
export interface ChainHead {
  gateway: string;
  size: number;
  root: Buffer;
}

export interface CombinedBody {
  group: string;
  /** When the maker signed it (the `time` line). */
  time: number;
  /** The maker's id (the `key` line). */
  maker: string;
  rootHash: Buffer;
  /** Sorted by gateway id. */
  heads: ChainHead[];
}

const CHAIN_LINE = /^chain (SHA256:[A-Za-z0-9+/]{43}) (0|[1-9][0-9]*) ([A-Za-z0-9+/]{43}=)$/;

export function chainLine(h: ChainHead): string {
  return `chain ${h.gateway} ${h.size} ${h.root.toString('base64')}`;
}

export function sortHeads(heads: readonly ChainHead[]): ChainHead[] {
  return [...heads].sort((a, b) => (a.gateway < b.gateway ? -1 : a.gateway > b.gateway ? 1 : 0));
}

/** RFC 6962 root of the leaves: each the text of a `chain` line, in the order given (sorted by id). */
export function combinedRoot(heads: readonly ChainHead[]): Buffer {
  return heads.length ? rootOfLeafHashes(Buffer.concat(heads.map((h) => leafHash(Buffer.from(chainLine(h), 'utf8'))))) : emptyRoot();
}

/** The note text of a combined checkpoint (heads sorted here). */
export function formatCombinedText(group: string, time: number, maker: string, heads: readonly ChainHead[]): string {
  const sorted = sortHeads(heads);
  return `${formatCheckpointText({ origin: `${COMBINED_ORIGIN_PREFIX}${group}`, treeSize: sorted.length, rootHash: combinedRoot(sorted), time, key: maker })}${sorted.map((h) => `${chainLine(h)}\n`).join('')}`;
}

/** Reads a combined checkpoint's text; throws naming what is wrong (the root is recomputed from the chain lines). */
export function parseCombinedText(text: string): CombinedBody {
  const body = parseCheckpointText(text);
  if (!body.origin.startsWith(COMBINED_ORIGIN_PREFIX)) throw new Error(`its origin "${body.origin}" is not ${COMBINED_ORIGIN_PREFIX}<group id>`);
  if (body.time === undefined || body.key === undefined) throw new Error('it has no time or key line');
  const heads: ChainHead[] = [];
  for (const line of text.split('\n').slice(3, -1)) {
    if (!line.startsWith('chain ')) continue;
    const m = CHAIN_LINE.exec(line);
    if (!m) throw new Error(`malformed chain line "${line.slice(0, 60)}"`);
    const head = { gateway: m[1]!, size: Number(m[2]), root: Buffer.from(m[3]!, 'base64') };
    if (!Number.isSafeInteger(head.size)) throw new Error(`chain ${head.gateway}: tree size out of range`);
    const last = heads[heads.length - 1];
    if (last && last.gateway >= head.gateway) throw new Error('its chain lines are not sorted by gateway id, or name a chain twice');
    heads.push(head);
  }
  if (heads.length !== body.treeSize) throw new Error(`it says ${body.treeSize} chains but lists ${heads.length}`);
  if (!combinedRoot(heads).equals(body.rootHash)) throw new Error('its root is not the root of its chain lines');
  return { group: body.origin.slice(COMBINED_ORIGIN_PREFIX.length), time: body.time, maker: body.key, rootHash: body.rootHash, heads };
}

/** A member's checkpoint key as a cosigner (tlog-cosignature/v1: the key id over type 0x04). */
export function cosignerVerifier(row: Pick<GatewayRow, 'publicKey' | 'keyName'>): NoteVerifier {
  const v = rowVerifier(row);
  return { ...v, keyId: cosignerKeyId(v.name, v.publicKey) };
}

/** A row of `custody_combined_checkpoints`. */
export interface CombinedRow {
  interval: number;
  maker: string;
  madeAt: number;
  chains: number;
  rootHash: string;
  note: string;
  ranges: string;
}

const COMBINED_COLUMNS = 'interval_start, maker, made_at, chains, root_hash, note, ranges';
type RawCombined = { interval_start: string; maker: string; made_at: string; chains: number; root_hash: string; note: string; ranges: string };
const toCombined = (r: RawCombined): CombinedRow => ({ interval: Number(r.interval_start), maker: r.maker, madeAt: Number(r.made_at), chains: Number(r.chains), rootHash: r.root_hash, note: r.note, ranges: r.ranges });

/** The newest combined checkpoint (before interval `before`, when given). */
export async function latestCombined(c: pg.ClientBase, before?: number): Promise<CombinedRow | undefined> {
  const r =
    before === undefined
      ? await c.query<RawCombined>(`SELECT ${COMBINED_COLUMNS} FROM custody_combined_checkpoints ORDER BY interval_start DESC LIMIT 1`)
      : await c.query<RawCombined>(`SELECT ${COMBINED_COLUMNS} FROM custody_combined_checkpoints WHERE interval_start < $1 ORDER BY interval_start DESC LIMIT 1`, [before]);
  return r.rows[0] && toCombined(r.rows[0]);
}

/** The newest combined checkpoint gateway `id` made or cosigned, with its cosignature when it cosigned it. */
export async function latestSignedBy(c: pg.ClientBase, id: string): Promise<{ row: CombinedRow; cosignature?: { line: string; at: number } } | undefined> {
  const r = (
    await c.query<RawCombined & { cosignature: string | null; cosigned_at: string | null }>(
      `SELECT ${COMBINED_COLUMNS.split(', ').map((col) => `c.${col}`).join(', ')}, s.cosignature, s.cosigned_at
         FROM custody_combined_checkpoints c LEFT JOIN custody_combined_cosignatures s ON s.interval_start = c.interval_start AND s.gateway = $1
        WHERE c.maker = $1 OR s.gateway IS NOT NULL ORDER BY c.interval_start DESC LIMIT 1`,
      [id],
    )
  ).rows[0];
  if (!r) return undefined;
  return { row: toCombined(r), ...(r.cosignature !== null ? { cosignature: { line: r.cosignature, at: Number(r.cosigned_at) } } : {}) };
}

/**
 * Every combined checkpoint, oldest first, with its cosignatures (verify); with `window`, those made
 * within it and the newest (what a bundle exported for that window carries).
 */
export async function allCombined(c: pg.ClientBase, window?: { from?: number; to?: number }): Promise<(CombinedRow & { cosignatures: { gateway: string; line: string; at: number }[] })[]> {
  const where = window ? 'WHERE (made_at >= $1 AND made_at <= $2) OR interval_start = (SELECT max(interval_start) FROM custody_combined_checkpoints)' : '';
  const args = window ? [window.from ?? 0, window.to ?? Number.MAX_SAFE_INTEGER] : [];
  const rows = (await c.query<RawCombined>(`SELECT ${COMBINED_COLUMNS} FROM custody_combined_checkpoints ${where} ORDER BY interval_start`, args)).rows.map(toCombined);
  const cos = new Map<number, { gateway: string; line: string; at: number }[]>();
  const cosWhere = window ? 'WHERE interval_start = ANY($1::bigint[])' : '';
  const cosArgs = window ? [rows.map((r) => r.interval)] : [];
  for (const s of (await c.query<{ interval_start: string; gateway: string; cosignature: string; cosigned_at: string }>(`SELECT interval_start, gateway, cosignature, cosigned_at FROM custody_combined_cosignatures ${cosWhere} ORDER BY interval_start, gateway`, cosArgs)).rows) {
    const k = Number(s.interval_start);
    (cos.get(k) ?? cos.set(k, []).get(k)!).push({ gateway: s.gateway, line: s.cosignature, at: Number(s.cosigned_at) });
  }
  return rows.map((r) => ({ ...r, cosignatures: cos.get(r.interval) ?? [] }));
}

/**
 * The chains a combined checkpoint covers: enrolled or approved rows whose key is what they claim,
 * and those of gateways removed since (a removed gateway's chain stays evidence, and stays committed
 * to; the removed gateway itself makes and cosigns nothing more: combined-worker.ts).
 */
export async function storeMembers(c: pg.ClientBase): Promise<Map<string, GatewayRow>> {
  return new Map((await listGateways(c)).filter((g) => (g.status === 'enrolled' || g.status === 'approved' || g.status === 'removed') && !rowProblem(g)).map((g) => [g.id, g]));
}

/** A combined checkpoint's body when its maker is a member and signed it, or why not. */
export function openCombined(row: CombinedRow, members: ReadonlyMap<string, GatewayRow>, group: string): { body: CombinedBody } | { problem: string } {
  const maker = members.get(row.maker);
  if (!maker) return { problem: `its maker ${row.maker} is not a member of the group` };
  try {
    const check = verifyNote(parseNote(row.note), rowVerifier(maker));
    if (!check.ok) return { problem: `it is not signed by its maker's key (${check.reason})` };
    const body = parseCombinedText(check.text);
    if (body.maker !== row.maker) return { problem: `its key line names ${body.maker}, not its maker ${row.maker}` };
    if (body.group !== group) return { problem: `it is for group ${body.group}, not ${group}` };
    return { body };
  } catch (err) {
    return { problem: `it cannot be read (${(err as Error).message})` };
  }
}

// ---- where a gateway stands: the chains as it last signed them ------------------------------------

/** A chain as a gateway last checked it: its size, root, last row's hash and compact range (to extend it). */
export interface ChainState {
  size: number;
  root: Buffer;
  /** The hash of row `size` (hex), '' for an empty chain. */
  head: string;
  range: { hash: Buffer; height: number }[];
}

export const EMPTY_CHAIN: ChainState = { size: 0, root: emptyRoot(), head: '', range: [] };

/** The `ranges` column: per chain, its last row's hash and compact range. */
export function encodeRanges(states: ReadonlyMap<string, ChainState>): string {
  return JSON.stringify(Object.fromEntries([...states].map(([id, s]) => [id, { head: s.head, range: s.range.map((r) => [r.height, r.hash.toString('base64')]) }])));
}

/**
 * The chain states a signed combined checkpoint stands for, from its `ranges` column, each checked
 * against the signed head (the range must cover its size and fold to its root); undefined when any
 * does not.
 */
export function decodeRanges(body: CombinedBody, ranges: string): Map<string, ChainState> | undefined {
  let parsed: Record<string, { head?: unknown; range?: unknown }>;
  try {
    parsed = JSON.parse(ranges) as typeof parsed;
  } catch {
    return undefined;
  }
  const out = new Map<string, ChainState>();
  for (const h of body.heads) {
    const r = parsed[h.gateway];
    if (!r || typeof r.head !== 'string' || !Array.isArray(r.range)) return undefined;
    const acc = new MerkleAccumulator();
    const range: ChainState['range'] = [];
    try {
      for (const [height, hash] of r.range as [number, string][]) {
        const buf = Buffer.from(String(hash), 'base64');
        if (buf.length !== 32 || (range.length && height >= range[range.length - 1]!.height)) return undefined;
        acc.pushSubtree(buf, height);
        range.push({ hash: buf, height });
      }
    } catch {
      return undefined;
    }
    if (acc.size !== h.size || !acc.root().equals(h.root) || (h.size > 0) !== (r.head.length === 64)) return undefined;
    out.set(h.gateway, { size: h.size, root: h.root, head: r.head, range });
  }
  return out;
}

// ---- checking chains against the store --------------------------------------------------------------

export interface ChainProblem {
  chain: string;
  problem: GroupCheckpointRefusedPayload['problem'];
  message: string;
  committed?: { size: number; rootHash: string };
  found?: { size: number };
}

const PAGE = 10_000;

interface Extension {
  state: ChainState;
  /** Roots at the sizes asked for that the rows reached. */
  rootsAt: Map<number, Buffer>;
}

const hex = (b: Buffer) => b.toString('hex');

/**
 * Reads chain `gateway`'s rows from the store after `base` (which must still be there: row
 * `base.size` with hash `base.head`), up to `to` or its end, checking each follows the one before;
 * returns the chain there, with the roots at `sizes`, or what is wrong. When the chain grew, the
 * RFC 6962 consistency proof from `base` to the new head is computed from the rows and verified.
 * Run inside one snapshot (REPEATABLE READ), so rows shipped meanwhile cannot look like a gap.
 */
export async function extendChain(c: pg.ClientBase, gateway: string, base: ChainState, opts: { to?: number; sizes?: readonly number[] } = {}): Promise<Extension | ChainProblem> {
  const committed = { size: base.size, rootHash: hex(base.root) };
  const to = opts.to ?? Number.MAX_SAFE_INTEGER;
  if (to < base.size) return { chain: gateway, problem: 'shorter', committed, found: { size: to }, message: `chain ${gateway} is at ${to} events in the combined checkpoint, fewer than the ${base.size} this gateway last signed for it` };
  const wanted = new Set(opts.sizes ?? []);
  const rootsAt = new Map<number, Buffer>();
  const acc = new MerkleAccumulator();
  for (const r of base.range) acc.pushSubtree(r.hash, r.height);
  if (wanted.has(acc.size)) rootsAt.set(acc.size, acc.root());
  const added: Buffer[] = [];
  let expect = base.size > 0 ? base.size : 1;
  let prev = base.size > 0 ? base.head : GENESIS_HASH;
  for (;;) {
    const rows = (await c.query<{ seq: string; prev_hash: string; hash: string }>('SELECT seq, prev_hash, hash FROM custody_events WHERE gateway = $1 AND seq >= $2 AND seq <= $3 ORDER BY seq LIMIT $4', [gateway, expect, to, PAGE])).rows;
    for (const r of rows) {
      const seq = Number(r.seq);
      if (seq === base.size && base.size > 0) {
        // The row the last signed checkpoint ended at: still there, still the same.
        if (r.hash !== base.head) return { chain: gateway, problem: 'inconsistent', committed, message: `seq ${seq} of chain ${gateway} is no longer the row the combined checkpoint this gateway last signed ended at (its hash changed)` };
        expect++;
        continue;
      }
      if (seq !== expect) {
        if (expect === base.size) return deletedTail(c, gateway, base);
        return { chain: gateway, problem: 'missing-rows', committed, found: { size: expect - 1 }, message: `rows ${expect}–${seq - 1} of chain ${gateway} are missing from the store (later rows are there): they were deleted` };
      }
      if (r.prev_hash !== prev) return { chain: gateway, problem: 'inconsistent', committed, found: { size: expect - 1 }, message: `seq ${seq} of chain ${gateway} does not follow seq ${seq - 1} in the store (its previous hash)` };
      const h = Buffer.from(r.hash, 'hex');
      acc.pushEventHash(h);
      if (base.size > 0) added.push(h);
      if (wanted.has(acc.size)) rootsAt.set(acc.size, acc.root());
      prev = r.hash;
      expect++;
    }
    if (rows.length < PAGE) break;
  }
  if (base.size > 0 && expect === base.size) return deletedTail(c, gateway, base);
  const size = expect - 1;
  if (opts.to !== undefined && size < opts.to) {
    return { chain: gateway, problem: 'shorter', committed, found: { size }, message: `the store holds chain ${gateway} only up to seq ${size}, but the combined checkpoint commits to ${opts.to} events` };
  }
  const root = acc.root();
  if (added.length) {
    // The consistency proof from the signed head to the new one, from the store's rows.
    const tree = MerkleTree.continuing(base.range, base.size, Buffer.concat(added));
    const proof = tree.consistencyProof(base.size);
    if (!tree.root().equals(root) || !verifyConsistency(base.size, size, base.root, root, proof)) {
      return { chain: gateway, problem: 'inconsistent', committed, found: { size }, message: `chain ${gateway} at ${size} events is not consistent with the ${base.size} events this gateway last signed for it` };
    }
  }
  return { state: { size, root, head: size > 0 ? prev : '', range: acc.subtrees() }, rootsAt };
}

async function deletedTail(c: pg.ClientBase, gateway: string, base: ChainState): Promise<ChainProblem> {
  const end = Number((await c.query<{ n: string | null }>('SELECT max(seq) AS n FROM custody_events WHERE gateway = $1 AND seq < $2', [gateway, base.size])).rows[0]?.n ?? 0);
  return {
    chain: gateway,
    problem: 'shorter',
    committed: { size: base.size, rootHash: hex(base.root) },
    found: { size: end },
    message: `the store's copy of chain ${gateway} ends at seq ${end}, but the combined checkpoint this gateway last signed committed to ${base.size} events: seq ${end + 1}–${base.size} were deleted from its tail`,
  };
}

export interface ChainsChecked {
  heads: ChainHead[];
  states: Map<string, ChainState>;
}

/**
 * The check a gateway makes before it signs a combined checkpoint, against the store's rows, in
 * one snapshot: every chain extends what this gateway last signed (`anchor`) and the head in the
 * checkpoint before (`previous`). `target` is the checkpoint to cosign (each of its heads must be
 * what the rows give); without it, the heads are read from the store (to make one), and a chain
 * must also hold every row its gateway shipped. Returns the heads and chain states, or the first
 * problem found.
 */
export async function checkChains(
  c: pg.ClientBase,
  input: { members: ReadonlyMap<string, GatewayRow>; anchor: ReadonlyMap<string, ChainState>; previous?: CombinedBody; target?: CombinedBody },
): Promise<ChainsChecked | { problem: ChainProblem }> {
  const { members, anchor, previous, target } = input;
  const ids = target ? target.heads.map((h) => h.gateway) : [...members.keys()].sort();
  for (const id of ids) if (!members.has(id)) return { problem: { chain: id, problem: 'not-a-member', message: `chain ${id} is in the combined checkpoint but is not an enrolled or approved gateway of the store` } };
  const listed = new Set(ids);
  for (const [id, s] of anchor) {
    if (!listed.has(id)) return { problem: { chain: id, problem: 'dropped', committed: { size: s.size, rootHash: hex(s.root) }, message: `chain ${id}, at ${s.size} events in the combined checkpoint this gateway last signed, is ${target ? 'missing from this one' : 'no longer a member of the store'}` } };
  }
  for (const h of previous?.heads ?? []) {
    if (!listed.has(h.gateway)) return { problem: { chain: h.gateway, problem: 'dropped', committed: { size: h.size, rootHash: hex(h.root) }, message: `chain ${h.gateway}, at ${h.size} events in the previous combined checkpoint, is ${target ? 'missing from this one' : 'no longer a member of the store'}` } };
  }
  const heads: ChainHead[] = [];
  const states = new Map<string, ChainState>();
  for (const id of ids) {
    const base = anchor.get(id) ?? EMPTY_CHAIN;
    const before = previous?.heads.find((h) => h.gateway === id);
    const want = target?.heads.find((h) => h.gateway === id);
    const ext = await extendChain(c, id, base, { ...(want ? { to: want.size } : {}), sizes: before ? [before.size] : [] });
    if (!('state' in ext)) return { problem: ext };
    const { state } = ext;
    if (want && !want.root.equals(state.root)) {
      return { problem: { chain: id, problem: 'inconsistent', committed: { size: base.size, rootHash: hex(base.root) }, found: { size: state.size }, message: `the store's first ${state.size} rows of chain ${id} do not give the root the combined checkpoint says` } };
    }
    const shipped = members.get(id)!.shippedSeq;
    if (!target && state.size < shipped) {
      return { problem: { chain: id, problem: 'shorter', committed: { size: base.size, rootHash: hex(base.root) }, found: { size: state.size }, message: `the store's copy of chain ${id} ends at seq ${state.size}, but its gateway shipped it up to seq ${shipped}: seq ${state.size + 1}–${shipped} were deleted from its tail` } };
    }
    if (before) {
      const prevCommitted = { size: before.size, rootHash: hex(before.root) };
      if (state.size < before.size) return { problem: { chain: id, problem: 'shorter', committed: prevCommitted, found: { size: state.size }, message: `chain ${id} is at ${state.size} events, fewer than the ${before.size} the previous combined checkpoint committed to` } };
      const root = ext.rootsAt.get(before.size);
      if (root && !root.equals(before.root)) return { problem: { chain: id, problem: 'inconsistent', committed: prevCommitted, found: { size: state.size }, message: `the store's first ${before.size} rows of chain ${id} no longer give the root the previous combined checkpoint committed to` } };
    }
    heads.push({ gateway: id, size: state.size, root: state.root });
    states.set(id, state);
  }
  return { heads, states };
}
