/**
 * Bad input and failures at the HTTP proxy: every case gets a clear, provider-shaped answer, loses
 * nothing, and forwards nothing it should not (missing/invalid/expired/revoked keys, unknown
 * connection, oversized bodies, malformed JSON, upstream down, store unwritable, client gone
 * mid-stream, oversized responses, upstream errors passed through).
 */
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { after, before, describe, it } from 'node:test';
import OpenAI from 'openai';
import WebSocket from 'ws';
import type { AuditEvent } from '../../shared/events';
import { DEFAULT_REPLY, deltasOf, type LlmUpstream, type LlmUpstreamOptions, startLlmUpstream } from '../support/llm-upstream';
import { freePort } from '../support/ports';
import { eventually, OPENAI_SECRET, standardConnections, startTestGateway, type TestGateway } from './http-harness';

const upstreamOptions: LlmUpstreamOptions = { openaiKey: OPENAI_SECRET };
let upstream: LlmUpstream;
let gw: TestGateway;
let closedPort: number;

before(async () => {
  upstream = await startLlmUpstream(upstreamOptions);
  closedPort = await freePort();
  gw = await startTestGateway(upstream, {
    connections: [...standardConnections(upstream.url)!, { name: 'down', kind: 'openai', upstream: `http://127.0.0.1:${closedPort}/v1`, secret: { value: 'sk-down-secret-123456' } }],
    limits: { maxRequestBytes: 4096, maxResponseBytes: 64 * 1024, sessionIdle: '15m', recordRows: 50 },
  });
});
after(async () => {
  await gw.stop();
  await upstream.close();
});

interface Answer {
  status: number;
  body: { error?: { message: string; type: string; param: unknown; code: string }; type?: string };
  headers: Headers;
}

async function post(path: string, body: string | undefined, headers: Record<string, string> = {}): Promise<Answer> {
  const r = await fetch(`${gw.proxy}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });
  return { status: r.status, body: (await r.json()) as Answer['body'], headers: r.headers };
}

const chat = JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] });
const asAdmin = () => ({ authorization: `Bearer ${gw.adminKey}` });

function assertOpenAiError(a: Answer, status: number, code: string, message: RegExp): void {
  assert.equal(a.status, status);
  assert.deepEqual(Object.keys(a.body), ['error']);
  assert.deepEqual(Object.keys(a.body.error!).sort(), ['code', 'message', 'param', 'type']);
  assert.equal(a.body.error!.code, code);
  assert.match(a.body.error!.message, message);
  assert.equal(a.headers.get('x-custody-error'), code);
}

describe('HTTP proxy: bad credentials', () => {
  it('missing key → OpenAI-shaped 401, nothing forwarded', async () => {
    const before = upstream.requests.length;
    assertOpenAiError(await post('/openai/chat/completions', chat), 401, 'missing_api_key', /no credential/);
    assert.equal(upstream.requests.length, before);
  });

  it('invalid key → 401 through the SDK (AuthenticationError)', async () => {
    const client = new OpenAI({ baseURL: `${gw.proxy}/openai`, apiKey: 'sk-not-a-custody-key', maxRetries: 0 });
    await assert.rejects(client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] }), (err: unknown) => {
      assert.ok(err instanceof OpenAI.AuthenticationError);
      assert.equal(err.code, 'invalid_api_key');
      assert.match(err.message, /not a Custody API key/);
      return true;
    });
    const unknown = await post('/openai/chat/completions', chat, { authorization: 'Bearer cst_aaaaaaaaaaaa_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb' });
    assertOpenAiError(unknown, 401, 'invalid_api_key', /not valid/);
  });

  it('expired and revoked keys → 401 saying so; the failure is recorded', async () => {
    const keys = gw.gw.services.keys;
    const expired = keys.create({ name: 'old', groups: [], expiresAt: Date.now() - 1000 });
    assertOpenAiError(await post('/openai/chat/completions', chat, { authorization: `Bearer ${expired.key}` }), 401, 'expired_api_key', /expired/);
    const revoked = keys.create({ name: 'gone', groups: [] });
    keys.revoke(revoked.record.id);
    assertOpenAiError(await post('/openai/chat/completions', chat, { 'x-api-key': revoked.key }), 401, 'revoked_api_key', /revoked/);
    const failures = gw.gw.services.store.events(1, 100000).filter((e) => e.kind === 'auth.failure');
    assert.ok(failures.some((e) => (e.payload as { reason: string }).reason === 'expired'));
    assert.ok(failures.some((e) => (e.payload as { reason: string }).reason === 'revoked' && e.connection === 'openai'));
    assert.ok(!JSON.stringify(failures).includes(revoked.key), 'the presented key is not recorded');
  });

  it('aggregates a flood of unauthenticated requests into one summary instead of one event each', async () => {
    const store = gw.gw.services.store;
    const failuresBefore = store.events(1, 1_000_000).filter((e) => e.kind === 'auth.failure').length;
    for (let batch = 0; batch < 10; batch++) {
      const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => post('/openai/chat/completions', chat, { authorization: `Bearer sk-flood-${batch}-${i}` })));
      for (const a of answers) assert.equal(a.status, 401);
    }
    const recorded = store.events(1, 1_000_000).filter((e) => e.kind === 'auth.failure').length - failuresBefore;
    assert.ok(recorded <= 1, `${recorded} auth.failure events for 200 refused requests`);
    gw.gw.services.login.failures.flush(true);
    const summary = store.events(1, 1_000_000).filter((e) => e.kind === 'auth.failures').at(-1)!.payload as { count: number; reasons: Record<string, number> };
    assert.ok(summary.count >= 200, `the summary counts them all (${summary.count})`);
    assert.ok((summary.reasons['malformed'] ?? 0) >= 200);
  });

  it('an Anthropic connection answers in Anthropic’s shape', async () => {
    const a = await post('/anthropic/v1/messages', '{}', { 'x-api-key': 'nope' });
    assert.equal(a.status, 401);
    assert.equal(a.body.type, 'error');
    assert.deepEqual(a.body as unknown, { type: 'error', error: { type: 'authentication_error', message: (a.body as { error: { message: string } }).error.message } });
  });
});

describe('HTTP proxy: bad requests', () => {
  it('unknown connection → 404 naming it', async () => {
    assertOpenAiError(await post('/nosuch/chat/completions', chat, asAdmin()), 404, 'unknown_connection', /no connection named "nosuch"/);
    assertOpenAiError(await post('/', chat, asAdmin()), 404, 'unknown_connection', /no connection in the path/);
  });

  it('dot segments cannot climb out of the upstream base path', async () => {
    // fetch would normalize the path; a raw request sends it as written
    const raw = (path: string) =>
      new Promise<{ status: number; body: { error: { code: string; message: string } } }>((resolve, reject) => {
        const req = httpRequest(`${gw.proxy}/`, { method: 'GET', path, headers: asAdmin() }, (res) => {
          let body = '';
          res.on('data', (c: Buffer) => (body += c.toString()));
          res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(body) as { error: { code: string; message: string } } }));
        });
        req.on('error', reject);
        req.end();
      });
    const before = upstream.requests.length;
    for (const path of ['/openai/../admin', '/openai/v1/%2e%2e/%2E%2E/x', '/openai/x/..%2f..%2fadmin']) {
      const r = await raw(path);
      assert.equal(r.status, 400, path);
      assert.equal(r.body.error.code, 'invalid_path');
      assert.match(r.body.error.message, /climbs above the connection's root|encoded "\/"/);
    }
    assert.equal(upstream.requests.length, before);
  });

  it('body over maxRequestBytes (declared length) → 413, nothing forwarded', async () => {
    const before = upstream.requests.length;
    const big = JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x'.repeat(5000) }] });
    assertOpenAiError(await post('/openai/chat/completions', big, asAdmin()), 413, 'request_too_large', /limit of 4096 bytes/);
    assert.equal(upstream.requests.length, before);
  });

  it('body over maxRequestBytes without a declared length (chunked) → 413 once the bytes are counted', async () => {
    const before = upstream.requests.length;
    const answer = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = httpRequest(`${gw.proxy}/openai/chat/completions`, { method: 'POST', headers: { ...asAdmin(), 'content-type': 'application/json', 'transfer-encoding': 'chunked' } }, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode!, body }));
      });
      req.on('error', reject);
      req.write('{"model":"gpt-4o","messages":[{"role":"user","content":"');
      req.write('y'.repeat(3000));
      req.write('y'.repeat(3000));
      req.end('"}]}');
    });
    assert.equal(answer.status, 413);
    assert.equal((JSON.parse(answer.body) as { error: { code: string } }).error.code, 'request_too_large');
    assert.equal(upstream.requests.length, before);
  });

  it('malformed JSON on an LLM endpoint → 400 in the provider’s shape, nothing forwarded', async () => {
    const before = upstream.requests.length;
    assertOpenAiError(await post('/openai/chat/completions', '{"model": "gpt-4o", ', asAdmin()), 400, 'invalid_json', /not valid JSON/);
    const a = await post('/anthropic/v1/messages', '{oops', asAdmin());
    assert.equal(a.status, 400);
    assert.equal(a.body.type, 'error');
    assert.equal((a.body as { error: { type: string } }).error.type, 'invalid_request_error');
    assert.equal(upstream.requests.length, before);
  });
});

describe('HTTP proxy: failures around the exchange', () => {
  it('a WebSocket upgrade (a realtime API) → 501 saying upgrades are not proxied; recorded, nothing forwarded', async () => {
    const before = upstream.requests.length;
    const ws = new WebSocket(`${gw.proxy.replace('http:', 'ws:')}/openai/realtime?model=gpt-4o-realtime`, { headers: asAdmin() });
    const answer = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      ws.on('open', () => reject(new Error('the upgrade was accepted')));
      ws.on('error', () => {});
      ws.on('unexpected-response', (_req, res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode!, body }));
      });
    });
    ws.terminate();
    assert.equal(answer.status, 501);
    const body = JSON.parse(answer.body) as { error: { code: string; message: string } };
    assert.equal(body.error.code, 'upgrade_unsupported');
    assert.match(body.error.message, /does not proxy protocol upgrades \(Upgrade: websocket\)/);
    assert.equal(upstream.requests.length, before, 'nothing forwarded');
    const error = await eventually(
      () => gw.gw.services.store.events(1, 100_000).find((e) => e.kind === 'http.error' && (e.payload as { code?: string }).code === 'upgrade_unsupported'),
      'the refused upgrade recorded',
    );
    assert.equal(error.actor?.startsWith('key:'), true, 'recorded with who asked');
  });

  it('an HTTP/2 upgrade offer (h2c) is ignored and the request served over HTTP/1.1', async () => {
    const answer = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = httpRequest(`${gw.proxy}/openai/chat/completions`, {
        method: 'POST',
        headers: { ...asAdmin(), 'content-type': 'application/json', connection: 'Upgrade, HTTP2-Settings', upgrade: 'h2c', 'http2-settings': 'AAMAAABkAARAAAAAAAIAAAAA' },
      });
      req.on('response', (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode!, body }));
      });
      req.on('upgrade', () => reject(new Error('the gateway switched protocols')));
      req.on('error', reject);
      req.end(chat);
    });
    assert.equal(answer.status, 200);
    assert.equal((JSON.parse(answer.body) as { choices: { message: { content: string } }[] }).choices[0]!.message.content, DEFAULT_REPLY);
  });

  it('upstream down → 502 naming the connection; recorded as an error', async () => {
    const client = new OpenAI({ baseURL: `${gw.proxy}/down`, apiKey: gw.adminKey, maxRetries: 0 });
    await assert.rejects(client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] }), (err: unknown) => {
      assert.ok(err instanceof OpenAI.InternalServerError);
      assert.equal(err.status, 502);
      assert.match(err.message, new RegExp(`connection down: the upstream http://127.0.0.1:${closedPort} cannot be reached \\(ECONNREFUSED`));
      return true;
    });
    const all = await gw.allEvents();
    const error = all.filter((e) => e.kind === 'http.error' && e.connection === 'down').pop()!;
    assert.equal((error.payload as { code: string }).code, 'upstream_unavailable');
    assert.ok(!JSON.stringify(all).includes('sk-down-secret-123456'));
    // The gateway's own answer names the session it was recorded in, as upstream answers do.
    const raw = await fetch(`${gw.proxy}/down/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${gw.adminKey}`, 'content-type': 'application/json' }, body: '{"model":"gpt-4o","messages":[{"role":"user","content":"x"}]}' });
    assert.equal(raw.status, 502);
    const session = raw.headers.get('x-custody-session');
    assert.ok(session, 'a 502 from the gateway carries x-custody-session');
    assert.ok((await gw.allEvents()).some((e) => e.kind === 'http.error' && e.session === session));
  });

  it('store unwritable (a full disk) → 503, and nothing reaches the upstream', async () => {
    const before = upstream.requests.length;
    const store = gw.gw.services.store;
    // The journal is where a request is recorded first; /dev/full answers every write with ENOSPC.
    store.redirectJournal('/dev/full');
    try {
      const client = new OpenAI({ baseURL: `${gw.proxy}/openai`, apiKey: gw.adminKey, maxRetries: 0 });
      await assert.rejects(client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'must not leave' }] }), (err: unknown) => {
        assert.ok(err instanceof OpenAI.APIError);
        assert.equal(err.status, 503);
        assert.equal(err.code, 'store_unavailable');
        assert.match(err.message, /cannot record this request .* not forwarded/);
        return true;
      });
    } finally {
      store.redirectJournal();
    }
    assert.equal(upstream.requests.length, before, 'the stand-in received nothing');
    // and the gateway recovers once the store can write again
    const client = new OpenAI({ baseURL: `${gw.proxy}/openai`, apiKey: gw.adminKey, maxRetries: 0 });
    const r = await client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'now' }] });
    assert.ok(r.choices[0]!.message.content);
  });

  it('a client that disconnects mid-stream aborts the upstream request', async () => {
    upstreamOptions.streamDelayMs = 30;
    try {
      const ac = new AbortController();
      const r = await fetch(`${gw.proxy}/openai/chat/completions`, {
        method: 'POST',
        headers: { ...asAdmin(), 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 'a long answer please' }] }),
        signal: ac.signal,
      });
      assert.equal(r.status, 200);
      const reader = r.body!.getReader();
      const first = await reader.read();
      assert.ok(first.value && first.value.length > 0);
      ac.abort();
      const rec = upstream.requestsTo('/v1/chat/completions').pop()!;
      await eventually(() => rec.aborted, 'the upstream request to be aborted');
      const total = deltasOf(DEFAULT_REPLY).length + 3; // role chunk + deltas + finish chunk + [DONE]
      assert.ok(rec.eventsSent < total, `the stand-in stopped early (${rec.eventsSent} events sent)`);
      const error = await eventually(async () => (await gw.allEvents()).filter((e: AuditEvent) => e.kind === 'http.error').find((e) => (e.payload as { code: string }).code === 'client_closed'), 'the disconnect to be recorded');
      assert.equal((error.payload as { phase: string }).phase, 'stream');
    } finally {
      upstreamOptions.streamDelayMs = 0;
    }
  });

  it('upstream errors (status, headers, body) pass through unchanged', async () => {
    upstreamOptions.handler = (rec, res) => {
      if (!rec.path.includes('chat/completions')) return false;
      res.writeHead(429, { 'content-type': 'application/json', 'retry-after': '7', 'x-ratelimit-remaining-requests': '0' });
      res.end(JSON.stringify({ error: { message: 'Rate limit reached for gpt-4o', type: 'requests', param: null, code: 'rate_limit_exceeded' } }));
      return true;
    };
    try {
      const client = new OpenAI({ baseURL: `${gw.proxy}/openai`, apiKey: gw.adminKey, maxRetries: 0 });
      await assert.rejects(client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] }), (err: unknown) => {
        assert.ok(err instanceof OpenAI.RateLimitError);
        assert.equal(err.code, 'rate_limit_exceeded');
        assert.equal(err.message, '429 Rate limit reached for gpt-4o');
        assert.equal(err.headers?.get('retry-after'), '7');
        assert.equal(err.headers?.get('x-ratelimit-remaining-requests'), '0');
        return true;
      });
    } finally {
      upstreamOptions.handler = undefined;
    }
  });

  it('an upstream that echoes the connection secret has it scrubbed from the client’s answer and the log', async () => {
    upstreamOptions.handler = (rec, res) => {
      if (!rec.path.includes('chat/completions')) return false;
      res.writeHead(401, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { message: `Incorrect API key provided: ${OPENAI_SECRET}`, type: 'invalid_request_error', param: null, code: 'invalid_api_key' } }));
      return true;
    };
    try {
      const a = await post('/openai/chat/completions', chat, asAdmin());
      assert.equal(a.status, 401);
      assert.equal(a.body.error!.message, 'Incorrect API key provided: [REDACTED]');
      assert.ok(!JSON.stringify(await gw.allEvents()).includes(OPENAI_SECRET));
    } finally {
      upstreamOptions.handler = undefined;
    }
  });

  it('a response over maxResponseBytes is refused with a clear error (declared length, chunked, and streamed)', async () => {
    upstreamOptions.handler = (rec, res) => {
      if (rec.path.includes('/big-declared')) {
        const body = Buffer.alloc(70 * 1024, 'a');
        res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length });
        res.end(body);
        return true;
      }
      if (rec.path.includes('/big-chunked')) {
        res.writeHead(200, { 'content-type': 'text/plain' });
        for (let i = 0; i < 10; i++) res.write(Buffer.alloc(10 * 1024, 'b'));
        res.end();
        return true;
      }
      if (rec.path.includes('/big-stream')) {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        for (let i = 0; i < 100; i++) res.write(`data: ${'c'.repeat(1000)}\n\n`);
        res.end();
        return true;
      }
      return false;
    };
    try {
      const declared = await post('/openai/big-declared', '{}', asAdmin());
      assertOpenAiError(declared, 413, 'response_too_large', /upstream response of 71680 bytes exceeds the gateway limit of 65536 bytes/);
      await assert.rejects(
        fetch(`${gw.proxy}/openai/big-chunked`, { method: 'POST', headers: asAdmin(), body: '{}' }).then((r) => r.text()),
        'a chunked response over the limit is cut off, never delivered whole',
      );
      const streamed = await (await fetch(`${gw.proxy}/openai/big-stream`, { method: 'POST', headers: asAdmin(), body: '{}' })).text();
      assert.match(streamed, /event: error\ndata: \{"error":\{"message":"connection openai: the upstream stream exceeds the gateway limit of 65536 bytes/);
      const codes = (await gw.allEvents()).filter((e) => e.kind === 'http.error').map((e) => (e.payload as { code: string }).code);
      assert.ok(codes.filter((c) => c === 'response_too_large').length >= 3);
    } finally {
      upstreamOptions.handler = undefined;
    }
  });
});
