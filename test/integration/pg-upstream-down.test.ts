/**
 * The PostgreSQL listener when its upstream server is down or silent: the client gets a FATAL
 * ErrorResponse naming the upstream and why (refused, or no connection within
 * limits.upstreamConnectTimeout), the attempt is recorded (pg.error, phase connect, with the
 * identity), and the listener keeps
 * serving — a client of a healthy upstream on the same gateway is unaffected.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import pg from 'pg';
import { freePort, startStalledListener, stalledListenerAvailable } from '../support/ports';
import { eventsOf, type Harness, startHarness, UPSTREAM } from './pg-harness';

async function login(h: Harness): Promise<unknown> {
  const c = new pg.Client({ host: h.host, port: h.port, user: 'tester', password: h.key, database: 'postgres' });
  c.on('error', () => {});
  try {
    await c.connect();
    return await c.query('select 1 as one');
  } finally {
    await c.end().catch(() => {});
  }
}

const open: Harness[] = [];
after(async () => {
  for (const h of open) await h.close();
});

describe('PostgreSQL listener: upstream down', () => {
  it('refused: FATAL naming the upstream; the listener keeps serving', async () => {
    const port = await freePort();
    const h = await startHarness({ upstream: `postgres://postgres@127.0.0.1:${port}/postgres`, connection: { tls: { mode: 'disable' } } });
    open.push(h);
    for (let i = 0; i < 2; i++) {
      await assert.rejects(login(h), (err: Error & { severity?: string; code?: string }) => {
        assert.equal(err.severity, 'FATAL');
        assert.match(err.message, new RegExp(`upstream warehouse: cannot reach the upstream server 127\\.0\\.0\\.1:${port}: connect ECONNREFUSED`));
        return true;
      });
    }
    await h.idle();
    const recorded = eventsOf(h.store, 'pg.error');
    assert.equal(recorded.length, 2);
    assert.equal(recorded[0]!.actor, recorded[1]!.actor);
    assert.match(recorded[0]!.actor!, /^key:/);
    assert.deepEqual(
      { ...(recorded[0]!.payload as Record<string, unknown>), message: undefined },
      { protocol: 'postgres', fatal: true, phase: 'connect', code: '08004', message: undefined, actorName: 'tester', user: 'tester', client: '127.0.0.1', upstream: { host: '127.0.0.1', port } },
    );
    assert.deepEqual(eventsOf(h.store, 'session.start'), [], 'no session began');
    const healthy = await startHarness({ upstream: UPSTREAM, connection: { tls: { mode: 'disable' } } });
    open.push(healthy);
    assert.deepEqual(((await login(healthy)) as pg.QueryResult).rows, [{ one: 1 }]);
  });

  it('silent: FATAL after limits.upstreamConnectTimeout, not a hang', { skip: stalledListenerAvailable ? false : 'needs python3 to hold a listening socket that never accepts' }, async () => {
    const stalled = await startStalledListener();
    try {
      const h = await startHarness({ upstream: `postgres://postgres@127.0.0.1:${stalled.port}/postgres`, connection: { tls: { mode: 'disable' } }, connectTimeoutMs: 300 });
      open.push(h);
      const t0 = performance.now();
      await assert.rejects(login(h), (err: Error & { severity?: string }) => {
        assert.equal(err.severity, 'FATAL');
        assert.match(err.message, new RegExp(`upstream warehouse: cannot reach the upstream server 127\\.0\\.0\\.1:${stalled.port}: no connection within 300 ms \\(limits\\.upstreamConnectTimeout\\)`));
        return true;
      });
      const waited = performance.now() - t0;
      assert.ok(waited >= 280 && waited < 3000, `answered after ${waited.toFixed(0)} ms`);
      await h.idle();
      assert.match((eventsOf(h.store, 'pg.error')[0]!.payload as { message: string }).message, /no connection within 300 ms/);
    } finally {
      await stalled.close();
    }
  });
});
