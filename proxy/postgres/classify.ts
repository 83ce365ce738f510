/**
 * SQL statement classification with PostgreSQL's own parser (libpg_query compiled to WASM): each
 * statement's classes (shared/config.ts SqlClass) and the tables it touches. SQL the parser rejects
 * is `unknown`, which a hold or deny policy treats as risky (fail closed).
 */
import { loadModule, parseSync } from 'libpg-query';
import type { SqlClass } from '../../shared/config';

export interface ClassifiedStatement {
  /** The statement's own text (a slice of the query string). */
  sql: string;
  classes: SqlClass[];
  /** Relations named by the statement, schema-qualified when written so (`public.users`). */
  tables: string[];
  /** `COPY … TO`: what the output rows hold, so they can be masked column by column. */
  copyOut?: CopyOutShape;
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
  'VariableShowStmt', 'VacuumStmt', 'ClusterStmt', 'CheckPointStmt', 'LockStmt', 'ListenStmt', 'UnlistenStmt', 'NotifyStmt',
  'DiscardStmt', 'DeallocateStmt', 'LoadStmt', 'FetchStmt', 'ClosePortalStmt', 'ReindexStmt', 'CallStmt', 'ConstraintsSetStmt',
]);

const LRU_MAX = 2000;
/** Classifications by statement shape: byte ranges of each statement plus its classes and tables. */
const cache = new Map<string, { ranges: [number, number][]; statements: Omit<ClassifiedStatement, 'sql'>[]; error?: string }>();

/** Characters after which a digit run is part of a name (`t1`, `$1`), not a numeric literal. */
const NUMBER_RE = /(?<![\w$])\d[\d.]*/g;
/** Quotes, comments, escapes and non-ASCII names change what a digit means; such text is cached by its exact value only. */
const TRICKY_RE = /['"`$\\]|--|\/\*|[^\t\n\r -~]/;

/**
 * The text with every numeric literal's digits replaced by zeros, same length: statements that
 * differ only in numbers (`WHERE aid = 1234`) classify alike, so they share one cache entry and the
 * byte offsets of the statements stay valid for the original text. Text with quotes, dollar quoting
 * or comments is left as it is.
 */
function shapeOf(sql: string): string {
  if (TRICKY_RE.test(sql)) return sql;
  return sql.replace(NUMBER_RE, (m) => m.replace(/\d/g, '0'));
}

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

function classifyUncached(sql: string): { ranges: [number, number][]; statements: Omit<ClassifiedStatement, 'sql'>[]; error?: string } {
  if (!loaded) throw new Error('the SQL parser is not loaded (call loadSqlParser first)');
  const length = Buffer.byteLength(sql);
  let tree: { stmts?: { stmt?: Node; stmt_location?: number; stmt_len?: number }[] };
  try {
    tree = parseSync(sql) as typeof tree;
  } catch (err) {
    return { ranges: [[0, length]], statements: [{ classes: ['unknown'], tables: [] }], error: err instanceof Error ? err.message : String(err) };
  }
  const ranges: [number, number][] = [];
  const statements: Omit<ClassifiedStatement, 'sql'>[] = [];
  for (const s of tree.stmts ?? []) {
    if (!s.stmt) continue;
    const start = s.stmt_location ?? 0;
    const end = s.stmt_len ? start + s.stmt_len : length;
    const classes = new Set<SqlClass>();
    classifyNode(s.stmt, classes);
    if (classes.size === 0) classes.add('unknown');
    ranges.push([start, end]);
    const copyOut = copyOutShape(s.stmt, sql, start, end);
    statements.push({ classes: [...classes], tables: tablesOf(s.stmt), ...(copyOut ? { copyOut } : {}) });
  }
  return { ranges, statements };
}

function nodeType(n: Node): [string, Node] {
  const key = Object.keys(n)[0]!;
  return [key, (n[key] ?? {}) as Node];
}

function classifyNode(stmtNode: Node, out: Set<SqlClass>): void {
  const [type, n] = nodeType(stmtNode);
  const withClause = n['withClause'] as { ctes?: Node[] } | undefined;
  if (withClause?.ctes) {
    for (const cte of withClause.ctes) {
      const q = (cte['CommonTableExpr'] as Node | undefined)?.['ctequery'] as Node | undefined;
      if (!q) continue;
      const [qt] = nodeType(q);
      if (MODIFYING.has(qt)) out.add('data_modifying_cte');
      classifyNode(q, out);
    }
  }
  switch (type) {
    case 'SelectStmt':
      out.add('select');
      if (n['intoClause']) out.add('ddl').add('create');
      for (const side of ['larg', 'rarg'] as const) if (n[side]) classifyNode({ SelectStmt: n[side] }, out);
      return;
    case 'InsertStmt':
      out.add('insert');
      if (n['selectStmt']) classifyNode(n['selectStmt'] as Node, out);
      return;
    case 'UpdateStmt':
      out.add('update');
      if (!n['whereClause']) out.add('update_without_where');
      return;
    case 'DeleteStmt':
      out.add('delete');
      if (!n['whereClause']) out.add('delete_without_where');
      return;
    case 'MergeStmt':
      out.add('merge');
      return;
    case 'CopyStmt':
      out.add('copy');
      if (n['query']) classifyNode(n['query'] as Node, out);
      return;
    case 'TruncateStmt':
      out.add('truncate');
      return;
    case 'GrantStmt':
    case 'GrantRoleStmt':
      out.add('dcl').add(n['is_grant'] ? 'grant' : 'revoke');
      return;
    case 'TransactionStmt':
      out.add('transaction');
      return;
    case 'VariableSetStmt':
      out.add('set');
      return;
    case 'ExplainStmt': {
      out.add('utility');
      const options = (n['options'] as Node[] | undefined) ?? [];
      const analyze = options.some((o) => {
        const d = o['DefElem'] as Node | undefined;
        return d?.['defname'] === 'analyze' && (d['arg'] === undefined || JSON.stringify(d['arg']).match(/true|on|1/i));
      });
      // EXPLAIN ANALYZE runs the statement; plain EXPLAIN only plans it.
      if (analyze && n['query']) classifyNode(n['query'] as Node, out);
      return;
    }
    case 'PrepareStmt':
      out.add('utility');
      if (n['query']) classifyNode(n['query'] as Node, out);
      return;
    case 'DeclareCursorStmt':
      out.add('utility');
      if (n['query']) classifyNode(n['query'] as Node, out);
      return;
    case 'CreateTableAsStmt':
      out.add('ddl').add('create');
      if (n['query']) classifyNode(n['query'] as Node, out);
      return;
    case 'ExecuteStmt':
      // A server-side prepared statement by name: what it does was decided earlier.
      out.add('utility').add('unknown');
      return;
    case 'DoStmt':
      // An anonymous code block can do anything.
      out.add('utility').add('unknown');
      return;
    case 'RuleStmt':
      out.add('ddl').add('create');
      return;
    case 'RenameStmt':
    case 'CommentStmt':
    case 'SecLabelStmt':
    case 'AlterObjectSchemaStmt':
    case 'AlterOwnerStmt':
    case 'RefreshMatViewStmt':
      out.add('ddl').add('alter');
      return;
  }
  if (DCL[type]) {
    for (const c of DCL[type]) out.add(c);
    return;
  }
  if (type.startsWith('Create') || type === 'IndexStmt' || type === 'ViewStmt' || type === 'DefineStmt' || type === 'CompositeTypeStmt') {
    out.add('ddl').add('create');
    return;
  }
  if (type.startsWith('Alter')) {
    out.add('ddl').add('alter');
    return;
  }
  if (type.startsWith('Drop')) {
    out.add('ddl').add('drop');
    return;
  }
  if (UTILITY.has(type)) {
    out.add('utility');
    return;
  }
  out.add('unknown');
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
  const i = (a['Integer'] as Node | undefined)?.['ival'];
  return i === undefined ? true : i !== 0;
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
