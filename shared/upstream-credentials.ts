/**
 * Credentials written into an upstream address: `postgres://app:pw@db/x`, `https://token@host/v1`,
 * `?password=…` / `?sslpassword=…` in a query string, `password=…` in a libpq conninfo string. The
 * gateway still connects with them, but no API answer, console view, log line or recorded event
 * may show them: every place that shows or records an upstream goes through `redactUpstream`.
 *
 * Redaction works on the text as written (not on a parsed and re-serialised URL), so the rest of the
 * address reads exactly as configured, and a malformed address (a password with an unescaped `@`
 * or `/`) is redacted too rather than passed through.
 */

/** What replaces a credential. */
export const REDACTED = '***';

/** Query and conninfo keys whose values are secrets (`password`, `sslpassword`, `api_key`, `access_token`…). */
const SECRET_KEY = /(?:pass(?:word)?|pwd|secret|token|api[-_]?key|apikey|auth|credential|signature|sig)$/i;

const SCHEME = /^([a-z][a-z0-9+.-]*:\/\/)/i;

/** Start and end of the userinfo's secret part in `text` (after `scheme://`), or undefined. */
function userinfoSecret(text: string): { start: number; end: number } | undefined {
  const scheme = SCHEME.exec(text);
  if (!scheme) return undefined;
  const from = scheme[1]!.length;
  const query = text.indexOf('?', from);
  const stop = query < 0 ? text.length : query;
  const at = text.lastIndexOf('@', stop - 1);
  if (at < from) return undefined;
  const userinfo = text.slice(from, at);
  const slash = userinfo.indexOf('/');
  const colon = userinfo.indexOf(':');
  // `host/path/a@b` is a path with an `@`, not userinfo; `app:p/ss@db` is a password with a `/`.
  if (slash >= 0 && (colon < 0 || colon > slash)) return undefined;
  if (colon >= 0) return { start: from + colon + 1, end: at };
  // A user name alone: for HTTP it is how tokens are often passed (`https://ghp_…@host`), so it is
  // a secret; for PostgreSQL it is the role name, which the log records anyway.
  return /^https?:/i.test(text) ? { start: from, end: at } : undefined;
}

/** `key=value` pairs of a query string or conninfo whose key names a secret: value ranges. */
function secretValues(text: string): { start: number; end: number }[] {
  const out: { start: number; end: number }[] = [];
  // key=value, key = 'quoted \' value', separated by whitespace, & or ;
  const pair = /(^|[\s?&;])([A-Za-z_][\w.-]*)\s*=\s*('(?:[^'\\]|\\.)*'?|[^\s&;#]*)/g;
  for (let m = pair.exec(text); m; m = pair.exec(text)) {
    if (!SECRET_KEY.test(m[2]!)) continue;
    const value = m[3]!;
    if (!value) continue;
    const start = m.index + m[1]!.length + m[0].slice(m[1]!.length).lastIndexOf(value);
    out.push({ start, end: start + value.length });
  }
  return out;
}

/** The ranges of `text` that are credentials, sorted and not overlapping. */
function credentialRanges(text: string): { start: number; end: number }[] {
  const ranges = secretValues(text);
  const info = userinfoSecret(text);
  if (info && info.end > info.start) ranges.push(info);
  ranges.sort((a, b) => a.start - b.start);
  const merged: { start: number; end: number }[] = [];
  for (const r of ranges) {
    const last = merged[merged.length - 1];
    if (last && r.start <= last.end) last.end = Math.max(last.end, r.end);
    else merged.push({ ...r });
  }
  return merged;
}

/** The upstream address with every credential replaced by `***`. */
export function redactUpstream(upstream: string): string {
  const ranges = credentialRanges(upstream);
  if (!ranges.length) return upstream;
  let out = '';
  let pos = 0;
  for (const r of ranges) {
    out += upstream.slice(pos, r.start) + REDACTED;
    pos = r.end;
  }
  return out + upstream.slice(pos);
}

/** True when the address carries a credential (config validation warns to move it into `secret`). */
export function hasUpstreamCredentials(upstream: string): boolean {
  return credentialRanges(upstream).length > 0;
}

/** Every credential's text in the address, for callers that scrub free text (error messages). */
export function upstreamCredentials(upstream: string): string[] {
  const out: string[] = [];
  for (const r of credentialRanges(upstream)) {
    const raw = upstream.slice(r.start, r.end).replace(/^'|'$/g, '');
    out.push(raw);
    try {
      const decoded = decodeURIComponent(raw);
      if (decoded !== raw) out.push(decoded);
    } catch {
      // not percent-encoded
    }
  }
  return out.filter((s) => s.length > 0);
}

/** A message with any credential of `upstream` (as written or percent-decoded) replaced by `***`. */
export function scrubCredentials(message: string, upstream: string): string {
  let out = message;
  for (const c of upstreamCredentials(upstream).sort((a, b) => b.length - a.length)) out = out.split(c).join(REDACTED);
  return out;
}

/** The warning config validation gives for an upstream with credentials, or undefined. */
export function upstreamCredentialWarning(name: string, upstream: string): string | undefined {
  if (!hasUpstreamCredentials(upstream)) return undefined;
  return `connection ${name}: the upstream address carries a credential (${redactUpstream(upstream)}); move it into secret: {env|file|value} — it is redacted from the API, the console and the log, but it stays in the config file`;
}

/**
 * The shortest secret an HTTP connection (openai, anthropic, http) may have. The gateway scrubs
 * every form of the secret from responses (proxy/http/scrub.ts); replacing every occurrence of a
 * few characters would mangle answers (a 4-character key is in any long text), and leaving a short
 * secret unscrubbed would let an upstream's echo hand it to clients. So a connection with a
 * shorter secret is refused: when the gateway loads it, and when the console saves it.
 */
export const MIN_SCRUBBED_SECRET = 8;

/** Why HTTP connection `name` cannot have `secret`, or undefined when it can. */
export function shortSecretProblem(name: string, secret: string | undefined): string | undefined {
  if (secret === undefined || secret === '' || secret.length >= MIN_SCRUBBED_SECRET) return undefined;
  return (
    `connection ${name}: its secret is ${secret.length} character${secret.length === 1 ? '' : 's'} long, shorter than the ${MIN_SCRUBBED_SECRET} the gateway needs ` +
    `to scrub it from responses (an upstream that echoes it would hand it to clients, and scrubbing so short a text would mangle answers), so the connection is refused; use the provider's full key`
  );
}
