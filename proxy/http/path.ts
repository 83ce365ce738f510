/**
 * The canonical path: the one spelling of a request path that policy matches and the upstream
 * receives (docs/HTTP.md, Paths). Computed once per request, before any rule sees the path, in the
 * manner of Envoy's `normalize_path` + `merge_slashes` + `path_with_escaped_slashes_action: reject`.
 *
 * - percent-encoded unreserved characters (RFC 3986 §2.3) are decoded: `/%61dmin` is `/admin`;
 * - other escapes are kept, with upper-case hex (RFC 3986 §6.2.2.1);
 * - runs of `/` collapse to one;
 * - `.` and `..` segments are resolved (RFC 3986 §5.2.4); climbing above the connection's root is refused;
 * - spellings that upstreams disagree on are refused: an encoded `/` or `\`, a `\`, NUL, `;` path
 *   parameters (raw or encoded), `#`, double encoding (`%25` followed by hex), characters that are
 *   not percent-encoded ASCII, escapes that are not valid UTF-8 (overlong `%c0%af`, which old
 *   decoders read as `/`) and characters that Unicode normalisation (NFKC) or case folding turns
 *   into others (fullwidth `ａ`, dotless `ı`, the Kelvin sign).
 */

export type CanonicalPath = { ok: true; path: string } | { ok: false; reason: string };

const UNRESERVED = /[A-Za-z0-9\-._~]/;
const HEX = '0123456789ABCDEF';
const utf8 = new TextDecoder('utf-8', { fatal: true });

const refuse = (reason: string): CanonicalPath => ({ ok: false, reason });

/**
 * Canonicalizes the path after the connection name (`''`, `/chat/completions`, …).
 * The result is `''` or starts with `/`; a trailing slash is kept.
 */
export function canonicalPath(raw: string): CanonicalPath {
  // Fast path: nothing to decode, no dot segment, no doubled slash, no character to refuse.
  if (!/[%\\;#\0]|\/\/|(^|\/)\.\.?(\/|$)/.test(raw)) return { ok: true, path: raw };
  const decoded = decodeEscapes(raw);
  if (!decoded.ok) return decoded;
  const segments = decoded.path.split('/');
  // segments[0] is '' (the path starts with '/'); empty segments are doubled slashes.
  const out: string[] = [];
  let trailingSlash = false;
  for (let i = 1; i < segments.length; i++) {
    const seg = segments[i]!;
    const last = i === segments.length - 1;
    if (seg === '' || seg === '.') {
      trailingSlash = last;
      continue;
    }
    if (seg === '..') {
      if (!out.length) return refuse('the path climbs above the connection\'s root with ".."');
      out.pop();
      trailingSlash = last;
      continue;
    }
    out.push(seg);
    trailingSlash = false;
  }
  const path = out.length ? `/${out.join('/')}${trailingSlash ? '/' : ''}` : segments.length > 1 ? '/' : '';
  return { ok: true, path };
}

function decodeEscapes(raw: string): CanonicalPath {
  let out = '';
  let i = 0;
  while (i < raw.length) {
    const c = raw[i]!;
    if (c === '\\') return refuse('the path contains "\\", which some upstreams read as "/"');
    if (c === ';') return refuse('the path contains ";" (path parameters are read differently by different servers)');
    if (c === '#') return refuse('the path contains "#" (a fragment is never sent to a server)');
    if (c === '\0') return refuse('the path contains NUL');
    if (c.charCodeAt(0) > 0x7e || c.charCodeAt(0) < 0x21) return refuse('the path contains a character that is not percent-encoded ASCII');
    if (c !== '%') {
      out += c;
      i++;
      continue;
    }
    // A run of escapes is decoded together, so multi-byte UTF-8 is checked as a whole.
    const bytes: number[] = [];
    while (raw[i] === '%') {
      const hex = raw.slice(i + 1, i + 3);
      if (!/^[0-9A-Fa-f]{2}$/.test(hex)) return refuse(`the path contains "%" not followed by two hex digits (at "${raw.slice(i, i + 3)}")`);
      bytes.push(parseInt(hex, 16));
      i += 3;
    }
    for (let b = 0; b < bytes.length; b++) {
      const byte = bytes[b]!;
      if (byte === 0x2f) return refuse('the path contains an encoded "/" (%2F)');
      if (byte === 0x5c) return refuse('the path contains an encoded "\\" (%5C)');
      if (byte === 0x00) return refuse('the path contains an encoded NUL (%00)');
      if (byte === 0x3b) return refuse('the path contains an encoded ";" (%3B)');
      if (byte === 0x25 && /^[0-9A-Fa-f]{2}/.test(raw.slice(i))) return refuse('the path is double-encoded (%25 followed by hex digits)');
      if (byte === 0x25 && b + 1 < bytes.length) return refuse('the path is double-encoded (%25 followed by an escape)');
    }
    // Each run of non-ASCII bytes must be whole, shortest-form UTF-8 characters, and mean the same
    // to a router that normalises Unicode or folds case (fullwidth "ａ", dotless "ı", Kelvin "K").
    const refusal = nonAsciiProblem(bytes);
    if (refusal) return refuse(refusal);
    for (const byte of bytes) {
      const ch = String.fromCharCode(byte);
      out += byte < 0x80 && UNRESERVED.test(ch) ? ch : `%${HEX[byte >> 4]}${HEX[byte & 15]}`;
    }
  }
  return { ok: true, path: out };
}

function nonAsciiProblem(bytes: number[]): string | undefined {
  let run: number[] = [];
  const check = (): string | undefined => {
    if (!run.length) return undefined;
    let text: string;
    try {
      text = utf8.decode(Uint8Array.from(run));
    } catch {
      return 'the path contains percent-escapes that are not valid UTF-8 (such as the overlong %C0%AF)';
    } finally {
      run = [];
    }
    if (text.normalize('NFKC') !== text || /[\0-\x7f]/.test(text.toUpperCase() + text.toLowerCase()))
      return 'the path contains characters that Unicode normalisation or case folding turns into others (such as fullwidth letters or a dotless i)';
    return undefined;
  };
  for (const b of bytes) {
    if (b >= 0x80) run.push(b);
    else {
      const problem = check();
      if (problem) return problem;
    }
  }
  return check();
}

/**
 * Headers and query parameters that ask a server to treat the request as another method
 * (Express's method-override, Rails, Symfony, Google APIs) or another URL (IIS rewrite, Symfony's
 * `X-Original-URL`). Policy sees the method and path on the request line, so these are refused.
 */
const OVERRIDE_HEADERS = ['x-http-method-override', 'x-http-method', 'x-method-override', 'x-original-url', 'x-rewrite-url', 'x-original-method'];

/** Names the override a request carries, if it carries one. */
export function methodOverride(headers: Record<string, string | string[] | undefined>, search: string): string | undefined {
  for (const h of OVERRIDE_HEADERS) if (headers[h] !== undefined) return `the ${h} header`;
  if (search.length > 1) {
    for (const pair of search.slice(1).split('&')) {
      const eq = pair.indexOf('=');
      let key = (eq === -1 ? pair : pair.slice(0, eq)).replace(/\+/g, ' ');
      try {
        key = decodeURIComponent(key);
      } catch {
        // an undecodable key is compared as written
      }
      if (key.trim().toLowerCase() === '_method') return 'the _method query parameter';
    }
  }
  return undefined;
}
