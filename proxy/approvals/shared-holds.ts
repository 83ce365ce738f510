/**
 * Holds across the gateways of a shared store (docs/SCALE-OUT.md, "Holds across gateways"), seen
 * from the gateway's thread. The store is talked to only by the hold worker
 * (proxy/audit/shared-store/hold-sync-worker.ts); this side
 *
 * - tells it every step of a local hold (created, voted on here, ended), written in order;
 * - keeps the holds of other gateways it hears of (pending, and the last ones that ended), lists
 *   them beside the local ones and pushes them over the console's WebSocket like local holds;
 * - takes votes on other gateways' holds: recorded in this gateway's chain as `hold.vote`, citing
 *   the owner's `hold.created` (`refs`), then written to the store; the owner tallies them;
 * - hands the hold queue the votes cast elsewhere on its own holds (it counts persons);
 * - writes the grants its approvals give, and hands the hold queue those other gateways gave (their
 *   rows signed by the key proven for the gateway that held the request: the worker checks), so a
 *   grant covers the requester on every gateway of the group;
 * - records the abandonment of holds whose owner's lease expired (claimed by the worker), in this
 *   gateway's chain, citing the owner's `hold.created` and its last event in the store.
 *
 * Persons are compared by id across gateways. The local user's person (`person_local`) is a
 * different person on each gateway, so in the store it is written as `person_local@<gateway>`.
 */
import type { Worker } from 'node:worker_threads';
import type { StoreConfig } from '../../shared/config';
import type { EventRef, HoldResolvedPayload, HoldVotePayload } from '../../shared/events';
import type { HoldDecisionRequest, HoldView, HoldVote } from '../../shared/holds';
import type { Identity } from '../../shared/identity';
import type { HoldChanges, HoldRowWrite, OrphanedHold, StoredHold, VoteRowWrite } from '../audit/shared-store/hold-rows';
import { type HoldWorkerCommand, type HoldWorkerMessage, startHoldSyncWorker } from '../audit/shared-store/hold-sync';
import { storeConnection } from '../audit/shared-store/schema';
import type { SigningKeySpec } from '../audit/checkpoint-signer';
import { type AuditStore, StoreUnavailableError } from '../audit/store';
import type { EventBus } from '../bus';
import { LOCAL_PERSON } from '../identity/persons';
import type { Logger } from '../log';
import { checkDecision, HoldDecisionError, type HoldQueue, personOf, readDecision } from './hold-queue';
import type { GrantRowWrite, StoredGrant } from '../audit/shared-store/grant-rows';
import type { ChainPosition, GrantGiven, HoldPeers, HoldStep } from './types';

/** How long a vote on another gateway's hold waits for the store before the voter is told it did not reach it. */
const VOTE_WRITE_MS = 5000;
/** Ended holds of other gateways kept for reading (GET /api/holds/:id after the decision). */
const ENDED_KEPT = 1000;

interface RemoteHold {
  view: HoldView;
  created: EventRef;
}

/** The subject as the store knows it: the local user (`local:<user>`) is one per gateway, `local:<user>@<gateway>` elsewhere (console-sessions.ts). */
const storeSubject = (subject: string, gateway: string): string => (subject.startsWith('local:') ? `${subject}@${gateway}` : subject);

/** The person as the store knows it: the local user's person is one per gateway. */
export function storePerson(person: string, gateway: string): string {
  return person === LOCAL_PERSON ? `${LOCAL_PERSON}@${gateway}` : person;
}

function storeView(view: HoldView, gateway: string): HoldView {
  return {
    ...view,
    ...(view.requesterPerson ? { requesterPerson: storePerson(view.requesterPerson, gateway) } : {}),
    votes: view.votes.map((v) => (v.person ? { ...v, person: storePerson(v.person, v.gateway ?? gateway) } : v)),
  };
}

interface SharedHoldsDeps {
  store: AuditStore;
  bus: EventBus;
  holds: HoldQueue;
  log: Logger;
  gateway: string;
  /** This gateway's public key (base64): the hold worker trusts it, and proves the other members from it (member-trust.ts). */
  publicKey: string;
  /** Its checkpoint key, for the hold worker's thread: it signs the vote rows written here. */
  signingKey: SigningKeySpec;
  /** Why this gateway is not admitted to the store (a vote cast here would not count), or undefined. */
  refusal: () => string | undefined;
  /**
   * The store announced a change to keys, persons or configuration, heard on the hold worker's
   * listening connection (one connection listens for both); `listening` when that connection
   * (re)connected (read everything missed) or was lost.
   */
  onConfigChange?: (listening?: boolean) => void;
  /** Another gateway shipped session events (heard on the same connection), or that connection (re)connected. */
  onShipped?: () => void;
}

export class SharedHolds implements HoldPeers {
  private readonly remote = new Map<string, RemoteHold>();
  private readonly waiting = new Map<number, (written: boolean) => void>();
  private nextReq = 1;
  private stopped: Promise<void> | undefined;
  private resolveStopped: (() => void) | undefined;
  private connected = false;

  private constructor(
    private readonly worker: Worker,
    private readonly deps: SharedHoldsDeps,
  ) {
    worker.on('message', (m: HoldWorkerMessage) => this.take(m));
    worker.on('error', (err) => {
      deps.log.error(`shared store: the hold worker failed: ${err.message}; holds of other gateways are not seen until the next start`);
      this.resolveStopped?.();
    });
    worker.on('exit', () => this.resolveStopped?.());
  }

  /** Starts the hold worker for gateway `gateway` on the store `config` names, and joins `holds` to it. */
  static start(deps: SharedHoldsDeps & { config: StoreConfig }): SharedHolds {
    const worker = startHoldSyncWorker(storeConnection(deps.config), { id: deps.gateway, publicKey: deps.publicKey }, deps.store.path, deps.signingKey);
    const shared = new SharedHolds(worker, deps);
    deps.holds.setPeers(shared);
    return shared;
  }

  private send(cmd: HoldWorkerCommand): void {
    this.worker.postMessage(cmd);
  }

  private write(row: { type: 'hold'; row: HoldRowWrite } | { type: 'vote'; row: VoteRowWrite } | { type: 'grant'; row: GrantRowWrite }): Promise<boolean> {
    const req = this.nextReq++;
    const written = new Promise<boolean>((resolve) => this.waiting.set(req, resolve));
    this.send({ ...row, req });
    return written;
  }

  // ---- HoldPeers: local holds out, other gateways' holds in

  changed(view: HoldView, created: ChainPosition, step?: HoldStep): void {
    const me = this.deps.gateway;
    if (step && 'vote' in step) void this.write({ type: 'vote', row: { hold: view.id, event: { gateway: me, ...step.event }, vote: { ...step.vote, person: storePerson(personOf({ person: step.vote.person, subject: step.vote.by }), me) } } });
    void this.write({ type: 'hold', row: { id: view.id, gateway: me, view: storeView(view, me), created, ...(step && 'resolved' in step ? { resolved: { gateway: me, ...step.resolved } } : {}) } });
  }

  granted(grant: GrantGiven, resolved: ChainPosition): void {
    const me = this.deps.gateway;
    void this.write({ type: 'grant', row: { ...grant, gateway: me, subject: storeSubject(grant.subject, me), resolved } });
  }

  get(id: string): HoldView | undefined {
    const r = this.remote.get(id);
    return r ? structuredClone(r.view) : undefined;
  }

  list(): HoldView[] {
    return [...this.remote.values()].map((r) => structuredClone(r.view));
  }

  decide(id: string, identity: Identity, body: HoldDecisionRequest): Promise<HoldView> | undefined {
    const r = this.remote.get(id);
    if (!r) return undefined;
    return this.voteOn(r, identity, body);
  }

  /**
   * A vote here on another gateway's hold: checked as the owner would (on the view the store last
   * gave), recorded in this gateway's chain citing the owner's `hold.created`, then written to the
   * store, where the owner counts it.
   */
  private async voteOn(r: RemoteHold, identity: Identity, body: HoldDecisionRequest): Promise<HoldView> {
    const me = this.deps.gateway;
    const { decision, reason } = readDecision(body);
    const refused = this.deps.refusal();
    if (refused) throw new StoreUnavailableError(new Error(`a vote here on another gateway's hold would not count: ${refused}`));
    const view = r.view;
    if (view.state !== 'pending') throw new HoldDecisionError(409, 'not_pending', `hold ${view.id} is already ${view.state}`);
    if (Date.now() >= view.expiresAt) throw new HoldDecisionError(409, 'not_pending', `hold ${view.id} has expired`);
    // Persons as the store knows them (the local user is one per gateway).
    const voter: Identity = { ...identity, person: storePerson(personOf(identity), me) };
    const grantMs = checkDecision(voter, view, { decision, reason, grant: body.grant }, this.deps.holds.decisionRules);
    const vote: HoldVote & { grantMs?: number } = { by: identity.subject, person: voter.person, byName: identity.name, decision, reason, at: Date.now(), ...(grantMs ? { grantMs } : {}) };
    let events;
    try {
      events = await this.deps.store.writeAsync(
        [],
        [
          {
            kind: 'hold.vote',
            actor: identity.subject,
            connection: view.connection,
            payload: { id: view.id, decision, reason, byName: identity.name, via: identity.via, person: personOf(identity), protocol: view.protocol, refs: [r.created], ...(grantMs ? { grantMs } : {}) } satisfies HoldVotePayload,
            time: vote.at,
          },
        ],
      );
    } catch (err) {
      throw err instanceof StoreUnavailableError ? err : new StoreUnavailableError(err);
    }
    const e = events[0]!;
    const written = this.write({ type: 'vote', row: { hold: view.id, event: { gateway: me, seq: e.seq, hash: e.hash }, vote } });
    const timeout = new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), VOTE_WRITE_MS).unref());
    if ((await Promise.race([written, timeout])) === 'timeout') {
      throw new StoreUnavailableError(new Error(`the vote is recorded on this gateway but has not reached the shared store within ${VOTE_WRITE_MS / 1000} s; gateway ${view.gateway} counts it once it does`));
    }
    // Shown at once; the owner's next write of the hold replaces it.
    const { grantMs: _g, ...cast } = vote;
    const next: HoldView = { ...view, votes: [...view.votes, { ...cast, gateway: me }] };
    if (this.remote.get(view.id) === r && r.view.state === 'pending') {
      r.view = next;
      this.deps.bus.publish({ type: 'hold.updated', hold: structuredClone(next) });
    }
    return structuredClone(next);
  }

  // ---- from the worker

  private take(m: HoldWorkerMessage): void {
    switch (m.type) {
      case 'written':
        this.waiting.get(m.req)?.(m.written);
        this.waiting.delete(m.req);
        return;
      case 'changes':
        this.apply(m.changes, m.snapshot);
        return;
      case 'orphans':
        for (const o of m.holds) void this.abandon(o);
        return;
      case 'config':
        this.deps.onConfigChange?.(m.listening);
        return;
      case 'shipped':
        this.deps.onShipped?.();
        return;
      case 'status':
        if (m.connected !== this.connected) {
          if (m.connected) this.deps.log.info('shared store: following the holds of the other gateways');
          else this.deps.log.warn(`shared store: cannot follow the holds of the other gateways (${m.error ?? 'disconnected'}); retrying`);
        }
        this.connected = m.connected;
        return;
      case 'refused':
        this.deps.log.warn(`shared store: holds and votes written under the name of gateway ${m.gateway} are ignored: ${m.reason}`);
        return;
      case 'grants':
        for (const g of m.grants) this.grant(g);
        return;
      case 'member-removed': {
        const n = this.deps.holds.endGrantsOf(m.gateway);
        if (n) this.deps.log.warn(`shared store: gateway ${m.gateway} was removed from the group: the ${n} grant(s) it gave no longer apply here`);
        return;
      }
      case 'grant-refused':
        this.deps.log.warn(`shared store: the grant ${m.id} written under the name of gateway ${m.gateway} is not applied: ${m.reason}`);
        return;
      case 'vote-refused':
        this.deps.log.warn(`shared store: the vote on hold ${m.hold} written under the name of gateway ${m.gateway} (seq ${m.seq}) is not counted: ${m.reason}`);
        return;
      case 'stopped':
        this.resolveStopped?.();
        return;
      default:
        m satisfies never;
    }
  }

  private apply(changes: HoldChanges, snapshot: boolean): void {
    const me = this.deps.gateway;
    for (const h of changes.holds) {
      if (h.gateway === me) this.own(h, snapshot);
      else this.other(h);
    }
    // Votes cast elsewhere on this gateway's holds are counted here (the owner's view carries them to the others).
    for (const v of changes.votes) if (v.event.gateway !== me && this.deps.holds.isPending(v.hold)) void this.deps.holds.remoteVote(v.hold, v.vote, v.event);
  }

  /** A grant another gateway gave: applied here too (the worker checked its signature). */
  private grant(g: StoredGrant): void {
    if (g.gateway === this.deps.gateway) return;
    if (!this.deps.holds.remoteGrant(g)) return;
    this.deps.log.info(`shared store: grant ${g.id} (hold ${g.hold} on gateway ${g.gateway}) covers ${g.subject} on ${g.connection} for rule ${g.rule} until ${new Date(g.expiresAt).toISOString()}`);
  }

  private own(h: StoredHold, snapshot: boolean): void {
    const holds = this.deps.holds;
    if (h.view.state !== 'pending' && h.resolvedBy && h.resolvedBy !== this.deps.gateway) {
      void holds.endedElsewhere(h.id, h.resolvedBy, h.view.resolution ?? 'abandoned');
      return;
    }
    if (snapshot && h.view.state === 'pending' && !holds.isPending(h.id)) void this.endLeftover(h);
  }

  /** A hold of this gateway left pending in the store by a previous run: the local record says how it ended. */
  private async endLeftover(h: StoredHold): Promise<void> {
    try {
      const [row] = await this.deps.store.readAsync<{ view: string }>('SELECT view FROM holds WHERE id = ?', [h.id]);
      const local = row ? (JSON.parse(row.view) as HoldView) : undefined;
      if (local && local.state !== 'pending') await this.write({ type: 'hold', row: { id: h.id, gateway: this.deps.gateway, view: storeView(local, this.deps.gateway), created: { seq: h.created.seq, hash: h.created.hash } } });
    } catch (err) {
      this.deps.log.warn(`hold ${h.id}: cannot read how it ended to tell the shared store (${err instanceof Error ? err.message : String(err)})`);
    }
  }

  private other(h: StoredHold): void {
    const before = this.remote.get(h.id);
    const view: HoldView = { ...h.view, gateway: h.gateway, ...(h.gatewayName ? { gatewayName: h.gatewayName } : {}) };
    this.remote.delete(h.id);
    this.remote.set(h.id, { view, created: h.created });
    const type = view.state !== 'pending' ? 'hold.resolved' : before ? 'hold.updated' : 'hold.created';
    if (before?.view.state !== 'pending' && before && view.state !== 'pending') return;
    this.deps.bus.publish({ type, hold: structuredClone(view) });
    if (this.remote.size > ENDED_KEPT) {
      for (const [id, r] of this.remote) {
        if (this.remote.size <= ENDED_KEPT) break;
        if (r.view.state !== 'pending') this.remote.delete(id);
      }
    }
  }

  /** Records the abandonment of a hold whose owner's lease expired, then writes it to the store. */
  private async abandon(o: OrphanedHold): Promise<void> {
    const me = this.deps.gateway;
    const h = o.hold;
    const now = Date.now();
    const reason = `gateway ${h.gateway} stopped renewing its lease (last at ${new Date(o.leaseRenewedAt).toISOString()}) before a decision`;
    const view: HoldView = { ...h.view, state: 'abandoned', resolvedAt: now, resolution: reason };
    const refs: EventRef[] = [h.created, ...(o.lastEvent ? [o.lastEvent] : [])];
    try {
      const [e] = await this.deps.store.writeAsync(
        [],
        [
          {
            kind: 'hold.resolved',
            actor: 'system',
            connection: view.connection,
            payload: { id: h.id, state: 'abandoned', reason, decidedBy: [], rule: view.rule, requester: view.requester, protocol: view.protocol, owner: h.gateway, refs } satisfies HoldResolvedPayload,
            time: now,
          },
        ],
      );
      await this.write({ type: 'hold', row: { id: h.id, gateway: h.gateway, view, created: { seq: h.created.seq, hash: h.created.hash }, resolved: { gateway: me, seq: e!.seq, hash: e!.hash } } });
    } catch (err) {
      this.deps.log.error(`hold ${h.id} of gateway ${h.gateway}: cannot record it abandoned: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  /** Lets queued writes reach the store (within `ms`), then ends the worker. */
  stop(ms = 2000): Promise<void> {
    this.stopped ??= new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms + 2000);
      this.resolveStopped = () => {
        clearTimeout(timer);
        resolve();
      };
      this.send({ type: 'stop', ms });
    }).finally(() => void this.worker.terminate());
    return this.stopped;
  }
}
