/**
 * The console's view of the group (docs/SCALE-OUT.md): the other gateways' sessions and their
 * replay, console sign-in sessions made on any gateway, and the Gateways view with its approvals.
 * Everything it asks of PostgreSQL runs on its own worker thread (team-worker.ts, two pooled
 * connections), so the console never puts a query on the proxies' event loop; this side only
 * posts requests and settles promises. While a console that may see sessions is connected, the
 * worker follows the other gateways' sessions and hands their messages here to be pushed live
 * (session-feed.ts).
 */
import { Worker } from 'node:worker_threads';
import type { GatewayView } from '../../../shared/api';
import type { AuditEvent, SessionFilter, SessionSummary } from '../../../shared/events';
import type { ServerMessageBody } from '../../../shared/messages';
import type { StoreConfig } from '../../../shared/config';
import type { Logger } from '../../log';
import type { BundleFilter, GroupExport } from '../bundle-format';
import { workerSource } from '../../worker-source';
import type { CheckpointSigner } from '../checkpoint-signer';
import type { ConsoleSessionLookup, SharedConsoleSession } from './console-session-rows';
import { gatewayIdentity, type GatewayRow, type GatewayIdentity } from './enrolment';
import { storeConnection } from './schema';
import type { TeamDashboard } from './team-dashboard';

/** What the worker answers, by request. */
export interface TeamOps {
  sessions: { args: { filter: SessionFilter; limit: number }; value: { total: number; sessions: SessionSummary[] } };
  session: { args: { id: string }; value: SessionSummary | null };
  events: { args: { gateway: string; id: string; after: number; limit: number }; value: { events: AuditEvent[]; altered: number[] } };
  holds: { args: { gateway: string; id: string }; value: { view: string; createdSeq: number }[] };
  dashboard: { args: { from: number; to: number; bucketMs: number }; value: TeamDashboard };
  gateways: { args: Record<string, never>; value: GatewayView[] };
  approvable: { args: { id: string }; value: GatewayRow };
  approved: { args: { id: string; seq: number }; value: GatewayView };
  removable: { args: { id: string }; value: GatewayRow };
  removed: { args: { id: string; seq: number }; value: GatewayView };
  putSession: { args: SharedConsoleSession; value: null };
  lookupSession: { args: { digest: string }; value: ConsoleSessionLookup };
  endSessions: { args: { digests: string[] }; value: null };
  /** The group part of an evidence bundle, written into `dir` (group-export.ts). */
  exportChains: { args: { dir: string; filter: BundleFilter; store: string }; value: GroupExport };
  /** Follow the other gateways' sessions (from what they have shipped so far), or stop. */
  follow: { args: { on: boolean }; value: null };
}
export type TeamOp = keyof TeamOps;

/** `shipped`: another gateway announced shipped session events (`NOTIFY custody_events`). */
export type TeamCommand = { type: 'ask'; req: number; op: TeamOp; args: unknown } | { type: 'shipped' } | { type: 'stop' };
export type TeamMessage =
  | { type: 'answer'; req: number; value?: unknown; error?: string }
  | { type: 'ended'; digests: string[] }
  /** The other gateways' session messages, in their order, to push to the consoles. */
  | { type: 'live'; messages: ServerMessageBody[] }
  | { type: 'stopped' };

/** How long a request waits for the worker before it fails (the store may be unreachable). */
const ASK_TIMEOUT_MS = 10_000;
/** How long a console's WebSocket waits for following to start before its `hello` (the store may be slow). */
const FOLLOW_WAIT_MS = 2000;
/** How long the sessions are still followed once the last console left: one that reconnects resumes without a gap. */
const UNFOLLOW_AFTER_MS = 60_000;

/** One console watching the group's sessions (TeamStore.watchSessions). */
export interface SessionWatch {
  /** Settles once the worker follows (or did not answer within 2 s). */
  ready: Promise<void>;
  /** The console left; idempotent. */
  release(): void;
}

export class TeamStoreError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TeamStoreError';
  }
}

export class TeamStore {
  readonly identity: GatewayIdentity;
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  private nextReq = 1;
  private endedListener: ((digests: string[]) => void) | undefined;
  private liveListener: ((messages: ServerMessageBody[]) => void) | undefined;
  private watchers = 0;
  /** Set while the sessions are followed (consoles watching, or within UNFOLLOW_AFTER_MS of the last one leaving). */
  private following: Promise<void> | undefined;
  private unfollowTimer: NodeJS.Timeout | undefined;
  private stopped: Promise<void> | undefined;
  private dead: string | undefined;

  private constructor(
    private readonly worker: Worker,
    identity: GatewayIdentity,
    log: Logger,
  ) {
    this.identity = identity;
    worker.on('message', (m: TeamMessage) => this.take(m));
    worker.on('error', (err) => {
      this.dead = `the shared store console worker failed: ${err.message}`;
      log.error(this.dead);
      this.failAll(this.dead);
    });
    worker.on('exit', () => {
      this.dead ??= 'the shared store console worker has stopped';
      this.failAll(this.dead);
    });
    worker.unref();
  }

  static async start(deps: { dbPath: string; signer: CheckpointSigner; config: StoreConfig; log: Logger }): Promise<TeamStore> {
    const src = workerSource(import.meta.url, './team-worker');
    if (!src) throw new Error('the shared store console worker cannot be loaded from this build');
    const identity = await gatewayIdentity(deps.signer);
    const worker = new Worker(src.entry, { ...src.options, workerData: { dbPath: deps.dbPath, conn: storeConnection(deps.config), identity, signingKey: deps.signer.signingKeyForThread() } });
    return new TeamStore(worker, identity, deps.log);
  }

  /** Asks the worker; rejects with TeamStoreError when the store does not answer (within 10 s, or `timeoutMs`). */
  ask<K extends TeamOp>(op: K, args: TeamOps[K]['args'], timeoutMs = ASK_TIMEOUT_MS): Promise<TeamOps[K]['value']> {
    if (this.dead) return Promise.reject(new TeamStoreError(this.dead));
    const req = this.nextReq++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(req);
        reject(new TeamStoreError(`the shared store did not answer within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      this.waiting.set(req, { resolve: resolve as (v: unknown) => void, reject, timer });
      this.worker.postMessage({ type: 'ask', req, op, args } satisfies TeamCommand);
    });
  }

  /** Where the digests of console sessions ended on any gateway go (about once a second). */
  onEnded(fn: (digests: string[]) => void): void {
    this.endedListener = fn;
  }

  /** Where the other gateways' session messages go while they are followed (the event bus). */
  onLive(fn: (messages: ServerMessageBody[]) => void): void {
    this.liveListener = fn;
  }

  /**
   * A console that may see sessions connected: the other gateways' sessions are followed from now
   * until it and every other such console have left (and UNFOLLOW_AFTER_MS more), so the store is
   * read for them only while someone watches.
   */
  watchSessions(): SessionWatch {
    this.watchers++;
    clearTimeout(this.unfollowTimer);
    this.unfollowTimer = undefined;
    // A store that does not answer now is tried again by the worker each second.
    this.following ??= this.ask('follow', { on: true }).then(
      () => {},
      () => {},
    );
    let wait: NodeJS.Timeout | undefined;
    const ready = Promise.race([this.following, new Promise<void>((r) => (wait = setTimeout(r, FOLLOW_WAIT_MS)))]).finally(() => clearTimeout(wait));
    let released = false;
    return {
      ready,
      release: () => {
        if (released) return;
        released = true;
        if (--this.watchers > 0) return;
        this.unfollowTimer = setTimeout(() => {
          this.following = undefined;
          void this.ask('follow', { on: false }).catch(() => {});
        }, UNFOLLOW_AFTER_MS);
        this.unfollowTimer.unref();
      },
    };
  }

  /** Another gateway shipped session events: read them now, when followed (else the worker ignores it). */
  shipped(): void {
    if (this.following && !this.dead) this.worker.postMessage({ type: 'shipped' } satisfies TeamCommand);
  }

  private take(m: TeamMessage): void {
    if (m.type === 'ended') {
      this.endedListener?.(m.digests);
      return;
    }
    if (m.type === 'live') {
      this.liveListener?.(m.messages);
      return;
    }
    if (m.type === 'stopped') return;
    const w = this.waiting.get(m.req);
    if (!w) return;
    this.waiting.delete(m.req);
    clearTimeout(w.timer);
    if (m.error !== undefined) w.reject(new TeamStoreError(m.error));
    else w.resolve(m.value ?? null);
  }

  private failAll(why: string): void {
    for (const w of this.waiting.values()) {
      clearTimeout(w.timer);
      w.reject(new TeamStoreError(why));
    }
    this.waiting.clear();
  }

  /** Lets the requests in flight finish (within `ms`), then ends the worker. */
  stop(ms = 2000): Promise<void> {
    this.stopped ??= (async () => {
      clearTimeout(this.unfollowTimer);
      const deadline = Date.now() + ms;
      while (this.waiting.size && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      this.worker.postMessage({ type: 'stop' } satisfies TeamCommand);
      await Promise.race([new Promise((r) => this.worker.once('exit', r)), new Promise((r) => setTimeout(r, 1000).unref())]);
      await this.worker.terminate();
    })();
    return this.stopped;
  }
}
