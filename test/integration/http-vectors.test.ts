/**
 * A generic `http` connection in front of a vector-store-shaped JSON API: any path, method and
 * query pass through; the client's key is swapped for `Authorization: Bearer <secret>`; JSON bodies
 * are recorded parsed; non-JSON bodies are recorded as text; upstream errors pass through.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { AuditEvent } from '../../shared/events';
import { type LlmUpstream, startLlmUpstream } from '../support/llm-upstream';
import { startTestGateway, type TestGateway, VECTOR_SECRET } from './http-harness';

let upstream: LlmUpstream;
let gw: TestGateway;
let call: (method: string, path: string, body?: unknown, headers?: Record<string, string>) => Promise<{ status: number; json: unknown; headers: Headers }>;

before(async () => {
  upstream = await startLlmUpstream({ vectorKey: VECTOR_SECRET });
  gw = await startTestGateway(upstream);
  call = async (method, path, body, headers = {}) => {
    const r = await fetch(`${gw.proxy}/vectors${path}`, {
      method,
      headers: { authorization: `Bearer ${gw.adminKey}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    return { status: r.status, json: await r.json(), headers: r.headers };
  };
});
after(async () => {
  await gw.stop();
  await upstream.close();
});

async function lastExchange(): Promise<AuditEvent[]> {
  const all = await gw.allEvents();
  return all.slice(all.map((e) => e.kind).lastIndexOf('http.request'));
}

describe('generic HTTP connection (vector store)', () => {
  it('upserts and queries through the gateway with the connection secret', async () => {
    const up = await call('PUT', '/collections/docs/points', {
      points: [
        { id: 1, vector: [1, 0, 0], payload: { text: 'refund policy' } },
        { id: 2, vector: [0, 1, 0], payload: { text: 'shipping times' } },
        { id: 3, vector: [0.9, 0.1, 0], payload: { text: 'returns' } },
      ],
    });
    assert.equal(up.status, 200);
    const q = await call('POST', '/collections/docs/query?consistency=strong', { vector: [1, 0, 0], limit: 2 });
    assert.equal(q.status, 200);
    const result = (q.json as { result: { id: number; payload: { text: string } }[] }).result;
    assert.deepEqual(
      result.map((r) => r.id),
      [1, 3],
    );
    const got = upstream.requestsTo('/vectors/collections/docs/query')[0]!;
    assert.equal(got.path, '/vectors/collections/docs/query?consistency=strong');
    assert.equal(got.headers.authorization, `Bearer ${VECTOR_SECRET}`);
    assert.ok(!JSON.stringify(got.headers).includes(gw.adminKey));

    const [req, res] = (await lastExchange()) as [AuditEvent, AuditEvent];
    const rp = req.payload as { method: string; path: string; query: string; body: { vector: number[] } };
    assert.equal(rp.method, 'POST');
    assert.equal(rp.path, '/collections/docs/query');
    assert.equal(rp.query, 'consistency=strong');
    assert.deepEqual(rp.body.vector, [1, 0, 0]);
    assert.deepEqual((res.payload as { body: unknown }).body, q.json);
    assert.equal(req.connection, 'vectors');
  });

  it('passes upstream errors through unchanged', async () => {
    const r = await call('POST', '/collections/missing/query', { vector: [1] });
    assert.equal(r.status, 404);
    assert.deepEqual(r.json, { status: { error: 'Collection missing not found' }, time: 0 });
    assert.equal(r.headers.get('x-custody-error'), null);
  });

  it('forwards a malformed JSON body on a generic connection and lets the upstream judge it', async () => {
    const r = await call('PUT', '/collections/docs/points', '{"points": [', { 'content-type': 'application/json' });
    assert.equal(r.status, 400, 'the stand-in answers 400');
    const [req] = await lastExchange();
    assert.equal((req!.payload as { body: string; bodyEncoding: string }).body, '{"points": [');
    assert.equal((req!.payload as { bodyEncoding: string }).bodyEncoding, 'text');
  });

  it('HEAD keeps the upstream’s content-length and sends no body', async () => {
    const r = await fetch(`${gw.proxy}/vectors/collections/docs/nothing-here`, { method: 'HEAD', headers: { authorization: `Bearer ${gw.adminKey}` } });
    assert.equal(r.status, 404);
    const expected = JSON.stringify({ status: { error: 'no route HEAD /vectors/collections/docs/nothing-here' }, time: 0 }).length;
    assert.equal(r.headers.get('content-length'), String(expected));
    assert.equal((await r.arrayBuffer()).byteLength, 0);
  });

  it('serves GET with no body', async () => {
    const r = await call('GET', '/collections/docs');
    assert.equal(r.status, 200);
    assert.deepEqual((r.json as { result: unknown }).result, { name: 'docs', points: 3 });
    const got = upstream.requestsTo('/vectors/collections/docs').filter((x) => x.method === 'GET')[0]!;
    assert.equal(got.body.length, 0);
    assert.equal(got.headers['content-length'], undefined, 'no content-length invented for a bodiless GET');
  });
});
