/**
 * The combined checkpoint worker (started by combined.ts): everything this gateway does for the
 * group's combined checkpoints happens here, off the proxies' event loop, on one connection of its
 * own (`application_name` `custody-combined`). A few times an interval it:
 *
 * - cosigns the newest combined checkpoint another gateway made, once it has checked, against the
 *   store's rows in one snapshot, that every chain in it extends what this gateway last signed and
 *   the checkpoint before it (combined-checkpoint.ts, `checkChains`: the rows after that head are
 *   read, each must follow the one before, and the consistency proof from the old head to the new
 *   one is computed from them and verified);
 * - once per `audit.groupCheckpointInterval`, after a short random delay, makes the interval's
 *   checkpoint unless another gateway has claimed it: reads every member's chain head the same way,
 *   signs the note and inserts the row; if another gateway's row is there first, it skips. Makers
 *   take turns under an advisory lock, so rows go in in the order of the heads they read.
 *
 * A chain that is shorter than before, has rows missing, or gives another root is refused: the
 * gateway is told (it records `group.checkpoint.refused` in its own chain and says so in health)
 * and nothing is signed. What this gateway last signed (its chain states) is kept in memory; at
 * start it is read back from the newest checkpoint it signed in the store (its `ranges`, checked
 * against the signed heads), so only rows after it are read.
 *
 * With witnesses configured (audit.witnesses[]), the gateway that made the newest combined
 * checkpoint sends the group log's head (group-log.ts) to them, on a connection of its own, through
 * the witness client of its own chain (witnessing.ts): never waited for, retried with backoff, and
 * shown in health.
 */
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import type pg from 'pg';
import type { Config } from '../../../shared/config';
import { lowerThreadPriority } from '../../worker-source';
import { WitnessClient } from '../witnessing';
import { keyFingerprint, rawSigner, type SigningKeySpec, specPublicKey } from '../checkpoint-signer';
import { cosignWith, findCosignature } from '../cosignature';
import { assembleNote, checkNoteText, ed25519KeyId, parseNote, verifyNote } from '../signed-note';
import type { CombinedRefusal, CombinedWorkerCommand, CombinedWorkerMessage, CombinedWorkerStatus } from './combined';
import {
  type ChainProblem,
  type ChainState,
  checkChains,
  type CombinedBody,
  type CombinedRow,
  cosignerVerifier,
  decodeRanges,
  encodeRanges,
  formatCombinedText,
  latestCombined,
  latestSignedBy,
  openCombined,
  parseCombinedText,
  storeMembers,
} from './combined-checkpoint';
import { type GatewayIdentity, groupId, rowVerifier } from './enrolment';
import { GroupLog, type GroupLogHead, groupWitnessStatus } from './group-log';
import { LocalTrust } from './key-sync';
import { pinnedKeys, pinnedRoots, provenMembers } from './member-trust';
import { COMBINED_LOCK, connectStore, migrateSharedStore, type StoreConnection } from './schema';

const { conn, identity, signingKey, intervalMs, dbPath, witnesses } = workerData as {
  conn: StoreConnection;
  identity: GatewayIdentity;
  signingKey: SigningKeySpec;
  intervalMs: number;
  dbPath: string;
  witnesses: Config['audit']['witnesses'];
};
const port = parentPort!;
/** Whose chains the combined checkpoints cover, and whose are cosigned: members proven from this gateway's own roots (member-trust.ts). */
const db = new Database(dbPath, { readonly: true, fileMustExist: true });
const localTrust = new LocalTrust(db, identity);
const untrustedSaid = new Map<string, string>();

/** The store's members (storeMembers) that this gateway can prove are members; the table's status alone is not proof. */
async function provenStoreMembers(c: pg.ClientBase): Promise<Awaited<ReturnType<typeof storeMembers>>> {
  return provenMembers(c, localTrust.current(...pinnedKeys(db, identity.id)), await storeMembers(c), (gateway, reason) => {
    if (untrustedSaid.get(gateway) === reason) return;
    untrustedSaid.set(gateway, reason);
    say({ type: 'untrusted', gateway, reason });
  });
}
// The key must be this gateway's: a signature nobody can check would only be noise.
const publicKey = specPublicKey(signingKey);
if (keyFingerprint(publicKey) !== identity.id) throw new Error('the combined checkpoint signing key is not this gateway key');
/** Raw Ed25519 signatures by this gateway's checkpoint key (in this process, or its audit.signer program). */
const signRaw = rawSigner(signingKey);

/** A note signed with this gateway's key under `keyName` (its own key name for combined checkpoints; the group log's origin for its heads). */
async function signNoteText(text: string, keyName = identity.keyName): Promise<string> {
  checkNoteText(text, keyName);
  return assembleNote(text, keyName, ed25519KeyId(keyName, publicKey), await signRaw(Buffer.from(text, 'utf8')));
}

const TICK_MS = Math.max(100, Math.min(500, Math.floor(intervalMs / 4)));
const BACKOFF_MIN_MS = 100;
const BACKOFF_MAX_MS = 5000;

let client: pg.Client | undefined;
let group: string | undefined;
/** The chains as of the newest checkpoint this gateway signed (made or cosigned), and its interval. */
let anchor = new Map<string, ChainState>();
let anchorInterval = -1;
let bootstrapped = false;
/** The newest checkpoint checked for cosigning (cosigned or refused): each is checked once; one the store failed to answer for is checked again. */
let looked = -1;
/** The interval this gateway last tried to make, and the delay it waits into each interval. */
let triedInterval = -1;
let delay = { interval: -1, ms: 0 };
/** Findings already reported (each is recorded once in the chain). */
const reported = new Set<string>();
let stopping = false;
let timer: NodeJS.Timeout | undefined;
let inflight: Promise<void> | undefined;
let backoff = BACKOFF_MIN_MS;
/** The witnesses of the group log, once the group is known (none without audit.witnesses[]). */
let groupWitness: WitnessClient<GroupLogHead> | undefined;
let witnessConn: Promise<pg.Client> | undefined;
/** The newest combined checkpoint this gateway made that its witnesses were told of. */
let witnessedInterval = -1;
let witnessStatusAt = 0;
/** A witness is shown failing once a combined checkpoint older than this waits for it. */
const WITNESS_STALE_MS = Math.max(10_000, 10 * intervalMs);

const status: CombinedWorkerStatus = { member: false, latest: null, signed: null };

lowerThreadPriority(10);

function say(m: CombinedWorkerMessage): void {
  port.postMessage(m);
}

function post(patch: Partial<CombinedWorkerStatus>): void {
  Object.assign(status, patch);
  say({ type: 'status', status });
}

/** The witness client's own connection (its queries must not land in the snapshots of `client`). */
function witnessConnection(): Promise<pg.Client> {
  witnessConn ??= connectStore(conn, 5000, 'custody-group-witness').then(
    (c) => {
      const drop = () => {
        if (witnessConn) witnessConn = undefined;
        void c.end().catch(() => {});
      };
      c.on('error', drop);
      c.on('end', drop);
      return c;
    },
    (err: unknown) => {
      witnessConn = undefined;
      throw err;
    },
  );
  return witnessConn;
}

function startGroupWitness(g: string): void {
  if (groupWitness || !witnesses.length) return;
  const log = new GroupLog(witnessConnection, g, { id: identity.id, signNote: signNoteText });
  groupWitness = new WitnessClient(log, witnesses, { info: (m) => say({ type: 'log', level: 'info', message: m }), error: (m) => say({ type: 'log', level: 'error', message: m }) }, 'the group log');
}

/** Tells the witnesses of the newest combined checkpoint when this gateway made it, and refreshes their standing for health (about once a second). */
async function witnessRound(c: pg.Client, latest: CombinedRow | undefined): Promise<void> {
  if (!groupWitness) return;
  if (latest && latest.maker === identity.id && latest.interval > witnessedInterval) {
    witnessedInterval = latest.interval;
    groupWitness.nudge();
  }
  if (Date.now() - witnessStatusAt < 1000) return;
  witnessStatusAt = Date.now();
  const next = await groupWitnessStatus(c, groupWitness.attempts(), WITNESS_STALE_MS);
  if (JSON.stringify(next) !== JSON.stringify(status.witnesses)) post({ witnesses: next });
}

async function session(): Promise<pg.Client> {
  if (client) return client;
  const c = await connectStore(conn, 5000, 'custody-combined');
  try {
    await migrateSharedStore(c);
  } catch (err) {
    await c.end().catch(() => {});
    throw err;
  }
  client = c;
  return c;
}

/** Runs `fn` in one snapshot: rows shipped meanwhile cannot look like a gap or a moved cursor. */
async function snapshot<T>(c: pg.Client, fn: () => Promise<T>, readOnly = true): Promise<T> {
  await c.query(`BEGIN ISOLATION LEVEL REPEATABLE READ${readOnly ? ' READ ONLY' : ''}`);
  try {
    const r = await fn();
    await c.query('COMMIT');
    return r;
  } catch (err) {
    await c.query('ROLLBACK').catch(() => {});
    throw err;
  }
}

function refuse(role: CombinedRefusal['role'], p: ChainProblem, checkpoint?: CombinedRefusal['checkpoint']): void {
  const key = `${p.chain}|${p.problem}|${p.committed?.size ?? ''}|${p.found?.size ?? ''}|${p.message}`;
  if (reported.has(key)) return;
  if (reported.size > 1000) reported.clear();
  reported.add(key);
  say({ type: 'refused', refusal: { role, ...(checkpoint ? { checkpoint } : {}), chain: p.chain, problem: p.problem, ...(p.committed ? { committed: p.committed } : {}), ...(p.found ? { found: p.found } : {}), message: p.message } });
}

function signedStatus(row: CombinedRow, role: 'made' | 'cosigned', at: number, body: CombinedBody): void {
  post({ signed: { interval: row.interval, at, role, chains: body.heads.length } });
}

/** Where this gateway stood before it started: the newest checkpoint it signed, if its signature and ranges check. */
async function bootstrap(c: pg.Client): Promise<void> {
  const found = await latestSignedBy(c, identity.id);
  if (!found) return;
  const { row, cosignature } = found;
  try {
    const parsed = parseNote(row.note);
    const ok = row.maker === identity.id ? verifyNote(parsed, rowVerifier(identity)).ok : cosignature !== undefined && findCosignature(parsed.text, cosignature.line, cosignerVerifier(identity)).ok;
    if (!ok) return;
    const body = parseCombinedText(parsed.text);
    const states = decodeRanges(body, row.ranges);
    if (!states) return;
    anchor = states;
    anchorInterval = row.interval;
    looked = row.interval;
    signedStatus(row, row.maker === identity.id ? 'made' : 'cosigned', row.maker === identity.id ? row.madeAt : cosignature!.at, body);
  } catch {
    // not one this gateway can stand on: it reads the chains from their start
  }
}

/** Checks the newest checkpoint another gateway made, and cosigns it when every chain holds. */
async function cosignLatest(c: pg.Client, latest: CombinedRow): Promise<void> {
  const cp = { interval: latest.interval, maker: latest.maker, rootHash: latest.rootHash };
  const result = await snapshot(c, async () => {
    const members = await provenStoreMembers(c);
    const opened = openCombined(latest, members, group!);
    if ('problem' in opened) return { problem: { chain: latest.maker, problem: 'signature-invalid' as const, message: `the combined checkpoint of ${new Date(latest.madeAt).toISOString()} attributed to ${latest.maker}: ${opened.problem}` } };
    const before = await latestCombined(c, latest.interval);
    const prev = before && openCombined(before, members, group!);
    const checked = await checkChains(c, { members, anchor, ...(prev && 'body' in prev ? { previous: prev.body } : {}), target: opened.body });
    return 'problem' in checked ? checked : { ...checked, body: opened.body };
  });
  if ('problem' in result) {
    refuse('cosign', result.problem, cp);
    looked = latest.interval;
    return;
  }
  const at = Date.now();
  const line = await cosignWith(parseNote(latest.note).text, identity.keyName, publicKey, signRaw, Math.floor(at / 1000));
  await c.query('INSERT INTO custody_combined_cosignatures (interval_start, gateway, cosignature, cosigned_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING', [latest.interval, identity.id, line, at]);
  anchor = result.states;
  anchorInterval = latest.interval;
  looked = latest.interval;
  signedStatus(latest, 'cosigned', at, result.body);
}

/**
 * Makes the checkpoint of `interval` unless another gateway claimed it (or a later one) first.
 * Makers take turns (COMBINED_LOCK, tried, never waited for: false when another holds it, to try
 * again at the next tick), and each reads, checks and inserts in one snapshot taken after it has
 * the lock, so the checkpoints are inserted in the order of the heads they read: a later interval
 * never holds older heads than an earlier one, whatever the gateways' clocks say.
 */
async function make(c: pg.Client, interval: number): Promise<boolean> {
  if (!(await c.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1) AS ok', [COMBINED_LOCK])).rows[0]?.ok) return false;
  try {
    const made = await snapshot(
      c,
      async () => {
        if ((await c.query('SELECT 1 FROM custody_combined_checkpoints WHERE interval_start >= $1 LIMIT 1', [interval])).rowCount) return undefined;
        const members = await provenStoreMembers(c);
        const before = await latestCombined(c, interval);
        const prev = before && openCombined(before, members, group!);
        const result = await checkChains(c, { members, anchor, ...(prev && 'body' in prev ? { previous: prev.body } : {}) });
        if ('problem' in result) return result;
        const madeAt = Date.now();
        const text = formatCombinedText(group!, madeAt, identity.id, result.heads);
        const note = await signNoteText(text);
        const body = parseCombinedText(text);
        await c.query('INSERT INTO custody_combined_checkpoints (interval_start, maker, made_at, chains, root_hash, note, ranges) VALUES ($1, $2, $3, $4, $5, $6, $7)', [
          interval,
          identity.id,
          madeAt,
          body.heads.length,
          body.rootHash.toString('hex'),
          note,
          encodeRanges(result.states),
        ]);
        return { row: { interval, maker: identity.id, madeAt, chains: body.heads.length, rootHash: body.rootHash.toString('hex'), note, ranges: '' }, body, states: result.states };
      },
      false,
    );
    if (!made) return true;
    if ('problem' in made) {
      refuse('make', made.problem);
      return true;
    }
    anchor = made.states;
    anchorInterval = interval;
    looked = interval;
    signedStatus(made.row, 'made', made.row.madeAt, made.body);
    return true;
  } finally {
    await c.query('SELECT pg_advisory_unlock($1)', [COMBINED_LOCK]);
  }
}

async function round(): Promise<void> {
  const c = await session();
  const mine = (await c.query<{ status: string }>('SELECT status FROM custody_gateways WHERE id = $1', [identity.id])).rows[0]?.status;
  // An approved gateway acts once its gateway thread has pinned its approver (shipper.ts): until then it cannot prove the others members.
  const member = mine === 'enrolled' || (mine === 'approved' && pinnedRoots(db, identity.id).approvedBy !== undefined);
  if (member !== status.member) post({ member });
  if (!member) return;
  group ??= await groupId(c);
  if (!group) return;
  startGroupWitness(group);
  if (!bootstrapped) {
    await bootstrap(c);
    bootstrapped = true;
  }
  const latest = await latestCombined(c);
  if (latest) {
    const cosigners = Number((await c.query<{ n: string }>('SELECT count(*) AS n FROM custody_combined_cosignatures WHERE interval_start = $1', [latest.interval])).rows[0]!.n);
    const l = status.latest;
    if (!l || l.interval !== latest.interval || l.cosigners !== cosigners) post({ latest: { interval: latest.interval, madeAt: latest.madeAt, maker: latest.maker, chains: latest.chains, cosigners } });
    if (latest.interval > anchorInterval && latest.interval !== looked && latest.maker !== identity.id) await cosignLatest(c, latest);
  }
  const now = Date.now();
  const interval = Math.floor(now / intervalMs) * intervalMs;
  // A random delay into the interval: the first gateway claims it, the others find its row and skip.
  if (delay.interval !== interval) delay = { interval, ms: Math.floor(Math.random() * Math.min(1000, intervalMs / 4)) };
  let tried = false;
  if (triedInterval !== interval && now >= interval + delay.ms && (await make(c, interval))) {
    triedInterval = interval;
    tried = true;
  }
  await witnessRound(c, tried && groupWitness ? await latestCombined(c) : latest);
}

async function run(): Promise<void> {
  timer = undefined;
  let wait = TICK_MS;
  try {
    await round();
    backoff = BACKOFF_MIN_MS;
    if (status.error !== undefined) post({ error: undefined, failingSince: undefined });
  } catch (err) {
    post({ error: err instanceof Error ? err.message : String(err), failingSince: status.failingSince ?? Date.now() });
    const c = client;
    client = undefined;
    void c?.end().catch(() => {});
    wait = backoff;
    backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
  }
  if (!stopping) timer = setTimeout(() => (inflight = run()), wait);
}

port.on('message', (m: CombinedWorkerCommand) => {
  if (m.type !== 'stop') return;
  stopping = true;
  clearTimeout(timer);
  groupWitness?.stop();
  void (async () => {
    await inflight?.catch(() => {});
    await client?.end().catch(() => {});
    await witnessConn?.then((w) => w.end()).catch(() => {});
    db.close();
    say({ type: 'stopped' });
  })();
});
inflight = run();
