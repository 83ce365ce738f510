/**
 * `custody verify --store postgres://…`: checks every gateway's chain in a shared store
 * (docs/SCALE-OUT.md), each as a data dir is checked, and who signed them:
 *
 * - per chain: seq from 1 with no gap, each row's payload against its payload hash, each hash
 *   against the previous hash and the row's fields, the RFC 6962 root at each signed checkpoint,
 *   and each checkpoint's signature under the chain's own key (whose fingerprint is the chain's id);
 *   a checkpoint larger than the chain means rows were deleted from its tail; a purged payload
 *   only where a later `retention.run` of the chain covers it (retention.ts, runCovers), as the
 *   local verifier accepts it; otherwise it was deleted by hand;
 * - signers: the chains of pinned keys (`--keys FILE`) are trusted; a chain is trusted too when a
 *   trusted chain approved its key (`gateway.approved`) at a seq one of that chain's signed
 *   checkpoints covers. Without `--keys`, the store's first enrolled gateway is trusted on first
 *   use, and the report says so. Any other chain is an unapproved signer.
 *
 * Every problem names the chain (gateway id) and, where it sits at one, the seq.
 *
 * The same checks run on an evidence bundle exported in a group (verify/group-bundle.ts): both
 * read the chains through a `ChainSource`, the store's tables here, the bundle's files there.
 */
import type pg from 'pg';
import { GENESIS_HASH } from '../chain';
import { keyFingerprint } from '../checkpoint-signer';
import { MerkleAccumulator } from '../merkle';
import { type NoteVerifier, parseCheckpointText, parseNote, parseVerifierKey, verifyNote } from '../signed-note';
import { groupId, listGateways, rowProblem, rowVerifier, type GatewayRow } from '../shared-store/enrolment';
import { checkCombined, checkGroupWitnessed, type CombinedReport, type GroupLogView, groupLogOf, type GroupWitnessReport, type GroupWitnessRow, readCombined, readGroupWitnessRows, type StoredCombined, wantedSizes } from './combined';
import { citesOthers, eventRefs, PG_EVENT_COLUMNS, payloadIntact, type PgEventRow, rowChainHash } from '../shared-store/schema';
import type { EventRef } from '../../../shared/events';
import { recordedRun, runCovers } from '../retention';

export type SharedStoreProblem =
  | 'modified'
  | 'deleted'
  | 'reordered'
  | 'truncated'
  | 'inconsistent'
  | 'signature-invalid'
  | 'unapproved-signer'
  | 'unknown-chain'
  | 'bad-reference'
  | 'bundle-modified'
  | 'unwitnessed'
  | 'replaced';

export interface SharedStoreFailure {
  chain: string;
  seq?: number;
  problem: SharedStoreProblem;
  message: string;
}

export interface ChainReport {
  gateway: string;
  name: string;
  events: number;
  checkpointsChecked: number;
  /** The largest tree size a verified signed checkpoint covers. */
  signedThrough: number;
  /** Rows whose payloads were purged by retention (each covered by a later recorded run). */
  payloadsPurged: number;
  /** How this chain's key came to be trusted: pinned, first-enrolled (no --keys), or approved by another chain. */
  trust?: { by: 'pinned' | 'first-enrolled' } | { by: 'approval'; approver: string; seq: number };
  /** Removed from the group by a trusted chain's `gateway.removed`, under a signed checkpoint of that chain. */
  removed?: { by: string; seq: number; reason: string };
}

export interface SharedStoreReport {
  ok: boolean;
  store: string;
  chains: ChainReport[];
  events: number;
  /** Keys were pinned with --keys (false: the first enrolled gateway was trusted on first use). */
  pinned: boolean;
  /** The group's combined checkpoints (verify/combined.ts). */
  combined: CombinedReport;
  /** With --witness-key: what each witness cosigned of the group's log of combined checkpoints. */
  witnessed?: GroupWitnessReport[];
  failures: SharedStoreFailure[];
  durationMs: number;
}

const PAGE = 10_000;

/** A chain's checkpoint as stored: its tree size, when it was signed, its root (hex) and its signed note. */
export interface StoredChainCheckpoint {
  treeSize: number;
  time: number;
  rootHash: string;
  note: string;
}

/**
 * One position of a chain, in seq order: the hash the chain holds there and, where the source has
 * it, the row itself. A store has every row; a filtered bundle has the hash of every seq (so roots
 * and links still verify) and the rows of the events it was cut for.
 */
export type ChainEntry =
  /** The row, and the hash the source lists at its seq (a row's own, or a bundle's; undefined when it lists none). */
  | { seq: number; hash: string | undefined; row: PgEventRow }
  | { seq: number; hash: string; row?: undefined };

/** Where the chains, their checkpoints and the group's combined checkpoints are read from: the shared store, or an exported bundle. */
export interface ChainSource {
  /** How messages name it: "the store", "the bundle". */
  readonly label: string;
  gateways(): Promise<GatewayRow[]>;
  /** Every chain the source holds rows or checkpoints of. */
  chainIds(): Promise<Set<string>>;
  combined(): Promise<StoredCombined[]>;
  /** Witnesses' cosignatures on the group log (the store keeps them; a bundle exported before they were carried has none). */
  groupWitnessRows?(): Promise<GroupWitnessRow[]>;
  /** The group log, where the source carries more of it than `combined` (a filtered bundle); else every combined checkpoint's leaf. */
  groupLog?(combined: readonly StoredCombined[]): Promise<GroupLogView>;
  group(): Promise<string | undefined>;
  checkpoints(gateway: string): Promise<StoredChainCheckpoint[]>;
  /** Up to `limit` entries of the chain from seq `from` on, in seq order (a missing seq is simply absent). */
  entries(gateway: string, from: number, limit: number): Promise<ChainEntry[]>;
  /** The hash each source position holds, keyed `"<gateway> <seq>"` (absent: no such row). */
  hashesAt(refs: readonly { gateway: string; seq: number }[]): Promise<Map<string, string>>;
}

/** The shared store's tables as a ChainSource. */
export function storeSource(client: pg.ClientBase): ChainSource {
  return {
    label: 'the store',
    gateways: () => listGateways(client),
    chainIds: async () =>
      new Set([
        ...(await client.query<{ gateway: string }>('SELECT DISTINCT gateway FROM custody_events')).rows.map((r) => r.gateway),
        ...(await client.query<{ gateway: string }>('SELECT DISTINCT gateway FROM custody_checkpoints')).rows.map((r) => r.gateway),
      ]),
    combined: () => readCombined(client),
    groupWitnessRows: () => readGroupWitnessRows(client),
    group: () => groupId(client),
    checkpoints: async (gateway) =>
      (
        await client.query<{ tree_size: string; time: string; root_hash: string; note: string }>('SELECT tree_size, time, root_hash, note FROM custody_checkpoints WHERE gateway = $1 ORDER BY tree_size, time', [gateway])
      ).rows.map((r) => ({ treeSize: Number(r.tree_size), time: Number(r.time), rootHash: r.root_hash, note: r.note })),
    entries: async (gateway, from, limit) =>
      (await client.query<PgEventRow>(`SELECT ${PG_EVENT_COLUMNS} FROM custody_events WHERE gateway = $1 AND seq >= $2 ORDER BY seq LIMIT $3`, [gateway, from, limit])).rows.map((row) => ({ seq: Number(row.seq), hash: row.hash, row })),
    hashesAt: async (refs) =>
      new Map(
        (
          await client.query<{ gateway: string; seq: string; hash: string }>(
            'SELECT e.gateway, e.seq, e.hash FROM custody_events e JOIN json_to_recordset($1::json) AS x(gateway text, seq bigint) ON e.gateway = x.gateway AND e.seq = x.seq',
            [JSON.stringify(refs.map((r) => ({ gateway: r.gateway, seq: Number.isSafeInteger(r.seq) ? r.seq : 0 })))],
          )
        ).rows.map((r) => [`${r.gateway} ${r.seq}`, r.hash]),
      ),
  };
}

interface ChainState {
  report: ChainReport;
  /** gateway.approved events: the approved key's id, at seq. */
  approvals: { id: string; fingerprint: string; seq: number }[];
  /** gateway.removed events: the removed key's id, at seq. */
  removals: { id: string; seq: number; reason: string }[];
  /** Events that cite events of other chains (`refs`: a vote on another gateway's hold, …), at seq. */
  refs: { seq: number; kind: string; ref: EventRef }[];
  intact: boolean;
  /** The last seq up to which the rows are intact and contiguous, and the roots at the sizes combined checkpoints name. */
  reached: number;
  rootsAt: Map<number, string>;
}

/** Reads `--keys FILE` text: verifier keys (`name+hex+base64`) or fingerprints (`SHA256:…`), one a line, `#` comments. */
export function parsePinnedKeys(text: string): Set<string> {
  const out = new Set<string>();
  for (const raw of text.split('\n')) {
    const line = raw.replace(/#.*/, '').trim();
    if (!line) continue;
    if (/^SHA256:[A-Za-z0-9+/]{43}$/.test(line)) out.add(line);
    else {
      try {
        out.add(keyFingerprint(parseVerifierKey(line).publicKey));
      } catch (err) {
        throw new Error(`not a verifier key or SHA256: fingerprint: "${line.slice(0, 40)}" (${(err as Error).message})`);
      }
    }
  }
  if (!out.size) throw new Error('no keys in the file (one verifier key or SHA256: fingerprint a line)');
  return out;
}

export async function verifySharedStore(client: pg.ClientBase, opts: { store: string; pinned?: Set<string>; witnesses?: NoteVerifier[]; askedWitnessRows?: GroupWitnessRow[] }): Promise<SharedStoreReport> {
  return verifyChains(storeSource(client), opts);
}

/**
 * Every chain of a source, who signed them, their cross-references and the combined checkpoints:
 * what `custody verify --store` and `custody verify BUNDLE` (a bundle exported in a group) report.
 */
export async function verifyChains(
  source: ChainSource,
  opts: {
    store: string;
    pinned?: Set<string>;
    /** --witness-key: the group log must be cosigned by each. */
    witnesses?: NoteVerifier[];
    /** --ask-witness: what the witnesses themselves answered (askWitness), held to beside the rows the source keeps. */
    askedWitnessRows?: GroupWitnessRow[];
  },
): Promise<SharedStoreReport> {
  const started = Date.now();
  const failures: SharedStoreFailure[] = [];
  const fail = (f: SharedStoreFailure) => failures.push(f);
  const gateways = await source.gateways();
  const byId = new Map(gateways.map((g) => [g.id, g]));
  const chainIds = await source.chainIds();
  for (const id of chainIds) if (!byId.has(id)) fail({ chain: id, problem: 'unknown-chain', message: `${source.label} holds rows of chain ${id}, which has no gateway row (no key to check it with)` });

  // The witnesses' cosignatures first: rows are only appended, so every head they cosigned is within the combined checkpoints read next.
  const witnessed = opts.witnesses?.length ? opts.witnesses : undefined;
  if (witnessed && !source.groupWitnessRows) {
    fail({
      chain: '',
      problem: 'unwitnessed',
      message: `${source.label} carries no witness cosignatures of the group log (it was exported before bundles carried them), so --witness-key cannot be checked against it`,
    });
  }
  const groupWitnessRows = witnessed && source.groupWitnessRows ? [...(await source.groupWitnessRows()), ...(opts.askedWitnessRows ?? [])].sort((x, y) => x.treeSize - y.treeSize) : undefined;
  const combined = await source.combined();
  const wanted = wantedSizes(combined);
  const chains = new Map<string, ChainState>();
  for (const g of gateways) {
    if (!chainIds.has(g.id) && g.status === 'pending') continue;
    const state = await verifyChain(source, g, fail, wanted.get(g.id));
    chains.set(g.id, state);
  }

  // Trust: pinned keys (or the first enrolled gateway), then approvals under signed checkpoints.
  const pinned = !!opts.pinned;
  const roots = opts.pinned ? [...opts.pinned] : gateways.filter((g) => g.status === 'enrolled').map((g) => g.id);
  for (const id of roots) {
    const c = chains.get(id);
    if (c) c.report.trust = { by: pinned ? 'pinned' : 'first-enrolled' };
  }
  for (let changed = true; changed; ) {
    changed = false;
    for (const [id, c] of chains) {
      if (!c.report.trust || !c.intact) continue;
      for (const a of c.approvals) {
        const target = chains.get(a.id);
        if (!target || target.report.trust || a.seq > c.report.signedThrough || a.fingerprint !== a.id) continue;
        target.report.trust = { by: 'approval', approver: id, seq: a.seq };
        changed = true;
      }
    }
  }
  for (const [id, c] of chains) {
    if (c.report.trust) continue;
    const pendingApproval = [...chains.entries()].flatMap(([approver, s]) => s.approvals.filter((a) => a.id === id).map((a) => ({ approver, seq: a.seq, signedThrough: s.report.signedThrough, trusted: !!s.report.trust, intact: s.intact })));
    const why = pendingApproval.length
      ? pendingApproval
          .map((p) =>
            !p.trusted
              ? `approved at seq ${p.seq} of ${p.approver}, a chain that is not trusted itself`
              : !p.intact
                ? `approved at seq ${p.seq} of ${p.approver}, a chain that fails verification`
                : `approved at seq ${p.seq} of ${p.approver}, which no signed checkpoint of that chain covers yet (signed through ${p.signedThrough})`,
          )
          .join('; ')
      : pinned
        ? 'its key is not pinned and no trusted gateway approved it'
        : 'it is not the first enrolled gateway and no trusted gateway approved it';
    fail({ chain: id, problem: 'unapproved-signer', message: `chain ${id} (${c.report.name}) is signed by a key the verifier does not trust: ${why}` });
  }

  // Removals count from trusted chains, under their signed checkpoints (as approvals do).
  for (const [id, c] of chains) {
    if (!c.report.trust || !c.intact) continue;
    for (const r of c.removals) {
      const target = chains.get(r.id);
      if (target && !target.report.removed && r.seq <= c.report.signedThrough) target.report.removed = { by: id, seq: r.seq, reason: r.reason };
    }
  }

  await checkReferences(source, chains, fail);
  const facts = new Map([...chains].map(([id, c]) => [id, { trusted: !!c.report.trust, reached: c.reached, rootsAt: c.rootsAt }]));
  const group = await source.group();
  const combinedReport = checkCombined(combined, { group, gateways: byId, chains: facts, fail, where: source.label });
  let witnessReports: GroupWitnessReport[] | undefined;
  if (witnessed && groupWitnessRows) {
    const log = source.groupLog ? await source.groupLog(combined) : groupLogOf(combined);
    witnessReports = checkGroupWitnessed(log, groupWitnessRows, witnessed, { group, fail, where: source.label });
  }

  const reports = [...chains.values()].map((c) => c.report);
  return {
    ok: failures.length === 0,
    store: opts.store,
    chains: reports,
    events: reports.reduce((n, r) => n + r.events, 0),
    pinned,
    combined: combinedReport,
    ...(witnessReports ? { witnessed: witnessReports } : {}),
    failures,
    durationMs: Date.now() - started,
  };
}

/**
 * The checkpoints of `checkpoints` that `verifier` (the chain's key) signed, and whose signed text
 * says what their row says (size, root); `problem` hears of each other one, by its size.
 */
export function signedCheckpoints<T extends StoredChainCheckpoint>(checkpoints: readonly T[], verifier: NoteVerifier, problem: (seq: number, message: string) => void): T[] {
  const signed: T[] = [];
  for (const cp of checkpoints) {
    try {
      const check = verifyNote(parseNote(cp.note), verifier);
      const body = check.ok ? parseCheckpointText(check.text) : undefined;
      if (!check.ok || !body || body.treeSize !== cp.treeSize || body.rootHash.toString('hex') !== cp.rootHash) {
        problem(cp.treeSize, `the checkpoint of ${cp.treeSize} events ${!check.ok ? `is not signed by this chain's key (${check.reason})` : 'says other than its signed text'}`);
        continue;
      }
      signed.push(cp);
    } catch (err) {
      problem(cp.treeSize, `the checkpoint of ${cp.treeSize} events cannot be read (${(err as Error).message})`);
    }
  }
  return signed;
}

async function verifyChain(source: ChainSource, g: GatewayRow, fail: (f: SharedStoreFailure) => void, wanted?: ReadonlySet<number>): Promise<ChainState> {
  const report: ChainReport = { gateway: g.id, name: g.name, events: 0, checkpointsChecked: 0, signedThrough: 0, payloadsPurged: 0 };
  const state: ChainState = { report, approvals: [], removals: [], refs: [], intact: true, reached: 0, rootsAt: new Map() };
  const problem = (f: Omit<SharedStoreFailure, 'chain'>) => {
    state.intact = false;
    fail({ chain: g.id, ...f, message: `chain ${g.id}${f.seq !== undefined ? ` at seq ${f.seq}` : ''}: ${f.message}` });
  };
  const keyProblem = rowProblem(g);
  if (keyProblem) {
    problem({ problem: 'signature-invalid', message: `its gateway row cannot be trusted: ${keyProblem}` });
    return state;
  }
  const verifier = rowVerifier(g);
  // Signatures first: a checkpoint is evidence only when the chain's key signed what its row says.
  const signed = signedCheckpoints(await source.checkpoints(g.id), verifier, (seq, message) => problem({ problem: 'signature-invalid', seq, message }));
  let cpIndex = 0;
  const acc = new MerkleAccumulator();
  let prev = GENESIS_HASH;
  let expect = 1;
  // Purged rows no run seen so far covers, as seq, time pairs: a later run may still.
  let unexplained: number[] = [];
  for (;;) {
    const entries = await source.entries(g.id, expect, PAGE);
    for (const entry of entries) {
      const seq = entry.seq;
      if (seq !== expect) {
        problem({ problem: 'deleted', seq: expect, message: `rows ${expect}–${seq - 1} are missing from the middle of the chain` });
        return state;
      }
      // Without its row (a filtered bundle) a seq is only its hash: the roots it gives are checked below, and the next row's link to it.
      const r = entry.row;
      if (r) {
        if (r.prev_hash !== prev) {
          problem({ problem: 'reordered', seq, message: 'its previous hash is not the hash of the row before it' });
          return state;
        }
        if (!payloadIntact(r)) {
          problem({ problem: 'modified', seq, message: `its payload (${r.kind}) no longer matches its payload hash` });
          return state;
        }
        if (rowChainHash(prev, r) !== r.hash) {
          problem({ problem: 'modified', seq, message: `its fields (${r.kind}) no longer match its hash` });
          return state;
        }
        if (entry.hash !== r.hash) {
          problem({ problem: 'modified', seq, message: `its hash (${r.kind}) is not the one ${source.label} lists for that seq of the chain` });
          return state;
        }
        if (r.purged) {
          report.payloadsPurged++;
          unexplained.push(seq, Number(r.time));
        } else if (r.kind === 'retention.run' && unexplained.length) {
          const run = recordedRun(seq, r.payload);
          if (run) unexplained = uncovered(unexplained, run);
        }
        if (r.kind === 'gateway.approved' && r.payload) {
          const p = JSON.parse(r.payload) as { id?: unknown; fingerprint?: unknown };
          if (typeof p.id === 'string') state.approvals.push({ id: p.id, fingerprint: typeof p.fingerprint === 'string' ? p.fingerprint : '', seq });
        }
        if (r.kind === 'gateway.removed' && r.payload) {
          const p = JSON.parse(r.payload) as { id?: unknown; reason?: unknown };
          if (typeof p.id === 'string') state.removals.push({ id: p.id, seq, reason: typeof p.reason === 'string' ? p.reason : '' });
        }
        if (citesOthers(r)) for (const ref of eventRefs(r.payload!)) state.refs.push({ seq, kind: r.kind, ref });
      }
      const hash = entry.row ? entry.row.hash : entry.hash;
      acc.pushEventHashHex(hash);
      prev = hash;
      expect++;
      state.reached = acc.size;
      if (wanted?.has(acc.size)) state.rootsAt.set(acc.size, acc.root().toString('base64'));
      while (cpIndex < signed.length && signed[cpIndex]!.treeSize <= acc.size) {
        const cp = signed[cpIndex++]!;
        if (cp.treeSize < acc.size) continue; // a checkpoint of size 0 is checked below
        if (acc.root().toString('hex') !== cp.rootHash) {
          problem({ problem: 'modified', seq: cp.treeSize, message: `the first ${cp.treeSize} rows no longer match the signed checkpoint of ${cp.treeSize} events` });
          return state;
        }
        report.checkpointsChecked++;
        report.signedThrough = Math.max(report.signedThrough, cp.treeSize);
      }
    }
    if (entries.length < PAGE) break;
  }
  report.events = expect - 1;
  if (unexplained.length) problem({ problem: 'modified', seq: unexplained[0]!, message: 'its payload was removed, but no recorded retention run covers it' });
  const beyond = signed.filter((cp) => cp.treeSize > report.events);
  if (beyond.length) {
    const largest = beyond[beyond.length - 1]!.treeSize;
    problem({ problem: 'truncated', seq: report.events + 1, message: `the chain ends at seq ${report.events}, but its signed checkpoint of ${largest} events covers rows ${report.events + 1}–${largest}: they were deleted from the tail` });
  }
  for (const cp of signed) if (cp.treeSize === 0) report.checkpointsChecked++;
  return state;
}

/** The seq, time pairs of `pending` that `run` does not cover. */
function uncovered(pending: number[], run: Parameters<typeof runCovers>[0]): number[] {
  const left: number[] = [];
  for (let i = 0; i < pending.length; i += 2) if (!runCovers(run, pending[i]!, pending[i + 1]!)) left.push(pending[i]!, pending[i + 1]!);
  return left;
}

/**
 * Cross-references between chains (docs/SCALE-OUT.md): every event that cites another chain's
 * event (a vote cast on one gateway on another's hold cites its `hold.created`; a resolution cites
 * the votes that decided it) must find, at that chain and seq, a row with that hash.
 */
async function checkReferences(source: ChainSource, chains: Map<string, ChainState>, fail: (f: SharedStoreFailure) => void): Promise<void> {
  const all = [...chains].flatMap(([chain, c]) => c.refs.map((r) => ({ chain, ...r })));
  for (let i = 0; i < all.length; i += PAGE) {
    const page = all.slice(i, i + PAGE);
    const found = await source.hashesAt(page.map((r) => r.ref));
    for (const r of page) {
      const hash = found.get(`${r.ref.gateway} ${r.ref.seq}`);
      if (hash === r.ref.hash) continue;
      const why = hash === undefined ? `${source.label} has no row at seq ${r.ref.seq} of chain ${r.ref.gateway} (not shipped yet, or deleted)` : `the row at seq ${r.ref.seq} of chain ${r.ref.gateway} has another hash`;
      fail({ chain: r.chain, seq: r.seq, problem: 'bad-reference', message: `chain ${r.chain} at seq ${r.seq}: its ${r.kind} cites an event of another chain that does not resolve: ${why}` });
    }
  }
}
