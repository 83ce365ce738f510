/**
 * Relays a non-streamed upstream response (content-length or chunked) to the client of one
 * exchange: whole, in one write with an exact content-length, when it is small, an error, or must
 * be masked; otherwise piece by piece as it arrives, with backpressure. Either way the client gets
 * the end of the body only once its `http.response` is in the journal (a whole body: every byte of
 * it; a piecewise one: its last piece), and a reset connection when it cannot be journaled.
 *
 * When the upstream's answer breaks (a body that does not decode, a connection closed or reset
 * before the end, invalid chunk framing), the client gets a provider-shaped 502 if nothing has
 * reached it yet — which is why the headers of a piecewise relay are written with its first bytes,
 * not before — and otherwise its connection is cut, so a truncated body never looks complete.
 */
import type { IncomingMessage } from 'node:http';
import type { Readable } from 'node:stream';
import type { HttpResponsePayload, MaskSpan } from '../../shared/events';
import type { MaskedBody } from '../masking/types';
import { bodyForLog } from './bodies';
import type { RelayedExchange } from './relayed-exchange';

/** Non-streamed responses up to this size (declared by content-length) are relayed in one write. */
const BUFFER_SMALL_RESPONSES = 256 * 1024;

/**
 * A non-streamed response: relayed as it arrives, or whole when it must be masked or scrubbed.
 * `source` is `upRes` or, when the upstream sent `encoding`, its decoder.
 */
export function relayBody(x: RelayedExchange, upRes: IncomingMessage, source: Readable, status: number, encoding: string | undefined): void {
  const { res } = x;
  const max = x.limits.maxResponseBytes;
  const declaredText = upRes.headers['content-length'];
  const declared = declaredText !== undefined ? Number(declaredText) : undefined;
  const decoded = encoding !== undefined;
  if (!decoded && declared !== undefined && declared > max) {
    upRes.destroy();
    x.fail(413, 'response_too_large', `connection ${x.name}: the upstream response of ${declared} bytes exceeds the gateway limit of ${max} bytes (limits.maxResponseBytes)`, 'response');
    return;
  }
  // Small bodies are relayed in one write with an exact content-length (also after decoding).
  const whole = x.masker !== null || status >= 400 || (declared !== undefined && declared <= BUFFER_SMALL_RESPONSES);
  const chunks: Buffer[] = [];
  let size = 0;
  let tooLarge = false;
  // Relayed in pieces, the secret may straddle two of them: the scrubber holds back a few bytes.
  const scrubbing = whole ? undefined : x.route.scrubber?.bodyStream();
  const headers = whole ? undefined : x.responseHeaders(upRes, decoded || scrubbing !== undefined);
  /** Relayed piecewise: the piece held back until the next one comes, or until the body is recorded. */
  let last: Buffer | undefined;
  source.on('data', (chunk: Buffer) => {
    if (tooLarge) return;
    size += chunk.length;
    if (size > max) {
      tooLarge = true;
      upRes.destroy();
      source.destroy();
      const message = `connection ${x.name}: the upstream response exceeds the gateway limit of ${max} bytes (limits.maxResponseBytes)`;
      if (!res.headersSent) x.fail(413, 'response_too_large', message, 'response');
      else {
        x.finished = true;
        x.record([x.base('http.error', { phase: 'response', status, code: 'response_too_large', message, bytes: size, duration: x.elapsed() })]);
        res.destroy(); // headers are out: cutting the connection is the only honest signal
      }
      return;
    }
    chunks.push(chunk);
    if (whole) return;
    const out = scrubbing ? scrubbing.push(chunk) : chunk;
    if (!out.length) return;
    // The latest piece waits for the next: the body's last bytes go out only with its record.
    const previous = last;
    last = out;
    if (!previous) return;
    if (!res.headersSent) res.writeHead(status, headers);
    if (!res.write(previous) && !source.isPaused()) {
      source.pause();
      res.once('drain', () => source.resume());
    }
  });
  source.once('end', () => {
    if (tooLarge || x.clientGone || x.finished) return;
    let out = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size);
    const contentType = upRes.headers['content-type'];
    if (!whole) {
      const scrubber = x.route.scrubber;
      const tail = scrubbing?.end();
      endRecorded(x, upRes, status, size, bodyForLog(scrubber ? scrubber.scrub(out) : out, contentType), () => {
        if (!res.headersSent) res.writeHead(status, headers);
        if (last) res.write(last);
        res.end(tail);
      });
      return;
    }
    if (x.route.scrubber) out = x.route.scrubber.scrub(out);
    if (!x.masker) {
      sendRecorded(x, upRes, status, size, out, bodyForLog(out, contentType));
      return;
    }
    // A large body is masked on the worker thread (off-loop.ts), so the event loop goes on meanwhile.
    const offLoop = x.ctx.offLoop?.wants(out.length) ? x.ctx.offLoop : undefined;
    if (offLoop) {
      offLoop.maskResponse({ connection: x.route.connection, path: x.path, contentType, body: out, extraRules: x.extraRules }).then(
        (m) => sendMasked(x, upRes, status, size, m),
        (err: unknown) => {
          if (!x.clientGone && !x.finished) x.fail(500, 'masking_failed', `masking the response failed: ${x.unexpectedMaskingError(err)}; it was not sent`, 'masking');
        },
      );
      return;
    }
    let m: MaskedBody;
    try {
      m = x.masker.response(x.path, contentType, out, x.extraRules);
    } catch (err) {
      x.fail(500, 'masking_failed', `masking the response failed: ${x.unexpectedMaskingError(err)}; it was not sent`, 'masking');
      return;
    }
    sendMasked(x, upRes, status, size, m);
  });
  source.once('error', (err) => upstreamBroke(x, upRes, source, err, encoding, status, size));
  upRes.once('close', () => {
    if (!upRes.complete && !tooLarge) upstreamBroke(x, upRes, source, undefined, encoding, status, size);
  });
}

/**
 * Sends a whole body once its `http.response` is in the journal: no byte of it reaches the client
 * before. When it cannot be journaled, the upstream has acted but the client must not be told it
 * succeeded: the connection is reset.
 */
function sendRecorded(x: RelayedExchange, upRes: IncomingMessage, status: number, size: number, out: Buffer, logged: { body?: unknown; bodyEncoding?: string }, spans?: MaskSpan[], counts?: Record<string, number>): void {
  endRecorded(
    x,
    upRes,
    status,
    size,
    logged,
    () => {
      const headers = x.responseHeaders(upRes, true);
      headers['content-length'] = out.length;
      x.res.writeHead(status, headers);
      x.res.end(out);
    },
    spans,
    counts,
  );
}

/** Sends a masked body, recorded as masked. */
function sendMasked(x: RelayedExchange, upRes: IncomingMessage, status: number, size: number, m: MaskedBody): void {
  if (x.clientGone || x.finished) return;
  const logged = { body: m.log, bodyEncoding: typeof m.log === 'string' ? 'text' : 'json' };
  sendRecorded(x, upRes, status, size, m.forward, logged, m.spans, Object.keys(m.counts).length ? m.counts : undefined);
}

/**
 * Ends a response once its `http.response` is in the journal (`end` writes what was held back: a
 * whole body, or the last piece of one relayed piece by piece), so the client never holds the whole
 * body while the log does not. When it cannot be journaled, the connection is reset: the body never
 * looks complete.
 */
function endRecorded(
  x: RelayedExchange,
  upRes: IncomingMessage,
  status: number,
  size: number,
  logged: { body?: unknown; bodyEncoding?: string },
  end: () => void,
  spans?: MaskSpan[],
  counts?: Record<string, number>,
): void {
  x.finished = true;
  x.ctx.writer.commit([x.base('http.response', responsePayload(x, upRes, status, size, logged, counts), spans)], (err) => {
    if (err !== null) {
      x.s.log.error(`http proxy: the response for session ${x.session.id} cannot be recorded (${err.message}); the connection is reset`);
      x.noteUnrecorded('http.response', err, 'connection reset');
      x.res.destroy();
      return;
    }
    if (!x.clientGone) end();
  });
}

/** The `http.response` payload: status, recorded headers, size, duration and the body as recorded. */
function responsePayload(x: RelayedExchange, upRes: IncomingMessage, status: number, size: number, logged: { body?: unknown; bodyEncoding?: string }, counts?: Record<string, number>): HttpResponsePayload {
  const payload: HttpResponsePayload = { status, headers: x.recordedResponseHeaders(upRes), bytes: size, duration: x.elapsed(), ...logged };
  if (counts) payload.masked = counts;
  return payload;
}

/** The upstream's answer broke (`err` from the body or its decoder, when there is one). */
function upstreamBroke(x: RelayedExchange, upRes: IncomingMessage, source: Readable, err: Error | undefined, encoding: string | undefined, status: number, bytes: number): void {
  // Whatever is left of the upstream's answer is dropped, and its connection with it.
  upRes.destroy();
  source.destroy();
  if (x.clientGone) {
    x.recordClientGone('response', { bytes });
    return;
  }
  if (x.finished) return;
  const failure = x.upstreamFailure(err, encoding, 'response');
  if (!x.res.headersSent) {
    x.fail(failure.status, failure.code, failure.message, 'response');
    return;
  }
  x.finished = true;
  x.record([x.base('http.error', { phase: 'response', status, code: failure.code, message: failure.message, bytes, duration: x.elapsed() })]);
  x.res.destroy(); // bytes went out: cutting the connection is the only honest signal
}
