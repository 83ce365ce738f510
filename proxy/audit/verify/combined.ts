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
import { emptyRoot } from '../merkle';
import { parseNote, verifyNote } from '../signed-note';
import { findCosignature } from '../cosignature';
import { allCombined, type CombinedBody, cosignerVerifier, parseCombinedText } from '../shared-store/combined-checkpoint';
import { type GatewayRow, rowVerifier } from '../shared-store/enrolment';

/** A problem found (shared-store.ts reports it with the chains' own). */
export interface CombinedFailure {
  chain: string;
  seq?: number;
  problem: 'truncated' | 'inconsistent' | 'modified' | 'signature-invalid' | 'unapproved-signer' | 'unknown-chain';
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
