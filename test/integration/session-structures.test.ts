// Nothing kept per session outlives its session. HTTP exchanges (plain, streamed, abandoned by the
// client mid-stream) and PostgreSQL sessions (plain, a Parse with no Sync and a disconnect, a
// client killed mid-query) go through a gateway; once they have ended, a heap snapshot of this
// process must hold none of the gateway's per-exchange and per-session objects, and the store's
// per-session maps must be empty. The same snapshot taken while they are open must find them, so
// the test cannot pass by looking for names that no longer exist.
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { createConnection } from 'node:net';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeHeapSnapshot } from 'node:v8';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { Config } from '../../shared/config';
import { Gateway } from '../../proxy/gateway';
import { silentLogger } from '../../proxy/log';
import { type LlmUpstream, startLlmUpstream } from '../support/llm-upstream';
import { UPSTREAM } from './pg-harness';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/** The gateway's per-exchange and per-session classes, by constructor name. */
const PER_SESSION = ['Exchange', 'PgProxySession'];

function liveObjects(dir: string): Record<string, number> {
  gc();
  gc();
  const file = writeHeapSnapshot(join(dir, `${Date.now()}.heapsnapshot`));
  try {
    const snap = JSON.parse(readFileSync(file, 'utf8')) as { snapshot: { meta: { node_fields: string[]; node_types: [string[]] } }; nodes: number[]; strings: string[] };
    const nf = snap.snapshot.meta.node_fields.length;
    const types = snap.snapshot.meta.node_types[0];
    const out: Record<string, number> = Object.fromEntries(PER_SESSION.map((n) => [n, 0]));
    for (let i = 0; i < snap.nodes.length; i += nf) {
      if (types[snap.nodes[i]!] !== 'object') continue;
      const name = snap.strings[snap.nodes[i + 1]!]!;
      if (name in out) out[name]!++;
    }
    return out;
  } finally {
    if (process.env['KEEP_SNAPSHOT']) console.log('snapshot', file); else rmSync(file, { force: true });
  }
}

/** One chat completion on a connection of its own (closed after), optionally abandoned after the first bytes. */
function exchange(http: string, key: string, label: string, opts: { stream?: boolean; abandon?: boolean } = {}): Promise<void> {
  const [host, port] = [http.slice(0, http.lastIndexOf(':')), Number(http.slice(http.lastIndexOf(':') + 1))];
  return new Promise((resolve) => {
    const req = request({ host, port, method: 'POST', path: '/openai/chat/completions', agent: false, headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', 'x-custody-session': label } }, (res) => {
      res.once('data', () => {
        if (opts.abandon) req.destroy();
      });
      res.on('end', resolve);
      res.on('close', resolve);
      res.resume();
    });
    req.on('error', () => resolve());
    req.end(JSON.stringify({ model: 'gpt-4o', stream: !!opts.stream, messages: [{ role: 'user', content: label }] }));
  });
}

describe('per-session structures', () => {
  let upstream: LlmUpstream;
  let gw: Gateway;
  let dataDir: string;
  let holdStream: (() => void) | undefined;

  before(async () => {
    upstream = await startLlmUpstream({
      openaiKey: 'sk-leak-structures',
      record: false,
      beforeStreamEvent: (info) => {
        if (info.index !== 1 || !JSON.stringify(info.request.json).includes('held')) return;
        return new Promise<void>((r) => (holdStream = r));
      },
    });
    dataDir = mkdtempSync(join(tmpdir(), 'custody-structures-'));
    gw = await Gateway.start({
      config: Config.parse({
        listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
        limits: { sessionIdle: '1s' },
        connections: [
          { name: 'openai', kind: 'openai', upstream: `${upstream.url}/v1`, secret: { value: 'sk-leak-structures' } },
          { name: 'warehouse', kind: 'postgres', upstream: UPSTREAM, listen: '127.0.0.1:0' },
        ],
      }),
      dataDir,
      log: silentLogger,
    });
  });
  after(async () => {
    holdStream?.();
    await gw?.stop();
    await upstream?.close();
    if (!process.env['KEEP_SNAPSHOT']) rmSync(dataDir, { recursive: true, force: true });
  });

  it('none outlives its session: exchanges, PostgreSQL sessions, the store\'s session maps', async () => {
    const http = gw.address('http');
    const key = gw.firstKey!;
    const pgAddress = gw.address('postgres:warehouse');
    const pgPort = Number(pgAddress.slice(pgAddress.lastIndexOf(':') + 1));
    const client = () => {
      const c = new pg.Client({ host: '127.0.0.1', port: pgPort, user: 'me', password: key, database: 'postgres' });
      c.on('error', () => {});
      return c;
    };

    // Open: one exchange whose stream is held, one PostgreSQL session.
    const held = exchange(http, key, 'held', { stream: true });
    const open = client();
    await open.connect();
    for (let i = 0; i < 100 && !holdStream; i++) await new Promise((r) => setTimeout(r, 20));
    assert.ok(holdStream, 'the held stream started');
    const during = liveObjects(dataDir);
    for (const name of PER_SESSION) assert.ok(during[name]! >= 1, `${name} objects are found while their sessions are open (${JSON.stringify(during)})`);
    holdStream!();
    await held;
    await open.end();

    // Many sessions of every kind, then all of them over.
    for (let round = 0; round < 5; round++) {
      const jobs: Promise<unknown>[] = [];
      for (let i = 0; i < 6; i++) {
        jobs.push(exchange(http, key, `r${round}-${i}`, { stream: i % 2 === 0 }));
        jobs.push(exchange(http, key, `a${round}-${i}`, { stream: true, abandon: true }));
      }
      jobs.push(
        (async () => {
          const c = client();
          await c.connect();
          await c.query('select 1');
          await c.end();
        })(),
      );
      jobs.push(
        (async () => {
          // A Parse with no Sync, then the client goes.
          const c = client();
          await c.connect();
          const socket = (c as unknown as { connection: { stream: import('node:net').Socket } }).connection.stream;
          const sql = Buffer.from('select 1\0');
          const parse = Buffer.alloc(1 + 4 + 1 + sql.length + 2);
          parse.write('P', 0);
          parse.writeInt32BE(4 + 1 + sql.length + 2, 1);
          sql.copy(parse, 6);
          socket.write(parse);
          socket.destroy();
        })(),
      );
      jobs.push(
        (async () => {
          // Killed mid-query.
          const c = client();
          await c.connect();
          const q = c.query('select pg_sleep(5)').catch(() => {});
          await new Promise((r) => setTimeout(r, 100));
          (c as unknown as { connection: { stream: import('node:net').Socket } }).connection.stream.destroy();
          await q;
        })(),
      );
      await Promise.all(jobs);
    }
    // A raw TCP client that connects and vanishes before the startup message.
    await new Promise<void>((resolve) => {
      const s = createConnection(pgPort, '127.0.0.1', () => s.destroy());
      s.on('close', () => resolve());
    });

    // Sessions end: PostgreSQL ones with their connections, HTTP ones after limits.sessionIdle (1 s).
    const pgListener = gw.listeners.find((l) => l.name === 'postgres:warehouse') as unknown as { sessions: number };
    for (let i = 0; i < 200 && pgListener.sessions > 0; i++) await new Promise((r) => setTimeout(r, 25));
    assert.equal(pgListener.sessions, 0, 'every PostgreSQL session has ended');
    await new Promise((r) => setTimeout(r, 3500));
    const store = gw.services.store;
    assert.equal(store.liveSessionCount, 0, 'no session summary is kept after its session ended');
    assert.equal(store.recentSessionCount, 0, 'no session is still noted as recently appended to');
    const afterwards = liveObjects(dataDir);
    assert.deepEqual(afterwards, Object.fromEntries(PER_SESSION.map((n) => [n, 0])), 'nothing per exchange or per session is still alive');
  });
});
