/**
 * One reading of every body, whatever the headers say (issue 14 item 1, issue 16 item 4): the
 * attempts in test/fixtures/http-requests/bypass.jsonl — other content types, charsets, encodings,
 * duplicate keys, deep nesting, base64 smuggled inside JSON, query strings and headers — sent as raw
 * HTTP. For each, what the stand-in upstream received is checked: a planted card number or e-mail
 * never arrives raw, and a refused request never arrives at all. One line per attempt, so a new
 * attempt is one line to add.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { brotliCompressSync, deflateSync, gzipSync } from 'node:zlib';
import { type LlmUpstream, startLlmUpstream } from '../support/llm-upstream';
import { ANTHROPIC_SECRET, eventually, OPENAI_SECRET, standardConnections, startTestGateway, type TestGateway, VECTOR_SECRET } from './http-harness';

interface Attempt {
  name: string;
  gateway?: 'masking' | 'passthrough' | 'plain' | 'denying';
  connection: string;
  path: string;
  method?: string;
  contentType?: string;
  headers?: Record<string, string>;
  json?: unknown;
  text?: string;
  utf16?: unknown;
  base64?: string;
  nested?: number;
  bomb?: number;
  encoding?: 'gzip' | 'deflate' | 'br' | 'zstd' | 'compress';
  /** multipart/form-data parts, each with text or base64 content. */
  multipart?: { name: string; filename?: string; contentType?: string; headers?: string; text?: string; base64?: string }[];
  expect: 'forwarded' | number;
  code?: string;
  message?: string;
}

const ATTEMPTS = readFileSync(join(import.meta.dirname, '../fixtures/http-requests/bypass.jsonl'), 'utf8')
  .split('\n')
  .filter((l) => l.trim())
  .map((l) => JSON.parse(l) as Attempt);
const BOUNDARY = 'custody-test-boundary';
const RAW = [/4111[ -]?1111[ -]?1111[ -]?1111/, /jane\.doe@example\.com/];

function bodyOf(a: Attempt): Buffer | undefined {
  let b: Buffer | undefined;
  if (a.json !== undefined) b = Buffer.from(JSON.stringify(a.json));
  else if (a.text !== undefined) b = Buffer.from(a.text);
  else if (a.utf16 !== undefined) b = Buffer.from(typeof a.utf16 === 'string' ? a.utf16 : JSON.stringify(a.utf16), 'utf16le');
  else if (a.base64 !== undefined) b = Buffer.from(a.base64, 'base64');
  else if (a.nested !== undefined) b = Buffer.from(`${'['.repeat(a.nested)}"4111 1111 1111 1111"${']'.repeat(a.nested)}`);
  else if (a.bomb !== undefined) return gzipSync(Buffer.alloc(a.bomb, 0x20));
  else if (a.multipart) {
    const parts = a.multipart.map((p) => {
      const head = `content-disposition: form-data; name="${p.name}"${p.filename ? `; filename="${p.filename}"` : ''}${p.contentType ? `\r\ncontent-type: ${p.contentType}` : ''}${p.headers ? `\r\n${p.headers}` : ''}`;
      return Buffer.concat([Buffer.from(`--${BOUNDARY}\r\n${head}\r\n\r\n`), p.base64 !== undefined ? Buffer.from(p.base64, 'base64') : Buffer.from(p.text ?? ''), Buffer.from('\r\n')]);
    });
    b = Buffer.concat([...parts, Buffer.from(`--${BOUNDARY}--\r\n`)]);
  }
  if (!b) return undefined;
  switch (a.encoding) {
    case 'gzip':
      return gzipSync(b);
    case 'deflate':
      return deflateSync(b);
    case 'br':
      return brotliCompressSync(b);
    default:
      return b;
  }
}

/** Raw HTTP, so that no client library fixes up what the attempt sends. */
function send(gw: TestGateway, a: Attempt): Promise<{ status: number; error: string | undefined; text: string }> {
  const body = bodyOf(a);
  const headers: Record<string, string | number> = { ...(a.connection === 'anthropic' ? { 'x-api-key': gw.adminKey } : { authorization: `Bearer ${gw.adminKey}` }), ...a.headers };
  if (a.contentType) headers['content-type'] = a.contentType;
  else if (a.multipart) headers['content-type'] = `multipart/form-data; boundary=${BOUNDARY}`;
  if (a.encoding || a.bomb) headers['content-encoding'] = a.encoding ?? 'gzip';
  if (body) headers['content-length'] = body.length;
  return new Promise((resolve, reject) => {
    const req = request(`${gw.proxy}/${a.connection}${a.path}`, { method: a.method ?? (body ? 'POST' : 'GET'), headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, error: res.headers['x-custody-error'] as string | undefined, text: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

function seenBy(upstream: LlmUpstream, from: number): string[] {
  return upstream.requests.slice(from).map((r) => {
    const text = `${r.path}\n${JSON.stringify(r.headers)}\n${r.body.toString('utf8')}`;
    let decoded = '';
    try {
      decoded = decodeURIComponent(text.replace(/\+/g, ' '));
    } catch {
      // not URL-encoded
    }
    return `${text}\n${decoded}`;
  });
}

let upstream: LlmUpstream;
const gateways: Record<string, TestGateway> = {};

before(async () => {
  upstream = await startLlmUpstream({ openaiKey: OPENAI_SECRET, anthropicKey: ANTHROPIC_SECRET, vectorKey: VECTOR_SECRET });
  const masking = [{ id: 'pii', detectors: ['credit_card', 'email'], scope: ['upstream', 'client', 'log'] as ('upstream' | 'client' | 'log')[] }];
  gateways['masking'] = await startTestGateway(upstream, { masking });
  gateways['passthrough'] = await startTestGateway(upstream, {
    masking,
    connections: standardConnections(upstream.url)!.map((c) => ({ ...c, passthroughTypes: ['image/*'] })),
  });
  gateways['plain'] = await startTestGateway(upstream);
  gateways['denying'] = await startTestGateway(upstream, {
    policies: [
      { name: 'no-cards', match: { detectors: ['credit_card'] }, action: 'deny', reason: 'card numbers may not reach a model' },
      { name: 'no-exfiltration', match: { content: '(?i)exfiltrate' }, action: 'deny' },
      { name: 'no-old-model', match: { model: ['gpt-3.5-turbo'] }, action: 'deny', reason: 'model not approved' },
    ],
  });
});
after(async () => {
  for (const gw of Object.values(gateways)) await gw.stop();
  await upstream.close();
});

describe('one reading of every request body', () => {
  for (const a of ATTEMPTS) {
    it(`${a.name} → ${a.expect === 'forwarded' ? 'forwarded with nothing raw' : `${a.expect} ${a.code}`}`, async () => {
      const gw = gateways[a.gateway ?? 'masking']!;
      const from = upstream.requests.length;
      const r = await send(gw, a);
      const seen = seenBy(upstream, from);
      if (a.expect === 'forwarded') {
        assert.equal(r.error, undefined, `the gateway refused it: ${r.status} ${r.text}`);
        assert.equal(seen.length, 1, 'forwarded once');
        if (a.gateway !== 'plain') for (const re of RAW) assert.doesNotMatch(seen[0]!, re, 'nothing raw reaches the upstream');
      } else {
        assert.equal(r.status, a.expect, r.text);
        assert.equal(r.error, a.code, r.text);
        if (a.message) assert.match(r.text, new RegExp(a.message));
        assert.equal(seen.length, 0, 'nothing forwarded');
      }
    });
  }

  it('what the upstream got is the gateway’s own JSON, whatever the client labelled it', async () => {
    const gw = gateways['plain']!;
    const from = upstream.requests.length;
    const a: Attempt = { name: '', connection: 'openai', path: '/chat/completions', contentType: 'image/png', text: '{ "model" : "gpt-4o", "messages" : [ ] }', expect: 'forwarded' };
    await send(gw, a);
    const got = upstream.requests[from]!;
    assert.equal(got.body.toString(), '{"model":"gpt-4o","messages":[]}');
    assert.equal(got.headers['content-type'], 'application/json');
    assert.equal(got.headers['content-length'], String(got.body.length));
  });

  it('on an http connection the masked JSON keeps the client’s Content-Type; with nothing to inspect the bytes go as sent', async () => {
    const a: Attempt = { name: '', connection: 'vectors', path: '/collections/docs/query', contentType: 'application/vnd.api+json', text: '{ "q" : "4111 1111 1111 1111" }', expect: 'forwarded' };
    let from = upstream.requests.length;
    await send(gateways['masking']!, a);
    assert.equal(upstream.requests[from]!.headers['content-type'], 'application/vnd.api+json');
    assert.equal(upstream.requests[from]!.body.toString(), '{"q":"[CREDIT_CARD]"}');
    from = upstream.requests.length;
    await send(gateways['plain']!, a);
    assert.equal(upstream.requests[from]!.body.toString(), a.text);
  });

  it('a masked JSONL upload reaches the upstream as multipart it can split, one JSON request per line', async () => {
    const a = ATTEMPTS.find((x) => x.name.startsWith('Files: batch input JSONL'))!;
    const from = upstream.requests.length;
    await send(gateways['masking']!, a);
    const got = upstream.requests[from]!;
    const text = got.body.toString();
    assert.equal(got.headers['content-length'], String(got.body.length));
    const parts = text.split(`--${BOUNDARY}`);
    assert.equal(parts.length, 4, 'purpose, file, and the closing delimiter');
    assert.equal(parts[3], '--\r\n');
    const file = parts[2]!.slice(parts[2]!.indexOf('\r\n\r\n') + 4, -2);
    const lines = file.trim().split('\n').map((l) => JSON.parse(l) as { custom_id: string; body: { messages: { content: string }[] } });
    assert.deepEqual(
      lines.map((l) => [l.custom_id, l.body.messages[0]!.content]),
      [0, 1, 2].map((i) => [`r${i}`, `charge [CREDIT_CARD] #${i}`]),
    );
  });

  it('a body too deep to read is refused, said so and recorded', async () => {
    const gw = gateways['masking']!;
    const r = await send(gw, { name: '', connection: 'anthropic', path: '/v1/messages', nested: 10_000, expect: 400 });
    assert.equal(r.status, 400);
    const body = JSON.parse(r.text) as { type: string; error: { type: string; message: string } };
    assert.equal(body.type, 'error', 'Anthropic-shaped');
    assert.equal(body.error.type, 'invalid_request_error');
    assert.match(body.error.message, /nested deeper than the gateway's limit of 128 levels/);
    await eventually(
      () => gw.gw.services.store.events(1, 100_000).find((e) => e.kind === 'http.error' && (e.payload as { code?: string; path?: string }).path === '/v1/messages' && /128 levels/.test((e.payload as { message: string }).message)),
      'the refusal to be recorded',
    );
  });
});
