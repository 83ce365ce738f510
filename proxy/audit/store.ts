/**
 * The audit store: one SQLite file (WAL) under the data dir holding the hash-chained event log and
 * the gateway's state tables. Every append is committed before it returns, so an event the caller
 * saw acknowledged survives a gateway crash; if SQLite cannot write (disk full, locked, read-only),
 * `append` throws `StoreUnavailableError` and the caller refuses the request (fail closed).
 *
 * Chain (see docs/AUDIT.md):
 *   payloadHash = SHA-256(canonical({payload, spans}))
 *   body        = {seq, time, kind, session, actor, connection, payloadHash}
 *   hash        = SHA-256(prevHash ‖ canonical(body)), prevHash of seq 1 = 32 zero bytes.
 * Retention may delete a payload; its payloadHash stays, so the chain still verifies.
 */
import { createHash, hash as oneShotHash } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import Database from 'better-sqlite3';
import { canonicalize } from '../../shared/canonical-json';
import type { AuditEvent, AuditEventInput, MaskSpan, SessionFilter, SessionSummary } from '../../shared/events';
import { MIGRATIONS } from './migrations';

export const GENESIS_HASH = '0'.repeat(64);
/** Payloads larger than this are stored deflated; hashes always cover the canonical text. */
const COMPRESS_OVER = 4096;

export class StoreUnavailableError extends Error {
  constructor(cause: unknown) {
    super(`audit store unavailable: ${cause instanceof Error ? cause.message : String(cause)}`);
    this.name = 'StoreUnavailableError';
    this.cause = cause;
  }
}

export function sha256hex(data: string | Uint8Array): string {
  return oneShotHash('sha256', data, 'hex');
}

export function payloadHashOf(payload: unknown, spans: MaskSpan[]): string {
  return sha256hex(canonicalize({ payload, spans }));
}

export function eventBody(e: Pick<AuditEvent, 'seq' | 'time' | 'kind' | 'session' | 'actor' | 'connection' | 'payloadHash'>) {
  return { seq: e.seq, time: e.time, kind: e.kind, session: e.session, actor: e.actor, connection: e.connection, payloadHash: e.payloadHash };
}

export function chainHash(prevHash: string, body: ReturnType<typeof eventBody>): string {
  return chainHashOfText(prevHash, canonicalEventBody(body));
}

const CHAIN_INPUT = Buffer.alloc(8192);

/** SHA-256(prevHash bytes ‖ canonical body text), hex; `prevHash` as 64 hex digits. */
export function chainHashOfText(prevHash: string, canonicalBody: string): string {
  // One reusable input buffer instead of a Buffer per event: this runs once per append and per verified row.
  if (prevHash.length === 64 && canonicalBody.length * 3 <= CHAIN_INPUT.length - 32 && CHAIN_INPUT.write(prevHash, 0, 32, 'hex') === 32) {
    const n = CHAIN_INPUT.write(canonicalBody, 32, 'utf8');
    return oneShotHash('sha256', CHAIN_INPUT.subarray(0, 32 + n), 'hex');
  }
  return createHash('sha256').update(Buffer.from(prevHash, 'hex')).update(canonicalBody).digest('hex');
}

/**
 * RFC 8785 canonical JSON, byte for byte what shared/canonical-json's `canonicalize` writes (a
 * property test holds the two together), built with string appends instead of arrays and closures:
 * it runs once per appended payload, the gateway's hottest path.
 */
export function canonicalPayload(v: unknown): string {
  if (v === null) return 'null';
  switch (typeof v) {
    case 'string':
      return JSON.stringify(v);
    case 'number':
      if (!Number.isFinite(v)) throw new TypeError('canonical JSON cannot encode NaN or Infinity');
      return JSON.stringify(v);
    case 'boolean':
      return v ? 'true' : 'false';
    case 'object': {
      if (Array.isArray(v)) {
        let s = '[';
        for (let i = 0; i < v.length; i++) {
          if (i) s += ',';
          const x: unknown = v[i];
          s += x === undefined ? 'null' : canonicalPayload(x);
        }
        return `${s}]`;
      }
      const o = v as Record<string, unknown> & { toJSON?: () => unknown };
      if (typeof o.toJSON === 'function') return canonicalPayload(o.toJSON());
      const keys = Object.keys(o).sort();
      let s = '{';
      let first = true;
      for (const k of keys) {
        const x = o[k];
        if (x === undefined) continue;
        if (!first) s += ',';
        first = false;
        s += `${JSON.stringify(k)}:${canonicalPayload(x)}`;
      }
      return `${s}}`;
    }
    case 'undefined':
      throw new TypeError('canonical JSON cannot encode undefined');
    default:
      throw new TypeError(`canonical JSON cannot encode a ${typeof v}`);
  }
}

const jsonOrNull = (v: string | null) => (v === null ? 'null' : JSON.stringify(v));

/**
 * canonical(body) written out directly: the same bytes `canonicalize(eventBody(e))` produces (keys in
 * RFC 8785 order: actor, connection, kind, payloadHash, seq, session, time), without walking an
 * object. The verifier uses it to hash a million stored rows quickly.
 */
export function canonicalEventBody(b: ReturnType<typeof eventBody>): string {
  if (!Number.isFinite(b.seq) || !Number.isFinite(b.time)) throw new TypeError('canonical JSON cannot encode NaN or Infinity');
  return `{"actor":${jsonOrNull(b.actor)},"connection":${jsonOrNull(b.connection)},"kind":${JSON.stringify(b.kind)},"payloadHash":${JSON.stringify(b.payloadHash)},"seq":${b.seq},"session":${jsonOrNull(b.session)},"time":${b.time}}`;
}

interface EventRow {
  seq: number;
  time: number;
  kind: string;
  session: string | null;
  actor: string | null;
  connection: string | null;
  payload: Buffer | string | null;
  encoding: string;
  spans: string | null;
  payload_hash: string;
  prev_hash: string;
  hash: string;
}

export function rowToEvent(r: EventRow): AuditEvent {
  let payload: unknown = null;
  if (r.encoding === 'json') payload = JSON.parse(typeof r.payload === 'string' ? r.payload : r.payload!.toString('utf8'));
  else if (r.encoding === 'deflate') payload = JSON.parse(inflateRawSync(r.payload as Buffer).toString('utf8'));
  return {
    seq: r.seq,
    time: r.time,
    kind: r.kind as AuditEvent['kind'],
    session: r.session,
    actor: r.actor,
    connection: r.connection,
    payload,
    spans: r.spans ? (JSON.parse(r.spans) as MaskSpan[]) : [],
    payloadHash: r.payload_hash,
    prevHash: r.prev_hash,
    hash: r.hash,
  };
}

export interface SessionQuery extends SessionFilter {
  limit?: number;
  offset?: number;
}

type Listener = (e: AuditEvent) => void;

/** What the rest of the gateway needs from an event log; a PostgreSQL-backed store can follow it. */
export interface EventLog {
  append(input: AuditEventInput): AuditEvent;
  appendMany(inputs: AuditEventInput[]): AuditEvent[];
  head(): { size: number; hash: string };
  sessionEvents(session: string, afterSeq?: number, limit?: number): AuditEvent[];
  listSessions(filter?: SessionQuery): { total: number; sessions: SessionSummary[] };
  onAppend(listener: Listener): () => void;
}

export class AuditStore implements EventLog {
  readonly db: Database.Database;
  readonly path: string;
  private seq = 0;
  private lastHash = GENESIS_HASH;
  private listeners = new Set<Listener>();
  private insertEvent: Database.Statement;
  private upsertSession: Database.Statement;
  private appendTx: (inputs: AuditEventInput[]) => { events: AuditEvent[]; sessions: Map<string, SessionDelta> };
  /**
   * Session-index changes committed in the event log but not yet in the `sessions` table. The
   * table is an index over the log, not the record: writing it on a short timer keeps its pages out
   * of every append's commit (a commit's cost grows with the pages it dirties). Reads through this
   * class flush first, and `close` does. A crash can leave the index short by the last
   * SESSION_INDEX_DELAY_MS of events; the log itself is complete.
   */
  private pendingSessions = new Map<string, SessionDelta>();
  private sessionTimer: NodeJS.Timeout | undefined;
  private flushSessionsTx: () => void;
  /** How long session-index changes may wait before they are written. */
  static readonly SESSION_INDEX_DELAY_MS = 50;

  /** Opens (creating if needed) `<dataDir>/custody.db` and runs pending migrations. */
  static open(dataDir: string, options: { readonly?: boolean } = {}): AuditStore {
    if (!options.readonly) mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    return new AuditStore(join(dataDir, 'custody.db'), options);
  }

  constructor(path: string, options: { readonly?: boolean } = {}) {
    this.path = path;
    try {
      this.db = new Database(path, { readonly: options.readonly ?? false, fileMustExist: options.readonly ?? false, timeout: 2000 });
      if (!options.readonly) {
        this.db.pragma('journal_mode = WAL');
        this.db.pragma('synchronous = NORMAL');
        this.db.pragma('foreign_keys = ON');
        migrate(this.db);
      }
    } catch (err) {
      throw new StoreUnavailableError(err);
    }
    const last = this.db.prepare('SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1').get() as { seq: number; hash: string } | undefined;
    if (last) {
      this.seq = last.seq;
      this.lastHash = last.hash;
    }
    this.insertEvent = this.db.prepare(
      `INSERT INTO events (seq, time, kind, session, actor, connection, payload, encoding, spans, payload_hash, prev_hash, hash)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    this.upsertSession = this.db.prepare(
      `INSERT INTO sessions (id, connection, protocol, actor, actor_name, started_at, last_event_at, ended_at, events, requests, holds, masked, denied, errors)
       VALUES (@id, @connection, @protocol, @actor, @actorName, @started, @last, @ended, @events, @requests, @holds, @masked, @denied, @errors)
       ON CONFLICT(id) DO UPDATE SET
         last_event_at = @last,
         ended_at = COALESCE(@ended, ended_at),
         actor_name = COALESCE(actor_name, @actorName),
         events = events + @events,
         requests = requests + @requests,
         holds = holds + @holds,
         masked = masked + @masked,
         denied = denied + @denied,
         errors = errors + @errors`,
    );
    this.appendTx = this.db.transaction((inputs: AuditEventInput[]) => {
      const sessions = new Map<string, SessionDelta>();
      const events = inputs.map((i) => this.appendOne(i, sessions));
      return { events, sessions };
    });
    this.flushSessionsTx = this.db.transaction(() => {
      for (const d of this.pendingSessions.values()) this.upsertSession.run(d);
    });
  }

  /** Writes the pending session-index changes now (done by a timer, before session reads and at close). */
  flushSessions(): void {
    if (this.sessionTimer) {
      clearTimeout(this.sessionTimer);
      this.sessionTimer = undefined;
    }
    if (this.pendingSessions.size === 0 || !this.db.open || this.db.readonly) return;
    try {
      this.flushSessionsTx();
      this.pendingSessions.clear();
    } catch {
      // The events are committed; the index catches up on a later flush.
      this.sessionTimer = setTimeout(() => this.flushSessions(), AuditStore.SESSION_INDEX_DELAY_MS * 4);
    }
  }

  private queueSessions(sessions: Map<string, SessionDelta>): void {
    if (sessions.size === 0) return;
    for (const d of sessions.values()) {
      const p = this.pendingSessions.get(d.id);
      if (!p) {
        this.pendingSessions.set(d.id, d);
        continue;
      }
      // The same merge the upsert's ON CONFLICT clause does.
      p.last = d.last;
      p.ended = d.ended ?? p.ended;
      p.actorName ??= d.actorName;
      p.events += d.events;
      p.requests += d.requests;
      p.holds += d.holds;
      p.masked += d.masked;
      p.denied += d.denied;
      p.errors += d.errors;
    }
    this.sessionTimer ??= setTimeout(() => this.flushSessions(), AuditStore.SESSION_INDEX_DELAY_MS);
  }

  /** Appends one event, committed before return. Throws StoreUnavailableError when it cannot. */
  append(input: AuditEventInput): AuditEvent {
    return this.appendMany([input])[0]!;
  }

  /** Appends several events in one transaction (one commit). */
  appendMany(inputs: AuditEventInput[]): AuditEvent[] {
    const seq0 = this.seq;
    const hash0 = this.lastHash;
    let events: AuditEvent[];
    try {
      const done = this.appendTx(inputs);
      events = done.events;
      this.queueSessions(done.sessions);
    } catch (err) {
      this.seq = seq0;
      this.lastHash = hash0;
      // Another process (a CLI command next to a running gateway) appended meanwhile: continue its chain.
      if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT_PRIMARYKEY' && this.reloadHead()) return this.appendMany(inputs);
      throw err instanceof StoreUnavailableError ? err : new StoreUnavailableError(err);
    }
    for (const e of events) for (const l of this.listeners) l(e);
    return events;
  }

  private appendOne(input: AuditEventInput, sessions: Map<string, SessionDelta>): AuditEvent {
    const spans = input.spans ?? [];
    const payload = input.payload === undefined ? null : input.payload;
    const text = canonicalPayload(payload);
    const spansText = spans.length ? canonicalPayload(spans) : '[]';
    const payloadHash = sha256hex(`{"payload":${text},"spans":${spansText}}`);
    const seq = this.seq + 1;
    const time = input.time ?? Date.now();
    const body = {
      seq,
      time,
      kind: input.kind,
      session: input.session ?? null,
      actor: input.actor ?? null,
      connection: input.connection ?? null,
      payloadHash,
    };
    const hash = chainHash(this.lastHash, body);
    const big = text.length > COMPRESS_OVER;
    this.insertEvent.run(
      seq,
      time,
      input.kind,
      body.session,
      body.actor,
      body.connection,
      big ? deflateRawSync(text) : text,
      big ? 'deflate' : 'json',
      spans.length ? spansText : null,
      payloadHash,
      this.lastHash,
      hash,
    );
    if (body.session) this.indexSession(sessions, body.session, input, time, spans.length);
    // Written out, not `{ ...body, … }`: V8's spread of a fresh literal costs microseconds per event here.
    const event: AuditEvent = { seq, time, kind: body.kind, session: body.session, actor: body.actor, connection: body.connection, payloadHash, payload, spans, prevHash: this.lastHash, hash };
    this.seq = seq;
    this.lastHash = hash;
    return event;
  }

  private indexSession(sessions: Map<string, SessionDelta>, id: string, input: AuditEventInput, time: number, masked: number): void {
    const p = (input.payload ?? {}) as Record<string, unknown>;
    const kind = input.kind;
    const decision = kind === 'policy.decision' ? p['action'] : kind === 'hold.resolved' ? p['state'] : undefined;
    const actorName = typeof p['actorName'] === 'string' ? p['actorName'] : null;
    let d = sessions.get(id);
    if (!d) {
      const protocol = kind.startsWith('pg.') || p['protocol'] === 'postgres' ? 'postgres' : kind.startsWith('http.') || p['protocol'] === 'http' ? 'http' : 'control';
      d = { id, connection: input.connection ?? null, protocol, actor: input.actor ?? null, actorName, started: time, last: time, ended: null, events: 0, requests: 0, holds: 0, masked: 0, denied: 0, errors: 0 };
      sessions.set(id, d);
    }
    d.actorName ??= actorName;
    d.last = time;
    if (kind === 'session.end') d.ended = time;
    d.events++;
    if (kind === 'http.request' || kind === 'pg.statement') d.requests++;
    if (kind === 'hold.created') d.holds++;
    d.masked += masked;
    if (decision === 'deny' || decision === 'denied' || decision === 'expired') d.denied++;
    if (kind === 'http.error' || kind === 'pg.error') d.errors++;
  }

  /** Re-reads the head from the file; true when it moved on (written by another connection). */
  private reloadHead(): boolean {
    const last = this.db.prepare('SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1').get() as { seq: number; hash: string } | undefined;
    if (!last || last.seq <= this.seq) return false;
    this.seq = last.seq;
    this.lastHash = last.hash;
    return true;
  }

  head(): { size: number; hash: string } {
    return { size: this.seq, hash: this.lastHash };
  }

  onAppend(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  event(seq: number): AuditEvent | undefined {
    const r = this.db.prepare('SELECT * FROM events WHERE seq = ?').get(seq) as EventRow | undefined;
    return r && rowToEvent(r);
  }

  /** Events in seq order, `from` inclusive, at most `limit`. */
  events(from = 1, limit = 1000): AuditEvent[] {
    return (this.db.prepare('SELECT * FROM events WHERE seq >= ? ORDER BY seq LIMIT ?').all(from, limit) as EventRow[]).map(rowToEvent);
  }

  /** Raw rows in seq order, for the verifier (no JSON decoding it does not need). */
  *iterateRows(from = 1): IterableIterator<EventRow> {
    yield* this.db.prepare('SELECT * FROM events WHERE seq >= ? ORDER BY seq').iterate(from) as IterableIterator<EventRow>;
  }

  sessionEvents(session: string, afterSeq = 0, limit = 10_000): AuditEvent[] {
    return (
      this.db.prepare('SELECT * FROM events WHERE session = ? AND seq > ? ORDER BY seq LIMIT ?').all(session, afterSeq, limit) as EventRow[]
    ).map(rowToEvent);
  }

  session(id: string): SessionSummary | undefined {
    if (this.pendingSessions.has(id)) this.flushSessions();
    const r = this.db.prepare('SELECT * FROM sessions WHERE id = ?').get(id) as SessionRow | undefined;
    return r && rowToSession(r);
  }

  listSessions(filter: SessionQuery = {}): { total: number; sessions: SessionSummary[] } {
    this.flushSessions();
    const where: string[] = [];
    const args: Record<string, unknown> = {};
    if (filter.user) {
      where.push('(actor = @user OR actor_name LIKE @userLike)');
      args['user'] = filter.user;
      args['userLike'] = `%${filter.user}%`;
    }
    const eq = (column: string, value: unknown, op = '=') => {
      where.push(`${column} ${op} @${column}`);
      args[column] = value;
    };
    if (filter.connection) eq('connection', filter.connection);
    if (filter.protocol) eq('protocol', filter.protocol);
    if (filter.from !== undefined) eq('last_event_at', filter.from, '>=');
    if (filter.to !== undefined) eq('started_at', filter.to, '<=');
    if (filter.hadHolds) where.push('holds > 0');
    if (filter.hadMasking) where.push('masked > 0');
    const clause = where.length ? `WHERE ${where.join(' AND ')}` : '';
    const total = (this.db.prepare(`SELECT count(*) AS n FROM sessions ${clause}`).get(args) as { n: number }).n;
    const rows = this.db
      .prepare(`SELECT * FROM sessions ${clause} ORDER BY last_event_at DESC LIMIT @limit OFFSET @offset`)
      .all({ ...args, limit: filter.limit ?? 100, offset: filter.offset ?? 0 }) as SessionRow[];
    return { total, sessions: rows.map(rowToSession) };
  }

  meta(key: string): string | undefined {
    return (this.db.prepare('SELECT value FROM meta WHERE key = ?').get(key) as { value: string } | undefined)?.value;
  }

  setMeta(key: string, value: string): void {
    this.db.prepare('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value').run(key, value);
  }

  close(): void {
    this.flushSessions();
    clearTimeout(this.sessionTimer);
    this.listeners.clear();
    if (this.db.open) this.db.close();
  }
}

/** One session's index changes within one append transaction. */
interface SessionDelta {
  id: string;
  connection: string | null;
  protocol: string;
  actor: string | null;
  actorName: string | null;
  started: number;
  last: number;
  ended: number | null;
  events: number;
  requests: number;
  holds: number;
  masked: number;
  denied: number;
  errors: number;
}

interface SessionRow {
  id: string;
  connection: string | null;
  protocol: string;
  actor: string | null;
  actor_name: string | null;
  started_at: number;
  last_event_at: number;
  ended_at: number | null;
  events: number;
  requests: number;
  holds: number;
  masked: number;
  denied: number;
  errors: number;
}

function rowToSession(r: SessionRow): SessionSummary {
  return {
    id: r.id,
    connection: r.connection,
    protocol: r.protocol as SessionSummary['protocol'],
    actor: r.actor,
    actorName: r.actor_name,
    startedAt: r.started_at,
    lastEventAt: r.last_event_at,
    endedAt: r.ended_at,
    events: r.events,
    requests: r.requests,
    holds: r.holds,
    masked: r.masked,
    denied: r.denied,
    errors: r.errors,
  };
}

/** Applies pending migrations, each in its own transaction. Exported for migration tests. */
export function migrate(db: Database.Database, migrations = MIGRATIONS): number {
  const current = db.pragma('user_version', { simple: true }) as number;
  let version = current;
  for (const m of migrations) {
    if (m.version <= current) continue;
    db.transaction(() => {
      db.exec(m.sql);
      db.pragma(`user_version = ${m.version}`);
    })();
    version = m.version;
  }
  return version;
}
