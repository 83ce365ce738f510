/**
 * The protocol state machine (proxy/postgres/protocol-state.ts) against a small reference model of
 * PostgreSQL's statement, portal and transaction handling: random pipelines of
 * Parse/Bind/Describe/Execute/Close/Sync/Flush and simple queries with PREPARE, EXECUTE,
 * DEALLOCATE [ALL], DISCARD ALL, BEGIN/COMMIT, with reused names and injected errors (a Parse
 * that does not parse, an Execute that divides by zero). Replies reach the state machine in random
 * chunks, as they would arrive over a pipelined connection.
 *
 * Properties: an honest server never causes a mismatch; every statement the server runs is the one
 * the gateway decided on when it planned the Execute (or the EXECUTE). And a server that answers
 * differently from PostgreSQL is caught.
 */
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import fc from 'fast-check';
import { buildCommandComplete, buildErrorResponse, buildReadyForQuery } from '../../proxy/postgres/backend-messages';
import { loadSqlParser } from '../../proxy/postgres/classify';
import { BackendCode } from '../../proxy/postgres/message-codes';
import { type Draft, ProtocolState } from '../../proxy/postgres/protocol-state';
import { type NamespaceEffect, namespaceEffects } from '../../proxy/postgres/sql-namespace';

// ---------------------------------------------------------------- messages

type Msg =
  | { k: 'P'; name: string; sql: string }
  | { k: 'B'; portal: string; stmt: string }
  | { k: 'D'; target: 'S' | 'P'; name: string }
  | { k: 'E'; portal: string }
  | { k: 'C'; target: 'S' | 'P'; name: string }
  | { k: 'S' }
  | { k: 'H' }
  | { k: 'Q'; sql: string };

const names = ['', 's1', 's2'];
const portalNames = ['', 'p1'];
const parseSql = ['SELECT 1', 'DELETE FROM t', 'INSERT INTO t VALUES (1)', 'SELECT 1/0', 'SELEC broken', 'EXECUTE s1', 'EXECUTE s2'];
const querySql = [
  'PREPARE s1 AS DELETE FROM t',
  'PREPARE s2 AS SELECT 1',
  'PREPARE s1 AS INSERT INTO t VALUES (2)',
  'DEALLOCATE s1',
  'DEALLOCATE s2',
  'DEALLOCATE ALL',
  'DISCARD ALL',
  'EXECUTE s1',
  'EXECUTE s2',
  'BEGIN',
  'COMMIT',
  'SELECT 1/0',
  'SELECT 1',
  'DEALLOCATE s1; PREPARE s1 AS DELETE FROM t; SELECT 1/0',
];

const msgArb: fc.Arbitrary<Msg> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ k: fc.constant('P' as const), name: fc.constantFrom(...names), sql: fc.constantFrom(...parseSql) }) },
  { weight: 4, arbitrary: fc.record({ k: fc.constant('B' as const), portal: fc.constantFrom(...portalNames), stmt: fc.constantFrom(...names) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('D' as const), target: fc.constantFrom('S' as const, 'P' as const), name: fc.constantFrom(...names, 'p1') }) },
  { weight: 4, arbitrary: fc.record({ k: fc.constant('E' as const), portal: fc.constantFrom(...portalNames) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('C' as const), target: fc.constantFrom('S' as const, 'P' as const), name: fc.constantFrom(...names, 'p1') }) },
  { weight: 4, arbitrary: fc.constant({ k: 'S' as const }) },
  { weight: 1, arbitrary: fc.constant({ k: 'H' as const }) },
  { weight: 3, arbitrary: fc.record({ k: fc.constant('Q' as const), sql: fc.constantFrom(...querySql) }) },
);

// ---------------------------------------------------------------- reference model of the server

interface RefStmt {
  /** What `current_query()` reports while it runs. */
  text: string;
  /** The statement that runs (a SQL PREPARE's inner statement). */
  runs: string;
}

interface Reply {
  code: number;
  body: Buffer;
}

function errorReply(code: string): Reply {
  const raw = buildErrorResponse({ severity: 'ERROR', code, message: code });
  return { code: BackendCode.ErrorResponse, body: raw.subarray(5) };
}
const simple = (code: number): Reply => ({ code, body: Buffer.alloc(0) });
const complete = (tag: string): Reply => ({ code: BackendCode.CommandComplete, body: buildCommandComplete(tag).subarray(5) });
const ready = (s: string): Reply => ({ code: BackendCode.ReadyForQuery, body: buildReadyForQuery(s as 'I').subarray(5) });

class ServerError extends Error {
  constructor(readonly sqlstate: string) {
    super(sqlstate);
  }
}

/** PostgreSQL's behaviour for the messages above, one message at a time. */
class ReferenceServer {
  stmts = new Map<string, RefStmt>();
  portals = new Map<string, RefStmt>();
  explicit = false;
  aborted = false;
  skipping = false;
  replies: Reply[] = [];
  /** For each Execute / simple-query statement in order: the statement that ran, or null. */
  ran: (string | null)[] = [];

  private error(sqlstate: string): void {
    this.replies.push(errorReply(sqlstate));
    this.skipping = true;
    if (this.explicit) this.aborted = true;
  }

  private run(stmt: RefStmt): { tag: string; rows: boolean } {
    let sql = stmt.runs;
    const exec = /^EXECUTE (\w+)$/.exec(sql);
    if (exec) {
      const target = this.stmts.get(exec[1]!);
      if (!target) throw new ServerError('26000');
      // PostgreSQL prepares only plannable statements: an EXECUTE of an EXECUTE fails.
      if (target.runs.startsWith('EXECUTE')) throw new ServerError('0A000');
      sql = target.runs;
    }
    if (sql === 'SELECT 1/0') throw new ServerError('22012');
    if (sql === 'SELECT 1') return { tag: 'SELECT 1', rows: true };
    if (sql.startsWith('DELETE')) return { tag: 'DELETE 0', rows: false };
    if (sql.startsWith('INSERT')) return { tag: 'INSERT 0 1', rows: false };
    throw new Error(`reference cannot run ${sql}`);
  }

  private ranSql(stmt: RefStmt): string {
    const exec = /^EXECUTE (\w+)$/.exec(stmt.runs);
    return exec ? this.stmts.get(exec[1]!)!.runs : stmt.runs;
  }

  receive(m: Msg): void {
    if (this.skipping && m.k !== 'S') {
      if (m.k === 'E') this.ran.push(null);
      if (m.k === 'Q') for (let i = 0; i < m.sql.split(';').length; i++) this.ran.push(null);
      return;
    }
    switch (m.k) {
      case 'P': {
        if (m.name === '') this.stmts.delete('');
        if (m.sql === 'SELEC broken') return this.error('42601');
        if (this.aborted) return this.error('25P02');
        if (m.name !== '' && this.stmts.has(m.name)) return this.error('42P05');
        this.stmts.set(m.name, { text: m.sql, runs: m.sql });
        this.replies.push(simple(BackendCode.ParseComplete));
        return;
      }
      case 'B': {
        const stmt = this.stmts.get(m.stmt);
        if (!stmt) return this.error('26000');
        if (this.aborted) return this.error('25P02');
        if (m.portal !== '' && this.portals.has(m.portal)) return this.error('42P03');
        this.portals.set(m.portal, stmt);
        this.replies.push(simple(BackendCode.BindComplete));
        return;
      }
      case 'D': {
        const target = m.target === 'S' ? this.stmts.get(m.name) : this.portals.get(m.name);
        if (!target) return this.error(m.target === 'S' ? '26000' : '34000');
        if (m.target === 'S') this.replies.push(simple(BackendCode.ParameterDescription));
        this.replies.push(simple(target.runs === 'SELECT 1' || target.runs === 'SELECT 1/0' ? BackendCode.RowDescription : BackendCode.NoData));
        return;
      }
      case 'E': {
        const portal = this.portals.get(m.portal);
        if (!portal) {
          this.ran.push(null);
          return this.error('34000');
        }
        if (this.aborted) {
          this.ran.push(null);
          return this.error('25P02');
        }
        try {
          const r = this.run(portal);
          const ran = this.ranSql(portal);
          this.ran.push(ran);
          if (r.rows) this.replies.push(simple(BackendCode.DataRow));
          this.replies.push(complete(r.tag));
        } catch (err) {
          this.ran.push(null);
          if (!(err instanceof ServerError)) throw err;
          this.error(err.sqlstate);
        }
        return;
      }
      case 'C':
        if (m.target === 'S') this.stmts.delete(m.name);
        else this.portals.delete(m.name);
        this.replies.push(simple(BackendCode.CloseComplete));
        return;
      case 'H':
        return;
      case 'S':
        this.skipping = false;
        this.endOfSegment();
        return;
      case 'Q':
        return this.query(m.sql);
    }
  }

  private endOfSegment(): void {
    if (!this.explicit) this.portals.clear();
    this.replies.push(ready(this.explicit ? (this.aborted ? 'E' : 'T') : 'I'));
  }

  private query(sql: string): void {
    this.stmts.delete('');
    this.portals.delete('');
    const parts = sql.split(';').map((s) => s.trim());
    let failed = false;
    for (const part of parts) {
      if (failed) {
        this.ran.push(null);
        continue;
      }
      const transactionEnd = part === 'COMMIT';
      if (this.aborted && !transactionEnd) {
        this.ran.push(null);
        this.replies.push(errorReply('25P02'));
        failed = true;
        continue;
      }
      try {
        this.ran.push(this.statement(part));
      } catch (err) {
        if (!(err instanceof ServerError)) throw err;
        this.ran.push(null);
        this.replies.push(errorReply(err.sqlstate));
        if (this.explicit) this.aborted = true;
        failed = true;
      }
    }
    this.endOfSegment();
  }

  /** Runs one statement of a simple query; returns the data statement it ran, if any. */
  private statement(part: string): string | null {
    let m: RegExpExecArray | null;
    if ((m = /^PREPARE (\w+) AS (.*)$/.exec(part))) {
      if (this.stmts.has(m[1]!)) throw new ServerError('42P05');
      this.stmts.set(m[1]!, { text: part, runs: m[2]! });
      this.replies.push(complete('PREPARE'));
      return null;
    }
    if ((m = /^DEALLOCATE (\w+)$/.exec(part)) && m[1] !== 'ALL') {
      if (!this.stmts.has(m[1]!)) throw new ServerError('26000');
      this.stmts.delete(m[1]!);
      this.replies.push(complete('DEALLOCATE'));
      return null;
    }
    if (part === 'DEALLOCATE ALL' || part === 'DISCARD ALL') {
      if (part === 'DISCARD ALL' && this.explicit) throw new ServerError('25001');
      for (const k of [...this.stmts.keys()]) if (k !== '') this.stmts.delete(k);
      if (part === 'DISCARD ALL') this.portals.clear();
      this.replies.push(complete(part));
      return null;
    }
    if ((m = /^EXECUTE (\w+)$/.exec(part))) {
      const stmt = this.stmts.get(m[1]!);
      if (!stmt) throw new ServerError('26000');
      const r = this.run(stmt);
      if (r.rows) this.replies.push(simple(BackendCode.RowDescription), simple(BackendCode.DataRow));
      this.replies.push(complete(r.tag));
      return stmt.runs;
    }
    if (part === 'BEGIN') {
      this.explicit = true;
      this.replies.push(complete('BEGIN'));
      return null;
    }
    if (part === 'COMMIT') {
      const tag = this.aborted ? 'ROLLBACK' : 'COMMIT';
      this.explicit = false;
      this.aborted = false;
      this.portals.clear();
      this.replies.push(complete(tag));
      return null;
    }
    const r = this.run({ text: part, runs: part });
    if (r.rows) this.replies.push(simple(BackendCode.RowDescription), simple(BackendCode.DataRow));
    this.replies.push(complete(r.tag));
    return null;
  }
}

// ---------------------------------------------------------------- the gateway side, as the session drives it

interface Stmt {
  name: string;
  sql: string;
  /** What runs: the inner statement of a SQL PREPARE. */
  runs: string;
  effects: readonly NamespaceEffect[];
  prepared?: ReadonlyMap<string, Stmt>;
}
interface Portal {
  name: string;
  statement: Stmt;
}

/** `inner`: a SQL PREPARE's statement, which runs its inner statement and touches no namespace. */
function prepared(name: string, sql: string, inner?: string): Stmt {
  const runs = inner ?? sql;
  const effects = inner === undefined ? (namespaceEffects(sql, sql.split(';').length)?.flat() ?? []) : [];
  let map: Map<string, Stmt> | undefined;
  for (const e of effects) if (e.k === 'prepare') (map ??= new Map()).set(e.name, prepared(e.name, sql, /^PREPARE \w+ AS (.*)$/.exec(e.sql)![1]!));
  return { name, sql, runs, effects, ...(map ? { prepared: map } : {}) };
}

function batches(msgs: Msg[]): Msg[][] {
  const out: Msg[][] = [];
  let cur: Msg[] = [];
  for (const m of msgs) {
    cur.push(m);
    if (m.k === 'S' || m.k === 'H' || m.k === 'Q') {
      out.push(cur);
      cur = [];
    }
  }
  if (cur.length) out.push(cur);
  return out;
}

interface Outcome {
  mismatch: string | null;
  /** Per Execute / simple-query statement sent, in order: what the gateway decided would run. */
  decided: (string | null)[];
}

/** Plans, sends and answers a pipeline the way the session does; `deliver` says how many replies to hand over after each batch. */
function drive(msgs: Msg[], deliver: number[], server = new ReferenceServer(), tamper?: (r: Reply, i: number) => Reply): { out: Outcome; server: ReferenceServer } {
  const state = new ProtocolState<Stmt, Portal>('I');
  const decided: (string | null)[] = [];
  let delivered = 0;
  let mismatch: string | null = null;
  const give = (n: number) => {
    for (let i = 0; i < n && delivered < server.replies.length && !mismatch; i++) {
      let r = server.replies[delivered]!;
      if (tamper) r = tamper(r, delivered);
      delivered++;
      mismatch = state.reply(r.code, r.body);
    }
  };
  const runsOf = (s: Stmt | null, executes: (Stmt | null)[]): string | null => {
    if (!s) return null;
    if (s.effects.some((e) => e.k === 'execute')) return executes[0]?.runs ?? null;
    return s.runs;
  };
  batches(msgs).forEach((batch, bi) => {
    for (;;) {
      if (mismatch) return;
      const draft: Draft<Stmt, Portal> = state.draft();
      const mine: (string | null)[] = [];
      for (const m of batch) {
        switch (m.k) {
          case 'P':
            draft.parse(m.name, prepared(m.name, m.sql));
            break;
          case 'B':
            draft.bind(m.portal, m.stmt, (statement) => ({ name: m.portal, statement }));
            break;
          case 'D':
            draft.describe(m.target, m.name);
            break;
          case 'E': {
            const { portal, executes } = draft.execute(m.portal);
            mine.push(runsOf(portal?.statement ?? null, executes));
            break;
          }
          case 'C':
            draft.close(m.target, m.name);
            break;
          case 'S':
            draft.sync();
            break;
          case 'H':
            break;
          case 'Q': {
            const fx = namespaceEffects(m.sql, m.sql.split(';').length)!;
            const parts = m.sql.split(';').map((s) => s.trim());
            const statements = fx.map((effects, i) => {
              const map = new Map<string, Stmt>();
              for (const e of effects) if (e.k === 'prepare') map.set(e.name, prepared(e.name, m.sql, /^PREPARE \w+ AS (.*)$/.exec(parts[i]!)![1]!));
              return { effects, ...(map.size ? { prepared: map } : {}) };
            });
            const executes = draft.query(statements);
            executes.forEach((x, i) => mine.push(statements[i]!.effects.some((e) => e.k === 'execute') ? (x[0]?.runs ?? null) : null));
            break;
          }
        }
      }
      if (draft.stalled) {
        // The session waits for the replies of earlier segments, then plans the batch again.
        assert.ok(!state.quiet || delivered < server.replies.length, 'stalled while nothing is outstanding');
        give(1);
        continue;
      }
      draft.commit();
      decided.push(...mine);
      for (const m of batch) server.receive(m);
      give(deliver[bi % deliver.length]!);
      return;
    }
  });
  give(Number.MAX_SAFE_INTEGER);
  if (!mismatch && state.pending > 0 && msgs.at(-1)?.k === 'S') mismatch = `${state.pending} requests left unanswered`;
  return { out: { mismatch, decided }, server };
}

describe('PostgreSQL protocol state (model-based)', () => {
  before(() => loadSqlParser());

  it('never disagrees with an honest server, and decides on exactly what the server runs', () => {
    fc.assert(
      fc.property(fc.array(msgArb, { minLength: 1, maxLength: 40 }), fc.array(fc.nat(6), { minLength: 1, maxLength: 8 }), (msgs, deliver) => {
        const { out, server } = drive(msgs, deliver);
        assert.equal(out.mismatch, null);
        assert.equal(out.decided.length, server.ran.length);
        server.ran.forEach((ran, i) => {
          if (ran !== null) assert.equal(out.decided[i], ran, `statement ${i}: the server ran ${ran}, the gateway decided on ${out.decided[i]}`);
        });
      }),
      { numRuns: 1500 },
    );
  });

  it('the reported swap: the refused Parse does not change what Bind s1 runs', () => {
    const msgs: Msg[] = [
      { k: 'P', name: 's1', sql: 'DELETE FROM t' },
      { k: 'S' },
      { k: 'P', name: 's1', sql: 'SELECT 1' },
      { k: 'S' },
      { k: 'B', portal: '', stmt: 's1' },
      { k: 'E', portal: '' },
      { k: 'S' },
    ];
    const { out, server } = drive(msgs, [0]);
    assert.equal(out.mismatch, null);
    assert.deepEqual(server.ran, ['DELETE FROM t']);
    assert.deepEqual(out.decided, ['DELETE FROM t']);
  });

  it('SQL PREPARE into a name the protocol binds is decided as the statement it prepared', () => {
    const msgs: Msg[] = [{ k: 'Q', sql: 'PREPARE s1 AS DELETE FROM t' }, { k: 'B', portal: '', stmt: 's1' }, { k: 'E', portal: '' }, { k: 'S' }];
    const { out, server } = drive(msgs, [0]);
    assert.equal(out.mismatch, null);
    assert.deepEqual(server.ran, [null, 'DELETE FROM t']);
    assert.equal(out.decided[1], 'DELETE FROM t');
  });

  it('catches a server that answers unlike PostgreSQL', () => {
    // A server that accepts a Parse into a name in use (the swap, from the server side).
    const swap: Msg[] = [{ k: 'P', name: 's1', sql: 'DELETE FROM t' }, { k: 'S' }, { k: 'P', name: 's1', sql: 'SELECT 1' }, { k: 'S' }];
    const a = drive(swap, [9], new ReferenceServer(), (r, i) => (i === 2 ? simple(BackendCode.ParseComplete) : r));
    assert.match(a.out.mismatch ?? '', /already exists/);
    // Rows where an error was due (an Execute of a portal that never existed).
    const ghost: Msg[] = [{ k: 'E', portal: 'p1' }, { k: 'S' }];
    const b = drive(ghost, [9], new ReferenceServer(), (r, i) => (i === 0 ? complete('DELETE 3') : r));
    assert.match(b.out.mismatch ?? '', /not the one the gateway decided on/);
    // A transaction status no message in the segment could have produced.
    const status: Msg[] = [{ k: 'P', name: '', sql: 'SELECT 1' }, { k: 'S' }];
    const c = drive(status, [9], new ReferenceServer(), (r, i) => (i === 1 ? ready('T') : r));
    assert.match(c.out.mismatch ?? '', /transaction status T/);
    // A PREPARE that completes as something else.
    const tag: Msg[] = [{ k: 'Q', sql: 'PREPARE s1 AS DELETE FROM t' }];
    const d = drive(tag, [9], new ReferenceServer(), (r, i) => (i === 0 ? complete('DELETE 3') : r));
    assert.match(d.out.mismatch ?? '', /expected PREPARE/);
  });
});
