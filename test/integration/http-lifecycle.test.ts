/**
 * The proxy's life around the exchanges: compressed bodies in both directions, sessions that end
 * after an idle gap, live control-plane messages, draining in-flight streams on shutdown, and a
 * gateway that refuses to start on an invalid config.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as zlib from 'node:zlib';
import { gzipSync } from 'node:zlib';
import OpenAI from 'openai';
import type { ServerMessage } from '../../shared/messages';
import { type Compression, deltasOf, type LlmUpstream, type LlmUpstreamOptions, startLlmUpstream } from '../support/llm-upstream';
import { tempDir } from '../support/tmp';
import { eventually, OPENAI_SECRET, startTestGateway, type TestGateway } from './http-harness';

const REPLY = 'Compressed — but every byte arrives: ✓ ümlauts and 🎉.';

describe('compressed bodies', () => {
  const options: LlmUpstreamOptions = { openaiKey: OPENAI_SECRET, reply: REPLY };
  let upstream: LlmUpstream;
  let gw: TestGateway;
  let client: OpenAI;
  before(async () => {
    upstream = await startLlmUpstream(options);
    gw = await startTestGateway(upstream);
    client = new OpenAI({ baseURL: `${gw.proxy}/openai`, apiKey: gw.adminKey, maxRetries: 0 });
  });
  after(async () => {
    await gw.stop();
    await upstream.close();
  });

  for (const encoding of ['gzip', 'br', 'deflate'] as Compression[]) {
    it(`${encoding} responses reach the client decoded with a correct length, and are recorded readable`, async () => {
      options.compress = encoding;
      try {
        const raw = await fetch(`${gw.proxy}/openai/chat/completions`, {
          method: 'POST',
          headers: { authorization: `Bearer ${gw.adminKey}`, 'content-type': 'application/json', 'accept-encoding': 'identity' },
          body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }),
        });
        assert.equal(raw.headers.get('content-encoding'), null, 'the gateway sends the body decoded');
        const text = await raw.text();
        assert.equal(Number(raw.headers.get('content-length')), Buffer.byteLength(text), 'content-length matches the decoded body');
        assert.equal((JSON.parse(text) as { choices: { message: { content: string } }[] }).choices[0]!.message.content, REPLY);

        const stream = await client.chat.completions.create({ model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 'hi' }] });
        const deltas: string[] = [];
        for await (const c of stream) if (c.choices[0]?.delta?.content) deltas.push(c.choices[0].delta.content);
        assert.deepEqual(deltas, deltasOf(REPLY), `a ${encoding} stream arrives event by event`);

        const all = await gw.allEvents();
        const responses = all.filter((e) => e.kind === 'http.response').slice(-2);
        assert.equal((responses[0]!.payload as { body: { choices: { message: { content: string } }[] } }).body.choices[0]!.message.content, REPLY);
        assert.equal((responses[0]!.payload as { headers: Record<string, string> }).headers['content-encoding'], encoding, 'the recording says how it arrived');
      } finally {
        options.compress = undefined;
      }
    });
  }

  it('the gateway asks upstreams for uncompressed bodies', () => {
    assert.ok(upstream.requests.every((r) => r.headers['accept-encoding'] === 'identity'));
  });

  it('a gzip-compressed request body is decoded, recorded and forwarded', async () => {
    const body = gzipSync(JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'zipped question' }] }));
    const r = await fetch(`${gw.proxy}/openai/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${gw.adminKey}`, 'content-type': 'application/json', 'content-encoding': 'gzip' },
      body,
    });
    assert.equal(r.status, 200);
    const got = upstream.requestsTo('/v1/chat/completions').pop()!;
    assert.equal(got.headers['content-encoding'], undefined);
    assert.equal((got.json as { messages: { content: string }[] }).messages[0]!.content, 'zipped question');
    const req = (await gw.allEvents()).filter((e) => e.kind === 'http.request').pop()!;
    assert.equal((req.payload as { body: { messages: { content: string }[] } }).body.messages[0]!.content, 'zipped question');
  });

  it('an unsupported request encoding is refused with 415', async () => {
    const r = await fetch(`${gw.proxy}/openai/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${gw.adminKey}`, 'content-type': 'application/json', 'content-encoding': 'compress' },
      body: 'whatever',
    });
    assert.equal(r.status, 415);
    assert.equal(((await r.json()) as { error: { code: string } }).error.code, 'unsupported_encoding');
  });

  it('a zstd request is decoded and inspected where the runtime has zstd, and refused with 415 naming the runtime where it has not', async () => {
    const compress = (zlib as unknown as { zstdCompressSync?: (b: Buffer) => Buffer }).zstdCompressSync;
    const json = Buffer.from(JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'zstd question' }] }));
    const r = await fetch(`${gw.proxy}/openai/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${gw.adminKey}`, 'content-type': 'application/json', 'content-encoding': 'zstd' },
      // Where the runtime cannot compress zstd either, any bytes will do: they are refused before decoding.
      body: compress ? compress(json) : Buffer.from([0x28, 0xb5, 0x2f, 0xfd]),
    });
    if (compress) {
      assert.equal(r.status, 200, await r.clone().text());
      return;
    }
    assert.equal(r.status, 415);
    const body = (await r.json()) as { error: { code: string; message: string } };
    assert.equal(body.error.code, 'unsupported_encoding');
    assert.match(body.error.message, /zstd.*this runtime \(Node/);
  });
});

describe('sessions and live messages', () => {
  let upstream: LlmUpstream;
  let gw: TestGateway;
  let client: OpenAI;
  before(async () => {
    upstream = await startLlmUpstream({ openaiKey: OPENAI_SECRET });
    gw = await startTestGateway(upstream, { limits: { maxRequestBytes: 1 << 20, maxResponseBytes: 1 << 20, sessionIdle: '300ms', recordRows: 50 } });
    client = new OpenAI({ baseURL: `${gw.proxy}/openai`, apiKey: gw.adminKey, maxRetries: 0 });
  });
  after(async () => {
    await gw.stop();
    await upstream.close();
  });

  it('publishes session.started and session.event on the control-plane bus', async () => {
    const seen: ServerMessage[] = [];
    const off = gw.gw.services.bus.subscribe((m) => seen.push(m));
    const responded = () => seen.some((m) => m.type === 'session.event' && m.event.kind === 'http.response');
    try {
      await client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] });
      // The response is recorded after the client has it.
      await eventually(responded, 'the http.response event', 2000);
    } finally {
      off();
    }
    const started = seen.find((m) => m.type === 'session.started');
    assert.ok(started && started.type === 'session.started');
    assert.equal(started.session.connection, 'openai');
    assert.equal(started.session.protocol, 'http');
    const kinds = seen.flatMap((m) => (m.type === 'session.event' ? [m.event.kind] : []));
    assert.deepEqual(kinds, ['session.start', 'http.request', 'http.response']);
  });

  it('starts a new session after the idle gap and ends the old one', async () => {
    const a = await client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'one' }] }).withResponse();
    await new Promise((r) => setTimeout(r, 450));
    const b = await client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'two' }] }).withResponse();
    const first = a.response.headers.get('x-custody-session')!;
    const second = b.response.headers.get('x-custody-session')!;
    assert.notEqual(first, second);
    const s1 = await gw.api<{ endedAt: number | null }>(`/api/sessions/${first}`);
    assert.ok(s1.endedAt, 'the idle session is marked ended');
    // the sweeper also ends sessions nobody comes back to
    await eventually(async () => (await gw.api<{ endedAt: number | null }>(`/api/sessions/${second}`)).endedAt, 'the second session to be ended by the sweeper', 4000);
  });
});

describe('shutdown', () => {
  it('drains an in-flight stream before the gateway stops, and refuses new connections', async () => {
    const upstream = await startLlmUpstream({ openaiKey: OPENAI_SECRET, reply: REPLY, streamDelayMs: 40 });
    const gw = await startTestGateway(upstream);
    try {
      const client = new OpenAI({ baseURL: `${gw.proxy}/openai`, apiKey: gw.adminKey, maxRetries: 0 });
      const stream = await client.chat.completions.create({ model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 'long' }] });
      const iterator = stream[Symbol.asyncIterator]();
      const first = await iterator.next();
      assert.equal(first.done, false);
      let stopped = false;
      const stopping = gw.gw.stop().then(() => (stopped = true));
      await new Promise((r) => setTimeout(r, 50));
      await assert.rejects(fetch(`${gw.proxy}/openai/models`), 'new connections are refused while draining');
      let text = '';
      for (let n = await iterator.next(); !n.done; n = await iterator.next()) text += n.value.choices[0]?.delta?.content ?? '';
      assert.equal(stopped, false, 'stop waits for the stream');
      assert.ok(REPLY.endsWith(text) && text.length > 0, 'the rest of the stream arrives');
      await stopping;
      assert.equal(stopped, true);
    } finally {
      await gw.stop();
      await upstream.close();
    }
  });
});

describe('invalid config', () => {
  const dir = tempDir();
  const run = (file: string, env: Record<string, string> = {}) =>
    spawnSync(process.execPath, ['bin/custody.mjs', 'serve', '--config', file], { encoding: 'utf8', timeout: 30_000, env: { ...process.env, ...env, CUSTODY_LOG: 'silent' } });

  it('exits non-zero naming the file, line and field', () => {
    const file = join(dir, 'bad.yaml');
    writeFileSync(file, `dataDir: ./data\nlisten:\n  http: 127.0.0.1:0\n  control: 127.0.0.1:0\nconnections:\n  - name: openai\n    kind: openai\n    upstream: api.openai.com/v1\n`);
    const r = run(file);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:8: connections\\[0\\]\\.upstream: an HTTP upstream is a URL`));
  });

  it('exits non-zero when a connection secret cannot be read', () => {
    const file = join(dir, 'nosecret.yaml');
    writeFileSync(file, `dataDir: ./data2\nlisten:\n  http: 127.0.0.1:0\n  control: 127.0.0.1:0\nconnections:\n  - name: openai\n    kind: openai\n    upstream: https://api.openai.com/v1\n    secret: { env: CUSTODY_TEST_UNSET_SECRET }\n`);
    const r = run(file);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /connection openai: environment variable CUSTODY_TEST_UNSET_SECRET is not set/);
  });

  it('exits non-zero, naming the connection, when its secret is too short to scrub from responses', () => {
    const file = join(dir, 'shortsecret.yaml');
    writeFileSync(file, `dataDir: ./data3\nlisten:\n  http: 127.0.0.1:0\n  control: 127.0.0.1:0\nconnections:\n  - name: tiny\n    kind: http\n    upstream: http://127.0.0.1:9\n    secret: { value: "abc1234" }\n`);
    const r = run(file);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /connection tiny: its secret is 7 characters long, shorter than the 8 the gateway needs to scrub it from responses/);
  });
});
