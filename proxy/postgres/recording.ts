/**
 * What one PostgreSQL session writes to the audit log, as pure builders: `session.start` and
 * `session.end`, `pg.statement` (and `policy.decision`) before a statement is forwarded, `pg.result`
 * or `pg.error` when it ends. Kept apart from the session's socket and protocol handling so what is
 * recorded can be read (and changed) in one place; session-recorder.ts writes them.
 */
import type { SqlClass } from '../../shared/config';
import {
  type AuditEventInput,
  type MaskSpan,
  type PgErrorPayload,
  type PgResultPayload,
  type PgStatementPayload,
  type PolicyDecisionPayload,
  type PostgresSessionStart,
  SESSION_START_VERSION,
  type SessionEndPayload,
} from '../../shared/events';
import type { Identity } from '../../shared/identity';
import type { RowMasker } from '../masking/types';
import type { PolicyDecision } from '../policy/types';
import { type ErrorFields, type ErrorInit, type FieldDescription, rowCountOfTag } from './backend-messages';
import type { Classification, CopyOutShape } from './classify';
import type { ResultColumn } from './data-row-masker';
import { SqlState } from './message-codes';
import type { PortalLike, PreparedLike } from './protocol-state';
import type { StatementLineage } from './lineage';

export interface PreparedStatement extends PreparedLike {
  sql: string;
  classification: Classification;
  prepared?: ReadonlyMap<string, PreparedStatement>;
  fields?: FieldDescription[];
  describing: boolean;
}

export interface Portal extends PortalLike<PreparedStatement> {
  params: (string | null)[];
  resultFormats: number[];
  fields?: FieldDescription[];
  describing: boolean;
}

/** One statement execution as recorded: pg.statement, then pg.result or pg.error. */
export interface StatementRun {
  n: number;
  sql: string;
  classes: SqlClass[];
  tables: string[];
  protocol: 'simple' | 'extended' | 'function';
  params?: (string | null)[];
  /** Detectors the policies match on that found something in the statement or its parameters. */
  detectorHits?: string[];
  statementName?: string;
  portal?: string;
  /** `EXECUTE name`: the prepared statements it runs, as the gateway predicts the server holds them. */
  executes?: { name: string; sql: string | null }[];
  /** The portal as bound for this execution (a later Bind may reuse the name). */
  portalRef?: Portal;
  parseError?: string;
  decision: PolicyDecision;
  masker: RowMasker;
  startedAt: number;
  fields?: FieldDescription[];
  resultFormats?: number[];
  columns?: ResultColumn[];
  rows: number;
  /** Rows were sent since the last pg.rows or pg.result (the recorder lists the run once). */
  rowsOwed?: boolean;
  sample: (string | null)[][];
  spans: MaskSpan[];
  masked: Record<string, number>;
  copyOut?: { format: number };
  /** COPY … TO: the layout of its rows; `copyColumns` false when their columns could not be learned. */
  copyShape?: CopyOutShape;
  /** Which masked columns each result column is computed from (masking follows the data). */
  lineage?: StatementLineage;
  copyColumns?: boolean;
  copyHeaderSeen?: boolean;
  finished: boolean;
}

/** Who and where, and how text is masked for the log. */
export interface RecordingContext {
  session: string;
  actor: string | undefined;
  connection: string;
  forLog(text: string): { text: string; spans: MaskSpan[] };
}

/** Who connected, from where, to which upstream backend: what `session.start` records. */
export interface SessionStart {
  identity: Identity;
  client: { address: string; port: number | null; tls: boolean; user: string; database: string | null; applicationName: string | null };
  /** The database the session uses (the upstream URL's, else the client's). */
  database: string;
  upstream: { host: string; port: number; user: string; tls: boolean; auth: string; pid: number; role?: string };
}

export function sessionStartEvent(c: RecordingContext, start: SessionStart): AuditEventInput {
  const { identity, upstream } = start;
  return {
    kind: 'session.start',
    session: c.session,
    actor: identity.subject,
    connection: c.connection,
    payload: {
      v: SESSION_START_VERSION,
      protocol: 'postgres',
      actorName: identity.name,
      identity: { subject: identity.subject, name: identity.name, groups: identity.groups, via: identity.via },
      client: start.client,
      database: start.database,
      upstream: {
        host: upstream.host,
        port: upstream.port,
        user: upstream.user,
        database: start.database,
        tls: upstream.tls,
        auth: upstream.auth,
        pid: upstream.pid,
        ...(upstream.role !== undefined ? { role: upstream.role } : {}),
      },
    } satisfies PostgresSessionStart,
  };
}

export function sessionEndEvent(c: RecordingContext, end: { reason: string; durationMs: number; statements: number }): AuditEventInput {
  return {
    kind: 'session.end',
    session: c.session,
    actor: c.actor,
    connection: c.connection,
    payload: { protocol: 'postgres', reason: end.reason, durationMs: end.durationMs, statements: end.statements } satisfies SessionEndPayload,
  };
}

/** How a statement ended. */
export interface RunEnd {
  tag?: string | null;
  error?: ErrorFields;
  suspended?: boolean;
  skipped?: boolean;
}

/** `pg.statement` for each run (with `refused` when the batch was refused), and `policy.decision` for anything but allow. */
export function statementEvents(c: RecordingContext, runs: StatementRun[], refused?: ErrorInit): AuditEventInput[] {
    const events: AuditEventInput[] = [];
    for (const run of runs) {
      const sql = c.forLog(run.sql);
      const spans: MaskSpan[] = sql.spans.map((s) => ({ ...s, path: '/sql' }));
      let params: (string | null)[] | undefined;
      if (run.params) {
        params = run.params.map((p, i) => {
          if (p === null) return null;
          const r = c.forLog(p);
          for (const s of r.spans) spans.push({ ...s, path: `/params/${i}` });
          return r.text;
        });
      }
      const d = run.decision;
      events.push({
        kind: 'pg.statement',
        session: c.session,
        actor: c.actor,
        connection: c.connection,
        spans,
        payload: {
          n: run.n,
          protocol: run.protocol,
          sql: sql.text,
          classes: run.classes,
          tables: run.tables,
          ...(params ? { params } : {}),
          ...(run.statementName !== undefined ? { statement: run.statementName } : {}),
          ...(run.portal !== undefined ? { portal: run.portal } : {}),
          ...(run.executes ? { executes: run.executes.map((x) => ({ name: x.name, sql: x.sql === null ? null : c.forLog(x.sql).text })) } : {}),
          ...(run.parseError ? { parseError: run.parseError } : {}),
          decision: { action: d.action, rule: d.rule ?? null, reason: d.reason ?? null },
          ...(run.detectorHits ? { detectors: run.detectorHits } : {}),
          ...(refused ? { refused: { code: refused.code, message: refused.message } } : {}),
        } satisfies PgStatementPayload,
      });
      if (d.action !== 'allow') {
        events.push({
          kind: 'policy.decision',
          session: c.session,
          actor: c.actor,
          connection: c.connection,
          payload: {
            protocol: 'postgres',
            n: run.n,
            action: refused && d.action === 'hold' ? 'deny' : d.action,
            rule: d.rule ?? null,
            reason: refused?.message ?? d.reason ?? null,
          } satisfies PolicyDecisionPayload,
        });
      }
    }
    return events;
}

/** `pg.result`, or `pg.error` for a failed, skipped or withheld statement. */
export function runEndEvent(c: RecordingContext, run: StatementRun, end: RunEnd): AuditEventInput {
    const durationMs = run.startedAt ? Date.now() - run.startedAt : 0;
    const columns = run.columns?.map((c) => c.ref.column) ?? run.fields?.map((f) => f.name);
    const base = {
      n: run.n,
      durationMs,
      rows: end.tag ? (rowCountOfTag(end.tag) ?? run.rows) : run.rows,
      ...(columns ? { columns } : {}),
      ...(run.sample.length ? { sample: run.sample, sampleTruncated: run.rows > run.sample.length } : {}),
      ...(Object.keys(run.masked).length ? { masked: run.masked } : {}),
    };
    let event: AuditEventInput;
    if (end.error || end.skipped || (run.copyOut?.format === -1)) {
      const message = end.error?.get('M') ?? (end.skipped ? 'not executed: an earlier message in the same batch failed' : 'COPY output could not be masked, so it was withheld');
      const logged = c.forLog(message);
      const detail = end.error?.get('D');
      event = {
        kind: 'pg.error',
        session: c.session,
        actor: c.actor,
        connection: c.connection,
        spans: [...run.spans, ...logged.spans.map((s) => ({ ...s, path: '/message' }))],
        payload: {
          ...base,
          code: end.error?.get('C') ?? (end.skipped ? null : SqlState.FeatureNotSupported),
          severity: end.error?.get('V') ?? end.error?.get('S') ?? 'ERROR',
          message: logged.text,
          ...(detail ? { detail: c.forLog(detail).text } : {}),
        } satisfies PgErrorPayload,
      };
    } else {
      event = {
        kind: 'pg.result',
        session: c.session,
        actor: c.actor,
        connection: c.connection,
        spans: run.spans,
        payload: { ...base, command: end.tag ?? null, ...(end.suspended ? { suspended: true as const } : {}) } satisfies PgResultPayload,
      };
    }
    return event;
}
