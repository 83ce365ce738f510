/**
 * The upstream's catalog, read over side connections the gateway opens with the connection's own
 * credential (one per listener and use, opened on first need), and cached:
 * - TableNameResolver: table names for RowDescription table OIDs, so masking rules such as
 *   `users.ssn` can match;
 * - RoutineCatalog: what the functions, operators and relations a statement uses run, so its
 *   classes follow its effect (./effects.ts).
 */
import type { SqlClass } from '../../shared/config';
import { forEachDataRowValue, parseErrorFields } from './backend-messages';
import { builtinFunctionClasses, type Classification, classifyDefinition, classifySql } from './classify';
import { type EffectLookup, effectOf, namesOf, type RelationEffect, type ResolvedEffect } from './effects';
import { buildBind, buildExecute, buildParse, buildSync } from './frontend-messages';
import type { RawMessage } from './message-buffer';
import { BackendCode } from './message-codes';
import { connectUpstream, terminateUpstream, type UpstreamSession, type UpstreamTarget } from './upstream';

export class CatalogError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CatalogError';
  }
}

/** A tiny sequential query runner on one upstream session (extended protocol, text results). */
class SideConnection {
  private session: UpstreamSession | null = null;
  private opening: Promise<UpstreamSession> | null = null;
  private chain: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly target: UpstreamTarget,
    private readonly database: string | undefined,
  ) {}

  private async open(): Promise<UpstreamSession> {
    if (this.session && !this.session.socket.destroyed) return this.session;
    this.opening ??= connectUpstream(this.target, { params: { application_name: 'custody-catalog' }, database: this.database }).then(
      (s) => {
        this.session = s;
        this.opening = null;
        s.socket.on('error', () => s.socket.destroy());
        return s;
      },
      (err: unknown) => {
        this.opening = null;
        throw err;
      },
    );
    return this.opening;
  }

  /** Runs one statement with text parameters; resolves with the rows as text. */
  query(sql: string, params: (string | null)[]): Promise<(string | null)[][]> {
    const run = this.chain.then(async () => {
      const s = await this.open();
      return new Promise<(string | null)[][]>((resolve, reject) => {
        const rows: (string | null)[][] = [];
        let error: Error | null = null;
        const handle = (m: RawMessage) => {
          if (m.code === BackendCode.DataRow) {
            const row: (string | null)[] = [];
            forEachDataRowValue(m.body, (_i, a, b) => row.push(a < 0 ? null : m.body.toString('utf8', a, b)));
            rows.push(row);
          } else if (m.code === BackendCode.ErrorResponse) error = new CatalogError(parseErrorFields(m.body).get('M') ?? 'catalog query failed');
          else if (m.code === BackendCode.ReadyForQuery) {
            done();
            if (error) reject(error);
            else resolve(rows);
          }
        };
        const onData = (chunk: Buffer) => {
          s.buffer.push(chunk);
          try {
            for (let m = s.buffer.next(); m; m = s.buffer.next()) handle(m);
          } catch (err) {
            done();
            s.socket.destroy();
            reject(err as Error);
          }
        };
        const onClose = () => {
          done();
          reject(new CatalogError('the catalog connection closed'));
        };
        const done = () => {
          s.socket.off('data', onData);
          s.socket.off('close', onClose);
        };
        s.socket.on('data', onData);
        s.socket.on('close', onClose);
        s.socket.write(Buffer.concat([buildParse('', sql), buildBind('', '', params), buildExecute(''), buildSync()]));
      });
    });
    this.chain = run.catch(() => undefined);
    return run;
  }

  close(): void {
    if (this.session) terminateUpstream(this.session.socket);
    this.session = null;
  }
}

/** A view's definition is looked up again after this long, so a replaced view is followed. */
const VIEW_TTL_MS = 30_000;

export class TableNameResolver {
  private readonly names = new Map<number, string>();
  /** Views and materialized views: their definition (`pg_get_viewdef`) and when it was read, for lineage. */
  private readonly views = new Map<number, { definition: string; at: number }>();
  /** Column names by attribute number, per table OID: what a renamed result column really is. */
  private readonly attributes = new Map<number, Map<number, string>>();
  private readonly side: SideConnection;

  constructor(target: UpstreamTarget, database?: string) {
    this.side = new SideConnection(target, database);
  }

  name(oid: number): string | undefined {
    return this.names.get(oid);
  }

  /**
   * The name of column `attnum` of relation `oid`, as the catalog has it: RowDescription reports a
   * result column's origin (table OID, attribute number) even when the query renamed it
   * (`SELECT ssn AS x`, a cursor's FETCH), so a column rule can match what the value really is.
   */
  columnName(oid: number, attnum: number): string | undefined {
    return this.attributes.get(oid)?.get(attnum);
  }

  /** The definition of view `oid` (a SELECT), when the OID is a view or materialized view. */
  viewDefinition(oid: number): string | undefined {
    return this.views.get(oid)?.definition;
  }

  /** OIDs in `oids` not yet known (or views whose definition is due to be read again). */
  missing(oids: number[]): number[] {
    // Asked at every RowDescription: a plain loop, and nothing built when all are known.
    const now = Date.now();
    let want: Set<number> | undefined;
    for (const o of oids) {
      if (o === 0) continue;
      if (this.names.has(o) && now - (this.views.get(o)?.at ?? now) <= VIEW_TTL_MS) continue;
      (want ??= new Set()).add(o);
    }
    return want ? [...want] : [];
  }

  /** Looks up and caches the names of `oids`; rejects with CatalogError when the catalog cannot be read. */
  async resolve(oids: number[]): Promise<void> {
    const want = this.missing(oids);
    if (want.length === 0) return;
    const rows = await this.side.query(
      "SELECT c.oid::text, c.relname::text, CASE WHEN c.relkind IN ('v', 'm') THEN pg_catalog.pg_get_viewdef(c.oid) END FROM pg_catalog.pg_class c WHERE c.oid = ANY($1::oid[])",
      [`{${want.join(',')}}`],
    );
    const now = Date.now();
    for (const [oid, name, definition] of rows) {
      if (!oid || !name) continue;
      this.names.set(Number(oid), name);
      if (definition) this.views.set(Number(oid), { definition, at: now });
      else this.views.delete(Number(oid));
    }
    const attrs = await this.side.query('SELECT a.attrelid::text, a.attnum::text, a.attname::text FROM pg_catalog.pg_attribute a WHERE a.attrelid = ANY($1::oid[]) AND a.attnum > 0 AND NOT a.attisdropped', [`{${want.join(',')}}`]);
    for (const o of want) this.attributes.set(o, new Map());
    for (const [rel, num, name] of attrs) if (rel && num && name) this.attributes.get(Number(rel))?.set(Number(num), name);
    // An OID the catalog does not know (dropped meanwhile) resolves to no name rather than asking again.
    for (const o of want) if (!this.names.has(o)) this.names.set(o, '');
  }

  close(): void {
    this.side.close();
  }
}

/** How long a resolution is trusted before the catalog is asked again (DDL that passes through drops it sooner). */
export const ROUTINE_CACHE_TTL_MS = 2_000;
/** How long statements wait for the catalog before they are decided without its answer. */
const CATALOG_TIMEOUT_MS = 5_000;
/** Routines calling routines calling …: deeper than this is not followed, and the rest is `unknown`. */
const MAX_DEPTH = 8;

interface RoutineRow {
  schema: string;
  name: string;
  kind: string;
  language: string;
  volatility: string;
  definition: string | null;
}

interface TypeRow {
  schema: string;
  name: string;
  /** Input/output functions outside pg_catalog (C): what they do cannot be seen. */
  opaque: boolean;
  /** User-defined cast functions to the type, `schema.name`. */
  casts: string[];
  /** A domain's CHECK expressions, as `SELECT <expr>`. */
  checks: string[];
}

interface RelationRow {
  schema: string;
  name: string;
  /** SQL run when the relation is read: view definitions, `SELECT <USING expression>`. */
  read: string[];
  /** Run when it is written: rule definitions, `SELECT <default / CHECK / WITH CHECK>`. */
  write: string[];
  /** Trigger functions and user-defined cast functions to its column types (assignment casts on write), `schema.name`. */
  triggers: string[];
}

/** Volatile built-ins that only read (clocks, random numbers, statistics views' functions). */
const HARMLESS_VOLATILE =
  /^(random|random_normal|clock_timestamp|timeofday|gen_random_uuid|uuidv4|uuidv7|currval|lastval|current_query|txid_current_if_assigned|txid_status|pg_current_xact_id_if_assigned|pg_xact_status|pg_xact_commit_timestamp.*|pg_last_committed_xact|pg_lock_status|pg_blocking_pids|pg_safe_snapshot_blocking_pids|pg_isolation_test_session_is_blocked|pg_show_all_settings|pg_show_all_file_settings|pg_show_replication_origin_status|pg_get_.*|pg_stat_(?!reset).*|pg_backend_pid|pg_postmaster_start_time|pg_conf_load_time|pg_is_in_recovery|pg_is_wal_replay_paused|pg_last_xact_replay_timestamp|pg_jit_available|pg_notification_queue_usage|pg_prepared_xact|pg_sequence_last_value|pg_partition_tree|pg_partition_ancestors|pg_control_.*|pg_hba_file_rules|pg_ident_file_mappings|pg_current_logfile|pg_collation_actual_version|pg_database_collation_actual_version|pg_(relation|total_relation|table|indexes|database|tablespace)_size|inet_client_addr|inet_client_port|pg_current_wal_.*|pg_last_wal_.*|cursor_to_xml|cursor_to_xmlschema|bernoulli|system|version)$/;

/** `nextval('seq'::regclass)` as pg_get_expr prints a serial or identity-like default. */
const SERIAL_DEFAULT = /^SELECT nextval\('(?:[^']|'')*'::regclass\)$/;

const splitName = (qualified: string): [string | null, string] => {
  const at = qualified.lastIndexOf('.');
  return at < 0 ? [null, qualified] : [qualified.slice(0, at), qualified.slice(at + 1)];
};

/**
 * What the routines, operators and relations statements use do, read from the upstream's catalog
 * (pg_proc, pg_operator, pg_class with its views, rules, policies, defaults, checks and triggers)
 * over a side connection, and cached for `ROUTINE_CACHE_TTL_MS`. The gateway cannot see a session's
 * search_path, so an unqualified name is resolved in every schema and the strictest match wins.
 */
export class RoutineCatalog {
  private readonly side: SideConnection;
  private readonly routines = new Map<string, { at: number; rows: RoutineRow[] }>();
  private readonly operators = new Map<string, { at: number; functions: string[] }>();
  private readonly relations = new Map<string, { at: number; rows: RelationRow[] }>();
  private readonly types = new Map<string, { at: number; rows: TypeRow[] }>();
  private readonly effects = new Map<string, ResolvedEffect | RelationEffect | 'resolving'>();
  /** The lookup under way, if any. */
  private inflight: Promise<boolean> | null = null;
  /** Set when a computation met a routine already being added up (recursion): its result is partial, so not kept. */
  private cycleHit = false;

  constructor(
    target: UpstreamTarget,
    database?: string,
    private readonly ttlMs = ROUTINE_CACHE_TTL_MS,
    private readonly now: () => number = Date.now,
  ) {
    this.side = new SideConnection(target, database);
  }

  /** Bumped whenever the cached answers change: folds made under one generation stay valid within it (effects.ts). */
  private generation = 0;

  /** Drops the computed effects: the rows they were computed from are changing. */
  private forgetEffects(): void {
    this.effects.clear();
    this.generation++;
  }

  /** Forgets everything (DDL passed through: functions, views, triggers may have changed). */
  invalidate(): void {
    this.routines.clear();
    this.operators.clear();
    this.relations.clear();
    this.types.clear();
    this.forgetEffects();
  }

  /**
   * Until when the cache can answer for `qualified` (0: it cannot now): an entry younger than the
   * TTL, which for a schema-qualified name must hold that schema (an object created since, outside
   * the gateway, is looked up again rather than reported missing).
   */
  private freshUntil(kind: 'routine' | 'operator' | 'type' | 'relation', qualified: string): number {
    const [schema, name] = splitName(qualified);
    const e = kind === 'routine' ? this.routines.get(name) : kind === 'operator' ? this.operators.get(name) : kind === 'type' ? this.types.get(name) : this.relations.get(name);
    if (e === undefined) return 0;
    if (schema !== null && kind !== 'operator' && !(e as { rows: { schema: string }[] }).rows.some((r) => r.schema === schema)) return 0;
    return e.at + this.ttlMs;
  }

  private fresh(kind: 'routine' | 'operator' | 'type' | 'relation', qualified: string): boolean {
    return this.now() < this.freshUntil(kind, qualified);
  }

  /**
   * Per statement shape (its tables array, which the classifier shares between statements that
   * differ only in literals): until when every name it uses is cached, under which generation.
   */
  private readonly freshness = new WeakMap<readonly string[], { generation: number; until: number; calls: unknown; operators: unknown; types: unknown }>();

  /** True when some name `c` uses is not cached or has expired. */
  needs(c: Classification): boolean {
    // On every statement's path: plain loops, no sets or arrays built.
    const now = this.now();
    for (const st of c.statements) {
      const known = this.freshness.get(st.tables);
      if (known && known.generation === this.generation && now < known.until && known.calls === st.calls && known.operators === st.operators && known.types === st.types) continue;
      let until = Infinity;
      if (st.calls) for (const n of st.calls) until = Math.min(until, this.freshUntil('routine', n));
      if (st.operators) for (const n of st.operators) until = Math.min(until, this.freshUntil('operator', n));
      if (st.types) for (const n of st.types) until = Math.min(until, this.freshUntil('type', n));
      for (const n of st.tables) until = Math.min(until, this.freshUntil('relation', n));
      if (until <= now) return true;
      this.freshness.set(st.tables, { generation: this.generation, until, calls: st.calls, operators: st.operators, types: st.types });
    }
    return false;
  }

  /**
   * Reads what the catalog says about every name `classifications` use, and what those use in
   * turn. A catalog that cannot be read leaves the names unresolved: the statements using them
   * fold to `unknown` (fail closed).
   */
  async resolve(classifications: Classification[]): Promise<void> {
    // Sessions asking at the same moment (a cache expiry) share the lookup in flight, then ask only
    // for what it did not cover; after a lookup that timed out they do not queue up behind another.
    while (this.inflight) {
      const answered = await this.inflight;
      if (!answered || !classifications.some((c) => this.needs(c))) return;
    }
    const round = this.resolveWithTimeout(classifications);
    this.inflight = round;
    try {
      await round;
    } finally {
      if (this.inflight === round) this.inflight = null;
    }
  }

  /** Resolves true when the catalog answered, false when it timed out. */
  private async resolveWithTimeout(classifications: Classification[]): Promise<boolean> {
    // A catalog that does not answer must not stall the client for good: after the timeout the
    // statements are decided with what is known (unresolved names fold to `unknown`), and the side
    // connection is dropped so the next lookup opens a fresh one.
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => {
        this.side.close();
        resolve(false);
      }, CATALOG_TIMEOUT_MS);
    });
    try {
      return await Promise.race([this.resolveNames(classifications).then(() => true), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  private async resolveNames(classifications: Classification[]): Promise<void> {
    const names = () => ({ routines: new Set<string>(), operators: new Set<string>(), types: new Set<string>(), relations: new Set<string>() });
    let want = names();
    const add = (into: ReturnType<typeof names>, c: Classification) => {
      const n = namesOf(c);
      for (const x of n.routines) into.routines.add(x);
      for (const x of n.operators) into.operators.add(x);
      for (const x of n.types) into.types.add(x);
      for (const x of n.relations) into.relations.add(x);
    };
    for (const c of classifications) add(want, c);
    try {
      for (let depth = 0; depth < MAX_DEPTH; depth++) {
        const bare = (names: Set<string>, kind: 'routine' | 'operator' | 'type' | 'relation') => [...new Set([...names].filter((n) => !this.fresh(kind, n)).map((n) => splitName(n)[1]))];
        const routines = bare(want.routines, 'routine');
        const operators = bare(want.operators, 'operator');
        const relations = bare(want.relations, 'relation');
        const types = bare(want.types, 'type');
        if (routines.length + operators.length + types.length + relations.length === 0) break;
        this.forgetEffects();
        const next = names();
        const follow = (c: Classification) => add(next, c);
        if (operators.length) {
          const rows = await this.side.query(
            `SELECT o.oprname::text, n.nspname::text || '.' || p.proname::text FROM pg_catalog.pg_operator o
               JOIN pg_catalog.pg_proc p ON p.oid = o.oprcode JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
              WHERE o.oprname::text IN (SELECT json_array_elements_text($1::json)) AND o.oprnamespace <> 'pg_catalog'::regnamespace`,
            [JSON.stringify(operators)],
          );
          const at = this.now();
          for (const o of operators) this.operators.set(o, { at, functions: [] });
          for (const [op, fn] of rows) if (op && fn) {
            this.operators.get(op)!.functions.push(fn);
            next.routines.add(fn);
          }
        }
        if (routines.length) {
          const rows = await this.side.query(
            `SELECT n.nspname::text, p.proname::text, p.prokind::text, l.lanname::text, p.provolatile::text,
                    CASE WHEN p.prokind IN ('f', 'p') AND l.lanname IN ('sql', 'plpgsql') THEN pg_catalog.pg_get_functiondef(p.oid) END
               FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace JOIN pg_catalog.pg_language l ON l.oid = p.prolang
              WHERE p.proname::text IN (SELECT json_array_elements_text($1::json))`,
            [JSON.stringify(routines)],
          );
          const at = this.now();
          for (const r of routines) this.routines.set(r, { at, rows: [] });
          for (const [schema, name, kind, language, volatility, definition] of rows) {
            const row: RoutineRow = { schema: schema ?? '', name: name ?? '', kind: kind ?? '', language: language ?? '', volatility: volatility ?? 'v', definition: definition ?? null };
            this.routines.get(row.name)?.rows.push(row);
            if (row.definition) {
              const body = classifyDefinition(row.definition);
              if (body) follow({ statements: [{ ...body, sql: '' }] });
            }
          }
        }
        if (types.length) {
          const rows = await this.side.query(
            `WITH ty AS (SELECT t.oid, n.nspname::text AS nsp, t.typname::text AS name, t.typinput, t.typoutput, t.typreceive, t.typsend FROM pg_catalog.pg_type t
                           JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace WHERE t.typname::text IN (SELECT json_array_elements_text($1::json)))
             SELECT nsp, name, 'found', NULL FROM ty
             UNION ALL SELECT nsp, name, 'opaque', NULL FROM ty WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_proc p
                         WHERE p.oid IN (ty.typinput, ty.typoutput, ty.typreceive, ty.typsend) AND p.pronamespace <> 'pg_catalog'::regnamespace)
             UNION ALL SELECT ty.nsp, ty.name, 'cast', pn.nspname::text || '.' || p.proname::text FROM ty JOIN pg_catalog.pg_cast c ON c.casttarget = ty.oid
                         JOIN pg_catalog.pg_proc p ON p.oid = c.castfunc JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace WHERE pn.nspname <> 'pg_catalog'
             UNION ALL SELECT ty.nsp, ty.name, 'check', 'SELECT ' || pg_catalog.pg_get_expr(k.conbin, 0) FROM ty JOIN pg_catalog.pg_constraint k ON k.contypid = ty.oid WHERE k.contype = 'c'`,
            [JSON.stringify(types)],
          );
          const row = objectRows(this.types, types, this.now(), (schema, name): TypeRow => ({ schema, name, opaque: false, casts: [], checks: [] }));
          for (const [schema, name, what, text] of rows) {
            const r = row(schema, name);
            if (what === 'opaque') r.opaque = true;
            else if (what === 'cast' && text) {
              r.casts.push(text);
              next.routines.add(text);
            } else if (what === 'check' && text) {
              r.checks.push(text);
              follow(classifySql(text));
            }
          }
        }
        if (relations.length) {
          const rows = await this.side.query(
            `WITH rel AS (SELECT c.oid, n.nspname::text AS nsp, c.relname::text AS name, c.relkind FROM pg_catalog.pg_class c
                            JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relname::text IN (SELECT json_array_elements_text($1::json)))
             SELECT nsp, name, 'found', NULL FROM rel
             UNION ALL SELECT nsp, name, 'read', pg_catalog.pg_get_viewdef(oid) FROM rel WHERE relkind IN ('v', 'm')
             UNION ALL SELECT r.nsp, r.name, 'rule', pg_catalog.pg_get_ruledef(w.oid) FROM rel r JOIN pg_catalog.pg_rewrite w ON w.ev_class = r.oid WHERE w.rulename <> '_RETURN'
             UNION ALL SELECT r.nsp, r.name, 'read', 'SELECT ' || pg_catalog.pg_get_expr(p.polqual, p.polrelid) FROM rel r JOIN pg_catalog.pg_policy p ON p.polrelid = r.oid WHERE p.polqual IS NOT NULL
             UNION ALL SELECT r.nsp, r.name, 'write', 'SELECT ' || pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid) FROM rel r JOIN pg_catalog.pg_policy p ON p.polrelid = r.oid WHERE p.polwithcheck IS NOT NULL
             UNION ALL SELECT r.nsp, r.name, 'write', 'SELECT ' || pg_catalog.pg_get_expr(d.adbin, d.adrelid) FROM rel r JOIN pg_catalog.pg_attrdef d ON d.adrelid = r.oid
             UNION ALL SELECT r.nsp, r.name, 'write', 'SELECT ' || pg_catalog.pg_get_expr(k.conbin, k.conrelid) FROM rel r JOIN pg_catalog.pg_constraint k ON k.conrelid = r.oid WHERE k.contype = 'c'
             UNION ALL SELECT r.nsp, r.name, 'write', 'SELECT ' || pg_catalog.pg_get_expr(k.conbin, 0) FROM rel r JOIN pg_catalog.pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
                         JOIN pg_catalog.pg_constraint k ON k.contypid = a.atttypid WHERE k.contype = 'c'
             UNION ALL SELECT r.nsp, r.name, 'trigger', cn.nspname::text || '.' || cp.proname::text FROM rel r JOIN pg_catalog.pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
                         JOIN pg_catalog.pg_cast c ON c.casttarget = a.atttypid JOIN pg_catalog.pg_proc cp ON cp.oid = c.castfunc JOIN pg_catalog.pg_namespace cn ON cn.oid = cp.pronamespace
                        WHERE cn.nspname <> 'pg_catalog'
             UNION ALL SELECT r.nsp, r.name, 'trigger', tn.nspname::text || '.' || tp.proname::text FROM rel r JOIN pg_catalog.pg_trigger t ON t.tgrelid = r.oid
                         JOIN pg_catalog.pg_proc tp ON tp.oid = t.tgfoid JOIN pg_catalog.pg_namespace tn ON tn.oid = tp.pronamespace WHERE t.tgenabled <> 'D' AND NOT t.tgisinternal`,
            [JSON.stringify(relations)],
          );
          const relationRow = objectRows(this.relations, relations, this.now(), (schema, name): RelationRow => ({ schema, name, read: [], write: [], triggers: [] }));
          for (const [schema, name, what, text] of rows) {
            const row = relationRow(schema, name);
            if (!text) continue;
            // A serial column's default advances its sequence: that is what inserting is, not a side effect.
            if (what === 'write' && SERIAL_DEFAULT.test(text)) continue;
            if (what === 'read') row.read.push(text);
            else if (what === 'write') row.write.push(text);
            else if (what === 'rule') row.write.push(text);
            else if (what === 'trigger') {
              row.triggers.push(text);
              next.routines.add(text);
            }
            if (what === 'rule') {
              const def = classifyDefinition(text);
              if (def) follow({ statements: [{ ...def, sql: '' }] });
            } else if (what !== 'trigger') follow(classifySql(text));
          }
        }
        want = next;
      }
    } catch (err) {
      if (!(err instanceof CatalogError) && !(err instanceof Error)) throw err;
      // Unresolved names fold to `unknown`; the statement is decided on that.
    }
    this.forgetEffects();
  }

  /** Answers from the cache (call `resolve` first); names it cannot answer are unresolved. */
  lookup(): EffectLookup {
    return (this.lookupFns ??= {
      generation: () => this.generation,
      routine: (name) => this.routineEffect(name),
      operator: (name) => this.operatorEffect(name),
      type: (name) => this.typeEffect(name),
      relation: (name) => this.relationEffect(name),
    });
  }

  /** The lookup functions, made once (asked for on every statement). */
  private lookupFns?: EffectLookup;

  private memo<T extends ResolvedEffect | RelationEffect>(key: string, empty: T, compute: () => T | undefined): T | undefined {
    const e = this.effects.get(key);
    // A routine that (indirectly) calls itself: its effect is being added up by the outer call.
    if (e === 'resolving') {
      this.cycleHit = true;
      return empty;
    }
    if (e) return e as T;
    const outer = this.cycleHit;
    this.cycleHit = false;
    this.effects.set(key, 'resolving');
    const v = compute();
    const partial = this.cycleHit;
    if (v && !partial) this.effects.set(key, v);
    else this.effects.delete(key);
    this.cycleHit = outer || partial;
    return v;
  }

  private routineEffect(qualified: string): ResolvedEffect | undefined {
    return this.memo<ResolvedEffect>(`f:${qualified}`, { classes: [], readOnly: true }, () => {
      const [schema, name] = splitName(qualified);
      const entry = this.routines.get(name);
      if (!entry) return undefined;
      const rows = entry.rows.filter((r) => schema === null || r.schema === schema);
      // No such routine: PostgreSQL will refuse the call, unless it was created in the client's open
      // transaction, which the gateway cannot see.
      if (rows.length === 0) return { classes: ['unknown'], readOnly: false };
      return union(rows.map((r) => this.rowEffect(r)));
    });
  }

  private rowEffect(r: RoutineRow): ResolvedEffect {
    const builtin = r.schema === 'pg_catalog';
    const own = builtinFunctionClasses(r.name);
    if (builtin && own.length) return { classes: own, readOnly: false };
    if (r.definition) {
      const body = classifyDefinition(r.definition);
      if (!body) return { classes: ['unknown'], readOnly: false };
      return effectOf(body, this.lookup());
    }
    if (builtin) {
      if (r.volatility !== 'v' || HARMLESS_VOLATILE.test(r.name)) return { classes: [], readOnly: true };
      return { classes: ['side_effect'], readOnly: false };
    }
    if (own.length) return { classes: own, readOnly: false };
    // User-defined aggregates and window functions run support functions the row does not show.
    if (r.kind === 'a' || r.kind === 'w') return { classes: ['unknown'], readOnly: false };
    // C and other languages the gateway cannot look into: trusted only when declared immutable or
    // stable (PostgreSQL itself refuses writes from those).
    if (r.volatility !== 'v' && r.kind !== 'p') return { classes: [], readOnly: true };
    return { classes: ['unknown'], readOnly: false };
  }

  private operatorEffect(qualified: string): ResolvedEffect | undefined {
    return this.memo<ResolvedEffect>(`o:${qualified}`, { classes: [], readOnly: true }, () => {
      const entry = this.operators.get(splitName(qualified)[1]);
      if (!entry) return undefined;
      // Built-in operators only: nothing to add. A user-defined operator of that name in any schema
      // may be the one the session's search_path picks.
      const effects = entry.functions.map((f) => this.routineEffect(f));
      if (effects.some((e) => e === undefined)) return undefined;
      return union(effects as ResolvedEffect[]);
    });
  }

  private typeEffect(qualified: string): ResolvedEffect | undefined {
    return this.memo<ResolvedEffect>(`t:${qualified}`, { classes: [], readOnly: true }, () => {
      const [schema, name] = splitName(qualified);
      const entry = this.types.get(name);
      if (!entry) return undefined;
      const rows = entry.rows.filter((r) => schema === null || r.schema === schema);
      // No such type: PostgreSQL refuses the cast (or the type was created in the open transaction).
      if (rows.length === 0) return { classes: ['unknown'], readOnly: false };
      const lookup = this.lookup();
      const effects: ResolvedEffect[] = [];
      for (const r of rows) {
        if (r.opaque) effects.push({ classes: ['unknown'], readOnly: false });
        for (const f of r.casts) effects.push(this.routineEffect(f) ?? { classes: ['unknown'], readOnly: false });
        for (const sql of r.checks) for (const st of classifySql(sql).statements) effects.push(effectOf(st, lookup));
      }
      return union(effects);
    });
  }

  private relationEffect(qualified: string): RelationEffect | undefined {
    const none = { classes: [], readOnly: true };
    return this.memo<RelationEffect>(`r:${qualified}`, { read: none, write: none }, () => {
      const [schema, name] = splitName(qualified);
      const entry = this.relations.get(name);
      if (!entry) return undefined;
      const rows = entry.rows.filter((r) => schema === null || r.schema === schema);
      if (rows.length === 0) return undefined;
      const lookup = this.lookup();
      const read: ResolvedEffect[] = [];
      const write: ResolvedEffect[] = [];
      for (const r of rows) {
        for (const sql of r.read) for (const st of classifySql(sql).statements) read.push(effectOf(st, lookup));
        for (const sql of r.write) {
          const def = sql.startsWith('SELECT ') ? classifySql(sql).statements : [classifyDefinition(sql) ?? { classes: ['unknown' as const], tables: [] }];
          for (const st of def) write.push(effectOf(st, lookup));
        }
        for (const t of r.triggers) write.push(this.routineEffect(t) ?? { classes: ['unknown'], readOnly: false });
      }
      return { read: union(read), write: union(write) };
    });
  }

  close(): void {
    this.side.close();
  }
}

/**
 * Starts a fresh cache entry for each of `names`, and returns how to get the one row per
 * schema-qualified object that the catalog's answer rows (`schema, name, …`) add to.
 */
function objectRows<T extends { schema: string; name: string }>(
  cache: Map<string, { at: number; rows: T[] }>,
  names: string[],
  at: number,
  make: (schema: string, name: string) => T,
): (schema: string | null | undefined, name: string | null | undefined) => T {
  for (const n of names) cache.set(n, { at, rows: [] });
  const found = new Map<string, T>();
  return (schema, name) => {
    const key = `${schema}.${name}`;
    let row = found.get(key);
    if (!row) {
      row = make(schema ?? '', name ?? '');
      found.set(key, row);
      cache.get(row.name)?.rows.push(row);
    }
    return row;
  };
}

function union(effects: ResolvedEffect[]): ResolvedEffect {
  const classes = new Set<SqlClass>();
  let readOnly = true;
  for (const e of effects) {
    for (const c of e.classes) classes.add(c);
    if (!e.readOnly) readOnly = false;
  }
  return { classes: [...classes], readOnly };
}
