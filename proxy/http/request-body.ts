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
  | { kind: 'json'; value: unknown }
  /** Text (an `http` connection); `charset` is the one it arrived in, forwarded as UTF-8. */
  | { kind: 'text'; text: string; charset: string }
  /** application/x-www-form-urlencoded (an `http` connection), field by field. */
  | { kind: 'form'; pairs: [string, string][] }
  /** Bytes the gateway cannot read: forwarded as they are only when nothing needs to inspect them. */
  | { kind: 'opaque'; mediaType: string; why: string };

/** OpenAI and Anthropic routes whose bodies are multipart/form-data uploads. */
const MULTIPART_ROUTE = /^\/(?:v1\/)?(?:files|uploads\/[^/]+\/parts|audio\/(?:transcriptions|translations)|images\/(?:edits|variations))\/?$/;

export function isMultipartRoute(path: string): boolean {
  return MULTIPART_ROUTE.test(path);
}

interface MediaType {
  type: string;
  charset: string | undefined;
}

function mediaTypeOf(contentType: string | undefined): MediaType {
  if (!contentType) return { type: '', charset: undefined };
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
    if (isMultipartRoute(path) && mt.type === 'multipart/form-data') return { kind: 'opaque', mediaType: mt.type, why: 'a multipart upload' };
    const text = decodeText(body, mt.charset);
    if (text === undefined) {
      if (mt.charset && decodeText(Buffer.alloc(0), mt.charset) === undefined) throw new GatewayError(415, 'unsupported_media_type', `request body charset "${mt.charset}" is not one the gateway can decode; send UTF-8 JSON`);
      throw new GatewayError(400, 'invalid_json', `request body is not valid JSON: it is not valid ${mt.charset ?? 'UTF-8'} text`);
    }
    try {
      return { kind: 'json', value: readJson(text) };
    } catch (err) {
      throw jsonError(err);
    }
  }
  // http: sniff JSON whatever the Content-Type says, then form fields, then text.
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
  const stack: { v: unknown; key: string | undefined; parent: Record<string, unknown> | undefined }[] = [{ v: value, key: undefined, parent: undefined }];
  while (stack.length) {
    const { v, key, parent } = stack.pop()!;
    if (typeof v === 'string') {
      let mediaType: string | undefined;
      const m = v.length > 5 && (v.charCodeAt(0) === 100 || v.charCodeAt(0) === 68) ? DATA_URL.exec(v) : null;
      if (m) mediaType = m[1] || 'application/octet-stream';
      else if (parent && key === 'data' && parent['type'] === 'base64') mediaType = typeof parent['media_type'] === 'string' ? parent['media_type'] : 'application/octet-stream';
      else if (parent && key === 'data' && typeof parent['format'] === 'string' && v.length > 0) mediaType = `audio/${parent['format']}`;
      else if (key === 'file_data' && v.length > 0) mediaType = 'application/octet-stream';
      else if (v.length >= 256 && LONG_BASE64.test(v)) mediaType = 'application/octet-stream';
      if (mediaType !== undefined && !passesThrough(mediaType, allowed)) return `base64 data (${mediaType}) embedded in the JSON${key ? ` under "${key}"` : ''}`;
    } else if (Array.isArray(v)) {
      for (const x of v) stack.push({ v: x, key, parent: undefined });
    } else if (typeof v === 'object' && v !== null) {
      const o = v as Record<string, unknown>;
      for (const k of Object.keys(o)) stack.push({ v: o[k], key: k, parent: o });
    }
  }
  return undefined;
}

/** The bytes to forward for what was read (the gateway's own serialisation), and their Content-Type. */
export function serialise(read: ReadBody, original: Buffer, contentType: string | undefined): { bytes: Buffer; contentType: string | undefined } {
  switch (read.kind) {
    case 'none':
    case 'opaque':
      return { bytes: original, contentType };
    case 'json':
      return { bytes: Buffer.from(JSON.stringify(read.value), 'utf8'), contentType: 'application/json' };
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
