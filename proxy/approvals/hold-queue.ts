/**
 * The hold queue: a request that a `hold` policy rule matched waits here until approvers decide
 * (DESIGN.md, "Hold for approval"). Each hold is
 *
 * - persisted in the `holds` table (the row's `view` is the shared HoldView), so the whole history
 *   stays queryable after it ends;
 * - recorded in the hash-chained log as `hold.created`, one `hold.vote` per decision and one
 *   `hold.resolved`, in the request's session;
 * - published on the control-plane bus as `hold.created` / `hold.updated` / `hold.resolved`, which
 *   the WebSocket pushes to the approvers allowed to decide it.
 *
 * Rules: `min` distinct approvers approve → approved; `denyMin` distinct deciders deny → denied; the
 * timeout passes → expired (the client is denied); the client goes away (its AbortSignal) →
 * cancelled; the gateway stops → abandoned (on a crash, the next start marks leftovers abandoned).
 * Nobody approves their own request, and k-of-N counts persons, not credentials (see
 * whyCannotDecide and proxy/identity/persons.ts). Only members of the hold's approver
 * groups, or admins, may decide. An approval may carry a time-boxed grant (`grant: "30m"`): later
 * requests by the same identity on the same connection that hit the same rule pass at once, and
 * each such pass is recorded. With a shared store the grant is the group's: the other gateways
 * apply it too (remoteGrant), and a pass there names the gateway that held the request.
 *
 * If the store cannot record a step, the step does not happen (fail closed): creating a hold
 * throws (the proxy refuses the request), a vote is refused with the store's error, and a
 * resolution that cannot be recorded is turned into a denial. Each step's row and event are written
 * together on the store's commit thread (`AuditStore.writeAsync`): the proxies' thread never waits
 * on SQLite for a hold, and a locked store refuses the step at once.
 */
import { parseDuration } from '../../shared/config';
import { type HoldDecisionRequest, type HoldState, type HoldView, type HoldVote, shortenForSummary } from '../../shared/holds';
import type { Identity } from '../../shared/identity';
import type { AuditEvent, AuditEventInput, EventRef, HoldCreatedPayload, HoldResolvedPayload, HoldVotePayload } from '../../shared/events';
import type { StateWrite } from '../audit/commit-thread';
import type { GrantRowWrite } from '../audit/shared-store/grant-rows';
import { type AuditStore, StoreUnavailableError } from '../audit/store';
import type { EventBus } from '../bus';
import { newId } from '../ids';
import { type Logger, silentLogger } from '../log';
import type { ChainPosition, HoldGate, HoldOutcome, HoldPeers, HoldRequest } from './types';

/** A decision the queue refuses, with the HTTP status the control plane answers with. */
export class HoldDecisionError extends Error {
  constructor(
    readonly status: 400 | 403 | 404 | 409,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'HoldDecisionError';
  }
}

export interface HoldQueueOptions {
  store: AuditStore;
  bus: EventBus;
  log?: Logger;
  /** Longest time-boxed grant an approver may give (default 24 h). */
  maxGrantMs?: number;
  /** Clock, for tests. */
  now?: () => number;
  /** `idp`: only persons an OIDC issuer vouches for may approve (identity.separationOfDuties). */
  separationOfDuties?: 'person' | 'idp';
  /** Whether a person has an OIDC subject linked (PersonDirectory.isIdpBacked). */
  idpBacked?: (person: string) => boolean;
}

interface PendingHold {
  view: HoldView;
  /** Grant asked for by each approving vote, by voter subject (undefined: no grant). */
  grants: Map<string, number | undefined>;
  timer: NodeJS.Timeout;
  signal: AbortSignal;
  onAbort: () => void;
  settle: (outcome: HoldOutcome) => void;
  /** The decision being recorded: the next one waits for it, so each sees the votes before it. */
  deciding: Promise<unknown>;
  /** The view it was resolved with, once it was. */
  final?: HoldView;
  /** Its `hold.created` in this gateway's chain, once recorded. */
  created?: ChainPosition;
  /** Votes cast on other gateways (shared store), by person: where each sits in its chain. */
  remoteVotes: Map<string, EventRef>;
}

interface GrantRecord {
  id: string;
  hold: string;
  expiresAt: number;
  grantedBy: string[];
  /** A grant of another gateway of the group: the gateway that held the request, and its `hold.resolved` there. */
  elsewhere?: EventRef;
}

const MAX_REASON = 2000;
const MAX_TIMER_MS = 2_147_483_647;
const MAX_SUMMARY = 4000;
/**
 * A held statement is shown whole up to this many characters (the card scrolls); a longer one is
 * cut with a visible marker and its length, and the session's replay has the recorded text.
 */
const MAX_STATEMENT = 256 * 1024;
const MAX_PARAM = 16 * 1024;
const MAX_PARAMS = 200;

/** Members of a hold's approver groups and admins may decide it. */
export function canDecideHold(identity: Identity, view: Pick<HoldView, 'approvers'>): boolean {
  return identity.roles.includes('admin') || identity.groups.some((g) => view.approvers.includes(g));
}

/** The person behind an identity; a credential without one is its own person. */
export const personOf = (identity: Pick<Identity, 'person' | 'subject'>): string => identity.person ?? identity.subject;

const requesterPersonOf = (view: Pick<HoldView, 'requesterPerson' | 'requester'>): string => view.requesterPerson ?? view.requester;

/**
 * Why `identity` may not cast `decision` on `view`, or undefined when it may. Separation of duties
 * counts persons: a second key of the requester, or the same person signed in another way, is
 * still the requester, and one person votes once.
 */
export function whyCannotDecide(
  identity: Identity,
  view: Pick<HoldView, 'approvers' | 'requester' | 'requesterPerson' | 'votes'>,
  decision: 'approve' | 'deny' | undefined,
  opts: Pick<HoldQueueOptions, 'separationOfDuties' | 'idpBacked'> = {},
): HoldDecisionError | undefined {
  if (!canDecideHold(identity, view)) return new HoldDecisionError(403, 'not_an_approver', `only members of ${view.approvers.join(', ')} (or admins) may decide this hold`);
  const person = personOf(identity);
  if (decision !== 'deny' && person === requesterPersonOf(view)) return new HoldDecisionError(403, 'self_approval', 'you asked for this: nobody approves their own request, with any of their credentials');
  if (view.votes.some((v) => (v.person ?? v.by) === person)) return new HoldDecisionError(409, 'already_voted', 'you have already decided this hold (one vote per person, whichever credential you use)');
  if (decision !== 'deny' && opts.separationOfDuties === 'idp' && !opts.idpBacked?.(person)) {
    return new HoldDecisionError(403, 'not_idp_backed', 'approvals here count only persons your identity provider vouches for (identity.separationOfDuties: idp); sign in through the IdP');
  }
  return undefined;
}

/** A decision body's decision and reason, checked before the hold is looked at. */
export function readDecision(body: HoldDecisionRequest): { decision: 'approve' | 'deny'; reason: string } {
  const decision = body?.decision;
  if (decision !== 'approve' && decision !== 'deny') throw new HoldDecisionError(400, 'bad_request', 'decision must be "approve" or "deny"');
  const reason = typeof body.reason === 'string' ? body.reason.trim() : '';
  if (reason.length > MAX_REASON) throw new HoldDecisionError(400, 'bad_request', `reason is longer than ${MAX_REASON} characters`);
  return { decision, reason };
}

/**
 * Whether `identity` may cast this decision on the pending `view` (whyCannotDecide, the reason a
 * hold requires, the grant asked for); throws HoldDecisionError, else returns the grant in ms.
 */
export function checkDecision(
  identity: Identity,
  view: HoldView,
  d: { decision: 'approve' | 'deny'; reason: string; grant: HoldDecisionRequest['grant'] },
  opts: Pick<HoldQueueOptions, 'separationOfDuties' | 'idpBacked'> & { maxGrantMs: number },
): number | undefined {
  const refused = whyCannotDecide(identity, view, d.decision, opts);
  if (refused) throw refused;
  if (view.reasonRequired && !d.reason) throw new HoldDecisionError(400, 'reason_required', 'this hold needs a reason with the decision');
  if (d.grant === undefined || d.grant === null || d.grant === '') return undefined;
  if (d.decision !== 'approve') throw new HoldDecisionError(400, 'bad_request', 'only an approval can grant time-boxed access');
  let grantMs: number;
  try {
    grantMs = parseDuration(String(d.grant));
  } catch (err) {
    throw new HoldDecisionError(400, 'bad_request', `grant: ${(err as Error).message}`);
  }
  if (grantMs <= 0 || grantMs > opts.maxGrantMs) throw new HoldDecisionError(400, 'bad_request', `grant must be between 1s and ${formatDuration(opts.maxGrantMs)}`);
  return grantMs;
}

/** Who is shown a hold live: those who may decide it, and the requester. */
export function holdVisibleTo(identity: Identity, view: Pick<HoldView, 'approvers' | 'requester' | 'requesterPerson'>): boolean {
  return canDecideHold(identity, view) || identity.subject === view.requester || (identity.person !== undefined && identity.person === view.requesterPerson);
}

export function formatDuration(ms: number): string {
  if (ms % 86_400_000 === 0) return `${ms / 86_400_000}d`;
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}

const grantKey = (subject: string, connection: string, rule: string) => `${subject}\u0000${connection}\u0000${rule}`;

/** What a hold listing may ask for (`visible` filters rows for users who may see only some holds). */
export interface HoldListOptions {
  state?: HoldState;
  limit?: number;
  offset?: number;
  visible?: (v: HoldView) => boolean;
}

export interface HoldPage {
  total: number;
  holds: HoldView[];
}

const HOLD_BY_ID = 'SELECT view FROM holds WHERE id = ?';

export class HoldQueue implements HoldGate {
  private readonly pending = new Map<string, PendingHold>();
  private readonly grants = new Map<string, GrantRecord>();
  private readonly store: AuditStore;
  private readonly bus: EventBus;
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly maxGrantMs: number;
  private readonly sod: Pick<HoldQueueOptions, 'separationOfDuties' | 'idpBacked'>;
  private closed = false;
  private peers: HoldPeers | undefined;

  /** Opens the queue on a store; holds a previous run left pending are recorded as abandoned. */
  constructor(opts: HoldQueueOptions) {
    this.store = opts.store;
    this.bus = opts.bus;
    this.log = opts.log ?? silentLogger;
    this.now = opts.now ?? Date.now;
    this.maxGrantMs = opts.maxGrantMs ?? 86_400_000;
    this.sod = { separationOfDuties: opts.separationOfDuties, idpBacked: opts.idpBacked };
    this.abandonLeftovers();
    this.loadGrants();
  }

  /** The other gateways of a shared store: told of every step of a local hold, asked for theirs. */
  setPeers(peers: HoldPeers): void {
    this.peers = peers;
  }

  /** The longest grant an approver may give, and who may approve (for votes on other gateways' holds). */
  get decisionRules(): Pick<HoldQueueOptions, 'separationOfDuties' | 'idpBacked'> & { maxGrantMs: number } {
    return { ...this.sod, maxGrantMs: this.maxGrantMs };
  }

  /** Whether `id` is a local hold waiting for a decision. */
  isPending(id: string): boolean {
    return this.pending.has(id);
  }

  /** Number of holds waiting for a decision. */
  get pendingCount(): number {
    return this.pending.size;
  }

  async request(req: HoldRequest): Promise<HoldOutcome> {
    if (this.closed) throw new Error('the hold queue is closed (the gateway is stopping)');
    const now = this.now();
    const granted = this.activeGrant(req.identity.subject, req.connection, req.rule, now);
    if (granted) return this.passByGrant(req, granted, now);

    const timeoutMs = parseDuration(req.spec.timeout ?? '5m');
    const view = holdViewFor(req, 'pending', now, now + timeoutMs);

    // Recorded before anyone is told of it; rejects with StoreUnavailableError (fail closed). The
    // entry is in place while it is written (its row may be read meanwhile): a decision on it
    // waits for the record.
    let settle!: (outcome: HoldOutcome) => void;
    const answered = new Promise<HoldOutcome>((r) => (settle = r));
    const onAbort = () => void this.resolve(view.id, 'cancelled', 'the client disconnected before a decision', []);
    const created = this.record(
      [
        {
          sql: 'INSERT INTO holds (id, state, session, connection, requester, created_at, expires_at, view) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
          params: [view.id, view.state, view.session, view.connection, view.requester, view.createdAt, view.expiresAt, JSON.stringify(view)],
        },
      ],
      { kind: 'hold.created', session: req.session ?? undefined, actor: req.identity.subject, connection: req.connection, payload: { ...view, actorName: req.identity.name } satisfies HoldCreatedPayload, time: now },
    );
    const entry: PendingHold = { view, grants: new Map(), timer: undefined as unknown as NodeJS.Timeout, signal: req.signal, onAbort, settle, deciding: created.catch(() => {}), remoteVotes: new Map() };
    this.pending.set(view.id, entry);
    try {
      entry.created = positionOf(await created);
    } catch (err) {
      if (this.pending.get(view.id) === entry) this.pending.delete(view.id);
      throw err;
    }
    // Ended while it was being recorded (the gateway stopped, the requester was locked).
    if (this.pending.get(view.id) !== entry) return answered;
    this.armExpiry(entry, `timed out after ${formatDuration(timeoutMs)} without a decision`);
    this.bus.publish({ type: 'hold.created', hold: structuredClone(view) });
    this.peers?.changed(view, entry.created);
    if (req.signal.aborted) onAbort();
    else req.signal.addEventListener('abort', onAbort, { once: true });
    return answered;
  }

  /**
   * An approver's decision, once recorded. Rejects with HoldDecisionError (404 unknown, 409 no
   * longer pending or already voted, 403 not an approver or own request, 400 missing reason or bad
   * grant) and StoreUnavailableError when the vote cannot be recorded. Decisions on one hold are
   * taken one at a time, in the order they came.
   */
  async decide(id: string, identity: Identity, body: HoldDecisionRequest): Promise<HoldView> {
    const { decision, reason } = readDecision(body);
    const p = this.pending.get(id);
    if (!p) {
      const elsewhere = this.peers?.decide(id, identity, body);
      if (elsewhere) return elsewhere;
      const stored = this.get(id);
      if (!stored) throw new HoldDecisionError(404, 'not_found', `no hold ${id}`);
      throw new HoldDecisionError(409, 'not_pending', `hold ${id} is already ${stored.state}`);
    }
    const turn = p.deciding.then(() => this.decideNow(p, identity, decision, reason, body.grant));
    p.deciding = turn.catch(() => {});
    return turn;
  }

  private async decideNow(p: PendingHold, identity: Identity, decision: 'approve' | 'deny', reason: string, grantAsked: HoldDecisionRequest['grant']): Promise<HoldView> {
    const id = p.view.id;
    if (this.pending.get(id) !== p) throw new HoldDecisionError(409, 'not_pending', `hold ${id} is already ${p.final?.state ?? 'decided'}`);
    const view = p.view;
    if (this.now() >= view.expiresAt) {
      await this.resolve(id, 'expired', `timed out after ${formatDuration(view.expiresAt - view.createdAt)} without a decision`, []);
      throw new HoldDecisionError(409, 'not_pending', `hold ${id} has expired`);
    }
    const grantMs = checkDecision(identity, view, { decision, reason, grant: grantAsked }, this.decisionRules);

    const vote: HoldVote = { by: identity.subject, person: personOf(identity), byName: identity.name, decision, reason, at: this.now() };
    const next: HoldView = { ...view, votes: [...view.votes, vote] };
    const voted = await this.record([{ sql: 'UPDATE holds SET view = ? WHERE id = ?', params: [JSON.stringify(next), id] }], {
      kind: 'hold.vote',
      session: view.session ?? undefined,
      actor: identity.subject,
      connection: view.connection,
      payload: { id, decision, reason, byName: identity.name, via: identity.via, person: vote.person, protocol: view.protocol, ...(grantMs ? { grant: formatDuration(grantMs), grantMs } : {}) } satisfies HoldVotePayload,
      time: vote.at,
    });
    // Resolved while the vote was being recorded (it timed out, its client went): the vote stands in the log.
    if (this.pending.get(id) !== p) return structuredClone(p.final ?? next);
    p.view = next;
    if (decision === 'approve') p.grants.set(identity.subject, grantMs);
    if (p.created) this.peers?.changed(next, p.created, { vote: { ...vote, ...(grantMs ? { grantMs } : {}) }, event: positionOf(voted) });
    return this.tally(p, next, reason, identity.name);
  }

  /** Resolves `p` when its votes (`next`) reach a threshold; else publishes the new view. */
  private async tally(p: PendingHold, next: HoldView, reason: string, voterName: string): Promise<HoldView> {
    const id = next.id;
    const approvals = next.votes.filter((v) => v.decision === 'approve');
    const denials = next.votes.filter((v) => v.decision === 'deny');
    const refsOf = (votes: HoldVote[]) => votes.flatMap((v) => p.remoteVotes.get(v.person ?? v.by) ?? []);
    if (denials.length >= next.denyMin) {
      return structuredClone((await this.resolve(id, 'denied', reason || `denied by ${voterName}`, denials.map((v) => v.byName), undefined, refsOf(denials))) ?? next);
    }
    if (approvals.length >= next.min) {
      const asked = approvals.map((v) => p.grants.get(v.by));
      // The grant is the smallest any approver asked for, and none if one of them gave none.
      const grant = asked.every((g) => g !== undefined) ? Math.min(...(asked as number[])) : undefined;
      return structuredClone((await this.resolve(id, 'approved', reason || `approved by ${approvals.map((v) => v.byName).join(', ')}`, approvals.map((v) => v.byName), grant, refsOf(approvals))) ?? next);
    }
    this.bus.publish({ type: 'hold.updated', hold: structuredClone(next) });
    return structuredClone(next);
  }

  /**
   * A vote cast on another gateway (shared store) on a hold of this one: counted like a local vote
   * when the hold still waits, and the voter's person has not voted and did not ask for it (k-of-N
   * counts persons, wherever they voted). The vote is recorded in that gateway's chain; here the
   * hold's row takes it, and a resolution it brings cites it. Returns whether it was counted.
   */
  remoteVote(id: string, vote: HoldVote & { grantMs?: number }, ref: EventRef): Promise<boolean> {
    const p = this.pending.get(id);
    if (!p) return Promise.resolve(false);
    const turn = p.deciding.then(async () => {
      if (this.pending.get(id) !== p) return false;
      const view = p.view;
      const person = vote.person ?? vote.by;
      if (this.now() >= view.expiresAt || view.votes.some((v) => (v.person ?? v.by) === person) || (vote.decision === 'approve' && person === requesterPersonOf(view))) {
        this.log.info(`hold ${id}: a vote from gateway ${ref.gateway} (seq ${ref.seq}) is not counted: ${this.now() >= view.expiresAt ? 'the hold has expired' : 'its person has already voted or asked for it'}`);
        return false;
      }
      const { grantMs, ...cast } = vote;
      const next: HoldView = { ...view, votes: [...view.votes, { ...cast, gateway: ref.gateway }] };
      try {
        await this.store.writeAsync([{ sql: 'UPDATE holds SET view = ? WHERE id = ?', params: [JSON.stringify(next), id] }], []);
      } catch (err) {
        this.log.error(`hold ${id}: cannot record a vote from gateway ${ref.gateway}: ${err instanceof Error ? err.message : String(err)}`);
        return false;
      }
      if (this.pending.get(id) !== p) return false;
      p.view = next;
      p.remoteVotes.set(person, ref);
      if (vote.decision === 'approve') p.grants.set(vote.by, grantMs);
      if (p.created) this.peers?.changed(next, p.created);
      await this.tally(p, next, vote.reason, vote.byName);
      return true;
    });
    p.deciding = turn.catch(() => {});
    return turn;
  }

  /**
   * Another gateway recorded this hold as abandoned in the shared store (this gateway's lease had
   * expired, so it was taken for gone): the waiting request ends the same way, recorded here too.
   */
  async endedElsewhere(id: string, by: string, reason: string): Promise<void> {
    if (!this.pending.has(id)) return;
    await this.resolve(id, 'abandoned', `${reason} (recorded by gateway ${by})`, []);
  }

  /** A hold by id: the live view while pending, else the stored one. */
  get(id: string): HoldView | undefined {
    const p = this.pending.get(id);
    if (p) return structuredClone(p.view);
    return this.stored(id, this.store.db.prepare(HOLD_BY_ID).all(id) as { view: string }[]);
  }

  /** `get`, reading the stored hold on the commit thread: for the console, which shares the proxies' thread. */
  async getAsync(id: string): Promise<HoldView | undefined> {
    const p = this.pending.get(id);
    if (p) return structuredClone(p.view);
    const rows = await this.store.readAsync<{ view: string }>(HOLD_BY_ID, [id]);
    return this.pending.has(id) ? structuredClone(this.pending.get(id)!.view) : this.stored(id, rows);
  }

  private stored(id: string, rows: { view: string }[]): HoldView | undefined {
    return rows[0] ? (JSON.parse(rows[0].view) as HoldView) : this.peers?.get(id);
  }

  /**
   * Hold history, newest first. `visible` filters rows (for users who may see only some holds);
   * without it the SQL pages directly.
   */
  list(opts: HoldListOptions = {}): HoldPage {
    const plan = this.listPlan(opts);
    const read = (sql: string, params: unknown[]) => this.store.db.prepare(sql).all(...params) as { view?: string; n?: number }[];
    if (plan.paged) return this.page(read(plan.countSql, plan.args)[0]!.n!, read(plan.pageSql, [...plan.args, plan.limit, plan.offset]) as { view: string }[]);
    return this.filtered(plan, opts, read(plan.allSql, plan.args) as { view: string }[]);
  }

  /** `list`, reading on the commit thread: for the console, which shares the proxies' thread. */
  async listAsync(opts: HoldListOptions = {}): Promise<HoldPage> {
    const plan = this.listPlan(opts);
    if (plan.paged) {
      const [count, rows] = await Promise.all([this.store.readAsync<{ n: number }>(plan.countSql, plan.args), this.store.readAsync<{ view: string }>(plan.pageSql, [...plan.args, plan.limit, plan.offset])]);
      return this.page(count[0]!.n, rows);
    }
    return this.filtered(plan, opts, await this.store.readAsync<{ view: string }>(plan.allSql, plan.args));
  }

  private listPlan(opts: HoldListOptions) {
    const limit = Math.max(1, Math.min(opts.limit ?? 100, 1000));
    const offset = Math.max(0, opts.offset ?? 0);
    const where = opts.state ? 'WHERE state = ?' : '';
    const args: unknown[] = opts.state ? [opts.state] : [];
    // Holds of other gateways (shared store) are merged in by time.
    const elsewhere = (this.peers?.list() ?? []).filter((v) => (!opts.state || v.state === opts.state) && (!opts.visible || opts.visible(v)));
    return {
      limit,
      offset,
      args,
      elsewhere,
      paged: !opts.visible && !elsewhere.length,
      countSql: `SELECT count(*) AS n FROM holds ${where}`,
      pageSql: `SELECT view FROM holds ${where} ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?`,
      allSql: `SELECT view FROM holds ${where} ORDER BY created_at DESC, id DESC`,
    };
  }

  /** A stored view with the live one of a pending hold over it. */
  private overlay(v: HoldView): HoldView {
    return this.pending.get(v.id)?.view ?? v;
  }

  private page(total: number, rows: { view: string }[]): HoldPage {
    return { total, holds: rows.map((r) => structuredClone(this.overlay(JSON.parse(r.view) as HoldView))) };
  }

  private filtered(plan: { limit: number; offset: number; elsewhere: HoldView[] }, opts: HoldListOptions, rows: { view: string }[]): HoldPage {
    const matching: HoldView[] = [];
    for (const r of rows) {
      const v = this.overlay(JSON.parse(r.view) as HoldView);
      if (!opts.visible || opts.visible(v)) matching.push(v);
    }
    if (plan.elsewhere.length) matching.push(...plan.elsewhere);
    matching.sort((a, b) => b.createdAt - a.createdAt || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
    return { total: matching.length, holds: matching.slice(plan.offset, plan.offset + plan.limit).map((v) => structuredClone(v)) };
  }

  /** Cancels every pending hold `person` asked for (the person was locked); their clients are denied. */
  cancelForPerson(person: string, reason: string): number {
    let n = 0;
    for (const [id, p] of [...this.pending]) {
      if (requesterPersonOf(p.view) !== person) continue;
      void this.resolve(id, 'cancelled', reason, []);
      n++;
    }
    return n;
  }

  /** The gateway is stopping: every pending hold ends as abandoned (recorded), its client denied. */
  async close(reason = 'the gateway stopped before a decision'): Promise<void> {
    this.closed = true;
    await Promise.all([...this.pending.keys()].map((id) => this.resolve(id, 'abandoned', reason, [])));
  }

  /** Ends a pending hold, recorded, and answers its request; resolves with the view it ended with. */
  private async resolve(id: string, state: Exclude<HoldState, 'pending'>, reason: string, decidedBy: string[], grantMs?: number, refs: EventRef[] = []): Promise<HoldView | undefined> {
    const p = this.pending.get(id);
    if (!p) return undefined;
    this.pending.delete(id);
    clearTimeout(p.timer);
    p.signal.removeEventListener('abort', p.onAbort);
    const now = this.now();
    let view: HoldView = { ...p.view, state, resolvedAt: now, resolution: reason, ...(grantMs ? { grantMs } : {}) };
    let outcome: HoldOutcome = { state, hold: view, reason, decidedBy };
    const grant: GrantRecord | undefined = state === 'approved' && grantMs ? { id: newId('grant'), hold: id, expiresAt: now + grantMs, grantedBy: decidedBy } : undefined;
    let resolved: ChainPosition | undefined;
    try {
      const events = await this.record(
        [
          { sql: 'UPDATE holds SET state = ?, resolved_at = ?, view = ? WHERE id = ?', params: [state, now, JSON.stringify(view), id] },
          ...(grant ? [{ sql: 'INSERT INTO grants (id, subject, connection, rule, hold, expires_at) VALUES (?, ?, ?, ?, ?, ?)', params: [grant.id, view.requester, view.connection, view.rule, id, grant.expiresAt] }] : []),
        ],
        {
          kind: 'hold.resolved',
          session: view.session ?? undefined,
          actor: state === 'approved' || state === 'denied' ? (p.view.votes.at(-1)?.by ?? 'system') : state === 'cancelled' ? view.requester : 'system',
          connection: view.connection,
          payload: {
            id,
            state,
            reason,
            decidedBy,
            rule: view.rule,
            requester: view.requester,
            protocol: view.protocol,
            ...(grant ? { grant: { id: grant.id, expiresAt: grant.expiresAt, ms: grantMs! } } : {}),
            ...(refs.length ? { refs } : {}),
          } satisfies HoldResolvedPayload,
          time: now,
        },
      );
      resolved = positionOf(events);
      if (grant) {
        this.grants.set(grantKey(view.requester, view.connection, view.rule), grant);
        this.peers?.granted({ id: grant.id, subject: view.requester, connection: view.connection, rule: view.rule, hold: id, grantedBy: decidedBy, expiresAt: grant.expiresAt, createdAt: now }, resolved);
      }
    } catch (err) {
      // The decision could not be recorded: the request must not go through on an unrecorded approval.
      this.log.error(`hold ${id}: cannot record ${state}: ${err instanceof Error ? err.message : String(err)}`);
      const failReason = `the decision could not be recorded (${err instanceof Error ? err.message : String(err)})`;
      view = { ...view, state: state === 'approved' ? 'denied' : state, resolution: state === 'approved' ? failReason : reason };
      outcome = { state: view.state as HoldOutcome['state'], hold: view, reason: view.resolution!, decidedBy };
    }
    p.final = view;
    this.bus.publish({ type: 'hold.resolved', hold: structuredClone(view) });
    if (p.created) this.peers?.changed(view, p.created, resolved ? { resolved } : undefined);
    p.settle(outcome);
    return view;
  }

  /** Expires the hold at `expiresAt`; timers cannot wait longer than ~24.8 days, so long ones re-arm. */
  private armExpiry(p: PendingHold, reason: string): void {
    const wait = p.view.expiresAt - this.now();
    p.timer = setTimeout(
      () => {
        if (this.pending.get(p.view.id) !== p) return;
        if (this.now() < p.view.expiresAt) this.armExpiry(p, reason);
        else void this.resolve(p.view.id, 'expired', reason, []);
      },
      Math.min(Math.max(wait, 0), MAX_TIMER_MS),
    );
  }

  /**
   * Writes a hold's row and the event that records the step together, on the store's commit thread
   * (the proxies' thread waits on nothing); rejects with StoreUnavailableError (fail closed).
   */
  private async record(statements: StateWrite[], event: AuditEventInput): Promise<AuditEvent[]> {
    try {
      return await this.store.writeAsync(statements, [event]);
    } catch (err) {
      throw err instanceof StoreUnavailableError ? err : new StoreUnavailableError(err);
    }
  }

  /** Runs `fn` in one transaction (at start only); any SQLite failure becomes StoreUnavailableError (fail closed). */
  private recorded(fn: () => void): void {
    try {
      this.store.transaction(fn);
    } catch (err) {
      throw err instanceof StoreUnavailableError ? err : new StoreUnavailableError(err);
    }
  }

  private activeGrant(subject: string, connection: string, rule: string, now: number): GrantRecord | undefined {
    const key = grantKey(subject, connection, rule);
    const g = this.grants.get(key);
    if (!g) return undefined;
    if (g.expiresAt <= now) {
      this.grants.delete(key);
      return undefined;
    }
    return g;
  }

  /**
   * A grant another gateway of the group gave (its row signed by that gateway's proven key: the
   * hold worker checked it): requests here that it covers pass as under a local grant. The grant
   * that ends last wins. Returns whether it applies (not ended, nor covered by one ending later).
   */
  remoteGrant(g: GrantRowWrite): boolean {
    if (g.expiresAt <= this.now()) return false;
    const key = grantKey(g.subject, g.connection, g.rule);
    const held = this.grants.get(key);
    if (held && (held.id === g.id || held.expiresAt >= g.expiresAt)) return false;
    this.grants.set(key, { id: g.id, hold: g.hold, expiresAt: g.expiresAt, grantedBy: g.grantedBy, elsewhere: { gateway: g.gateway, seq: g.resolved.seq, hash: g.resolved.hash } });
    return true;
  }

  /** Gateway `gateway` was removed from the group: the grants it gave end here. Returns how many. */
  endGrantsOf(gateway: string): number {
    let n = 0;
    for (const [key, g] of [...this.grants]) {
      if (g.elsewhere?.gateway !== gateway) continue;
      this.grants.delete(key);
      n++;
    }
    return n;
  }

  /** A request covered by a grant: recorded as a hold that was approved at once, not published. */
  private async passByGrant(req: HoldRequest, grant: GrantRecord, now: number): Promise<HoldOutcome> {
    const held = grant.elsewhere ? ` on gateway ${grant.elsewhere.gateway}` : '';
    const reason = `covered by a grant from ${grant.grantedBy.join(', ') || 'an approver'} (hold ${grant.hold}${held}) until ${new Date(grant.expiresAt).toISOString()}`;
    const view: HoldView = { ...holdViewFor(req, 'approved', now, now), resolvedAt: now, resolution: reason };
    await this.record(
      [
        {
          sql: 'INSERT INTO holds (id, state, session, connection, requester, created_at, expires_at, resolved_at, view) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
          params: [view.id, view.state, view.session, view.connection, view.requester, now, now, now, JSON.stringify(view)],
        },
      ],
      {
        kind: 'hold.resolved',
        session: req.session ?? undefined,
        actor: req.identity.subject,
        connection: req.connection,
        payload: {
          id: view.id,
          state: 'approved',
          via: 'grant',
          grant: grant.id,
          grantHold: grant.hold,
          grantExpiresAt: grant.expiresAt,
          // A grant of another gateway: where the approval that gave it is recorded (verify --store resolves it).
          ...(grant.elsewhere ? { grantGateway: grant.elsewhere.gateway, refs: [grant.elsewhere] } : {}),
          reason,
          decidedBy: grant.grantedBy,
          rule: req.rule,
          requester: req.identity.subject,
          protocol: req.protocol,
          actorName: req.identity.name,
        } satisfies HoldResolvedPayload,
        time: now,
      },
    );
    return { state: 'approved', hold: view, reason, decidedBy: grant.grantedBy };
  }

  private abandonLeftovers(): void {
    const rows = this.store.db.prepare("SELECT view FROM holds WHERE state = 'pending'").all() as { view: string }[];
    if (!rows.length) return;
    const now = this.now();
    const reason = 'the gateway stopped before a decision';
    this.recorded(() => {
      for (const r of rows) {
        const v = JSON.parse(r.view) as HoldView;
        const view: HoldView = { ...v, state: 'abandoned', resolvedAt: now, resolution: reason };
        this.store.db.prepare('UPDATE holds SET state = ?, resolved_at = ?, view = ? WHERE id = ?').run('abandoned', now, JSON.stringify(view), v.id);
        this.store.append({
          kind: 'hold.resolved',
          session: v.session ?? undefined,
          actor: 'system',
          connection: v.connection,
          payload: { id: v.id, state: 'abandoned', reason, decidedBy: [], rule: v.rule, requester: v.requester, protocol: v.protocol, recoveredAt: now } satisfies HoldResolvedPayload,
          time: now,
        });
      }
    });
    this.log.warn(`${rows.length} hold(s) left pending by the previous run recorded as abandoned`);
  }

  private loadGrants(): void {
    const now = this.now();
    const rows = this.store.db.prepare('SELECT g.id, g.subject, g.connection, g.rule, g.hold, g.expires_at, h.view FROM grants g LEFT JOIN holds h ON h.id = g.hold WHERE g.expires_at > ? ORDER BY g.expires_at').all(now) as {
      id: string;
      subject: string;
      connection: string;
      rule: string;
      hold: string;
      expires_at: number;
      view: string | null;
    }[];
    for (const r of rows) {
      const v = r.view ? (JSON.parse(r.view) as HoldView) : undefined;
      const grantedBy = v ? v.votes.filter((x) => x.decision === 'approve').map((x) => x.byName) : [];
      this.grants.set(grantKey(r.subject, r.connection, r.rule), { id: r.id, hold: r.hold, expiresAt: r.expires_at, grantedBy });
    }
  }
}

/** Where the (one) event of a recorded step sits in the chain. */
function positionOf(events: AuditEvent[]): ChainPosition {
  const e = events[0]!;
  return { seq: e.seq, hash: e.hash };
}

/** A new hold's view of a request: who asks, what (summary capped), under which rule and spec. */
function holdViewFor(req: HoldRequest, state: HoldView['state'], createdAt: number, expiresAt: number): HoldView {
  return {
    id: newId('hold'),
    state,
    session: req.session,
    connection: req.connection,
    protocol: req.protocol,
    requester: req.identity.subject,
    ...(req.identity.person ? { requesterPerson: req.identity.person } : {}),
    requesterName: req.identity.name,
    rule: req.rule,
    ...(req.ruleReason ? { ruleReason: req.ruleReason } : {}),
    ...(req.inTransaction ? { inTransaction: true } : {}),
    summary: shortenForSummary(req.summary, MAX_SUMMARY),
    ...(req.statement !== undefined ? statementView(req.statement) : {}),
    ...(req.params?.length ? { params: paramsView(req.params) } : {}),
    approvers: [...req.spec.approvers],
    min: req.spec.min ?? 1,
    denyMin: req.spec.denyMin ?? 1,
    reasonRequired: req.spec.reason === 'required',
    createdAt,
    expiresAt,
    votes: [],
  };
}

/**
 * What a SQL hold shows: a short summary for notifications (marked when cut), and the whole statement
 * and its parameters for the card. `sql` and `params` are already masked for the log.
 */
export function sqlHoldText(sql: string, params: (string | null)[] | undefined, summaryChars: number): Pick<HoldRequest, 'summary' | 'statement' | 'params'> {
  return { summary: shortenForSummary(sql, summaryChars), statement: sql, ...(params ? { params } : {}) };
}

function statementView(statement: string): Pick<HoldView, 'statement' | 'statementLength'> {
  if (statement.length <= MAX_STATEMENT) return { statement };
  return { statement: `${statement.slice(0, MAX_STATEMENT)}\n… [cut at ${MAX_STATEMENT} of ${statement.length} characters: the session's replay has the rest]`, statementLength: statement.length };
}

/** Parameters for the card: each shortened with a marker, and at most MAX_PARAMS of them (the rest counted). */
function paramsView(params: readonly (string | null)[]): (string | null)[] {
  const shown = params.slice(0, MAX_PARAMS).map((p) => (p === null ? null : shortenForSummary(p, MAX_PARAM)));
  if (params.length > MAX_PARAMS) shown.push(`… [+${params.length - MAX_PARAMS} more parameters]`);
  return shown;
}
