/**
 * What a response relay (relay-body.ts, relay-stream.ts) reads and calls on the exchange it answers.
 * exchange.ts implements it and hands itself to the relay, so the relays depend on this contract,
 * not on the exchange that imports them.
 */
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { AuditEventInput, EventKind, EventPayload, MaskSpan } from '../../shared/events';
import type { ConnectionMasker } from '../masking/types';
import type { GatewayServices } from '../services';
import type { ProxyContext } from './context';
import type { ErrorStyle, GatewayErrorCode } from './errors';
import type { HttpSession } from './sessions';
import type { UpstreamRoute } from './upstreams';

export interface RelayedExchange {
  readonly s: GatewayServices;
  readonly ctx: ProxyContext;
  readonly limits: GatewayServices['config']['limits'];
  readonly res: ServerResponse;
  readonly route: UpstreamRoute;
  /** The canonical path after the connection name: what policy saw and the upstream receives. */
  readonly path: string;
  readonly style: ErrorStyle;
  /** The connection's name. */
  readonly name: string;
  /** The session the exchange was recorded in (set before anything is forwarded). */
  readonly session: HttpSession;
  /** The client went away before its answer was complete. */
  readonly clientGone: boolean;
  /** Set once the exchange's outcome is recorded, so no second ending is recorded. */
  finished: boolean;
  readonly masker: ConnectionMasker | null;
  /** Masking rules a policy `mask` decision added. */
  readonly extraRules: string[] | undefined;
  /** Set by a stream relay: what to record when the client goes away mid-stream. */
  onClientGone: (() => void) | undefined;

  /** Milliseconds since the request arrived, to one decimal. */
  elapsed(): number;
  /** An event of this exchange's session, actor and connection. */
  base<K extends EventKind>(kind: K, payload: EventPayload<K>, spans?: MaskSpan[]): AuditEventInput;
  /** Records outside the fail-closed path (after the request was recorded); a failure is logged. */
  record(events: AuditEventInput[]): void;
  /** The message of a masker error, logging the unexpected ones. */
  unexpectedMaskingError(err: unknown): string;
  /** Records and sends a gateway error, unless the exchange already finished. */
  fail(status: number, code: GatewayErrorCode, message: string, phase: string): void;
  /** `x-custody-session` for gateway-made answers. */
  sessionHeader(): OutgoingHttpHeaders | undefined;
  /** What the client is told when the upstream's answer breaks after its headers arrived. */
  upstreamFailure(err: NodeJS.ErrnoException | undefined, encoding: string | undefined, what: string): { status: number; code: GatewayErrorCode; message: string };
  /**
   * The upstream answered but its result (`result`: the event that could not be journaled) is not
   * in the log, and the client was cut off (`client`): noted for the next start to record.
   */
  noteUnrecorded(result: string, err: unknown, client: string): void;
  /** Records that the client went away (once). */
  recordClientGone(phase: string, extra?: Record<string, unknown>): void;
  /** The headers the client gets with the upstream's answer. */
  responseHeaders(upRes: IncomingMessage, bodyRewritten: boolean): OutgoingHttpHeaders;
  /** The upstream's response headers as recorded (credentials scrubbed). */
  recordedResponseHeaders(upRes: IncomingMessage): Record<string, string | string[]>;
}
