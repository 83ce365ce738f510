/**
 * Errors the gateway itself answers with, shaped like the provider's own error JSON so the
 * official SDKs raise their usual typed errors (AuthenticationError, PermissionDeniedError, …):
 *   OpenAI    {"error": {"message", "type", "param", "code"}}   (platform.openai.com/docs/guides/error-codes)
 *   Anthropic {"type": "error", "error": {"type", "message"}}   (docs.anthropic.com/en/api/errors)
 * Generic `http` connections use the OpenAI shape. Every gateway-made error also carries the
 * header `x-custody-error: <code>`, so a client can tell it from an upstream error.
 */
import type { ConnectionKind } from '../../shared/config';
import type { SseEvent } from '../masking/types';

export type ErrorStyle = 'openai' | 'anthropic';

export function errorStyleFor(kind: ConnectionKind | undefined): ErrorStyle {
  return kind === 'anthropic' ? 'anthropic' : 'openai';
}

/** What went wrong, as a machine-readable code (also the OpenAI `code` field). */
export type GatewayErrorCode =
  | 'missing_api_key'
  | 'invalid_api_key'
  | 'expired_api_key'
  | 'revoked_api_key'
  | 'unknown_connection'
  | 'invalid_path'
  | 'invalid_json'
  | 'invalid_body'
  | 'unsupported_encoding'
  | 'request_too_large'
  | 'response_too_large'
  | 'policy_denied'
  | 'hold_denied'
  | 'hold_expired'
  | 'hold_unavailable'
  | 'masking_failed'
  | 'store_unavailable'
  | 'upstream_unavailable'
  | 'upstream_failed'
  | 'upstream_timeout'
  | 'upgrade_unsupported'
  | 'method_override'
  | 'internal_error';

export class GatewayError extends Error {
  constructor(
    readonly status: number,
    readonly code: GatewayErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'GatewayError';
  }
}

const ANTHROPIC_TYPES: Record<number, string> = {
  400: 'invalid_request_error',
  401: 'authentication_error',
  403: 'permission_error',
  404: 'not_found_error',
  413: 'request_too_large',
  415: 'invalid_request_error',
  429: 'rate_limit_error',
  504: 'timeout_error',
};

function openAiType(status: number): string {
  if (status === 401) return 'invalid_request_error';
  if (status === 403) return 'permission_error';
  if (status >= 500) return 'server_error';
  return 'invalid_request_error';
}

/** The error object inside the body (OpenAI: `error`; Anthropic: `error`). */
function errorObject(style: ErrorStyle, status: number, code: string, message: string): Record<string, unknown> {
  return style === 'anthropic'
    ? { type: ANTHROPIC_TYPES[status] ?? 'api_error', message }
    : { message, type: openAiType(status), param: null, code };
}

/** The JSON body of an error response. */
export function errorBody(style: ErrorStyle, status: number, code: string, message: string): Record<string, unknown> {
  const error = errorObject(style, status, code, message);
  return style === 'anthropic' ? { type: 'error', error } : { error };
}

/**
 * An error inside an event stream whose headers were already sent: Anthropic's `event: error`
 * (the SDK raises APIError), and for OpenAI an `event: error` whose data carries `error` (the SDK
 * raises APIError for any data object with an `error` member).
 */
export function errorEvent(style: ErrorStyle, status: number, code: string, message: string): SseEvent {
  return { event: 'error', data: JSON.stringify(errorBody(style, status, code, message)) };
}
