/**
 * The shared store's worker thread (see shipper.ts): everything this gateway says to PostgreSQL
 * happens here, off the proxies' event loop. It migrates the store, enrols the gateway (or learns
 * it is approved), then ships the local chain after the store's cursor (shipping.ts), reading the
 * SQLite file on its own read-only connection. When the store cannot be reached it retries with
 * backoff (0.1 s doubling to 5 s) and says so in its status; the local journal and SQLite keep
 * recording meanwhile, so nothing waits on the store.
 *
 * With `audit.remoteCommit: sync` the gateway's thread also asks (`commit`) once a batch is folded
 * into SQLite: the next round starts at once, ships everything committed locally (through the same
 * cursor, so rows still go once and in order) and answers the asks it took at its start.
 */
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import type pg from 'pg';
import { keyFingerprint, rawSigner, type SigningKeySpec, specPublicKey } from '../checkpoint-signer';
import { type Enrolment, enrol, findApproval, gatewayRow, type GatewayIdentity, listGateways, rowProblem } from './enrolment';
import { ConfigMirror } from './config-changes';
import { DocumentSync } from './doc-sync';
import { KeySync, LocalTrust, TrustSet } from './key-sync';
import { type PinnedKey, pinnedRoots, proveMember, provenNewRemovals } from './member-trust';
import { PersonSync } from './person-sync';
import { connectStore, migrateSharedStore, type StoreConnection } from './schema';
import { localHead, SHIP_BATCH, ShipRefusedError, shipAll, shipOnce } from './shipping';
import type { ShipperCommand, ShipperStatus } from './shipper';

const { dbPath, conn, identity, signingKey, trust } = workerData as { dbPath: string; conn: StoreConnection; identity: GatewayIdentity; signingKey: SigningKeySpec; trust?: string[] };
// The key must be this gateway's: a signature nobody can check would only be noise.
if (keyFingerprint(specPublicKey(signingKey)) !== identity.id) throw new Error('the shared store signing key is not this gateway key');
const signRaw = rawSigner(signingKey);
/** This gateway's signature over a row's text, base64 (key-sync.ts, doc-sync.ts, person-sync.ts). */
const signRow = async (text: string): Promise<string> => (await signRaw(Buffer.from(text))).toString('base64');
const port = parentPort!;

const IDLE_MS = 50;
/**
 * API keys, persons, policies and masking rules (key-sync.ts, person-sync.ts, doc-sync.ts): this
 * gateway's changes are pushed as soon as the gateway's thread says it made one (`sync`), and its
 * tables are looked at every PUSH_MS in case another process (the CLI) wrote them. The group's
 * changes are read as soon as the store announces them (`NOTIFY custody_config`, heard by the
 * hold worker's listening connection and passed on as `sync` with `pull`), at every (re)connect of
 * that connection, and every PULL_MS as a backstop; every PULL_UNHEARD_MS while nothing listens.
 * Each read takes only the rows changed since the last (config-changes.ts).
 */
const PUSH_MS = 1000;
const PULL_MS = 5000;
const PULL_UNHEARD_MS = 1000;
/** How often an idle, admitted gateway still touches its row (last_seen), and a pending one asks again. */
const HEARTBEAT_MS = 1000;
const BACKOFF_MIN_MS = 100;
const BACKOFF_MAX_MS = 5000;

const db = new Database(dbPath, { readonly: true, fileMustExist: true });
let client: pg.Client | undefined;
let migrated = false;
let admitted = false;
let stopping = false;
let backoff = BACKOFF_MIN_MS;
let lastShipAt = 0;
let lastPushAt = 0;
let lastPullAt = 0;
/** Asked by the gateway's thread: push now (a change made here), pull now (one announced by the store). */
let pushAsked = false;
let pullAsked = false;
/** Something was asked while a round ran: the next starts at once. */
let runAgain = false;
/** Whether the hold worker's connection listens to `custody_config` (the gateway's thread says). */
let listening = false;
const mirror = new ConfigMirror();
const keySync = new KeySync(db, identity.id, signRow);
const localTrust = new LocalTrust(db, identity);
/** Who is a member, proven from the same roots (member-trust.ts): wider than whose key rows are taken (a removal by any proven member counts). */
const memberTrust = new LocalTrust(db, identity);
const docSync = new DocumentSync(db, identity.id, signRow);
const personSync = new PersonSync(db, identity.id, signRow);
/** The gateway that approved this one, pinned in the local meta at its first admission (key-sync.ts trusts it). */
let approver = pinnedRoots(db, identity.id).approvedBy;
/** The group's enrolled gateway, pinned in the local meta at admission (member-trust.ts proves members from it too). */
let groupRoot = pinnedRoots(db, identity.id).groupRoot;
let shipped = { seq: -1, checkpoints: -1 };
let timer: NodeJS.Timeout | undefined;
/** The round in progress: a last ship at stop waits for it (one connection, one transaction at a time). */
let inflight: Promise<void> | undefined;
/** Remote commits asked for since the last round started, and those the round in progress answers. */
let asked: number[] = [];
let serving: number[] = [];
/** One of them is a control-plane change: answered only once the round has pushed the shared rows too. */
let askedPush = false;
let servingPush = false;

const status: ShipperStatus = { phase: 'connecting', shippedSeq: 0, localSeq: 0 };

function post(patch: Partial<ShipperStatus>): void {
  Object.assign(status, patch);
  port.postMessage({ type: 'status', status });
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

async function session(): Promise<pg.Client> {
  client ??= await connectStore(conn, 5000, 'custody-shipper');
  if (!migrated) {
    await migrateSharedStore(client);
    migrated = true;
  }
  return client;
}

/** Removals found so far (each checked once against its gateway.removed event). */
const removalsSeen = new Set<string>();

/**
 * Gateways removed from the group: their keys leave the trust set; this gateway, removed, refuses
 * everything (it keeps shipping its chain, which stays evidence up to the removal).
 */
async function removals(c: pg.Client): Promise<void> {
  for (const [id, { by, seq, reason }] of await provenNewRemovals(c, memberTrust, [approver, groupRoot], removalsSeen)) {
    removalsSeen.add(id);
    memberTrust.remove(id);
    if (id === identity.id) post({ removed: { by, seq, reason } });
    else localTrust.remove(id);
  }
}

/** Why a pending gateway waits. */
function pendingReason(): string {
  if (trust && !trust.includes(identity.id)) return `no gateway store.trust names has approved it yet (store.trust does not name this gateway, so it never founds a group)`;
  return 'no enrolled gateway has approved it yet';
}

type Admission = { refused: string } | { approvedBy?: PinnedKey; groupRoot?: PinnedKey };

/**
 * Whether this gateway may count itself admitted, on what it can prove rather than on the store's
 * gateways table, whose rows anyone who can write to the store can write (docs/SCALE-OUT.md,
 * "Admission"):
 * - it founded the group in this call (`first`), or its own data dir says it was admitted to this
 *   group before; otherwise a row listing it as enrolled or removed admits nothing;
 * - listed as approved, its approval must be proven (member-trust.ts, proveMember: a
 *   `gateway.approved` in a chain, under a checkpoint that chain's key signs, the chain's rows
 *   giving the signed root) from the keys `store.trust` pins, or without it from the one gateway
 *   the store lists as enrolled (trust on first use, as `custody verify` without `--keys`).
 * Returns the keys to pin (the approver, the group's root), or why not.
 */
async function admission(c: pg.Client, e: Enrolment): Promise<Admission> {
  // Admitted to this group before (its own data dir says so, which the store cannot write): a
  // removal since is found by removals(), from the remover's signed chain.
  if (e.first || admittedHere(e.group)) return {};
  if (e.status !== 'approved') return { refused: `the store's gateways table lists this gateway as ${e.status}, but it was never admitted to this group (its data dir holds no admission): a row in the store is no approval` };
  const roots = new TrustSet();
  if (trust) {
    for (const id of trust) {
      const row = id === identity.id ? identity : await gatewayRow(c, id);
      if (row) roots.add(id, row.publicKey);
    }
    if (!roots.ids().length) return { refused: 'none of the gateways store.trust names is in the store' };
  } else {
    const founder = await founderOf(c);
    if (!founder) return { refused: 'the store does not list exactly one gateway that founded the group to prove the approval from; pin the group with store.trust' };
    roots.add(founder.id, founder.publicKey);
  }
  const first = roots.ids()[0]!;
  const groupRoot = { id: first, publicKey: roots.publicKey(first)! };
  const why = await proveMember(c, roots, identity.id);
  if (why) return { refused: `its approval is not proven from ${trust ? 'the gateways store.trust names' : 'the gateway that founded the group'}: ${why}` };
  // The approver pinned: a proven member that approved this gateway in its chain.
  const found = await findApproval(c, identity.id, (by) => roots.has(by) && by !== identity.id);
  const approvedBy = 'missing' in found ? undefined : { id: found.by, publicKey: roots.publicKey(found.by)! };
  return { ...(approvedBy ? { approvedBy } : {}), groupRoot };
}

/**
 * The gateway that founded the group as the store lists it (trust on first use): the one row that
 * is enrolled, or removed without ever having been approved (a founder removed later still
 * approved the members it approved before). Two such rows pin neither.
 */
async function founderOf(c: pg.Client): Promise<PinnedKey | undefined> {
  const rows = (await listGateways(c)).filter((g) => (g.status === 'enrolled' || (g.status === 'removed' && !g.approvedBy)) && !rowProblem(g));
  return rows.length === 1 ? { id: rows[0]!.id, publicKey: rows[0]!.publicKey } : undefined;
}

/** Whether this gateway's data dir records its admission to `group` (shipper.ts writes it at the first). */
function admittedHere(group: string): boolean {
  const pinned = pinnedRoots(db, identity.id);
  return pinned.admitted && pinned.group === group;
}

/** One round; returns how long to wait before the next. */
async function step(): Promise<number> {
  const c = await session();
  if (!admitted) {
    const e = await enrol(c, identity, !trust || trust.includes(identity.id));
    const a = e.status === 'pending' ? { refused: pendingReason() } : await admission(c, e);
    if ('refused' in a) {
      post({ phase: 'pending', group: e.group, enrolment: e.status, reason: a.refused });
      answer('this gateway is not admitted to the shared store yet');
      return HEARTBEAT_MS;
    }
    approver ??= a.approvedBy;
    groupRoot ??= a.groupRoot;
    // Removed from the group: known before it is admitted, so it never serves a request.
    await removals(c);
    admitted = true;
    // The store has just answered: a slow first round (a loaded host, a long migration) must not
    // leave the gateway stale from its start until its first shipment.
    post({ phase: 'admitted', contactAt: Date.now(), group: e.group, enrolment: e.status, first: e.first, reason: undefined, ...(approver ? { approvedBy: approver } : {}), ...(groupRoot ? { groupRoot } : {}) });
  }
  // Asked for a remote commit: ship first, before the key round.
  const wait = serving.length ? await ship(c) : undefined;
  if (servingPush) pushAsked = true;
  const now = Date.now();
  const pull = pullAsked || now - lastPullAt >= (listening ? PULL_MS : PULL_UNHEARD_MS);
  if (pull || pushAsked || now - lastPushAt >= PUSH_MS) {
    // Cleared before the round, so a request arriving meanwhile makes another; restored if it fails.
    const took = { push: pushAsked, pull: pullAsked };
    pushAsked = pullAsked = false;
    try {
      await configRound(c, pull);
    } catch (err) {
      pushAsked ||= took.push;
      pullAsked ||= took.pull;
      throw err;
    }
  }
  // A control-plane change is in the store as events and as the rows the others enforce.
  if (servingPush) {
    servingPush = false;
    answer(undefined);
  }
  return wait ?? (await ship(c));
}

/**
 * Exchanges keys, persons, policies and masking rules with the store: reads what changed there
 * (when `pull`), pushes what changed here, and hands the gateway's thread what it should take.
 * The hand-over is worked out each round from the rows in memory, against this gateway's tables,
 * so a row that could not be written here is handed over again.
 */
async function configRound(c: pg.Client, pull: boolean): Promise<void> {
  await removals(c);
  const trust = localTrust.current(approver);
  // Persons are pushed before keys: a key goes to the store only after its owner's link, so a
  // gateway that reads the key reads the link in the same snapshot. Persons are handed over before
  // keys, and the gateway applies them first, so a key copied here works as its owner at once.
  await personSync.push(c);
  await docSync.push(c);
  if (pull) {
    // Asked again if something is announced while this read runs: the next round reads it.
    await mirror.read(c);
    lastPullAt = Date.now();
    post({ contactAt: lastPullAt, error: undefined, failingSince: undefined });
  }
  const keys = await keySync.round(c, trust, mirror, (k) => personSync.keyReady(k.id, k.created_at));
  const persons = personSync.pull(mirror, trust);
  if (persons.persons.length || persons.links.length || persons.locks.length) port.postMessage({ type: 'persons', persons });
  if (keys.keys.length || keys.sshKeys.length) port.postMessage({ type: 'keys', keys });
  const docs = docSync.pull(mirror, trust);
  if (docs.length) port.postMessage({ type: 'documents', docs });
  lastPushAt = Date.now();
}

/**
 * Ships what the local chain holds after the store's cursor; with remote commits to answer, all of
 * it (their batches were folded before they were asked for, so before this round started), and
 * answers them. Returns how long to wait before the next round.
 */
async function ship(c: pg.Client): Promise<number> {
  const head = localHead(db);
  if (head.seq === shipped.seq && head.checkpoints === shipped.checkpoints && (serving.length || Date.now() - lastShipAt < HEARTBEAT_MS)) {
    answer(undefined);
    return IDLE_MS;
  }
  let r = await shipOnce(c, db, identity.id);
  // Rows deleted from the store's copy of this chain are noticed within a round (shipOnce looks).
  // It stays in the status (health says so) until the gateway restarts: later rows leave a gap.
  if (r.tampered && r.tampered.message !== status.tampered?.message) post({ tampered: r.tampered });
  while (serving.length && r.events === SHIP_BATCH) r = await shipOnce(c, db, identity.id);
  lastShipAt = Date.now();
  shipped = { seq: r.cursor.seq, checkpoints: r.cursor.seq >= head.seq ? head.checkpoints : -1 };
  post({ shippedSeq: r.cursor.seq, localSeq: Math.max(r.localSeq, r.cursor.seq), shippedAt: lastShipAt, contactAt: lastShipAt, error: undefined, failingSince: undefined });
  answer(undefined);
  return r.events === SHIP_BATCH ? 0 : IDLE_MS;
}

/** Answers the remote commits this round took: committed (undefined), or why not (a push waits for its round's end). */
function answer(error: string | undefined): void {
  if (!serving.length || (servingPush && error === undefined)) return;
  servingPush = false;
  port.postMessage({ type: 'committed', ids: serving, ...(error !== undefined ? { error } : {}) });
  serving = [];
}

function schedule(ms: number): void {
  if (stopping) return;
  timer = setTimeout(() => {
    inflight = run();
  }, ms);
}

async function run(): Promise<void> {
  timer = undefined;
  runAgain = false;
  serving = asked;
  asked = [];
  servingPush = askedPush;
  askedPush = false;
  let wait: number;
  try {
    wait = await step();
    backoff = BACKOFF_MIN_MS;
    // Every path of a round answers what it took; should one not, nothing is confirmed that was not shipped.
    answer('the round ended without shipping');
    if (asked.length || runAgain) wait = 0;
  } catch (err) {
    answer(messageOf(err));
    const refused = err instanceof ShipRefusedError;
    if (!refused) {
      // The connection may be broken: a new one next time (migrations are checked again too).
      void client?.end().catch(() => {});
      client = undefined;
      migrated = false;
    }
    post({ error: messageOf(err), failingSince: status.failingSince ?? Date.now(), localSeq: Math.max(status.localSeq, localHead(db).seq) });
    wait = refused ? BACKOFF_MAX_MS : backoff;
    backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
  }
  schedule(wait);
}

/** A last ship of everything committed locally, within `ms`; answers `stopped` either way. */
async function finish(ms: number): Promise<void> {
  stopping = true;
  clearTimeout(timer);
  let error: string | undefined;
  try {
    // The round in progress answers what it took; what was asked since, the last ship answers
    // (a control-plane change asked since is not pushed now: it goes at the next start).
    await inflight;
    serving = asked;
    asked = [];
    if (askedPush) error = 'the gateway stopped before the change reached the shared store; it goes there at the next start';
    askedPush = false;
    if (!admitted) answer('this gateway is not admitted to the shared store');
    else {
      const r = await Promise.race([
        session().then((c) => shipAll(c, db, identity.id)),
        new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`the shared store did not take the last events within ${ms} ms`)), ms).unref()),
      ]);
      post({ shippedSeq: r.cursor.seq, localSeq: r.localSeq, shippedAt: Date.now() });
    }
  } catch (err) {
    error = messageOf(err);
  }
  answer(error);
  await client?.end().catch(() => {});
  db.close();
  port.postMessage({ type: 'stopped', error });
}

/** Starts the next round now, or, with one in progress, as soon as it ends. */
function soon(): void {
  if (timer !== undefined) {
    clearTimeout(timer);
    inflight = run();
  } else if (!stopping) runAgain = true;
}

port.on('message', (m: ShipperCommand) => {
  if (m.type === 'stop') void finish(m.ms);
  else if (m.type === 'sync') {
    if (m.listening !== undefined) listening = m.listening;
    if (m.pull) pullAsked = true;
    else pushAsked = true;
    soon();
  }
  else if (m.type === 'commit') {
    if (stopping) {
      port.postMessage({ type: 'committed', ids: [m.id], error: 'the gateway is stopping' });
      return;
    }
    // While the store fails, the round waits out its backoff: the gateway's thread refuses meanwhile.
    if (status.error !== undefined) {
      port.postMessage({ type: 'committed', ids: [m.id], error: status.error });
      return;
    }
    asked.push(m.id);
    if (m.push) askedPush = true;
    // Between rounds: start the next one now (a round in progress starts the next when it ends).
    soon();
  }
});
inflight = run();
