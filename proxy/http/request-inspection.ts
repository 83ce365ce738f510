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
import type { ConnectionMasker, MaskedValue } from '../masking/types';
import { bodyForLog } from './bodies';
import { embeddedBinary, passesThrough, type ReadBody, serialise, utf8ContentType } from './request-body';

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
  const spans: MaskSpan[] = [];
  const counts: Record<string, number> = {};
  const hits = new Set<string>();
  const take = (m: MaskedValue, withSpans: boolean) => {
    if (withSpans) for (const s of m.spans) spans.push(s);
    addCounts(counts, m.counts);
    for (const h of m.detectorHits) hits.add(h);
  };
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
        take(m, read.kind === 'json');
        if (read.kind === 'json') {
          forward = Buffer.from(m.forward, 'utf8');
          contentType = 'application/json';
          log = { body: m.log, bodyEncoding: 'json' };
        } else {
          forward = Buffer.from(new URLSearchParams(JSON.parse(m.forward) as [string, string][]).toString(), 'utf8');
          log = { body: new URLSearchParams(m.log as [string, string][]).toString(), bodyEncoding: 'text' };
        }
      } else {
        ({ bytes: forward, contentType } = serialise(read, original, req.contentType));
        log = read.kind === 'json' ? { body: read.value, bodyEncoding: 'json' } : { body: forward.toString('utf8'), bodyEncoding: 'text' };
      }
      break;
    }
    case 'text':
      if (masker) {
        const m = masker.requestText(read.text, extraRules);
        take(m, true);
        forward = Buffer.from(m.forward, 'utf8');
        contentType = utf8ContentType(req.contentType, read.charset);
        log = { body: m.log, bodyEncoding: 'text' };
      } else {
        ({ bytes: forward, contentType } = serialise(read, original, req.contentType));
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
      take(m, false);
      if (m.spans.length || Object.keys(m.counts).length) {
        const fwd = new URLSearchParams(JSON.parse(m.forward) as [string, string][]).toString();
        search = fwd ? `?${fwd}` : '';
        logQuery = new URLSearchParams(m.log as [string, string][]).toString();
      }
    }
    // One scan over all header lines; only when it finds something are they masked one by one.
    const scanned: Record<string, string | string[]> = {};
    let joined = '';
    for (const name in req.headers) {
      const v = req.headers[name];
      if (v === undefined || UNSCANNED_HEADERS.has(name)) continue;
      scanned[name] = v;
      joined += `${name}: ${Array.isArray(v) ? v.join(', ') : v}\n`;
    }
    const quick = masker.requestText(joined, extraRules);
    if (quick.detectorHits.length) {
      const m = masker.requestValue(scanned, { bytes: joined.length, extraRules, everything: true });
      take(m, false);
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
  return { forward, contentType, log, spans, counts, detectorHits: [...hits], search, logQuery, headers, logHeaders, uninspectable };
}
