/**
 * Load and log reading for the fault-injection tests and `npm run bench -- faults`: PostgreSQL
 * and HTTP clients that remember every exchange they saw complete (by a marker in it), and a
 * reader of what a data dir's log holds for those markers, so "nothing acknowledged is lost" is
 * checked from the clients' side against the log itself.
 */
import { join } from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { storedPayloadText } from '../../proxy/audit/store';

/** What one load run saw: markers acknowledged, failures by message. */
export interface LoadOutcome {
  acknowledged: string[];
  /** Of those, the HTTP exchanges that were streams (text/event-stream answers). */
  streamed: Set<string>;
  failures: Map<string, number>;
}

export function newOutcome(): LoadOutcome {
  return { acknowledged: [], streamed: new Set(), failures: new Map() };
}

function failed(out: LoadOutcome, err: unknown): void {
  const message = (err instanceof Error ? err.message : String(err)).replace(/\d+/g, 'N').slice(0, 160);
  out.failures.set(message, (out.failures.get(message) ?? 0) + 1);
}

/**
 * `workers` PostgreSQL clients through the gateway at `port`, each INSERTing rows
 * `<prefix>-<worker>-<n>` into `table` until `stop()` says so (half by the simple protocol, half
 * by the extended one); a row counts as acknowledged once its client received CommandComplete.
 * A client whose connection broke opens another, until stopped.
 */
export function pgInsertLoad(opts: { port: number; key: string; table: string; prefix: string; workers: number; stop: () => boolean; out: LoadOutcome; pauseMs?: number }): Promise<void> {
  const worker = async (w: number) => {
    let n = 0;
    while (!opts.stop()) {
      const client = new pg.Client({ host: '127.0.0.1', port: opts.port, user: 'loader', password: opts.key, database: 'postgres', application_name: `${opts.prefix}-${w}`, connectionTimeoutMillis: 5000 });
      client.on('error', () => {});
      try {
        await client.connect();
        while (!opts.stop()) {
          const marker = `${opts.prefix}-${w}-${n++}`;
          const r = n % 2 === 0 ? await client.query(`INSERT INTO ${opts.table} (id) VALUES ('${marker}')`) : await client.query({ text: `INSERT INTO ${opts.table} (id) VALUES ($1)`, values: [marker] });
          if (r.command === 'INSERT' && r.rowCount === 1) opts.out.acknowledged.push(marker);
          if (opts.pauseMs) await new Promise((res) => setTimeout(res, opts.pauseMs));
        }
      } catch (err) {
        failed(opts.out, err);
        // The gateway is gone or refused: try again shortly (not acknowledged).
        await new Promise((res) => setTimeout(res, 50));
      } finally {
        await client.end().catch(() => {});
      }
    }
  };
  return Promise.all(Array.from({ length: opts.workers }, (_, w) => worker(w))).then(() => {});
}

/**
 * `workers` HTTP clients posting chat completions that carry `<prefix>-<worker>-<n>` (every third
 * one streamed) to `url` until stopped; acknowledged once the client has the whole answer.
 */
export function httpChatLoad(opts: { url: () => string; key: string; prefix: string; workers: number; stop: () => boolean; out: LoadOutcome; onResult?: (status: number | 'error', ms: number, body: string) => void }): Promise<void> {
  const worker = async (w: number) => {
    let n = 0;
    while (!opts.stop()) {
      const marker = `${opts.prefix}-${w}-${n++}`;
      const started = performance.now();
      try {
        const r = await fetch(opts.url(), {
          method: 'POST',
          headers: { authorization: `Bearer ${opts.key}`, 'content-type': 'application/json' },
          body: JSON.stringify({ model: 'gpt-4o', stream: n % 3 === 0, messages: [{ role: 'user', content: marker }] }),
        });
        const text = await r.text();
        opts.onResult?.(r.status, performance.now() - started, text);
        if (r.status === 200 && (text.includes('[DONE]') || text.includes('"choices"'))) {
          opts.out.acknowledged.push(marker);
          if (n % 3 === 0) opts.out.streamed.add(marker);
        } else {
          failed(opts.out, new Error(`${r.status} ${text.slice(0, 120)}`));
          await new Promise((res) => setTimeout(res, 20));
        }
      } catch (err) {
        opts.onResult?.('error', performance.now() - started, (err as Error).message);
        failed(opts.out, err);
        await new Promise((res) => setTimeout(res, 50));
      }
    }
  };
  return Promise.all(Array.from({ length: opts.workers }, (_, w) => worker(w))).then(() => {});
}

/** What the log in `dataDir` holds for markers matching `pattern` (global regex source). */
export interface LoggedMarkers {
  /** Markers in an http.request. */
  httpRequests: Set<string>;
  /**
   * How many http.response events with status 200 the log holds, whole answers and streams apart
   * (the fake upstream's answers carry no marker, so acknowledged HTTP exchanges are checked by
   * count: at least one each).
   */
  httpOk: number;
  httpStreamOk: number;
  /** Markers in a pg.statement whose pg.result (not an error) is in the log. */
  pgResults: Set<string>;
  /** Markers in a pg.statement. */
  pgStatements: Set<string>;
}

/** Reads the log directly (the gateway must be stopped, or its store settled). */
export function loggedMarkers(dataDir: string, pattern: string): LoggedMarkers {
  const re = new RegExp(pattern, 'g');
  const out: LoggedMarkers = { httpRequests: new Set(), httpOk: 0, httpStreamOk: 0, pgResults: new Set(), pgStatements: new Set() };
  const statements = new Map<string, string[]>();
  const db = new Database(join(dataDir, 'custody.db'), { readonly: true });
  try {
    const rows = db.prepare("SELECT kind, session, payload, encoding FROM events WHERE kind IN ('http.request', 'http.response', 'pg.statement', 'pg.result') ORDER BY seq").iterate() as IterableIterator<{ kind: string; session: string | null; payload: Buffer | string | null; encoding: string }>;
    for (const row of rows) {
      const text = storedPayloadText(row.encoding, row.payload);
      if (row.kind === 'pg.statement' || row.kind === 'http.request') {
        const markers = [...text.matchAll(re)].map((m) => m[0]);
        if (!markers.length) continue;
        if (row.kind === 'pg.statement') {
          statements.set(`${row.session}:${statementNumber(text)}`, markers);
          for (const m of markers) out.pgStatements.add(m);
        } else for (const m of markers) out.httpRequests.add(m);
        continue;
      }
      if (row.kind === 'http.response') {
        const p = JSON.parse(text) as { status?: number; stream?: boolean };
        if (p.status === 200) {
          if (p.stream) out.httpStreamOk++;
          else out.httpOk++;
        }
        continue;
      }
      for (const m of statements.get(`${row.session}:${statementNumber(text)}`) ?? []) out.pgResults.add(m);
    }
  } finally {
    db.close();
  }
  return out;
}

/** The statement number `n` a pg.statement or pg.result payload carries. */
function statementNumber(payloadText: string): string {
  return String((JSON.parse(payloadText) as { n?: number }).n ?? '?');
}

/** The ids in `table` (read straight from the server). */
export async function tableIds(table: string): Promise<Set<string>> {
  const c = new pg.Client({ host: '127.0.0.1', port: 5432, user: 'postgres', database: 'postgres' });
  await c.connect();
  try {
    return new Set((await c.query<{ id: string }>(`SELECT id FROM ${table}`)).rows.map((r) => r.id));
  } finally {
    await c.end();
  }
}

/** Runs `sql` on the server directly. */
export async function adminQuery(sql: string): Promise<pg.QueryResult> {
  const c = new pg.Client({ host: '127.0.0.1', port: 5432, user: 'postgres', database: 'postgres' });
  await c.connect();
  try {
    return await c.query(sql);
  } finally {
    await c.end();
  }
}

/** The failures a load saw, most frequent first, for a test's or benchmark's message. */
export function describeFailures(out: LoadOutcome): string {
  return [...out.failures].sort((a, b) => b[1] - a[1]).slice(0, 5).map(([m, n]) => `${n}× ${m}`).join('; ');
}
