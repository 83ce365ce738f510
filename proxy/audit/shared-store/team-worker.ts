/**
 * The console's worker thread on the shared store (started by team.ts): the other gateways'
 * sessions and events (session-index.ts), console sign-in sessions (console-session-rows.ts), the
 * group's gateways and approvals. Two pooled connections, so a long replay read does not hold up a
 * sign-in check; a read-only SQLite connection for whom this gateway trusts (its own approvals) and
 * for shipping an approval it records. About once a second it reads the console sessions ended
 * anywhere and hands their digests to the gateway's thread. While asked to follow the other
 * gateways' sessions, it reads what they ship at each announcement and once a second, and hands
 * the console messages to the gateway's thread (session-feed.ts).
 */
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import pg from 'pg';
import type { GatewayView } from '../../../shared/api';
import { rawSigner, type SigningKeySpec } from '../checkpoint-signer';
import { endConsoleSessions, lookupConsoleSession, pruneConsoleSessions, putConsoleSession, readConsoleSessionEnds } from './console-session-rows';
import { approvalProblem, gatewayRow, type GatewayIdentity, type GatewayRow, listGateways, markGateway, notInStore, pickGateway, removalProblem } from './enrolment';
import { LocalTrust } from './key-sync';
import { MemberStatuses, type RowProof } from './member-status';
import { pinnedKeys, provenNewRemovals } from './member-trust';
import { migrateSharedStore, type StoreConnection } from './schema';
import { SessionFeed } from './session-feed';
import { listTeamSessions, teamSession, teamSessionEvents, teamSessionHolds } from './session-index';
import { shipAll } from './shipping';
import type { TeamCommand, TeamMessage, TeamOp, TeamOps } from './team';
import { writeGroupChains } from './group-export';
import { teamDashboard } from './team-dashboard';

const { dbPath, conn, identity, signingKey } = workerData as { dbPath: string; conn: StoreConnection; identity: GatewayIdentity; signingKey: SigningKeySpec };
const signRaw = rawSigner(signingKey);
const port = parentPort!;
const self = identity.id;

const ENDS_EVERY_MS = 1000;
const PRUNE_EVERY_MS = 3_600_000;

const pool = new pg.Pool({ ...conn, max: 2, idleTimeoutMillis: 30_000, connectionTimeoutMillis: 5000, application_name: 'custody-console' });
pool.on('error', () => {});
const db = new Database(dbPath, { readonly: true, fileMustExist: true });
const localTrust = new LocalTrust(db, identity);
/** Whether the gateways table's statuses are proven (the Gateways view), kept across requests; the removals readEnds finds count too. */
const statuses = new MemberStatuses(db, identity, (id) => localTrust.isRemoved(id));
let migrated: Promise<unknown> | undefined;
let stopping = false;
let endsCursor = 0;
let lastPrune = 0;
let timer: NodeJS.Timeout | undefined;
const feed = new SessionFeed(self);
let following = false;
let feeding: Promise<void> | undefined;
let feedAgain = false;

function say(m: TeamMessage): void {
  port.postMessage(m);
}

/** Runs `fn` on a pooled connection, once the store's schema is current. */
async function withClient<T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
  const c = await pool.connect();
  try {
    migrated ??= migrateSharedStore(c).catch((err: unknown) => {
      migrated = undefined;
      throw err;
    });
    await migrated;
    return await fn(c);
  } finally {
    c.release();
  }
}

/** Gateways found removed from the group (their keys left the trust set). */
const removedSeen = new Set<string>();

/** Whom this gateway trusts: itself, those it approved, and the gateway that approved it (pinned at admission). */
function trust() {
  return localTrust.current(...pinnedKeys(db, self));
}

/** The group's gateways, each with whether its table status is proven from this gateway's roots (member-status.ts). */
async function gatewayViews(c: pg.ClientBase): Promise<GatewayView[]> {
  const leases = new Map(
    (await c.query<{ gateway: string; renewed_at: string; expires_at: string }>('SELECT gateway, renewed_at, expires_at FROM custody_leases')).rows.map((l) => [l.gateway, { renewedAt: Number(l.renewed_at), expiresAt: Number(l.expires_at) }]),
  );
  const rows = await listGateways(c);
  const proofs = await statuses.of(c, rows);
  return rows.map((r) => view(r, leases.get(r.id) ?? null, proofs.get(r.id)!));
}

/** One gateway's view, after an approval or a removal recorded here. */
async function gatewayView(c: pg.ClientBase, id: string): Promise<GatewayView> {
  const row = await gatewayRow(c, id);
  if (!row) throw new Error(`gateway ${id} is no longer in the shared store`);
  return view(row, null, (await statuses.of(c, [row])).get(id)!);
}

function view(r: GatewayRow, lease: GatewayView['lease'], proof: RowProof): GatewayView {
  return { id: r.id, name: r.name, status: r.status, requestedAt: r.requestedAt, approvedBy: r.approvedBy, approvalSeq: r.approvalSeq, removedBy: r.removedBy, removalSeq: r.removalSeq, shippedSeq: r.shippedSeq, lastSeen: r.lastSeen, lease, ...proof, self: r.id === self };
}

/** Why this gateway may not approve or remove, from its own records (never its row's status); the target, and whether its status is proven. */
async function standingAnd(c: pg.ClientBase, id: string): Promise<{ standing: string | undefined; target: GatewayRow; proof: RowProof }> {
  const standing = (await gatewayRow(c, self)) ? await statuses.standing(c) : notInStore(self);
  const target = pickGateway(await listGateways(c), id);
  return { standing, target, proof: (await statuses.of(c, [target])).get(target.id)! };
}

type PooledOp = Exclude<TeamOp, 'follow'>;
type Handler<K extends PooledOp> = (c: pg.PoolClient, args: TeamOps[K]['args']) => Promise<TeamOps[K]['value']>;

const handlers: { [K in PooledOp]: Handler<K> } = {
  sessions: (c, a) => listTeamSessions(c, self, a.filter, a.limit),
  session: async (c, a) => (await teamSession(c, self, a.id)) ?? null,
  events: (c, a) => teamSessionEvents(c, a.gateway, a.id, a.after, a.limit),
  holds: (c, a) => teamSessionHolds(c, a.gateway, a.id),
  dashboard: (c, a) => teamDashboard(c, self, a.from, a.to, a.bucketMs),
  gateways: (c) => gatewayViews(c),
  // What `custody gateways approve` checks before it records anything.
  approvable: async (c, a) => {
    const { standing, target, proof } = await standingAnd(c, a.id);
    const problem = approvalProblem(self, standing, target, proof);
    if (problem) throw new Error(problem);
    return target;
  },
  // What `custody gateways remove` checks before it records anything.
  removable: async (c, a) => {
    const { standing, target, proof } = await standingAnd(c, a.id);
    const problem = removalProblem(self, standing, target, proof);
    if (problem) throw new Error(problem);
    return target;
  },
  // The removal is in this gateway's chain, under a signed checkpoint: ship both, then mark the row
  // (its index replacing one written without a proven removal: `removable` checked there was none).
  removed: async (c, a) => {
    await shipAll(c, db, self);
    await markGateway(c, 'removed', a.id, self, a.seq, true);
    return gatewayView(c, a.id);
  },
  // The approval is in this gateway's chain, under a signed checkpoint: ship both, then mark the row.
  approved: async (c, a) => {
    await shipAll(c, db, self);
    await markGateway(c, 'approved', a.id, self, a.seq);
    return gatewayView(c, a.id);
  },
  putSession: async (c, a) => {
    await putConsoleSession(c, a, signRaw);
    return null;
  },
  lookupSession: (c, a) => lookupConsoleSession(c, a.digest, trust(), Date.now(), (id) => localTrust.isRemoved(id)),
  endSessions: async (c, a) => {
    await endConsoleSessions(c, a.digests, self);
    return null;
  },
  exportChains: (c, a) => writeGroupChains(c, a.dir, { filter: a.filter, store: a.store }),
};

/**
 * Reads what the other gateways shipped since the last read (the first time, only where they
 * are), one read at a time and one more if asked meanwhile. A read that fails is tried again at
 * the next announcement or second, from the same cursors.
 */
function readFeed(): Promise<void> {
  if (!following || stopping) return Promise.resolve();
  if (feeding) {
    feedAgain = true;
    return feeding;
  }
  feeding = (async () => {
    do {
      feedAgain = false;
      try {
        await withClient((c) => (feed.started ? feed.read(c, (messages) => say({ type: 'live', messages })) : feed.start(c)));
      } catch {
        // the store is unreachable: the backstop asks again
      }
    } while (feedAgain && following && !stopping);
  })().finally(() => (feeding = undefined));
  return feeding;
}

async function follow(on: boolean): Promise<null> {
  following = on;
  if (on) await readFeed();
  else feed.stop();
  return null;
}

/** Runs request `op`: on a pooled connection, but for `follow`, whose reads take their own. */
function run(op: TeamOp, args: unknown): Promise<unknown> {
  if (op === 'follow') return follow((args as TeamOps['follow']['args']).on);
  const handler = handlers[op] as Handler<PooledOp> | undefined;
  if (!handler) throw new Error(`unknown request ${op}`);
  return withClient((c) => handler(c, args as never));
}

async function answer(req: number, op: TeamOp, args: unknown): Promise<void> {
  try {
    const value = await run(op, args);
    say({ type: 'answer', req, value });
  } catch (err) {
    say({ type: 'answer', req, error: err instanceof Error ? err.message : String(err) });
  }
}

/** Console sessions ended on any gateway since the last look; a failed look is tried again next time. */
async function readEnds(): Promise<void> {
  try {
    await withClient(async (c) => {
      // A gateway removed from the group signs no sign-in this one accepts (checked each round, not per lookup).
      for (const [id] of await provenNewRemovals(c, localTrust, pinnedKeys(db, self), removedSeen)) {
        removedSeen.add(id);
        localTrust.remove(id);
      }
      const ends = await readConsoleSessionEnds(c, endsCursor);
      endsCursor = ends.cursor;
      if (ends.digests.length) say({ type: 'ended', digests: ends.digests });
      if (Date.now() - lastPrune > PRUNE_EVERY_MS) {
        lastPrune = Date.now();
        await pruneConsoleSessions(c);
      }
    });
  } catch {
    // the store is unreachable: the next round asks again from the same cursor
  }
  // The backstop for an announcement of shipped events missed (or not heard while not listening).
  void readFeed();
  if (!stopping) timer = setTimeout(() => void readEnds(), ENDS_EVERY_MS);
}

port.on('message', (m: TeamCommand) => {
  if (m.type === 'ask') void answer(m.req, m.op, m.args);
  else if (m.type === 'shipped') void readFeed();
  else if (m.type === 'stop') {
    stopping = true;
    clearTimeout(timer);
    void pool.end().catch(() => {}).finally(() => {
      db.close();
      say({ type: 'stopped' });
      process.exit(0);
    });
  }
});
void readEnds();
