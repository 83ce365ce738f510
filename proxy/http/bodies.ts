/**
 * Request and response bodies: reading with a byte limit, content-encoding (RFC 9110 §8.4: gzip,
 * deflate, br), and the form a body takes in the log (parsed JSON, text, or base64 for binary).
 */
import type { IncomingMessage } from 'node:http';
import { Transform, type TransformCallback } from 'node:stream';
import * as zlib from 'node:zlib';
import { brotliDecompressSync, createBrotliDecompress, createGunzip, createInflate, createInflateRaw, gunzipSync, inflateRawSync, inflateSync } from 'node:zlib';
import { GatewayError } from './errors';

/** Reads the whole request body, refusing (413) past `limit` bytes, counted as they arrive. */
export function readRequestBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        req.off('data', onData);
        req.resume(); // drain and discard the rest so the 413 can be read by the client
        reject(new GatewayError(413, 'request_too_large', `request body exceeds the gateway limit of ${limit} bytes (limits.maxRequestBytes)`));
        return;
      }
      chunks.push(chunk);
    };
    req.on('data', onData);
    req.once('end', () => resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size)));
    req.once('error', reject);
  });
}

/**
 * zstd where the runtime has it (Node 22.15 and later); elsewhere a zstd body is refused with 415,
 * since the gateway cannot read what it would forward.
 */
const zstd = zlib as unknown as {
  zstdDecompressSync?: (body: Buffer, opts: { maxOutputLength: number }) => Buffer;
  createZstdDecompress?: () => Transform;
};
const ENCODING_NAMES = new Set(['gzip', 'x-gzip', 'deflate', 'br', ...(zstd.zstdDecompressSync && zstd.createZstdDecompress ? ['zstd'] : [])]);

/** Normalized content-encoding: undefined for none/identity, the name otherwise. */
export function contentEncodingOf(value: string | undefined): string | undefined {
  if (!value) return undefined;
  const v = value.trim().toLowerCase();
  return v === '' || v === 'identity' ? undefined : v;
}

export function canDecode(encoding: string): boolean {
  return ENCODING_NAMES.has(encoding);
}

/** Decodes a whole compressed request body, refusing (413) when the decoded size passes `limit`. */
export function decodeBody(body: Buffer, encoding: string, limit: number): Buffer {
  const opts = { maxOutputLength: limit };
  try {
    switch (encoding) {
      case 'gzip':
      case 'x-gzip':
        return gunzipSync(body, opts);
      case 'br':
        return brotliDecompressSync(body, opts);
      case 'deflate':
        // "deflate" is zlib-wrapped per the RFC; some clients send raw deflate.
        try {
          return inflateSync(body, opts);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') throw err;
          return inflateRawSync(body, opts);
        }
      case 'zstd':
        if (zstd.zstdDecompressSync) return zstd.zstdDecompressSync(body, opts);
        throw new GatewayError(415, 'unsupported_encoding', `content-encoding "zstd" cannot be decoded by this runtime (Node ${process.versions.node}; zstd needs 22.15 or later), so the body cannot be inspected: use gzip, deflate, br or none`);
      default:
        throw new GatewayError(415, 'unsupported_encoding', `content-encoding "${encoding}" is not supported (use gzip, deflate, br${ENCODING_NAMES.has('zstd') ? ', zstd' : ''} or none)`);
    }
  } catch (err) {
    if (err instanceof GatewayError) throw err;
    if ((err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE' || err instanceof RangeError)
      throw new GatewayError(413, 'request_too_large', `decoded request body exceeds the gateway limit of ${limit} bytes (limits.maxRequestBytes)`);
    throw new GatewayError(400, 'invalid_body', `request body is not valid ${encoding} data: ${(err as Error).message}`);
  }
}

/** A streaming decoder for a compressed upstream response. */
export function responseDecoder(encoding: string): Transform {
  switch (encoding) {
    case 'gzip':
    case 'x-gzip':
      return createGunzip();
    case 'br':
      return createBrotliDecompress();
    case 'deflate':
      return new DeflateAutoDecoder();
    case 'zstd':
      if (zstd.createZstdDecompress) return zstd.createZstdDecompress();
      throw new Error('content-encoding zstd cannot be decoded by this runtime');
    default:
      throw new Error(`content-encoding ${encoding} cannot be decoded`);
  }
}

/** `deflate` bodies come zlib-wrapped or raw; the first byte tells (0x78 = zlib header). */
class DeflateAutoDecoder extends Transform {
  private inner: Transform | undefined;

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    if (!this.inner) {
      this.inner = (chunk[0]! & 0x0f) === 0x08 && ((chunk[0]! << 8) | (chunk[1] ?? 0)) % 31 === 0 ? createInflate() : createInflateRaw();
      this.inner.on('data', (d: Buffer) => this.push(d));
      this.inner.on('error', (err) => this.destroy(err));
    }
    this.inner.write(chunk, done);
  }

  override _flush(done: TransformCallback): void {
    if (!this.inner) return done();
    this.inner.once('end', () => done());
    this.inner.end();
  }
}

const JSON_CT_RE = /^application\/([\w.+-]*\+)?json|^application\/x-ndjson|^text\/json/i;
const TEXT_CT_RE = /^text\/|^application\/(x-www-form-urlencoded|xml|[\w.+-]*\+xml|javascript|graphql|yaml|x-yaml)/i;

export function isJsonType(contentType: string | undefined): boolean {
  return contentType !== undefined && JSON_CT_RE.test(contentType);
}

/**
 * The body as recorded: parsed JSON when it parses, text for text types, otherwise base64.
 * `encoding` tells which, so a reader never confuses a JSON string body with text.
 */
export function bodyForLog(body: Buffer, contentType: string | undefined): { body?: unknown; bodyEncoding?: 'json' | 'text' | 'base64' } {
  if (body.length === 0) return {};
  const json = contentType === undefined || isJsonType(contentType);
  if (json) {
    const text = body.toString('utf8');
    try {
      return { body: JSON.parse(text), bodyEncoding: 'json' };
    } catch {
      if (contentType !== undefined || isUtf8(body)) return { body: text, bodyEncoding: 'text' };
    }
  }
  if (contentType !== undefined && TEXT_CT_RE.test(contentType)) return { body: body.toString('utf8'), bodyEncoding: 'text' };
  if (contentType === undefined && isUtf8(body)) return { body: body.toString('utf8'), bodyEncoding: 'text' };
  return { body: body.toString('base64'), bodyEncoding: 'base64' };
}

function isUtf8(buf: Buffer): boolean {
  try {
    new TextDecoder('utf-8', { fatal: true }).decode(buf);
    return true;
  } catch {
    return false;
  }
}
