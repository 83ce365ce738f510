/**
 * SIEM sinks, end to end, checked at the receiver: a local webhook that verifies every batch's
 * HMAC, Splunk HEC and Datadog bodies, and Debian's rsyslog started here on a loopback port writing
 * what it receives to a file. What arrived is compared with the store, seq by seq and hash by hash,
 * across a receiver outage and a gateway killed with SIGKILL.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createHmac, timingSafeEqual } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { connect } from 'node:net';
import { getPriority } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { AuditStore } from '../../proxy/audit/store';
import { NatsConnection } from '../../proxy/audit/nats';
import { ocsfJson } from '../../proxy/audit/ocsf';
import { SinkRunner, SinkThread, startSinks } from '../../proxy/audit/sinks';
import { storedPayloadText } from '../../proxy/audit/store';
import { Config } from '../../shared/config';
import { startLlmUpstream } from '../support/llm-upstream';
import { freePort } from '../support/ports';
import { tempDir } from '../support/tmp';
import { eventually } from './http-harness';

const SECRET = 'whsec-test-0123456789';
const children = new Set<ChildProcess>();
after(() => {
  for (const c of children) c.kill('SIGKILL');
});

interface Delivered {
  seq: number;
  hash: string;
  prev: string;
  record: string;
}

/** A webhook receiver: checks the HMAC of each batch; `mode` switches it to failing. */
async function startReceiver(): Promise<{ url: string; got: Delivered[]; batches: number; badSignatures: number; mode: { fail: boolean }; close(): Promise<void> }> {
  const state = { got: [] as Delivered[], batches: 0, badSignatures: 0, mode: { fail: false } };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (state.mode.fail) return void res.writeHead(503).end('down for maintenance');
      const body = Buffer.concat(chunks).toString('utf8');
      const ts = req.headers['x-custody-timestamp'] as string;
      const sig = Buffer.from(String(req.headers['x-custody-signature'] ?? ''));
      const want = Buffer.from(`sha256=${createHmac('sha256', SECRET).update(`${ts}.${body}`).digest('hex')}`);
      if (sig.length !== want.length || !timingSafeEqual(sig, want)) {
        state.badSignatures++;
        return void res.writeHead(401).end('bad signature');
      }
      state.batches++;
      for (const r of (JSON.parse(body) as { events: { unmapped: { custody: { seq: number; hash: string; prev_hash: string } } }[] }).events) {
        state.got.push({ seq: r.unmapped.custody.seq, hash: r.unmapped.custody.hash, prev: r.unmapped.custody.prev_hash, record: JSON.stringify(r) });
      }
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}/hook`,
    get got() {
      return state.got;
    },
    get batches() {
      return state.batches;
    },
    get badSignatures() {
      return state.badSignatures;
    },
    mode: state.mode,
    close: () => new Promise((r) => server.close(() => r())),
  };
}

/** The store's events, seq → [hash, prev_hash]. */
function storeHashes(dir: string): Map<number, [string, string]> {
  const db = new Database(join(dir, 'custody.db'), { readonly: true });
  try {
    return new Map((db.prepare('SELECT seq, hash, prev_hash FROM events ORDER BY seq').raw().all() as [number, string, string][]).map(([s, h, p]) => [s, [h, p]]));
  } finally {
    db.close();
  }
}

/**
 * Every recorded event arrived, exactly as recorded; a repeat is only ever a re-send of a suffix
 * (at least once), and first arrivals are in seq order (so in order per session).
 */
function assertDeliveredExactly(got: Delivered[], recorded: Map<number, [string, string]>): void {
  const seen = new Map<number, Delivered>();
  let highest = 0;
  for (const d of got) {
    const r = recorded.get(d.seq);
    assert.ok(r, `seq ${d.seq} was delivered but is not in the store`);
    assert.deepEqual([d.hash, d.prev], r, `seq ${d.seq} arrived with other chain hashes than recorded`);
    const before = seen.get(d.seq);
    if (before) assert.equal(d.record, before.record, `the re-sent seq ${d.seq} differs from the first copy`);
    else {
      assert.equal(d.seq, highest + 1, `seq ${d.seq} arrived before seq ${highest + 1}: a gap or reordering`);
      highest = d.seq;
      seen.set(d.seq, d);
    }
  }
  assert.equal(seen.size, recorded.size, `${recorded.size - seen.size} recorded events never arrived`);
}

/**
 * Each delivered record is the store's row mapped to OCSF: whether the sink took the event from the
 * commit thread's feed or read it back from the file, the SIEM copy is the same record.
 */
function assertRecordsMatchStore(dir: string, got: Delivered[], connectionKinds: Map<string, string>): void {
  const db = new Database(join(dir, 'custody.db'), { readonly: true });
  try {
    const row = db.prepare('SELECT seq, time, kind, session, actor, connection, payload, encoding, json_array_length(spans) AS masked, payload_hash, prev_hash, hash FROM events WHERE seq = ?');
    for (const d of got) {
      const rec = JSON.parse(d.record) as { metadata: { uid: string; product: { version: string } } };
      const ctx = { connectionKinds, actorNames: new Map<string, string>(), product: { name: 'Custody', version: rec.metadata.product.version }, origin: rec.metadata.uid.slice(0, rec.metadata.uid.lastIndexOf('#')) };
      const r = row.get(d.seq) as { seq: number; time: number; kind: string; session: string | null; actor: string | null; connection: string | null; payload: Buffer; encoding: string; masked: number | null; payload_hash: string; prev_hash: string; hash: string };
      const payload = JSON.parse(storedPayloadText(r.encoding, r.payload)) as unknown;
      const want = ocsfJson({ ...r, payload, masked: r.masked ?? 0 }, ctx, { prevHash: r.prev_hash, payloadHash: r.payload_hash });
      assert.deepEqual(JSON.parse(d.record), JSON.parse(want), `seq ${d.seq} arrived as another record than the store's row maps to`);
    }
  } finally {
    db.close();
  }
}

async function startChild(dir: string, config: unknown): Promise<{ proc: ChildProcess; http: string; control: string; key: string }> {
  const proc = spawn(process.execPath, ['--import', 'tsx', 'test/support/gateway-child.ts', dir, JSON.stringify(config)], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.add(proc);
  const line = await new Promise<string>((resolve, reject) => {
    createInterface({ input: proc.stdout! }).once('line', resolve);
    proc.once('exit', (code) => reject(new Error(`the gateway exited with ${code}`)));
  });
  const [, http, control, key] = line.split(' ') as [string, string, string, string];
  return { proc, http, control, key };
}

describe('SIEM sinks', () => {
  it('a signed webhook receives every event exactly as recorded across a receiver outage and a gateway kill -9', async () => {
    const dir = tempDir('custody-sink-http-');
    const upstream = await startLlmUpstream();
    const receiver = await startReceiver();
    const config = {
      listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
      connections: [{ name: 'openai', kind: 'openai', upstream: `${upstream.url}/v1`, secret: { value: 'sk-upstream' } }],
      audit: { origin: 'custody.test/sinks', sinks: [{ name: 'hook', kind: 'http', url: receiver.url, secret: SECRET }] },
    };
    const chat = async (gw: { http: string }, key: string, text: string) => {
      const r = await fetch(`http://${gw.http}/openai/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: text }] }),
      });
      assert.equal(r.status, 200, await r.text());
    };
    const health = async (gw: { control: string }) =>
      (await (await fetch(`http://${gw.control}/api/health`)).json()) as { events: number; audit: { sinks: { name: string; state: string; backlog: number; backlogAgeMs: number | null; lastDeliveryAt: number | null }[] } };
    try {
      let gw = await startChild(dir, config);
      const key = gw.key;
      for (let i = 0; i < 4; i++) await chat(gw, key, `before ${i}`);
      await eventually(async () => {
        const h = await health(gw);
        return h.audit.sinks[0]!.backlog === 0 && receiver.got.length >= h.events;
      }, 'the webhook to catch up', 15_000);

      // Outage: the receiver answers 503. Traffic still flows; health shows the backlog.
      receiver.mode.fail = true;
      for (let i = 0; i < 4; i++) await chat(gw, key, `during ${i}`);
      const h = await eventually(async () => {
        const x = (await health(gw)).audit.sinks[0]!;
        return x.state === 'failing' && x.backlog > 0 ? x : undefined;
      }, 'health to show the failing sink and its backlog', 15_000);
      assert.ok(h.backlogAgeMs !== null && h.backlogAgeMs >= 0);

      // The gateway dies without a chance to flush anything.
      gw.proc.kill('SIGKILL');
      await new Promise((r) => gw.proc.once('exit', r));
      children.delete(gw.proc);
      receiver.mode.fail = false;
      gw = await startChild(dir, config);
      for (let i = 0; i < 3; i++) await chat(gw, key, `after ${i}`);
      const caughtUp = await eventually(async () => {
        // health's event count includes events journaled but not yet committed to the store, which
        // the sink cannot read yet: wait for the receiver to hold that many too.
        const x = await health(gw);
        return x.audit.sinks[0]!.backlog === 0 && x.audit.sinks[0]!.state !== 'failing' && new Set(receiver.got.map((d) => d.seq)).size >= x.events ? x : undefined;
      }, 'the webhook to catch up after the restart', 30_000);
      const stopped = new Promise((r) => gw.proc.once('exit', r));
      gw.proc.kill('SIGTERM');
      await stopped;
      children.delete(gw.proc);

      // Everything recorded up to the moment health showed no backlog must have arrived; events
      // written while stopping are left to the next start.
      const recorded = storeHashes(dir);
      for (const seq of [...recorded.keys()]) if (seq > caughtUp.events) recorded.delete(seq);
      assert.ok(recorded.size >= 11 * 2, `${recorded.size} events recorded`);
      assertDeliveredExactly(receiver.got, recorded);
      assertRecordsMatchStore(dir, receiver.got, new Map([['openai', 'openai']]));
      assert.equal(receiver.badSignatures, 0);
      const kinds = new Set(receiver.got.map((d) => (JSON.parse(d.record) as { class_uid: number }).class_uid));
      assert.ok(kinds.has(6003), 'LLM calls arrive as OCSF API Activity');
    } finally {
      await receiver.close();
      await upstream.close();
    }
  });

  it("the gateway's sinks deliver on their own thread: events arrive while the gateway's event loop is blocked", async () => {
    const dir = tempDir('custody-sink-thread-');
    // The receiver runs in another process, which notes when each batch arrived.
    const rx = spawn(
      process.execPath,
      [
        '-e',
        `const got = []; require('node:http').createServer((req, res) => { const c = []; req.on('data', (d) => c.push(d)); req.on('end', () => {
           if (req.method === 'GET') return res.end(JSON.stringify(got));
           for (const e of JSON.parse(Buffer.concat(c)).events) got.push([e.unmapped.custody.seq, Date.now()]);
           res.writeHead(204).end(); }); }).listen(0, '127.0.0.1', function () { console.log(this.address().port); });`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    children.add(rx);
    const port = await new Promise<string>((resolve) => createInterface({ input: rx.stdout! }).once('line', resolve));
    const store = AuditStore.open(dir, { commitThread: true });
    const config = Config.parse({ audit: { origin: 'custody.test/thread', sinks: [{ name: 'hook', kind: 'http', url: `http://127.0.0.1:${port}/hook`, secret: SECRET }] } });
    const sinks = startSinks(store, config, 'custody.test/thread', 'test');
    try {
      const append = (from: number, n: number) => {
        for (let i = from; i < from + n; i++) store.append({ kind: 'http.request', session: `s${i % 3}`, actor: 'key:alice', connection: 'openai', payload: { text: `blocked ${i}` } });
        store.settle();
      };
      const received = async () => (await (await fetch(`http://127.0.0.1:${port}/`)).json()) as [number, number][];
      // The thread is up and delivering before the test begins.
      append(0, 1);
      await eventually(async () => (await received()).length > 0, 'the first event to arrive', 20_000);
      // On Linux the sink thread runs at the lowest priority (nice 19): this process's other threads keep theirs.
      const nices = readdirSync('/proc/self/task').map((t) => Number(readFileSync(`/proc/self/task/${t}/stat`, 'utf8').replace(/^.*\) /s, '').split(' ')[16]));
      assert.ok(nices.includes(19), `a thread at nice 19 among ${nices.join(', ')}`);
      assert.equal(nices[0], getPriority(), 'the main thread keeps its priority');
      append(1, 49);
      // The event loop does nothing else for 3 s; delivery must not wait for it.
      const blockedFrom = Date.now();
      while (Date.now() - blockedFrom < 3000) {
        // busy
      }
      const blockedUntil = Date.now();
      const got = await eventually(async () => {
        const g = await received();
        return new Set(g.map(([seq]) => seq)).size >= 50 ? g : undefined;
      }, 'all 50 events to arrive', 20_000);
      const during = got.filter(([seq, at]) => seq > 1 && at >= blockedFrom && at < blockedUntil);
      assert.deepEqual([...new Set(got.map(([seq]) => seq))].sort((a, b) => a - b), Array.from({ length: 50 }, (_, i) => i + 1));
      assert.ok(during.length > 0, `nothing arrived while the event loop was blocked (arrivals: ${JSON.stringify(got.map(([seq, at]) => [seq, at - blockedFrom]))})`);
      // Health counts the backlog from the head this thread holds, and reads the thread's last report.
      const st = await eventually(() => (sinks.status()[0]!.cursor === 50 ? sinks.status()[0] : undefined), 'the sink thread to report its cursor', 10_000);
      assert.equal(st.backlog, 0);
      assert.equal(st.state, 'idle');
    } finally {
      sinks.stop();
      store.settle();
      store.close();
      rx.kill('SIGKILL');
      children.delete(rx);
    }
    // The last cursor the thread reported is durable.
    const db = new Database(join(dir, 'custody.db'), { readonly: true });
    try {
      assert.equal((db.prepare('SELECT seq FROM sink_cursors WHERE name = ?').get('hook') as { seq: number }).seq, 50);
    } finally {
      db.close();
    }
  });

  it('a sink thread that dies is restarted with backoff, shows in status meanwhile, and resumes from its cursor: the webhook gets every event in order', async () => {
    const dir = tempDir('custody-sink-restart-');
    const receiver = await startReceiver();
    const store = AuditStore.open(dir, { commitThread: true });
    const config = Config.parse({ audit: { origin: 'custody.test/restart', sinks: [{ name: 'hook', kind: 'http', url: receiver.url, secret: SECRET }] } });
    const sinks = startSinks(store, config, 'custody.test/restart', 'test');
    assert.ok(sinks instanceof SinkThread, 'a store on disk gets the sink thread');
    let n = 0;
    const append = (count: number) => {
      for (let i = 0; i < count; i++, n++) store.append({ kind: 'http.request', session: `s${n % 3}`, actor: 'key:alice', connection: 'openai', payload: { text: `event ${n}` } });
      store.settle();
    };
    const seqs = () => receiver.got.map((d) => d.seq);
    try {
      // 1. Killed while idle, everything delivered: after the restart nothing is sent twice.
      append(120);
      await eventually(() => sinks.status()[0]!.cursor === 120 && receiver.got.length >= 120, 'the first 120 events to arrive', 20_000);
      const killedAt = Date.now();
      await sinks.kill();
      const down = await eventually(() => (sinks.status()[0]!.state === 'failing' ? sinks.status()[0] : undefined), 'status to show the thread gone', 5_000);
      assert.match(down.lastError!, /the sink thread stopped \(exit code 1\); restarting in 1 s/);
      assert.equal(down.failures, 1);
      append(80);
      await eventually(() => receiver.got.length >= 200, 'the events recorded while the thread was down to arrive', 20_000);
      assert.ok(Date.now() - killedAt >= 900, 'the restart waits for its backoff');
      assert.deepEqual(seqs(), Array.from({ length: 200 }, (_, i) => i + 1), 'every event, in order, none twice');
      const up = await eventually(() => (sinks.status()[0]!.state !== 'failing' && sinks.status()[0]!.cursor === 200 ? sinks.status()[0] : undefined), 'health to show the sink delivering again', 10_000);
      assert.equal(up.lastError, null);

      // 2. Killed mid-stream, with batches in flight: at most the unacknowledged batch is sent again; nothing is skipped.
      append(3000);
      await eventually(() => receiver.got.length >= 600, 'delivery to be under way', 20_000);
      await sinks.kill();
      append(500);
      await eventually(() => new Set(seqs()).size >= 3700, 'all 3,700 events to arrive after the second restart', 60_000);
      const recorded = storeHashes(dir);
      assertDeliveredExactly(receiver.got, recorded);
      const repeats = receiver.got.length - recorded.size;
      assert.ok(repeats <= 200, `${repeats} events were sent twice: more than the one batch that was in flight`);
      assert.equal(receiver.badSignatures, 0);
      await eventually(() => sinks.status()[0]!.cursor === 3700, 'the thread to report its last cursor', 10_000);
    } finally {
      sinks.stop();
      store.settle();
      store.close();
      await receiver.close();
    }
    // The cursor the thread last reported is durable.
    const db = new Database(join(dir, 'custody.db'), { readonly: true });
    try {
      assert.equal((db.prepare('SELECT seq FROM sink_cursors WHERE name = ?').get('hook') as { seq: number }).seq, 3700);
    } finally {
      db.close();
    }
  });

  it('Splunk HEC and Datadog presets send their documented body and auth header', async () => {
    const dir = tempDir('custody-sink-presets-');
    const store = AuditStore.open(dir);
    for (let i = 0; i < 5; i++) store.append({ kind: 'http.request', session: 's1', actor: 'key:alice', connection: 'openai', payload: { method: 'POST', path: '/chat/completions', text: `hi ${i}` } });
    const seen: { path: string; headers: Record<string, unknown>; body: string }[] = [];
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        if (req.url === '/moved') return void res.writeHead(307, { location: '/services/collector/event' }).end();
        seen.push({ path: req.url!, headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"text":"Success","code":0}');
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    const ctx = { connectionKinds: new Map([['openai', 'openai']]), actorNames: new Map<string, string>(), product: { name: 'Custody', version: 'test' }, origin: 'custody.test/presets' };
    const splunk = new SinkRunner(store, { name: 'splunk', kind: 'http', url: `${base}/services/collector/event`, secret: 'hec-token', preset: 'splunk' }, ctx);
    const datadog = new SinkRunner(store, { name: 'dd', kind: 'http', url: `${base}/api/v2/logs`, secret: 'dd-key', preset: 'datadog' }, ctx);
    try {
      splunk.start();
      datadog.start();
      await eventually(() => splunk.status().backlog === 0 && datadog.status().backlog === 0, 'both presets to deliver', 10_000);
      const hec = seen.find((s) => s.path === '/services/collector/event')!;
      assert.equal(hec.headers['authorization'], 'Splunk hec-token');
      const hecEvents = hec.body.split('\n').map((l) => JSON.parse(l) as { time: number; sourcetype: string; event: { unmapped: { custody: { seq: number } } } });
      assert.deepEqual(
        hecEvents.map((e) => e.event.unmapped.custody.seq),
        [1, 2, 3, 4, 5],
      );
      assert.equal(hecEvents[0]!.sourcetype, 'ocsf');
      assert.equal(typeof hecEvents[0]!.time, 'number');
      // A receiver that redirects is a failing sink: events are never forwarded elsewhere.
      const moved = new SinkRunner(store, { name: 'moved', kind: 'http', url: `${base}/moved`, secret: 's' }, ctx);
      moved.start();
      const st = await eventually(() => (moved.status().state === 'failing' ? moved.status() : undefined), 'the redirected sink to fail', 10_000);
      moved.stop();
      assert.match(st.lastError!, /HTTP 307/);
      assert.equal(st.cursor, 0);
      assert.equal(seen.filter((s) => s.path === '/services/collector/event').length, 1, 'nothing was re-posted through the redirect');
      const dd = seen.find((s) => s.path === '/api/v2/logs')!;
      assert.equal(dd.headers['dd-api-key'], 'dd-key');
      const ddLogs = JSON.parse(dd.body) as { ddsource: string; message: string }[];
      assert.equal(ddLogs.length, 5);
      assert.equal(ddLogs[0]!.ddsource, 'custody');
      assert.equal((JSON.parse(ddLogs[2]!.message) as { unmapped: { custody: { seq: number } } }).unmapped.custody.seq, 3);
    } finally {
      splunk.stop();
      datadog.stop();
      store.close();
      await new Promise((r) => server.close(r));
    }
  });

  // /usr/sbin is not on every user's PATH.
  const RSYSLOGD = existsSync('/usr/sbin/rsyslogd') ? '/usr/sbin/rsyslogd' : 'rsyslogd';
  const rsyslog = spawnSync(RSYSLOGD, ['-v']).status === 0;
  const gtls = existsSync('/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so') || existsSync('/usr/lib/rsyslog/lmnsd_gtls.so');
  it('rsyslog receives every event as RFC 5424 over TCP, across its own restart', { skip: !rsyslog && 'rsyslogd is not installed (scripts/system-deps.sh test installs it)' }, () => syslogRoundTrip(false));
  it('rsyslog receives every event as RFC 5424 over TLS, across its own restart', { skip: (!rsyslog || !gtls) && 'rsyslog with its gnutls driver is not installed (scripts/system-deps.sh test installs it)' }, () => syslogRoundTrip(true));

  async function syslogRoundTrip(tls: boolean): Promise<void> {
    const dir = tempDir('custody-sink-syslog-');
    const port = await freePort();
    const out = join(dir, 'received.log');
    const conf = join(dir, 'rsyslog.conf');
    let ca: string | undefined;
    if (tls) {
      // A CA and a server certificate for 127.0.0.1, made here with openssl.
      ca = join(dir, 'ca.pem');
      const sh = (args: string[]) => assert.equal(spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' }).status, 0, `openssl ${args.join(' ')}`);
      sh(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=custody test CA']);
      sh(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1']);
      writeFileSync(join(dir, 'san.ext'), 'subjectAltName=IP:127.0.0.1\n');
      sh(['x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.pem', '-days', '2', '-extfile', 'san.ext']);
    }
    writeFileSync(
      conf,
      [
        tls
          ? `global(workDirectory="${dir}" maxMessageSize="256k" DefaultNetstreamDriver="gtls" DefaultNetstreamDriverCAFile="${ca}" DefaultNetstreamDriverCertFile="${join(dir, 'server.pem')}" DefaultNetstreamDriverKeyFile="${join(dir, 'server.key')}")`
          : `global(workDirectory="${dir}" maxMessageSize="256k")`,
        tls ? 'module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")' : 'module(load="imtcp")',
        `input(type="imtcp" port="${port}" address="127.0.0.1")`,
        'template(name="raw" type="string" string="%msgid% %structured-data% %msg%\\n")',
        `*.* action(type="omfile" file="${out}" template="raw")`,
        '',
      ].join('\n'),
    );
    const startRsyslog = async () => {
      const p = spawn(RSYSLOGD, ['-n', '-f', conf, '-i', join(dir, 'rsyslog.pid')], { stdio: 'ignore' });
      children.add(p);
      await eventually(
        () =>
          new Promise<boolean>((resolve) => {
            const s = connect(port, '127.0.0.1');
            s.once('connect', () => (s.destroy(), resolve(true)));
            s.once('error', () => resolve(false));
          }),
        'rsyslog to listen',
        10_000,
      );
      return p;
    };
    const received = (): Delivered[] =>
      existsSync(out)
        ? readFileSync(out, 'utf8')
            .split('\n')
            .filter(Boolean)
            .map((l) => {
              const m = /^(\S+) \[custody@32473 seq="(\d+)" hash="([0-9a-f]{64})" prev="([0-9a-f]{64})"\] ?(.*)$/.exec(l);
              assert.ok(m, `not an RFC 5424 message as sent: ${l.slice(0, 200)}`);
              const rec = JSON.parse(m[5]!) as { unmapped: { custody: { seq: number; hash: string; kind: string } } };
              assert.equal(rec.unmapped.custody.seq, Number(m[2]));
              assert.equal(rec.unmapped.custody.hash, m[3]);
              assert.equal(rec.unmapped.custody.kind, m[1]);
              return { seq: Number(m[2]), hash: m[3]!, prev: m[4]!, record: m[5]! };
            })
        : [];
    let rs = await startRsyslog();
    const store = AuditStore.open(dir);
    const ctx = { connectionKinds: new Map<string, string>(), actorNames: new Map<string, string>(), product: { name: 'Custody', version: 'test' }, origin: 'custody.test/syslog' };
    const runner = new SinkRunner(store, { name: 'rsyslog', kind: 'syslog', url: `${tls ? 'tls' : 'tcp'}://127.0.0.1:${port}`, ...(ca ? { ca } : {}) }, ctx);
    const append = (n: number, tag: string) => {
      for (let i = 0; i < n; i++) store.append({ kind: i % 2 ? 'pg.statement' : 'http.request', session: `s${i % 4}`, actor: 'key:alice', connection: 'db', payload: { text: `${tag} ${i} ünïcode ✓`, sql: 'select 1' } });
    };
    try {
      runner.start();
      append(300, 'first');
      await eventually(() => runner.status().backlog === 0 && received().length >= 300, 'rsyslog to receive the first events', 20_000);
      // rsyslog goes down; events keep being recorded; it comes back on the same port.
      rs.kill('SIGTERM');
      await new Promise((r) => rs.once('exit', r));
      children.delete(rs);
      append(120, 'outage');
      await eventually(() => runner.status().state === 'failing', 'the sink to notice the outage', 20_000);
      assert.ok(runner.status().backlog > 0);
      rs = await startRsyslog();
      append(30, 'after');
      await eventually(() => runner.status().backlog === 0 && new Set(received().map((d) => d.seq)).size >= 450, 'rsyslog to catch up', 60_000);
      const recorded = new Map([...storeHashes(dir)]);
      assertDeliveredExactly(received(), recorded);
    } finally {
      runner.stop();
      store.close();
      rs.kill('SIGTERM');
    }
  }

  it('NATS JetStream (127.0.0.1:4222) stores every event once, in order, even when the cursor is lost and all is re-sent', async (t) => {
    let admin: NatsConnection;
    try {
      admin = await NatsConnection.connect('nats://127.0.0.1:4222', 3000);
    } catch {
      return t.skip('no NATS server with JetStream on 127.0.0.1:4222');
    }
    const tag = Math.random().toString(36).slice(2, 10);
    const stream = `CUSTODY_TEST_${tag.toUpperCase()}`;
    const subject = `custody.test.${tag}`;
    const api = async (op: string, body: unknown) => JSON.parse((await admin.request(`$JS.API.${op}`, JSON.stringify(body))).data.toString('utf8')) as Record<string, unknown>;
    const created = await api(`STREAM.CREATE.${stream}`, { name: stream, subjects: [subject], storage: 'memory', duplicate_window: 120_000_000_000 });
    assert.ok(!created['error'], JSON.stringify(created));
    const dir = tempDir('custody-sink-nats-');
    const store = AuditStore.open(dir);
    const ctx = { connectionKinds: new Map<string, string>(), actorNames: new Map<string, string>(), product: { name: 'Custody', version: 'test' }, origin: 'custody.test/nats' };
    const sink = { name: 'js', kind: 'nats' as const, url: `nats://127.0.0.1:4222/${subject}` };
    let runner = new SinkRunner(store, sink, ctx);
    try {
      for (let i = 0; i < 60; i++) store.append({ kind: 'http.request', session: `s${i % 5}`, actor: 'key:bob', connection: 'openai', payload: { text: `nats ${i}` } });
      runner.start();
      await eventually(() => runner.status().backlog === 0, 'JetStream to acknowledge every event', 20_000);
      runner.stop();
      // The cursor is lost (as if the store were restored from an older copy): everything is sent again.
      store.db.prepare('DELETE FROM sink_cursors').run();
      runner = new SinkRunner(store, sink, ctx);
      runner.start();
      await eventually(() => runner.status().backlog === 0 && runner.status().lastDeliveryAt !== null, 'the re-send to be acknowledged', 20_000);
      const info = (await api(`STREAM.INFO.${stream}`, {})) as { state: { messages: number } };
      assert.equal(info.state.messages, 60, 'JetStream dropped the re-sent duplicates by Nats-Msg-Id');
      const got: Delivered[] = [];
      for (let seq = 1; seq <= 60; seq++) {
        const m = (await api(`STREAM.MSG.GET.${stream}`, { seq })) as { message: { data: string } };
        const rec = JSON.parse(Buffer.from(m.message.data, 'base64').toString('utf8')) as { unmapped: { custody: { seq: number; hash: string; prev_hash: string } } };
        got.push({ seq: rec.unmapped.custody.seq, hash: rec.unmapped.custody.hash, prev: rec.unmapped.custody.prev_hash, record: JSON.stringify(rec) });
      }
      assertDeliveredExactly(got, storeHashes(dir));
      // A subject no stream captures is a failing sink that says why, never a silent drop.
      const orphan = new SinkRunner(store, { name: 'orphan', kind: 'nats', url: `nats://127.0.0.1:4222/custody.nowhere.${tag}` }, ctx);
      orphan.start();
      const st = await eventually(() => (orphan.status().state === 'failing' ? orphan.status() : undefined), 'the orphan sink to fail', 20_000);
      assert.match(st.lastError!, /no JetStream stream captures the subject/);
      assert.equal(st.cursor, 0);
      orphan.stop();
    } finally {
      runner.stop();
      store.close();
      await api(`STREAM.DELETE.${stream}`, {});
      admin.close();
    }
  });
});
