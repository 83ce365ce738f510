/**
 * A client that vanishes at any point of an exchange — mid-request body, while its request is
 * held for approval, while the upstream has not answered yet, mid-body, mid-stream — and a
 * control-plane WebSocket subscriber that vanishes: the gateway lets go of everything tied to it
 * at once. Checked from the outside: the stand-in upstream (a raw `net` server) sees its
 * connection closed, and the process's open sockets and timers (process.getActiveResourcesInfo)
 * fall back to what they were before the client came. (The test reads the gateway's state
 * in-process rather than through the control API, so that no HTTP client of its own, with its own
 * keep-alive sockets and timers, muddies the count.)
 */
import assert from 'node:assert/strict';
import { type IncomingMessage, request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import WebSocket from 'ws';
import type { AuditEvent } from '../../shared/events';
import { type FaultyUpstream, startFaultyUpstream } from '../support/faulty-upstream';
import { sqliteOnly } from '../support/pg-store';
import { startStalledListener, stalledListenerAvailable } from '../support/ports';
import { eventually, startTestGateway, type TestGateway } from './http-harness';

const SECRET = 'sk-vanishing-upstream-0123456789';
/** "At once": what the gateway gets to let go of everything, on a shared, busy machine. */
const AT_ONCE_MS = 1000;
/** How long the baseline of open handles is watched for its quietest moment. */
const QUIET_MS = 50;

let upstream: FaultyUpstream;
let gw: TestGateway;
/** A port that never completes a TCP connection (an upstream still connecting). */
let stalled: Awaited<ReturnType<typeof startStalledListener>> | undefined;

before(async () => {
  upstream = await startFaultyUpstream();
  if (stalledListenerAvailable) stalled = await startStalledListener();
  gw = await startTestGateway(upstream, {
    connections: [
      { name: 'openai', kind: 'openai', upstream: `${upstream.url}/v1`, secret: { value: SECRET } },
      { name: 'held', kind: 'openai', upstream: `${upstream.url}/v1`, secret: { value: SECRET } },
      { name: 'connecting', kind: 'openai', upstream: `http://127.0.0.1:${stalled?.port ?? 9}/v1`, secret: { value: SECRET } },
    ],
    policies: [{ name: 'everything-held', match: { connections: ['held'] }, action: 'hold', hold: { approvers: ['nobody'], timeout: '10m' } }],
  });
});
after(async () => {
  await gw.stop();
  await upstream.close();
  await stalled?.close();
});

interface Handles {
  sockets: number;
  timers: number;
}

/** Sockets and timers keeping this process (gateway, upstream and clients alike) alive. */
function handles(): Handles {
  const info = process.getActiveResourcesInfo();
  return { sockets: info.filter((t) => t === 'TCPSocketWrap').length, timers: info.filter((t) => t === 'Timeout').length };
}

/**
 * The sockets and timers open when nothing is in flight: the fewest seen over QUIET_MS. The gateway
 * in this process sets short timers of its own now and then (the journal's gathering, the commit
 * thread's answers), and one caught in the baseline would hide the timer a test looks for.
 */
async function quietHandles(): Promise<Handles> {
  const min = handles();
  for (const t0 = Date.now(); Date.now() - t0 < QUIET_MS; ) {
    await new Promise((r) => setImmediate(r));
    const now = handles();
    min.sockets = Math.min(min.sockets, now.sockets);
    min.timers = Math.min(min.timers, now.timers);
  }
  return min;
}

/** Why the tests that count this process's timers run on a lone gateway only. */
const TIMERS = "they count this process's timers, and a shared store's member sets and clears timers of its own (status, leases, hold sync) at any moment";

/** Waits until the open sockets and timers are back to `baseline`; returns how long that took. */
async function settles(baseline: Handles, what: string): Promise<number> {
  const t0 = Date.now();
  let now = handles();
  while (now.sockets > baseline.sockets || now.timers > baseline.timers) {
    if (Date.now() - t0 > AT_ONCE_MS) assert.fail(`${what}: ${JSON.stringify(now)} open ${AT_ONCE_MS} ms after the client vanished, ${JSON.stringify(baseline)} before it came`);
    await new Promise((r) => setImmediate(r));
    now = handles();
  }
  return Date.now() - t0;
}

/** The upstream connections that carried `id` are all closed within AT_ONCE_MS. */
async function upstreamReleased(id: string): Promise<void> {
  await eventually(
    () => {
      const used = upstream.sockets.filter((s) => s.id === id);
      return used.length > 0 && used.every((s) => s.closed);
    },
    `the upstream connection of ${id} to be closed`,
    AT_ONCE_MS,
  );
}

async function recordedClientClosed(id: string): Promise<AuditEvent> {
  return eventually(() => {
    const all = gw.gw.services.store.events(1, 1_000_000);
    const request = all.find((e) => e.kind === 'http.request' && (e.payload as { headers: Record<string, string> }).headers['x-fault-id'] === id);
    if (!request) return undefined;
    return all.find((e) => e.session === request.session && e.seq > request.seq && e.kind === 'http.error' && (e.payload as { code: string }).code === 'client_closed');
  }, `client_closed recorded for ${id}`);
}

let serial = 0;

/** Sends a request and hands back the live client request and its response once it starts (or never). */
function send(connection: string, fault: string, id: string) {
  const req = httpRequest(`${gw.proxy}/${connection}/chat/completions`, {
    method: 'POST',
    agent: false,
    headers: { authorization: `Bearer ${gw.adminKey}`, 'content-type': 'application/json', 'x-fault': fault, 'x-fault-id': id },
  });
  req.on('error', () => {});
  const response = new Promise<IncomingMessage>((resolve) => req.on('response', resolve));
  req.end(JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }));
  return { req, response };
}

describe('a client that vanishes', () => {
  it('mid-request body: nothing reaches the upstream, nothing stays open', async () => {
    const baseline = await quietHandles();
    const id = `vanish-body-${++serial}`;
    const socketsBefore = upstream.sockets.length;
    const [host, port] = gw.gw.address('http')!.split(':') as [string, string];
    const sock = connect(Number(port), host);
    sock.on('error', () => {});
    await new Promise((r) => sock.once('connect', r));
    sock.write(
      `POST /openai/chat/completions HTTP/1.1\r\nhost: ${host}\r\nauthorization: Bearer ${gw.adminKey}\r\ncontent-type: application/json\r\n` +
        `content-length: 10000\r\nx-fault: chunked ok\r\nx-fault-id: ${id}\r\n\r\n{"model": "gpt-4o", "messages": [`,
    );
    await new Promise((r) => setTimeout(r, 100));
    sock.destroy();
    await settles(baseline, 'mid-request body');
    assert.equal(upstream.sockets.length, socketsBefore, 'no upstream connection was opened');
    assert.ok(!upstream.requests.has(id));
  });

  it('while held: the hold is cancelled, its timer cleared, the upstream never asked', sqliteOnly(TIMERS), async () => {
    const holds = gw.gw.services.holds;
    const baseline = await quietHandles();
    const id = `vanish-held-${++serial}`;
    const { req } = send('held', 'chunked ok', id);
    const hold = await eventually(() => holds.list({ state: 'pending' }).holds[0], 'the hold');
    assert.ok(handles().timers > baseline.timers, 'the pending hold has a timer (so the test can see it go)');
    req.destroy();
    const cancelled = await eventually(() => (holds.get(hold.id)?.state === 'cancelled' ? holds.get(hold.id) : undefined), 'the hold to be cancelled', AT_ONCE_MS);
    assert.match(cancelled.resolution ?? '', /client disconnected/);
    await settles(baseline, 'while held');
    assert.ok(!upstream.requests.has(id));
  });

  it('while the upstream connection is still being made: its connect timer goes with it', { skip: (!stalledListenerAvailable && 'needs python3 for a listener that never accepts') || sqliteOnly(TIMERS).skip }, async () => {
    const baseline = await quietHandles();
    const id = `vanish-connecting-${++serial}`;
    const { req } = send('connecting', 'chunked ok', id);
    await eventually(() => handles().timers > baseline.timers && handles().sockets >= baseline.sockets + 3, 'the gateway to be connecting upstream (its connect timer set)');
    req.destroy();
    await settles(baseline, 'while connecting');
    await recordedClientClosed(id);
  });

  for (const [name, fault, readFirst] of [
    ['before the upstream answered', 'head silent', false],
    ['mid-body', 'chunked drip', true],
    ['mid-stream', 'sse drip', true],
  ] as const) {
    it(`${name}: the upstream connection is closed, nothing stays open, it is recorded`, async () => {
      const baseline = await quietHandles();
      const id = `vanish-${fault.replace(' ', '-')}-${++serial}`;
      const { req, response } = send('openai', fault, id);
      await eventually(() => upstream.requests.has(id), 'the request to reach the upstream');
      if (readFirst) {
        const res = await response;
        assert.equal(res.statusCode, 200);
        await new Promise((r) => res.once('data', r));
      }
      req.destroy();
      await upstreamReleased(id);
      await settles(baseline, name);
      const error = await recordedClientClosed(id);
      assert.match((error.payload as { message: string }).message, /client disconnected/);
    });
  }
});

describe('a WebSocket subscriber that vanishes', () => {
  it('is dropped with its socket at once, for many at a time', async () => {
    const baseline = await quietHandles();
    const url = `${gw.control.replace(/^http/, 'ws')}/api/events`;
    const sockets = await Promise.all(
      Array.from(
        { length: 20 },
        () =>
          new Promise<WebSocket>((resolve, reject) => {
            const ws = new WebSocket(url, { headers: { authorization: `Bearer ${gw.adminKey}` } });
            ws.once('message', () => resolve(ws));
            ws.once('error', reject);
          }),
      ),
    );
    assert.ok(handles().sockets >= baseline.sockets + 40, 'both ends of each subscriber are open');
    for (const ws of sockets) ws.terminate(); // no closing handshake: the peer is simply gone
    const ms = await settles(baseline, 'WebSocket subscribers');
    assert.ok(ms < AT_ONCE_MS);
  });
});
