/**
 * Streams every recorded event to the SIEM sinks in audit.sinks[], as OCSF (the exporter's
 * mapping) with the chain fields attached (seq, hash, prev_hash, payload_hash under
 * unmapped.custody), so the SIEM copy can be checked against the log.
 *
 * Each sink reads committed events from the store after its durable cursor (`sink_cursors`), in
 * seq order (so in order per session), in batches, off the request path: the proxies only ever
 * append to the store, and a slow or dead sink only grows its backlog, bounded by the store's disk.
 * In the gateway every runner lives on the sink thread (sink-worker.ts), which reads through its
 * own read-only connection: the proxies' event loop does none of the reading, OCSF mapping,
 * signing or delivery. It only keeps each sink's last snapshot for health and hands the cursors the
 * thread reports to the commit thread (`SinkThread`).
 * The cursor moves only after a batch is acknowledged (HTTP 2xx; for syslog, written and the
 * connection still up SETTLE_MS later), so delivery is at least once: after an outage or a crash
 * the unacknowledged tail is sent again. Failures retry with exponential backoff (1 s to 60 s).
 *
 *   syslog  RFC 5424 messages over TCP or TLS with octet-counting framing (RFC 6587 §3.4.1)
 *   http    a JSON batch; generic webhooks are signed with HMAC-SHA256, or a Splunk HEC /
 *           Datadog logs body and header with preset: splunk | datadog
 *   nats    JetStream publish with acknowledgement and a dedup id per event (nats.ts)
 */
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Agent as HttpAgent, request as httpRequest } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { hostname } from 'node:os';
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { Worker } from 'node:worker_threads';
import type Database from 'better-sqlite3';
import type { Config } from '../../shared/config';
import type { SinkStatus } from '../../shared/evidence';
import type { Logger } from '../log';
import { type WorkerSource, workerSource } from '../worker-source';
import { connectionKinds } from './export';
import { NatsConnection } from './nats';
import { type OcsfContext, ocsfJson } from './ocsf';
import { type AuditStore, type EventRow, storedPayloadText } from './store';

type SinkConfig = Config['audit']['sinks'][number];

const BATCH = 200;
const IDLE_POLL_MS = 100;
/** After a short batch, how long the next one gathers. */
const GATHER_MS = 50;
const MIN_BACKOFF_MS = 1000;
const MAX_BACKOFF_MS = 60_000;
const REQUEST_TIMEOUT_MS = 15_000;
/** syslog has no acknowledgement: a batch counts as delivered once the connection outlived it by this long. */
const SETTLE_MS = 1500;
const CURSOR_PERSIST_MS = 1000;

/** Header names of the generic webhook's signature (documented in docs/AUDIT.md). */
export const SIGNATURE_HEADER = 'x-custody-signature';
export const TIMESTAMP_HEADER = 'x-custody-timestamp';

export type { SinkStatus };

/** One batch, as records ready for the wire. */
interface Batch {
  lastSeq: number;
  records: { seq: number; time: number; kind: string; hash: string; prevHash: string; json: string }[];
}

interface Transport {
  /** Resolves when the batch is acknowledged (as far as the protocol can say). */
  send(batch: Batch): Promise<void>;
  /** The seq up to which delivery is settled (syslog lags its writes); others: the last sent. */
  settled?(): number | undefined;
  close(): void;
}

/** Where a runner reads committed events: a connection to the store (read-only is enough). */
export interface SinkSource {
  db: Database.Database;
}

/** Writes a sink's durable cursor (`sink_cursors`); see `SinkRunner`. */
export type PersistCursor = (name: string, seq: number, deliveredAt: number | null) => void;

/** What a runner knows of itself; the gateway's thread adds the backlog from its own head (`sinkStatus`). */
export interface SinkSnapshot {
  name: string;
  kind: SinkConfig['kind'];
  cursor: number;
  /** The time of the oldest event after the cursor that the runner can read, if any. */
  oldestTime: number | null;
  lastDeliveryAt: number | null;
  lastError: string | null;
  failures: number;
}

export const UPSERT_CURSOR = 'INSERT INTO sink_cursors (name, seq, delivered_at) VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET seq = excluded.seq, delivered_at = excluded.delivered_at';

/** A sink's status from a snapshot and the log's head (`head`: the last seq recorded). */
export function sinkStatus(s: SinkSnapshot, head: number, now = Date.now()): SinkStatus {
  const backlog = Math.max(0, head - s.cursor);
  return {
    name: s.name,
    kind: s.kind,
    state: s.lastError ? 'failing' : backlog > 0 ? 'ok' : 'idle',
    cursor: s.cursor,
    backlog,
    // Events recorded but not yet readable by the sink (still being committed) are fresh.
    backlogAgeMs: backlog > 0 ? (s.oldestTime === null ? 0 : Math.max(0, now - s.oldestTime)) : null,
    lastDeliveryAt: s.lastDeliveryAt,
    lastError: s.lastError,
    failures: s.failures,
  };
}

/**
 * One sink's delivery loop. The gateway runs its runners on the sink thread (sink-worker.ts), each
 * reading through that thread's own read-only connection and handing its cursor to `persist`;
 * constructed on a store directly (tests, or where no worker can start) it reads and writes there.
 */
export class SinkRunner {
  private timer?: NodeJS.Timeout;
  private stopped = false;
  private failures = 0;
  private lastError: string | null = null;
  private lastDeliveryAt: number | null;
  private cursor: number;
  private persisted: number;
  private persistedAt = 0;
  /** Next seq to read: ahead of the cursor while syslog writes settle. */
  private position: number;
  private readonly transport: Transport;
  private readonly persist: PersistCursor;
  /** Called after each read-and-deliver round (the sink thread reports its snapshot). */
  private readonly onTick?: () => void;
  /** Statements of every round, prepared once. */
  private readonly sql: { oldest: Database.Statement; head: Database.Statement; batch: Database.Statement };

  constructor(
    private readonly store: SinkSource,
    readonly sink: SinkConfig,
    private readonly ctx: OcsfContext,
    private readonly log?: Pick<Logger, 'info' | 'error'>,
    options: { persist?: PersistCursor; onTick?: () => void; resumeAt?: { seq: number; deliveredAt: number | null } } = {},
  ) {
    const stored = store.db.prepare('SELECT seq, delivered_at FROM sink_cursors WHERE name = ?').get(sink.name) as { seq: number; delivered_at: number | null } | undefined;
    // A restarted sink thread is handed the last cursor the gateway heard of, which may be ahead of the durable one.
    const resume = options.resumeAt;
    const row = resume && resume.seq > (stored?.seq ?? 0) ? { seq: resume.seq, delivered_at: resume.deliveredAt } : stored;
    this.cursor = row?.seq ?? 0;
    this.persisted = this.cursor;
    this.position = this.cursor;
    this.lastDeliveryAt = row?.delivered_at ?? null;
    this.persist = options.persist ?? ((name, seq, at) => void store.db.prepare(UPSERT_CURSOR).run(name, seq, at));
    this.onTick = options.onTick;
    this.sql = {
      oldest: store.db.prepare('SELECT time FROM events WHERE seq > ? ORDER BY seq LIMIT 1'),
      head: store.db.prepare('SELECT coalesce(max(seq), 0) AS n FROM events'),
      // The columns the mapping needs, and the spans counted by SQLite rather than parsed here.
      batch: store.db.prepare('SELECT seq, time, kind, session, actor, connection, payload, encoding, json_array_length(spans) AS masked, payload_hash, prev_hash, hash FROM events WHERE seq > ? ORDER BY seq LIMIT ?'),
    };
    this.transport = sink.kind === 'syslog' ? new SyslogTransport(sink) : sink.kind === 'http' ? new HttpTransport(sink) : new NatsTransport(sink, ctx.origin);
  }

  start(): void {
    this.schedule(0);
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.transport.close();
    try {
      this.persistedAt = 0;
      this.commit(undefined);
    } catch {
      // the store is closing; the next start re-sends from the last durable cursor
    }
  }

  snapshot(): SinkSnapshot {
    const oldest = this.sql.oldest.get(this.cursor) as { time: number } | undefined;
    return { name: this.sink.name, kind: this.sink.kind, cursor: this.cursor, oldestTime: oldest?.time ?? null, lastDeliveryAt: this.lastDeliveryAt, lastError: this.lastError, failures: this.failures };
  }

  status(): SinkStatus {
    return sinkStatus(this.snapshot(), this.head());
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.tick(), ms);
    this.timer.unref();
  }

  private async tick(): Promise<void> {
    let delay = IDLE_POLL_MS;
    try {
      const batch = this.read();
      if (batch) {
        await this.transport.send(batch);
        this.position = batch.lastSeq;
        // A full batch: more is waiting. A short one: let the next gather for a moment, so a busy
        // gateway's events go out in a few large requests rather than many small ones.
        delay = batch.records.length >= BATCH ? 0 : GATHER_MS;
      }
      this.commit(this.transport.settled ? this.transport.settled() : this.position);
      if (this.lastError) this.log?.info(`audit: sink ${this.sink.name} delivers again`);
      this.failures = 0;
      this.lastError = null;
    } catch (err) {
      this.failures++;
      this.lastError = (err as Error).message;
      // Whatever was not acknowledged is read again: at least once.
      this.position = this.cursor;
      delay = Math.min(MIN_BACKOFF_MS * 2 ** (this.failures - 1), MAX_BACKOFF_MS);
      if (this.failures === 1 || this.failures % 10 === 0) this.log?.error(`audit: sink ${this.sink.name} failed (attempt ${this.failures}, next in ${Math.round(delay / 1000)} s): ${this.lastError}`);
    }
    if (this.stopped) return;
    this.onTick?.();
    this.schedule(delay);
  }

  private commit(seq: number | undefined): void {
    if (seq !== undefined && seq > this.cursor) {
      this.cursor = seq;
      this.lastDeliveryAt = Date.now();
    }
    // The durable copy is written at most once a second (or when this sink has caught up), so a
    // busy sink does not add a write per batch to the store; after a crash the few batches since
    // are sent again, which at-least-once allows.
    if (this.cursor === this.persisted || (Date.now() - this.persistedAt < CURSOR_PERSIST_MS && this.position < this.head())) return;
    this.persist(this.sink.name, this.cursor, this.lastDeliveryAt);
    this.persisted = this.cursor;
    this.persistedAt = Date.now();
  }

  private head(): number {
    return (this.sql.head.get() as { n: number }).n;
  }

  private read(): Batch | undefined {
    const rows = this.sql.batch.all(this.position, BATCH) as SinkRow[];
    if (!rows.length) return undefined;
    const records = rows.map((r) => {
      const payload = r.encoding === 'json' || r.encoding === 'deflate' ? (JSON.parse(storedPayloadText(r.encoding, r.payload)) as unknown) : null;
      const json = ocsfJson({ seq: r.seq, time: r.time, kind: r.kind, session: r.session, actor: r.actor, connection: r.connection, payload, masked: r.masked ?? 0, hash: r.hash }, this.ctx, { prevHash: r.prev_hash, payloadHash: r.payload_hash });
      return { seq: r.seq, time: r.time, kind: r.kind, hash: r.hash, prevHash: r.prev_hash, json };
    });
    return { lastSeq: rows[rows.length - 1]!.seq, records };
  }
}

/** A row as the sinks read it (sql.batch). */
type SinkRow = Pick<EventRow, 'seq' | 'time' | 'kind' | 'session' | 'actor' | 'connection' | 'payload' | 'encoding' | 'payload_hash' | 'prev_hash' | 'hash'> & { masked: number | null };

/** The gateway's sinks, as the audit service sees them. */
export interface Sinks {
  status(): SinkStatus[];
  stop(): void;
}

/**
 * Starts the configured sinks: on their own thread (sink-worker.ts), so reading events, mapping them
 * to OCSF, signing and delivering never runs on the proxies' event loop; on this thread only where
 * no worker can start (an in-memory store, a bundle without the worker).
 */
export function startSinks(store: AuditStore, config: Config, origin: string, version: string, log?: Logger): Sinks {
  if (!config.audit.sinks.length) return { status: () => [], stop: () => {} };
  const kinds = connectionKinds(store, config);
  const src = store.db.memory ? undefined : workerSource(import.meta.url, './sink-worker');
  if (src) return new SinkThread(src, store, config.audit.sinks, { kinds: [...kinds], origin, version }, log);
  const ctx: OcsfContext = { connectionKinds: kinds, actorNames: new Map(), product: { name: 'Custody', version }, origin };
  const persist: PersistCursor = (name, seq, at) => store.writeBehind(UPSERT_CURSOR, [name, seq, at], (err) => err && log?.error(`audit: sink ${name}: cursor not saved: ${err.message}`));
  const runners = config.audit.sinks.map((s) => new SinkRunner(store, s, ctx, log, { persist }));
  for (const r of runners) r.start();
  return {
    status: () => runners.map((r) => sinkStatus(r.snapshot(), store.head().size)),
    stop: () => runners.forEach((r) => r.stop()),
  };
}

/** What the gateway's thread and the sink thread say to each other (sink-worker.ts). */
export interface SinkWorkerData {
  path: string;
  sinks: SinkConfig[];
  /** After a restart: each sink's last acknowledged cursor the gateway was told of (name, seq, delivered at). */
  resume?: [string, number, number | null][];
  kinds: [string, string][];
  origin: string;
  version: string;
}
export type SinkWorkerMessage =
  | { type: 'status'; sinks: SinkSnapshot[] }
  | { type: 'cursor'; name: string; seq: number; deliveredAt: number | null }
  | { type: 'log'; level: 'info' | 'error'; message: string };

const RESTART_MIN_MS = 1000;
const RESTART_MAX_MS = 60_000;

/**
 * The sink thread, seen from the gateway's thread: it keeps the last snapshot each runner sent
 * (status and health read those, with the backlog counted from the store's head held in memory:
 * no query here), writes the cursors the thread hands over through the commit thread
 * (`writeBehind`), and restarts the thread with backoff should it die (an uncaught error, an
 * exit): the sinks show as failing meanwhile, and the new thread resumes each sink from the last
 * acknowledged cursor it was told of, so nothing is skipped and little is sent twice.
 */
export class SinkThread implements Sinks {
  private worker?: Worker;
  private readonly snapshots = new Map<string, SinkSnapshot>();
  /** The last cursor of each sink handed to the store. */
  private readonly saved = new Map<string, number>();
  private stopped = false;
  private restarts = 0;
  /** The cursors when the thread was last started: a report past them shows it delivers, and resets the backoff. */
  private startedAt = new Map<string, number>();
  private restartTimer?: NodeJS.Timeout;

  constructor(
    private readonly src: WorkerSource,
    private readonly store: AuditStore,
    private readonly sinks: SinkConfig[],
    private readonly data: Omit<SinkWorkerData, 'path' | 'sinks' | 'resume'>,
    private readonly log?: Logger,
  ) {
    for (const s of sinks) {
      const row = store.db.prepare('SELECT seq, delivered_at FROM sink_cursors WHERE name = ?').get(s.name) as { seq: number; delivered_at: number | null } | undefined;
      this.snapshots.set(s.name, { name: s.name, kind: s.kind, cursor: row?.seq ?? 0, oldestTime: null, lastDeliveryAt: row?.delivered_at ?? null, lastError: null, failures: 0 });
      this.saved.set(s.name, row?.seq ?? 0);
    }
    this.spawn();
  }

  private spawn(): void {
    const resume = [...this.snapshots.values()].map((s): [string, number, number | null] => [s.name, s.cursor, s.lastDeliveryAt]);
    this.startedAt = new Map(resume.map(([name, seq]) => [name, seq]));
    const workerData: SinkWorkerData = { path: this.store.path, sinks: this.sinks, resume, ...this.data };
    const w = new Worker(this.src.entry, { ...this.src.options, workerData });
    this.worker = w;
    w.unref();
    w.on('message', (m: SinkWorkerMessage) => {
      if (this.worker !== w) return;
      if (m.type === 'status') {
        for (const s of m.sinks) this.snapshots.set(s.name, s);
        if (m.sinks.some((s) => s.cursor > (this.startedAt.get(s.name) ?? 0))) this.restarts = 0;
      } else if (m.type === 'cursor') this.save(m.name, m.seq, m.deliveredAt);
      else this.log?.[m.level](m.message);
    });
    w.on('error', (err) => this.log?.error(`audit: the sink thread failed: ${err.message}`));
    w.on('exit', (code) => {
      if (this.stopped || this.worker !== w) return;
      this.worker = undefined;
      const delay = Math.min(RESTART_MIN_MS * 2 ** this.restarts++, RESTART_MAX_MS);
      for (const s of this.snapshots.values()) {
        // What the thread last reported as acknowledged is durable before the next one starts.
        if (s.cursor > (this.saved.get(s.name) ?? 0)) this.save(s.name, s.cursor, s.lastDeliveryAt);
        s.lastError = `the sink thread stopped (exit code ${code}); restarting in ${Math.round(delay / 1000)} s`;
        s.failures++;
      }
      this.log?.error(`audit: the sink thread exited with code ${code}; restarting in ${Math.round(delay / 1000)} s`);
      this.restartTimer = setTimeout(() => this.spawn(), delay);
      this.restartTimer.unref();
    });
  }

  private save(name: string, seq: number, deliveredAt: number | null): void {
    this.saved.set(name, seq);
    this.store.writeBehind(UPSERT_CURSOR, [name, seq, deliveredAt], (err) => err && this.log?.error(`audit: sink ${name}: cursor not saved: ${err.message}`));
  }

  status(): SinkStatus[] {
    const head = this.store.head().size;
    const now = Date.now();
    return this.sinks.map((s) => sinkStatus(this.snapshots.get(s.name)!, head, now));
  }

  /** Ends the running thread at once, as a crash would; it is restarted like after any exit (the restart's tests use it). */
  kill(): Promise<number> | undefined {
    return this.worker?.terminate();
  }

  /** Keeps the last cursor the thread reported (a few batches may be re-sent after the next start) and ends the thread. */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.restartTimer);
    for (const s of this.snapshots.values()) if (s.cursor > (this.saved.get(s.name) ?? 0)) this.save(s.name, s.cursor, s.lastDeliveryAt);
    void this.worker?.terminate();
    this.worker = undefined;
  }
}

const EVENTS_OPEN = Buffer.from('{"events":[');
const EVENTS_CLOSE = Buffer.from(']}');
const COMMA = Buffer.from(',');

const HOST = hostname().replace(/[^\x21-\x7e]/g, '-').slice(0, 255) || '-';

/** RFC 5424: facility log audit (13), severity informational (6); the chain fields as structured data. */
export function syslogMessage(r: Batch['records'][number]): string {
  const msgid = r.kind.replace(/[^\x21-\x7e]/g, '_').slice(0, 32) || '-';
  // 32473: the enterprise number RFC 5612 reserves for documentation; the values are hex and digits.
  const sd = `[custody@32473 seq="${r.seq}" hash="${r.hash}" prev="${r.prevHash}"]`;
  return `<110>1 ${new Date(r.time).toISOString()} ${HOST} custody - ${msgid} ${sd} ${r.json}`;
}

class SyslogTransport implements Transport {
  private socket?: Socket;
  private broken?: Error;
  private readonly written: { seq: number; at: number }[] = [];

  constructor(private readonly sink: SinkConfig) {}

  private connect(): Promise<Socket> {
    if (this.socket && !this.broken) return Promise.resolve(this.socket);
    this.written.length = 0;
    this.broken = undefined;
    const u = new URL(this.sink.url);
    const port = Number(u.port || (u.protocol === 'tls:' ? 6514 : 601));
    const host = u.hostname.replace(/^\[|\]$/g, '');
    return new Promise((resolve, reject) => {
      const s = u.protocol === 'tls:' ? tlsConnect({ host, port, servername: host, ...(this.sink.ca ? { ca: readFileSync(this.sink.ca) } : {}) }) : netConnect({ host, port });
      s.setTimeout(REQUEST_TIMEOUT_MS);
      const fail = (err: Error) => {
        this.broken = err;
        s.destroy();
        reject(err);
      };
      s.once(u.protocol === 'tls:' ? 'secureConnect' : 'connect', () => {
        s.off('error', fail);
        s.on('error', (err) => (this.broken = err));
        s.on('close', () => (this.broken ??= new Error('the syslog receiver closed the connection')));
        s.on('timeout', () => s.setTimeout(0));
        s.on('data', () => {}); // nothing is expected back; drain
        this.socket = s;
        resolve(s);
      });
      s.once('error', fail);
    });
  }

  async send(batch: Batch): Promise<void> {
    const s = await this.connect();
    const frames = batch.records.map((r) => {
      const msg = Buffer.from(syslogMessage(r), 'utf8');
      return Buffer.concat([Buffer.from(`${msg.length} `), msg]);
    });
    await new Promise<void>((resolve, reject) => s.write(Buffer.concat(frames), (err) => (err ? reject(err) : resolve())));
    if (this.broken) throw this.broken;
    this.written.push({ seq: batch.lastSeq, at: Date.now() });
  }

  settled(): number | undefined {
    if (this.broken) throw new Error(`syslog connection lost: ${this.broken.message}`);
    const cutoff = Date.now() - SETTLE_MS;
    let seq: number | undefined;
    while (this.written.length && this.written[0]!.at <= cutoff) seq = this.written.shift()!.seq;
    return seq;
  }

  close(): void {
    this.socket?.destroy();
  }
}

class HttpTransport implements Transport {
  /** One keep-alive connection, reused batch after batch (node:http costs less per request than fetch). */
  private readonly agent: HttpAgent;
  private readonly url: URL;

  constructor(private readonly sink: SinkConfig) {
    this.url = new URL(sink.url);
    this.agent = this.url.protocol === 'https:' ? new HttpsAgent({ keepAlive: true, maxSockets: 1, ...(sink.ca ? { ca: readFileSync(sink.ca) } : {}) }) : new HttpAgent({ keepAlive: true, maxSockets: 1 });
  }

  send(batch: Batch): Promise<void> {
    const { body, headers } = this.render(batch);
    const payload = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
    const request = this.url.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise<void>((resolve, reject) => {
      // A redirect is not followed: events go to the configured receiver or nowhere.
      const req = request(this.url, { method: 'POST', agent: this.agent, headers: { ...headers, 'content-length': payload.length }, timeout: REQUEST_TIMEOUT_MS }, (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          if (size < 4096) chunks.push(c);
          size += c.length;
        });
        res.on('error', (err) => reject(new Error(`cannot reach ${redact(this.sink.url)}: ${(err as NodeJS.ErrnoException).code ?? err.message}`)));
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          if (status >= 200 && status < 300) return resolve();
          const text = Buffer.concat(chunks).toString('utf8');
          reject(new Error(`HTTP ${status} from ${redact(this.sink.url)}: ${text.split('\n')[0]!.slice(0, 200)}`));
        });
      });
      req.on('timeout', () => req.destroy(Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' })));
      req.on('error', (err) => reject(new Error(`cannot reach ${redact(this.sink.url)}: ${(err as NodeJS.ErrnoException).code ?? err.message}`)));
      req.end(payload);
    });
  }

  private render(batch: Batch): { body: string | Buffer; headers: Record<string, string> } {
    switch (this.sink.preset) {
      case 'splunk':
        // HEC event endpoint: concatenated event objects, time in epoch seconds.
        return {
          body: batch.records.map((r) => `{"time":${(r.time / 1000).toFixed(3)},"host":${JSON.stringify(HOST)},"source":"custody","sourcetype":"ocsf","event":${r.json}}`).join('\n'),
          headers: { 'content-type': 'application/json', authorization: `Splunk ${this.sink.secret!}` },
        };
      case 'datadog':
        // Logs intake v2: a JSON array of log entries; the OCSF record is the message.
        return {
          body: `[${batch.records.map((r) => `{"ddsource":"custody","service":"custody","hostname":${JSON.stringify(HOST)},"ddtags":${JSON.stringify(`event_kind:${r.kind}`)},"message":${JSON.stringify(r.json)}}`).join(',')}]`,
          headers: { 'content-type': 'application/json', 'dd-api-key': this.sink.secret! },
        };
      default: {
        // Each record is encoded on its own and the bytes joined: a record is written as many
        // pieces (ocsf.ts), and encoding one at a time costs a third of joining them all as text.
        const parts: Buffer[] = [EVENTS_OPEN];
        for (let i = 0; i < batch.records.length; i++) {
          if (i) parts.push(COMMA);
          parts.push(Buffer.from(batch.records[i]!.json, 'utf8'));
        }
        parts.push(EVENTS_CLOSE);
        const body = Buffer.concat(parts);
        const headers: Record<string, string> = { 'content-type': 'application/json' };
        if (this.sink.secret) {
          const ts = String(Math.floor(Date.now() / 1000));
          headers[TIMESTAMP_HEADER] = ts;
          headers[SIGNATURE_HEADER] = `sha256=${createHmac('sha256', this.sink.secret).update(`${ts}.`).update(body).digest('hex')}`;
        }
        return { body, headers };
      }
    }
  }

  close(): void {
    this.agent.destroy();
  }
}

/**
 * JetStream: each record is published to the URL's subject (its path, default `custody.audit`)
 * with `Nats-Msg-Id: <log origin>:<seq>`, and counts as delivered once JetStream acknowledges it
 * (a stream must capture the subject; the operator creates it). Records of a batch are pipelined
 * on one connection and acknowledged in order.
 */
class NatsTransport implements Transport {
  private conn?: NatsConnection;
  private readonly subject: string;

  constructor(
    private readonly sink: SinkConfig,
    private readonly origin: string,
  ) {
    this.subject = decodeURIComponent(new URL(sink.url).pathname.replace(/^\/+/, '')) || 'custody.audit';
  }

  async send(batch: Batch): Promise<void> {
    try {
      this.conn ??= await NatsConnection.connect(this.sink.url, REQUEST_TIMEOUT_MS, this.sink.ca ? readFileSync(this.sink.ca) : undefined);
      const acks = await Promise.all(batch.records.map((r) => this.conn!.request(this.subject, r.json, { 'Nats-Msg-Id': `${this.origin}:${r.seq}` }, REQUEST_TIMEOUT_MS)));
      for (const a of acks) {
        if (a.status === 503) throw new Error(`no JetStream stream captures the subject "${this.subject}"`);
        if (a.status) throw new Error(`NATS status ${a.status} ${a.description ?? ''}`.trim());
        const ack = JSON.parse(a.data.toString('utf8')) as { stream?: string; error?: { description?: string } };
        if (ack.error || !ack.stream) throw new Error(`JetStream refused the message: ${ack.error?.description ?? 'no acknowledgement'}`);
      }
    } catch (err) {
      this.close();
      const e = err as Error & { code?: string };
      throw new Error(`NATS ${redact(this.sink.url)}: ${e.code ?? e.message}`);
    }
  }

  close(): void {
    this.conn?.close();
    this.conn = undefined;
  }
}

function redact(url: string): string {
  try {
    const u = new URL(url);
    u.username = '';
    u.password = '';
    u.search = '';
    return u.toString();
  } catch {
    return 'the sink';
  }
}
