/**
 * No byte of a streamed or piecewise HTTP response reaches the client before the event it carries
 * is in the journal (issue 16, item 3). Each SSE event the client has received is journaled by the
 * time it arrives; when the journal fails mid-stream, the client gets an error event (OpenAI- or
 * Anthropic-shaped) and never the stream's end (`[DONE]`, `message_stop`), and every event it did
 * receive is in the log. A body relayed piece by piece ends only once its `http.response` is
 * journaled, and its connection is reset when it cannot be.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import type { ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { Config } from '../../shared/config';
import type { AuditEventInput } from '../../shared/events';
import { Gateway } from '../../proxy/gateway';
import { silentLogger } from '../../proxy/log';
import type { StoreUnavailableError } from '../../proxy/audit/store';
import { SseParser } from '../../proxy/http/sse';
import { type LlmUpstream, type RecordedRequest, startLlmUpstream } from '../support/llm-upstream';
import { ANTHROPIC_SECRET, OPENAI_SECRET, standardConnections, startTestGateway, type TestGateway, VECTOR_SECRET } from './http-harness';

type Done = (err: StoreUnavailableError | null) => void;

const REPLY = 'One two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen.';
const PIECE = 64 * 1024;
const PIECES = 8;

/** A large body sent chunked, piece by piece: the gateway relays it as it comes. */
async function bigBody(rec: RecordedRequest, res: ServerResponse): Promise<boolean> {
  if (!rec.path.startsWith('/vectors/big')) return false;
  res.writeHead(200, { 'content-type': 'application/octet-stream' });
  for (let i = 0; i < PIECES; i++) {
    res.write(Buffer.alloc(PIECE, 0x61 + i));
    await new Promise((r) => setTimeout(r, 5));
  }
  res.end();
  return true;
}

describe('streams and piecewise bodies are journaled before they are sent', () => {
  let upstream: LlmUpstream;
  let gw: TestGateway;
  /** SSE events journaled, by session, as recorded. */
  const journaled = new Map<string, string[]>();
  let responsesJournaled = 0;
  /** Delay (ms) of every journal write that holds stream events or a response. */
  let slowMs = 0;
  /** Refuse writes holding SSE events once this many more were journaled (set per test: one stream at a time). */
  let failAfterEvents: number | undefined;
  /** SSE events journaled, all sessions. */
  let eventsJournaled = 0;
  let armedAt = 0;
  const failAfter = (n: number | undefined) => {
    failAfterEvents = n;
    armedAt = eventsJournaled;
  };
  let failResponses = false;
  /** Refuse every write that holds an `http.body`. */
  let failBodies = false;
  /** Body bytes journaled as sent (`http.body`), by session. */
  const bodyBytes = new Map<string, number>();
  /** Sessions whose http.response is journaled. */
  const responded = new Set<string>();
  const journaledOf = (session: string) => journaled.get(session) ?? [];

  before(async () => {
    upstream = await startLlmUpstream({ openaiKey: OPENAI_SECRET, anthropicKey: ANTHROPIC_SECRET, vectorKey: VECTOR_SECRET, reply: REPLY, fragmentBytes: 7, handler: bigBody });
    gw = await startTestGateway(upstream, {
      masking: [{ id: 'cards', detectors: ['credit_card'], scope: ['client', 'upstream', 'log'], connections: ['anthropic'] }],
    });
    const store = gw.gw.services.store as unknown as { appendAsync(inputs: AuditEventInput[], done: Done): void };
    const real = store.appendAsync.bind(store);
    store.appendAsync = (inputs, done) => {
      const chunks = inputs.filter((e) => e.kind === 'http.chunk');
      const refuse =
        (failResponses && inputs.some((e) => e.kind === 'http.response')) ||
        (failBodies && inputs.some((e) => e.kind === 'http.body')) ||
        (failAfterEvents !== undefined && eventsJournaled - armedAt >= failAfterEvents && chunks.some((e) => (e.payload as { events: unknown[] }).events.length > 0));
      const write = () => {
        if (refuse) {
          done(Object.assign(new Error('disk full (injected)'), { name: 'StoreUnavailableError' }) as StoreUnavailableError);
          return;
        }
        real(inputs, (err) => {
          if (!err) {
            for (const e of chunks) {
              const data = (e.payload as { events: { data: string }[] }).events.map((x) => x.data);
              journaled.set(e.session!, [...journaledOf(e.session!), ...data]);
              eventsJournaled += data.length;
            }
            responsesJournaled += inputs.filter((e) => e.kind === 'http.response').length;
            for (const e of inputs) if (e.kind === 'http.response') responded.add(e.session!);
            for (const e of inputs) if (e.kind === 'http.body') bodyBytes.set(e.session!, Math.max(bodyBytes.get(e.session!) ?? 0, (e.payload as { bytes: number }).bytes));
          }
          done(err);
        });
      };
      if (slowMs && (chunks.length || inputs.some((e) => e.kind === 'http.response' || e.kind === 'http.body'))) setTimeout(write, slowMs);
      else write();
    };
  });
  after(async () => {
    await gw.stop();
    await upstream.close();
  });

  /** Streams a chat completion with fetch, checking at every read that what arrived is journaled. */
  async function streamChecked(): Promise<{ session: string; received: string[]; text: string }> {
    const r = await fetch(`${gw.proxy}/openai/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${gw.adminKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 'count' }] }),
    });
    const session = r.headers.get('x-custody-session')!;
    assert.ok(session, 'the stream names its session');
    const parser = new SseParser();
    const received: string[] = [];
    let text = '';
    const reader = r.body!.getReader();
    for (;;) {
      let next: { done: boolean; value?: Uint8Array };
      try {
        next = await reader.read();
      } catch {
        break;
      }
      if (next.done || !next.value) break;
      text += Buffer.from(next.value).toString('utf8');
      for (const e of parser.push(Buffer.from(next.value))) {
        received.push(e.data);
        if (e.data.includes('store_unavailable')) continue; // the gateway's own error event
        assert.ok(journaledOf(session).includes(e.data), `the client received an event before it was journaled: ${e.data.slice(0, 80)}`);
      }
    }
    return { session, received, text };
  }

  it('every SSE event a client receives is already in the journal (unmasked relay, events split across reads)', async () => {
    slowMs = 30;
    try {
      for (let i = 0; i < 3; i++) {
        const { session, received, text } = await streamChecked();
        assert.ok(text.includes('data: [DONE]'), 'the stream completed');
        assert.ok(received.length > 10, `${received.length} events`);
        assert.deepEqual(journaledOf(session).slice(-received.length), received, 'the journal holds exactly the events the client got, in order');
      }
    } finally {
      slowMs = 0;
    }
  });

  it('a masked stream (the Anthropic SDK) gets each event only once it is journaled', async () => {
    const client = new Anthropic({ baseURL: `${gw.proxy}/anthropic`, apiKey: gw.adminKey, maxRetries: 0 });
    slowMs = 30;
    try {
      const { data: stream, response } = await client.messages.create({ model: 'claude-opus-4-6', max_tokens: 64, stream: true, messages: [{ role: 'user', content: 'count' }] }).withResponse();
      const session = response.headers.get('x-custody-session')!;
      const types: string[] = [];
      for await (const event of stream) {
        types.push(event.type);
        assert.ok(journaledOf(session).length >= types.length, `the client holds ${types.length} events, the journal ${journaledOf(session).length}`);
      }
      assert.equal(types.at(-1), 'message_stop');
    } finally {
      slowMs = 0;
    }
  });

  it('a journal failure mid-stream ends it with an error event, never [DONE], and every event received is in the log', async () => {
    failAfter(3);
    try {
      const { session, received, text } = await streamChecked();
      assert.ok(!text.includes('[DONE]'), 'the client was told the stream completed, though its end is not in the log');
      const last = received.at(-1) ?? '';
      assert.match(last, /store_unavailable/, `the stream's last event says why it broke: ${last}`);
      const error = JSON.parse(last) as { error: { type: string; code: string; message: string } };
      assert.equal(error.error.code, 'store_unavailable');
      const events = received.slice(0, -1);
      assert.deepEqual(journaledOf(session).slice(-events.length), events, 'every event the client got is journaled');
      assert.equal(eventsJournaled - armedAt, events.length, 'and it got every event that was');
      assert.ok(events.length >= 3 && events.length < 20, `${events.length} events before the cut`);
    } finally {
      failAfter(undefined);
    }
  });

  it('the OpenAI SDK sees the cut-off stream fail, not complete', async () => {
    const client = new OpenAI({ baseURL: `${gw.proxy}/openai`, apiKey: gw.adminKey, maxRetries: 0 });
    failAfter(2);
    let content = '';
    let finished = false;
    try {
      const stream = await client.chat.completions.create({ model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 'count' }] });
      await assert.rejects(
        (async () => {
          for await (const chunk of stream) {
            content += chunk.choices[0]?.delta.content ?? '';
            if (chunk.choices[0]?.finish_reason) finished = true;
          }
        })(),
        /can no longer record this stream/,
      );
    } finally {
      failAfter(undefined);
    }
    assert.equal(finished, false);
    assert.ok(REPLY.startsWith(content) && content.length < REPLY.length, `partial answer: "${content}"`);
  });

  it('the Anthropic SDK sees an error event, never message_stop', async () => {
    const client = new Anthropic({ baseURL: `${gw.proxy}/anthropic`, apiKey: gw.adminKey, maxRetries: 0 });
    failAfter(3);
    const types: string[] = [];
    try {
      const stream = await client.messages.create({ model: 'claude-opus-4-6', max_tokens: 64, stream: true, messages: [{ role: 'user', content: 'count' }] });
      await assert.rejects(
        (async () => {
          for await (const event of stream) types.push(event.type);
        })(),
        /can no longer record this stream/,
      );
    } finally {
      failAfter(undefined);
    }
    assert.ok(!types.includes('message_stop'), types.join(','));
    assert.ok(types.length >= 2, types.join(',')); // (the SDK does not yield the journaled ping)
    // The gateway goes on once the log can be written.
    const ok = await client.messages.create({ model: 'claude-opus-4-6', max_tokens: 64, messages: [{ role: 'user', content: 'again' }] });
    assert.equal(ok.type, 'message');
  });

  const big = () => fetch(`${gw.proxy}/vectors/big`, { headers: { authorization: `Bearer ${gw.adminKey}` } });

  it('a body relayed piece by piece ends only once its response is journaled', async () => {
    slowMs = 150;
    try {
      const before = responsesJournaled;
      const r = await big();
      assert.equal(r.status, 200);
      const body = Buffer.from(await r.arrayBuffer());
      assert.equal(responsesJournaled, before + 1, 'the client had the whole body before its response was journaled');
      assert.equal(body.length, PIECE * PIECES);
    } finally {
      slowMs = 0;
    }
  });

  it('every piece of a body relayed piece by piece is journaled (http.body) before the client gets it', async () => {
    slowMs = 40;
    try {
      const r = await big();
      assert.equal(r.status, 200);
      const session = r.headers.get('x-custody-session')!;
      const reader = r.body!.getReader();
      let got = 0;
      let reads = 0;
      for (;;) {
        const next = await reader.read();
        if (next.done) break;
        got += next.value.length;
        reads++;
        const logged = bodyBytes.get(session) ?? 0;
        // Before its http.response, every byte the client holds is counted by an http.body.
        if (!responded.has(session)) assert.ok(logged >= got, `the client held ${got} bytes while the journal accounted for ${logged}`);
      }
      assert.equal(got, PIECE * PIECES);
      assert.ok(responded.has(session), 'the whole body arrived only with its http.response journaled');
      assert.ok(reads > 1, 'the body came in several reads');
      assert.ok((bodyBytes.get(session) ?? 0) > 0 && (bodyBytes.get(session) ?? 0) < got, 'the last piece went with the http.response, not an http.body');
    } finally {
      slowMs = 0;
    }
  });

  it('a piecewise body whose pieces cannot be journaled never reaches the client', async () => {
    failBodies = true;
    let got = 0;
    try {
      const r = await big();
      const reader = r.body!.getReader();
      for (;;) {
        const next = await reader.read();
        if (next.done) break;
        got += next.value.length;
      }
      assert.fail(`the body ended normally after ${got} bytes`);
    } catch (err) {
      assert.match(String(err), /fetch failed|terminated|socket|reset/i);
    } finally {
      failBodies = false;
    }
    assert.equal(got, 0, 'no piece reached the client');
    assert.equal((await big()).status, 200, 'the gateway goes on once the log can be written');
  });

  it('a piecewise body whose response cannot be journaled is cut: the client never gets all of it', async () => {
    failResponses = true;
    let got = 0;
    try {
      const r = await big();
      await assert.rejects(
        (async () => {
          const reader = r.body!.getReader();
          for (;;) {
            const next = await reader.read();
            if (next.done) break;
            got += next.value.length;
          }
        })(),
        /terminated|socket|reset/i,
      );
    } catch (err) {
      // the reset may come before the headers
      assert.match(String(err), /fetch failed|terminated|socket/i);
    } finally {
      failResponses = false;
    }
    assert.ok(got < PIECE * PIECES, `the client received ${got} of ${PIECE * PIECES} bytes`);
    assert.equal((await big()).status, 200, 'the gateway goes on once the log can be written');
  });
});

describe('results that could not be journaled are recorded at the next start', () => {
  let upstream: LlmUpstream;
  const dataDir = mkdtempSync(join(tmpdir(), 'custody-unrecorded-'));
  /** The stream's third event waits for this (the test makes the journal fail first). */
  let release = () => {};
  let released = Promise.resolve();
  before(async () => {
    upstream = await startLlmUpstream({ openaiKey: OPENAI_SECRET, vectorKey: VECTOR_SECRET, reply: REPLY, handler: bigBody, beforeStreamEvent: ({ index }) => (index === 2 ? released : undefined) });
  });
  after(async () => {
    await upstream.close();
    rmSync(dataDir, { recursive: true, force: true });
  });
  const start = () => Gateway.start({ config: Config.parse({ listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' }, connections: standardConnections(upstream.url) }), dataDir, log: silentLogger });

  it('a cut-off stream and a reset body each leave a result.unrecorded event in their session', async () => {
    const gw = await start();
    const key = gw.firstKey!;
    const proxy = `http://${gw.address('http')}`;
    const store = gw.services.store as unknown as { appendAsync(inputs: AuditEventInput[], done: Done): void };
    const real = store.appendAsync.bind(store);
    let failing = false;
    store.appendAsync = (inputs, done) => {
      if (failing && inputs.some((e) => e.kind === 'http.chunk' || e.kind === 'http.response')) done(Object.assign(new Error('disk full (injected)'), { name: 'StoreUnavailableError' }) as StoreUnavailableError);
      else real(inputs, done);
    };
    const sessions: string[] = [];
    released = new Promise((r) => (release = r));
    try {
      const r = await fetch(`${proxy}/openai/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 'count' }] }),
      });
      failing = true; // the headers and the first events are journaled and out; the rest are not
      release();
      sessions.push(r.headers.get('x-custody-session')!);
      const text = await r.text();
      assert.match(text, /store_unavailable/);
      assert.ok(!text.includes('[DONE]'));
      failing = false;
      const big = await fetch(`${proxy}/vectors/big`, { headers: { authorization: `Bearer ${key}` } });
      failing = true;
      sessions.push(big.headers.get('x-custody-session')!);
      await assert.rejects(big.arrayBuffer(), /terminated/);
    } finally {
      failing = false;
      await gw.stop();
    }
    const again = await start();
    try {
      const db = again.services.store;
      db.settle();
      const rows = db.db.prepare("SELECT session, payload FROM events WHERE kind = 'result.unrecorded' ORDER BY seq").all() as { session: string; payload: string }[];
      const got = rows.map((row) => ({ session: row.session, ...(JSON.parse(row.payload) as { result: string; error: string; client: string }) }));
      assert.deepEqual(
        got.map((g) => [g.session, g.result, g.client]),
        [
          [sessions[0], 'http.chunk', 'an error event ending the stream'],
          [sessions[1], 'http.response', 'connection reset'],
        ],
      );
      assert.ok(got.every((g) => /disk full \(injected\)/.test(g.error)));
    } finally {
      await again.stop();
    }
    // Recorded once: a third start finds nothing left to record.
    const third = await start();
    try {
      third.services.store.settle();
      assert.equal((third.services.store.db.prepare("SELECT count(*) AS n FROM events WHERE kind = 'result.unrecorded'").get() as { n: number }).n, 2);
    } finally {
      await third.stop();
    }
  });
});
