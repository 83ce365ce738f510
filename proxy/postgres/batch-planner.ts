/**
 * The batch planner: collects a session's client messages into batches (up to a Sync, Flush, Query,
 * FunctionCall, COPY message or Terminate), and turns each batch into what goes upstream: the
 * messages, the replies they will get (reply-pairing.ts), and one decided statement run for every
 * statement the server will execute. What an Execute runs is read from the predicted server state
 * (protocol-state.ts), which planning advances in a draft; the session commits the draft when the
 * batch is sent. A statement is classified by effect (classify.ts, with the catalog folded in by
 * effects.ts), scanned for the detectors policies match on, and decided by policy.
 *
 * Planning is synchronous. Its one asynchronous step comes first (`beforePlanning`): resolving
 * through the catalog what the batch's statements use.
 */
import type { SqlClass } from '../../shared/config';
import type { Identity } from '../../shared/identity';
import type { PolicyDecision } from '../policy/types';
import type { ErrorInit } from './backend-messages';
import { type Classification, classifySql, type CopyOutShape } from './classify';
import { foldEffects } from './effects';
import {
  buildClose,
  buildDescribe,
  buildFlush,
  buildParse,
  buildQuery,
  buildSync,
  parseBind,
  parseExecute,
  parseFunctionCall,
  parseParse,
  parseQuery,
  parseTarget,
} from './frontend-messages';
import { withLineage } from './lineage';
import { ProtocolError, type RawMessage } from './message-buffer';
import { codeName, FrontendCode, isFrontendCode } from './message-codes';
import type { Draft, ProtocolState, QueryStatement } from './protocol-state';
import type { Portal, PreparedStatement, StatementRun } from './recording';
import type { ExpectedReply } from './reply-pairing';
import type { PgListenerContext } from './session-context';
import type { SessionMaskers } from './session-maskers';
import { type NamespaceEffect, namespaceEffects } from './sql-namespace';
import { redactStatementSecrets } from './statement-secrets';

/** Sent upstream in place of a refused statement: it cannot parse, so the upstream fails it. */
export const REFUSED_STATEMENT_SQL = 'CUSTODY_REFUSED_STATEMENT';
/** The gateway's own prepared statement for learning a COPY's columns (closed right away). */
const COPY_DESCRIBE_STATEMENT = 'custody_copy_columns';

/** A batch is planned at the latest after this many messages or bytes, even without a boundary. */
const MAX_BATCH_MESSAGES = 1000;
const MAX_BATCH_BYTES = 8 * 1024 * 1024;

/** What a client message is to the planner. */
export type BatchItemKind = 'parse' | 'bind' | 'describe' | 'execute' | 'close' | 'sync' | 'flush' | 'query' | 'function' | 'copy' | 'terminate';

export interface BatchItem {
  kind: BatchItemKind;
  message: RawMessage;
}

/** What forwarding a batch puts on the wire and in the reply FIFO, prepared before anything is sent. */
export interface PlannedBatch {
  /** The messages for the upstream, in order (the client's, and the gateway's own Describes). */
  wire: Buffer[];
  expected: ExpectedReply[];
  /** One per statement the server will execute, decided. */
  runs: StatementRun[];
  /** Undoes what planning marked on known statements and portals, should the batch not be sent. */
  undo: (() => void)[];
  /** The last message that ends a batch: what a refusal's stand-in must end with too. */
  boundary: BatchItemKind | null;
  /** The predicted server state after the batch: committed when it is sent. */
  draft: Draft<PreparedStatement, Portal>;
}

/** The kind of a client message after login; a message that has no place there is a protocol violation. */
function batchItemKind(code: number): BatchItemKind {
  switch (code) {
    case FrontendCode.Parse:
      return 'parse';
    case FrontendCode.Bind:
      return 'bind';
    case FrontendCode.Describe:
      return 'describe';
    case FrontendCode.Execute:
      return 'execute';
    case FrontendCode.Close:
      return 'close';
    case FrontendCode.Sync:
      return 'sync';
    case FrontendCode.Flush:
      return 'flush';
    case FrontendCode.Query:
      return 'query';
    case FrontendCode.FunctionCall:
      return 'function';
    case FrontendCode.CopyData:
    case FrontendCode.CopyDone:
    case FrontendCode.CopyFail:
      return 'copy';
    case FrontendCode.Terminate:
      return 'terminate';
    case FrontendCode.Password:
      throw new ProtocolError('unexpected password message: the session is already authenticated');
    default:
      throw new ProtocolError(isFrontendCode(code) ? `unexpected message type ${codeName(code)}` : `invalid frontend message type ${codeName(code)}`);
  }
}

const NO_EFFECTS: readonly NamespaceEffect[] = [];
const NO_EXECUTES: readonly (PreparedStatement | null)[] = [];

/** Whether a text holds DDL (or what may be DDL): the catalog's cache is then dropped. */
function changesCatalog(classification: Classification): boolean {
  for (const st of classification.statements) for (const sqlClass of st.classes) if (sqlClass === 'ddl' || sqlClass === 'routine_ddl' || sqlClass === 'unknown') return true;
  return false;
}

/** A Bind parameter as recorded and shown to approvers: text as is, binary as `\x` hex. */
function paramText(value: Buffer | null, format: number): string | null {
  if (value === null) return null;
  return format === 1 ? `\\x${value.toString('hex')}` : value.toString('utf8');
}

export class BatchPlanner {
  /** Who the session is (set once authenticated): what policies decide for. */
  identity: Identity | undefined;
  /** Statements decided so far; numbers the runs. */
  statementCount = 0;
  /** The upstream failed (or the gateway refused) part of a batch: messages up to the next Sync are dropped. */
  discardUntilSync = false;
  /** The client messages not yet planned. */
  private queued: BatchItem[] = [];
  private queuedBytes = 0;
  /** The previous batch held DDL: the catalog's cache is dropped again once it has run. */
  private ddlBefore = false;
  /** The current batch's texts as classified by `beforePlanning`. */
  private readonly preclassified = new Map<string, Classification>();

  constructor(
    private readonly ctx: PgListenerContext,
    private readonly maskers: SessionMaskers,
  ) {}

  /** Queues a client message; true when the batch it belongs to is complete and should be planned. */
  queue(message: RawMessage): boolean {
    const kind = batchItemKind(message.code);
    this.queued.push({ kind, message });
    this.queuedBytes += message.raw.length;
    const boundary = kind === 'sync' || kind === 'flush' || kind === 'query' || kind === 'function' || kind === 'copy' || kind === 'terminate';
    return boundary || this.queued.length >= MAX_BATCH_MESSAGES || this.queuedBytes >= MAX_BATCH_BYTES;
  }

  /** True while client messages wait to be planned. */
  get hasQueued(): boolean {
    return this.queued.length > 0;
  }

  /** Takes the queued messages (to plan them, or to hold them back while something is looked up). */
  takeQueued(): BatchItem[] {
    const items = this.queued;
    this.queued = [];
    this.queuedBytes = 0;
    return items;
  }

  /** Puts messages taken earlier back, before anything queued since. */
  requeue(items: BatchItem[]): void {
    this.queued = [...items, ...this.queued];
  }

  /**
   * The one asynchronous step in front of the planner: resolve through the catalog (what is not
   * cached) the routines, operators, types and relations used by the queued Parse and Query texts
   * and by the prepared statements the queued Binds name; null when everything is cached. DDL in a
   * batch drops the catalog's cache now and again before this session's next batch, since the DDL
   * runs in between.
   */
  beforePlanning(serverState: ProtocolState<PreparedStatement, Portal>): Promise<void> | null {
    const catalog = this.ctx.routines;
    const texts: Classification[] = [];
    let ddl = false;
    // Kept for the planner, which would otherwise classify the same texts again.
    this.preclassified.clear();
    for (const item of this.queued) {
      if (item.kind === 'bind') {
        // A statement parsed earlier is folded again at Execute: its names must be resolved too.
        const prepared = serverState.confirmedStatement(parseBind(item.message.body).statement);
        if (prepared) texts.push(prepared.classification);
        continue;
      }
      if (item.kind !== 'parse' && item.kind !== 'query') continue;
      const text = item.kind === 'parse' ? parseParse(item.message.body).query : parseQuery(item.message.body);
      const classification = classifySql(text);
      this.preclassified.set(text, classification);
      texts.push(classification);
      if (!ddl) ddl = changesCatalog(classification);
    }
    if (ddl || this.ddlBefore) catalog.invalidate();
    this.ddlBefore = ddl;
    for (const text of texts) if (catalog.needs(text)) return catalog.resolve(texts);
    return null;
  }

  /**
   * Plans `items` on `draft`. Null when the batch reads a name that an earlier segment, whose
   * replies are not all in, wrote (did that Parse succeed?): nothing of it is kept, and it must be
   * planned again once those replies are in.
   */
  plan(items: BatchItem[], draft: Draft<PreparedStatement, Portal>): PlannedBatch | null {
    // Masking rules can change while a connection stays open (console edits): pick up the current ones.
    this.maskers.refresh();
    const batch: PlannedBatch = { wire: [], expected: [], runs: [], undo: [], boundary: null, draft };
    const count = this.statementCount;
    const discarding = this.discardUntilSync;
    for (const item of items) {
      if (this.discardUntilSync) {
        // The upstream already failed this batch: it skips to Sync, and so do we.
        if (item.kind !== 'sync') continue;
        this.discardUntilSync = false;
      }
      this.planItem(item, batch, draft);
      if (item.kind === 'sync' || item.kind === 'flush' || item.kind === 'query' || item.kind === 'function' || item.kind === 'terminate') batch.boundary = item.kind;
    }
    if (draft.stalled) {
      this.undo(batch);
      this.statementCount = count;
      this.discardUntilSync = discarding;
      return null;
    }
    return batch;
  }

  /** Undoes what planning `batch` marked on known statements and portals (it is not sent). */
  undo(batch: PlannedBatch): void {
    for (const undo of batch.undo.reverse()) undo();
  }

  /**
   * What goes upstream in place of a refused batch: a statement that cannot parse, so the upstream
   * itself rolls back the implicit transaction (or marks the explicit one failed) and skips to
   * Sync; the reply pairing replaces its error by `refusal`. Planned on `draft`, a fresh one: the
   * refused batch never reaches the server, but its stand-in does (an unnamed Parse or a Query
   * drops the unnamed statement).
   */
  standIn(boundary: BatchItemKind | null, refusal: ErrorInit, draft: Draft<PreparedStatement, Portal>): { wire: Buffer[]; expected: ExpectedReply[] } {
    if (boundary === 'query' || boundary === 'function') {
      draft.query([]);
      draft.commit();
      return { wire: [buildQuery(REFUSED_STATEMENT_SQL)], expected: [{ kind: 'query', runs: [], index: 0, refusal }] };
    }
    draft.parse('', this.prepared('', REFUSED_STATEMENT_SQL, { statements: [] }, []));
    const wire = [buildParse('', REFUSED_STATEMENT_SQL)];
    const expected: ExpectedReply[] = [{ kind: 'refusal', error: refusal }];
    if (boundary === 'sync') {
      draft.sync();
      draft.commit();
      wire.push(buildSync());
      expected.push({ kind: 'sync' });
    } else {
      draft.commit();
      if (boundary === 'flush') wire.push(buildFlush());
      this.discardUntilSync = true;
    }
    return { wire, expected };
  }

  /** A statement's classification with what the catalog knows about its calls, operators and relations folded in. */
  private classify(sql: string): Classification {
    return foldEffects(this.preclassified.get(sql) ?? classifySql(sql), this.ctx.routines.lookup());
  }

  /** A statement run as decided: detectors scanned, policy evaluated, masker chosen. */
  private decide(
    sql: string,
    classified: { classes: SqlClass[]; tables: string[]; parseError?: string; copyOut?: CopyOutShape },
    protocol: StatementRun['protocol'],
    params?: readonly (string | null)[],
  ): StatementRun {
    const connection = this.ctx.connection;
    // Detectors that policies match on look at the statement and its parameters. A scan that
    // cannot finish leaves the gateway unable to decide: the statement is refused (fail closed).
    let detectorHits: string[] | undefined;
    let scanError: string | undefined;
    const masker = this.maskers.current;
    const { lineage, classes } = withLineage(sql, classified.classes, masker);
    try {
      detectorHits = masker.detectorHits(sql, params);
    } catch (err) {
      scanError = (err as Error).message;
    }
    let decision: PolicyDecision = detectorHits
      ? this.ctx.services.policy.evaluate({
          connection: connection.name,
          protocol: 'postgres',
          identity: this.identity!,
          sql: { classes, tables: classified.tables },
          text: sql,
          detectorHits,
        })
      : { action: 'deny', rule: 'gateway', reason: `the gateway could not check the statement for the detectors its policies match on (${scanError}), so it refuses it` };
    // With per-group upstream roles the session's role is the gateway's choice, not the client's:
    // statements that change it, and those no rule decided that could (dynamic SQL), are refused.
    if (connection.roles && (classified.classes.includes('set_role') || (classified.classes.includes('unknown') && decision.rule === undefined))) {
      decision = { action: 'deny', rule: 'gateway', reason: `connection ${connection.name} runs each group as its own upstream role; statements that change the role, or that the gateway cannot see into, are refused` };
    }
    return {
      n: ++this.statementCount,
      // What is recorded and shown to approvers: passwords written into the statement are replaced.
      sql: redactStatementSecrets(sql),
      detectorHits: detectorHits?.length ? detectorHits : undefined,
      classes,
      lineage,
      tables: classified.tables,
      protocol,
      parseError: classified.parseError,
      decision,
      masker: decision.action === 'mask' ? this.maskers.forMaskDecision(decision) : masker,
      copyShape: classified.copyOut,
      startedAt: 0,
      rows: 0,
      sample: [],
      spans: [],
      masked: {},
      finished: false,
    };
  }

  /** A prepared statement as `Parse` (or SQL `PREPARE`) creates it: its text, classes and namespace effects. */
  private prepared(name: string, sql: string, classification = this.classify(sql), effects = namespaceEffects(sql, classification.statements.length)?.flat() ?? []): PreparedStatement {
    let prepared: Map<string, PreparedStatement> | undefined;
    for (const effect of effects) {
      if (effect.k !== 'prepare') continue;
      prepared ??= new Map();
      // PostgreSQL keeps the whole text that carried the PREPARE as the statement's text.
      prepared.set(effect.name, this.prepared(effect.name, sql, this.classify(effect.sql), []));
    }
    return { name, sql, classification, effects, ...(prepared ? { prepared } : {}), describing: false };
  }

  /** What a statement that runs prepared statements (`EXECUTE name`) does: the classes of what it runs. */
  private withExecuted(
    classified: { classes: SqlClass[]; tables: string[] },
    effects: readonly NamespaceEffect[],
    executes: readonly (PreparedStatement | null)[],
  ): { classes: SqlClass[]; tables: string[]; executes?: { name: string; sql: string | null }[] } {
    if (effects.length === 0) return classified;
    const names = effects.filter((effect) => effect.k === 'execute').map((effect) => effect.name);
    if (names.length === 0) return classified;
    const classes = new Set<SqlClass>(classified.classes.filter((sqlClass) => sqlClass !== 'unknown'));
    const tables = new Set(classified.tables);
    executes.forEach((statement) => {
      if (!statement) classes.add('unknown');
      for (const st of statement?.classification.statements ?? []) {
        for (const sqlClass of st.classes) classes.add(sqlClass);
        for (const table of st.tables) tables.add(table);
      }
      if (statement?.classification.error || statement?.classification.statements.length === 0) classes.add('unknown');
    });
    return { classes: [...classes], tables: [...tables], executes: names.map((name, i) => ({ name, sql: executes[i]?.sql ?? null })) };
  }

  private planItem(item: BatchItem, batch: PlannedBatch, draft: Draft<PreparedStatement, Portal>): void {
    const { message } = item;
    switch (item.kind) {
      case 'parse': {
        const parse = parseParse(message.body);
        draft.parse(parse.name, this.prepared(parse.name, parse.query));
        batch.wire.push(message.raw);
        batch.expected.push({ kind: 'parse' });
        return;
      }
      case 'bind': {
        const bind = parseBind(message.body);
        const formats = bind.paramFormats;
        const formatOf = (i: number) => (formats.length === 0 ? 0 : formats.length === 1 ? formats[0]! : (formats[i] ?? 0));
        draft.bind(bind.portal, bind.statement, (statement) => ({
          name: bind.portal,
          statement,
          params: bind.params.map((value, i) => paramText(value, formatOf(i))),
          resultFormats: bind.resultFormats,
          describing: false,
        }));
        batch.wire.push(message.raw);
        batch.expected.push({ kind: 'bind' });
        return;
      }
      case 'describe': {
        const described = parseTarget(message.body, 'Describe');
        const known = draft.describe(described.target, described.name);
        batch.wire.push(message.raw);
        if (described.target === 'S') {
          const statement = (known as PreparedStatement | null) ?? this.prepared(described.name, '', { statements: [] }, []);
          const was = statement.describing;
          statement.describing = true;
          batch.undo.push(() => (statement.describing = was));
          batch.expected.push({ kind: 'describe-statement', statement });
        } else {
          const portal = (known as Portal | null) ?? { name: described.name, statement: this.prepared('', '', { statements: [] }, []), params: [], resultFormats: [], describing: false };
          const was = portal.describing;
          portal.describing = true;
          batch.undo.push(() => (portal.describing = was));
          batch.expected.push({ kind: 'describe-portal', portal, internal: false });
        }
        return;
      }
      case 'execute': {
        const execute = parseExecute(message.body);
        // Masking needs the result's columns; if the client did not ask for them, the gateway does.
        // Its Describe goes before the Execute, in the prediction as on the wire.
        const peek = draft.peekPortal(execute.portal);
        const describe = this.maskers.current.active && peek && !peek.fields && !peek.describing && !peek.statement.fields && !peek.statement.describing;
        if (describe) draft.describe('P', execute.portal);
        const { portal, executes } = draft.execute(execute.portal);
        const statement = portal?.statement;
        // Folded again with what the catalog says now: a routine replaced since the Parse counts.
        const statements = statement ? foldEffects(statement.classification, this.ctx.routines.lookup()).statements : [];
        const classified = statement
          ? this.withExecuted(
              { classes: [...new Set(statements.flatMap((st) => st.classes))] as SqlClass[], tables: [...new Set(statements.flatMap((st) => st.tables))] },
              statement.effects,
              executes,
            )
          : { classes: ['unknown'] as SqlClass[], tables: [] };
        const parseError = statement ? statement.classification.error : `no prepared statement for portal "${execute.portal}"`;
        const run = this.decide(statement?.sql ?? '', { ...classified, parseError }, 'extended', portal?.params);
        run.params = portal?.params;
        run.statementName = statement?.name;
        run.portal = execute.portal;
        run.portalRef = portal ?? undefined;
        if ('executes' in classified) run.executes = classified.executes;
        batch.runs.push(run);
        if (describe && portal) {
          portal.describing = true;
          batch.undo.push(() => (portal.describing = false));
          batch.wire.push(buildDescribe('P', execute.portal));
          batch.expected.push({ kind: 'describe-portal', portal, internal: true });
        }
        batch.wire.push(message.raw);
        batch.expected.push({ kind: 'execute', run });
        return;
      }
      case 'close': {
        const closed = parseTarget(message.body, 'Close');
        draft.close(closed.target, closed.name);
        batch.wire.push(message.raw);
        batch.expected.push({ kind: 'close' });
        return;
      }
      case 'sync':
        draft.sync();
        batch.wire.push(message.raw);
        batch.expected.push({ kind: 'sync' });
        return;
      case 'query':
        return this.planQuery(message, batch, draft);
      case 'function': {
        const call = parseFunctionCall(message.body);
        // The fast-path call runs any function by OID, with effects the gateway cannot see: never read-only.
        draft.functionCall();
        const run = this.decide(`-- FunctionCall oid ${call.functionOid} (${call.args} arguments)`, { classes: ['unknown'], tables: [] }, 'function');
        batch.runs.push(run);
        batch.wire.push(message.raw);
        batch.expected.push({ kind: 'function-call', run });
        return;
      }
      case 'flush':
      case 'copy':
      case 'terminate':
        batch.wire.push(message.raw);
        return;
    }
  }

  /** A simple Query: one run per statement in it, each with what its SQL-level PREPARE/EXECUTE/DEALLOCATE do. */
  private planQuery(message: RawMessage, batch: PlannedBatch, draft: Draft<PreparedStatement, Portal>): void {
    const sql = parseQuery(message.body);
    const classification = this.classify(sql);
    const effects = namespaceEffects(sql, classification.statements.length);
    // Split by the same parser: statement i of both lists is the same statement.
    const aligned = effects !== null && !classification.error && effects.length === classification.statements.length;
    let statements: QueryStatement<PreparedStatement>[] | null = null;
    if (aligned) {
      statements = new Array<QueryStatement<PreparedStatement>>(effects.length);
      for (let i = 0; i < effects.length; i++) {
        const statementEffects = effects[i]!;
        let prepared: Map<string, PreparedStatement> | undefined;
        for (const effect of statementEffects) if (effect.k === 'prepare') (prepared ??= new Map()).set(effect.name, this.prepared(effect.name, sql, this.classify(effect.sql), []));
        statements[i] = prepared ? { effects: statementEffects, prepared } : { effects: statementEffects };
      }
    }
    const mark = draft.mark();
    const executes = draft.query(statements);
    const runs: StatementRun[] = [];
    let copies = false;
    for (let i = 0; i < classification.statements.length; i++) {
      const st = classification.statements[i]!;
      const executed = this.withExecuted(st, statements?.[i]?.effects ?? NO_EFFECTS, executes[i] ?? NO_EXECUTES);
      const run = this.decide(st.sql, { ...st, ...executed, parseError: classification.error }, 'simple');
      if ('executes' in executed) run.executes = executed.executes;
      if (run.copyShape) copies = true;
      runs.push(run);
      batch.runs.push(run);
    }
    // COPY … TO rows carry no column names: learn them first (on this session, so its
    // search_path applies), so column rules can mask them like DataRow values.
    if (copies)
      draft.insertAt(mark, () => {
        for (const run of runs) {
          const shape = run.copyShape;
          if (!shape || shape.format === 'binary' || !run.masker.active) continue;
          if (!shape.describeSql) {
            run.copyColumns = false;
            continue;
          }
          const statement = this.prepared(COPY_DESCRIBE_STATEMENT, shape.describeSql, { statements: [] }, []);
          statement.describing = true;
          draft.parse(COPY_DESCRIBE_STATEMENT, statement);
          draft.describe('S', COPY_DESCRIBE_STATEMENT);
          draft.close('S', COPY_DESCRIBE_STATEMENT);
          draft.sync();
          batch.wire.push(buildParse(COPY_DESCRIBE_STATEMENT, shape.describeSql), buildDescribe('S', COPY_DESCRIBE_STATEMENT), buildClose('S', COPY_DESCRIBE_STATEMENT), buildSync());
          batch.expected.push(
            { kind: 'parse', internal: true },
            { kind: 'describe-statement', statement, internal: true, copyFor: run },
            { kind: 'close', internal: true },
            { kind: 'sync', internal: true },
          );
        }
      });
    batch.wire.push(message.raw);
    batch.expected.push({ kind: 'query', runs, index: 0 });
  }
}
