/**
 * SQL statement classification with PostgreSQL's own parser (libpg_query compiled to WASM): each
 * statement's classes (shared/config.ts SqlClass) by what it does, and the tables it touches. SQL
 * the parser rejects is `unknown`, which a hold or deny policy treats as risky (fail closed).
 *
 * Classes follow the effect, not the top-level node: a WHERE that folds to a constant true counts
 * as none, MERGE carries each WHEN action, drops inside ALTER carry `drop`, DO blocks carry their
 * statements, EXPLAIN ANALYZE / PREPARE / COPY carry what they run. Calls of functions and
 * operators are listed (`calls`, `operators`) so the catalog can fold their bodies in
 * (./effects.ts); `read_only` is only given here when there is nothing left to resolve.
 */
import { loadModule, parseSync } from 'libpg-query';
import type { SqlClass } from '../../shared/config';
import { plpgsqlStatements } from './plpgsql';

export interface ClassifiedStatement {
  /** The statement's own text (a slice of the query string). */
  sql: string;
  classes: SqlClass[];
  /** Relations named by the statement, schema-qualified when written so (`public.users`). */
  tables: string[];
  /** `COPY … TO`: what the output rows hold, so they can be masked column by column. */
  copyOut?: CopyOutShape;
  /** Functions and procedures the statement calls, names as written (`wipe`, `public.wipe`), parser case-folded. */
  calls?: string[];
  /** Operators the statement uses (`=`, `public.===`): a user-defined one runs a function too. */
  operators?: string[];
  /** Types named in casts (`x::mytype`): a domain's CHECK or a user-defined cast runs functions too. */
  types?: string[];
  /**
   * The statement itself only reads; it is `read_only` once every call, operator and table (views,
   * row-level-security policies) it uses is resolved through the catalog as free of side effects.
   */
  readOnlyIfResolved?: boolean;
}

/** The layout of `COPY … TO STDOUT` rows (https://www.postgresql.org/docs/current/sql-copy.html). */
export interface CopyOutShape {
  format: 'text' | 'csv' | 'binary';
  delimiter: string;
  null: string;
  quote: string;
  escape: string;
  header: boolean;
  /** A statement with the same output columns, for a Describe: `SELECT cols FROM rel`, or the inner query. */
  describeSql?: string;
}

export interface Classification {
  statements: ClassifiedStatement[];
  /** The parser's message when it could not parse the text. */
  error?: string;
}

let ready: Promise<void> | null = null;
let loaded = false;

/** Loads the WASM parser once; call before `classifySql`. */
export function loadSqlParser(): Promise<void> {
  ready ??= loadModule().then(() => {
    loaded = true;
  });
  return ready;
}

type Node = Record<string, unknown>;
type Classified = Omit<ClassifiedStatement, 'sql'>;

const MODIFYING = new Set(['InsertStmt', 'UpdateStmt', 'DeleteStmt', 'MergeStmt']);

/** Role and privilege statements: data control language. */
const DCL: Record<string, SqlClass[]> = {
  CreateRoleStmt: ['dcl', 'create'],
  AlterRoleStmt: ['dcl', 'alter'],
  AlterRoleSetStmt: ['dcl', 'alter'],
  DropRoleStmt: ['dcl', 'drop'],
  AlterDefaultPrivilegesStmt: ['dcl', 'alter'],
  ReassignOwnedStmt: ['dcl', 'alter'],
  DropOwnedStmt: ['dcl', 'drop'],
};

const UTILITY = new Set([
  'VariableShowStmt', 'VacuumStmt', 'ClusterStmt', 'CheckPointStmt', 'ListenStmt', 'UnlistenStmt', 'NotifyStmt',
  'DiscardStmt', 'DeallocateStmt', 'LoadStmt', 'FetchStmt', 'ClosePortalStmt', 'ReindexStmt', 'CallStmt', 'ConstraintsSetStmt',
]);

/** DDL whose result is code the server runs later, on other statements' behalf. */
const ROUTINE_DDL = new Set([
  'CreateFunctionStmt', 'AlterFunctionStmt', 'ViewStmt', 'RuleStmt', 'CreateTrigStmt', 'CreateEventTrigStmt', 'AlterEventTrigStmt',
  'CreateCastStmt', 'CreatePolicyStmt', 'AlterPolicyStmt', 'CreateTransformStmt', 'CreatePLangStmt', 'CreateConversionStmt',
  'AlterOperatorStmt', 'CreateOpClassStmt', 'CreateOpFamilyStmt', 'AlterOpFamilyStmt', 'AlterTypeStmt', 'CreateRangeStmt',
  // An extension's scripts create functions, operators, casts, … of their own.
  'CreateExtensionStmt', 'AlterExtensionStmt', 'AlterExtensionContentsStmt',
]);
/** Object kinds whose definition, name or schema decides which code runs (renaming a function can make it shadow another). */
const ROUTINE_OBJECTS = /OBJECT_(FUNCTION|PROCEDURE|ROUTINE|AGGREGATE|OPERATOR|VIEW|MATVIEW|RULE|TRIGGER|EVENT_TRIGGER|CAST|POLICY|TYPE|DOMAIN|LANGUAGE|TRANSFORM|CONVERSION|OPCLASS|OPFAMILY)$/;
/** ALTER TABLE subcommands that change which code runs on the table's rows. */
const ROUTINE_ALTERS = /^AT_(Enable|Disable)(Trig|Rule|AlwaysTrig|ReplicaTrig|AlwaysRule|ReplicaRule|TrigAll|TrigUser|RowSecurity)|^AT_(Force|NoForce)RowSecurity/;

/**
 * Built-in functions whose effect reaches past the statement's own rows: sequences, settings,
 * other backends, large objects, server files, locks, notifications, replication, remote SQL.
 */
const SIDE_EFFECT_FUNCTIONS = new Set([
  'nextval', 'setval', 'set_config', 'pg_terminate_backend', 'pg_cancel_backend', 'pg_reload_conf', 'pg_rotate_logfile',
  'pg_log_backend_memory_contexts', 'pg_notify', 'pg_switch_wal', 'pg_create_restore_point', 'pg_backup_start', 'pg_backup_stop',
  'pg_promote', 'pg_import_system_collations', 'loread', 'lowrite', 'txid_current', 'pg_current_xact_id', 'setseed',
]);
const SIDE_EFFECT_PREFIX = /^(lo_|dblink|pg_advisory|pg_try_advisory|pg_create_.*slot|pg_drop_replication_slot|pg_replication_|pg_stat_reset|pg_file_|pg_ls_|pg_read_|pg_write|pg_sleep|pg_logical_|pg_wal_replay_|pg_sync_replication_slots)/;
/** Built-ins that run SQL passed as a string: what they do cannot be known from the statement. */
const DYNAMIC_SQL_FUNCTIONS = /^(query_to_xml|query_to_xml_and_xmlschema|query_to_xmlschema|ts_stat|ts_rewrite|dblink.*)$/;

/** The class a built-in function carries by name, if it has one of its own. */
export function builtinFunctionClasses(name: string): SqlClass[] {
  const out: SqlClass[] = [];
  if (SIDE_EFFECT_FUNCTIONS.has(name) || SIDE_EFFECT_PREFIX.test(name)) out.push('side_effect');
  if (DYNAMIC_SQL_FUNCTIONS.test(name)) out.push('unknown');
  return out;
}

/** Settings that change whose privileges the session has. */
const ROLE_SETTINGS = new Set(['role', 'session_authorization']);

const LRU_MAX = 2000;
/** Classifications by statement shape: byte ranges of each statement plus its classes and tables. */
const cache = new Map<string, { ranges: [number, number][]; statements: Classified[]; error?: string }>();

/** Characters after which a digit run is part of a name (`t1`, `$1`), not a numeric literal. */
const NUMBER_RE = /(?<![\w$])\d[\d.]*/g;
/** Quotes, comments, escapes and non-ASCII names change what a digit means; such text is cached by its exact value only. */
const TRICKY_RE = /['"`$\\]|--|\/\*|[^\t\n\r -~]/;

/**
 * The text with every numeric literal's digits replaced by zeros, same length: statements that
 * differ only in numbers (`WHERE aid = 1234`) classify alike, so they share one cache entry and the
 * byte offsets of the statements stay valid for the original text. Text with quotes, dollar quoting
 * or comments is left as it is. A comparison of two number literals (`1 = 1` against `1 = 2`) folds
 * to a constant, so text where a number meets a comparison operator is cached by its exact value.
 */
function shapeOf(sql: string): string {
  if (TRICKY_RE.test(sql) || CONSTANT_COMPARISON_RE.test(sql)) return sql;
  return sql.replace(NUMBER_RE, (m) => m.replace(/\d/g, '0'));
}
/**
 * A numeric literal followed (past closing parentheses) by a comparison, IN, IS or a cast: its
 * value can decide whether a WHERE folds to a constant (`1 = 1` against `1 = 2`, `(1)::bool`).
 * So can an option's value (`EXPLAIN (ANALYZE 1)` runs the statement, `ANALYZE 0` does not).
 * A literal on the right of a comparison with a column (`aid = 1234`) does not match.
 */
const CONSTANT_COMPARISON_RE = /(?<![\w$])\d[\d.]*\)*\s*(=|<|>|!|::|\bin\b|\bis\b)|\banalyze\s+\d/i;

/** Classifies every statement in `sql` (a simple Query may hold several). */
export function classifySql(sql: string): Classification {
  const key = shapeOf(sql);
  let entry = cache.get(key);
  if (!entry) {
    entry = classifyUncached(key);
    if (cache.size >= LRU_MAX) cache.delete(cache.keys().next().value!);
    cache.set(key, entry);
  }
  const ascii = Buffer.byteLength(sql) === sql.length;
  const bytes = ascii ? null : Buffer.from(sql);
  return {
    statements: entry.statements.map((st, i) => {
      const [start, end] = entry.ranges[i]!;
      return { ...st, sql: (bytes ? bytes.toString('utf8', start, end) : sql.slice(start, end)).trim() };
    }),
    ...(entry.error ? { error: entry.error } : {}),
  };
}

function parseTree(sql: string): { stmts?: { stmt?: Node; stmt_location?: number; stmt_len?: number }[] } {
  if (!loaded) throw new Error('the SQL parser is not loaded (call loadSqlParser first)');
  return parseSync(sql) as ReturnType<typeof parseTree>;
}

function classifyUncached(sql: string): { ranges: [number, number][]; statements: Classified[]; error?: string } {
  const length = Buffer.byteLength(sql);
  let tree: ReturnType<typeof parseTree>;
  try {
    tree = parseTree(sql);
  } catch (err) {
    if (!loaded) throw err;
    return { ranges: [[0, length]], statements: [{ classes: ['unknown'], tables: [] }], error: err instanceof Error ? err.message : String(err) };
  }
  const ranges: [number, number][] = [];
  const statements: Classified[] = [];
  for (const s of tree.stmts ?? []) {
    if (!s.stmt) continue;
    const start = s.stmt_location ?? 0;
    const end = s.stmt_len ? start + s.stmt_len : length;
    ranges.push([start, end]);
    let classified: Classified;
    try {
      classified = classifyStatementNode(s.stmt);
    } catch (err) {
      // A tree shape the classifier does not expect: it cannot say what the statement does.
      classified = { classes: ['unknown'], tables: [] };
      statements.push(classified);
      return { ranges, statements, error: `the statement could not be classified: ${(err as Error).message}` };
    }
    const copyOut = copyOutShape(s.stmt, sql, start, end);
    statements.push({ ...classified, ...(copyOut ? { copyOut } : {}) });
  }
  return { ranges, statements };
}

/** What a statement and everything it runs adds up to, before the catalog is asked. */
interface Effect {
  classes: Set<SqlClass>;
  calls: Set<string>;
  operators: Set<string>;
  types: Set<string>;
  tables: Set<string>;
}

function newEffect(): Effect {
  return { classes: new Set(), calls: new Set(), operators: new Set(), types: new Set(), tables: new Set() };
}

/** Classes that leave a statement read-only. */
const READING = new Set<SqlClass>(['select', 'read_only']);

function finish(e: Effect): Classified {
  if (e.classes.size === 0) e.classes.add('unknown');
  e.classes.delete('read_only');
  const reads = [...e.classes].every((c) => READING.has(c));
  const pending = e.calls.size + e.operators.size + e.types.size + e.tables.size > 0;
  if (reads && !pending) e.classes.add('read_only');
  return {
    classes: [...e.classes],
    tables: [...e.tables],
    ...(e.calls.size ? { calls: [...e.calls] } : {}),
    ...(e.operators.size ? { operators: [...e.operators] } : {}),
    ...(e.types.size ? { types: [...e.types] } : {}),
    ...(reads && pending ? { readOnlyIfResolved: true } : {}),
  };
}

function classifyStatementNode(stmt: Node): Classified {
  const e = newEffect();
  classifyNode(stmt, e);
  collectCalls(stmt, e);
  for (const t of tablesOf(stmt)) e.tables.add(t);
  return finish(e);
}

/** Adds what another piece of SQL (a DO block's statement, a routine body) does to `into`. */
function mergeSql(sql: string, into: Effect): void {
  let tree: ReturnType<typeof parseTree>;
  try {
    tree = parseTree(sql);
  } catch {
    into.classes.add('unknown');
    return;
  }
  for (const s of tree.stmts ?? []) if (s.stmt) mergeNode(s.stmt, into);
}

function mergeNode(stmt: Node, into: Effect): void {
  const c = classifyStatementNode(stmt);
  for (const x of c.classes) into.classes.add(x);
  for (const x of c.calls ?? []) into.calls.add(x);
  for (const x of c.operators ?? []) into.operators.add(x);
  for (const x of c.types ?? []) into.types.add(x);
  for (const x of c.tables) into.tables.add(x);
}

/** Adds what a routine body in `language` runs to `into`; false when the language cannot be looked into. */
function mergeBody(language: string, body: string, into: Effect): boolean {
  if (language === 'sql') mergeSql(body, into);
  else if (language === 'plpgsql') {
    const block = plpgsqlStatements(body);
    if (block.dynamic) into.classes.add('unknown');
    // Repeated statements add nothing new: each distinct one is parsed once.
    for (const sql of new Set(block.sql)) mergeSql(sql, into);
  } else return false;
  return true;
}

/**
 * What running a routine or rule does, from its definition as `pg_get_functiondef` /
 * `pg_get_ruledef` print it; null when its language cannot be looked into (C, other languages).
 */
export function classifyDefinition(definition: string): Classified | null {
  try {
    return classifyDefinitionTree(definition);
  } catch {
    // A body the classifier cannot walk (nested past the stack, an unexpected tree): it cannot say.
    return { classes: ['unknown'], tables: [] };
  }
}

function classifyDefinitionTree(definition: string): Classified | null {
  let tree: ReturnType<typeof parseTree>;
  try {
    tree = parseTree(definition);
  } catch {
    return { classes: ['unknown'], tables: [] };
  }
  const e = newEffect();
  for (const s of tree.stmts ?? []) {
    if (!s.stmt) continue;
    const [type, n] = nodeType(s.stmt);
    if (type === 'CreateFunctionStmt') {
      const body = n['sql_body'] as Node | undefined;
      if (body) {
        for (const st of deepStatements(body)) mergeNode(st, e);
        continue;
      }
      const { language, source } = routineOptions(n['options']);
      if (source === undefined || !mergeBody(language ?? 'sql', source, e)) return null;
    } else if (type === 'RuleStmt') {
      for (const a of (n['actions'] as Node[] | undefined) ?? []) mergeNode(a, e);
      if (n['whereClause']) collectCalls(n['whereClause'] as Node, e);
    } else e.classes.add('unknown');
  }
  return finish(e);
}

/** The statement nodes of a `BEGIN ATOMIC … END` body (nested lists). */
function deepStatements(v: unknown): Node[] {
  if (Array.isArray(v)) return v.flatMap(deepStatements);
  if (!v || typeof v !== 'object') return [];
  const o = v as Node;
  if (o['List']) return deepStatements((o['List'] as Node)['items']);
  return [o];
}

function routineOptions(options: unknown): { language?: string; source?: string } {
  let language: string | undefined;
  let source: string | undefined;
  for (const o of (options as Node[] | undefined) ?? []) {
    const d = o['DefElem'] as Node | undefined;
    if (!d) continue;
    if (d['defname'] === 'language') language = optionText(d['arg'])?.toLowerCase();
    if (d['defname'] === 'as') {
      const arg = d['arg'] as Node | undefined;
      const items = ((arg?.['List'] as Node | undefined)?.['items'] as Node[] | undefined) ?? (arg ? [arg] : []);
      // Two items is `AS 'obj_file', 'link_symbol'` (a C function): nothing to look into.
      source = items.length === 1 ? optionText(items[0]) : undefined;
    }
  }
  return { language, source };
}

function nodeType(n: Node): [string, Node] {
  const key = Object.keys(n)[0]!;
  return [key, (n[key] ?? {}) as Node];
}

/** Every function call, operator and locking clause anywhere in a tree (subqueries, WHERE, defaults, RETURNING…). */
function collectCalls(root: Node, e: Effect): void {
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) {
      for (const x of v) walk(x);
      return;
    }
    if (!v || typeof v !== 'object') return;
    const o = v as Node;
    for (const [k, child] of Object.entries(o)) {
      // `funccall` is CALL's procedure, written as a FuncCall without the wrapper.
      if ((k === 'FuncCall' || k === 'funccall') && child && typeof child === 'object') {
        const parts = nameParts((child as Node)['funcname']);
        if (parts.length) {
          e.calls.add(parts.join('.'));
          const bare = parts.length === 1 || parts[0] === 'pg_catalog' ? parts[parts.length - 1]! : '';
          for (const c of builtinFunctionClasses(bare)) e.classes.add(c);
          if (bare === 'set_config') {
            // set_config('role', …) is SET ROLE; a name that is not a literal could be.
            const first = ((child as Node)['args'] as Node[] | undefined)?.[0];
            const v = first ? constantValue(first) : NONE;
            if (typeof v !== 'string' || ROLE_SETTINGS.has(v.trim().toLowerCase())) e.classes.add('set_role');
          }
        }
      } else if ((k === 'A_Expr' || k === 'SubLink') && child && typeof child === 'object') {
        const name = nameParts((child as Node)[k === 'A_Expr' ? 'name' : 'operName']);
        if (name.length) e.operators.add(name.join('.'));
      } else if (k === 'TypeCast' && child && typeof child === 'object') {
        // Types the parser spells with pg_catalog (int, boolean, varchar, …) are the built-in ones.
        const name = nameParts(((child as Node)['typeName'] as Node | undefined)?.['names']);
        if (name.length && name[0] !== 'pg_catalog') e.types.add(name.join('.'));
      } else if (k === 'lockingClause' && Array.isArray(child) && child.length) e.classes.add('lock');
      walk(child);
    }
  };
  walk(root);
}

function nameParts(list: unknown): string[] {
  return ((list as Node[] | undefined) ?? []).map((p) => (p['String'] as Node | undefined)?.['sval']).filter((x): x is string => typeof x === 'string');
}

function classifyNode(stmtNode: Node, out: Effect): void {
  const classes = out.classes;
  const [type, n] = nodeType(stmtNode);
  const withClause = n['withClause'] as { ctes?: Node[] } | undefined;
  if (withClause?.ctes) {
    for (const cte of withClause.ctes) {
      const q = (cte['CommonTableExpr'] as Node | undefined)?.['ctequery'] as Node | undefined;
      if (!q) continue;
      const [qt] = nodeType(q);
      if (MODIFYING.has(qt)) classes.add('data_modifying_cte');
      classifyNode(q, out);
    }
  }
  switch (type) {
    case 'SelectStmt':
      classes.add('select');
      if (n['intoClause']) classes.add('ddl').add('create');
      for (const side of ['larg', 'rarg'] as const) if (n[side]) classifyNode({ SelectStmt: n[side] }, out);
      return;
    case 'ReturnStmt':
      // `RETURN expr`, the SQL-standard body of a function: it evaluates the expression.
      classes.add('select');
      return;
    case 'InsertStmt':
      classes.add('insert');
      if (n['selectStmt']) classifyNode(n['selectStmt'] as Node, out);
      if ((n['onConflictClause'] as Node | undefined)?.['action'] === 'ONCONFLICT_UPDATE') classes.add('update');
      return;
    case 'UpdateStmt':
      classes.add('update');
      if (everyRow(n['whereClause'] as Node | undefined, targetNames(n, 'fromClause'))) classes.add('update_without_where');
      return;
    case 'DeleteStmt':
      classes.add('delete');
      if (everyRow(n['whereClause'] as Node | undefined, targetNames(n, 'usingClause'))) classes.add('delete_without_where');
      return;
    case 'MergeStmt': {
      classes.add('merge');
      // An ON that names only the source matches every target row (or none).
      const allMatch = everyRow(n['joinCondition'] as Node | undefined, namesOfTarget(n));
      for (const w of (n['mergeWhenClauses'] as Node[] | undefined) ?? []) {
        const c = (w['MergeWhenClause'] as Node | undefined) ?? {};
        const cmd = c['commandType'];
        const unconditional = everyRow(c['condition'] as Node | undefined);
        // WHEN NOT MATCHED BY SOURCE acts on the target rows the source does not match: with an
        // empty source, every row; the join condition cannot bound it.
        const bySource = c['matchKind'] === 'MERGE_WHEN_NOT_MATCHED_BY_SOURCE';
        const all = (allMatch || bySource) && unconditional;
        if (cmd === 'CMD_DELETE') {
          classes.add('delete');
          if (all) classes.add('delete_without_where');
        } else if (cmd === 'CMD_UPDATE') {
          classes.add('update');
          if (all) classes.add('update_without_where');
        } else if (cmd === 'CMD_INSERT') classes.add('insert');
      }
      return;
    }
    case 'CopyStmt':
      classes.add('copy');
      if (n['is_from']) classes.add('insert');
      if (n['query']) classifyNode(n['query'] as Node, out);
      // A server-side file or program: the server reads or writes outside the database; a program can do anything.
      if (n['filename'] !== undefined || n['is_program']) classes.add('side_effect');
      if (n['is_program']) classes.add('unknown');
      return;
    case 'TruncateStmt':
      classes.add('truncate');
      return;
    case 'GrantStmt':
    case 'GrantRoleStmt':
      classes.add('dcl').add(n['is_grant'] ? 'grant' : 'revoke');
      return;
    case 'TransactionStmt':
      classes.add('transaction');
      return;
    case 'VariableSetStmt':
      classes.add('set');
      if (ROLE_SETTINGS.has(String(n['name'] ?? '').toLowerCase())) classes.add('set_role');
      return;
    case 'LockStmt':
      classes.add('utility').add('lock');
      return;
    case 'NotifyStmt':
      classes.add('utility').add('side_effect');
      return;
    case 'AlterSystemStmt':
      // Writes the server's configuration file.
      classes.add('ddl').add('alter').add('side_effect');
      return;
    case 'LoadStmt':
      // Loads a shared library into the server: what it does cannot be seen.
      classes.add('utility').add('unknown');
      return;
    case 'ExplainStmt': {
      classes.add('utility');
      const options = (n['options'] as Node[] | undefined) ?? [];
      const analyze = options.some((o) => {
        const d = o['DefElem'] as Node | undefined;
        return d?.['defname'] === 'analyze' && optionOn(d['arg']);
      });
      // EXPLAIN ANALYZE runs the statement; plain EXPLAIN only plans it.
      if (analyze && n['query']) classifyNode(n['query'] as Node, out);
      return;
    }
    case 'PrepareStmt':
      classes.add('utility');
      if (n['query']) classifyNode(n['query'] as Node, out);
      return;
    case 'DeclareCursorStmt':
      classes.add('utility');
      if (n['query']) classifyNode(n['query'] as Node, out);
      return;
    case 'CreateTableAsStmt':
      classes.add('ddl').add('create');
      if (n['query']) classifyNode(n['query'] as Node, out);
      return;
    case 'ExecuteStmt':
      // A server-side prepared statement by name: what it does was decided earlier.
      classes.add('utility').add('unknown');
      return;
    case 'DoStmt': {
      const { language, source } = routineOptions(n['args']);
      // An anonymous block in a language the gateway cannot read can do anything.
      if (source === undefined || !mergeBody(language ?? 'plpgsql', source, out)) classes.add('unknown');
      if (classes.size === 0) classes.add('utility');
      return;
    }
    case 'AlterTableStmt': {
      classes.add('ddl').add('alter');
      for (const c of (n['cmds'] as Node[] | undefined) ?? []) {
        const cmd = (c['AlterTableCmd'] as Node | undefined) ?? {};
        const sub = String(cmd['subtype'] ?? '');
        // DROP COLUMN / CONSTRAINT / DEFAULT / NOT NULL / EXPRESSION / IDENTITY, NO INHERIT, DETACH PARTITION.
        if (/^AT_Drop|^AT_DetachPartition/.test(sub) || (sub === 'AT_ColumnDefault' && !cmd['def'])) classes.add('drop');
        // ALTER COLUMN … TYPE rewrites the column in every row (`USING NULL` empties it).
        if (sub === 'AT_AlterColumnType') classes.add('update').add('update_without_where');
        if (ROUTINE_ALTERS.test(sub)) classes.add('routine_ddl');
        if (cmd['def']) collectCalls(cmd['def'] as Node, out);
      }
      return;
    }
    case 'RenameStmt':
    case 'CommentStmt':
    case 'SecLabelStmt':
    case 'AlterObjectSchemaStmt':
    case 'AlterOwnerStmt':
    case 'RefreshMatViewStmt': {
      classes.add('ddl').add('alter');
      const kind = String(n['renameType'] ?? n['objectType'] ?? '');
      if (type !== 'CommentStmt' && type !== 'SecLabelStmt' && ROUTINE_OBJECTS.test(kind)) classes.add('routine_ddl');
      return;
    }
  }
  if (ROUTINE_DDL.has(type) || (type === 'DefineStmt' && /OPERATOR|AGGREGATE|TYPE/.test(String(n['kind'])))) {
    classes.add('ddl').add('routine_ddl').add(type.startsWith('Alter') ? 'alter' : 'create');
    return;
  }
  if (DCL[type]) {
    for (const c of DCL[type]) classes.add(c);
    return;
  }
  if (type.startsWith('Create') || type === 'IndexStmt' || type === 'DefineStmt' || type === 'CompositeTypeStmt') {
    classes.add('ddl').add('create');
    return;
  }
  if (type.startsWith('Alter')) {
    classes.add('ddl').add('alter');
    return;
  }
  if (type.startsWith('Drop')) {
    classes.add('ddl').add('drop');
    if (type === 'DropStmt' && ROUTINE_OBJECTS.test(String(n['removeType']))) classes.add('routine_ddl');
    return;
  }
  if (UTILITY.has(type)) {
    classes.add('utility');
    return;
  }
  classes.add('unknown');
}

// ---------------------------------------------------------------- constant folding

type Value = string | number | boolean | null;
const NONE = Symbol('not constant');

/** The value of a constant expression (literals, casts of literals), or NONE. */
function constantValue(node: Node): Value | typeof NONE {
  const [type, n] = nodeType(node);
  if (type === 'A_Const') {
    if (n['isnull']) return null;
    if (n['boolval']) return Boolean((n['boolval'] as Node)['boolval']);
    if (n['ival']) return Number((n['ival'] as Node)['ival'] ?? 0);
    if (n['fval']) return Number((n['fval'] as Node)['fval']);
    if (n['sval']) return String((n['sval'] as Node)['sval'] ?? '');
    if (n['bsval']) return String((n['bsval'] as Node)['bsval'] ?? '');
    return NONE;
  }
  if (type === 'TypeCast') {
    const v = constantValue((n['arg'] as Node | undefined) ?? {});
    if (v === NONE || v === null) return v;
    const typeName = nameParts((n['typeName'] as Node | undefined)?.['names']).pop() ?? '';
    if (typeName === 'bool' || typeName === 'boolean') return asBoolean(v) ?? NONE;
    if (/^(int[248]?|integer|smallint|bigint|numeric|float[48]|real|double)$/.test(typeName)) {
      const x = typeof v === 'boolean' ? (v ? 1 : 0) : Number(v);
      return Number.isNaN(x) ? NONE : x;
    }
    if (/^(text|varchar|bpchar|char|name)$/.test(typeName)) return String(v);
    return NONE;
  }
  if (type === 'BoolExpr' || type === 'A_Expr' || type === 'NullTest' || type === 'BooleanTest' || type === 'SubLink') {
    if (constantTrue(node)) return true;
    if (constantFalse(node)) return false;
  }
  return NONE;
}

function asBoolean(v: Value): boolean | undefined {
  if (typeof v === 'boolean') return v;
  if (typeof v === 'number') return v !== 0;
  if (v === null) return undefined;
  const t = v.trim().toLowerCase();
  if (['t', 'tr', 'tru', 'true', 'y', 'ye', 'yes', 'on', '1'].includes(t)) return true;
  if (['f', 'fa', 'fal', 'fals', 'false', 'n', 'no', 'of', 'off', '0'].includes(t)) return false;
  return undefined;
}

function compare(op: string, a: Value, b: Value): boolean | undefined {
  if (a === null || b === null) return undefined;
  const na = typeof a === 'boolean' ? Number(a) : Number(a);
  const nb = typeof b === 'boolean' ? Number(b) : Number(b);
  const numeric = !Number.isNaN(na) && !Number.isNaN(nb) && (typeof a !== 'string' || typeof b !== 'string');
  const [x, y] = numeric ? [na, nb] : [String(a), String(b)];
  switch (op) {
    case '=':
      return x === y;
    case '<>':
    case '!=':
      return x !== y;
    case '<':
      return x < y;
    case '>':
      return x > y;
    case '<=':
      return x <= y;
    case '>=':
      return x >= y;
  }
  return undefined;
}

/** Folds an expression as far as constants allow: true, false, or undefined (depends on the rows). */
function fold(node: Node): boolean | undefined {
  const [type, n] = nodeType(node);
  switch (type) {
    case 'A_Const':
    case 'TypeCast': {
      const v = constantValue(node);
      return v === NONE ? undefined : asBoolean(v);
    }
    case 'BoolExpr': {
      const args = ((n['args'] as Node[] | undefined) ?? []).map(fold);
      if (n['boolop'] === 'AND_EXPR') return args.includes(false) ? false : args.every((a) => a === true) ? true : undefined;
      if (n['boolop'] === 'OR_EXPR') return args.includes(true) ? true : args.every((a) => a === false) ? false : undefined;
      if (n['boolop'] === 'NOT_EXPR') return args[0] === undefined ? undefined : !args[0];
      return undefined;
    }
    case 'A_Expr': {
      const op = nameParts(n['name']).join('.');
      const l = n['lexpr'] ? constantValue(n['lexpr'] as Node) : NONE;
      if (n['kind'] === 'AEXPR_OP' && !n['lexpr'] && n['rexpr']) return undefined;
      if (n['kind'] === 'AEXPR_IN') {
        if (l === NONE) return undefined;
        const rexpr = n['rexpr'] as Node | Node[] | undefined;
        const items = Array.isArray(rexpr) ? rexpr : (((rexpr?.['List'] as Node | undefined)?.['items'] as Node[] | undefined) ?? []);
        const list = items.map(constantValue);
        if (list.some((v) => v === NONE)) return undefined;
        const hit = list.some((v) => compare('=', l, v as Value) === true);
        return op === '=' ? hit : op === '<>' ? !hit : undefined;
      }
      const r = n['rexpr'] && !Array.isArray(n['rexpr']) ? constantValue(n['rexpr'] as Node) : NONE;
      if (l === NONE || r === NONE) return undefined;
      if (n['kind'] === 'AEXPR_OP') return compare(op, l, r);
      if (n['kind'] === 'AEXPR_DISTINCT') return l === null || r === null ? (l === null) !== (r === null) : compare('<>', l, r);
      if (n['kind'] === 'AEXPR_NOT_DISTINCT') return l === null || r === null ? (l === null) === (r === null) : compare('=', l, r);
      return undefined;
    }
    case 'NullTest': {
      const v = constantValue((n['arg'] as Node | undefined) ?? {});
      if (v === NONE) return undefined;
      return n['nulltesttype'] === 'IS_NULL' ? v === null : v !== null;
    }
    case 'BooleanTest': {
      const inner = fold((n['arg'] as Node | undefined) ?? {});
      if (inner === undefined) return undefined;
      switch (n['booltesttype']) {
        case 'IS_TRUE':
          return inner;
        case 'IS_NOT_TRUE':
          return !inner;
        case 'IS_FALSE':
          return !inner;
        case 'IS_NOT_FALSE':
          return inner;
        case 'IS_UNKNOWN':
          return false;
        case 'IS_NOT_UNKNOWN':
          return true;
      }
      return undefined;
    }
    case 'SubLink': {
      // EXISTS (SELECT …) with no FROM and no WHERE always has its one row; (SELECT true) is true.
      const sub = ((n['subselect'] as Node | undefined)?.['SelectStmt'] as Node | undefined) ?? undefined;
      if (!sub || sub['fromClause'] || sub['whereClause'] || sub['havingClause'] || sub['limitCount'] || sub['limitOffset'] || sub['valuesLists'] || sub['larg']) return undefined;
      if (n['subLinkType'] === 'EXISTS_SUBLINK') return true;
      if (n['subLinkType'] === 'EXPR_SUBLINK') {
        const targets = (sub['targetList'] as Node[] | undefined) ?? [];
        const val = (targets[0]?.['ResTarget'] as Node | undefined)?.['val'] as Node | undefined;
        return targets.length === 1 && val ? fold(val) : undefined;
      }
      return undefined;
    }
    case 'CoalesceExpr': {
      const args = ((n['args'] as Node[] | undefined) ?? []).map(fold);
      return args[0];
    }
  }
  return undefined;
}

/**
 * A condition that selects every row, as far as the text shows: none at all, one that folds to a
 * constant true, or one that does not depend on the row (no column reference: `$1::bool` with a
 * parameter, `now() > '2000-01-01'`, `EXISTS (SELECT 1 FROM other)`) and is not a constant false —
 * such a condition is the same for every row, so it affects all of them or none.
 */
function everyRow(cond: Node | undefined, target?: Set<string>): boolean {
  if (!cond) return true;
  const f = fold(cond);
  if (f !== undefined) return f;
  return !dependsOnRow(cond, target);
}

/**
 * With `UPDATE … FROM` / `DELETE … USING` a condition that names only the other tables
 * (`WHERE u.id = 1`) is the same for every target row: the names the target goes by, so only
 * references to it (or unqualified columns, which may be its) count as depending on the row.
 */
function targetNames(n: Node, joined: 'fromClause' | 'usingClause'): Set<string> | undefined {
  return (n[joined] as Node[] | undefined)?.length ? namesOfTarget(n) : undefined;
}

/** The target relation's name and alias. */
function namesOfTarget(n: Node): Set<string> {
  const rel = (n['relation'] as Node | undefined) ?? {};
  const alias = (rel['alias'] as Node | undefined)?.['aliasname'];
  return new Set([String(rel['relname'] ?? ''), ...(typeof alias === 'string' ? [alias] : [])]);
}

/**
 * Whether an expression refers to the row (a column, `CURRENT OF`); conservative: unsure counts as
 * yes. With `target`, a column qualified by another table's name does not count.
 */
function dependsOnRow(node: unknown, target?: Set<string>): boolean {
  if (Array.isArray(node)) return node.some((x) => dependsOnRow(x, target));
  if (!node || typeof node !== 'object') return false;
  for (const [k, v] of Object.entries(node as Node)) {
    if (k === 'ColumnRef') {
      if (!target) return true;
      const fields = ((v as Node)['fields'] as Node[] | undefined) ?? [];
      const names = fields.map((f) => (f['String'] as Node | undefined)?.['sval']);
      // `col` may be the target's; `t.col`, `s.t.col` name their table.
      if (names.length < 2 || names.some((x) => typeof x !== 'string')) return true;
      if (target.has(String(names[names.length - 2]))) return true;
      continue;
    }
    if (k === 'CurrentOfExpr' || k === 'A_Indirection' || k === 'GroupingFunc') return true;
    if (dependsOnRow(v, target)) return true;
  }
  return false;
}

/** A WHERE / ON that holds for every row: `true`, `1 = 1`, `'a' = 'a'`, `x OR true`, `NOT false`, casts of constants, … */
export function constantTrue(node: Node): boolean {
  return fold(node) === true;
}

function constantFalse(node: Node): boolean {
  return fold(node) === false;
}

/** Relation names in a statement tree (RangeVar nodes, DROP object lists), CTE names excluded. */
function tablesOf(root: Node): string[] {
  const tables = new Set<string>();
  const ctes = new Set<string>();
  const walk = (v: unknown, parentKey: string): void => {
    if (Array.isArray(v)) {
      for (const x of v) walk(x, parentKey);
      return;
    }
    if (!v || typeof v !== 'object') return;
    const o = v as Node;
    if (typeof o['ctename'] === 'string') ctes.add(o['ctename']);
    for (const [k, child] of Object.entries(o)) {
      if (k === 'RangeVar' && child && typeof child === 'object') {
        const rv = child as Node;
        const name = rv['schemaname'] ? `${String(rv['schemaname'])}.${String(rv['relname'])}` : String(rv['relname']);
        tables.add(name);
        continue;
      }
      if (k === 'relation' && child && typeof child === 'object' && typeof (child as Node)['relname'] === 'string') {
        const rv = child as Node;
        tables.add(rv['schemaname'] ? `${String(rv['schemaname'])}.${String(rv['relname'])}` : String(rv['relname']));
        continue;
      }
      walk(child, k);
    }
  };
  walk(root, '');
  const [type, n] = nodeType(root);
  if (type === 'DropStmt' && /TABLE|VIEW|SEQUENCE|INDEX|MATVIEW|FOREIGN_TABLE/.test(String(n['removeType']))) {
    for (const obj of (n['objects'] as Node[] | undefined) ?? []) {
      const items = ((obj['List'] as Node | undefined)?.['items'] as Node[] | undefined) ?? [];
      const parts = items.map((i) => String((i['String'] as Node | undefined)?.['sval'] ?? ''));
      if (parts.length) tables.add(parts.join('.'));
    }
  }
  return [...tables].filter((t) => !ctes.has(t));
}

function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

function optionText(arg: unknown): string | undefined {
  const a = arg as Node | undefined;
  const str = a?.['String'] as Node | undefined;
  if (str && typeof str['sval'] === 'string') return str['sval'];
  return undefined;
}

function optionOn(arg: unknown): boolean {
  if (arg === undefined) return true;
  const a = arg as Node;
  if (a['Boolean']) return Boolean((a['Boolean'] as Node)['boolval']);
  const t = optionText(arg)?.toLowerCase();
  if (t !== undefined) return ['true', 'on', '1', 'match'].includes(t);
  // The parse tree leaves out zero values: `Integer: {}` is 0.
  if (a['Integer']) return Number((a['Integer'] as Node)['ival'] ?? 0) !== 0;
  return true;
}

/** What `COPY … TO` writes, or undefined for other statements (COPY FROM included). */
function copyOutShape(stmtNode: Node, sql: string, start: number, end: number): CopyOutShape | undefined {
  const [type, n] = nodeType(stmtNode);
  if (type !== 'CopyStmt' || n['is_from']) return undefined;
  const shape: CopyOutShape = { format: 'text', delimiter: '\t', null: '\\N', quote: '"', escape: '"', header: false };
  let delimiter: string | undefined;
  let nullText: string | undefined;
  let escape: string | undefined;
  for (const o of (n['options'] as Node[] | undefined) ?? []) {
    const d = o['DefElem'] as Node | undefined;
    if (!d) continue;
    const name = String(d['defname']);
    const v = optionText(d['arg']);
    if (name === 'format' && (v === 'csv' || v === 'binary' || v === 'text')) shape.format = v;
    else if (name === 'delimiter' && v !== undefined) delimiter = v;
    else if (name === 'null' && v !== undefined) nullText = v;
    else if (name === 'quote' && v !== undefined) shape.quote = v;
    else if (name === 'escape' && v !== undefined) escape = v;
    else if (name === 'header') shape.header = optionOn(d['arg']);
  }
  if (shape.format === 'csv') {
    shape.delimiter = delimiter ?? ',';
    shape.null = nullText ?? '';
    shape.escape = escape ?? shape.quote;
  } else {
    shape.delimiter = delimiter ?? '\t';
    shape.null = nullText ?? '\\N';
  }
  const rel = n['relation'] as Node | undefined;
  if (rel && typeof rel['relname'] === 'string') {
    const table = rel['schemaname'] ? `${quoteIdent(String(rel['schemaname']))}.${quoteIdent(rel['relname'])}` : quoteIdent(rel['relname']);
    const cols = ((n['attlist'] as Node[] | undefined) ?? []).map((a) => quoteIdent(String((a['String'] as Node | undefined)?.['sval'] ?? '')));
    shape.describeSql = `SELECT ${cols.length ? cols.join(', ') : '*'} FROM ${table}`;
  } else if (n['query']) {
    const text = Buffer.from(sql).toString('utf8', start, end);
    shape.describeSql = innerQueryOfCopy(text);
  }
  return shape;
}

/**
 * The text between the parentheses of `COPY ( query ) TO …`, honouring quotes, dollar quoting and
 * comments; undefined if the text does not have that shape.
 */
export function innerQueryOfCopy(text: string): string | undefined {
  let i = 0;
  const skipSpace = () => {
    for (;;) {
      while (i < text.length && /\s/.test(text[i]!)) i++;
      if (text.startsWith('--', i)) {
        const nl = text.indexOf('\n', i);
        i = nl < 0 ? text.length : nl + 1;
      } else if (text.startsWith('/*', i)) {
        const close = text.indexOf('*/', i + 2);
        if (close < 0) return;
        i = close + 2;
      } else return;
    }
  };
  skipSpace();
  if (text.slice(i, i + 4).toLowerCase() !== 'copy') return undefined;
  i += 4;
  skipSpace();
  if (text[i] !== '(') return undefined;
  const open = ++i;
  let depth = 1;
  while (i < text.length) {
    const c = text[i]!;
    if (c === "'" || c === '"') {
      const backslash = c === "'" && /[eE]$/.test(text.slice(0, i)) && !/\w[eE]$/.test(text.slice(Math.max(0, i - 2), i));
      i++;
      while (i < text.length) {
        if (backslash && text[i] === '\\') i += 2;
        else if (text[i] === c) {
          if (text[i + 1] === c) i += 2;
          else break;
        } else i++;
      }
      i++;
      continue;
    }
    if (c === '$') {
      const m = /^\$([A-Za-z_][A-Za-z0-9_]*)?\$/.exec(text.slice(i));
      if (m && !/[\w$]/.test(text[i - 1] ?? ' ')) {
        const close = text.indexOf(m[0], i + m[0].length);
        if (close < 0) return undefined;
        i = close + m[0].length;
        continue;
      }
    }
    if (text.startsWith('--', i)) {
      const nl = text.indexOf('\n', i);
      i = nl < 0 ? text.length : nl + 1;
      continue;
    }
    if (text.startsWith('/*', i)) {
      const close = text.indexOf('*/', i + 2);
      if (close < 0) return undefined;
      i = close + 2;
      continue;
    }
    if (c === '(') depth++;
    else if (c === ')' && --depth === 0) return text.slice(open, i).trim();
    i++;
  }
  return undefined;
}
