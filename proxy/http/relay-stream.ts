/**
 * Relays a text/event-stream upstream response to the client of one exchange, event by event.
 *
 * When the stream breaks (a body that does not decode, a connection closed or reset before the
 * end, invalid chunk framing, a masking or store failure), a client that has received nothing yet
 * gets a plain provider-shaped error response; one that has gets a provider-shaped error event as
 * the stream's last, never an end that looks complete. No byte goes out before the event it
 * carries is in the journal; when the journal cannot take them, they never go out.
 */
import type { IncomingMessage } from 'node:http';
import { performance } from 'node:perf_hooks';
import type { Readable } from 'node:stream';
import type { SseEvent, StreamChunkResult, StreamMasker } from '../masking/types';
import { errorEvent, type GatewayErrorCode, sendError } from './errors';
import type { RelayedExchange } from './relayed-exchange';
import { MAX_UNJOURNALED_BYTES, StreamRecorder, type StreamSink } from './recorder';
import { serializeSseEvent, SseParser } from './sse';

/** A stream's headers wait at most this long for its first event to travel with. */
const HEADERS_ALONE_MS = 2;

/**
 * A text/event-stream response, relayed event by event: without masking, the upstream's bytes as
 * they are, up to the end of the last whole event (the rest waits for the rest of its event); with
 * masking, each parsed event goes through the stream masker and what it releases is relayed. Either
 * way, the bytes of one turn of the event loop go out only once that turn's events are in the
 * journal (recorder.ts): a client never holds an event the log does not.
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
  const headers = x.responseHeaders(upRes, true);
  const gone = () => x.clientGone || res.destroyed || res.writableEnded;
  // The source pauses while the client cannot take more, or while too much waits for the journal.
  let drainWait = false;
  let journalWait = false;
  const resume = () => {
    if (!drainWait && !journalWait && !ended) source.resume();
  };
  const sink: StreamSink = {
    head: (alone) => {
      if (gone()) return;
      res.writeHead(status, headers);
      if (alone) res.flushHeaders();
    },
    write: (data) => {
      if (gone() || res.write(data) || drainWait) return;
      drainWait = true;
      source.pause();
      res.once('drain', () => {
        drainWait = false;
        resume();
      });
    },
    end: (data) => {
      if (!gone()) res.end(data);
    },
  };
  const recorder = new StreamRecorder(
    x.ctx.writer,
    (kind, payload, spans) => x.base(kind, payload, spans),
    (err) => journalFailed(err as Error),
    sink,
    () => {
      if (journalWait && recorder.unreleased <= MAX_UNJOURNALED_BYTES) {
        journalWait = false;
        resume();
      }
    },
  );

  const response = x.base('http.response', { status, headers: x.recordedResponseHeaders(upRes), stream: true, ttfb: Math.round((performance.now() - tForward) * 10) / 10, duration: x.elapsed() });
  // The headers go out with the first event (one packet, one wake-up for the client) or on their
  // own after HEADERS_ALONE_MS when the upstream is slow to send one — never held longer. A
  // compressed stream (from an upstream that ignored `accept-encoding: identity`) sends them with
  // its first decoded event, so a body that does not decode at all gets a plain 502. Either way
  // they follow the stream's `http.response` into the journal.
  let headersOut = false;
  const openStream = () => {
    if (headersOut) return;
    headersOut = true;
    clearTimeout(headerTimer);
    recorder.add(response);
    recorder.head();
  };
  const headerTimer =
    encoding === undefined
      ? setTimeout(() => {
          if (!ended && !res.writableEnded && !res.destroyed) openStream();
        }, HEADERS_ALONE_MS)
      : undefined;

  /** Relays `data` (after its events, recorded first) once they are journaled. */
  const relay = (data: Buffer | string, r?: Pick<StreamChunkResult, 'log' | 'spans' | 'counts'>) => {
    openStream();
    if (r?.log.length) recorder.events(x.elapsed(), r.log, r.spans, r.counts);
    recorder.send(data);
    if (!journalWait && recorder.unreleased > MAX_UNJOURNALED_BYTES) {
      journalWait = true;
      source.pause();
    }
  };
  const stop = () => {
    ended = true;
    x.finished = true;
    clearTimeout(headerTimer);
    upRes.destroy();
    source.destroy();
  };
  const endWithError = (statusCode: number, code: GatewayErrorCode, message: string) => {
    if (ended) return;
    stop();
    if (!headersOut) {
      // Nothing has reached the client: it gets the error as a response of its own, not a stream.
      headersOut = true;
      if (!x.clientGone) sendError(res, x.style, statusCode, code, message, x.sessionHeader());
      x.record([x.base('http.error', { phase: 'response', status: statusCode, code, message, bytes: size, duration: x.elapsed() })]);
      return;
    }
    // The error event is the stream's last, after what went before it and its record.
    recorder.add(x.base('http.error', { phase: 'stream', status: statusCode, code, message, offset: x.elapsed(), events: recorder.eventCount, bytes: size }));
    recorder.end(serializeSseEvent(errorEvent(x.style, statusCode, code, message)));
  };
  /**
   * The journal cannot take the stream's events: what waited for it is dropped, and the client is
   * told the stream broke — never an end that looks complete.
   */
  const journalFailed = (err: Error) => {
    const message = `the gateway can no longer record this stream (${err.message}); it was cut off`;
    x.s.log.error(`http proxy: stream recording failed for session ${x.session.id}: ${err.message}`);
    if (!ended) stop();
    let client = 'nothing: it had gone';
    if (!gone()) {
      client = res.headersSent ? 'an error event ending the stream' : 'a 503 store_unavailable response';
      if (!res.headersSent) sendError(res, x.style, 503, 'store_unavailable', message, x.sessionHeader());
      else res.end(serializeSseEvent(errorEvent(x.style, 503, 'store_unavailable', message)));
    }
    x.noteUnrecorded('http.chunk', err, client);
    x.record([x.base('http.error', { phase: 'stream', status: 503, code: 'store_unavailable', message, offset: x.elapsed(), events: recorder.eventCount, bytes: size })]);
  };
  const release = (r: StreamChunkResult) => {
    if (r.forward.length) relay(r.forward.length === 1 ? serializeSseEvent(r.forward[0]!) : r.forward.map(serializeSseEvent).join(''), r);
    else if (r.log.length) recorder.events(x.elapsed(), r.log, r.spans, r.counts);
  };

  x.onClientGone = () => {
    if (ended) return;
    stop();
    recorder.add(x.base('http.error', { phase: 'stream', code: 'client_closed', message: 'client disconnected mid-stream; the upstream request was aborted', offset: x.elapsed(), events: recorder.eventCount, bytes: size }));
  };

  // Unmasked: the upstream's bytes not yet relayed (after the end of the last whole event).
  const held: Buffer[] = [];
  let heldBytes = 0;
  let relayedTo = 0;
  const takeHeld = (n: number): Buffer => {
    heldBytes -= n;
    if (held.length === 1 && held[0]!.length === n) return held.pop()!;
    const all = held.length === 1 ? held[0]! : Buffer.concat(held);
    held.length = 0;
    if (all.length > n) held.push(all.subarray(n));
    return all.subarray(0, n);
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
      held.push(chunk);
      heldBytes += chunk.length;
      const whole = parser.boundary - relayedTo;
      if (whole > 0) {
        relayedTo = parser.boundary;
        relay(takeHeld(whole), { log: events, spans: [], counts: {} });
      }
      return;
    }
    // Comments are keep-alives: their text is not relayed (it could echo anything), the beat is.
    if (parser.comments > comments) relay(':\n\n');
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
    openStream();
    // An unterminated last event is no event (recorded as `incompleteTail`); its bytes pass as they came.
    if (heldBytes) recorder.send(takeHeld(heldBytes));
    recorder.add(x.base('http.chunk', { offset: x.elapsed(), events: [], done: true, totalEvents: recorder.eventCount, bytes: size, incompleteTail: tail.incomplete || undefined, duration: x.elapsed() }));
    recorder.end();
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
