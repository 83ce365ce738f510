/**
 * Header handling between client, gateway and upstream: hop-by-hop headers (RFC 9110 §7.6.1) stay
 * on their hop, the client's credential is replaced by the connection's secret, and what is
 * recorded never holds a credential or a cookie.
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';

/** RFC 9110 §7.6.1 plus the legacy ones proxies still see. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade']);

/** Request headers the gateway sets itself or consumes. */
const REQUEST_OWN = new Set(['host', 'authorization', 'x-api-key', 'content-length', 'expect', 'accept-encoding', 'x-custody-session']);

/** Never recorded: credentials and cookies. */
const SECRET_HEADERS = new Set(['authorization', 'proxy-authorization', 'x-api-key', 'api-key', 'cookie', 'set-cookie']);
/** Header names that look like they carry a credential (`x-goog-api-key`, `x-auth-token`, …). */
const SECRET_NAME_RE = /(^|[-_])(key|token|secret|password|passwd|auth|credential|signature)s?($|[-_])/i;

/** The console's session cookie; a browser sends it to every port of the host, so it is stripped. */
const CONSOLE_COOKIE_RE = /(^|;\s*)custody_session=[^;]*(;\s*)?/;

function connectionTokens(value: string | string[] | undefined): string[] | undefined {
  if (!value || value === 'keep-alive' || value === 'close') return undefined; // the usual values name no header
  return (Array.isArray(value) ? value.join(',') : value)
    .split(',')
    .map((t) => t.trim().toLowerCase())
    .filter(Boolean);
}

/**
 * Headers for the upstream request: the client's minus hop-by-hop ones (and those its `Connection`
 * header names), minus its credential; the caller adds the connection's secret.
 */
export function upstreamRequestHeaders(headers: IncomingHttpHeaders, dropContentEncoding: boolean): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  const listed = connectionTokens(headers['connection']);
  for (const name in headers) {
    if (HOP_BY_HOP.has(name) || REQUEST_OWN.has(name)) continue;
    if (listed?.includes(name)) continue;
    if (dropContentEncoding && name === 'content-encoding') continue;
    const value = headers[name];
    if (value === undefined) continue;
    if (name === 'cookie') {
      const stripped = (value as string).replace(CONSOLE_COOKIE_RE, '$1').replace(/;\s*$/, '');
      if (stripped) out[name] = stripped;
      continue;
    }
    out[name] = value;
  }
  return out;
}

/**
 * Headers for the client's response: the upstream's minus hop-by-hop ones; `content-length` and
 * `content-encoding` are dropped when the gateway re-encodes the body.
 */
export function clientResponseHeaders(headers: IncomingHttpHeaders, bodyRewritten: boolean): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  const listed = connectionTokens(headers['connection']);
  for (const name in headers) {
    if (HOP_BY_HOP.has(name)) continue;
    if (listed?.includes(name)) continue;
    if (bodyRewritten && (name === 'content-length' || name === 'content-encoding')) continue;
    const value = headers[name];
    if (value !== undefined) out[name] = value;
  }
  return out;
}

/** Headers as recorded: credentials, cookies and credential-looking headers are left out. */
export function recordedHeaders(headers: IncomingHttpHeaders): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined || SECRET_HEADERS.has(name) || HOP_BY_HOP.has(name)) continue;
    out[name] = SECRET_NAME_RE.test(name) ? '[redacted]' : value;
  }
  return out;
}
