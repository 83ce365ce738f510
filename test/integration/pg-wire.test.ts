/**
 * The PostgreSQL listener at the byte level: startup negotiation (SSLRequest, direct TLS,
 * GSSENCRequest, NegotiateProtocolVersion, CancelRequest) and bad input, each answered with a
 * proper ErrorResponse and a closed connection while the gateway keeps serving others.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import pg from 'pg';
import { parseAuthentication, parseErrorFields } from '../../proxy/postgres/backend-messages';
import { buildBind, buildExecute, buildParse, buildPasswordMessage, buildQuery, buildStartupMessage, buildSync } from '../../proxy/postgres/frontend-messages';
import { MessageBuffer, type RawMessage } from '../../proxy/postgres/message-buffer';
import { BackendCode, StartupCode } from '../../proxy/postgres/message-codes';
import { eventsOf, type Harness, startHarness } from './pg-harness';

/** Sends `chunks` (then half-closes if `end`) and collects everything the gateway answers until it closes. */
function exchange(port: number, chunks: Buffer[], end = false, socket?: Socket, waitMs = 5000): Promise<{ bytes: Buffer; closed: boolean }> {
  return new Promise((resolve, reject) => {
    const s = socket ?? connect({ host: '127.0.0.1', port });
    const got: Buffer[] = [];
    const timer = setTimeout(() => {
      s.destroy();
      resolve({ bytes: Buffer.concat(got), closed: false });
    }, waitMs);
    s.on('data', (d) => got.push(d));
    s.on('error', reject);
    s.on('close', () => {
      clearTimeout(timer);
      resolve({ bytes: Buffer.concat(got), closed: true });
    });
    const send = () => {
      for (const c of chunks) s.write(c);
      if (end) s.end();
    };
    if (socket) send();
    else s.on('connect', send);
  });
}

function messages(bytes: Buffer): RawMessage[] {
  const buf = new MessageBuffer();
  buf.push(bytes);
  const out: RawMessage[] = [];
  for (let m = buf.next(); m; m = buf.next()) out.push(m);
  return out;
}

function fatalOf(bytes: Buffer): Map<string, string> {
  const err = messages(bytes).find((m) => m.code === BackendCode.ErrorResponse);
  assert.ok(err, `expected an ErrorResponse, got ${bytes.toString('hex').slice(0, 80)}`);
  return parseErrorFields(err.body);
}

function startup(params: Record<string, string>, version: number = StartupCode.Protocol3): Buffer {
  const b = buildStartupMessage(params);
  b.writeInt32BE(version, 4);
  return b;
}

async function stillServes(h: Harness): Promise<void> {
  const client = new pg.Client({ host: h.host, port: h.port, user: 'after', password: h.key, database: 'postgres' });
  await client.connect();
  assert.equal((await client.query('select 1 as one')).rows[0].one, 1);
  await client.end();
}

describe('PostgreSQL listener: startup negotiation', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness();
  });
  after(() => h.close());

  it('answers GSSENCRequest with N and then accepts a StartupMessage', async () => {
    const gss = Buffer.alloc(8);
    gss.writeInt32BE(8);
    gss.writeInt32BE(StartupCode.GSSENCRequest, 4);
    const s = connect({ host: '127.0.0.1', port: h.port });
    await new Promise((r) => s.on('connect', r));
    s.write(gss);
    const first = await new Promise<Buffer>((r) => s.once('data', r));
    assert.equal(first.toString(), 'N');
    s.write(startup({ user: 'x', database: 'postgres' }));
    const next = await new Promise<Buffer>((r) => s.once('data', r));
    const auth = messages(next)[0]!;
    assert.equal(auth.code, BackendCode.Authentication);
    assert.deepEqual(parseAuthentication(auth.body), { type: 'cleartext' });
    s.destroy();
  });

  it('negotiates the protocol version down for 3.2 and _pq_ options', async () => {
    const { bytes } = await exchange(h.port, [startup({ user: 'x', '_pq_.compression': 'on' }, (3 << 16) | 2)], false, undefined, 300);
    const [v, r] = messages(bytes);
    assert.equal(v!.code, BackendCode.NegotiateProtocolVersion);
    assert.equal(v!.body.readInt32BE(0), 0, 'newest minor version supported');
    assert.equal(v!.body.readInt32BE(4), 1);
    assert.equal(v!.body.toString('utf8', 8, v!.body.length - 1), '_pq_.compression');
    assert.equal(r!.code, BackendCode.Authentication);
  });

  it('speaks direct TLS (sslnegotiation=direct: ClientHello first, ALPN postgresql)', async () => {
    const t = tlsConnect({ host: '127.0.0.1', port: h.port, rejectUnauthorized: false, ALPNProtocols: ['postgresql'] });
    await new Promise<void>((resolve, reject) => {
      t.on('secureConnect', resolve);
      t.on('error', reject);
    });
    assert.equal(t.alpnProtocol, 'postgresql');
    t.write(startup({ user: 'direct', database: 'postgres' }));
    const got = await new Promise<Buffer>((r) => t.once('data', r));
    assert.deepEqual(parseAuthentication(messages(got)[0]!.body), { type: 'cleartext' });
    t.write(buildPasswordMessage(h.key));
    const buf = new MessageBuffer();
    const ready = await new Promise<RawMessage[]>((resolve) => {
      const all: RawMessage[] = [];
      t.on('data', (d: Buffer) => {
        buf.push(d);
        for (let m = buf.next(); m; m = buf.next()) all.push(m);
        if (all.some((m) => m.code === BackendCode.ReadyForQuery)) resolve(all);
      });
    });
    assert.equal(ready[0]!.code, BackendCode.Authentication);
    assert.ok(ready.some((m) => m.code === BackendCode.BackendKeyData));
    t.destroy();
  });

  it('keeps its self-signed certificate in the data dir across restarts', async () => {
    const cert = new X509Certificate(readFileSync(h.listener.certificateFile!));
    assert.equal(cert.checkIP('127.0.0.1'), '127.0.0.1');
    const t = tlsConnect({ host: '127.0.0.1', port: h.port, ca: readFileSync(h.listener.certificateFile!), ALPNProtocols: ['postgresql'] });
    await new Promise<void>((resolve, reject) => {
      t.on('secureConnect', resolve);
      t.on('error', reject);
    });
    assert.equal(t.authorized, true, 'a client that pins the certificate verifies the listener');
    t.destroy();
  });

  it('refuses unencrypted bytes sent after an SSLRequest (no buffer stuffing)', async () => {
    const ssl = Buffer.alloc(8);
    ssl.writeInt32BE(8);
    ssl.writeInt32BE(StartupCode.SSLRequest, 4);
    const { bytes, closed } = await exchange(h.port, [Buffer.concat([ssl, startup({ user: 'x' })])]);
    assert.equal(closed, true);
    assert.match(fatalOf(bytes).get('M')!, /unencrypted data after SSL request/);
  });

  it('ignores a CancelRequest with a wrong key', async () => {
    const cancel = Buffer.alloc(16);
    cancel.writeInt32BE(16);
    cancel.writeInt32BE(StartupCode.CancelRequest, 4);
    cancel.writeInt32BE(12345, 8);
    cancel.writeInt32BE(99, 12);
    const { bytes, closed } = await exchange(h.port, [cancel]);
    assert.equal(closed, true);
    assert.equal(bytes.length, 0, 'no reply to a CancelRequest, as in PostgreSQL');
    await stillServes(h);
  });
});

describe('PostgreSQL listener: bad input', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness();
  });
  after(() => h.close());

  /** Logs in over a raw socket and returns it ready for queries. */
  async function loggedIn(): Promise<Socket> {
    const s = connect({ host: '127.0.0.1', port: h.port });
    await new Promise((r) => s.on('connect', r));
    s.write(startup({ user: 'raw', database: 'postgres' }));
    await new Promise((r) => s.once('data', r));
    s.write(buildPasswordMessage(h.key));
    const buf = new MessageBuffer();
    await new Promise<void>((resolve) => {
      const onData = (d: Buffer) => {
        buf.push(d);
        for (let m = buf.next(); m; m = buf.next())
          if (m.code === BackendCode.ReadyForQuery) {
            s.off('data', onData);
            resolve();
          }
      };
      s.on('data', onData);
    });
    return s;
  }

  const cases: [string, () => Promise<{ bytes: Buffer; closed: boolean }>, RegExp, string][] = [
    ['garbage bytes (an HTTP request)', () => exchange(h.port, [Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n')]), /invalid startup packet length/, '08P01'],
    ['a startup with no user', () => exchange(h.port, [startup({ database: 'postgres' })]), /no PostgreSQL user name/, '28000'],
    ['protocol version 2', () => exchange(h.port, [startup({ user: 'x' }, 2 << 16)]), /unsupported frontend protocol 2\.0/, '0A000'],
    ['a truncated startup packet', () => exchange(h.port, [startup({ user: 'x', database: 'postgres' }).subarray(0, 12)], true), /incomplete message/, '08P01'],
    ['a wrong password', () => exchange(h.port, [startup({ user: 'x' }), buildPasswordMessage('cst_aaaaaaaaaaaa_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb')]), /password authentication failed for user "x": the API key is not valid/, '28P01'],
    ['a length field of 2 GiB', async () => exchange(h.port, [Buffer.from([0x51, 0x80, 0, 0, 0])], false, await loggedIn()), /exceeds the limit/, '54000'],
    ['an unknown message type', async () => exchange(h.port, [Buffer.from([0x7a, 0, 0, 0, 4])], false, await loggedIn()), /invalid frontend message type 'z'/, '08P01'],
    ['a truncated message at end of stream', async () => exchange(h.port, [buildQuery('select 1').subarray(0, 8)], true, await loggedIn()), /incomplete message/, '08P01'],
    ['a Query whose string is not terminated', async () => exchange(h.port, [Buffer.from([0x51, 0, 0, 0, 7, 0x61, 0x62, 0x63])], false, await loggedIn()), /not terminated/, '08P01'],
  ];
  for (const [name, send, message, code] of cases) {
    it(`answers ${name} with an ErrorResponse and closes; the gateway keeps serving`, async () => {
      const { bytes, closed } = await send();
      assert.equal(closed, true, 'the connection is closed');
      const fields = fatalOf(bytes);
      assert.equal(fields.get('S'), 'FATAL');
      assert.match(fields.get('M')!, message);
      assert.equal(fields.get('C'), code);
      await stillServes(h);
    });
  }
});

describe('PostgreSQL listener: extended protocol on the wire', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness({ policies: [{ name: 'no-truncate', match: { sql: ['truncate'] }, action: 'deny', reason: 'no truncation' }] });
  });
  after(() => h.close());

  async function session(): Promise<{ send(b: Buffer[]): Promise<RawMessage[]>; close(): void }> {
    const s = connect({ host: '127.0.0.1', port: h.port });
    await new Promise((r) => s.on('connect', r));
    const buf = new MessageBuffer();
    let waiter: ((m: RawMessage[]) => void) | null = null;
    let got: RawMessage[] = [];
    s.on('data', (d: Buffer) => {
      buf.push(d);
      for (let m = buf.next(); m; m = buf.next()) {
        got.push(m);
        if (m.code === BackendCode.ReadyForQuery && waiter) {
          const w = waiter;
          waiter = null;
          const out = got;
          got = [];
          w(out);
        }
      }
    });
    const send = (b: Buffer[]) =>
      new Promise<RawMessage[]>((resolve) => {
        waiter = resolve;
        s.write(Buffer.concat(b));
      });
    await new Promise<void>((resolve) => {
      s.once('data', () => resolve());
      s.write(startup({ user: 'wire', database: 'postgres' }));
    });
    await send([buildPasswordMessage(h.key)]);
    return { send, close: () => s.destroy() };
  }
  const codes = (ms: RawMessage[]) => ms.map((m) => String.fromCharCode(m.code)).join('');

  it('continues a suspended portal (Execute with a row limit, PortalSuspended)', async () => {
    const c = await session();
    try {
      const replies = await c.send([buildParse('', 'select g from generate_series(1, 3) g'), buildBind('p1', ''), buildExecute('p1', 2), buildExecute('p1', 2), buildSync()]);
      assert.equal(codes(replies), '12DDsDCZ');
    } finally {
      c.close();
    }
    await h.idle();
    const results = eventsOf(h.store, 'pg.result').map((e) => e.payload as { rows: number; suspended?: boolean; sample?: unknown[] });
    assert.ok(results.some((r) => r.suspended === true && r.rows === 2), 'the suspended part is recorded');
  });

  it('refuses a pipelined batch as a whole when one statement is denied, and serves the next batch', async () => {
    const c = await session();
    try {
      const batch = [buildParse('', 'select 1'), buildBind('', ''), buildExecute(''), buildParse('', 'truncate pg_class'), buildBind('', ''), buildExecute(''), buildSync()];
      const refused = await c.send(batch);
      assert.equal(codes(refused), 'EZ');
      const fields = parseErrorFields(refused[0]!.body);
      assert.equal(fields.get('C'), '42501');
      assert.match(fields.get('M')!, /no truncation/);
      const ok = await c.send([buildParse('', 'select 2'), buildBind('', ''), buildExecute(''), buildSync()]);
      assert.equal(codes(ok), '12DCZ');
      const simple = await c.send([buildQuery('select 3')]);
      assert.equal(codes(simple), 'TDCZ');
    } finally {
      c.close();
    }
  });
});
