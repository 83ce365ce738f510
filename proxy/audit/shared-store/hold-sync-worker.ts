/**
 * The hold worker (started by hold-sync.ts; its gateway side is proxy/approvals/shared-holds.ts): everything this gateway says to the
 * shared store about holds happens on this thread, off the proxies' event loop.
 *
 * - one dedicated session-mode connection LISTENs on `custody_holds` and reads what changed
 *   (hold-rows.ts). It also LISTENs on `custody_config` (keys, persons, policies, masking rules)
 *   and passes each announcement on, and each (re)connect and loss, to the gateway's thread, for
 *   the shared store worker to read what changed (shipper-worker.ts). And on `custody_events`
 *   (another gateway shipped session events), passed on for the console worker to push them to
 *   this gateway's consoles (session-feed.ts). At start it reads the pending holds and their votes in one snapshot, with the
 *   cursor; after every reconnect it reads every change after its cursor, so a notification sent
 *   while it was away costs nothing. A read every second covers a notification lost in flight.
 *   It also reads the grants other gateways' approvals gave (grant-rows.ts), and passes on those
 *   signed by the key proven for the gateway that held the request, for the hold queue to apply.
 * - a second connection writes, in the order the gateway asked: this gateway's holds, the votes
 *   cast here and the grants its approvals gave, each vote's and grant's row signed with this
 *   gateway's checkpoint key (hold-rows.ts, grant-rows.ts). A write that fails is retried with backoff (0.1 s doubling to 5 s) until the
 *   store takes it; each answer says whether it was written.
 * - every second it renews this gateway's lease, and claims the pending holds of gateways whose
 *   lease expired, for the gateway to record as abandoned; and looks for gateways removed from the
 *   group (member-trust.ts): their rows no longer count, and the grants they gave end.
 */
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import type pg from 'pg';
import { rawSigner, type SigningKeySpec } from '../checkpoint-signer';
import { readGrants, type SignedStoredGrant, signGrantRow, type StoredGrant, writeGrantRow } from './grant-rows';
import { claimOrphanedHolds, type HoldChanges, HOLDS_CHANNEL, readHoldChanges, readPendingHolds, renewLease, signVoteRow, type SignedStoredVote, writeHoldRow, writeVoteRow } from './hold-rows';
import type { HoldWorkerCommand, HoldWorkerMessage } from './hold-sync';
import { LocalTrust, type TrustSet } from './key-sync';
import { pinnedKeys, pinnedRoots, proveMember, provenNewRemovals } from './member-trust';
import { CONFIG_CHANNEL, connectStore, EVENTS_CHANNEL, migrateSharedStore, type StoreConnection } from './schema';

const { conn, gateway, publicKey, dbPath, signingKey } = workerData as { conn: StoreConnection; gateway: string; publicKey: string; dbPath: string; signingKey: SigningKeySpec };
/** This gateway's checkpoint key (a key file, or the audit.signer program): signs the vote rows written here. */
const signRaw = rawSigner(signingKey);
const port = parentPort!;
/** Whose rows count: this gateway, those its chain approved, its approver (pinned locally), and those proven members from them. */
const db = new Database(dbPath, { readonly: true, fileMustExist: true });
const localTrust = new LocalTrust(db, { id: gateway, publicKey });
/** Gateways whose rows were ignored, with the reason last said: once one is proven, the pending holds are read again. */
const refused = new Map<string, string>();
/** The reason last said (the gateway's log) for each gateway refused. */
const refusalSaid = new Map<string, string>();
/** Vote rows ignored for their signature, said once each (hold, gateway, seq). */
const voteRefusalSaid = new Set<string>();
/** Grant rows ignored for their signature, said once each (id, gateway). */
const grantRefusalSaid = new Set<string>();
/** Gateways found removed from the group (each proven once). */
const removedSeen = new Set<string>();

const TICK_MS = 1000;
const BACKOFF_MIN_MS = 100;
const BACKOFF_MAX_MS = 5000;

let listener: pg.Client | undefined;
let writer: pg.Client | undefined;
let cursor = -1;
/** The grants' own cursor (grant-rows.ts, readGrants): -1 reads every grant still running. */
let grantCursor = -1;
let stopping = false;
let reading: Promise<void> | undefined;
let readAgain = false;
const readBackoff = { ms: BACKOFF_MIN_MS };
let connectedSaid: boolean | undefined;

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function say(m: HoldWorkerMessage): void {
  port.postMessage(m);
}

function status(connected: boolean, error?: string): void {
  if (connected === connectedSaid && connected) return;
  connectedSaid = connected;
  say({ type: 'status', connected, ...(error ? { error } : {}) });
}

async function listening(): Promise<pg.Client> {
  if (listener) return listener;
  // Named, so an operator sees which session listens (pg_stat_activity).
  const c = await connectStore(conn, 5000, 'custody-holds');
  try {
    await migrateSharedStore(c);
    await c.query(`LISTEN ${HOLDS_CHANNEL}`);
    await c.query(`LISTEN ${CONFIG_CHANNEL}`);
    await c.query(`LISTEN ${EVENTS_CHANNEL}`);
  } catch (err) {
    await c.end().catch(() => {});
    throw err;
  }
  c.on('notification', (n) => {
    if (n.channel === CONFIG_CHANNEL) say({ type: 'config' });
    else if (n.channel === EVENTS_CHANNEL) {
      if (n.payload !== gateway) say({ type: 'shipped' });
    } else read();
  });
  c.on('error', () => dropListener());
  c.on('end', () => dropListener());
  listener = c;
  // Listening again: the shared store worker reads every configuration change it missed.
  say({ type: 'config', listening: true });
  // And the console worker reads what the other gateways shipped while nobody listened.
  say({ type: 'shipped' });
  return c;
}

function dropListener(): void {
  if (!listener) return;
  void listener.end().catch(() => {});
  listener = undefined;
  say({ type: 'config', listening: false });
  if (!stopping) read();
}

/** Says the store failed, drops the connection, and waits out the backoff (0.1 s doubling to 5 s). */
async function afterFailure(err: unknown, drop: () => void, backoff: { ms: number }): Promise<void> {
  status(false, messageOf(err));
  drop();
  await new Promise((r) => setTimeout(r, backoff.ms));
  backoff.ms = Math.min(backoff.ms * 2, BACKOFF_MAX_MS);
}

/** Reads what changed (coalesced: one read at a time, one more if asked meanwhile). */
function read(): void {
  if (stopping) return;
  if (reading) {
    readAgain = true;
    return;
  }
  reading = (async () => {
    do {
      readAgain = false;
      try {
        const c = await listening();
        // A gateway whose rows were ignored is proven a member now (its approval's checkpoint arrived): read its pending holds again.
        if (cursor >= 0 && refused.size && (await provenSince(c))) cursor = grantCursor = -1;
        const snapshot = cursor < 0;
        const changes = await members(c, snapshot ? await readPendingHolds(c) : await readHoldChanges(c, cursor));
        cursor = changes.cursor;
        if (snapshot || changes.holds.length || changes.votes.length) say({ type: 'changes', changes, snapshot });
        const granted = await readGrants(c, grantCursor);
        grantCursor = granted.cursor;
        const grants = await membersGrants(c, granted.grants);
        if (grants.length) say({ type: 'grants', grants });
        status(true);
        readBackoff.ms = BACKOFF_MIN_MS;
      } catch (err) {
        await afterFailure(err, dropListenerQuietly, readBackoff);
        readAgain = !stopping;
      }
    } while (readAgain && !stopping);
  })().finally(() => (reading = undefined));
}

/**
 * The rows of `changes` written under the names of members only: gateways this one trusts, or can
 * prove members from those (member-trust.ts). The store's gateways table is not proof: a row there
 * claiming `enrolled` or `approved` is written by whoever can write to the store. Each gateway
 * refused is said once per reason (the gateway's log). A vote counts only when its row is signed
 * by the key proven for the gateway it names (whoever can write to the store can write a row under
 * a member's name); each other vote row is said once, with why.
 */
async function members(c: pg.ClientBase, changes: HoldChanges<SignedStoredVote>): Promise<HoldChanges> {
  const trust = await proven(c, [...changes.holds.map((h) => h.gateway), ...changes.votes.map((v) => v.event.gateway)]);
  const votes = changes.votes.filter((v) => trust.has(v.event.gateway) && signedVote(v, trust.verify(v.event.gateway, v.signed.text, v.signed.signature ?? '')));
  return { ...changes, holds: changes.holds.filter((h) => trust.has(h.gateway)), votes: votes.map(({ signed: _, ...v }) => v) };
}

/**
 * The trust set, with each of `ids` proven a member (member-trust.ts) or refused: each gateway
 * refused is said once per reason (the gateway's log).
 */
async function proven(c: pg.ClientBase, ids: Iterable<string>): Promise<TrustSet> {
  const trust = localTrust.current(...pinnedKeys(db, gateway));
  for (const id of new Set(ids)) {
    const why = await proveMember(c, trust, id, (x) => localTrust.isRemoved(x));
    if (!why) continue;
    // Said once this gateway is admitted (its roots pinned): before, it knows no other member yet, and reads them again once it does.
    if (refusalSaid.get(id) !== why && pinnedRoots(db, gateway).admitted) {
      say({ type: 'refused', gateway: id, reason: why });
      refusalSaid.set(id, why);
    }
    refused.set(id, why);
  }
  return trust;
}

/**
 * The grants of other gateways that count: each names a member, and its row is signed by the key
 * proven for that member (whoever can write to the store can write a row under a member's name, or
 * edit a real one: its signature no longer verifies). Each other row is said once, with why.
 */
async function membersGrants(c: pg.ClientBase, grants: SignedStoredGrant[]): Promise<StoredGrant[]> {
  const others = grants.filter((g) => g.gateway !== gateway);
  const trust = await proven(c, others.map((g) => g.gateway));
  const counted: StoredGrant[] = [];
  for (const { signed, ...g } of others) {
    if (trust.has(g.gateway) && signed.signature !== null && trust.verify(g.gateway, signed.text, signed.signature)) {
      counted.push(g);
      continue;
    }
    const key = `${g.id} ${g.gateway} ${signed.signature ?? ''}`;
    if (grantRefusalSaid.has(key)) continue;
    grantRefusalSaid.add(key);
    const reason = !trust.has(g.gateway) ? `gateway ${g.gateway} is not proven a member` : signed.signature === null ? 'its row is not signed' : `its row's signature does not verify under the key proven for gateway ${g.gateway}`;
    say({ type: 'grant-refused', id: g.id, gateway: g.gateway, reason });
  }
  return counted;
}

/** Whether `v` counts (`verified`: its signature verifies under its gateway's proven key); a row that does not is said once. */
function signedVote(v: SignedStoredVote, verified: boolean): boolean {
  if (verified) return true;
  const key = `${v.hold} ${v.event.gateway} ${v.event.seq}`;
  if (!voteRefusalSaid.has(key)) {
    voteRefusalSaid.add(key);
    const reason = v.signed.signature === null ? 'its row is not signed' : `its row's signature does not verify under the key proven for gateway ${v.event.gateway}`;
    say({ type: 'vote-refused', hold: v.hold, gateway: v.event.gateway, seq: v.event.seq, reason });
  }
  return false;
}

/** Whether a gateway refused before is proven a member now. */
async function provenSince(c: pg.ClientBase): Promise<boolean> {
  const trust = localTrust.current(...pinnedKeys(db, gateway));
  let any = false;
  for (const id of [...refused.keys()]) {
    if (await proveMember(c, trust, id, (x) => localTrust.isRemoved(x))) continue;
    refused.delete(id);
    any = true;
  }
  return any;
}

function dropListenerQuietly(): void {
  const c = listener;
  listener = undefined;
  if (c) say({ type: 'config', listening: false });
  void c?.end().catch(() => {});
}

async function writing(): Promise<pg.Client> {
  if (writer) return writer;
  const c = await connectStore(conn, 5000, 'custody-holds-writer');
  try {
    await migrateSharedStore(c);
  } catch (err) {
    await c.end().catch(() => {});
    throw err;
  }
  writer = c;
  return c;
}

function dropWriter(): void {
  const c = writer;
  writer = undefined;
  void c?.end().catch(() => {});
}

/** Writes, in order; each retried until the store takes it. */
const queue: Exclude<HoldWorkerCommand, { type: 'stop' }>[] = [];
let draining: Promise<void> | undefined;

function drain(): void {
  draining ??= (async () => {
    const backoff = { ms: BACKOFF_MIN_MS };
    while (queue.length && !stopping) {
      const cmd = queue[0]!;
      try {
        const c = await writing();
        const written =
          cmd.type === 'hold' ? await writeHoldRow(c, cmd.row) : cmd.type === 'vote' ? await writeVoteRow(c, cmd.row, await signVoteRow(cmd.row, signRaw)) : await writeGrantRow(c, cmd.row, await signGrantRow(cmd.row, signRaw));
        queue.shift();
        say({ type: 'written', req: cmd.req, written });
        backoff.ms = BACKOFF_MIN_MS;
      } catch (err) {
        await afterFailure(err, dropWriter, backoff);
      }
    }
  })().finally(() => {
    draining = undefined;
    if (queue.length && !stopping) drain();
  });
}

let ticking = false;
async function tick(): Promise<void> {
  if (ticking || stopping) return;
  ticking = true;
  try {
    const c = await writing();
    await renewLease(c, gateway);
    // A gateway removed from the group signs nothing this one accepts from now on, and the grants it gave end.
    for (const [id] of await provenNewRemovals(c, localTrust, pinnedKeys(db, gateway), removedSeen)) {
      removedSeen.add(id);
      localTrust.remove(id);
      say({ type: 'member-removed', gateway: id });
    }
    // Only members' holds are recorded abandoned here: a hold row under an unproven name is nobody's.
    const trust = localTrust.current(...pinnedKeys(db, gateway));
    const orphans = (await claimOrphanedHolds(c, gateway)).filter((o) => trust.has(o.hold.gateway));
    if (orphans.length) say({ type: 'orphans', holds: orphans });
  } catch (err) {
    status(false, messageOf(err));
    dropWriter();
  } finally {
    ticking = false;
  }
  read();
}

const timer = setInterval(() => void tick(), TICK_MS);

async function finish(ms: number): Promise<void> {
  clearInterval(timer);
  // Writes still queued get until `ms` (the gateway's last resolutions: abandoned at stop).
  await Promise.race([(async () => {
    while (queue.length && draining) await draining;
  })(), new Promise((r) => setTimeout(r, ms).unref())]);
  stopping = true;
  await Promise.allSettled([reading, draining]);
  await Promise.allSettled([listener?.end(), writer?.end()]);
  db.close();
  say({ type: 'stopped' });
}

port.on('message', (m: HoldWorkerCommand) => {
  if (m.type === 'stop') {
    void finish(m.ms);
    return;
  }
  queue.push(m);
  drain();
});
void tick();
