/**
 * Error bodies in the providers' own shapes, so the official SDKs raise their usual typed errors
 * (AuthenticationError, NotFoundError, …) whichever part of Custody answers:
 *   OpenAI    {"error": {"message", "type", "param", "code"}}   (platform.openai.com/docs/guides/error-codes)
 *   Anthropic {"type": "error", "error": {"type", "message"}}   (docs.anthropic.com/en/api/errors)
 */

export type ErrorStyle = 'openai' | 'anthropic';

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
