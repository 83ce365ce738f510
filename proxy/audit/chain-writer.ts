/**
 * The writing half of the audit store: appends prepared events to the hash chain on one SQLite
 * connection, one transaction per call, and keeps the session index. It runs where the store
 * commits: in the store's own thread, or in its commit thread (commit-worker.ts), which holds a
 * second connection to the same file.
 *
 * Events arrive prepared (`prepareEvent`): their payloads already in canonical JSON, written by
 * the thread that produced them, so a payload is never copied between threads as an object and
 * hashes the same wherever the commit happens.
 */
import { deflateRawSync } from 'node:zlib';
import type Database from 'better-sqlite3';
import type { AuditEventInput, EventKind, SessionSummary } from '../../shared/events';
import { canonicalPayload, chainHashOfText, canonicalEventBody, GENESIS_HASH, sha256hex } from './chain';

/** Payloads larger than this are stored deflated; hashes always cover the canonical text. */
const COMPRESS_OVER = 4096;

/** An event ready for the chain: what `append` was given, with the payload in canonical text. */
export interface PreparedEvent {
  kind: EventKind;
  session: string | null;
  actor: string | null;
  connection: string | null;
  time: number | undefined;
  /** canonical(payload) */
  text: string;
  /** canonical(spans), or null when there are none */
  spansText: string | null;
  /** Number of masked spans (the session index counts them). */
  masked: number;
  /** What the session index reads from the payload. */
  actorName: string | null;
  decision: string | null;
  protocol: string | null;
  /**
   * The place the gateway's thread gave it in the chain when it journaled it (`chainAfter`). The
   * writer keeps it when it still follows the head, and chains the event anew when another
   * connection appended in between.
   */
  chained?: AppendedEvent;
}

/** What the chain assigned to one appended event. */
export interface AppendedEvent {
  seq: number;
  time: number;
  payloadHash: string;
  prevHash: string;
  hash: string;
}

export function prepareEvent(input: AuditEventInput): PreparedEvent {
  const payload = input.payload === undefined ? null : input.payload;
  const spans = input.spans ?? [];
  const p = (payload ?? {}) as Record<string, unknown>;
  const kind = input.kind;
  const decision = kind === 'policy.decision' ? p['action'] : kind === 'hold.resolved' ? p['state'] : undefined;
  return {
    kind,
    session: input.session ?? null,
    actor: input.actor ?? null,
    connection: input.connection ?? null,
    // Stamped when prepared: a journaled event keeps the time it was recorded, not folded.
    time: input.time ?? Date.now(),
    text: canonicalPayload(payload),
    spansText: spans.length ? canonicalPayload(spans) : null,
    masked: spans.length,
    actorName: typeof p['actorName'] === 'string' ? p['actorName'] : null,
    decision: typeof decision === 'string' ? decision : null,
    protocol: typeof p['protocol'] === 'string' ? p['protocol'] : null,
  };
}

/** The chain's entry for `e` after `prev` (seq and hash of the event before it). */
export function chainAfter(prev: { seq: number; hash: string }, e: PreparedEvent): AppendedEvent {
  const payloadHash = sha256hex(`{"payload":${e.text},"spans":${e.spansText ?? '[]'}}`);
  const seq = prev.seq + 1;
  const time = e.time ?? Date.now();
  const hash = chainHashOfText(prev.hash, canonicalEventBody({ seq, time, kind: e.kind, session: e.session, actor: e.actor, connection: e.connection, payloadHash }));
  return { seq, time, payloadHash, prevHash: prev.hash, hash };
}

/** One session's index changes not yet written to the `sessions` table (counters are increments). */
export interface SessionDelta extends Pick<SessionSummary, 'id' | 'connection' | 'actor' | 'actorName' | 'events' | 'requests' | 'holds' | 'masked' | 'denied' | 'errors'> {
  protocol: string;
  started: number;
  last: number;
  ended: number | null;
}

/** A session's index entry as the console shows it. */
export function deltaSummary(d: SessionDelta): SessionSummary {
  return { id: d.id, connection: d.connection, protocol: d.protocol as SessionSummary['protocol'], actor: d.actor, actorName: d.actorName, startedAt: d.started, lastEventAt: d.last, endedAt: d.ended, events: d.events, requests: d.requests, holds: d.holds, masked: d.masked, denied: d.denied, errors: d.errors };
}

/** A session's index entry as its first event (in this batch) opens it. */
export function newSessionDelta(id: string, e: PreparedEvent, time: number): SessionDelta {
  const kind = e.kind;
  const protocol = kind.startsWith('pg.') || e.protocol === 'postgres' ? 'postgres' : kind.startsWith('http.') || e.protocol === 'http' ? 'http' : kind.startsWith('ssh.') || e.protocol === 'ssh' ? 'ssh' : 'control';
  return { id, connection: e.connection, protocol, actor: e.actor, actorName: e.actorName, started: time, last: time, ended: null, events: 0, requests: 0, holds: 0, masked: 0, denied: 0, errors: 0 };
}

/** Counts event `e` into its session's index entry (the `sessions` table, or the store's live summaries). */
export function countInSession(d: SessionDelta, e: PreparedEvent, time: number): void {
  const kind = e.kind;
  d.actorName ??= e.actorName;
  d.last = time;
  if (kind === 'session.end') d.ended = time;
  d.events++;
  if (kind === 'http.request' || kind === 'pg.statement' || kind === 'ssh.request' || kind === 'ssh.sftp') d.requests++;
  if (kind === 'hold.created') d.holds++;
  d.masked += e.masked;
  const decision = e.decision;
  if (decision === 'deny' || decision === 'denied' || decision === 'expired') d.denied++;
  if (kind === 'http.error' || kind === 'pg.error' || kind === 'ssh.error') d.errors++;
}

export class ChainWriter {
  private seq = 0;
  private lastHash = GENESIS_HASH;
  private readonly insertEvent: Database.Statement;
  private readonly upsertSession: Database.Statement;
  private readonly appendTx: (events: PreparedEvent[], inTx?: () => void) => AppendedEvent[];
  private readonly flushSessionsTx: () => void;
  /**
   * Session-index changes committed in the event log but not yet in the `sessions` table. The
   * table is an index over the log, not the record: writing it on a short timer keeps its pages out
   * of every append's commit (a commit's cost grows with the pages it dirties). Readers flush first,
   * and `close` does. A crash can leave the index short by the last SESSION_INDEX_DELAY_MS of
   * events; the log itself is complete.
   */
  private pendingSessions = new Map<string, SessionDelta>();
  private sessionTimer: NodeJS.Timeout | undefined;
  /** How long session-index changes may wait before they are written. */
  static readonly SESSION_INDEX_DELAY_MS = 50;

  constructor(private readonly db: Database.Database) {
    this.reloadHead();
    this.insertEvent = db.prepare(
      `INSERT INTO events (seq, time, kind, session, actor, connection, payload, encoding, spans, payload_hash, prev_hash, hash)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    this.upsertSession = db.prepare(
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
    this.appendTx = db.transaction((events: PreparedEvent[], inTx?: () => void) => {
      const out = events.map((e) => this.appendOne(e));
      inTx?.();
      return out;
    });
    this.flushSessionsTx = db.transaction(() => {
      for (const d of this.pendingSessions.values()) this.upsertSession.run(d);
    });
  }

  head(): { size: number; hash: string } {
    return { size: this.seq, hash: this.lastHash };
  }

  /** Re-reads the head from the file, wherever it is (after a rollback of a transaction this writer appended in). */
  resetHead(): void {
    const last = this.db.prepare('SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1').get() as { seq: number; hash: string } | undefined;
    this.seq = last?.seq ?? 0;
    this.lastHash = last?.hash ?? GENESIS_HASH;
  }

  /** Re-reads the head from the file; true when it moved on (written by another connection). */
  reloadHead(): boolean {
    const last = this.db.prepare('SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1').get() as { seq: number; hash: string } | undefined;
    if (!last || last.seq <= this.seq) return false;
    this.seq = last.seq;
    this.lastHash = last.hash;
    return true;
  }

  /**
   * Appends the events in one transaction (one commit), running `inTx` inside it too; throws what
   * SQLite threw, the head unchanged.
   */
  append(events: PreparedEvent[], inTx?: () => void): AppendedEvent[] {
    const seq0 = this.seq;
    const hash0 = this.lastHash;
    const rechained0 = this.rechained;
    const sessions = this.pendingSessions;
    this.pendingSessions = new Map();
    let out: AppendedEvent[];
    try {
      out = this.appendTx(events, inTx);
    } catch (err) {
      this.seq = seq0;
      this.lastHash = hash0;
      this.rechained = rechained0;
      this.pendingSessions = sessions;
      // Another connection (the store's other thread, or a CLI command next to a running gateway)
      // appended meanwhile: continue its chain.
      if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT_PRIMARYKEY' && this.reloadHead()) return this.append(events, inTx);
      throw err;
    }
    // Merge this transaction's session changes into what was pending (the upsert's merge).
    const fresh = this.pendingSessions;
    this.pendingSessions = sessions;
    this.queueSessions(fresh);
    return out;
  }

  /** Events since the last `takeRechained` that were given a place other than the one they came with. */
  private rechained = 0;

  /** How many events arrived chained (`chained`) but had to be chained anew; resets the count. */
  takeRechained(): number {
    const n = this.rechained;
    this.rechained = 0;
    return n;
  }

  private appendOne(e: PreparedEvent): AppendedEvent {
    const c = e.chained;
    let a: AppendedEvent;
    if (c && c.seq === this.seq + 1 && c.prevHash === this.lastHash) a = c;
    else {
      a = chainAfter({ seq: this.seq, hash: this.lastHash }, e);
      if (c) this.rechained++;
    }
    const { seq, time, payloadHash, prevHash, hash } = a;
    const big = e.text.length > COMPRESS_OVER;
    this.insertEvent.run(seq, time, e.kind, e.session, e.actor, e.connection, big ? deflateRawSync(e.text) : e.text, big ? 'deflate' : 'json', e.spansText, payloadHash, prevHash, hash);
    if (e.session) this.indexSession(e.session, e, time);
    this.seq = seq;
    this.lastHash = hash;
    return a;
  }

  private indexSession(id: string, e: PreparedEvent, time: number): void {
    let d = this.pendingSessions.get(id);
    if (!d) {
      d = newSessionDelta(id, e, time);
      this.pendingSessions.set(id, d);
    }
    countInSession(d, e, time);
  }

  hasPendingSession(id: string): boolean {
    return this.pendingSessions.has(id);
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
    this.sessionTimer ??= setTimeout(() => this.flushSessions(), ChainWriter.SESSION_INDEX_DELAY_MS);
  }

  /** Writes the pending session-index changes now (done by a timer, before session reads and at close). */
  flushSessions(): void {
    if (this.sessionTimer) {
      clearTimeout(this.sessionTimer);
      this.sessionTimer = undefined;
    }
    if (this.pendingSessions.size === 0 || !this.db.open) return;
    try {
      this.flushSessionsTx();
      this.pendingSessions.clear();
    } catch {
      // The events are committed; the index catches up on a later flush.
      this.sessionTimer = setTimeout(() => this.flushSessions(), ChainWriter.SESSION_INDEX_DELAY_MS * 4);
    }
  }

  close(): void {
    this.flushSessions();
    clearTimeout(this.sessionTimer);
    this.sessionTimer = undefined;
  }
}
