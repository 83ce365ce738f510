/**
 * Relays a text/event-stream upstream response to the client of one exchange, event by event.
 *
 * When the stream breaks (a body that does not decode, a connection closed or reset before the
 * end, invalid chunk framing, a masking or store failure), a client that has received nothing yet
 * gets a plain provider-shaped error response; one that has gets a provider-shaped error event as
 * the stream's last, never an end that looks complete.
 */
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import type { Readable } from 'node:stream';
import type { SseEvent, StreamChunkResult, StreamMasker } from '../masking/types';
import type { AuditEventInput } from '../../shared/events';
import { errorEvent, type GatewayErrorCode, sendError } from './errors';
import type { RelayedExchange } from './relayed-exchange';
import { StreamRecorder } from './recorder';
import { serializeSseEvent, SseParser } from './sse';

/** Stream events relayed within this window are recorded as one `http.chunk` event. */
const STREAM_BATCH_MS = 50;
/** A stream's headers wait at most this long for its first event to travel with. */
const HEADERS_ALONE_MS = 2;

/**
 * A text/event-stream response, relayed event by event: without masking, bytes are written the
 * moment they arrive; with masking, each parsed event goes through the stream masker and what it
 * releases is written at once. Events are recorded in batches (one commit per STREAM_BATCH_MS).
 */
export function relayStream(x: RelayedExchange, upRes: IncomingMessage, source: Readable, status: number, tForward: number, encoding: string | undefined): void {
  const { res } = x;
  const max = x.limits.maxResponseBytes;
  const parser = new SseParser();
  let streamMasker: StreamMasker | undefined;
  // The credential is scrubbed first, so the connection's masker (and its spans) see text without it.
  let secretMasker: StreamMasker | undefined;
  try {
    secretMasker = x.route.scrubber?.sseStream();
    streamMasker = x.masker ? x.masker.stream(x.path, x.extraRules) : undefined;
  } catch (err) {
    upRes.destroy();
    x.fail(500, 'masking_failed', `masking the response stream failed: ${x.unexpectedMaskingError(err)}; it was not sent`, 'masking');
    return;
  }
  let size = 0;
  let ended = false;
  const recorder = new StreamRecorder(
    x.ctx.writer,
    (kind, payload, spans) => x.base(kind, payload, spans),
    (err) => {
      x.s.log.error(`http proxy: stream recording failed for session ${x.session.id}: ${(err as Error).message}`);
      endWithError(503, 'store_unavailable', `the gateway can no longer record this stream (${(err as Error).message}); it was cut off`);
    },
    STREAM_BATCH_MS,
  );

  const headers = x.responseHeaders(upRes, true);
  const response = x.base('http.response', { status, headers: x.recordedResponseHeaders(upRes), stream: true, ttfb: Math.round((performance.now() - tForward) * 10) / 10, duration: x.elapsed() });
  // The headers go out with the first event (one packet, one wake-up for the client) or on their
  // own after HEADERS_ALONE_MS when the upstream is slow to send one — never held longer. A
  // compressed stream (from an upstream that ignored `accept-encoding: identity`) sends them with
  // its first decoded event, so a body that does not decode at all gets a plain 502.
  let headersOut = false;
  const headerTimer =
    encoding === undefined
      ? setTimeout(() => {
          if (!headersOut && !res.writableEnded && !res.destroyed) {
            startStream(res, status, headers, recorder, response);
            res.flushHeaders();
          }
          headersOut = true;
        }, HEADERS_ALONE_MS)
      : undefined;

  const write = (data: Buffer | string) => {
    if (!headersOut) {
      headersOut = true;
      clearTimeout(headerTimer);
      startStream(res, status, headers, recorder, response);
    }
    if (!res.write(data) && !source.isPaused()) {
      source.pause();
      res.once('drain', () => source.resume());
    }
  };
  const recordChunk = (r: Pick<StreamChunkResult, 'log' | 'spans' | 'counts'>) => {
    if (r.log.length) recorder.events(x.elapsed(), r.log, r.spans, r.counts);
  };
  const endWithError = (statusCode: number, code: GatewayErrorCode, message: string) => {
    if (ended) return;
    ended = true;
    x.finished = true;
    upRes.destroy();
    source.destroy();
    if (!headersOut) {
      // Nothing has reached the client: it gets the error as a response of its own, not a stream.
      headersOut = true;
      clearTimeout(headerTimer);
      if (!x.clientGone) sendError(res, x.style, statusCode, code, message, x.sessionHeader());
      recorder.add(x.base('http.error', { phase: 'response', status: statusCode, code, message, bytes: size, duration: x.elapsed() }));
    } else {
      if (!x.clientGone && !res.writableEnded) res.end(serializeSseEvent(errorEvent(x.style, statusCode, code, message)));
      recorder.add(x.base('http.error', { phase: 'stream', status: statusCode, code, message, offset: x.elapsed(), events: recorder.eventCount, bytes: size }));
    }
    recorder.flush();
  };
  const release = (r: StreamChunkResult) => {
    if (r.forward.length) write(r.forward.length === 1 ? serializeSseEvent(r.forward[0]!) : r.forward.map(serializeSseEvent).join(''));
    recordChunk(r);
  };

  x.onClientGone = () => {
    if (ended) return;
    ended = true;
    x.finished = true;
    source.destroy();
    recorder.add(x.base('http.error', { phase: 'stream', code: 'client_closed', message: 'client disconnected mid-stream; the upstream request was aborted', offset: x.elapsed(), events: recorder.eventCount, bytes: size }));
    recorder.flush();
  };

  source.on('data', (chunk: Buffer) => {
    if (ended) return;
    size += chunk.length;
    if (size > max) {
      endWithError(413, 'response_too_large', `connection ${x.name}: the upstream stream exceeds the gateway limit of ${max} bytes (limits.maxResponseBytes); it was cut off`);
      return;
    }
    const comments = parser.comments;
    const events = parser.push(chunk);
    if (!streamMasker && !secretMasker) {
      write(chunk);
      if (events.length) recordChunk({ log: events, spans: [], counts: {} });
      return;
    }
    // Comments are keep-alives: their text is not relayed (it could echo anything), the beat is.
    if (parser.comments > comments) write(':\n\n');
    for (const e of events) {
      try {
        pass(secretMasker ? secretMasker.push(x.route.scrubber!.eventFields(e)) : undefined, e);
      } catch (err) {
        endWithError(500, 'masking_failed', `masking the stream failed: ${x.unexpectedMaskingError(err)}; the rest was not sent`);
        return;
      }
    }
  });
  /** Events the credential scrubber released (or `e` itself without one) go on through the connection's masker. */
  const pass = (scrubbed: StreamChunkResult | undefined, e?: SseEvent) => {
    if (!streamMasker) {
      if (scrubbed) release(scrubbed);
      return;
    }
    for (const ev of scrubbed ? scrubbed.forward : e ? [e] : []) release(streamMasker.push(ev));
  };
  source.once('end', () => {
    if (ended) return;
    const tail = parser.end();
    try {
      if (secretMasker) pass(secretMasker.end());
      if (streamMasker) release(streamMasker.end());
    } catch (err) {
      endWithError(500, 'masking_failed', `masking the end of the stream failed: ${x.unexpectedMaskingError(err)}; the rest was not sent`);
      return;
    }
    ended = true;
    x.finished = true;
    if (!headersOut) {
      headersOut = true;
      clearTimeout(headerTimer);
      startStream(res, status, headers, recorder, response);
    }
    res.end();
    recorder.add(x.base('http.chunk', { offset: x.elapsed(), events: [], done: true, totalEvents: recorder.eventCount, bytes: size, incompleteTail: tail.incomplete || undefined, duration: x.elapsed() }));
    recorder.flush();
  });
  const broken = (err: Error | undefined) => {
    if (x.clientGone || ended) return;
    const failure = x.upstreamFailure(err, encoding, 'stream');
    endWithError(failure.status, failure.code, `${failure.message}; it was cut off`);
  };
  source.once('error', broken);
  upRes.once('close', () => {
    if (!upRes.complete) broken(undefined);
  });
}

/** The stream's headers are written, and its `http.response` recorded before its first event. */
function startStream(res: ServerResponse, status: number, headers: OutgoingHttpHeaders, recorder: StreamRecorder, response: AuditEventInput): void {
  res.writeHead(status, headers);
  recorder.add(response);
}
