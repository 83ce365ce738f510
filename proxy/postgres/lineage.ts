/**
 * Column lineage for masking: which base columns each result column of a statement is computed
 * from, read off PostgreSQL's own parse tree (libpg_query, loaded by classify.ts). A column rule
 * such as `users.ssn` then masks `reverse(ssn)`, `ssn || ''`, `upper(u.ssn)`, `ssn::text`,
 * `(SELECT ssn …)`, a CTE's or a subquery's renamed copy, and the columns of `COPY (query) TO`, not
 * only a column PostgreSQL reports as `users.ssn`.
 *
 * It also finds uses of a masked column other than a plain projection — in `WHERE`, `JOIN … ON`,
 * `GROUP BY`, `ORDER BY`, function arguments, `CREATE TABLE … AS`, `INSERT … SELECT`, `UPDATE … SET`,
 * `COPY … TO` a file — which leak the value without returning it (an oracle such as
 * `WHERE ssn LIKE '1%'`, a copy, an error that echoes it). Those statements get the class
 * `reads_masked`, which rules can hold or deny.
 *
 * This is data minimisation, not a guarantee: resolution is by name and errs on the side of
 * masking (an unqualified column that could come from a masked table counts as masked), views and
 * functions are not looked into, and where a result column's position cannot be worked out (two
 * `table.*` expansions around a computed column) the column counts as derived from every masked
 * column the statement reads.
 */
import { parseSync } from 'libpg-query';

/** A base column a value comes from; `table` undefined when the gateway cannot tell which table. */
export interface ColumnSource {
  table?: string;
  column: string;
}

/** A masked column pattern (`users.ssn`, `*.email` → {column: 'email'}, `users.*` → {table, column: '*'}). */
export interface MaskedColumn {
  table?: string;
  column: string;
}

export interface StatementLineage {
  /**
   * Per result column, in order: the base columns it derives from. `undefined` entries (a `*` over
   * a base table) are left to the table and column PostgreSQL reports. `width` is how many result
   * columns the list describes when there is no `*`; with stars, `resolve` maps a field count.
   */
  resolve(fieldCount: number): (ColumnSource[] | undefined)[];
  /** A masked column is used other than as a plain projection: the statement gets `reads_masked`. */
  readsMasked: boolean;
}

type Node = Record<string, unknown>;
type Taint = ColumnSource[];

interface Output {
  name: string;
  taint: Taint;
  /** A `*` over a base table: its width is known only from the RowDescription. */
  star?: true;
}

interface Rel {
  /** The name it is referred to by: its alias, else the relation name. */
  name: string;
  /** Base table (relation name, lower case) when it is one. */
  table?: string;
  /** Outputs of a subquery, CTE or VALUES list. */
  outputs?: Output[];
  /** A function in FROM or anything else whose columns the gateway cannot see into. */
  opaque?: true;
}

interface Scope {
  rels: Rel[];
  ctes: Map<string, Output[]>;
  parent?: Scope;
}

const key = (s: ColumnSource) => `${s.table ?? ''}\u0000${s.column}`;

function union(...lists: Taint[]): Taint {
  const seen = new Map<string, ColumnSource>();
  for (const l of lists) for (const s of l) seen.set(key(s), s);
  return [...seen.values()];
}

/** `s.column` `*` is a whole row (`row_to_json(u)`, `u.*` in an expression): every column of its table. */
export function sourceMatches(m: MaskedColumn, s: ColumnSource): boolean {
  if (m.column !== '*' && s.column !== '*' && m.column !== s.column.toLowerCase()) return false;
  return m.table === undefined || s.table === undefined || m.table === s.table.toLowerCase();
}

export function isMasked(masked: readonly MaskedColumn[], sources: readonly ColumnSource[]): boolean {
  return sources.some((s) => masked.some((m) => sourceMatches(m, s)));
}

function str(n: unknown): string | undefined {
  const s = (n as { String?: { sval?: string } } | undefined)?.String?.sval;
  return typeof s === 'string' ? s : undefined;
}

/** Walks one statement: result-column lineage and the masked columns it uses. */
class Analyzer {
  /** Sources used other than as plain projections. */
  readonly used: ColumnSource[] = [];

  constructor(private readonly cteScope: Map<string, Output[]> = new Map()) {}

  statement(stmt: Node): Output[] {
    const [kind, body] = Object.entries(stmt)[0] ?? [];
    const b = (body ?? {}) as Node;
    const root: Scope = { rels: [], ctes: this.cteScope };
    switch (kind) {
      case 'SelectStmt': {
        const out = this.select(b, root);
        // SELECT … INTO copies the values into a table.
        if (b['intoClause']) this.useAll(out);
        return out;
      }
      case 'CopyStmt': {
        if (!b['query']) return [];
        const out = this.statement(b['query'] as Node);
        // To a file or a program the values leave through the server, not through masked rows.
        if (b['filename'] !== undefined || b['is_program']) this.useAll(out);
        return out;
      }
      case 'CreateTableAsStmt':
      case 'DeclareCursorStmt':
      case 'ExplainStmt': {
        const out = b['query'] ? this.statement(b['query'] as Node) : [];
        // A cursor's rows come back later through FETCH, whose text says nothing of where they come
        // from: only the origin PostgreSQL reports follows them, so reading masked columns through a
        // cursor counts as a use. A table created from a query is a copy.
        if (kind !== 'ExplainStmt') this.useAll(out);
        return out;
      }
      case 'InsertStmt': {
        const scope = this.withCtes(b, root);
        if (b['selectStmt']) this.useAll(this.statement(b['selectStmt'] as Node));
        const out = this.returning(b, scope, b['relation'] as Node | undefined);
        // ON CONFLICT … DO UPDATE SET … WHERE reads the existing row.
        this.expr(b['onConflictClause'], scope);
        return out;
      }
      case 'UpdateStmt':
      case 'DeleteStmt': {
        const scope = this.withCtes(b, root);
        this.relation(b['relation'] as Node | undefined, scope);
        for (const f of (b['fromClause'] ?? b['usingClause'] ?? []) as Node[]) this.from(f, scope);
        for (const t of (b['targetList'] ?? []) as Node[]) this.expr((t['ResTarget'] as Node | undefined)?.['val'], scope);
        this.expr(b['whereClause'], scope);
        return this.returning(b, scope);
      }
      case 'MergeStmt': {
        const scope = this.withCtes(b, root);
        this.relation(b['relation'] as Node | undefined, scope);
        this.from(b['sourceRelation'] as Node, scope);
        this.expr(b['joinCondition'], scope);
        this.expr(b['mergeWhenClauses'], scope);
        return this.returning(b, scope);
      }
      default:
        // Anything else that embeds a query (CREATE VIEW, RULE, …) copies or stores it: every
        // column it reads counts as used.
        this.expr(b, root);
        return [];
    }
  }

  private relation(rel: Node | undefined, scope: Scope): void {
    if (rel) this.from({ RangeVar: rel }, scope);
  }

  private returning(b: Node, scope: Scope, relation?: Node): Output[] {
    if (relation) this.relation(relation, scope);
    const list = (b['returningList'] ?? []) as Node[];
    return list.length ? this.targets(list, scope) : [];
  }

  private useAll(outputs: Output[]): void {
    for (const o of outputs) this.used.push(...o.taint);
  }

  private withCtes(b: Node, parent: Scope): Scope {
    const ctes = new Map(parent.ctes);
    const scope: Scope = { rels: [], ctes, parent };
    const wc = b['withClause'] as { ctes?: Node[] } | undefined;
    for (const c of wc?.ctes ?? []) {
      const cte = c['CommonTableExpr'] as Node | undefined;
      if (!cte) continue;
      const name = String(cte['ctename']);
      // Recursive CTEs refer to themselves: known as opaque until analysed.
      const query = cte['ctequery'] as Node;
      const inner = new Analyzer(ctes);
      let out = inner.statement(query);
      this.used.push(...inner.used);
      const aliases = ((cte['aliascolnames'] ?? []) as Node[]).map(str);
      out = out.map((o, i) => ({ ...o, name: aliases[i] ?? o.name }));
      ctes.set(name, out);
    }
    return scope;
  }

  /** A SELECT (possibly a set operation or VALUES) → its outputs. */
  select(b: Node, parent: Scope): Output[] {
    const scope = this.withCtes(b, parent);
    const op = b['op'];
    if (op && op !== 'SETOP_NONE') {
      const l = this.select(b['larg'] as Node, scope);
      const r = this.select(b['rarg'] as Node, scope);
      // ORDER BY / LIMIT of the whole set operation.
      this.clauses(b, scope);
      return l.map((o, i) => ({ name: o.name, taint: union(o.taint, r[i]?.taint ?? []), ...(o.star || r[i]?.star ? { star: true as const } : {}) }));
    }
    if (b['valuesLists']) {
      const rows = b['valuesLists'] as Node[];
      const out: Output[] = [];
      for (const row of rows) {
        const items = ((row['List'] as { items?: unknown[] } | undefined)?.items ?? []) as unknown[];
        items.forEach((it, i) => {
          const t = this.expr(it, scope);
          out[i] = { name: `column${i + 1}`, taint: union(out[i]?.taint ?? [], t) };
        });
      }
      return out;
    }
    for (const f of (b['fromClause'] ?? []) as Node[]) this.from(f, scope);
    const out = this.targets((b['targetList'] ?? []) as Node[], scope);
    this.clauses(b, scope);
    return out;
  }

  /** Every clause of a SELECT but its targets and FROM list: each use there is a non-plain use. */
  private clauses(b: Node, scope: Scope): void {
    for (const k of ['whereClause', 'groupClause', 'havingClause', 'sortClause', 'distinctClause', 'windowClause', 'limitCount', 'limitOffset', 'lockingClause']) this.expr(b[k], scope);
  }

  private targets(list: Node[], scope: Scope): Output[] {
    const out: Output[] = [];
    for (const t of list) {
      const rt = (t['ResTarget'] ?? {}) as Node;
      const val = rt['val'] as Node | undefined;
      const ref = val?.['ColumnRef'] as { fields?: Node[] } | undefined;
      if (ref) {
        const fields = ref.fields ?? [];
        const last = fields[fields.length - 1];
        if (last && 'A_Star' in last) {
          out.push(...this.star(fields.length > 1 ? str(fields[fields.length - 2]) : undefined, scope));
          continue;
        }
        // A plain projection: masked by lineage, not a use.
        out.push({ name: (rt['name'] as string | undefined) ?? str(last) ?? '?column?', taint: this.column(fields, scope) });
        continue;
      }
      const taint = this.expr(val, scope);
      out.push({ name: (rt['name'] as string | undefined) ?? '?column?', taint });
    }
    return out;
  }

  private star(relName: string | undefined, scope: Scope): Output[] {
    const rels = relName ? this.findRel(relName, scope) : this.innermostRels(scope);
    const out: Output[] = [];
    for (const r of rels) {
      if (r.outputs) out.push(...r.outputs);
      else out.push({ name: '*', taint: r.table ? [{ table: r.table, column: '*' }] : [], star: true });
    }
    return out;
  }

  private innermostRels(scope: Scope): Rel[] {
    for (let s: Scope | undefined = scope; s; s = s.parent) if (s.rels.length) return s.rels;
    return [];
  }

  private findRel(name: string, scope: Scope): Rel[] {
    for (let s: Scope | undefined = scope; s; s = s.parent) {
      const found = s.rels.filter((r) => r.name === name);
      if (found.length) return found;
    }
    return [];
  }

  /** The sources of a column reference (`col`, `t.col`, `schema.t.col`), resolved by name. */
  private column(fields: Node[], scope: Scope): Taint {
    const names = fields.map(str);
    const col = names[names.length - 1];
    if (col === undefined) return [];
    if (names.length >= 2) {
      const rels = this.findRel(names[names.length - 2]!, scope);
      if (!rels.length) return [{ column: col }];
      return union(...rels.map((r) => this.fromRel(r, col)));
    }
    // Unqualified: any relation of the nearest scope that could have it, or the whole row of a
    // relation by that name (`row_to_json(u)`); then outer scopes.
    for (let s: Scope | undefined = scope; s; s = s.parent) {
      const candidates = s.rels.map((r) => this.fromRel(r, col)).filter((t) => t.length);
      for (const r of s.rels) if (r.name === col) candidates.push(union(...this.star(col, s).map((o) => o.taint)));
      if (candidates.length) return union(...candidates);
    }
    return [{ column: col }];
  }

  private fromRel(r: Rel, col: string): Taint {
    if (r.table) return [{ table: r.table, column: col }];
    if (r.outputs) {
      const o = r.outputs.filter((x) => x.name === col);
      // A `*` over a base table inside the subquery may be where the column comes from.
      if (!o.length && r.outputs.some((x) => x.star)) return [{ column: col }];
      return union(...o.map((x) => x.taint));
    }
    return [{ column: col }];
  }

  /** A FROM item: adds relations to the scope; join conditions and function arguments are uses. */
  private from(f: Node | undefined, scope: Scope): void {
    if (!f) return;
    if (f['RangeVar']) {
      const rv = f['RangeVar'] as Node;
      const relname = String(rv['relname']);
      const alias = ((rv['alias'] as Node | undefined)?.['aliasname'] as string | undefined) ?? relname;
      const cte = rv['schemaname'] ? undefined : scope.ctes.get(relname);
      scope.rels.push(cte ? { name: alias, outputs: this.renamed(cte, rv['alias'] as Node | undefined) } : { name: alias, table: relname.toLowerCase() });
      return;
    }
    if (f['JoinExpr']) {
      const j = f['JoinExpr'] as Node;
      this.from(j['larg'] as Node, scope);
      this.from(j['rarg'] as Node, scope);
      this.expr(j['quals'], scope);
      // USING (ssn) compares the columns too.
      for (const u of (j['usingClause'] ?? []) as Node[]) {
        const c = str(u);
        if (c) this.used.push(...this.column([u], scope));
      }
      return;
    }
    if (f['RangeSubselect']) {
      const rs = f['RangeSubselect'] as Node;
      const sub = rs['subquery'] as Node;
      // LATERAL subqueries see the relations before them.
      const outputs = this.select((sub['SelectStmt'] ?? {}) as Node, rs['lateral'] ? scope : { rels: [], ctes: scope.ctes, parent: scope.parent });
      const alias = rs['alias'] as Node | undefined;
      scope.rels.push({ name: (alias?.['aliasname'] as string | undefined) ?? '?subquery?', outputs: this.renamed(outputs, alias) });
      return;
    }
    // RangeFunction, RangeTableFunc, XMLTABLE…: arguments are uses, columns unknown.
    const alias = Object.values(f)[0] as Node | undefined;
    this.expr(f, scope);
    scope.rels.push({ name: ((alias?.['alias'] as Node | undefined)?.['aliasname'] as string | undefined) ?? '?function?', opaque: true });
  }

  private renamed(outputs: Output[], alias: Node | undefined): Output[] {
    const cols = ((alias?.['colnames'] ?? []) as Node[]).map(str);
    return cols.length ? outputs.map((o, i) => ({ ...o, name: cols[i] ?? o.name })) : outputs;
  }

  /** Sources of an expression; every column it reads is a non-plain use. */
  expr(n: unknown, scope: Scope): Taint {
    const found: Taint[] = [];
    const walk = (x: unknown): void => {
      if (Array.isArray(x)) {
        for (const y of x) walk(y);
        return;
      }
      if (!x || typeof x !== 'object') return;
      const o = x as Node;
      if (o['ColumnRef']) {
        const fields = ((o['ColumnRef'] as { fields?: Node[] }).fields ?? []) as Node[];
        const last = fields[fields.length - 1];
        const t = last && 'A_Star' in last ? union(...this.star(fields.length > 1 ? str(fields[fields.length - 2]) : undefined, scope).map((s) => s.taint)) : this.column(fields, scope);
        found.push(t);
        return;
      }
      if (o['SubLink']) {
        const sl = o['SubLink'] as Node;
        walk(sl['testexpr']);
        const sub = ((sl['subselect'] as Node | undefined)?.['SelectStmt'] ?? {}) as Node;
        const outputs = this.select(sub, { rels: [], ctes: scope.ctes, parent: scope });
        found.push(union(...outputs.map((p) => p.taint)));
        return;
      }
      if (o['SelectStmt']) {
        const outputs = this.select(o['SelectStmt'] as Node, { rels: [], ctes: scope.ctes, parent: scope });
        found.push(union(...outputs.map((p) => p.taint)));
        return;
      }
      for (const v of Object.values(o)) walk(v);
    };
    walk(n);
    const t = union(...found);
    this.used.push(...t);
    return t;
  }
}

const cache = new Map<string, { outputs: Output[]; used: Taint }[] | null>();
const CACHE_MAX = 2000;

function analyzeAll(sql: string): { outputs: Output[]; used: Taint }[] | null {
  let entry = cache.get(sql);
  if (entry === undefined) {
    try {
      const tree = parseSync(sql) as { stmts?: { stmt?: Node }[] };
      entry = (tree.stmts ?? []).map((s) => {
        const a = new Analyzer();
        const outputs = s.stmt ? a.statement(s.stmt) : [];
        return { outputs, used: union(a.used) };
      });
    } catch {
      entry = null;
    }
    if (cache.size >= CACHE_MAX) cache.delete(cache.keys().next().value!);
    cache.set(sql, entry);
  }
  return entry;
}

/**
 * The lineage of one statement's result columns against the masked columns, or undefined when no
 * column is masked. Text the parser rejects counts as reading every masked column it names
 * (`readsMasked` when any masked column's name appears in it) with unknown sources per column.
 * `loadSqlParser()` (classify.ts) must have resolved.
 */
export function statementLineage(sql: string, masked: readonly MaskedColumn[]): StatementLineage | undefined {
  if (!masked.length) return undefined;
  const analysed = analyzeAll(sql);
  if (!analysed || analysed.length !== 1) {
    // Unparseable (or several statements in one text): every column of the result may carry any
    // masked column the text names.
    const lower = sql.toLowerCase();
    const named: Taint = masked.filter((m) => m.column !== '*' && lower.includes(m.column)).map((m) => ({ ...(m.table ? { table: m.table } : {}), column: m.column }));
    const wildcard = masked.some((m) => m.column === '*' && m.table && lower.includes(m.table));
    const taint = wildcard ? [{ column: '*' }, ...named] : named;
    return { readsMasked: taint.length > 0, resolve: (n) => new Array<ColumnSource[] | undefined>(n).fill(taint.length ? taint : undefined) };
  }
  const { outputs, used } = analysed[0]!;
  return {
    readsMasked: isMasked(masked, used),
    resolve: (n) => alignOutputs(outputs, n),
  };
}

/** Maps outputs to `n` result columns; a `*` over a base table takes what is left. */
function alignOutputs(outputs: Output[], n: number): (ColumnSource[] | undefined)[] {
  const stars = outputs.filter((o) => o.star).length;
  const fixed = outputs.length - stars;
  const result: (ColumnSource[] | undefined)[] = [];
  if (stars === 0 || stars === 1) {
    const starWidth = Math.max(0, n - fixed);
    for (const o of outputs) {
      if (o.star) for (let i = 0; i < starWidth; i++) result.push(undefined);
      else result.push(o.taint);
    }
  } else {
    // Several `*` of unknown widths: the columns before the first and after the last line up; in
    // between, any column may be a computed one, so each carries what all of those carry.
    const first = outputs.findIndex((o) => o.star);
    const lastStar = outputs.length - 1 - [...outputs].reverse().findIndex((o) => o.star);
    const head = outputs.slice(0, first);
    const tail = outputs.slice(lastStar + 1);
    const middle = union(...outputs.slice(first, lastStar + 1).map((o) => o.taint));
    for (const o of head) result.push(o.taint);
    for (let i = head.length; i < n - tail.length; i++) result.push(middle.length ? middle : undefined);
    for (const o of tail) result.push(o.taint);
  }
  while (result.length < n) result.push(undefined);
  return result.slice(0, n);
}

/**
 * A statement's lineage against the masker's column rules, and its classes with `reads_masked`
 * added when it uses a masked column other than as a plain projection. No column rule: no work.
 */
export function withLineage<C extends string>(sql: string, classes: C[], masker: { maskedColumns?(): readonly MaskedColumn[] }): { lineage?: StatementLineage; classes: C[] } {
  const masked = masker.maskedColumns?.() ?? [];
  const lineage = statementLineage(sql, masked);
  if (!lineage?.readsMasked) return { lineage, classes };
  return { lineage, classes: [...classes, 'reads_masked' as C] };
}

/**
 * Result columns with the sources lineage found for them (their `ColumnRef.sources`). A column that
 * PostgreSQL reports as a view's column (RowDescription table OID and attribute number) also gets
 * the sources of that column in the view's definition (`viewDefinition`, from the catalog), so
 * `SELECT * FROM v` masks a view column computed from a masked column. One level: a view over a view
 * is followed only by the names it reports.
 */
export function withSources<T extends { ref: { sources?: readonly ColumnSource[] } }>(
  columns: T[],
  lineage: StatementLineage | undefined,
  fields?: readonly { tableOid: number; column: number }[],
  catalog?: ResultCatalog,
): T[] {
  if (!lineage) return columns;
  const sources = lineage.resolve(columns.length);
  return columns.map((c, i) => {
    const f = fields?.[i];
    const origin = f && f.tableOid && f.column > 0 ? f : undefined;
    const def = origin ? catalog?.viewDefinition(origin.tableOid) : undefined;
    const extra: Taint = def !== undefined ? viewColumnSources(def, origin!.column) : [];
    // The column PostgreSQL says the value comes from, under its catalog name (`ssn AS x` is ssn).
    const table = origin ? catalog?.name(origin.tableOid) : undefined;
    const column = origin ? catalog?.columnName(origin.tableOid, origin.column) : undefined;
    if (table && column) extra.push({ table, column });
    const all = sources[i] || extra.length ? union(sources[i] ?? [], extra) : undefined;
    return all ? { ...c, ref: { ...c.ref, sources: all } } : c;
  });
}

/** What lineage reads from the catalog cache (catalog.ts TableNameResolver). */
export interface ResultCatalog {
  name(oid: number): string | undefined;
  columnName(oid: number, attnum: number): string | undefined;
  viewDefinition(oid: number): string | undefined;
}

/** Sources of column `attnum` (1-based) of a view, from its definition; every column it names when it cannot be analysed. */
function viewColumnSources(definition: string, attnum: number): Taint {
  const analysed = analyzeAll(definition);
  if (analysed?.length === 1) return analysed[0]!.outputs[attnum - 1]?.taint ?? [];
  // Unreadable: count every column the definition reads as a possible source (errs on masking).
  return union(...(analysed ?? []).flatMap((a) => a.outputs.map((o) => o.taint)), analysed ? [] : [{ column: '*' }]);
}
