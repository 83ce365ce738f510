/**
 * One reading of every request body, whatever its headers say (DESIGN.md: "enforcement by meaning").
 *
 * `openai` and `anthropic` connections: every route but the multipart uploads takes JSON, so the
 * body is read as JSON whatever its Content-Type (many OpenAI-compatible servers ignore that
 * header and read the JSON anyway); what does not read as JSON is refused with 400. Duplicate
 * keys, nesting deeper than MAX_JSON_DEPTH and numbers that would change on the way are refused
 * too (proxy/masking/json.ts). The upstream gets the gateway's own serialisation of what it read
 * and checked, never the client's bytes.
 *
 * `http` connections: JSON is sniffed as well as declared, form bodies are read field by field,
 * anything that decodes as text is scanned as text, and the rest is opaque.
 *
 * Where a masking, `content` or `detectors` rule applies, a body the gateway cannot inspect
 * (opaque bytes, base64 embedded in JSON, a charset it cannot decode) is refused with 415 unless
 * its media type is in the connection's `passthroughTypes` or a `hold` rule sends it to a person.
 */
import type { ConnectionKind } from '../../shared/config';
import { JsonReadError, MAX_JSON_DEPTH, readJson } from '../masking/json';
import { GatewayError } from './errors';

export type ReadBody =
  | { kind: 'none' }
  /** `llm`: an OpenAI/Anthropic JSON route, forwarded as `application/json` whatever was declared. */
  | { kind: 'json'; value: unknown; llm?: boolean }
  /** Text (an `http` connection); `charset` is the one it arrived in, forwarded as UTF-8. */
  | { kind: 'text'; text: string; charset: string }
  /** application/x-www-form-urlencoded (an `http` connection), field by field. */
  | { kind: 'form'; pairs: [string, string][] }
  /** multipart/form-data, part by part (uploads: files, batch and fine-tuning JSONL, audio, images). */
  | { kind: 'multipart'; boundary: string; parts: FormPart[] }
  /** Bytes the gateway cannot read: forwarded as they are only when nothing needs to inspect them. */
  | { kind: 'opaque'; mediaType: string; why: string };

export interface FormPart {
  /** The part's header block as sent (Content-Disposition, Content-Type). */
  head: string;
  name: string | undefined;
  filename: string | undefined;
  mediaType: string;
  /** How the part is inspected. */
  as: 'text' | 'json' | 'jsonl' | 'binary';
  /** text: the text; json: the value; jsonl: one value per non-empty line; binary: undefined. */
  value: unknown;
  raw: Buffer;
}

/** OpenAI and Anthropic routes whose bodies are multipart/form-data uploads. */
const MULTIPART_ROUTE = /^\/(?:v1\/)?(?:files|uploads\/[^/]+\/parts|audio\/(?:transcriptions|translations)|images\/(?:edits|variations))\/?$/;

export function isMultipartRoute(path: string): boolean {
  return MULTIPART_ROUTE.test(path);
}

interface MediaType {
  type: string;
  charset: string | undefined;
}

const NO_MEDIA_TYPE: MediaType = { type: '', charset: undefined };
const JSON_MEDIA_TYPE: MediaType = { type: 'application/json', charset: undefined };

function mediaTypeOf(contentType: string | undefined): MediaType {
  if (!contentType) return NO_MEDIA_TYPE;
  if (contentType === 'application/json') return JSON_MEDIA_TYPE; // nearly every request
  const [head, ...params] = contentType.split(';');
  let charset: string | undefined;
  for (const p of params) {
    const eq = p.indexOf('=');
    if (eq !== -1 && p.slice(0, eq).trim().toLowerCase() === 'charset') charset = p.slice(eq + 1).trim().replace(/^"|"$/g, '').toLowerCase();
  }
  return { type: head!.trim().toLowerCase(), charset };
}

const UTF8 = new TextDecoder('utf-8', { fatal: true });

/** Decodes `body` in `charset` (default UTF-8); undefined when it cannot be decoded. */
function decodeText(body: Buffer, charset: string | undefined): string | undefined {
  let decoder = UTF8;
  if (charset && charset !== 'utf-8' && charset !== 'utf8') {
    try {
      decoder = new TextDecoder(charset, { fatal: true });
    } catch {
      return undefined; // a label the runtime does not know
    }
  }
  try {
    return decoder.decode(body);
  } catch {
    return undefined;
  }
}

function jsonError(err: unknown): GatewayError {
  if (!(err instanceof JsonReadError)) throw err;
  const message =
    err.reason === 'depth'
      ? `request body is JSON nested deeper than the gateway's limit of ${MAX_JSON_DEPTH} levels; it was not forwarded`
      : err.reason === 'duplicate'
        ? `request body has a ${err.message}: JSON parsers disagree on which one counts, so the gateway does not forward it`
        : err.reason === 'number'
          ? `request body has a number the gateway cannot forward as sent: ${err.message}`
          : `request body is not valid JSON: ${err.message}`;
  return new GatewayError(400, 'invalid_json', message);
}

const JSON_TYPE = /^application\/(?:[\w.+-]*\+)?json$|^text\/json$/;
const FORM_TYPE = 'application/x-www-form-urlencoded';

/** Reads a (decoded) request body once, the way the gateway will inspect and forward it. */
export function readRequest(kind: ConnectionKind, path: string, contentType: string | undefined, body: Buffer): ReadBody {
  if (!body.length) return { kind: 'none' };
  const mt = mediaTypeOf(contentType);
  if (kind !== 'http') {
    if (isMultipartRoute(path) && mt.type === 'multipart/form-data') return readMultipart(contentType!, body);
    const text = decodeText(body, mt.charset);
    if (text === undefined) {
      if (mt.charset && decodeText(Buffer.alloc(0), mt.charset) === undefined) throw new GatewayError(415, 'unsupported_media_type', `request body charset "${mt.charset}" is not one the gateway can decode; send UTF-8 JSON`);
      throw new GatewayError(400, 'invalid_json', `request body is not valid JSON: it is not valid ${mt.charset ?? 'UTF-8'} text`);
    }
    try {
      return { kind: 'json', value: readJson(text), llm: true };
    } catch (err) {
      throw jsonError(err);
    }
  }
  // http: multipart parts, else sniff JSON whatever the Content-Type says, then form fields, then text.
  if (mt.type === 'multipart/form-data') return readMultipart(contentType!, body);
  const text = decodeText(body, mt.charset);
  if (text === undefined) {
    const why = mt.charset && decodeText(Buffer.alloc(0), mt.charset) === undefined ? `text in charset "${mt.charset}", which the gateway cannot decode` : 'binary data';
    return { kind: 'opaque', mediaType: mt.type || 'application/octet-stream', why };
  }
  const first = firstNonSpace(text);
  if (JSON_TYPE.test(mt.type) || first === 0x7b || first === 0x5b) {
    try {
      return { kind: 'json', value: readJson(text) };
    } catch (err) {
      // Not JSON: scanned as text (the upstream judges it), unless it is JSON an upstream could read two ways.
      if (!(err instanceof JsonReadError) || err.reason !== 'syntax') throw jsonError(err);
    }
  }
  if (mt.type === FORM_TYPE) return { kind: 'form', pairs: [...new URLSearchParams(text)] };
  if (text.includes('\0')) return { kind: 'opaque', mediaType: mt.type || 'application/octet-stream', why: 'binary data' };
  return { kind: 'text', text, charset: mt.charset ?? 'utf-8' };
}

function firstNonSpace(text: string): number {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c !== 32 && c !== 9 && c !== 10 && c !== 13 && c !== 0xfeff) return c;
  }
  return -1;
}

/** Does `mediaType` match one of the connection's `passthroughTypes` (`image/png`, `audio/*`)? */
export function passesThrough(mediaType: string, allowed: readonly string[] | undefined): boolean {
  if (!allowed?.length) return false;
  const t = mediaType.toLowerCase();
  const slash = t.indexOf('/');
  return allowed.some((a) => {
    const x = a.toLowerCase();
    return x === t || (x.endsWith('/*') && slash !== -1 && x.slice(0, -1) === t.slice(0, slash + 1));
  });
}

const DATA_URL = /^data:([^,;]*)((?:;[^,;]*)*);base64,/i;
/** A run this long of nothing but base64 characters is taken for embedded binary. */
const LONG_BASE64 = /^[A-Za-z0-9+/_-]{256,}={0,2}$/;

/**
 * Base64 embedded in a JSON body, which no detector can read: data URLs (`image_url`, `file_data`),
 * `input_audio.data`, Anthropic `source: {type: "base64"}`, and long runs of base64 anywhere.
 * Returns what was found and not let through by `passthroughTypes`, or undefined.
 */
export function embeddedBinary(value: unknown, allowed: readonly string[] | undefined): string | undefined {
  // What is left to look at, as parallel stacks (no object per value: this runs on every JSON body).
  const values: unknown[] = [value];
  const keys: (string | undefined)[] = [undefined];
  const parents: (Record<string, unknown> | undefined)[] = [undefined];
  while (values.length) {
    const v = values.pop();
    const key = keys.pop();
    const parent = parents.pop();
    if (typeof v === 'string') {
      // Opaque tokens the provider issued and reads back itself (thinking signatures, encrypted reasoning).
      if (key === 'signature' || key === 'encrypted_content' || (key === 'data' && parent?.['type'] === 'redacted_thinking')) continue;
      let mediaType: string | undefined;
      const m = v.length > 5 && (v.charCodeAt(0) === 100 || v.charCodeAt(0) === 68) ? DATA_URL.exec(v) : null;
      if (m) mediaType = m[1] || 'application/octet-stream';
      else if (parent && key === 'data' && parent['type'] === 'base64') mediaType = typeof parent['media_type'] === 'string' ? parent['media_type'] : 'application/octet-stream';
      else if (parent && key === 'data' && typeof parent['format'] === 'string' && v.length > 0) mediaType = `audio/${parent['format']}`;
      else if (key === 'file_data' && v.length > 0) mediaType = 'application/octet-stream';
      else if (v.length >= 256 && LONG_BASE64.test(v)) mediaType = 'application/octet-stream';
      if (mediaType !== undefined && !passesThrough(mediaType, allowed)) return `base64 data (${mediaType}) embedded in the JSON${key ? ` under "${key}"` : ''}`;
    } else if (Array.isArray(v)) {
      for (const x of v) {
        values.push(x);
        keys.push(key);
        parents.push(undefined);
      }
    } else if (typeof v === 'object' && v !== null) {
      const o = v as Record<string, unknown>;
      for (const k in o) {
        if (!Object.prototype.hasOwnProperty.call(o, k)) continue;
        values.push(o[k]);
        keys.push(k);
        parents.push(o);
      }
    }
  }
  return undefined;
}

/** The bytes to forward for what was read (the gateway's own serialisation), and their Content-Type. */
export function serialise(read: ReadBody, original: Buffer, contentType: string | undefined): { bytes: Buffer; contentType: string | undefined } {
  switch (read.kind) {
    case 'none':
    case 'opaque':
    case 'multipart':
      return { bytes: original, contentType };
    case 'json':
      return { bytes: Buffer.from(JSON.stringify(read.value), 'utf8'), contentType: jsonContentType(read, contentType) };
    case 'text':
      return { bytes: Buffer.from(read.text, 'utf8'), contentType: utf8ContentType(contentType, read.charset) };
    case 'form':
      return { bytes: Buffer.from(new URLSearchParams(read.pairs).toString(), 'utf8'), contentType };
  }
}

/** The Content-Type of text now sent as UTF-8. */
export function utf8ContentType(contentType: string | undefined, charset: string): string | undefined {
  if (charset === 'utf-8' || charset === 'utf8' || !contentType) return contentType;
  return contentType.replace(/;\s*charset=[^;]*/i, '; charset=utf-8');
}

const JSONL_TYPE = /^application\/(?:jsonl|x-ndjson|ndjson|x-jsonlines|jsonlines)$/;

/** multipart/form-data (RFC 7578), part by part; a body that does not parse is refused with 400. */
function readMultipart(contentType: string, body: Buffer): ReadBody {
  const m = /;\s*boundary=(?:"([^"]+)"|([^;\s]+))/i.exec(contentType);
  const boundary = m ? (m[1] ?? m[2])! : undefined;
  const bad = (what: string) => new GatewayError(400, 'invalid_body', `request body is not valid multipart/form-data: ${what}`);
  if (!boundary) throw bad('the Content-Type has no boundary');
  const delim = Buffer.from(`--${boundary}`);
  const next = Buffer.from(`\r\n--${boundary}`);
  let pos = body.indexOf(delim);
  if (pos === -1) throw bad('the boundary never appears');
  pos += delim.length;
  const parts: FormPart[] = [];
  for (;;) {
    if (body[pos] === 0x2d && body[pos + 1] === 0x2d) break; // "--": the closing delimiter
    if (body[pos] !== 0x0d || body[pos + 1] !== 0x0a) throw bad('a delimiter is not followed by CRLF');
    pos += 2;
    const headEnd = body.indexOf('\r\n\r\n', pos);
    if (headEnd === -1) throw bad('a part has no end to its headers');
    const head = body.subarray(pos, headEnd).toString('utf8');
    const start = headEnd + 4;
    const end = body.indexOf(next, start);
    if (end === -1) throw bad('a part is not closed by the boundary');
    parts.push(readPart(head, body.subarray(start, end)));
    pos = end + next.length;
  }
  return { kind: 'multipart', boundary, parts };
}

function headerParam(head: string, param: string): string | undefined {
  const re = new RegExp(`;\\s*${param}="((?:[^"\\\\]|\\\\.)*)"|;\\s*${param}=([^;\\s]+)`, 'i');
  const disposition = /^content-disposition:(.*)$/im.exec(head)?.[1];
  const m = disposition ? re.exec(disposition) : null;
  return m ? (m[1] ?? m[2]) : undefined;
}

function readPart(head: string, raw: Buffer): FormPart {
  const name = headerParam(head, 'name');
  const filename = headerParam(head, 'filename');
  const mt = mediaTypeOf(/^content-type:(.*)$/im.exec(head)?.[1]?.trim());
  const part = { head, name, filename, mediaType: mt.type || (filename ? 'application/octet-stream' : 'text/plain'), raw };
  // A part whose bytes some servers decode first (base64, quoted-printable, compressed) is not text
  // the gateway can read as it stands.
  const cte = /^content-transfer-encoding:\s*(\S+)/im.exec(head)?.[1]?.toLowerCase();
  if ((cte !== undefined && cte !== '7bit' && cte !== '8bit' && cte !== 'binary') || /^content-encoding:/im.test(head)) return { ...part, as: 'binary', value: undefined };
  const text = decodeText(raw, mt.charset);
  if (text === undefined || text.includes('\0')) return { ...part, as: 'binary', value: undefined };
  const lower = filename?.toLowerCase() ?? '';
  const where = filename ? `file "${filename}"` : `field "${name ?? ''}"`;
  try {
    if (JSONL_TYPE.test(mt.type) || lower.endsWith('.jsonl') || lower.endsWith('.ndjson')) {
      // batch inputs and fine-tuning data: each line is a request body of the connection's API
      const lines: unknown[] = [];
      text.split('\n').forEach((line, i) => {
        if (!line.trim()) return;
        try {
          lines.push(readJson(line));
        } catch (err) {
          if (!(err instanceof JsonReadError)) throw err;
          throw new JsonReadError(`line ${i + 1}: ${err.message}`, err.offset, err.reason);
        }
      });
      return { ...part, as: 'jsonl', value: lines };
    }
    if (JSON_TYPE.test(mt.type) || lower.endsWith('.json')) return { ...part, as: 'json', value: readJson(text) };
  } catch (err) {
    const e = jsonError(err);
    throw new GatewayError(400, e.code, `${where} of the upload: ${e.message}`);
  }
  return { ...part, as: 'text', value: text };
}

/** What policy reads of a body (match.content): the parsed value, the text, or the parts' contents. */
export function policyValue(read: ReadBody): unknown {
  switch (read.kind) {
    case 'json':
      return read.value;
    case 'text':
      return read.text;
    case 'form':
      return read.pairs;
    case 'multipart':
      return read.parts.map((p) => ({ head: p.head, value: p.value }));
    default:
      return undefined;
  }
}

/**
 * The Content-Type for the gateway's JSON: `application/json` on LLM routes (the upstream reads it
 * as JSON, as the gateway did), the client's own on `http` connections, now in UTF-8.
 */
export function jsonContentType(read: { llm?: boolean }, contentType: string | undefined): string | undefined {
  if (read.llm) return 'application/json';
  return contentType && /;\s*charset=/i.test(contentType) ? contentType.replace(/;\s*charset=[^;]*/i, '; charset=utf-8') : contentType;
}
