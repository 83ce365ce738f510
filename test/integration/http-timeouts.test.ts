/**
 * Upstreams that go quiet: one that never answers, a stream that stops midway, and one that never
 * accepts the TCP connection. The gateway gives up after limits.upstreamIdleTimeout /
 * limits.upstreamConnectTimeout with a provider-shaped 504 `upstream_timeout` (an error event when
 * the stream had begun), records it, and drops its side of the upstream connection; a stream that
 * keeps sending, however slowly, is never cut.
 */
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import type { AuditEvent } from '../../shared/events';
import { startStalledListener, stalledListenerAvailable } from '../support/ports';
import { eventually, startTestGateway, type TestGateway } from './http-harness';

const SECRET = 'sk-timeouts-upstream-0123456789';
const IDLE_MS = 300;

/** What the quiet upstream saw: requests that arrived and whether their connection was closed. */
const arrived: { path: string; closed: boolean }[] = [];

function chunk(content: string): string {
  return `data: ${JSON.stringify({ id: 'chatcmpl-q', object: 'chat.completion.chunk', created: 1, model: 'gpt-4o', choices: [{ index: 0, delta: { content }, finish_reason: null }] })}\n\n`;
}

function quietUpstream(req: IncomingMessage, res: ServerResponse): void {
  const seen = { path: req.url ?? '', closed: false };
  arrived.push(seen);
  res.on('close', () => (seen.closed = true));
  req.resume();
  req.on('end', () => {
    if (req.url!.startsWith('/silent/')) return; // never answers
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    if (req.url!.startsWith('/stalls/')) {
      res.write(chunk('Hel')); // then nothing, for ever
      return;
    }
    // /steady/: an event every IDLE_MS / 3, for twice the idle timeout, then the end.
    const words = ['One ', 'two ', 'three ', 'four ', 'five ', 'six.'];
    let i = 0;
    const timer = setInterval(() => {
      if (i < words.length) res.write(chunk(words[i++]!));
      else {
        clearInterval(timer);
        res.end('data: [DONE]\n\n');
      }
    }, IDLE_MS / 3);
    res.on('close', () => clearInterval(timer));
  });
}

let server: Server;
let gw: TestGateway;
let stalled: Awaited<ReturnType<typeof startStalledListener>> | undefined;

before(async () => {
  server = createServer(quietUpstream);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  if (stalledListenerAvailable) stalled = await startStalledListener();
  gw = await startTestGateway(
    { url },
    {
      connections: [
        { name: 'silent', kind: 'openai', upstream: `${url}/silent/v1`, secret: { value: SECRET } },
        { name: 'claude-silent', kind: 'anthropic', upstream: `${url}/silent`, secret: { value: SECRET } },
        { name: 'stalls', kind: 'openai', upstream: `${url}/stalls/v1`, secret: { value: SECRET } },
        { name: 'steady', kind: 'openai', upstream: `${url}/steady/v1`, secret: { value: SECRET } },
        { name: 'unreachable', kind: 'openai', upstream: `http://127.0.0.1:${stalled?.port ?? 9}/v1`, secret: { value: SECRET } },
      ],
      limits: { upstreamIdleTimeout: `${IDLE_MS}ms`, upstreamConnectTimeout: `${IDLE_MS}ms` },
    },
  );
});

after(async () => {
  await gw.stop();
  await stalled?.close();
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

const openai = (connection: string) => new OpenAI({ baseURL: `${gw.proxy}/${connection}`, apiKey: gw.adminKey, maxRetries: 0 });
const ask = { model: 'gpt-4o', messages: [{ role: 'user' as const, content: 'Count to six.' }] };

async function lastError(connection: string): Promise<AuditEvent & { payload: { code: string; status?: number; phase: string; message: string } }> {
  return eventually(async () => (await gw.allEvents()).filter((e) => e.kind === 'http.error' && e.connection === connection).pop(), `the http.error of ${connection}`) as never;
}

describe('HTTP proxy: upstream timeouts', () => {
  it('an upstream that never answers → 504 upstream_timeout after limits.upstreamIdleTimeout; recorded; its connection dropped', async () => {
    const t0 = performance.now();
    await assert.rejects(openai('silent').chat.completions.create(ask), (err: unknown) => {
      assert.ok(err instanceof OpenAI.APIError);
      assert.equal(err.status, 504);
      assert.equal(err.code, 'upstream_timeout');
      assert.match(err.message, /connection silent: the upstream http:\/\/127\.0\.0\.1:\d+ timed out \(the upstream sent nothing for 300ms \(limits\.upstreamIdleTimeout\)\)/);
      return true;
    });
    const waited = performance.now() - t0;
    assert.ok(waited >= IDLE_MS - 20 && waited < IDLE_MS + 2000, `answered after ${waited.toFixed(0)} ms`);
    const error = await lastError('silent');
    assert.equal(error.payload.code, 'upstream_timeout');
    assert.equal(error.payload.status, 504);
    const events = await gw.events(error.session!);
    assert.ok(events.some((e) => e.kind === 'http.request'), 'the request itself was recorded before it was forwarded');
    await eventually(() => arrived.find((a) => a.path.startsWith('/silent/') && a.closed), 'the gateway to drop the upstream connection');
  });

  it('Anthropic-shaped: 504 with error type timeout_error', async () => {
    const client = new Anthropic({ baseURL: `${gw.proxy}/claude-silent`, apiKey: gw.adminKey, maxRetries: 0 });
    await assert.rejects(client.messages.create({ model: 'claude-sonnet-4-5', max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] }), (err: unknown) => {
      assert.ok(err instanceof Anthropic.APIError);
      assert.equal(err.status, 504);
      assert.equal((err.error as { error: { type: string } }).error.type, 'timeout_error');
      return true;
    });
  });

  it('a stream that stops midway: the client gets what was sent, then an error event; both recorded', async () => {
    const stream = await openai('stalls').chat.completions.create({ ...ask, stream: true });
    const got: string[] = [];
    await assert.rejects(
      (async () => {
        for await (const c of stream) got.push(c.choices[0]?.delta.content ?? '');
      })(),
      (err: unknown) => {
        assert.ok(err instanceof OpenAI.APIError);
        assert.match(err.message, /connection stalls: the upstream stream timed out midway \(the upstream sent nothing for 300ms \(limits\.upstreamIdleTimeout\)\); it was cut off/);
        return true;
      },
    );
    assert.deepEqual(got, ['Hel']);
    const error = await lastError('stalls');
    assert.equal(error.payload.code, 'upstream_timeout');
    assert.equal(error.payload.phase, 'stream');
    const events = await gw.events(error.session!);
    const relayed = events.filter((e) => e.kind === 'http.chunk').flatMap((e) => (e.payload as { events: { data: string }[] }).events);
    assert.equal(relayed.length, 1);
    assert.match(relayed[0]!.data, /"content":"Hel"/);
    await eventually(() => arrived.find((a) => a.path.startsWith('/stalls/') && a.closed), 'the gateway to drop the upstream connection');
  });

  it('a slow stream that keeps sending is not cut, though it lasts longer than the idle timeout', async () => {
    const t0 = performance.now();
    const stream = await openai('steady').chat.completions.create({ ...ask, stream: true });
    let text = '';
    for await (const c of stream) text += c.choices[0]?.delta.content ?? '';
    assert.equal(text, 'One two three four five six.');
    assert.ok(performance.now() - t0 > IDLE_MS * 1.5, 'the stream outlasted the idle timeout');
  });

  it('an upstream that never accepts the connection → 504 after limits.upstreamConnectTimeout', { skip: stalledListenerAvailable ? false : 'needs python3 to hold a listening socket that never accepts' }, async () => {
    const t0 = performance.now();
    await assert.rejects(openai('unreachable').chat.completions.create(ask), (err: unknown) => {
      assert.ok(err instanceof OpenAI.APIError);
      assert.equal(err.status, 504);
      assert.equal(err.code, 'upstream_timeout');
      assert.match(err.message, /connection unreachable: the upstream http:\/\/127\.0\.0\.1:\d+ timed out \(no connection within 300ms \(limits\.upstreamConnectTimeout\)\)/);
      return true;
    });
    const waited = performance.now() - t0;
    assert.ok(waited >= IDLE_MS - 20 && waited < IDLE_MS + 2000, `answered after ${waited.toFixed(0)} ms`);
    assert.equal((await lastError('unreachable')).payload.code, 'upstream_timeout');
  });
});
