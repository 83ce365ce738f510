/**
 * What the PostgreSQL server holds for one session — prepared statements, portals, transaction
 * status — predicted from the messages the gateway forwards, and checked against every reply.
 *
 * Why predict: waiting for the server to confirm each message would cost a round trip per message
 * and break pipelining. Why check: a prediction that drifts lets a statement run under a decision
 * made for another one (a refused `Parse s1` into an existing name, then `Bind s1`, ran the old
 * statement while the log named the new one). So the gateway decides on the prediction and ends
 * the session as soon as a reply disagrees with it.
 *
 * Pure: messages in, answers out; no sockets, no clock. Two sides share the state:
 *
 * - Planning (`draft()`): the messages of one batch are applied to a draft that reads what the
 *   server will hold when each of them runs. Inside one Sync segment a message runs only if every
 *   earlier one succeeded (after an error the server skips to Sync), so the draft assumes they did.
 *   A name last written by an earlier segment whose replies have not all arrived is not known yet
 *   (did that Parse fail?): reading it answers `stall`, and the session waits for those replies
 *   before planning the batch again. Writes never stall, so pipelines of unnamed statements, or of
 *   named ones used in the segment that prepares them, flow without waiting.
 * - Replies (`reply()`): every backend message is checked against the request at the head of the
 *   queue and the confirmed state, which follows the server exactly: a named Parse into an existing
 *   name fails (42P05); an unnamed Parse drops the old unnamed statement first; after an error
 *   everything up to Sync is skipped; portals die when their transaction ends; `PREPARE`,
 *   `DEALLOCATE [ALL]` and `DISCARD ALL` are not transactional. Any disagreement is a mismatch.
 */
import { parseCommandComplete, parseErrorFields } from './backend-messages';
import { BackendCode, codeName } from './message-codes';
import type { NamespaceEffect } from './sql-namespace';

/** A prepared statement as the session knows it; `effects`: what running its text does to the namespaces. */
export interface PreparedLike {
  name: string;
  effects: readonly NamespaceEffect[];
  /** The statements its `PREPARE`s create, by name (a Parse of `PREPARE s2 AS …` creates `s2` when executed). */
  prepared?: ReadonlyMap<string, PreparedLike>;
}

/** A portal: the statement it was bound from (a later Parse into the same name does not change it). */
export interface PortalLike<S extends PreparedLike> {
  name: string;
  statement: S;
}

export type TxStatus = 'I' | 'T' | 'E';

/** A value read while planning: the object (or null: the server will not have it), or `stall`. */
export type Read<T> = { value: T | null } | 'stall';

/** A SQL statement in a simple Query, with what it does to the namespaces; `prepared`: the statements its PREPAREs create. */
export interface QueryStatement<S> {
  effects: readonly NamespaceEffect[];
  prepared?: ReadonlyMap<string, S>;
}

type Op<S extends PreparedLike, P extends PortalLike<S>> =
  | { k: 'parse'; seg: number; name: string; value: S }
  | { k: 'bind'; seg: number; portal: string; statement: string; value: P | null }
  | { k: 'describe'; seg: number; target: 'S' | 'P'; name: string; stage: number }
  | { k: 'execute'; seg: number; portal: string; value: P | null; executes: (S | null)[] }
  | { k: 'close'; seg: number; target: 'S' | 'P'; name: string }
  | { k: 'sync'; seg: number; ran: boolean; transaction: boolean }
  | { k: 'query'; seg: number; statements: QueryStatement<S>[] | null; executes: (S | null)[][]; index: number; started: boolean; failed: boolean }
  | { k: 'function'; seg: number; answered: boolean };

interface Write<T> {
  seg: number;
  order: number;
  value: T | null;
}

const DUPLICATE_STATEMENT = '42P05';
const DUPLICATE_CURSOR = '42P03';
const UNKNOWN_STATEMENT = '26000';
const UNKNOWN_CURSOR = '34000';

/** The replies that may come at any time and are no answer to a request. */
const ASYNC = new Set<number>([BackendCode.NoticeResponse, BackendCode.NotificationResponse, BackendCode.ParameterStatus]);
/** Replies that carry a running statement's output before its completion. */
const OUTPUT = new Set<number>([
  BackendCode.DataRow,
  BackendCode.CopyInResponse,
  BackendCode.CopyOutResponse,
  BackendCode.CopyData,
  BackendCode.CopyDone,
]);

/** The command tag a namespace statement completes with. */
function tagOf(effects: readonly NamespaceEffect[]): string | null {
  const e = effects[0];
  if (!e) return null;
  switch (e.k) {
    case 'prepare':
      return 'PREPARE';
    case 'deallocate':
      return 'DEALLOCATE';
    case 'deallocate_all':
      return 'DEALLOCATE ALL';
    case 'discard_all':
      return 'DISCARD ALL';
    default:
      return null;
  }
}

export class ProtocolState<S extends PreparedLike, P extends PortalLike<S>> {
  /** The server's state as far as its replies have shown it. */
  private readonly statements = new Map<string, S>();
  private readonly portals = new Map<string, P>();
  /** Portals may have died (an aborted transaction, a COMMIT inside a segment): their values stay, their existence is not certain. */
  private portalsUncertain = false;
  private status: TxStatus;
  /** An error was answered: the server skips every request up to the next Sync. */
  private failed = false;
  private readonly ops: Op<S, P>[] = [];

  /** Planning: the segment being planned; segments below `settled` have had every reply. */
  private seg = 0;
  private settled = 0;
  private order = 0;
  private readonly stmtWrites = new Map<string, Write<S>>();
  private readonly portalWrites = new Map<string, Write<P>>();
  private allStmts: Write<S> | null = null;
  private segRan = false;
  private segTransaction = false;

  constructor(status: TxStatus = 'I') {
    this.status = status;
  }

  get transactionStatus(): TxStatus {
    return this.status;
  }

  /** Requests sent and not fully answered. */
  get pending(): number {
    return this.ops.length;
  }

  /** True when no earlier segment is waiting for replies: a stalled batch can be planned again. */
  get quiet(): boolean {
    return this.settled >= this.seg;
  }

  /** The statement a name holds as the replies so far show it (for Describe bookkeeping). */
  confirmedStatement(name: string): S | undefined {
    return this.statements.get(name);
  }

  draft(): Draft<S, P> {
    return new Draft(this);
  }

  // ------------------------------------------------------------------ planning (used by Draft)

  /** @internal */
  readStatement(name: string): Read<S> {
    const w = this.stmtWrites.get(name);
    const all = name === '' ? null : this.allStmts;
    const latest = w && (!all || w.order > all.order) ? w : all;
    if (!latest || latest.seg < this.settled) return { value: this.statements.get(name) ?? null };
    if (latest.seg === this.seg) return { value: latest === w ? w.value : null };
    return 'stall';
  }

  /** @internal */
  readPortal(name: string): Read<P> {
    const w = this.portalWrites.get(name);
    // A portal's death (Sync, COMMIT) never changes which statement it runs if it still lives, so
    // only writes of values are uncertain; deaths are checked when the replies come.
    if (!w || w.seg < this.settled) return { value: this.portals.get(name) ?? null };
    if (w.seg === this.seg) return { value: w.value };
    return 'stall';
  }

  /** @internal Applies a committed draft: its writes become the prediction, its requests await replies. */
  apply(ops: Op<S, P>[]): void {
    for (const op of ops) {
      if (op.k !== 'sync' && this.failed && !this.ops.some((o) => o.k === 'sync')) {
        // The server is skipping to Sync after an error: this request will never run or be
        // answered. A Query or FunctionCall skipped so still ends a segment here, which is
        // settled at once (nothing it would have written exists).
        if (op.k === 'query' || op.k === 'function') {
          this.endSegment();
          this.settled = this.seg;
        }
        continue;
      }
      if (op.k === 'sync' || op.k === 'query' || op.k === 'function') {
        op.seg = this.seg;
        if (op.k === 'sync') {
          op.ran = this.segRan;
          op.transaction = this.segTransaction;
        }
      } else op.seg = this.seg;
      this.ops.push(op);
      switch (op.k) {
        case 'parse':
          this.stmtWrites.set(op.name, { seg: this.seg, order: ++this.order, value: op.value });
          break;
        case 'bind':
          this.portalWrites.set(op.portal, { seg: this.seg, order: ++this.order, value: op.value });
          break;
        case 'execute':
          this.segRan = true;
          if (op.value) this.planEffects(op.value.statement.effects, preparedOf(op.value.statement));
          break;
        case 'close':
          if (op.target === 'S') this.stmtWrites.set(op.name, { seg: this.seg, order: ++this.order, value: null });
          else this.portalWrites.set(op.name, { seg: this.seg, order: ++this.order, value: null });
          break;
        case 'query':
          this.stmtWrites.set('', { seg: this.seg, order: ++this.order, value: null });
          this.portalWrites.set('', { seg: this.seg, order: ++this.order, value: null });
          for (const st of op.statements ?? []) this.planEffects(st.effects, st.prepared);
          // Text the gateway cannot parse may have prepared or dropped anything.
          if (!op.statements) this.allStmts = { seg: this.seg, order: ++this.order, value: null };
          this.endSegment();
          break;
        case 'sync':
        case 'function':
          this.endSegment();
          break;
        default:
          break;
      }
    }
  }

  private planEffects(effects: readonly NamespaceEffect[], prepared: ReadonlyMap<string, S> | undefined): void {
    for (const e of effects) {
      switch (e.k) {
        case 'prepare':
          this.stmtWrites.set(e.name, { seg: this.seg, order: ++this.order, value: prepared?.get(e.name) ?? null });
          break;
        case 'deallocate':
          this.stmtWrites.set(e.name, { seg: this.seg, order: ++this.order, value: null });
          break;
        case 'deallocate_all':
          this.allStmts = { seg: this.seg, order: ++this.order, value: null };
          break;
        case 'discard_all':
          this.allStmts = { seg: this.seg, order: ++this.order, value: null };
          break;
        case 'cursor':
          // A cursor's death never changes what a live portal runs; a DECLAREd one is unknown to the gateway.
          if (e.name !== null) this.portalWrites.set(e.name, { seg: this.seg, order: ++this.order, value: null });
          break;
        case 'transaction':
          this.segTransaction = true;
          break;
        default:
          break;
      }
    }
  }

  private endSegment(): void {
    this.seg++;
    this.segRan = false;
    this.segTransaction = false;
  }

  // ------------------------------------------------------------------ replies

  /**
   * Checks one backend message against the prediction and moves the confirmed state on.
   * Returns null when the reply is the one expected, or why it is not.
   */
  reply(code: number, body: Buffer): string | null {
    if (ASYNC.has(code)) return null;
    if (this.failed) this.skipToSync();
    const op = this.ops[0];
    if (!op) return `unexpected ${codeName(code)}: no request is waiting for a reply`;
    switch (op.k) {
      case 'parse': {
        const exists = op.name !== '' && this.statements.has(op.name);
        if (code === BackendCode.ParseComplete) {
          if (exists) return `the server accepted Parse into statement "${op.name}", which already exists`;
          this.statements.set(op.name, op.value);
          this.ops.shift();
          return null;
        }
        if (code === BackendCode.ErrorResponse) {
          if (errorCode(body) === DUPLICATE_STATEMENT && !exists) return `the server says statement "${op.name}" already exists; the gateway holds none by that name`;
          if (op.name === '') this.statements.delete('');
          return this.fail();
        }
        return unexpectedReply(code, op);
      }
      case 'bind': {
        const stmt = this.statements.get(op.statement);
        if (code === BackendCode.BindComplete) {
          if (!stmt) return `the server bound portal "${op.portal}" to statement "${op.statement}", which the gateway holds no record of`;
          if (!op.value || op.value.statement !== stmt) return `the server bound portal "${op.portal}" to a different statement "${op.statement}" than the one the gateway decided on`;
          if (op.portal !== '' && this.portals.has(op.portal) && !this.portalsUncertain) return `the server created portal "${op.portal}", which already exists`;
          this.portals.set(op.portal, op.value);
          this.ops.shift();
          return null;
        }
        if (code === BackendCode.ErrorResponse) {
          const c = errorCode(body);
          if (c === UNKNOWN_STATEMENT && stmt) return `the server says statement "${op.statement}" does not exist; the gateway holds it`;
          if (c === DUPLICATE_CURSOR && !this.portals.has(op.portal)) return `the server says portal "${op.portal}" already exists; the gateway holds none by that name`;
          // A failed unnamed Bind may or may not have dropped the old unnamed portal: forget it, so
          // nothing is ever decided on it again (an Execute of it is then refused as unknown).
          if (op.portal === '') this.portals.delete('');
          return this.fail();
        }
        return unexpectedReply(code, op);
      }
      case 'describe': {
        const exists = op.target === 'S' ? this.statements.has(op.name) : this.portals.has(op.name);
        if (code === BackendCode.ErrorResponse) {
          const c = errorCode(body);
          if (exists && ((op.target === 'S' && c === UNKNOWN_STATEMENT) || (op.target === 'P' && c === UNKNOWN_CURSOR && !this.portalsUncertain)))
            return `the server says ${op.target === 'S' ? 'statement' : 'portal'} "${op.name}" does not exist; the gateway holds it`;
          return this.fail();
        }
        if (!exists && !(op.target === 'P' && this.portalsUncertain)) return `the server described ${op.target === 'S' ? 'statement' : 'portal'} "${op.name}", which the gateway holds no record of`;
        if (op.target === 'S' && op.stage === 0 && code === BackendCode.ParameterDescription) {
          op.stage = 1;
          return null;
        }
        if ((op.target === 'P' || op.stage === 1) && (code === BackendCode.RowDescription || code === BackendCode.NoData)) {
          this.ops.shift();
          return null;
        }
        return unexpectedReply(code, op);
      }
      case 'execute': {
        if (code === BackendCode.ErrorResponse) {
          if (errorCode(body) === UNKNOWN_CURSOR && this.portals.has(op.portal) && !this.portalsUncertain) return `the server says portal "${op.portal}" does not exist; the gateway holds it`;
          return this.fail();
        }
        const done = code === BackendCode.CommandComplete || code === BackendCode.EmptyQueryResponse || code === BackendCode.PortalSuspended;
        if (!done && !OUTPUT.has(code)) return unexpectedReply(code, op);
        const live = this.portals.get(op.portal);
        if (!live || live !== op.value) return `the server ran portal "${op.portal}", which is not the one the gateway decided on`;
        if (code === BackendCode.CommandComplete) {
          const why = this.completeEffects(live.statement.effects, op.executes, parseCommandComplete(body), preparedOf(live.statement));
          if (why) return why;
        }
        if (done) this.ops.shift();
        return null;
      }
      case 'close':
        if (code !== BackendCode.CloseComplete) return code === BackendCode.ErrorResponse ? this.fail() : unexpectedReply(code, op);
        if (op.target === 'S') this.statements.delete(op.name);
        else this.portals.delete(op.name);
        this.ops.shift();
        return null;
      case 'sync':
        if (code !== BackendCode.ReadyForQuery) return unexpectedReply(code, op);
        return this.ready(op.seg, body, op.ran || op.transaction ? null : this.failed && this.status === 'T' ? 'E' : this.status);
      case 'query':
        return this.queryReply(op, code, body);
      case 'function':
        if (code === BackendCode.FunctionCallResponse && !op.answered) {
          op.answered = true;
          return null;
        }
        if (code === BackendCode.ErrorResponse && !op.answered) {
          op.answered = true;
          return null;
        }
        if (code === BackendCode.ReadyForQuery && op.answered) return this.ready(op.seg, body, null);
        return unexpectedReply(code, op);
      default:
        return unexpectedReply(code, op);
    }
  }

  private queryReply(op: Extract<Op<S, P>, { k: 'query' }>, code: number, body: Buffer): string | null {
    if (!op.started) {
      // A simple Query drops the unnamed statement and portal before it parses anything.
      op.started = true;
      this.statements.delete('');
      this.portals.delete('');
    }
    const n = op.statements?.length;
    if (code === BackendCode.ReadyForQuery) {
      if (n !== undefined && !op.failed && op.index !== n) return `the server completed ${op.index} statements of a query the gateway split into ${n}`;
      const plain = op.statements !== null && !endsTransactions(op.statements);
      const expected = plain && n !== 0 ? (op.failed ? (this.status === 'T' ? 'E' : this.status) : this.status) : null;
      return this.ready(op.seg, body, expected);
    }
    if (op.failed) return `unexpected ${codeName(code)} after the query failed`;
    if (code === BackendCode.ErrorResponse) {
      op.failed = true;
      return null;
    }
    if (code === BackendCode.EmptyQueryResponse) {
      if (n !== undefined && n !== 0) return 'the server found an empty query where the gateway found statements';
      return null;
    }
    if (n !== undefined && op.index >= n) return `the server sent ${codeName(code)} after the ${n} statements the gateway found in the query`;
    if (code === BackendCode.RowDescription || OUTPUT.has(code)) return null;
    if (code === BackendCode.CommandComplete) {
      if (!op.statements) {
        // Text the gateway cannot parse ran: it may have prepared or dropped any statement, so
        // none is trusted any more (a Bind of one then fails the check instead of running unseen).
        this.statements.clear();
        this.portals.clear();
        return null;
      }
      const st = op.statements[op.index];
      const why = st ? this.completeEffects(st.effects, op.executes[op.index] ?? [], parseCommandComplete(body), st.prepared) : null;
      op.index++;
      return why;
    }
    return `unexpected ${codeName(code)} in reply to a simple query`;
  }

  /** A statement completed: apply what it did to the namespaces, and check its tag says it was that statement. */
  private completeEffects(effects: readonly NamespaceEffect[], executes: readonly (S | null)[], tag: string, prepared: ReadonlyMap<string, S> | undefined): string | null {
    const expected = tagOf(effects);
    if (expected !== null && tag !== expected) return `the server completed "${tag}" where the gateway expected ${expected}`;
    let x = 0;
    for (const e of effects) {
      switch (e.k) {
        case 'prepare': {
          const value = prepared?.get(e.name);
          if (this.statements.has(e.name)) return `the server prepared statement "${e.name}", which already exists`;
          if (value) this.statements.set(e.name, value);
          break;
        }
        case 'execute': {
          const decided = executes[x++];
          if (!decided || this.statements.get(e.name) !== decided) return `the server executed prepared statement "${e.name}", which is not the one the gateway decided on`;
          break;
        }
        case 'deallocate':
          if (!this.statements.has(e.name)) return `the server deallocated statement "${e.name}", which the gateway holds no record of`;
          this.statements.delete(e.name);
          break;
        case 'deallocate_all':
        case 'discard_all': {
          const unnamed = this.statements.get('');
          this.statements.clear();
          if (unnamed) this.statements.set('', unnamed);
          if (e.k === 'discard_all') this.portals.clear();
          break;
        }
        case 'cursor':
          if (e.name === null) this.portals.clear();
          else this.portals.delete(e.name);
          break;
        case 'transaction':
          this.portalsUncertain = true;
          break;
        default:
          break;
      }
    }
    return null;
  }

  private fail(): null {
    this.failed = true;
    this.ops.shift();
    this.skipToSync();
    return null;
  }

  /** Drops the requests the server skips after an error; a skipped Query's segment is settled with nothing written. */
  private skipToSync(): void {
    while (this.ops.length > 0 && this.ops[0]!.k !== 'sync') {
      const op = this.ops.shift()!;
      if (op.k === 'query' || op.k === 'function') this.settled = Math.max(this.settled, op.seg + 1);
    }
  }

  /** ReadyForQuery: the segment is settled; `expected` is the status the prediction allows (null: any). */
  private ready(seg: number, body: Buffer, expected: TxStatus | null): string | null {
    const status = String.fromCharCode(body[0] ?? 0) as TxStatus;
    if (status !== 'I' && status !== 'T' && status !== 'E') return `ReadyForQuery with an unknown transaction status ${JSON.stringify(status)}`;
    if (expected !== null && status !== expected) return `the server reports transaction status ${status} where the gateway expected ${expected}`;
    this.ops.shift();
    this.failed = false;
    this.status = status;
    if (status === 'I') {
      this.portals.clear();
      this.portalsUncertain = false;
    } else if (status === 'E') this.portalsUncertain = true;
    this.settled = seg + 1;
    for (const [k, w] of this.stmtWrites) if (w.seg < this.settled) this.stmtWrites.delete(k);
    for (const [k, w] of this.portalWrites) if (w.seg < this.settled) this.portalWrites.delete(k);
    if (this.allStmts && this.allStmts.seg < this.settled) this.allStmts = null;
    return null;
  }
}

function preparedOf<S extends PreparedLike>(stmt: PreparedLike): ReadonlyMap<string, S> | undefined {
  return stmt.prepared as ReadonlyMap<string, S> | undefined;
}

function describeOp(op: Op<PreparedLike, PortalLike<PreparedLike>>): string {
  switch (op.k) {
    case 'parse':
      return `Parse of statement "${op.name}"`;
    case 'bind':
      return `Bind of portal "${op.portal}"`;
    case 'describe':
      return `Describe of ${op.target === 'S' ? 'statement' : 'portal'} "${op.name}"`;
    case 'execute':
      return `Execute of portal "${op.portal}"`;
    case 'close':
      return `Close of ${op.target === 'S' ? 'statement' : 'portal'} "${op.name}"`;
    case 'sync':
      return 'Sync';
    case 'query':
      return 'a simple query';
    case 'function':
      return 'a function call';
    default:
      return 'a request';
  }
}

/**
 * The messages of one batch, planned in order. Nothing reaches the shared state until `commit`,
 * so a refused or held batch leaves no trace in the prediction.
 */
export class Draft<S extends PreparedLike, P extends PortalLike<S>> {
  private readonly ops: Op<S, P>[] = [];
  private readonly stmts = new Map<string, S | null>();
  private readonly portalMap = new Map<string, P | null>();
  private allStmtsGone = false;
  private allPortalsGone = false;
  /** A message read a name whose value depends on replies not yet in: plan this batch again later. */
  stalled = false;

  constructor(private readonly state: ProtocolState<S, P>) {}

  private statement(name: string): S | null {
    if (this.stmts.has(name)) return this.stmts.get(name)!;
    if (this.allStmtsGone && name !== '') return null;
    const r = this.state.readStatement(name);
    if (r === 'stall') {
      this.stalled = true;
      return null;
    }
    return r.value;
  }

  private portal(name: string): P | null {
    if (this.portalMap.has(name)) return this.portalMap.get(name)!;
    if (this.allPortalsGone) return null;
    const r = this.state.readPortal(name);
    if (r === 'stall') {
      this.stalled = true;
      return null;
    }
    return r.value;
  }

  /** The portal an Execute would run, without planning anything. */
  peekPortal(name: string): P | null {
    const stalled = this.stalled;
    const value = this.portal(name);
    this.stalled = stalled;
    return value;
  }

  /** A position in the planned messages, for `insertAt`. */
  mark(): number {
    return this.ops.length;
  }

  /** Plans the messages `add` plans as if they came at `mark` (the gateway's own requests that go before a client's). */
  insertAt(mark: number, add: () => void): void {
    const from = this.ops.length;
    add();
    const added = this.ops.splice(from);
    this.ops.splice(mark, 0, ...added);
  }

  parse(name: string, value: S): void {
    this.stmts.set(name, value);
    this.ops.push({ k: 'parse', seg: 0, name, value });
  }

  /** The statement the Bind will use (null: none, the Bind fails); `make` builds the portal from it. */
  bind(portal: string, statement: string, make: (stmt: S) => P): P | null {
    const stmt = this.statement(statement);
    const value = stmt ? make(stmt) : null;
    this.portalMap.set(portal, value);
    this.ops.push({ k: 'bind', seg: 0, portal, statement, value });
    return value;
  }

  /** What a Describe will describe, if known (only for caching columns; never for decisions). */
  describe(target: 'S' | 'P', name: string): S | P | null {
    const stalled = this.stalled;
    const value = target === 'S' ? this.statement(name) : this.portal(name);
    this.stalled = stalled;
    this.ops.push({ k: 'describe', seg: 0, target, name, stage: 0 });
    return value;
  }

  /** The portal an Execute runs and, for each `EXECUTE name` in its statement, the prepared statement that runs. */
  execute(portal: string): { portal: P | null; executes: (S | null)[] } {
    const value = this.portal(portal);
    const executes = value ? this.effects(value.statement.effects, preparedOf(value.statement)) : [];
    this.ops.push({ k: 'execute', seg: 0, portal, value, executes });
    return { portal: value, executes };
  }

  close(target: 'S' | 'P', name: string): void {
    if (target === 'S') this.stmts.set(name, null);
    else this.portalMap.set(name, null);
    this.ops.push({ k: 'close', seg: 0, target, name });
  }

  sync(): void {
    this.ops.push({ k: 'sync', seg: 0, ran: false, transaction: false });
  }

  /** A simple Query; `statements` null when the gateway's parser could not split it. Returns, per statement, the prepared statements its EXECUTEs run. */
  query(statements: QueryStatement<S>[] | null): (S | null)[][] {
    this.stmts.set('', null);
    this.portalMap.set('', null);
    if (!statements) {
      this.stmts.clear();
      this.allStmtsGone = true;
    }
    const executes = (statements ?? []).map((st) => this.effects(st.effects, st.prepared));
    this.ops.push({ k: 'query', seg: 0, statements, executes, index: 0, started: false, failed: false });
    return executes;
  }

  functionCall(): void {
    this.ops.push({ k: 'function', seg: 0, answered: false });
  }

  private effects(effects: readonly NamespaceEffect[], prepared: ReadonlyMap<string, S> | undefined): (S | null)[] {
    const executes: (S | null)[] = [];
    for (const e of effects) {
      switch (e.k) {
        case 'execute':
          executes.push(this.statement(e.name));
          break;
        case 'prepare':
          this.stmts.set(e.name, prepared?.get(e.name) ?? null);
          break;
        case 'deallocate':
          this.stmts.set(e.name, null);
          break;
        case 'deallocate_all':
        case 'discard_all':
          for (const k of this.stmts.keys()) if (k !== '') this.stmts.delete(k);
          this.allStmtsGone = true;
          if (e.k === 'discard_all') {
            this.portalMap.clear();
            this.allPortalsGone = true;
          }
          break;
        case 'cursor':
          if (e.name !== null) this.portalMap.set(e.name, null);
          else {
            this.portalMap.clear();
            this.allPortalsGone = true;
          }
          break;
        default:
          break;
      }
    }
    return executes;
  }

  /** Sends the planned messages: they become the prediction and await their replies. */
  commit(): void {
    this.state.apply(this.ops);
    this.ops.length = 0;
  }
}

function unexpectedReply(code: number, op: Op<PreparedLike, PortalLike<PreparedLike>>): string {
  return `unexpected ${codeName(code)} in reply to ${describeOp(op)}`;
}

/** The SQLSTATE of an ErrorResponse. */
function errorCode(body: Buffer): string {
  return parseErrorFields(body).get('C') ?? '';
}

/** Whether a statement of a simple query may start or end a transaction (COMMIT, BEGIN, CALL, DO). */
function endsTransactions(statements: readonly { effects: readonly NamespaceEffect[] }[]): boolean {
  for (const st of statements) for (const e of st.effects) if (e.k === 'transaction') return true;
  return false;
}
