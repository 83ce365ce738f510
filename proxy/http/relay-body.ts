/**
 * Relays a non-streamed upstream response (content-length or chunked) to the client of one
 * exchange: whole, in one write with an exact content-length, when it is small, an error, or must
 * be masked; otherwise piece by piece as it arrives, with backpressure. Either way no byte reaches
 * the client before the event that accounts for it is in the journal (a whole body: its
 * `http.response`; a piecewise one: each turn's `http.body`, and its `http.response` with its last
 * piece), and the client gets a reset connection when the journal cannot take them.
 *
 * When the upstream's answer breaks (a body that does not decode, a connection closed or reset
 * before the end, invalid chunk framing), the client gets a provider-shaped 502 if nothing has
 * been handed over for it yet — which is why the headers of a piecewise relay go with its first
 * bytes, not before — and otherwise its connection is cut, so a truncated body never looks complete.
 */
import type { IncomingMessage } from 'node:http';
import type { Readable } from 'node:stream';
import type { HttpResponsePayload, MaskSpan } from '../../shared/events';
import type { MaskedBody } from '../masking/types';
import { bodyForLog } from './bodies';
import type { GatewayErrorCode } from './errors';
import { MAX_UNJOURNALED_BYTES, StreamRecorder, type StreamSink } from './recorder';
import type { ByteScrubStream } from './scrub';
import type { RelayedExchange } from './relayed-exchange';

/** Non-streamed responses up to this size (declared by content-length) are relayed in one write. */
const BUFFER_SMALL_RESPONSES = 256 * 1024;

/**
 * A non-streamed response: relayed as it arrives, or whole when it must be masked or scrubbed.
 * `source` is `upRes` or, when the upstream sent `encoding`, its decoder.
 */
export function relayBody(x: RelayedExchange, upRes: IncomingMessage, source: Readable, status: number, encoding: string | undefined): void {
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
  const piecewise = whole ? undefined : new PiecewiseRelay(x, upRes, source, status, decoded);
  const chunks: Buffer[] = [];
  let size = 0;
  let tooLarge = false;
  source.on('data', (chunk: Buffer) => {
    if (tooLarge) return;
    size += chunk.length;
    if (size > max) {
      tooLarge = true;
      upRes.destroy();
      source.destroy();
      const message = `connection ${x.name}: the upstream response exceeds the gateway limit of ${max} bytes (limits.maxResponseBytes)`;
      if (!piecewise?.started) x.fail(413, 'response_too_large', message, 'response');
      else piecewise.cut('response_too_large', message, size);
      return;
    }
    chunks.push(chunk);
    piecewise?.push(chunk);
  });
  source.once('end', () => {
    if (tooLarge || x.clientGone || x.finished) return;
    let out = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size);
    const contentType = upRes.headers['content-type'];
    if (piecewise) {
      const scrubber = x.route.scrubber;
      piecewise.end(responsePayload(x, upRes, status, size, bodyForLog(scrubber ? scrubber.scrub(out) : out, contentType)));
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
  source.once('error', (err) => upstreamBroke(x, upRes, source, err, encoding, status, size, piecewise));
  upRes.once('close', () => {
    if (!upRes.complete && !tooLarge) upstreamBroke(x, upRes, source, undefined, encoding, status, size, piecewise);
  });
}

/**
 * A body relayed piece by piece as it arrives. The pieces of one turn of the event loop go out only
 * once that turn's `http.body` (bytes sent so far) is in the journal, through the same recorder as
 * streams (recorder.ts); the latest piece waits for the next, so the body's last bytes go out only
 * with its `http.response`. When the journal cannot take them, the pieces that waited never go out
 * and the connection is reset: the client never holds bytes the log does not account for, and
 * never a body that looks complete.
 */
class PiecewiseRelay {
  private readonly recorder: StreamRecorder;
  /** Relayed pieces may split the secret: the scrubber holds back a few bytes. */
  private readonly scrubbing: ByteScrubStream | undefined;
  /** The piece held back until the next one comes, or until the body is recorded. */
  private last: Buffer | undefined;
  /** Bytes handed to the recorder to send. */
  private sent = 0;
  private drainWait = false;
  private journalWait = false;
  private ending = false;
  /** Something (headers, a piece) was handed over for the client: a gateway error can no longer be sent instead. */
  started = false;

  constructor(
    private readonly x: RelayedExchange,
    private readonly upRes: IncomingMessage,
    private readonly source: Readable,
    status: number,
    decoded: boolean,
  ) {
    const { res } = x;
    this.scrubbing = x.route.scrubber?.bodyStream();
    const headers = x.responseHeaders(upRes, decoded || this.scrubbing !== undefined);
    const gone = () => x.clientGone || res.destroyed || res.writableEnded;
    const sink: StreamSink = {
      head: () => {
        if (!gone()) res.writeHead(status, headers);
      },
      write: (data) => {
        if (gone() || res.write(data) || this.drainWait) return;
        this.drainWait = true;
        this.pause();
        res.once('drain', () => {
          this.drainWait = false;
          this.resume();
        });
      },
      end: (data) => {
        if (!gone()) res.end(data);
      },
    };
    this.recorder = new StreamRecorder(
      x.ctx.writer,
      (kind, payload, spans) => x.base(kind, payload, spans),
      (err) => this.journalFailed(err as Error),
      sink,
      () => {
        if (this.journalWait && this.recorder.unreleased <= MAX_UNJOURNALED_BYTES) {
          this.journalWait = false;
          this.resume();
        }
      },
    );
  }

  /** A piece from the upstream: the one before it goes out once this turn's `http.body` is journaled. */
  push(chunk: Buffer): void {
    const out = this.scrubbing ? this.scrubbing.push(chunk) : chunk;
    if (!out.length) return;
    const previous = this.last;
    this.last = out;
    if (previous) this.send(previous);
  }

  /** The upstream's body ended: its `http.response`, its last piece and its end go out together. */
  end(response: HttpResponsePayload): void {
    this.ending = true;
    this.x.finished = true;
    this.open();
    this.recorder.add(this.x.base('http.response', response));
    if (this.last) this.recorder.send(this.last);
    this.recorder.end(this.scrubbing?.end());
  }

  /** The body cannot go on after some of it was handed over: recorded, and the connection cut. */
  cut(code: GatewayErrorCode, message: string, bytes: number, status = this.upRes.statusCode ?? 0): void {
    this.x.finished = true;
    this.x.record([this.x.base('http.error', { phase: 'response', status, code, message, bytes, duration: this.x.elapsed() })]);
    this.x.res.destroy(); // bytes may be out: cutting the connection is the only honest signal
  }

  private send(piece: Buffer): void {
    this.open();
    this.sent += piece.length;
    this.recorder.progress(() => this.x.base('http.body', { offset: this.x.elapsed(), bytes: this.sent }));
    this.recorder.send(piece);
    if (!this.journalWait && this.recorder.unreleased > MAX_UNJOURNALED_BYTES) {
      this.journalWait = true;
      this.pause();
    }
  }

  /** The headers go out with the first batch. */
  private open(): void {
    if (this.started) return;
    this.started = true;
    this.recorder.head();
  }

  private pause(): void {
    if (!this.source.isPaused()) this.source.pause();
  }

  private resume(): void {
    if (!this.drainWait && !this.journalWait && !this.x.finished) this.source.resume();
  }

  /** The journal refused a batch: what waited is dropped, the upstream too, and the client is cut off. */
  private journalFailed(err: Error): void {
    const x = this.x;
    const result = this.ending ? 'http.response' : 'http.body';
    x.s.log.error(`http proxy: the response for session ${x.session.id} cannot be recorded (${err.message}); the connection is reset`);
    x.finished = true;
    this.upRes.destroy();
    this.source.destroy();
    x.noteUnrecorded(result, err, x.clientGone ? 'nothing: it had gone' : 'connection reset');
    x.res.destroy();
  }
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
function upstreamBroke(x: RelayedExchange, upRes: IncomingMessage, source: Readable, err: Error | undefined, encoding: string | undefined, status: number, bytes: number, piecewise: PiecewiseRelay | undefined): void {
  // Whatever is left of the upstream's answer is dropped, and its connection with it.
  upRes.destroy();
  source.destroy();
  if (x.clientGone) {
    x.recordClientGone('response', { bytes });
    return;
  }
  if (x.finished) return;
  const failure = x.upstreamFailure(err, encoding, 'response');
  if (!piecewise?.started) x.fail(failure.status, failure.code, failure.message, 'response');
  else piecewise.cut(failure.code, failure.message, bytes, status);
}
