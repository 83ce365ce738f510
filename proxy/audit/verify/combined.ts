/**
 * `custody verify --store`: the group's combined checkpoints (docs/SCALE-OUT.md, "The log's shape").
 * Each must be signed by its maker's key, the maker and every cosigner must be gateways the verifier
 * trusts (shared-store.ts derives them), each cosignature must verify, every chain it lists must
 * still be in the store up to the size it committed to with the root it committed to, and no chain
 * may shrink or vanish from one combined checkpoint to the next. A tail deleted after a combined
 * checkpoint covered it is reported as `truncated`, naming the chain, the first missing seq and the
 * checkpoint that committed to it.
 */
import type pg from 'pg';
import { emptyRoot, MerkleAccumulator } from '../merkle';
import { keyIdHex, type NoteVerifier, parseCheckpointText, parseNote, verifyNote } from '../signed-note';
import { findCosignature } from '../cosignature';
import { allCombined, type CombinedBody, cosignerVerifier, parseCombinedText } from '../shared-store/combined-checkpoint';
import { type GatewayRow, rowVerifier } from '../shared-store/enrolment';
import { groupLogLeaf, groupLogOrigin } from '../shared-store/group-log';
import { VerifyInputError } from './checks';

/** A problem found (shared-store.ts reports it with the chains' own). */
export interface CombinedFailure {
  chain: string;
  seq?: number;
  problem: 'truncated' | 'inconsistent' | 'modified' | 'signature-invalid' | 'unapproved-signer' | 'unknown-chain' | 'unwitnessed' | 'deleted' | 'replaced';
  message: string;
}

export type StoredCombined = Awaited<ReturnType<typeof allCombined>>[number];

/** What verify saw of one chain that the combined checkpoints are held to. */
export interface ChainFacts {
  trusted: boolean;
  /** The last seq up to which the chain's rows are intact and contiguous. */
  reached: number;
  /** The chain's root (base64) at the sizes `wantedSizes` asked for, where its rows reach them. */
  rootsAt: Map<number, string>;
}

export interface CombinedReport {
  /** Combined checkpoints whose maker's signature verified. */
  checked: number;
  /** Valid cosignatures across them. */
  cosignatures: number;
  latest?: { time: number; maker: string; chains: number; cosigners: string[] };
}

/** A witness's cosignature on a head of the group log, as `custody_group_witness_cosignatures` keeps it. */
export interface GroupWitnessRow {
  witness: string;
  keyId: string;
  treeSize: number;
  /** The note text cosigned, and the witness's cosignature line. */
  checkpoint: string;
  signature: string;
  cosignedAt: number;
}

/** What each required witness (--witness-key) holds the group log to. */
export interface GroupWitnessReport {
  witness: string;
  /** The largest head it cosigned that the store still gives, and when. */
  treeSize: number;
  cosignedAt: number;
  /** Combined checkpoints in the store (the group log's size now). */
  of: number;
}

/** Every witness cosignature on the group log (none in a store from before migration 12). */
export async function readGroupWitnessRows(client: pg.ClientBase): Promise<GroupWitnessRow[]> {
  const t = await client.query<{ t: string | null }>("SELECT to_regclass('custody_group_witness_cosignatures')::text AS t");
  if (!t.rows[0]?.t) return [];
  return (
    await client.query<{ witness: string; key_id: string; tree_size: string; checkpoint: string; signature: string; cosigned_at: string }>(
      'SELECT witness, key_id, tree_size, checkpoint, signature, cosigned_at FROM custody_group_witness_cosignatures ORDER BY tree_size',
    )
  ).rows.map((r) => ({ witness: r.witness, keyId: r.key_id, treeSize: Number(r.tree_size), checkpoint: r.checkpoint, signature: r.signature, cosignedAt: Number(r.cosigned_at) }));
}

/**
 * `--ask-witness URL`: what the witness at `url` itself last cosigned of the group log
 * (`GET /checkpoint?origin=…`, witness.ts), as a row like those the store keeps, checked against
 * the witness keys given. Held to it, the store cannot hide combined checkpoints deleted together
 * with the newest cosignatures it keeps. Throws (VerifyInputError) when the witness cannot be
 * asked, knows nothing of this log, or answers with a cosignature none of the keys verifies.
 */
export async function askWitness(url: string, group: string, witnesses: readonly NoteVerifier[]): Promise<GroupWitnessRow> {
  const origin = groupLogOrigin(group);
  const at = `${url.replace(/\/+$/, '')}/checkpoint?origin=${encodeURIComponent(origin)}`;
  let res: Response;
  try {
    res = await fetch(at, { signal: AbortSignal.timeout(10_000) });
  } catch (err) {
    throw new VerifyInputError(`--ask-witness ${url}: cannot reach the witness (${(err as Error).message})`);
  }
  const body = await res.text();
  if (res.status === 404) throw new VerifyInputError(`--ask-witness ${url}: the witness has cosigned nothing of the group log ${origin}`);
  if (res.status !== 200) throw new VerifyInputError(`--ask-witness ${url}: the witness answered ${res.status}: ${body.trim().slice(0, 200)}`);
  let c: { treeSize?: unknown; checkpoint?: unknown; cosignature?: unknown; cosignedAt?: unknown };
  try {
    c = JSON.parse(body) as typeof c;
  } catch {
    throw new VerifyInputError(`--ask-witness ${url}: not a witness's answer (expected JSON from GET /checkpoint)`);
  }
  if (typeof c.checkpoint !== 'string' || typeof c.cosignature !== 'string' || !Number.isSafeInteger(c.treeSize)) throw new VerifyInputError(`--ask-witness ${url}: the answer lacks the checkpoint, its size or the cosignature`);
  const w = witnesses.find((k) => findCosignature(c.checkpoint as string, c.cosignature as string, k).ok);
  if (!w) throw new VerifyInputError(`--ask-witness ${url}: its cosignature verifies under none of the --witness-key keys`);
  return { witness: w.name, keyId: keyIdHex(w.keyId), treeSize: c.treeSize as number, checkpoint: c.checkpoint, signature: c.cosignature, cosignedAt: typeof c.cosignedAt === 'number' ? c.cosignedAt : 0 };
}

/**
 * The group log as a source holds it: each combined checkpoint's leaf, oldest first, and the
 * combined checkpoint at a 1-based position where the source carries it. A store, and an
 * unfiltered bundle, carry every one; a filtered bundle carries the leaves of all of them
 * (group-log.bin) and the combined checkpoints of its window.
 */
export interface GroupLogView {
  leaves: readonly Buffer[];
  at(i: number): StoredCombined | undefined;
}

/** The group log of a source that carries every combined checkpoint. */
export function groupLogOf(rows: readonly StoredCombined[]): GroupLogView {
  return { leaves: rows.map((r) => groupLogLeaf(r.note)), at: (i) => rows[i - 1] };
}

/**
 * Holds the group's log of combined checkpoints (shared-store/group-log.ts: leaf i = the i-th
 * combined checkpoint's signed note, oldest first) to each required witness: the witness must have
 * cosigned a head of it (`unwitnessed`), and the store must still give, at every size a witness
 * cosigned, the root it cosigned. A witness never cosigns two different logs of one size, so
 * combined checkpoints deleted from the store after a witness saw them are `deleted` (the log is
 * shorter than what it cosigned) or `replaced` (the log reached that size again with others: a
 * fork the witness saw differently), whoever signed the new ones.
 */
export function checkGroupWitnessed(
  log: GroupLogView,
  cosigned: readonly GroupWitnessRow[],
  witnesses: readonly NoteVerifier[],
  ctx: { group: string | undefined; fail: (f: CombinedFailure) => void; where?: string },
): GroupWitnessReport[] {
  const where = ctx.where ?? 'the store';
  const origin = groupLogOrigin(ctx.group ?? '?');
  const out: GroupWitnessReport[] = [];
  const size = log.leaves.length;
  const wanted = new Set(cosigned.map((r) => r.treeSize));
  const rootsAt = new Map<number, string>();
  const acc = new MerkleAccumulator();
  if (wanted.has(0)) rootsAt.set(0, acc.root().toString('hex'));
  for (const leaf of log.leaves) {
    acc.pushLeafHash(leaf);
    if (wanted.has(acc.size)) rootsAt.set(acc.size, acc.root().toString('hex'));
  }
  /** "combined checkpoint #i (made <time> by <maker>)" for a 1-based position in the log (#i alone where the source does not carry it). */
  const named = (i: number) => {
    const r = log.at(i);
    return r ? `#${i} (made ${new Date(r.madeAt).toISOString()} by ${r.maker})` : `#${i}`;
  };
  for (const w of witnesses) {
    const label = `witness ${w.name}`;
    const mine = cosigned.filter((r) => r.witness === w.name && r.keyId === keyIdHex(w.keyId));
    if (!mine.length) {
      ctx.fail({ chain: origin, problem: 'unwitnessed', message: `no head of the group log (${origin}) in ${where} is cosigned by ${label} (its cosignatures were removed, or it never received one)` });
      continue;
    }
    let good: GroupWitnessRow | undefined;
    let replaced: { row: GroupWitnessRow; time?: number } | undefined;
    let deleted: { row: GroupWitnessRow; time?: number } | undefined;
    let broken = false;
    for (const r of mine) {
      let treeSize: number;
      let rootHex: string;
      let time: number | undefined;
      try {
        const c = findCosignature(r.checkpoint, r.signature, w);
        if (!c.ok) throw new Error('the cosignature does not verify (the stored head or signature was altered)');
        const body = parseCheckpointText(r.checkpoint);
        if (body.origin !== origin) throw new Error(`it is a head of log "${body.origin}", not of this group's log (${origin})`);
        if (body.treeSize !== r.treeSize) throw new Error('its row says another size than its cosigned text');
        treeSize = body.treeSize;
        rootHex = body.rootHash.toString('hex');
        time = body.time;
      } catch (err) {
        ctx.fail({ chain: origin, problem: 'signature-invalid', message: `the cosignature by ${label} on the group log's head of ${r.treeSize} combined checkpoints: ${(err as Error).message}` });
        broken = true;
        continue;
      }
      if (treeSize > size) deleted = { row: r, ...(time !== undefined ? { time } : {}) };
      else if (rootsAt.get(treeSize) !== rootHex) replaced = { row: r, ...(time !== undefined ? { time } : {}) };
      else if (!deleted && !replaced) good = r;
    }
    const since = good ? `the log still gives every head it cosigned up to ${good.treeSize} (up to ${named(good.treeSize)})` : 'no head it cosigned is still what the log gives';
    const madeAt = (t: number | undefined, cosignedAt: number) => `${t !== undefined ? `, the newest made ${new Date(t).toISOString()}` : ''} (cosigned ${new Date(cosignedAt).toISOString()})`;
    const span = (from: number, to: number) => (from === to ? `combined checkpoint ${to} was` : `combined checkpoints ${from}–${to} were`);
    if (replaced) {
      const n = replaced.row.treeSize;
      const from = (good?.treeSize ?? 0) + 1;
      ctx.fail({
        chain: origin,
        problem: 'replaced',
        message: `the group log was rewritten after ${label} saw it: it cosigned the head of ${n} combined checkpoints${madeAt(replaced.time, replaced.row.cosignedAt)}, but ${where}'s first ${n} give another root (a fork): ${span(from, n)} deleted or replaced (${where} now holds ${named(from)} there); ${since}`,
      });
    } else if (deleted) {
      const n = Math.max(...mine.map((r) => r.treeSize));
      ctx.fail({
        chain: origin,
        problem: 'deleted',
        message: `${span(size + 1, n)} deleted: ${label} cosigned the group log's head of ${n} combined checkpoints${madeAt(deleted.time, deleted.row.cosignedAt)}, but ${where} holds ${size}${size ? `, the newest ${named(size)}` : ''}; ${since}`,
      });
    } else if (!broken && good) out.push({ witness: w.name, treeSize: good.treeSize, cosignedAt: good.cosignedAt, of: size });
  }
  return out;
}

/** Every combined checkpoint in the store (none in a store from before migration 7). */
export async function readCombined(client: pg.ClientBase): Promise<StoredCombined[]> {
  const t = await client.query<{ t: string | null }>("SELECT to_regclass('custody_combined_checkpoints')::text AS t");
  return t.rows[0]?.t ? allCombined(client) : [];
}

function bodyOf(row: StoredCombined): CombinedBody | undefined {
  try {
    return parseCombinedText(parseNote(row.note).text);
  } catch {
    return undefined;
  }
}

/** The tree sizes of each chain that some combined checkpoint commits to (verify computes their roots). */
export function wantedSizes(rows: readonly StoredCombined[]): Map<string, Set<number>> {
  const out = new Map<string, Set<number>>();
  for (const r of rows) for (const h of bodyOf(r)?.heads ?? []) (out.get(h.gateway) ?? out.set(h.gateway, new Set()).get(h.gateway)!).add(h.size);
  return out;
}

export function checkCombined(
  rows: readonly StoredCombined[],
  ctx: { group: string | undefined; gateways: ReadonlyMap<string, GatewayRow>; chains: ReadonlyMap<string, ChainFacts>; fail: (f: CombinedFailure) => void; /** How messages name where the chains were read: "the store", "the bundle". */ where?: string },
): CombinedReport {
  const { gateways, chains, fail } = ctx;
  const where = ctx.where ?? 'the store';
  const report: CombinedReport = { checked: 0, cosignatures: 0 };
  let previous: { body: CombinedBody; label: string } | undefined;
  /** Per chain: the largest size a combined checkpoint committed to that its rows no longer reach. */
  const beyond = new Map<string, { size: number; label: string; reached: number }>();
  for (const row of rows) {
    const when = new Date(row.madeAt).toISOString();
    let label = `the combined checkpoint of ${when} (made by ${row.maker})`;
    const maker = gateways.get(row.maker);
    if (!maker) {
      fail({ chain: row.maker, problem: 'unknown-chain', message: `${label}: its maker has no gateway row (no key to check it with)` });
      continue;
    }
    if (!chains.get(row.maker)?.trusted) {
      fail({ chain: row.maker, problem: 'unapproved-signer', message: `${label} is signed by a key the verifier does not trust` });
      continue;
    }
    let text: string;
    let body: CombinedBody;
    try {
      const check = verifyNote(parseNote(row.note), rowVerifier(maker));
      if (!check.ok) throw new Error(`it is not signed by its maker's key (${check.reason})`);
      text = check.text;
      body = parseCombinedText(text);
      if (body.maker !== row.maker || body.group !== ctx.group || row.rootHash !== body.rootHash.toString('hex') || row.chains !== body.heads.length) throw new Error('its row says other than its signed text');
    } catch (err) {
      fail({ chain: row.maker, problem: 'signature-invalid', message: `${label}: ${(err as Error).message}` });
      continue;
    }
    const cosigners: string[] = [];
    for (const s of row.cosignatures) {
      const g = gateways.get(s.gateway);
      if (!g || !chains.get(s.gateway)?.trusted) {
        fail({ chain: s.gateway, problem: 'unapproved-signer', message: `${label} carries a cosignature of ${s.gateway}, a key the verifier does not trust` });
        continue;
      }
      let ok = false;
      try {
        ok = findCosignature(text, s.line, cosignerVerifier(g)).ok;
      } catch {
        ok = false;
      }
      if (!ok) fail({ chain: s.gateway, problem: 'signature-invalid', message: `${label}: the cosignature of ${s.gateway} does not verify` });
      else cosigners.push(s.gateway);
    }
    label = `the combined checkpoint of ${when} (made by ${row.maker}, cosigned by ${cosigners.length})`;
    report.checked++;
    report.cosignatures += cosigners.length;
    report.latest = { time: body.time, maker: row.maker, chains: body.heads.length, cosigners };
    if (previous) {
      for (const p of previous.body.heads) {
        const cur = body.heads.find((h) => h.gateway === p.gateway);
        if (!cur) fail({ chain: p.gateway, problem: 'inconsistent', message: `chain ${p.gateway}, at ${p.size} events in ${previous.label}, is missing from ${label}` });
        else if (cur.size < p.size) fail({ chain: p.gateway, seq: cur.size + 1, problem: 'inconsistent', message: `chain ${p.gateway} at seq ${cur.size + 1}: it shrank from ${p.size} events in ${previous.label} to ${cur.size} in ${label}` });
      }
    }
    for (const h of body.heads) {
      const facts = chains.get(h.gateway);
      if (!facts) {
        fail({ chain: h.gateway, problem: 'unknown-chain', message: `${label} lists chain ${h.gateway}, which ${where} has no gateway row for` });
        continue;
      }
      if (h.size > facts.reached) {
        const was = beyond.get(h.gateway);
        if (!was || was.size < h.size) beyond.set(h.gateway, { size: h.size, label, reached: facts.reached });
        continue;
      }
      const root = h.size === 0 ? emptyRoot().toString('base64') : facts.rootsAt.get(h.size);
      if (root !== undefined && root !== h.root.toString('base64')) {
        fail({ chain: h.gateway, seq: h.size, problem: 'modified', message: `chain ${h.gateway} at seq ${h.size}: its first ${h.size} rows no longer give the root ${label} committed to` });
      }
    }
    previous = { body, label };
  }
  for (const [chain, b] of beyond) {
    fail({
      chain,
      seq: b.reached + 1,
      problem: 'truncated',
      message: `chain ${chain} at seq ${b.reached + 1}: ${b.label} committed to ${b.size} events, but ${where}'s rows of that chain reach only seq ${b.reached}: seq ${b.reached + 1}–${b.size} were deleted from the tail`,
    });
  }
  return report;
}
