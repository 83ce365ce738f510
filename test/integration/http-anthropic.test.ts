/**
 * The official Anthropic SDK through the gateway: messages and streamed messages, with the key sent
 * as `Authorization: Bearer` (current SDKs) and as `x-api-key` (older clients). The upstream must
 * get `x-api-key: <connection secret>` and no Authorization header either way.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';
import type { AuditEvent } from '../../shared/events';
import { deltasOf, type LlmUpstream, startLlmUpstream } from '../support/llm-upstream';
import { ANTHROPIC_SECRET, eventually, startTestGateway, type TestGateway } from './http-harness';

const REPLY = 'Claude says hi — naïve café ☕ and 日本語 text.';
const MODEL = 'claude-opus-4-6';

let upstream: LlmUpstream;
let gw: TestGateway;

before(async () => {
  upstream = await startLlmUpstream({ anthropicKey: ANTHROPIC_SECRET, reply: REPLY, fragmentBytes: 5 });
  gw = await startTestGateway(upstream);
});
after(async () => {
  await gw.stop();
  await upstream.close();
});

const styles = {
  bearer: () => new Anthropic({ baseURL: `${gw.proxy}/anthropic`, apiKey: gw.adminKey, maxRetries: 0 }),
  'x-api-key': () => new Anthropic({ baseURL: `${gw.proxy}/anthropic`, apiKey: null, defaultHeaders: { 'x-api-key': gw.adminKey }, maxRetries: 0 }),
};

function lastUpstreamRequest() {
  const r = upstream.requestsTo('/v1/messages');
  return r[r.length - 1]!;
}

function assertUpstreamGotSecret(clientStyle: string): void {
  const got = lastUpstreamRequest();
  assert.equal(got.headers['x-api-key'], ANTHROPIC_SECRET, `${clientStyle}: upstream gets x-api-key with the connection secret`);
  assert.equal(got.headers.authorization, undefined, `${clientStyle}: the client's Authorization header is dropped`);
  assert.match(String(got.headers['anthropic-version']), /^\d{4}-\d{2}-\d{2}$/, 'provider headers (anthropic-version) pass through');
}

describe('Anthropic SDK through the gateway', () => {
  for (const [style, make] of Object.entries(styles)) {
    it(`messages (${style})`, async () => {
      const client = make();
      const m = await client.messages.create({ model: MODEL, max_tokens: 256, system: 'Be kind', messages: [{ role: 'user', content: 'Hello Claude' }] });
      assert.equal(m.type, 'message');
      assert.deepEqual(m.content, [{ type: 'text', text: REPLY }]);
      assertUpstreamGotSecret(style);
      const all = await gw.allEvents();
      const i = all.map((e) => e.kind).lastIndexOf('http.request');
      const [req, res] = all.slice(i) as [AuditEvent, AuditEvent];
      const rp = req.payload as { path: string; model: string; body: { system: string }; headers: Record<string, string> };
      assert.equal(rp.path, '/v1/messages');
      assert.equal(rp.model, MODEL);
      assert.equal(rp.body.system, 'Be kind');
      assert.equal(rp.headers['x-api-key'], undefined);
      assert.equal(rp.headers['authorization'], undefined);
      assert.equal((res.payload as { body: { content: { text: string }[] } }).body.content[0]!.text, REPLY);
      const text = JSON.stringify(all);
      assert.ok(!text.includes(ANTHROPIC_SECRET) && !text.includes(gw.adminKey), 'no credential in the log');
    });

    it(`streaming messages (${style}): events arrive in order, text intact across split UTF-8`, async () => {
      const client = make();
      const stream = client.messages.stream({ model: MODEL, max_tokens: 256, messages: [{ role: 'user', content: 'Stream to me' }] });
      const types: string[] = [];
      const deltas: string[] = [];
      for await (const ev of stream) {
        types.push(ev.type);
        if (ev.type === 'content_block_delta' && ev.delta.type === 'text_delta') deltas.push(ev.delta.text);
      }
      const final = await stream.finalMessage();
      assert.deepEqual(deltas, deltasOf(REPLY));
      assert.equal((final.content[0] as { text: string }).text, REPLY);
      assert.equal(types[0], 'message_start');
      assert.equal(types[types.length - 1], 'message_stop');
      assert.ok(types.includes('message_delta'));
      assertUpstreamGotSecret(style);
      const chunks = await eventually(async () => {
        const all = await gw.allEvents();
        const i = all.map((e) => e.kind).lastIndexOf('http.request');
        const ex = all.slice(i);
        return ex.some((e) => (e.payload as { done?: boolean }).done) ? ex.filter((e) => e.kind === 'http.chunk') : undefined;
      }, 'the stream to be recorded');
      const names = chunks.flatMap((c) => (c.payload as { events: { event: string }[] }).events.map((e) => e.event));
      assert.deepEqual(names.filter((n) => n !== 'ping'), types, 'every named event is recorded, in order');
      assert.ok(names.includes('ping'), 'ping events are relayed and recorded too');
    });
  }

  it('tool use streams input_json_delta through unchanged', async () => {
    const client = styles.bearer();
    const stream = client.messages.stream({
      model: MODEL,
      max_tokens: 256,
      tools: [{ name: 'search', description: 'search the web', input_schema: { type: 'object', properties: { query: { type: 'string' } } } }],
      messages: [{ role: 'user', content: 'look it up' }],
    });
    const final = await stream.finalMessage();
    assert.equal(final.stop_reason, 'tool_use');
    assert.deepEqual((final.content[0] as { input: unknown }).input, { query: REPLY });
  });

  it('an upstream error passes through with its status and body unchanged', async () => {
    const client = styles.bearer();
    await assert.rejects(
      client.messages.create({ model: MODEL, messages: [{ role: 'user', content: 'no max_tokens' }] } as unknown as Anthropic.MessageCreateParamsNonStreaming),
      (err: InstanceType<typeof Anthropic.APIError>) => {
        assert.equal(err.status, 400);
        assert.equal((err.error as { error: { message: string } }).error.message, 'max_tokens: Field required');
        assert.equal(err.headers?.get('x-custody-error'), null, 'an upstream error is not marked as the gateway’s');
        return true;
      },
    );
  });

  it('refuses a bad key with an Anthropic-shaped 401', async () => {
    const client = new Anthropic({ baseURL: `${gw.proxy}/anthropic`, apiKey: 'cst_aaaaaaaaaaaa_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb', maxRetries: 0 });
    await assert.rejects(client.messages.create({ model: MODEL, max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] }), (err: InstanceType<typeof Anthropic.APIError>) => {
      assert.ok(err instanceof Anthropic.AuthenticationError);
      assert.deepEqual(Object.keys(err.error as object).sort(), ['error', 'type']);
      assert.equal((err.error as { type: string }).type, 'error');
      assert.equal((err.error as { error: { type: string } }).error.type, 'authentication_error');
      assert.match((err.error as { error: { message: string } }).error.message, /not valid/);
      return true;
    });
  });
});
