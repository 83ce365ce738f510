/**
 * The official OpenAI SDK through the gateway against the stand-in: chat completions (plain and
 * streamed), the Responses API (plain and streamed) and embeddings — what the client gets, what
 * the upstream gets (the connection's secret, never the client's key) and what is recorded.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import OpenAI from 'openai';
import type { AuditEvent, HttpSessionStart } from '../../shared/events';
import { deltasOf, fakeEmbedding, type LlmUpstream, type StreamEventInfo, startLlmUpstream } from '../support/llm-upstream';
import { eventually, OPENAI_SECRET, startTestGateway, type TestGateway } from './http-harness';

const REPLY = 'Bonjour — the answer is 42. Ünïcödé ✓ and an emoji 🚀 split across chunks.';

let upstream: LlmUpstream;
let gw: TestGateway;
let client: OpenAI;
let streamHook: ((info: StreamEventInfo) => Promise<void>) | undefined;

before(async () => {
  upstream = await startLlmUpstream({ openaiKey: OPENAI_SECRET, reply: REPLY, beforeStreamEvent: (info) => streamHook?.(info) });
  gw = await startTestGateway(upstream);
  client = new OpenAI({ baseURL: `${gw.proxy}/openai`, apiKey: gw.adminKey, maxRetries: 0 });
});
after(async () => {
  await gw.stop();
  await upstream.close();
});

const last = <T>(xs: T[]): T => xs[xs.length - 1]!;

function kinds(events: AuditEvent[]): string[] {
  return events.map((e) => e.kind);
}

async function eventsOfLastExchange(): Promise<AuditEvent[]> {
  const all = await gw.allEvents();
  const i = all.map((e) => e.kind).lastIndexOf('http.request');
  return all.slice(i);
}

function assertNoSecretsRecorded(events: AuditEvent[]): void {
  const text = JSON.stringify(events);
  assert.ok(!text.includes(OPENAI_SECRET), 'the upstream secret is never recorded');
  assert.ok(!text.includes(gw.adminKey), 'the client key is never recorded');
}

describe('OpenAI SDK through the gateway', () => {
  it('chat completions: answer, secret swapped, exchange recorded', async () => {
    const r = await client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'What is the answer?' }] });
    assert.equal(r.choices[0]!.message.content, REPLY);
    assert.equal(r.object, 'chat.completion');

    const got = last(upstream.requestsTo('/v1/chat/completions'));
    assert.equal(got.headers.authorization, `Bearer ${OPENAI_SECRET}`, 'upstream gets the connection secret');
    assert.ok(!JSON.stringify(got.headers).includes(gw.adminKey), 'upstream never sees the client key');
    assert.equal(got.headers['x-api-key'], undefined);

    const events = await eventsOfLastExchange();
    assert.deepEqual(kinds(events), ['http.request', 'http.response']);
    const [req, res] = events as [AuditEvent, AuditEvent];
    const rp = req.payload as Record<string, unknown>;
    assert.equal(rp['method'], 'POST');
    assert.equal(rp['path'], '/chat/completions');
    assert.equal(rp['model'], 'gpt-4o');
    assert.equal(rp['actorName'], 'local-admin');
    assert.deepEqual((rp['body'] as { messages: unknown }).messages, [{ role: 'user', content: 'What is the answer?' }]);
    const headers = rp['headers'] as Record<string, string>;
    assert.equal(headers['authorization'], undefined, 'credentials are not recorded');
    assert.ok(headers['user-agent']?.includes('OpenAI'), 'other request headers are recorded');
    const sp = res.payload as { status: number; body: { choices: { message: { content: string } }[] } };
    assert.equal(sp.status, 200);
    assert.equal(sp.body.choices[0]!.message.content, REPLY);
    assert.equal(req.connection, 'openai');
    assert.equal(req.actor, res.actor);
    assertNoSecretsRecorded(await gw.allEvents());

    const sessions = await gw.sessions();
    const session = sessions.find((x) => x.id === req.session)!;
    assert.equal(session.protocol, 'http');
    assert.equal(session.connection, 'openai');
    assert.equal(session.actorName, 'local-admin');
    const first = (await gw.events(session.id))[0]!;
    assert.equal(first.kind, 'session.start');
    const start = first.payload as HttpSessionStart;
    assert.equal(start.client.address, '127.0.0.1');
    assert.equal(start.v, 2);
    assert.equal(start.identity.name, 'local-admin');
    assert.equal(start.identity.via, 'api-key');
    assert.equal(start.upstream.kind, 'openai');
  });

  it('groups exchanges into one session per identity and connection, and starts a new one on x-custody-session', async () => {
    const a = await client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'one' }] });
    const r2 = await client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'two' }] }).withResponse();
    assert.ok(a.id);
    const s1 = r2.response.headers.get('x-custody-session');
    assert.ok(s1);
    const r3 = await client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'three' }] }).withResponse();
    assert.equal(r3.response.headers.get('x-custody-session'), s1, 'same identity + connection → same session');
    const r4 = await client.chat.completions
      .create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'four' }] }, { headers: { 'x-custody-session': 'agent-run-7' } })
      .withResponse();
    const s2 = r4.response.headers.get('x-custody-session');
    assert.ok(s2 && s2 !== s1, 'a client-named session is a session of its own');
    const start = (await gw.events(s2))[0]!;
    assert.equal(start.kind, 'session.start');
    assert.equal((start.payload as HttpSessionStart).v, 2);
    assert.equal((start.payload as HttpSessionStart).client.session, 'agent-run-7');
    assert.equal(upstream.requests.some((r) => r.headers['x-custody-session'] !== undefined), false, 'the session header stays at the gateway');
  });

  it('streaming chat completions: every delta arrives, the gateway does not buffer, chunks are recorded with offsets', async () => {
    let sawFirst!: () => void;
    const firstSeen = new Promise<void>((r) => (sawFirst = r));
    let lastHeldUntilFirstSeen: boolean | undefined;
    streamHook = async ({ index, total, path }) => {
      if (!path.includes('chat/completions') || index !== total - 1) return;
      // Hold the stand-in's last event until the client has seen the first delta: a gateway that
      // buffered the response would never deliver it, and this would time out instead.
      lastHeldUntilFirstSeen = await Promise.race([firstSeen.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 5000))]);
    };
    try {
      const stream = await client.chat.completions.create({ model: 'gpt-4o', stream: true, stream_options: { include_usage: true }, messages: [{ role: 'user', content: 'stream please' }] });
      const deltas: string[] = [];
      let usage: unknown;
      for await (const chunk of stream) {
        const d = chunk.choices[0]?.delta?.content;
        if (d) {
          deltas.push(d);
          sawFirst();
        }
        if (chunk.usage) usage = chunk.usage;
      }
      assert.deepEqual(deltas, deltasOf(REPLY), 'each delta arrives as the upstream sent it');
      assert.ok(usage, 'the usage chunk arrives');
      assert.equal(lastHeldUntilFirstSeen, true, 'the first delta reached the client before the upstream sent the last event');
    } finally {
      streamHook = undefined;
    }
    const events = await eventually(async () => {
      const ev = await eventsOfLastExchange();
      return ev.some((e) => e.kind === 'http.chunk' && (e.payload as { done?: boolean }).done) ? ev : undefined;
    }, 'the final stream chunk to be recorded');
    assert.equal(events[0]!.kind, 'http.request');
    assert.equal((events[0]!.payload as { stream: boolean }).stream, true);
    const response = events.find((e) => e.kind === 'http.response')!;
    assert.equal((response.payload as { stream: boolean; status: number }).stream, true);
    const chunks = events.filter((e) => e.kind === 'http.chunk');
    const recorded = chunks.flatMap((c) => (c.payload as { events: { data: string }[] }).events);
    assert.equal(last(recorded).data, '[DONE]');
    const text = recorded
      .filter((e) => e.data !== '[DONE]')
      .map((e) => (JSON.parse(e.data) as { choices: { delta: { content?: string } }[] }).choices[0]?.delta.content ?? '')
      .join('');
    assert.equal(text, REPLY, 'the recorded chunks hold the whole answer');
    const offsets = recorded.map((e) => (e as unknown as { offset: number }).offset);
    assert.ok(offsets.every((o) => typeof o === 'number' && o >= 0), 'every recorded event has its own time offset');
    assert.deepEqual([...offsets].sort((a, b) => a - b), offsets, 'offsets never go backwards');
    assert.ok(chunks.length - 1 < recorded.length, 'events relayed close together share a recorded chunk');
    assertNoSecretsRecorded(events);
  });

  it('Responses API, not streamed', async () => {
    const r = await client.responses.create({ model: 'gpt-4o', input: 'Say hello', instructions: 'Be brief' });
    assert.equal(r.output_text, REPLY);
    assert.equal(r.status, 'completed');
    const events = await eventsOfLastExchange();
    const req = events[0]!.payload as { path: string; body: { input: string } };
    assert.equal(req.path, '/responses');
    assert.equal(req.body.input, 'Say hello');
    assert.equal((events[1]!.payload as { body: { id: string } }).body.id, r.id);
  });

  it('Responses API, streamed: deltas and lifecycle events all arrive', async () => {
    const stream = await client.responses.create({ model: 'gpt-4o', input: 'Say hello', stream: true });
    const types: string[] = [];
    let text = '';
    let completed: OpenAI.Responses.Response | undefined;
    for await (const ev of stream) {
      types.push(ev.type);
      if (ev.type === 'response.output_text.delta') text += ev.delta;
      if (ev.type === 'response.completed') completed = ev.response;
    }
    assert.equal(text, REPLY);
    assert.equal(types[0], 'response.created');
    for (const t of ['response.in_progress', 'response.output_item.added', 'response.content_part.added', 'response.output_text.done', 'response.output_item.done'])
      assert.ok(types.includes(t), `${t} arrives`);
    assert.equal(last(types), 'response.completed');
    assert.equal(completed?.status, 'completed');
    const events = await eventually(async () => {
      const ev = await eventsOfLastExchange();
      return ev.some((e) => (e.payload as { done?: boolean }).done) ? ev : undefined;
    }, 'the stream to be recorded');
    const names = events.filter((e) => e.kind === 'http.chunk').flatMap((c) => (c.payload as { events: { event?: string }[] }).events.map((e) => e.event));
    assert.deepEqual(names, types, 'the recording keeps every named event in order');
  });

  it('embeddings: the SDK default (base64) passes through unchanged and decodes to the same floats', async () => {
    const r = await client.embeddings.create({ model: 'text-embedding-3-small', input: ['alpha', 'beta'] });
    const got = last(upstream.requestsTo('/v1/embeddings'));
    assert.equal((got.json as { encoding_format: string }).encoding_format, 'base64');
    assert.equal(r.data.length, 2);
    assert.deepEqual(r.data[0]!.embedding, fakeEmbedding('alpha'));
    assert.deepEqual(r.data[1]!.embedding, fakeEmbedding('beta'));
    const floats = await client.embeddings.create({ model: 'text-embedding-3-small', input: 'gamma', encoding_format: 'float' });
    assert.deepEqual(floats.data[0]!.embedding, fakeEmbedding('gamma'));
    const events = await eventsOfLastExchange();
    assert.equal((events[0]!.payload as { body: { input: string } }).body.input, 'gamma');
  });

  it('GET requests and query strings are forwarded', async () => {
    const models = await client.models.list();
    assert.ok(models.data.some((m) => m.id === 'gpt-4o'));
    const r = await fetch(`${gw.proxy}/openai/models?limit=2&after=x`, { headers: { authorization: `Bearer ${gw.adminKey}` } });
    assert.equal(r.status, 200);
    assert.equal(last(upstream.requestsTo('/v1/models')).path, '/v1/models?limit=2&after=x');
  });
});
