// Fault injection: PostgreSQL clients that vanish at every protocol state, against `custody serve`
// in its own process, counting what it holds afterwards from the outside: its open file
// descriptors (/proc/<pid>/fd) and its upstream connections (the server's pg_stat_activity, by
// application_name). The states are data, one line each: test/fixtures/pg-vanish-states.jsonl
// (startup, TLS negotiation and handshake, authentication, mid-pipeline without Sync, mid-COPY IN,
// a running statement, an open transaction, a held statement). After each, everything the
// clients held is released within a few seconds (pg-vanish.test.ts covers the logged-in states
// in-process, with the hold's own fate); the log verifies at the end.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import { buildPasswordMessage, buildSSLRequest, buildStartupMessage } from '../../proxy/postgres/frontend-messages';
import { custody, type CustodyServe, startServe, writeConfig } from '../support/custody-process';
import { adminQuery } from '../support/fault-load';
import { encodeStep, type WireStep } from '../support/pg-wire-client';
import { freePort } from '../support/ports';
import { UPSTREAM, until } from './pg-harness';

type Step = ['startup-half'] | ['ssl'] | ['hello', number] | ['tls'] | ['startup'] | ['password'] | ['password-half'] | ['wire', ...WireStep[]] | ['copy-data', string] | ['backend', string] | ['hold'];
const STATES = readFileSync('test/fixtures/pg-vanish-states.jsonl', 'utf8')
  .split('\n')
  .filter((l) => l.trim())
  .map((l) => JSON.parse(l) as { state: string; steps: Step[] });
const N = 3;

/** A TLS ClientHello as Node's client sends it (captured once from a listener that answers nothing). */
async function captureClientHello(): Promise<Buffer> {
  let server: ReturnType<typeof createServer> | undefined;
  const hello = await new Promise<Buffer>((resolve) => {
    server = createServer((s) => s.once('data', (d: Buffer) => {
      resolve(d);
      s.destroy();
    })).listen(0, '127.0.0.1', () => {
      const { port } = server!.address() as { port: number };
      tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false }).on('error', () => {});
    });
  });
  server!.close();
  return hello;
}

describe('PostgreSQL clients that vanish at every protocol state (custody serve, counted from outside)', () => {
  let gw: CustodyServe;
  let port: number;
  let dataDir: string;
  let hello: Buffer;
  const table = `custody_vanishfd_${randomBytes(4).toString('hex')}`;
  before(async () => {
    hello = await captureClientHello();
    await adminQuery(`CREATE TABLE ${table} (id int); INSERT INTO ${table} SELECT generate_series(1, 3)`);
    dataDir = mkdtempSync(join(tmpdir(), 'custody-vanishfd-'));
    port = await freePort();
    const file = writeConfig(dataDir, {
      dataDir,
      listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
      connections: [{ name: 'warehouse', kind: 'postgres', upstream: UPSTREAM, listen: `127.0.0.1:${port}` }],
      policies: [{ name: 'hold-delete', match: { sql: ['delete', 'delete_without_where'] }, action: 'hold', hold: { approvers: ['dba'], timeout: '1m' } }],
    });
    gw = await startServe(file);
  });
  after(async () => {
    await gw?.stop();
    await adminQuery(`DROP TABLE IF EXISTS ${table}`);
    rmSync(dataDir, { recursive: true, force: true });
  });

  const fds = () => readdirSync(`/proc/${gw.proc.pid}/fd`).length;
  const backends = async (app: string) => Number((await adminQuery(`SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = '${app}'`)).rows[0].n);
  const pendingHolds = async () => ((await (await fetch(`http://${gw.control}/api/holds?state=pending`, { headers: { authorization: `Bearer ${gw.key}` } })).json()) as { total: number }).total;

  /** Reads what the gateway sends until `done` says enough (or it closes). */
  function reader(socket: Socket | ReturnType<typeof tlsConnect>) {
    let got = Buffer.alloc(0);
    let wake: (() => void) | undefined;
    socket.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d]);
      wake?.();
    });
    socket.on('close', () => wake?.());
    socket.on('error', () => {});
    return async (what: string, done: (b: Buffer) => boolean) => {
      const end = Date.now() + 10_000;
      while (!done(got)) {
        if (socket.destroyed || Date.now() > end) throw new Error(`no ${what} (got ${got.length} bytes: ${got.subarray(0, 120).toString('latin1')})`);
        await new Promise<void>((r) => {
          wake = r;
          setTimeout(r, 100);
        });
      }
      const seen = got;
      got = Buffer.alloc(0);
      return seen;
    };
  }

  /** One client taken to a state by `steps`; resolves with its raw socket (to destroy). */
  async function toState(steps: Step[], app: string): Promise<Socket> {
    const raw = connect({ host: '127.0.0.1', port });
    raw.on('error', () => {});
    await new Promise<void>((r, j) => raw.once('connect', r).once('error', j));
    let socket: Socket | ReturnType<typeof tlsConnect> = raw;
    let read = reader(raw);
    const startup = buildStartupMessage({ user: 'vanisher', database: 'postgres', application_name: app });
    const hasMessage = (code: string) => (b: Buffer) => b.includes(Buffer.from(code, 'latin1'));
    for (const step of steps) {
      switch (step[0]) {
        case 'startup-half':
          socket.write(startup.subarray(0, Math.floor(startup.length / 2)));
          break;
        case 'ssl':
          socket.write(buildSSLRequest());
          await read('SSL answer', (b) => b.length >= 1);
          break;
        case 'hello':
          socket.write(hello.subarray(0, Math.ceil(hello.length * step[1])));
          if (step[1] >= 1) await read('ServerHello', (b) => b.length > 5);
          break;
        case 'tls': {
          raw.removeAllListeners('data');
          const t = tlsConnect({ socket: raw, rejectUnauthorized: false });
          await new Promise<void>((r, j) => t.once('secureConnect', r).once('error', j));
          socket = t;
          read = reader(t);
          break;
        }
        case 'startup':
          socket.write(startup);
          await read('password request', (b) => b[0] === 0x52); // 'R'
          break;
        case 'password':
          socket.write(buildPasswordMessage(gw.key!));
          await read('ReadyForQuery', (b) => b.includes(Buffer.from([0x5a, 0, 0, 0, 5])));
          break;
        case 'password-half': {
          const m = buildPasswordMessage(gw.key!);
          socket.write(m.subarray(0, 9));
          break;
        }
        case 'wire':
          socket.write(Buffer.concat((step.slice(1) as WireStep[]).map((s) => encodeStep(s.map((v) => (typeof v === 'string' ? v.replace('$TABLE', table) : v)) as WireStep))));
          if ((step[1] as WireStep)[0] === 'Q' && String((step[1] as WireStep)[1]).startsWith('COPY')) await read('CopyInResponse', hasMessage('G'));
          break;
        case 'copy-data': {
          const data = Buffer.from(step[1]);
          const head = Buffer.alloc(5);
          head.write('d', 0, 'latin1');
          head.writeInt32BE(4 + data.length, 1);
          socket.write(Buffer.concat([head, data]));
          break;
        }
        case 'backend':
          await until(`a backend ${step[1]}`, async () => (Number((await adminQuery(`SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = '${app}' AND state = '${step[1]}'`)).rows[0].n) > 0 ? true : undefined));
          break;
        case 'hold':
          await until('the hold', async () => ((await pendingHolds()) > 0 ? true : undefined));
          break;
      }
    }
    return raw;
  }

  let baseline = 0;
  it('a full session first, then the gateway settles at a baseline of descriptors', async () => {
    // Statements like the states' own, run to the end (the gateway's catalog connection opens with the first).
    const s = await toState([['startup'], ['password'], ['wire', ['Q', `SELECT * FROM ${table}`], ['Q', 'SELECT pg_sleep(0)'], ['P', 's1', 'SELECT 1'], ['B', '', 's1'], ['E', ''], ['S'], ['Q', 'BEGIN; SELECT 1; COMMIT'], ['X']]], 'warmup');
    await new Promise((r) => setTimeout(r, 500));
    s.destroy();
    await new Promise((r) => setTimeout(r, 1500));
    baseline = fds();
    assert.ok(baseline > 0);
  });

  for (const { state, steps } of STATES) {
    it(`${state}: every descriptor and upstream connection released at once`, async () => {
      const app = `vfd_${randomBytes(3).toString('hex')}`;
      const clients: Socket[] = [];
      let started = 0;
      try {
        for (const c of await Promise.all(Array.from({ length: N }, () => toState(steps, app)))) clients.push(c);
        if (steps.some((s) => s[0] === 'password')) assert.equal(await backends(app), N, 'each logged-in client has its upstream connection');
        await until(`the gateway to hold the clients' sockets (${fds()} descriptors, baseline ${baseline})`, () => (fds() >= baseline + N ? true : undefined), 5000);
      } finally {
        started = Date.now();
        for (const c of clients) c.destroy();
      }
      await until('the gateway to close every descriptor the clients held', () => (fds() <= baseline ? true : undefined), 5000).catch(() => {
        throw new Error(`${fds()} descriptors ${Date.now() - started} ms after the clients vanished (baseline ${baseline})`);
      });
      await until('the upstream connections to go', async () => ((await backends(app)) === 0 ? true : undefined), 5000);
      if (steps.some((s) => s[0] === 'hold')) await until('the hold to be cancelled', async () => ((await pendingHolds()) === 0 ? true : undefined), 5000);
      const ms = Date.now() - started;
      assert.ok(ms < 5000, `released after ${ms} ms`);
    });
  }

  it('the DELETE that was held never ran, and the log verifies', async () => {
    assert.equal(Number((await adminQuery(`SELECT count(*) AS n FROM ${table}`)).rows[0].n), 3);
    assert.equal(await gw.stop(), 0);
    const v = custody('verify', dataDir);
    assert.equal(v.status, 0, v.stderr);
  });
});
