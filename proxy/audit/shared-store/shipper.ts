/**
 * This gateway as a member of a shared PostgreSQL store (`store.url`, docs/SCALE-OUT.md), seen
 * from the gateway's thread. The store is talked to only by a worker thread (shipper-worker.ts);
 * this side keeps its last status, so admission and health never wait on the store:
 *
 * - admission: a gateway serves only once the store says it is enrolled or approved. A gateway
 *   admitted before (recorded in the local meta table) serves while the store cannot be reached,
 *   recording locally, and ships when it returns; a pending one refuses every request, saying why.
 * - enrolment by the first gateway is recorded in its own chain (`gateway.enrolled`), once.
 * - health shows how far the store is behind the local chain.
 */
import { Worker } from 'node:worker_threads';
import type { SharedStoreHealth } from '../../../shared/api';
import { parseDuration, type StoreConfig } from '../../../shared/config';
import type { Logger } from '../../log';
import { workerSource } from '../../worker-source';
import type { CheckpointSigner } from '../checkpoint-signer';
import type { RemoteCommitter } from '../remote-commit';
import type { AuditStore } from '../store';
import { gatewayIdentity, type EnrolmentStatus, type GatewayIdentity } from './enrolment';
import type { PulledDocument } from './doc-sync';
import type { PulledKeys } from './key-sync';
import type { PulledPersons } from './person-sync';
import { storeConnection, storeLabel } from './schema';

export interface ShipperStatus {
  /** connecting: no answer from the store yet; pending: waiting for approval; admitted: shipping. */
  phase: 'connecting' | 'pending' | 'admitted';
  group?: string;
  enrolment?: EnrolmentStatus;
  /** This start enrolled the gateway as the store's first. */
  first?: boolean;
  /** Why a pending gateway is not admitted yet. */
  reason?: string;
  shippedSeq: number;
  localSeq: number;
  shippedAt?: number;
  /** This gateway was removed from the group (a `gateway.removed` naming it in another member's chain). */
  removed?: { by: string; seq: number; reason: string };
  /** The gateway that approved this one (its id and public key), learned at admission. */
  approvedBy?: { id: string; publicKey: string };
  /**
   * The group's enrolled (first) gateway, learned at admission when this one is not it: a root of
   * the members this gateway proves (member-trust.ts), trusted on first use as `custody verify`
   * without `--keys` trusts it.
   */
  groupRoot?: { id: string; publicKey: string };
  /** The store's copy of this chain no longer ends where it was shipped to (shipping.ts, shippedTailProblem). */
  tampered?: { shippedSeq: number; shippedHash: string; foundSeq: number; foundHash: string; message: string };
  /** When the store last answered a round (keys exchanged or events shipped). */
  contactAt?: number;
  /** The last failure to reach or write the store, while it lasts. */
  error?: string;
  failingSince?: number;
}

/**
 * `commit`: ship everything committed locally now, and answer `committed` with the same id (remote-commit.ts);
 * with `push`, only once the keys, persons and rules changed here are pushed too.
 * `sync`: exchange keys, persons and configuration now: push what changed here, or (`pull`) read
 * what the store announced changed; `listening` says whether anything hears the store's announcements.
 */
export type ShipperCommand = { type: 'stop'; ms: number } | { type: 'commit'; id: number; push?: boolean } | { type: 'sync'; pull: boolean; listening?: boolean };
type ShipperMessage =
  | { type: 'status'; status: ShipperStatus }
  | { type: 'committed'; ids: number[]; error?: string }
  | { type: 'stopped'; error?: string }
  | { type: 'keys'; keys: PulledKeys }
  | { type: 'persons'; persons: PulledPersons }
  | { type: 'documents'; docs: PulledDocument[] };

/** meta key: the store group and status this gateway was admitted with (it then serves through outages). */
export const ADMISSION_META = 'store.admission';

interface Admission {
  group: string;
  gateway: string;
  status: EnrolmentStatus;
  /** Pinned at the first admission: whose key rows this gateway trusts besides its own and those it approves. */
  approvedBy?: { id: string; publicKey: string };
  /** Pinned at the first admission (or the first start that knows of it): the group's enrolled gateway (ShipperStatus.groupRoot). */
  groupRoot?: { id: string; publicKey: string };
}

interface MemberDeps {
  store: AuditStore;
  log: Logger;
  /** Rows of the shared key and SSH key tables this gateway's tables lack or hold differently (key-sync.ts). */
  onKeys?: (keys: PulledKeys) => void;
  /** Persons, credential links and locks from the group that this gateway's tables lack (person-sync.ts). */
  onPersons?: (persons: PulledPersons) => void;
  /** A connections, policy or masking version from the group that differs from what this gateway enforces (doc-sync.ts). */
  onDocument?: (doc: PulledDocument) => void;
}

/** Events that record a change of what the group shares (keys, persons, links, locks, policies, masking rules, console connections). */
const SYNCED_KINDS = new Set<string>(['key.created', 'key.revoked', 'person.created', 'person.linked', 'person.locked', 'policy.changed', 'masking.changed', 'connection.changed']);

/** How far behind the store may be before health says `degraded`. */
const LAG_DEGRADED_MS = 5000;

export class SharedStoreMember implements RemoteCommitter {
  readonly identity: GatewayIdentity;
  private status: ShipperStatus = { phase: 'connecting', shippedSeq: 0, localSeq: 0 };
  private admittedBefore: Admission | undefined;
  private stopped: Promise<string | undefined> | undefined;
  private resolveStopped: ((error: string | undefined) => void) | undefined;
  /** Since when the store has been behind the local chain (cleared when it catches up). */
  private behindSince: number | undefined;
  private readonly label: string;
  /** Admission stops after this long without an answer from the store (`store.staleAfter`). */
  private readonly staleAfterMs: number;
  /** Until the store first answers, staleness counts from the start. */
  private readonly startedAt = Date.now();
  /** Remote commits asked of the worker and not answered yet (`audit.remoteCommit: sync`). */
  private readonly commits = new Map<number, (why: string | undefined) => void>();
  private nextCommit = 1;

  private constructor(
    private readonly worker: Worker,
    private readonly deps: MemberDeps,
    identity: GatewayIdentity,
    config: StoreConfig,
  ) {
    this.identity = identity;
    this.label = storeLabel(config.url);
    this.staleAfterMs = parseDuration(config.staleAfter);
    const raw = deps.store.meta(ADMISSION_META);
    const before = raw ? (JSON.parse(raw) as Admission) : undefined;
    this.admittedBefore = before?.gateway === identity.id ? before : undefined;
    worker.on('message', (m: ShipperMessage) => this.take(m));
    // A key, person or policy changed here goes to the store at once (after the transaction that
    // wrote it has committed), not at the worker's next look.
    deps.store.onAppend((e) => {
      if (SYNCED_KINDS.has(e.kind)) this.syncSoon();
    });
    worker.on('error', (err) => {
      this.status = { ...this.status, error: `the shared store worker failed: ${err.message}`, failingSince: this.status.failingSince ?? Date.now() };
      deps.log.error(`shared store: ${this.status.error}`);
      this.failCommits(this.status.error ?? err.message);
      this.resolveStopped?.(err.message);
    });
    worker.on('exit', (code) => {
      // Ended without being asked: nothing ships any more, and health says so.
      if (!this.stopped) this.status = { ...this.status, error: `the shared store worker exited (code ${code}); events are kept locally and ship at the next start`, failingSince: this.status.failingSince ?? Date.now() };
      this.failCommits(this.status.error ?? 'the shared store worker has stopped');
      this.resolveStopped?.(undefined);
    });
  }

  /** Starts the worker that joins the store `config` names and ships this gateway's chain to it. */
  static async start(deps: MemberDeps & { signer: CheckpointSigner; config: StoreConfig }): Promise<SharedStoreMember> {
    const src = workerSource(import.meta.url, './shipper-worker');
    if (!src) throw new Error('the shared store worker cannot be loaded from this build');
    let identity: GatewayIdentity;
    try {
      identity = await gatewayIdentity(deps.signer);
    } catch (err) {
      // In a group the key signs more than checkpoints: without it the gateway can neither enrol nor share.
      throw new Error(`the shared store ${storeLabel(deps.config.url)} needs this gateway's signature (its enrolment request, and the key, vote and console rows it shares), and the checkpoint signer failed: ${(err as Error).message}; fix the signer and start again`);
    }
    // The worker signs this gateway's key rows with its checkpoint key (key-sync.ts): a key file's
    // key is handed over in this process, an audit.signer program is run from the worker.
    const worker = new Worker(src.entry, { ...src.options, workerData: { dbPath: deps.store.path, conn: storeConnection(deps.config), identity, signingKey: deps.signer.signingKeyForThread(), trust: deps.config.trust } });
    const member = new SharedStoreMember(worker, deps, identity, deps.config);
    deps.log.info(`shared store ${member.label}: this gateway is ${identity.id}${member.admittedBefore ? ` (${member.admittedBefore.status} before)` : ''}`);
    return member;
  }

  private take(m: ShipperMessage): void {
    if (m.type === 'committed') {
      for (const id of m.ids) {
        const done = this.commits.get(id);
        this.commits.delete(id);
        done?.(m.error);
      }
      return;
    }
    if (m.type === 'keys') {
      this.deps.onKeys?.(m.keys);
      return;
    }
    if (m.type === 'persons') {
      this.deps.onPersons?.(m.persons);
      return;
    }
    if (m.type === 'documents') {
      for (const d of m.docs) this.deps.onDocument?.(d);
      return;
    }
    if (m.type === 'stopped') {
      if (m.error) this.deps.log.warn(`shared store: ${m.error}; the rest ships at the next start`);
      this.failCommits('the shared store worker has stopped');
      this.resolveStopped?.(m.error);
      return;
    }
    const was = this.status;
    this.status = m.status;
    const s = m.status;
    if (s.phase === 'pending' && was.phase !== 'pending') this.deps.log.warn(`shared store ${this.label}: ${this.refusal()}`);
    if (s.phase === 'admitted' && was.phase !== 'admitted') this.admitted(s);
    if (s.removed && !was.removed) this.deps.log.error(`shared store ${this.label}: ${this.refusal()}`);
    if (s.tampered && s.tampered.message !== was.tampered?.message) {
      // Recorded in this gateway's own chain, which still holds every row the store lost.
      this.deps.log.error(`shared store ${this.label}: ${s.tampered.message}`);
      try {
        this.deps.store.append({ kind: 'store.tampered', actor: 'system', payload: { store: this.label, ...s.tampered } });
      } catch (err) {
        this.deps.log.error(`shared store: the tampering could not be recorded here (${(err as Error).message})`);
      }
    }
    if (s.error && !was.error) this.deps.log.warn(`shared store ${this.label}: cannot ship (${s.error}); retrying, events are kept locally`);
    if (!s.error && was.error) this.deps.log.info(`shared store ${this.label}: reachable again`);
    if (s.localSeq > s.shippedSeq) this.behindSince ??= Date.now();
    else this.behindSince = undefined;
  }

  private admitted(s: ShipperStatus): void {
    const group = s.group!;
    const status = s.enrolment!;
    const before = this.admittedBefore;
    if (before && before.group === group && ((!before.approvedBy && s.approvedBy) || (!before.groupRoot && s.groupRoot))) {
      this.admittedBefore = { ...before, ...(before.approvedBy || !s.approvedBy ? {} : { approvedBy: s.approvedBy }), ...(before.groupRoot || !s.groupRoot ? {} : { groupRoot: s.groupRoot }) };
      this.deps.store.setMeta(ADMISSION_META, JSON.stringify(this.admittedBefore));
    }
    if (!before || before.group !== group) {
      // Recorded once per store: the first gateway's own chain says it enrolled the group.
      if (status === 'enrolled') {
        const { id, publicKey, keyName, name } = this.identity;
        this.deps.store.append({ kind: 'gateway.enrolled', actor: 'system', payload: { group, id, fingerprint: id, publicKey, keyName, name, first: !!s.first } });
      }
      this.admittedBefore = { group, gateway: this.identity.id, status, ...(s.approvedBy ? { approvedBy: s.approvedBy } : {}), ...(s.groupRoot ? { groupRoot: s.groupRoot } : {}) };
      this.deps.store.setMeta(ADMISSION_META, JSON.stringify(this.admittedBefore));
    }
    this.deps.log.info(`shared store ${this.label}: ${status === 'enrolled' ? 'enrolled (first gateway of the group)' : 'approved'}; shipping this gateway's chain`);
  }

  /** Why this gateway refuses traffic, or undefined when it serves. */
  refusal(): string | undefined {
    const s = this.status;
    if (s.removed) return `this gateway was removed from the group by ${s.removed.by}${s.removed.reason ? ` (${s.removed.reason})` : ''}: it serves nothing; start it on an empty data dir to ask to join again`;
    if (s.phase === 'admitted') return this.staleness();
    if (s.phase === 'pending') return `this gateway is waiting for enrolment in the shared store (${s.reason ?? 'not approved yet'}): an admin approves it with \`custody gateways approve ${this.identity.id}\``;
    if (this.admittedBefore) return this.staleness();
    return `this gateway has not joined the shared store ${this.label} yet${s.error ? ` (${s.error})` : ''}; it serves once the store answers and admits it`;
  }

  /**
   * An admitted gateway that has not heard from the store for `store.staleAfter` admits nothing new:
   * a key revoked on another gateway meanwhile would still work here.
   */
  private staleness(): string | undefined {
    const last = this.status.contactAt ?? this.startedAt;
    const silent = Date.now() - last;
    if (silent <= this.staleAfterMs) return undefined;
    const since = this.status.contactAt ? `since ${new Date(last).toISOString()}` : 'since it started';
    return `this gateway has not heard from the shared store ${this.label} ${since} (${(silent / 1000).toFixed(1)} s, more than store.staleAfter ${this.staleAfterMs / 1000} s${this.status.error ? `: ${this.status.error}` : ''}), so it cannot confirm that keys and revocations are current; it admits nothing new until the store answers`;
  }

  /** How long a batch waits for the store under `audit.remoteCommit: sync`: as long as admission trusts silence. */
  get remoteCommitTimeoutMs(): number {
    return this.staleAfterMs;
  }

  /** Why a batch cannot be committed in the store now: this gateway does not serve, or the store is failing. */
  remoteRefusal(): string | undefined {
    const refused = this.refusal();
    if (refused) return refused;
    if (this.stopped) return 'the shared store worker has stopped';
    if (this.status.error) return `the shared store ${this.label} cannot be written since ${new Date(this.status.failingSince ?? Date.now()).toISOString()}: ${this.status.error}`;
    return undefined;
  }

  private syncQueued = false;
  private syncSoon(): void {
    if (this.syncQueued) return;
    this.syncQueued = true;
    setImmediate(() => {
      this.syncQueued = false;
      this.worker.postMessage({ type: 'sync', pull: false } satisfies ShipperCommand);
    });
  }

  /**
   * The store announced a change to keys, persons or configuration (`NOTIFY custody_config`), or
   * the connection that hears it (re)connected or was lost (`listening`): the worker reads what
   * changed now. While nothing listens, it reads every second instead of every five.
   */
  configChanged(listening?: boolean): void {
    this.worker.postMessage({ type: 'sync', pull: true, ...(listening !== undefined ? { listening } : {}) } satisfies ShipperCommand);
  }

  /** Asks the worker to ship what is committed locally now (and, with `push`, the shared rows changed here); `done` once the store has committed it, or why not. */
  commitRemote(done: (why: string | undefined) => void, push?: boolean): void {
    const id = this.nextCommit++;
    this.commits.set(id, done);
    this.worker.postMessage({ type: 'commit', id, ...(push ? { push } : {}) } satisfies ShipperCommand);
  }

  private failCommits(why: string): void {
    const waiting = [...this.commits.values()];
    this.commits.clear();
    for (const done of waiting) done(why);
  }

  health(): SharedStoreHealth {
    const s = this.status;
    // The local head from memory (never a query): the worker's figure is as of its last round.
    const localSeq = Math.max(s.localSeq, this.deps.store.head().size);
    const lagEvents = s.phase === 'pending' ? 0 : Math.max(0, localSeq - s.shippedSeq);
    const lagMs = this.behindSince === undefined ? 0 : Date.now() - this.behindSince;
    const refusal = this.refusal();
    const cause = refusal ?? (s.tampered ? `${s.tampered.message}; this gateway's own chain still holds them (custody verify --store reports the store's copy)` : undefined) ?? (s.error ? `cannot ship to the shared store (${s.error}); ${lagEvents} event(s) wait locally` : lagMs > LAG_DEGRADED_MS ? `the shared store is ${lagEvents} event(s) behind` : undefined);
    return {
      state: cause ? 'degraded' : 'ok',
      ...(cause ? { cause } : {}),
      gateway: this.identity.id,
      phase: s.phase === 'connecting' && this.admittedBefore ? 'admitted' : s.phase,
      enrolment: s.enrolment ?? this.admittedBefore?.status ?? null,
      shippedSeq: s.shippedSeq,
      localSeq,
      lagEvents,
      lagMs,
      ...(s.failingSince !== undefined ? { failingSince: s.failingSince } : {}),
    };
  }

  /** Ships what is committed locally (within `ms`), then ends the worker. */
  stop(ms = 3000): Promise<string | undefined> {
    this.stopped ??= new Promise<string | undefined>((resolve) => {
      const timer = setTimeout(() => resolve('the shared store worker did not stop in time'), ms + 2000);
      this.resolveStopped = (e) => {
        clearTimeout(timer);
        resolve(e);
      };
      this.worker.postMessage({ type: 'stop', ms } satisfies ShipperCommand);
    }).finally(() => void this.worker.terminate());
    return this.stopped;
  }
}
