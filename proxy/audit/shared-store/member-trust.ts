/**
 * Who is a member of the group, as a running gateway proves it (docs/SCALE-OUT.md, "Who may sign:
 * enrolment"): never from the store's gateways table, whose rows anyone who can write to the store
 * can write. A gateway starts from keys it holds locally (its own; those its own chain approved;
 * the gateway that approved it, pinned in its local meta at its first admission: key-sync.ts,
 * LocalTrust) and adds a key only when a `gateway.approved` event naming it sits in the chain of a
 * gateway it already trusts, at a seq covered by a checkpoint of that chain signed with the key it
 * trusts, the chain's hashes up to that checkpoint giving its signed root and the approval's row
 * giving its hash: what `custody verify --keys` relies on (verify/shared-store.ts; its checkpoint
 * signature check, `signedCheckpoints`, is the one used here).
 *
 * The local roots survive a restart, and the keys proven from them are proven again from the store
 * (a checkpoint signed by a trusted key cannot be forged), so a restart never trusts the table.
 */
import type Database from 'better-sqlite3';
import type pg from 'pg';
import { MerkleAccumulator } from '../merkle';
import { signedCheckpoints, type StoredChainCheckpoint } from '../verify/shared-store';
import { keyFingerprint } from '../checkpoint-signer';
import { gatewayRow, type GatewayRow, listGateways, newRemovals, type Removal, rowProblem, rowVerifier } from './enrolment';
import { PG_EVENT_COLUMNS, payloadIntact, type PgEventRow, rowChainHash } from './schema';
import type { LocalTrust, TrustSet } from './key-sync';
import { ADMISSION_META } from './shipper';

/** An event of gateway `by`'s chain, at `seq` with `hash`, approving (or removing) gateway `id`. */
interface Candidate {
  kind: 'approved' | 'removed';
  by: string;
  seq: number;
  hash: string;
  id: string;
}

/** Rows of hashes read at a time. */
const PAGE = 10_000;
/** Events found not to be proven, keyed `kind by seq hash cover`: checked again only once a larger signed checkpoint covers them. */
const refuted = new Set<string>();

/** How many of the checkpoints covering an event are looked at (the smallest first). */
const COVERS = 16;

/**
 * Whether the approval (removal) `a` is proven: `a.by`'s row carries the key `trust` holds for it;
 * a checkpoint of that chain covering `a.seq` is signed with that key (verify's own check,
 * `signedCheckpoints`); the chain's hashes from seq 1 to that size give its signed root (RFC 6962,
 * as `custody verify` computes it), so the row at `a.seq` is the one the key signed; and that
 * row's payload and fields give its hash, and it records the event. Only the hashes of the other
 * rows are read: a row whose payload was changed elsewhere in the chain does not hide an approval
 * the key signed. Undefined when no signed checkpoint covers it yet (asked again later).
 */
async function proven(client: pg.ClientBase, trust: TrustSet, a: Candidate): Promise<{ ok: true; treeSize: number } | { ok: false; why: string } | undefined> {
  if (!trust.has(a.by)) return { ok: false, why: `${a.by} is not a gateway this one trusts` };
  const row = await gatewayRow(client, a.by);
  if (!row || row.publicKey !== trust.publicKey(a.by)) return { ok: false, why: `the store's row of ${a.by} does not carry the key this gateway trusts for it` };
  const covering = (
    await client.query<{ tree_size: string; time: string; root_hash: string; note: string }>('SELECT tree_size, time, root_hash, note FROM custody_checkpoints WHERE gateway = $1 AND tree_size >= $2 ORDER BY tree_size, time LIMIT $3', [a.by, a.seq, COVERS])
  ).rows.map((r) => ({ treeSize: Number(r.tree_size), time: Number(r.time), rootHash: r.root_hash, note: r.note }));
  const cp = signedCheckpoints(covering, rowVerifier(row), () => {})[0];
  if (!cp) return undefined;
  const memo = `${a.kind} ${a.by} ${a.seq} ${a.hash} ${cp.treeSize}`;
  if (refuted.has(memo)) return { ok: false, why: `the row at seq ${a.seq} of ${a.by} is not the one its checkpoint of ${cp.treeSize} events signed, or does not record that event` };
  const why = await provenRow(client, a, cp);
  if (!why) return { ok: true, treeSize: cp.treeSize };
  refuted.add(memo);
  return { ok: false, why };
}

/** Why the row at `a.seq` of `a.by`'s chain is not the one signed checkpoint `cp` covers, recording `a`; undefined when it is. */
async function provenRow(client: pg.ClientBase, a: Candidate, cp: StoredChainCheckpoint): Promise<string | undefined> {
  const acc = new MerkleAccumulator();
  let leaf: string | undefined;
  for (let from = 1; from <= cp.treeSize; ) {
    const page = (await client.query<{ seq: string; hash: string }>('SELECT seq, hash FROM custody_events WHERE gateway = $1 AND seq >= $2 AND seq <= $3 ORDER BY seq LIMIT $4', [a.by, from, cp.treeSize, PAGE])).rows;
    for (const r of page) {
      if (Number(r.seq) !== acc.size + 1) return `rows ${acc.size + 1}–${Number(r.seq) - 1} of ${a.by} are missing from the store`;
      acc.pushEventHashHex(r.hash);
      if (acc.size === a.seq) leaf = r.hash;
    }
    if (page.length < PAGE) break;
    from = acc.size + 1;
  }
  if (acc.size !== cp.treeSize) return `the store holds ${acc.size} rows of ${a.by}, fewer than its checkpoint of ${cp.treeSize} events covers`;
  if (acc.root().toString('hex') !== cp.rootHash) return `the rows of ${a.by} up to seq ${cp.treeSize} no longer give the root its key signed`;
  const r = (await client.query<PgEventRow>(`SELECT ${PG_EVENT_COLUMNS} FROM custody_events WHERE gateway = $1 AND seq = $2`, [a.by, a.seq])).rows[0];
  if (!r || r.hash !== leaf || r.purged || !payloadIntact(r) || rowChainHash(r.prev_hash, r) !== r.hash) return `the row at seq ${a.seq} of ${a.by} does not match the hash its key signed`;
  if (r.kind !== `gateway.${a.kind}` || r.payload === null) return `the row at seq ${a.seq} of ${a.by} is not a gateway.${a.kind}`;
  const p = JSON.parse(r.payload) as { id?: unknown; fingerprint?: unknown };
  if (p.id !== a.id || (a.kind === 'approved' && p.fingerprint !== a.id)) return `the row at seq ${a.seq} of ${a.by} names another gateway`;
  return undefined;
}

/** Where a key added to a trust set was proven: the approval at `seq` of `by`'s chain, under its signed checkpoint of `treeSize` events. */
export interface ApprovalProof {
  by: string;
  seq: number;
  treeSize: number;
}

/**
 * Adds `wanted` to `trust` when it can be proven a member from the gateways `trust` already holds:
 * approvals in their chains in the store, to a fixed point (C approved by A is trusted on B, which
 * trusts A). `removed` gateways are never added. Returns why not, or undefined when trusted.
 * `proofs` is told where each key added was proven.
 */
export async function proveMember(client: pg.ClientBase, trust: TrustSet, wanted: string, removed: (id: string) => boolean = () => false, proofs?: Map<string, ApprovalProof>): Promise<string | undefined> {
  if (trust.has(wanted)) return undefined;
  if (removed(wanted)) return `gateway ${wanted} was removed from the group`;
  let why: string | undefined;
  for (let grew = true; grew && !trust.has(wanted); ) {
    grew = false;
    const rows = (
      await client.query<{ gateway: string; seq: string; hash: string; payload: string }>(
        "SELECT gateway, seq, hash, payload FROM custody_events WHERE kind LIKE 'gateway.%' AND kind = 'gateway.approved' AND payload IS NOT NULL AND NOT purged AND gateway = ANY($1) ORDER BY gateway, seq",
        [trust.ids()],
      )
    ).rows;
    for (const r of rows) {
      let p: { id?: unknown; publicKey?: unknown };
      try {
        p = JSON.parse(r.payload) as typeof p;
      } catch {
        continue;
      }
      if (typeof p.id !== 'string' || typeof p.publicKey !== 'string' || trust.has(p.id) || removed(p.id)) continue;
      const raw = Buffer.from(p.publicKey, 'base64');
      if (raw.length !== 32 || keyFingerprint(raw) !== p.id) continue;
      const result = await proven(client, trust, { kind: 'approved', by: r.gateway, seq: Number(r.seq), hash: r.hash, id: p.id });
      if (!result) {
        if (p.id === wanted) why = `its approval at seq ${r.seq} of ${r.gateway} is not covered by a signed checkpoint in the store yet`;
        continue;
      }
      if (!result.ok) {
        if (p.id === wanted) why = `its approval at seq ${r.seq} of ${r.gateway} is not proven: ${result.why}`;
        continue;
      }
      trust.add(p.id, p.publicKey);
      proofs?.set(p.id, { by: r.gateway, seq: Number(r.seq), treeSize: result.treeSize });
      grew = true;
    }
  }
  if (trust.has(wanted)) return undefined;
  return why ?? "no gateway this one trusts approved it in a signed chain (a row in the store's gateways table is not proof)";
}

export type PinnedKey = { id: string; publicKey: string };

/**
 * The keys this gateway (`self`) pinned in its local meta at admission (shipper.ts): the gateway
 * that approved it, and the group's enrolled gateway. With its own key and its own approvals, the
 * roots every member is proven from.
 */
export function pinnedRoots(db: Database.Database, self: string): { admitted: boolean; group?: string; status?: string; approvedBy?: PinnedKey; groupRoot?: PinnedKey } {
  const raw = (db.prepare('SELECT value FROM meta WHERE key = ?').get(ADMISSION_META) as { value: string } | undefined)?.value;
  const a = raw ? (JSON.parse(raw) as { group?: string; gateway?: string; status?: string; approvedBy?: PinnedKey; groupRoot?: PinnedKey }) : undefined;
  if (a?.gateway !== self) return { admitted: false };
  return { admitted: true, ...(a.group ? { group: a.group } : {}), ...(a.status ? { status: a.status } : {}), ...(a.approvedBy ? { approvedBy: a.approvedBy } : {}), ...(a.groupRoot ? { groupRoot: a.groupRoot } : {}) };
}

/** The trust roots of `pinnedRoots`, as a list for LocalTrust.current. */
export function pinnedKeys(db: Database.Database, self: string): (PinnedKey | undefined)[] {
  const p = pinnedRoots(db, self);
  return [p.approvedBy, p.groupRoot];
}

/**
 * The group's enrolled gateway as the store lists it, when it lists exactly one whose row's key is
 * what it claims: read once, at admission, and pinned (trusted on first use, like `custody verify`
 * without `--keys`); two enrolled rows pin neither.
 */
export async function enrolledGateway(client: pg.ClientBase): Promise<PinnedKey | undefined> {
  const rows = (await listGateways(client)).filter((g) => g.status === 'enrolled' && !rowProblem(g));
  return rows.length === 1 ? { id: rows[0]!.id, publicKey: rows[0]!.publicKey } : undefined;
}

/**
 * The rows of `rows` (the store's gateways, by id) whose gateway is proven a member from `trust`
 * (proveMember), and whose row carries the key proven for it; `refused` is told of each other one.
 */
export async function provenMembers(client: pg.ClientBase, trust: TrustSet, rows: ReadonlyMap<string, GatewayRow>, refused: (id: string, why: string) => void): Promise<Map<string, GatewayRow>> {
  const out = new Map<string, GatewayRow>();
  for (const [id, row] of rows) {
    const why = (await proveMember(client, trust, id)) ?? (row.publicKey === trust.publicKey(id) ? undefined : 'its row in the store carries another key than the one proven for it');
    if (why) refused(id, why);
    else out.set(id, row);
  }
  return out;
}

/**
 * Why the removal of gateway `id` (a `gateway.removed` event at `seq` of `by`'s chain, with `hash`:
 * enrolment.ts, newRemovals) does not count, or undefined when it does: its remover must be proven
 * a member from `trust`, and the event covered by the remover's signed checkpoint, as an approval
 * is. A row marked removed, or a removal written into a chain without its key, removes nothing.
 */
export async function provenRemoval(client: pg.ClientBase, trust: TrustSet, id: string, removal: { by: string; seq: number; hash: string }, removed: (id: string) => boolean = () => false): Promise<string | undefined> {
  const untrusted = await proveMember(client, trust, removal.by, removed);
  if (untrusted) return `its remover ${removal.by} is not proven a member: ${untrusted}`;
  const result = await proven(client, trust, { kind: 'removed', id, ...removal });
  if (!result) return `the removal at seq ${removal.seq} of ${removal.by} is not covered by a signed checkpoint in the store yet`;
  return result.ok ? undefined : result.why;
}

/**
 * The removals newRemovals finds (gateways not in `known`) that count: for each gateway, the first
 * of the events naming it that is proven from the roots of `members` (provenRemoval); the others
 * are looked at again at the next call.
 */
export async function provenNewRemovals(client: pg.ClientBase, members: LocalTrust, roots: (PinnedKey | undefined)[], known: ReadonlySet<string>): Promise<Map<string, Removal>> {
  const trust = members.current(...roots);
  const out = new Map<string, Removal>();
  for (const [id, candidates] of await newRemovals(client, known)) {
    // The first that is proven: a forged one does not hide a real one.
    for (const r of candidates) {
      if (await provenRemoval(client, trust, id, r, (x) => members.isRemoved(x))) continue;
      out.set(id, r);
      break;
    }
  }
  return out;
}
