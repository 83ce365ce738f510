/**
 * The console's reads of sessions and recordings share the proxies' thread, so they must not wait
 * on the commit thread there (issue 16, item 2): a read waits for what was journaled before it to
 * be folded into the database asynchronously, and still sees it. Checked with a fold that takes the
 * commit thread a long while (large, incompressible payloads): while the console lists sessions and
 * reads a recording, a timer on the gateway's thread keeps firing on time, and the answers hold the
 * session recorded just before.
 */
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type { AuditEventInput, SessionSummary } from '../../shared/events';
import { startTestGateway, type TestGateway } from './http-harness';

/** The longest gap between ticks of a 5 ms interval on this thread while `work` runs. */
async function longestStall<T>(work: () => Promise<T>): Promise<{ result: T; stallMs: number }> {
  let last = performance.now();
  let stallMs = 0;
  const tick = setInterval(() => {
    const now = performance.now();
    stallMs = Math.max(stallMs, now - last);
    last = now;
  }, 5);
  try {
    const result = await work();
    return { result, stallMs };
  } finally {
    clearInterval(tick);
  }
}

describe('console reads do not hold the gateway thread while the commit thread folds', () => {
  let gw: TestGateway;
  before(async () => {
    gw = await startTestGateway({ url: 'http://127.0.0.1:9' });
  });
  after(async () => {
    await gw.stop();
  });

  /** Journals a new session with `n` requests in it (large and incompressible: `heavy`); resolves once journaled. */
  function journalSession(n: number, heavy = true): Promise<string> {
    const session = `S-heavy-${randomUUID()}`;
    const inputs: AuditEventInput[] = [
      { kind: 'session.start', session, actor: 'load', connection: 'vectors', payload: { v: 2, protocol: 'http', actorName: 'load', identity: { subject: 'load', name: 'load', groups: [], via: 'key' }, client: { address: '127.0.0.1', port: 1 }, upstream: { kind: 'http', host: '127.0.0.1', port: 9, tls: false } } as never },
    ];
    for (let i = 0; i < n; i++) inputs.push({ kind: 'http.request', session, actor: 'load', connection: 'vectors', payload: { method: 'POST', path: '/x', headers: {}, bytes: 0, actorName: 'load', body: randomBytes(heavy ? 768 * 1024 : 64).toString('base64'), bodyEncoding: 'text' } as never });
    const store = gw.gw.services.store;
    return new Promise((resolve, reject) => store.appendAsync(inputs, (err) => (err ? reject(err) : resolve(session))));
  }

  const get = async <T>(path: string): Promise<T> => {
    const r = await fetch(`${gw.control}${path}`, { headers: { authorization: `Bearer ${gw.adminKey}` } });
    assert.equal(r.status, 200, `${path}: ${r.status}`);
    return (await r.json()) as T;
  };

  it('lists sessions without stalling, and the list holds the session just journaled', async () => {
    const session = await journalSession(40);
    const { result, stallMs } = await longestStall(() => get<{ sessions: SessionSummary[] }>('/api/sessions?limit=1000'));
    assert.ok(result.sessions.some((s) => s.id === session), 'the session journaled before the read is listed');
    assert.ok(stallMs < 150, `the gateway's thread stalled ${stallMs.toFixed(0)} ms during the read`);
  });

  it('reads a recording without stalling, and it holds every event journaled before', async () => {
    // A small session journaled behind a heavy one: its read waits for both to be folded.
    await journalSession(40);
    const session = await journalSession(40, false);
    const { result, stallMs } = await longestStall(() => get<{ events: { kind: string }[] }>(`/api/sessions/${session}/events`));
    assert.equal(result.events.length, 41);
    assert.ok(stallMs < 150, `the gateway's thread stalled ${stallMs.toFixed(0)} ms during the read`);
  });

  it('computes the dashboard without stalling, counting what was journaled before', async () => {
    const before = await get<{ totals: { requests: number } }>('/api/dashboard');
    await journalSession(40);
    const { result, stallMs } = await longestStall(() => get<{ totals: { requests: number } }>('/api/dashboard'));
    assert.equal(result.totals.requests, before.totals.requests + 40);
    assert.ok(stallMs < 150, `the gateway's thread stalled ${stallMs.toFixed(0)} ms during the read`);
  });
});
