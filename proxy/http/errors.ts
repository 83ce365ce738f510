/**
 * Errors the gateway itself answers with, shaped like the provider's own error JSON so the
 * official SDKs raise their usual typed errors (AuthenticationError, PermissionDeniedError, …):
 *   OpenAI    {"error": {"message", "type", "param", "code"}}   (platform.openai.com/docs/guides/error-codes)
 *   Anthropic {"type": "error", "error": {"type", "message"}}   (docs.anthropic.com/en/api/errors)
 * Generic `http` connections use the OpenAI shape. Every gateway-made error also carries the
 * header `x-custody-error: <code>`, so a client can tell it from an upstream error.
 */
import type { OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { ConnectionKind } from '../../shared/config';
import { errorBody, type ErrorStyle } from '../../shared/provider-errors';
import type { SseEvent } from '../masking/types';

export type { ErrorStyle } from '../../shared/provider-errors';

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
  | 'connection_unavailable'
  | 'invalid_path'
  | 'invalid_json'
  | 'invalid_body'
  | 'unsupported_encoding'
  | 'unsupported_media_type'
  | 'unmaskable_value'
  | 'request_too_large'
  | 'response_too_large'
  | 'policy_denied'
  | 'hold_denied'
  | 'hold_expired'
  | 'hold_unavailable'
  | 'masking_failed'
  | 'store_unavailable'
  | 'gateway_not_admitted'
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

export { errorBody } from '../../shared/provider-errors';

/** Sends a provider-shaped error (when the response has not started) and says whether it did. */
export function sendError(res: ServerResponse, style: ErrorStyle, status: number, code: GatewayErrorCode, message: string, extra?: OutgoingHttpHeaders): boolean {
  if (res.headersSent || res.destroyed) return false;
  const body = JSON.stringify(errorBody(style, status, code, message));
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'x-custody-error': code, ...extra });
  res.end(body);
  return true;
}

/**
 * An error inside an event stream whose headers were already sent: Anthropic's `event: error`
 * (the SDK raises APIError), and for OpenAI an `event: error` whose data carries `error` (the SDK
 * raises APIError for any data object with an `error` member).
 */
export function errorEvent(style: ErrorStyle, status: number, code: string, message: string): SseEvent {
  return { event: 'error', data: JSON.stringify(errorBody(style, status, code, message)) };
}
