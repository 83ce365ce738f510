/**
 * The other gateways' sessions, live (docs/SCALE-OUT.md, "The desktop app in team mode"). While a
 * console that may see sessions is connected to this gateway, its console worker (team-worker.ts)
 * follows what every other gateway ships: at each `NOTIFY custody_events` (shipping.ts, heard by
 * the hold worker's listening connection) and once a second as a backstop, it reads the session
 * events shipped after its cursor for each chain and turns them into the messages a local session
 * gives the console: `session.event` for each (naming the gateway, whose chain its seq belongs
 * to), `session.started` after a `session.start`, `session.ended` after a `session.end`.
 *
 * Each read is one REPEATABLE READ snapshot: the gateways' shipping cursors, their events up to
 * those cursors, and the session index rows (`custody_sessions`, moved in the same transactions as
 * the cursors) are read as of one moment, so an ended session's summary counts exactly the events
 * pushed before it. A row that no longer matches its hashes is not pushed (the replay, reopened,
 * shows it with its banner).
 *
 * Following starts at what each gateway has shipped so far: what came before is what the console
 * reads over REST. A chain more than FEED_MAX_BEHIND events ahead of its cursor (a gateway that
 * joined with a long chain, a console that followed nothing for a while) is skipped to its head
 * and the consoles are told to reload (`resync`): the gateway's resume buffer would not hold it.
 */
import type pg from 'pg';
import type { SessionSummary } from '../../../shared/events';
import type { ServerMessageBody } from '../../../shared/messages';
import { deltaSummary } from '../chain-writer';
import { PG_EVENT_COLUMNS, type PgEventRow } from './schema';
import { pgRowToEvent, sessionDeltas, teamSessionsById } from './session-index';

/** Events a chain may be ahead of the cursor before the consoles reload instead (the bus keeps 10,000 messages). */
export const FEED_MAX_BEHIND = 5000;
/** Rows read per query. */
const FEED_PAGE = 500;

interface ChainHead {
  id: string;
  name: string;
  shipped: number;
}

async function chainHeads(client: pg.ClientBase, self: string): Promise<ChainHead[]> {
  const rows = (await client.query<{ id: string; name: string; shipped_seq: string }>('SELECT id, name, shipped_seq FROM custody_gateways WHERE id <> $1', [self])).rows;
  return rows.map((r) => ({ id: r.id, name: r.name, shipped: Number(r.shipped_seq) }));
}

export class SessionFeed {
  /** Per chain, the last seq read; undefined while not following (or not yet started). */
  private cursors: Map<string, number> | undefined;

  constructor(private readonly self: string) {}

  get started(): boolean {
    return this.cursors !== undefined;
  }

  /** Starts following at what each gateway has shipped so far. */
  async start(client: pg.ClientBase): Promise<void> {
    this.cursors = new Map((await chainHeads(client, this.self)).map((h) => [h.id, h.shipped]));
  }

  stop(): void {
    this.cursors = undefined;
  }

  /**
   * Reads what the other gateways shipped since the last read and hands the console messages to
   * `emit`, a page at a time, in each chain's order. A gateway first seen after following started
   * is read from its first event.
   */
  async read(client: pg.ClientBase, emit: (messages: ServerMessageBody[]) => void): Promise<void> {
    const cursors = this.cursors;
    if (!cursors) return;
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    try {
      let skipped = 0;
      for (const head of await chainHeads(client, this.self)) {
        const from = cursors.get(head.id) ?? 0;
        if (head.shipped <= from) continue;
        if (head.shipped - from > FEED_MAX_BEHIND) {
          cursors.set(head.id, head.shipped);
          skipped++;
          continue;
        }
        for (let after = from; after < head.shipped; ) {
          const rows = (
            await client.query<PgEventRow>(`SELECT ${PG_EVENT_COLUMNS} FROM custody_events WHERE gateway = $1 AND seq > $2 AND seq <= $3 AND session IS NOT NULL ORDER BY seq LIMIT $4`, [
              head.id,
              after,
              head.shipped,
              FEED_PAGE,
            ])
          ).rows;
          after = rows.length === FEED_PAGE ? Number(rows[rows.length - 1]!.seq) : head.shipped;
          if (rows.length) emit(await this.messages(client, head, rows));
          // Moved page by page: should a later page fail, what was pushed is not pushed again.
          cursors.set(head.id, after);
        }
      }
      if (skipped) emit([{ type: 'resync', reason: `other gateways shipped more than ${FEED_MAX_BEHIND} events at once; reload the current state` }]);
    } finally {
      await client.query('COMMIT').catch(() => {});
    }
  }

  /** The console messages for a page of `head`'s shipped session events, in order. */
  private async messages(client: pg.ClientBase, head: ChainHead, rows: PgEventRow[]): Promise<ServerMessageBody[]> {
    const ended = [...new Set(rows.filter((r) => r.kind === 'session.end').map((r) => r.session!))];
    const summaries = ended.length ? await teamSessionsById(client, head.id, ended) : new Map<string, SessionSummary>();
    const out: ServerMessageBody[] = [];
    for (const r of rows) {
      const { event, intact } = pgRowToEvent(r);
      if (!intact) continue;
      out.push({ type: 'session.event', event, gateway: head.id });
      if (r.kind === 'session.start') {
        // Counted as the index counts it: the session as its first event opens it.
        const opened = sessionDeltas([{ ...r, seq: Number(r.seq), time: Number(r.time), payload: r.purged ? null : r.payload }])[0];
        if (opened) out.push({ type: 'session.started', session: { ...deltaSummary(opened), gateway: head.id, gatewayName: head.name } });
      } else if (r.kind === 'session.end') {
        const summary = summaries.get(r.session!);
        if (summary) out.push({ type: 'session.ended', session: summary });
      }
    }
    return out;
  }
}
