/**
 * Reply pairing: matches each upstream reply with the request it answers, through a FIFO of the
 * replies the gateway expects (https://www.postgresql.org/docs/current/protocol-flow.html). What a
 * reply says lands where it belongs: a RowDescription on the statement, portal or run it describes,
 * rows and COPY data on the running statement (masked for the client, sampled for the log), and a
 * CommandComplete, error or skip ends the run and is recorded. Replies to the gateway's own
 * requests (a Describe it added, learning a COPY's columns) are consumed, never relayed; the
 * upstream's answer to a refused batch's stand-in is replaced by the refusal.
 *
 * The protocol state (protocol-state.ts) has already checked the reply against the prediction
 * when it gets here; this module checks one thing more, that a completed write is one the statement
 * was decided as.
 */
import type { SqlClass } from '../../shared/config';
import type { RowMasker } from '../masking/types';
import {
  buildCopyData,
  buildErrorFields,
  buildErrorResponse,
  type ErrorFields,
  type ErrorInit,
  type FieldDescription,
  parseCommandComplete,
  parseCopyResponse,
  parseErrorFields,
  parseParameterStatus,
  parseRowDescription,
} from './backend-messages';
import { maskCopyRow, maskDataRow, type ResultColumn, resultColumns, rowForLog } from './data-row-masker';
import { withSources } from './lineage';
import type { RawMessage } from './message-buffer';
import { BackendCode, SqlState } from './message-codes';
import type { Portal, PreparedStatement, StatementRun } from './recording';
import type { PgListenerContext } from './session-context';
import type { SessionMaskers } from './session-maskers';
import type { SessionRecorder } from './session-recorder';
import type { SessionSockets } from './session-sockets';

/**
 * A reply the upstream owes, in the order the requests were sent. `internal`: the gateway sent the
 * request itself; its reply is consumed, never relayed.
 */
export type ExpectedReply =
  | { kind: 'parse'; internal?: boolean }
  | { kind: 'bind' }
  | { kind: 'close'; internal?: boolean }
  | { kind: 'sync'; internal?: boolean }
  | { kind: 'describe-statement'; statement: PreparedStatement; internal?: boolean; copyFor?: StatementRun }
  | { kind: 'describe-portal'; portal: Portal; internal: boolean }
  | { kind: 'execute'; run: StatementRun }
  /** A simple Query: `index` is the statement whose replies come now; `refusal` replaces the stand-in's error. */
  | { kind: 'query'; runs: StatementRun[]; index: number; refusal?: ErrorInit }
  | { kind: 'function-call'; run: StatementRun }
  /** The stand-in Parse of a refused extended-protocol batch: its error becomes `error`. */
  | { kind: 'refusal'; error: ErrorInit };

/** What the pairing asks of its session. */
export interface ReplyPairingHost {
  /** Ends the session with FATAL, recording `reason` (default: the error's message). */
  fatal(error: ErrorInit, reason?: string): void;
  /** The upstream reported a FATAL error: it is why the session ends when the upstream closes. */
  upstreamFatal(reason: string): void;
  /** The server skips the client's messages up to the next Sync; the planner must skip them too. */
  skipToSync(): void;
  /** Replies held back for a lookup may be read again. */
  pumpBack(): void;
}

/** Command tags of writes, and the class a statement that completes with one must carry. */
const WRITE_TAGS: Record<string, SqlClass> = { INSERT: 'insert', UPDATE: 'update', DELETE: 'delete', MERGE: 'merge' };

/** Fields of an ErrorResponse/NoticeResponse that can echo data: message, detail, hint, context, internal query. */
const ECHOING_ERROR_FIELDS = ['M', 'D', 'H', 'W', 'q'];

/** Masks the text of an ErrorResponse/NoticeResponse (values echo there: duplicate keys, …). */
export function maskErrorLike(message: RawMessage, masker: RowMasker, parsed?: ErrorFields): Buffer {
  if (!masker.active) return message.raw;
  const fields = parsed ?? parseErrorFields(message.body);
  let changed = false;
  for (const key of ECHOING_ERROR_FIELDS) {
    const value = fields.get(key);
    if (!value) continue;
    const masked = masker.text(value, 'client');
    if (masked.text !== value) {
      fields.set(key, masked.text);
      changed = true;
    }
  }
  return changed ? buildErrorFields(message.code, fields) : message.raw;
}

export class ReplyPairing {
  /** The replies the upstream owes, oldest first. */
  private readonly expected: ExpectedReply[] = [];
  /** The client knows the gateway's pid (its cancel key), not the upstream's: notifications are translated. */
  clientPid = 0;
  private readonly tableName = (oid: number) => this.ctx.tables.name(oid);

  constructor(
    private readonly host: ReplyPairingHost,
    private readonly sockets: SessionSockets,
    private readonly recorder: SessionRecorder,
    private readonly maskers: SessionMaskers,
    private readonly ctx: PgListenerContext,
    private readonly sessionId: string,
  ) {}

  /** Requests are on their way upstream: their replies come next, after those already owed. */
  expect(reply: ExpectedReply): void {
    this.expected.push(reply);
  }

  /** True while a statement runs upstream (closing must cancel it: closing the socket does not stop it). */
  get statementRunning(): boolean {
    return this.expected.some((owed) => owed.kind === 'execute' || owed.kind === 'query' || owed.kind === 'function-call');
  }

  /** The connection is gone: statements that were running end with `reason`; nothing more is owed. */
  abandon(reason: string): void {
    for (const owed of this.expected) {
      if (owed.kind === 'execute' && !owed.run.finished) this.recorder.runEnded(owed.run, { error: new Map([['M', `connection closed: ${reason}`], ['C', SqlState.ConnectionFailure]]) });
      if (owed.kind === 'query') for (const run of owed.runs.slice(owed.index)) if (!run.finished && run.startedAt) this.recorder.runEnded(run, { error: new Map([['M', `connection closed: ${reason}`], ['C', SqlState.ConnectionFailure]]) });
    }
    this.expected.length = 0;
  }

  /** The statement whose replies come now. */
  private currentRun(): StatementRun | undefined {
    const head = this.expected[0];
    if (!head) return undefined;
    if (head.kind === 'execute' || head.kind === 'function-call') return head.run;
    if (head.kind === 'query') return head.runs[head.index];
    return undefined;
  }

  /** Handles one upstream reply (already checked against the predicted protocol state). */
  pair(message: RawMessage): void {
    const head = this.expected[0];
    const sockets = this.sockets;
    switch (message.code) {
      case BackendCode.DataRow: {
        const run = this.currentRun();
        if (!run) return sockets.sendClient(message.raw);
        return this.onDataRow(run, message);
      }
      case BackendCode.RowDescription: {
        const fields = parseRowDescription(message.body);
        let forward = true;
        let masker = this.maskers.current;
        if (head?.kind === 'describe-statement') {
          head.statement.fields = fields;
          head.statement.describing = false;
          this.expected.shift();
          if (head.copyFor) {
            head.copyFor.fields = fields;
            head.copyFor.copyColumns = true;
            masker = head.copyFor.masker;
          }
          forward = !head.internal;
        } else if (head?.kind === 'describe-portal') {
          head.portal.fields = fields;
          head.portal.describing = false;
          forward = !head.internal;
          this.expected.shift();
        } else {
          const run = this.currentRun();
          if (run) {
            run.fields = fields;
            run.resultFormats = undefined;
            run.columns = undefined;
            masker = run.masker;
          }
        }
        if (forward) sockets.sendClient(message.raw);
        if (masker.active) this.resolveTables(fields);
        return;
      }
      case BackendCode.NoData: {
        if (head?.kind === 'describe-statement' || head?.kind === 'describe-portal') {
          this.expected.shift();
          if (head.kind === 'describe-portal') {
            head.portal.fields = [];
            head.portal.describing = false;
          } else {
            head.statement.fields = [];
            head.statement.describing = false;
            if (head.copyFor) head.copyFor.copyColumns = false;
          }
          if (head.internal) return;
        }
        return sockets.sendClient(message.raw);
      }
      case BackendCode.ParseComplete:
      case BackendCode.BindComplete:
      case BackendCode.CloseComplete:
        if (head && (head.kind === 'parse' || head.kind === 'bind' || head.kind === 'close')) {
          this.expected.shift();
          if ('internal' in head && head.internal) return;
        }
        return sockets.sendClient(message.raw);
      case BackendCode.ParameterDescription:
        if (head?.kind === 'describe-statement' && head.internal) return;
        return sockets.sendClient(message.raw);
      case BackendCode.CommandComplete:
      case BackendCode.EmptyQueryResponse:
      case BackendCode.PortalSuspended:
        return this.onCompletion(message, head);
      case BackendCode.CopyOutResponse: {
        const run = this.currentRun();
        if (run) run.copyOut = { format: parseCopyResponse(message.body).format };
        return sockets.sendClient(message.raw);
      }
      case BackendCode.CopyData: {
        const run = this.currentRun();
        if (run?.copyOut) return this.onCopyData(run, message);
        return sockets.sendClient(message.raw);
      }
      case BackendCode.FunctionCallResponse: {
        const run = this.currentRun();
        if (run && head?.kind === 'function-call') this.recorder.runEnded(run, { tag: 'FUNCTION CALL' });
        return sockets.sendClient(message.raw);
      }
      case BackendCode.ErrorResponse:
        return this.onError(message);
      case BackendCode.ReadyForQuery: {
        // Statements of a simple query after a failed one never ran.
        if (head && (head.kind === 'sync' || head.kind === 'query' || head.kind === 'function-call')) {
          this.expected.shift();
          if (head.kind === 'sync' && head.internal) return;
        } else if (head) {
          this.ctx.services.log.warn(`postgres ${this.ctx.connection.name}: session ${this.sessionId}: ReadyForQuery while expecting ${head.kind}; resynchronizing`);
          this.expected.length = 0;
        }
        return sockets.sendClient(message.raw);
      }
      case BackendCode.NoticeResponse:
        return sockets.sendClient(maskErrorLike(message, this.currentRun()?.masker ?? this.maskers.current));
      case BackendCode.NotificationResponse: {
        // Translate the session's own notifications to the pid the client knows.
        const upstream = sockets.upstream;
        if (upstream && message.body.readInt32BE(0) === upstream.pid) {
          const translated = Buffer.from(message.raw);
          translated.writeInt32BE(this.clientPid, 5);
          return sockets.sendClient(translated);
        }
        return sockets.sendClient(message.raw);
      }
      case BackendCode.ParameterStatus:
        parseParameterStatus(message.body);
        return sockets.sendClient(message.raw);
      default:
        return sockets.sendClient(message.raw);
    }
  }

  /** CommandComplete, EmptyQueryResponse or PortalSuspended: the current statement ends (or pauses). */
  private onCompletion(message: RawMessage, head: ExpectedReply | undefined): void {
    const run = this.currentRun();
    if (run?.copyOut?.format === -1) {
      this.recorder.runEnded(run, {});
      this.nextStatement(head!);
      return this.sockets.sendClient(
        buildErrorResponse({
          severity: 'ERROR',
          code: SqlState.FeatureNotSupported,
          message: 'COPY output cannot be masked here (binary format, or its columns could not be determined); use text or CSV format, or SELECT',
        }),
      );
    }
    if (run) {
      const tag = message.code === BackendCode.CommandComplete ? parseCommandComplete(message.body) : message.code === BackendCode.EmptyQueryResponse ? '' : null;
      const written = tag ? WRITE_TAGS[tag.slice(0, tag.indexOf(' ') >>> 0)] : undefined;
      if (written && !run.classes.includes(written) && !run.classes.includes('unknown')) {
        // The server ran a write the statement was not decided as (a prepared statement
        // replaced where the gateway cannot see, e.g. by dynamic SQL in a function).
        this.recorder.runEnded(run, { tag });
        this.host.fatal(
          { severity: 'FATAL', code: SqlState.ProtocolViolation, message: `the gateway ends this session: the server completed "${tag}" for a statement decided as ${run.classes.join(', ')}` },
          `protocol state mismatch: "${tag}" for statement ${run.n}`,
        );
        return;
      }
      this.recorder.runEnded(run, { tag, suspended: message.code === BackendCode.PortalSuspended });
      this.nextStatement(head!);
    }
    return this.sockets.sendClient(message.raw);
  }

  /** The current statement's replies are complete: an Execute is answered, a Query moves on to its next statement. */
  private nextStatement(head: ExpectedReply): void {
    if (head.kind === 'execute') this.expected.shift();
    else if (head.kind === 'query') head.index++;
  }

  private onError(message: RawMessage): void {
    const head = this.expected[0];
    if (head && 'internal' in head && head.internal) {
      // The gateway's own request failed (e.g. learning a COPY's columns): the client's statement
      // will meet the same error itself; rows whose columns are unknown are not sent (fail closed).
      for (const owed of this.expected) if (owed.kind === 'describe-statement' && owed.copyFor) owed.copyFor.copyColumns = owed.copyFor.copyColumns ?? false;
      this.skipUntilSync();
      return;
    }
    if (head?.kind === 'refusal') {
      this.expected.shift();
      this.skipUntilSync();
      return this.sockets.sendClient(buildErrorResponse(head.error));
    }
    if (head?.kind === 'query' && head.refusal) {
      this.sockets.sendClient(buildErrorResponse(head.refusal));
      head.index = head.runs.length;
      return;
    }
    const fields = parseErrorFields(message.body);
    const run = this.currentRun();
    if (run) this.recorder.runEnded(run, { error: fields });
    if (head?.kind === 'query') head.index = head.runs.length;
    else if (head?.kind === 'function-call') {
      // ReadyForQuery follows
    } else if (head) {
      // Extended protocol: the upstream now skips everything up to Sync.
      this.skipUntilSync();
    }
    const severity = fields.get('V') ?? fields.get('S');
    if (severity === 'FATAL' || severity === 'PANIC') this.host.upstreamFatal(`upstream: ${fields.get('M') ?? 'fatal error'}`);
    this.sockets.sendClient(maskErrorLike(message, run?.masker ?? this.maskers.current, fields));
  }

  /** After an error the server skips every request up to Sync: their statements never run. */
  private skipUntilSync(): void {
    const expected = this.expected;
    while (expected.length > 0 && expected[0]!.kind !== 'sync') {
      const skipped = expected.shift()!;
      if (skipped.kind === 'execute' && !skipped.run.finished) this.recorder.runEnded(skipped.run, { skipped: true });
      // A Query or FunctionCall sent before the Sync is skipped by the server as a whole.
      if (skipped.kind === 'query' || skipped.kind === 'function-call') for (const run of skipped.kind === 'query' ? skipped.runs : [skipped.run]) if (!run.finished) this.recorder.runEnded(run, { skipped: true });
    }
    if (expected.length === 0) this.host.skipToSync();
  }

  /** Looks up table names for masking rules like `users.ssn`; holds later replies until they are known. */
  private resolveTables(fields: FieldDescription[]): void {
    const tables = this.ctx.tables;
    const missing = tables.missing(fields.map((field) => field.tableOid));
    if (missing.length === 0) return;
    this.sockets.pauseReplies();
    tables.resolve(missing).then(
      () => {
        this.sockets.resumeReplies();
        this.host.pumpBack();
      },
      (err: unknown) =>
        this.host.fatal({ severity: 'FATAL', code: SqlState.SystemError, message: `the gateway cannot look up table names to mask results, so it stops: ${(err as Error).message}` }),
    );
  }

  /** The result columns of a run, from the RowDescription that describes it (its own, its portal's or its statement's). */
  private columnsOf(run: StatementRun): ResultColumn[] {
    if (run.columns) return run.columns;
    let fields = run.fields;
    let formats = run.resultFormats;
    if (!fields && run.portalRef) {
      const portal = run.portalRef;
      if (portal.fields) {
        fields = portal.fields;
        formats = undefined;
      } else if (portal.statement?.fields) {
        fields = portal.statement.fields;
        formats = portal.resultFormats;
      }
    }
    run.columns = withSources(fields ? resultColumns(fields, this.tableName, formats) : [], run.lineage, fields, this.ctx.tables);
    return run.columns;
  }

  private onDataRow(run: StatementRun, message: RawMessage): void {
    const masker = run.masker;
    const recordRows = this.ctx.recordRows;
    let out = message.raw;
    if (masker.active || run.sample.length < recordRows) {
      const columns = this.columnsOf(run);
      if (run.sample.length < recordRows) run.sample.push(rowForLog(message.raw, columns, masker, run.sample.length, run.spans, '/sample'));
      if (masker.active) {
        const masked = maskDataRow(message.raw, columns, masker);
        if (masked.changed) {
          out = masked.message;
          for (const [detector, count] of Object.entries(masked.counts)) run.masked[detector] = (run.masked[detector] ?? 0) + count;
        }
      }
    }
    run.rows++;
    if (!run.rowsOwed) this.recorder.rowsSent(run);
    this.sockets.sendClient(out);
  }

  private onCopyData(run: StatementRun, message: RawMessage): void {
    const masker = run.masker;
    let out = message.raw;
    if (masker.active && (run.copyOut!.format !== 0 || run.copyColumns !== true || !run.copyShape)) {
      // Binary COPY cannot be masked field by field, nor rows whose columns are unknown: drop the
      // data and fail the statement at the end.
      run.copyOut = { format: -1 };
    }
    if (run.copyOut!.format === -1) return;
    const text = message.body.toString('utf8');
    if (masker.active) {
      const header = run.copyShape!.header && run.rows === 0 && !run.copyHeaderSeen;
      run.copyHeaderSeen = true;
      const masked = header ? null : maskCopyRow(text, run.copyShape!, this.columnsOf(run), masker);
      if (masked?.changed) {
        out = buildCopyData(Buffer.from(masked.text));
        for (const [detector, count] of Object.entries(masked.counts)) run.masked[detector] = (run.masked[detector] ?? 0) + count;
      }
      if (header) {
        this.sockets.sendClient(out);
        return;
      }
    }
    if (run.sample.length < this.ctx.recordRows) {
      let logged = text;
      if (masker.active) {
        const columns = maskCopyRow(text, run.copyShape!, this.columnsOf(run), masker, 'log');
        const masked = masker.text(columns.text, 'log');
        logged = masked.text;
        for (const span of masked.spans) run.spans.push({ ...span, path: `/sample/${run.sample.length}/0` });
      }
      run.sample.push([logged.replace(/\n$/, '')]);
    }
    run.rows++;
    if (!run.rowsOwed) this.recorder.rowsSent(run);
    this.sockets.sendClient(out);
  }
}
