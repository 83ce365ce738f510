/**
 * Upstream faults on every relay path (test/fixtures/upstream-faults.txt, one line a fault): bodies
 * that do not decode, bodies cut short, resets before, during and after the headers, broken chunk
 * framing. Each line is played by a raw `net` upstream and read through the gateway three ways —
 * raw HTTP on an OpenAI and an Anthropic connection, and the official OpenAI SDK — asserting what
 * the client saw:
 *   - nothing had reached it: a provider-shaped 502 with a JSON body saying what happened, and the
 *     x-custody-session header;
 *   - bytes had reached it: the connection is cut (the body never completes), or the stream's last
 *     event is an error — never a truncated answer that looks complete, never a 500;
 * and that the failure is in the session's events, and that no upstream connection stays tied to
 * the failed exchange: one whose HTTP framing broke is closed, one whose framing ended cleanly (only
 * its content encoding was bad) may go back to the keep-alive pool, so at most one stays open.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import OpenAI from 'openai';
import type { AuditEvent, HttpSessionStart } from '../../shared/events';
import { type FaultyUpstream, startFaultyUpstream } from '../support/faulty-upstream';
import { eventually, startTestGateway, type TestGateway } from './http-harness';

const SECRET = 'sk-faulty-upstream-0123456789';

interface Fault {
  relay: string;
  fault: string;
  sees: '502' | 'reset' | 'error-event';
  says: string;
}

const FAULTS: Fault[] = readFileSync(join(import.meta.dirname, '..', 'fixtures', 'upstream-faults.txt'), 'utf8')
  .split('\n')
  .filter((l) => l.trim() && !l.startsWith('#'))
  .map((l) => {
    const [relay, fault, sees, ...says] = l.trim().split(/\s+/);
    assert.ok(sees === '502' || sees === 'reset' || sees === 'error-event', `bad corpus line: ${l}`);
    return { relay: relay!, fault: fault!, sees, says: says.join(' ') };
  });

let upstream: FaultyUpstream;
let gw: TestGateway;

before(async () => {
  upstream = await startFaultyUpstream();
  gw = await startTestGateway(upstream, {
    connections: [
      { name: 'openai', kind: 'openai', upstream: `${upstream.url}/v1`, secret: { value: SECRET } },
      { name: 'anthropic', kind: 'anthropic', upstream: upstream.url, secret: { value: SECRET } },
    ],
  });
});
after(async () => {
  await gw.stop();
  await upstream.close();
});

let serial = 0;
/** A fresh id per request: it names the request at the upstream and the session in the log. */
const nextId = (f: Fault, via: string) => `${f.relay}-${f.fault}-${via}-${++serial}`;

const PATHS: Record<string, string> = { openai: '/openai/chat/completions', anthropic: '/anthropic/v1/messages' };
const BODIES: Record<string, string> = {
  openai: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }),
  anthropic: JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] }),
};

interface Seen {
  /** undefined when no response came at all. */
  status?: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  /** The body arrived whole, per its framing. */
  complete: boolean;
}

/** One raw HTTP exchange through the gateway, reporting exactly what the client got. */
function raw(connection: string, f: Fault, id: string): Promise<Seen> {
  return new Promise((resolve) => {
    const req = httpRequest(
      `${gw.proxy}${PATHS[connection]}`,
      {
        method: 'POST',
        agent: false,
        headers: { authorization: `Bearer ${gw.adminKey}`, 'content-type': 'application/json', 'x-fault': `${f.relay} ${f.fault}`, 'x-fault-id': id, 'x-custody-session': id },
      },
      (res) => {
        const parts: Buffer[] = [];
        let done = false;
        const finish = (complete: boolean) => {
          if (done) return;
          done = true;
          resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(parts).toString('utf8'), complete });
        };
        res.on('data', (c: Buffer) => parts.push(c));
        res.on('end', () => finish(res.complete));
        res.on('error', () => finish(false));
        res.on('close', () => finish(res.complete));
      },
    );
    req.on('error', () => resolve({ headers: {}, body: '', complete: false }));
    req.end(BODIES[connection]);
  });
}

async function sessionEvents(id: string): Promise<AuditEvent[]> {
  const start = await eventually(async () => (await gw.allEvents()).find((e) => e.kind === 'session.start' && (e.payload as HttpSessionStart).client.session === id), `the session of ${id}`);
  return gw.events(start.session!);
}

/** The failure is in the session's events: the request, then an upstream_failed error saying what happened. */
async function assertRecorded(f: Fault, id: string): Promise<void> {
  const events = await eventually(async () => {
    const all = await sessionEvents(id);
    return all.some((e) => e.kind === 'http.error') ? all : undefined;
  }, `the http.error of ${id}`);
  const kinds = events.map((e) => e.kind);
  assert.ok(kinds.includes('http.request'), `${id}: ${kinds.join(', ')}`);
  const error = events.find((e) => e.kind === 'http.error')!.payload as { code: string; message: string; status?: number };
  assert.equal(error.code, 'upstream_failed', `${id}: ${JSON.stringify(error)}`);
  assert.match(error.message, new RegExp(f.says, 'i'));
  if (f.sees === '502') {
    assert.equal(error.status, 502, `${id}: recorded as the 502 the client got`);
    assert.ok(!kinds.includes('http.response'), `${id}: no response is recorded as relayed (${kinds.join(', ')})`);
  }
}

/** Faults after which the upstream connection is still in a clean HTTP state (reusable). */
const FRAMING_INTACT = new Set(['bad-gzip', 'bad-br', 'bad-deflate', 'gzip-corrupt-midway', 'gzip-cut-short']);

/** The gateway let go of the upstream connection that carried the fault. */
async function assertReleased(f: Fault, id: string): Promise<void> {
  await eventually(
    () => {
      const used = upstream.sockets.filter((s) => s.id === id);
      const open = upstream.sockets.filter((s) => !s.closed);
      return used.length > 0 && open.length <= 1 && (FRAMING_INTACT.has(f.fault) || used.every((s) => s.closed));
    },
    `the upstream connection of ${id} to be let go (${upstream.sockets.filter((s) => !s.closed).length} open)`,
  );
}

function errorOf(connection: string, json: unknown): { message: string; code?: string } {
  if (connection === 'anthropic') {
    const body = json as { type: string; error: { type: string; message: string } };
    assert.equal(body.type, 'error');
    assert.deepEqual(Object.keys(body.error).sort(), ['message', 'type']);
    return body.error;
  }
  const body = json as { error: { message: string; type: string; param: unknown; code: string } };
  assert.deepEqual(Object.keys(body), ['error']);
  assert.deepEqual(Object.keys(body.error).sort(), ['code', 'message', 'param', 'type']);
  assert.equal(body.error.type, 'server_error');
  assert.equal(body.error.code, 'upstream_failed');
  return body.error;
}

function assertSeen(connection: string, f: Fault, id: string, seen: Seen): void {
  const what = `${connection} ${f.relay} ${f.fault}: got ${seen.status ?? 'no response'} ${seen.complete ? 'complete' : 'incomplete'} ${seen.body.slice(0, 300)}`;
  switch (f.sees) {
    case '502': {
      assert.equal(seen.status, 502, what);
      assert.ok(seen.complete, what);
      assert.match(String(seen.headers['content-type']), /^application\/json/, what);
      assert.equal(seen.headers['x-custody-error'], 'upstream_failed', what);
      assert.match(String(seen.headers['x-custody-session']), /^ses_/, `${what}: x-custody-session`);
      const error = errorOf(connection, JSON.parse(seen.body));
      assert.match(error.message, new RegExp(f.says, 'i'), what);
      assert.match(error.message, new RegExp(`connection ${connection}`), what);
      return;
    }
    case 'reset':
      assert.equal(seen.status, 200, what);
      assert.equal(seen.complete, false, `${what}: a cut body must not look complete`);
      return;
    case 'error-event': {
      assert.equal(seen.status, 200, what);
      assert.match(String(seen.headers['content-type']), /^text\/event-stream/, what);
      assert.match(String(seen.headers['x-custody-session']), /^ses_/, `${what}: x-custody-session`);
      const events = seen.body.split(/\n\n/).filter((e) => e.trim() && !e.startsWith(':'));
      assert.ok(events.length >= 2, `${what}: some events were relayed before the error`);
      const last = events.at(-1)!;
      assert.match(last, /^event: error\n/, what);
      assert.ok(!seen.body.includes('[DONE]'), `${what}: no [DONE]`);
      const error = errorOf(connection, JSON.parse(last.split('\n').find((l) => l.startsWith('data: '))!.slice(6)));
      assert.match(error.message, new RegExp(f.says, 'i'), what);
      return;
    }
  }
}

describe('upstream faults: what a raw HTTP client sees', () => {
  for (const connection of ['openai', 'anthropic']) {
    for (const f of FAULTS) {
      it(`${connection} · ${f.relay} · ${f.fault} → ${f.sees}`, async () => {
        const id = nextId(f, connection);
        const seen = await raw(connection, f, id);
        assert.ok(upstream.requests.has(id), 'the request reached the faulty upstream');
        assertSeen(connection, f, id, seen);
        await assertRecorded(f, id);
        await assertReleased(f, id);
      });
    }
  }
});

describe('upstream faults: what the OpenAI SDK sees', () => {
  const client = () => new OpenAI({ baseURL: `${gw.proxy}/openai`, apiKey: gw.adminKey, maxRetries: 0 });
  for (const f of FAULTS) {
    it(`${f.relay} · ${f.fault} → ${f.sees}`, async () => {
      const id = nextId(f, 'sdk');
      const headers = { 'x-fault': `${f.relay} ${f.fault}`, 'x-fault-id': id, 'x-custody-session': id };
      const params = { model: 'gpt-4o', messages: [{ role: 'user' as const, content: 'hi' }] };
      if (f.relay === 'sse') {
        let chunks = 0;
        await assert.rejects(
          (async () => {
            const stream = await client().chat.completions.create({ ...params, stream: true }, { headers });
            for await (const _ of stream) chunks++;
          })(),
          (err: unknown) => {
            assert.ok(err instanceof OpenAI.APIError, `an APIError, not ${String(err)}`);
            assert.match(err.message, new RegExp(f.says, 'i'));
            if (f.sees === '502') {
              assert.ok(err instanceof OpenAI.InternalServerError);
              assert.equal(err.status, 502);
            } else assert.ok(chunks >= 1, 'the stream had begun');
            return true;
          },
        );
      } else {
        await assert.rejects(client().chat.completions.create(params, { headers }), (err: unknown) => {
          if (f.sees === '502') {
            assert.ok(err instanceof OpenAI.InternalServerError, `InternalServerError, not ${String(err)}`);
            assert.equal(err.status, 502);
            assert.equal(err.code, 'upstream_failed');
            assert.match(err.message, new RegExp(f.says, 'i'));
            assert.match(err.headers.get('x-custody-session') ?? '', /^ses_/);
          }
          return true; // reset: any failure, as long as no completion is returned
        });
      }
      await assertRecorded(f, id);
      await assertReleased(f, id);
    });
  }
});

describe('the faulty upstream, behaving', () => {
  for (const relay of ['length', 'large', 'chunked', 'sse']) {
    it(`${relay} · ok → the whole answer`, async () => {
      const f: Fault = { relay, fault: 'ok', sees: '502', says: '' };
      const seen = await raw('openai', f, nextId(f, 'ok'));
      assert.equal(seen.status, 200);
      assert.ok(seen.complete);
      if (relay === 'sse') assert.match(seen.body, /data: \[DONE\]\n\n$/);
      else assert.equal((JSON.parse(seen.body) as { object: string }).object, 'chat.completion');
    });
  }
});
