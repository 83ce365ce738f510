/**
 * Holds for one PostgreSQL session: asks approvers about a batch's held statements, one after
 * another, through the hold queue (proxy/approvals/), and withdraws the hold being waited for when
 * the client cancels or goes away. A hold inside an open transaction keeps that transaction's
 * locks: the card says so, and its timeout stays below the server's
 * idle_in_transaction_session_timeout.
 */
import { parseDuration } from '../../shared/config';
import type { Identity } from '../../shared/identity';
import { sqlHoldText } from '../approvals/hold-queue';
import type { HoldOutcome } from '../approvals/types';
import type { PolicyDecision } from '../policy/types';
import type { ErrorInit } from './backend-messages';
import { SqlState } from './message-codes';
import type { StatementRun } from './recording';
import type { PgListenerContext } from './session-context';
import type { SessionMaskers } from './session-maskers';

/** Characters of a statement in the hold's summary (the card shows the whole statement). */
const SUMMARY_CHARS = 500;

type HoldSpec = NonNullable<PolicyDecision['hold']>;

/** Where the held statements wait: inside an open transaction, and how long the server lets it idle. */
export interface HoldContext {
  identity: Identity;
  inTransaction: boolean;
  /** The server's idle_in_transaction_session_timeout in ms (0: none). */
  idleInTransactionMs: number;
}

export class StatementHolds {
  /** Withdraws the hold being waited for. */
  private pending: AbortController | null = null;

  constructor(
    private readonly ctx: PgListenerContext,
    private readonly sessionId: string,
    private readonly maskers: SessionMaskers,
  ) {}

  /**
   * Asks approvers about each held run in turn. Null when every one is approved; else the error the
   * batch is refused with (denied, expired, cancelled, or the hold could not be created).
   */
  async request(runs: StatementRun[], where: HoldContext): Promise<ErrorInit | null> {
    const { inTransaction } = where;
    for (const run of runs) {
      const decision = run.decision;
      const abort = new AbortController();
      this.pending = abort;
      const cancelled = new Promise<'cancelled'>((resolve) => abort.signal.addEventListener('abort', () => resolve('cancelled'), { once: true }));
      let outcome: HoldOutcome | 'cancelled';
      try {
        outcome = await Promise.race([
          this.ctx.services.holds.request({
            identity: where.identity,
            connection: this.ctx.connection.name,
            protocol: 'postgres',
            session: this.sessionId,
            rule: decision.rule ?? 'hold',
            ruleReason: decision.reason,
            ...sqlHoldText(this.maskers.forLog(run.sql).text, run.params?.map((p) => (p === null ? null : this.maskers.forLog(p).text)), SUMMARY_CHARS),
            spec: this.specFor(decision.hold!, where),
            ...(inTransaction ? { inTransaction } : {}),
            signal: abort.signal,
          }),
          cancelled,
        ]);
      } catch (err) {
        // No hold, no statement: the approval it needs cannot be asked for.
        return {
          severity: 'ERROR',
          code: SqlState.InsufficientPrivilege,
          message: `statement needs approval by policy "${decision.rule ?? 'hold'}", but the hold could not be created: ${(err as Error).message}`,
        };
      } finally {
        this.pending = null;
      }
      if (outcome === 'cancelled' || outcome.state === 'cancelled') {
        return { severity: 'ERROR', code: SqlState.QueryCanceled, message: 'canceling statement due to user request (it was waiting for approval)' };
      }
      if (outcome.state !== 'approved') {
        const by = outcome.decidedBy.length ? ` by ${outcome.decidedBy.join(', ')}` : '';
        return {
          severity: 'ERROR',
          code: SqlState.InsufficientPrivilege,
          message: `statement held for approval by policy "${decision.rule ?? 'hold'}" was ${outcome.state}${by}: ${outcome.reason}`,
        };
      }
    }
    return null;
  }

  /** Withdraws the hold being waited for (a CancelRequest, the client gone); false when there is none. */
  cancel(): boolean {
    if (!this.pending) return false;
    this.pending.abort();
    return true;
  }

  /**
   * The hold's spec for a statement waiting inside an open transaction: its timeout capped below
   * the server's idle_in_transaction_session_timeout, which would otherwise end the session (and
   * the transaction) while approvers still look at it.
   */
  private specFor(spec: HoldSpec, where: HoldContext): HoldSpec {
    const idle = where.idleInTransactionMs;
    if (!where.inTransaction || idle <= 0) return spec;
    const wanted = parseDuration(spec.timeout ?? '5m');
    const cap = Math.max(1, idle - Math.min(5000, Math.floor(idle / 10)));
    if (wanted <= cap) return spec;
    this.ctx.services.log.info(
      `postgres ${this.ctx.connection.name}: session ${this.sessionId}: hold timeout ${spec.timeout} capped to ${cap} ms, below the server's idle_in_transaction_session_timeout (${idle} ms)`,
    );
    return { ...spec, timeout: `${cap}ms` };
  }
}
