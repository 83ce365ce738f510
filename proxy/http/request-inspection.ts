/**
 * Everything in a request that can reach the upstream, masked and scanned before policy sees it:
 * the body as the gateway read it (request-body.ts), the query string and the request headers
 * other than the credential and the framing ones the gateway sets itself.
 *
 * What is forwarded is what was checked: the gateway's own serialisation of the masked body, the
 * query rebuilt from the masked fields when something in it was masked, the masked headers.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { MaskSpan } from '../../shared/events';
import { addCounts } from '../masking/rules';
import { UnmaskableValueError } from '../masking/request';
import type { ConnectionMasker, MaskedValue } from '../masking/types';
import { bodyForLog } from './bodies';
import { embeddedBinary, type FormPart, jsonContentType, passesThrough, type ReadBody, serialise, utf8ContentType } from './request-body';

/** Headers that are not scanned: the credential, and framing the gateway sets or strips itself. */
const UNSCANNED_HEADERS = new Set(['authorization', 'proxy-authorization', 'x-api-key', 'host', 'content-length', 'transfer-encoding', 'connection', 'content-encoding', 'accept-encoding', 'x-custody-session']);

export interface InspectedRequest {
  /** Bytes for the upstream. */
  forward: Buffer;
  /** Content-Type for the upstream (the gateway's, when it re-serialised the body). */
  contentType: string | undefined;
  /** The body as recorded. */
  log: { body?: unknown; bodyEncoding?: string; bodyOmitted?: string };
  spans: MaskSpan[];
  counts: Record<string, number>;
  detectorHits: string[];
  /** The query for the upstream, with its `?` (or ''). */
  search: string;
  /** The query as recorded (masked for every rule), without `?`. */
  logQuery: string | undefined;
  /** Request headers for the upstream and for the record (masked). */
  headers: IncomingHttpHeaders;
  logHeaders: IncomingHttpHeaders;
  /** Why the body cannot be inspected, when something needs to inspect it. */
  uninspectable?: string;
}

export interface InspectOptions {
  /** A masking, `content` or `detectors` rule applies to the connection. */
  inspect: boolean;
  passthroughTypes: readonly string[] | undefined;
  extraRules?: string[];
}

/**
 * Masks and scans a request. Throws MaskingError when masking cannot be done (the caller refuses
 * the request; UnmaskableValueError means a refusal because of what the request carries).
 */
export function inspectRequest(
  masker: ConnectionMasker | null,
  read: ReadBody,
  original: Buffer,
  req: { contentType: string | undefined; search: string; headers: IncomingHttpHeaders },
  opts: InspectOptions,
): InspectedRequest {
  const found = new Findings();
  const extraRules = opts.extraRules;
  let forward: Buffer;
  let contentType = req.contentType;
  let log: InspectedRequest['log'];
  let uninspectable: string | undefined;

  switch (read.kind) {
    case 'none':
      forward = original;
      log = {};
      break;
    case 'opaque':
      forward = original;
      if (opts.inspect && !passesThrough(read.mediaType, opts.passthroughTypes)) {
        uninspectable = `${read.why} (${read.mediaType})`;
        log = { bodyOmitted: `not inspectable: ${uninspectable}` };
      } else log = bodyForLog(original, req.contentType);
      break;
    case 'json':
    case 'form': {
      const value = read.kind === 'json' ? read.value : read.pairs;
      if (opts.inspect && read.kind === 'json') uninspectable = embeddedBinary(read.value, opts.passthroughTypes);
      if (masker) {
        const m = masker.requestValue(value, { bytes: original.length, extraRules, everything: read.kind === 'form' });
        found.add(m, read.kind === 'json');
        if (read.kind === 'json') {
          forward = Buffer.from(m.forward, 'utf8');
          contentType = jsonContentType(read, req.contentType);
          log = { body: m.log, bodyEncoding: 'json' };
        } else {
          forward = Buffer.from(new URLSearchParams(JSON.parse(m.forward) as [string, string][]).toString(), 'utf8');
          log = { body: new URLSearchParams(m.log as [string, string][]).toString(), bodyEncoding: 'text' };
        }
      } else if (!opts.inspect && !(read.kind === 'json' && read.llm)) {
        // an http connection nothing inspects: the bytes go as they came (policy read no value in them)
        forward = original;
        log = read.kind === 'json' ? { body: read.value, bodyEncoding: 'json' } : { body: original.toString('utf8'), bodyEncoding: 'text' };
      } else {
        ({ bytes: forward, contentType } = serialise(read, original, req.contentType));
        log = read.kind === 'json' ? { body: read.value, bodyEncoding: 'json' } : { body: forward.toString('utf8'), bodyEncoding: 'text' };
      }
      break;
    }
    case 'multipart': {
      const r = inspectParts(masker, read, original, opts, found);
      forward = r.forward;
      log = r.log;
      uninspectable = r.uninspectable;
      break;
    }
    case 'text':
      if (masker) {
        const m = masker.requestText(read.text, extraRules);
        found.add(m, true);
        forward = Buffer.from(m.forward, 'utf8');
        contentType = utf8ContentType(req.contentType, read.charset);
        log = { body: m.log, bodyEncoding: 'text' };
      } else {
        ({ bytes: forward, contentType } = opts.inspect ? serialise(read, original, req.contentType) : { bytes: original, contentType: req.contentType });
        log = { body: read.text, bodyEncoding: 'text' };
      }
      break;
  }

  let search = req.search;
  let logQuery = search ? search.slice(1) : undefined;
  let headers = req.headers;
  let logHeaders = req.headers;
  if (masker) {
    if (search.length > 1) {
      const pairs = [...new URLSearchParams(search)];
      const m = masker.requestValue(pairs, { bytes: search.length, extraRules, everything: true });
      found.add(m, false);
      if (m.spans.length || Object.keys(m.counts).length) {
        const fwd = new URLSearchParams(JSON.parse(m.forward) as [string, string][]).toString();
        search = fwd ? `?${fwd}` : '';
        logQuery = new URLSearchParams(m.log as [string, string][]).toString();
      }
    }
    // One scan over all header lines; only when it finds something are they masked one by one.
    let joined = '';
    for (const name in req.headers) {
      const v = req.headers[name];
      if (v === undefined || UNSCANNED_HEADERS.has(name)) continue;
      joined += `${name}: ${Array.isArray(v) ? v.join(', ') : v}\n`;
    }
    if (joined && masker.requestText(joined, extraRules).detectorHits.length) {
      const scanned: Record<string, string | string[]> = {};
      for (const name in req.headers) {
        const v = req.headers[name];
        if (v !== undefined && !UNSCANNED_HEADERS.has(name)) scanned[name] = v;
      }
      const m = masker.requestValue(scanned, { bytes: joined.length, extraRules, everything: true });
      found.add(m, false);
      const fwd = JSON.parse(m.forward) as IncomingHttpHeaders;
      const logged = m.log as IncomingHttpHeaders;
      headers = { ...req.headers };
      logHeaders = { ...req.headers };
      // a header whose name was masked leaves its old name behind
      for (const name in scanned) {
        delete headers[name];
        delete logHeaders[name];
      }
      Object.assign(headers, fwd);
      Object.assign(logHeaders, logged);
    }
  }
  return { forward, contentType, log, spans: found.spans, counts: found.counts, detectorHits: found.hits.size ? [...found.hits] : [], search, logQuery, headers, logHeaders, uninspectable };
}

/** What the masking of a request's parts found, added up. */
class Findings {
  readonly spans: MaskSpan[] = [];
  readonly counts: Record<string, number> = {};
  readonly hits = new Set<string>();

  /** Adds one masked value's counts and detector hits (and its spans, when they point into the recorded body). */
  add(m: MaskedValue, withSpans: boolean): void {
    if (withSpans) for (const s of m.spans) this.spans.push(s);
    addCounts(this.counts, m.counts);
    for (const h of m.detectorHits) this.hits.add(h);
  }
}

/**
 * A multipart upload, part by part: text fields and text files are masked as text, JSON files as
 * JSON and JSONL files (batch inputs, fine-tuning data) line by line like request bodies; each
 * part's headers (its file name) as text. Binary parts are inspectable only through passthroughTypes.
 */
function inspectParts(
  masker: ConnectionMasker | null,
  read: Extract<ReadBody, { kind: 'multipart' }>,
  original: Buffer,
  opts: InspectOptions,
  found: Findings,
): { forward: Buffer; log: InspectedRequest['log']; uninspectable?: string } {
  let uninspectable: string | undefined;
  const logged: Record<string, unknown>[] = [];
  const out: Buffer[] = [];
  const extraRules = opts.extraRules;
  for (const p of read.parts) {
    const entry: Record<string, unknown> = { name: p.name, filename: p.filename, contentType: p.mediaType, bytes: p.raw.length };
    let head = p.head;
    let bytes = p.raw;
    if (p.as === 'binary' || (p.as === 'json' && opts.inspect && embeddedBinary(p.value, opts.passthroughTypes)) || (p.as === 'jsonl' && opts.inspect && embeddedBinary(p.value, opts.passthroughTypes))) {
      if (opts.inspect && !(p.as === 'binary' && passesThrough(p.mediaType, opts.passthroughTypes))) {
        uninspectable ??= p.as === 'binary' ? `a binary upload part ${describePart(p)} (${p.mediaType})` : `base64 data inside the upload part ${describePart(p)}`;
        entry['bodyOmitted'] = 'not inspectable';
      } else entry['bodyOmitted'] = 'binary';
    } else if (masker) {
      const h = masker.requestText(p.head, extraRules);
      found.add(h, false);
      head = h.forward;
      entry['headers'] = h.log;
      if (p.as === 'text') {
        const m = masker.requestText(p.value as string, extraRules);
        found.add(m, false);
        bytes = Buffer.from(m.forward, 'utf8');
        entry['body'] = m.log;
      } else if (p.as === 'json') {
        const m = masker.requestValue(p.value, { bytes: p.raw.length, extraRules });
        found.add(m, false);
        bytes = Buffer.from(m.forward, 'utf8');
        entry['body'] = m.log;
      } else {
        const lines: string[] = [];
        const logLines: unknown[] = [];
        for (const line of p.value as unknown[]) {
          const m = masker.requestValue(line, { bytes: p.raw.length / Math.max(1, (p.value as unknown[]).length), extraRules });
          found.add(m, false);
          lines.push(m.forward);
          logLines.push(m.log);
        }
        bytes = Buffer.from(lines.join('\n') + '\n', 'utf8');
        entry['lines'] = logLines;
      }
    } else entry['body'] = p.as === 'text' ? p.value : p.as === 'json' ? p.value : undefined;
    if (p.as === 'jsonl' && !masker) entry['lines'] = p.value;
    out.push(Buffer.from(`--${read.boundary}\r\n${head}\r\n\r\n`, 'utf8'), bytes, Buffer.from('\r\n'));
    logged.push(entry);
  }
  out.push(Buffer.from(`--${read.boundary}--\r\n`));
  const forward = masker ? Buffer.concat(out) : original;
  // A masked part that now holds the boundary would split differently upstream.
  if (masker && countOf(forward, `--${read.boundary}`) !== read.parts.length + 1) throw new UnmaskableValueError('a masked upload part contains the multipart boundary; the request was refused');
  return { forward, log: { body: { parts: logged }, bodyEncoding: 'json' }, uninspectable };
}

function describePart(p: FormPart): string {
  return p.filename ? `"${p.filename}"` : `"${p.name ?? ''}"`;
}

function countOf(buf: Buffer, needle: string): number {
  let n = 0;
  for (let i = buf.indexOf(needle); i !== -1; i = buf.indexOf(needle, i + needle.length)) n++;
  return n;
}
