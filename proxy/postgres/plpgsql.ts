/**
 * The SQL a PL/pgSQL block runs, as separate statements the SQL parser can classify
 * (https://www.postgresql.org/docs/current/plpgsql-statements.html). The WASM build of libpg_query
 * in use parses SQL only, so the block is split here: control statements (IF, LOOP, FOR, CASE,
 * RETURN, PERFORM, RAISE, assignments, declarations with defaults) are rewritten into the
 * `SELECT expr` they evaluate, and everything else is kept as SQL. A piece that is not understood
 * is returned as written, so the SQL parser rejects it and the block is classed `unknown` (fail
 * closed); `EXECUTE` of a string (dynamic SQL) is reported as such.
 */

interface Token {
  text: string;
  /** Offsets in the source: tokens written next to each other (`|` `|`) are joined back without a space. */
  start: number;
  end: number;
  /** Upper-cased word, or '' for anything else (literals, quoted names, punctuation). */
  word: string;
}

// Sticky patterns matched where the tokenizer stands (no copy of the rest of the text per token).
const DOLLAR_TAG = /\$([A-Za-z_][A-Za-z0-9_]*)?\$/y;
const PARAMETER = /\$\d+/y;
const WORD = /[A-Za-z_\u0080-\uffff][A-Za-z0-9_$\u0080-\uffff]*/y;
const NUMBER = /\d+(?:\.(?!\.)\d*)?(?:[eE][+-]?\d+)?/y;

function at(re: RegExp, src: string, i: number): RegExpExecArray | null {
  re.lastIndex = i;
  return re.exec(src);
}

/** Splits PL/pgSQL source into tokens, keeping literals, quoted names and dollar quotes whole; comments are dropped. */
export function tokenizePlpgsql(src: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  while (i < src.length) {
    const c = src[i]!;
    if (/\s/.test(c)) {
      i++;
      continue;
    }
    if (src.startsWith('--', i)) {
      const nl = src.indexOf('\n', i);
      i = nl < 0 ? src.length : nl + 1;
      continue;
    }
    if (src.startsWith('/*', i)) {
      // Block comments nest in PostgreSQL.
      let depth = 0;
      do {
        if (src.startsWith('/*', i)) {
          depth++;
          i += 2;
        } else if (src.startsWith('*/', i)) {
          depth--;
          i += 2;
        } else i++;
      } while (depth > 0 && i < src.length);
      continue;
    }
    const start = i;
    if (c === "'" || ((c === 'E' || c === 'e' || c === 'U' || c === 'u' || c === 'B' || c === 'b' || c === 'X' || c === 'x' || c === 'N' || c === 'n') && src[i + 1] === "'")) {
      const backslash = c === 'E' || c === 'e';
      i = c === "'" ? i + 1 : i + 2;
      while (i < src.length) {
        if (backslash && src[i] === '\\') i += 2;
        else if (src[i] === "'") {
          if (src[i + 1] === "'") i += 2;
          else break;
        } else i++;
      }
      i++;
      out.push({ text: src.slice(start, i), word: '', start, end: i });
      continue;
    }
    if ((c === 'U' || c === 'u') && src[i + 1] === '&' && (src[i + 2] === "'" || src[i + 2] === '"')) {
      const q = src[i + 2]!;
      i += 3;
      while (i < src.length && !(src[i] === q && src[i + 1] !== q)) i += src[i] === q ? 2 : 1;
      i++;
      out.push({ text: src.slice(start, i), word: '', start, end: i });
      continue;
    }
    if (c === '"') {
      i++;
      while (i < src.length && !(src[i] === '"' && src[i + 1] !== '"')) i += src[i] === '"' ? 2 : 1;
      i++;
      out.push({ text: src.slice(start, i), word: '', start, end: i });
      continue;
    }
    if (c === '$') {
      const m = at(DOLLAR_TAG, src, i);
      if (m) {
        const close = src.indexOf(m[0], i + m[0].length);
        i = close < 0 ? src.length : close + m[0].length;
        out.push({ text: src.slice(start, i), word: '', start, end: i });
        continue;
      }
      const p = at(PARAMETER, src, i);
      if (p) {
        i += p[0].length;
        out.push({ text: p[0], word: '', start, end: i });
        continue;
      }
    }
    const w = at(WORD, src, i);
    if (w) {
      i += w[0].length;
      out.push({ text: w[0], word: w[0].toUpperCase(), start, end: i });
      continue;
    }
    // `1..10` (a FOR range) stays three tokens.
    const n = at(NUMBER, src, i);
    if (n) {
      i += n[0].length;
      out.push({ text: n[0], word: '', start, end: i });
      continue;
    }
    const two = src.slice(i, i + 2);
    if (two === ':=' || two === '..' || two === '<<' || two === '>>' || two === '::' || two === '<>' || two === '!=' || two === '<=' || two === '>=') {
      i += 2;
      out.push({ text: two, word: '', start, end: i });
      continue;
    }
    i++;
    out.push({ text: c, word: '', start, end: i });
  }
  return out;
}

export interface PlpgsqlStatements {
  /** SQL statements (and `SELECT expr` for evaluated expressions), in order. */
  sql: string[];
  /** The block runs SQL built from strings (`EXECUTE`, `OPEN … FOR EXECUTE`, `RETURN QUERY EXECUTE`). */
  dynamic: boolean;
}

/** Words after which a new PL/pgSQL statement starts, when the current piece is a control statement. */
const OPENERS = new Set(['THEN', 'ELSE', 'LOOP', 'BEGIN', 'DECLARE', 'EXCEPTION']);
const CONTROL = new Set(['IF', 'ELSIF', 'ELSEIF', 'WHILE', 'FOR', 'FOREACH', 'CASE', 'WHEN', 'ELSE', 'LOOP', 'BEGIN', 'DECLARE', 'EXCEPTION', 'END']);

const join = (ts: Token[]) => ts.map((t, i) => (i > 0 && ts[i - 1]!.end === t.start ? '' : ' ') + t.text).join('').trim();

/** Splits a PL/pgSQL block into the SQL it runs. */
export function plpgsqlStatements(src: string): PlpgsqlStatements {
  const tokens = tokenizePlpgsql(src);
  const pieces: Token[][] = [];
  let cur: Token[] = [];
  let depth = 0;
  const flush = () => {
    if (cur.length) pieces.push(cur);
    cur = [];
  };
  for (const t of tokens) {
    if (t.text === '(' || t.text === '[') depth++;
    else if (t.text === ')' || t.text === ']') depth--;
    if (depth === 0 && t.text === ';') {
      flush();
      continue;
    }
    // Labels stand alone.
    if (depth === 0 && t.text === '<<' && cur.length === 0) {
      cur.push(t);
      continue;
    }
    if (depth === 0 && t.text === '>>' && cur[0]?.text === '<<') {
      cur = [];
      continue;
    }
    cur.push(t);
    const first = cur[0]!.word;
    if (depth === 0 && OPENERS.has(t.word) && CONTROL.has(first)) {
      // `END LOOP` / `END IF` end a piece at the following ';', not here.
      if (first === 'END') continue;
      // A CASE expression inside the condition of an IF is closed by its own END.
      // (A piece that starts with CASE is PL/pgSQL's CASE statement, not an expression.)
      const inner = first === 'CASE' ? cur.slice(1) : cur;
      if (t.word === 'ELSE' && caseDepth(inner) > 0) continue;
      if (t.word === 'THEN' && caseDepth(inner.slice(0, -1)) > 0) continue;
      flush();
    }
  }
  flush();

  const sql: string[] = [];
  let dynamic = false;
  let declaring = false;
  for (let p of pieces) {
    const w = p[0]!.word;
    if (w === 'DECLARE') {
      declaring = true;
      continue;
    }
    if (w === 'BEGIN') {
      declaring = false;
      continue;
    }
    if (declaring) {
      // `name [CONSTANT] type [NOT NULL] [:= | = | DEFAULT expr]`, or `name CURSOR … FOR query`.
      const cursorFor = p.findIndex((t, i) => t.word === 'FOR' && p.slice(0, i).some((x) => x.word === 'CURSOR' || x.word === 'SCROLL'));
      if (cursorFor >= 0) {
        sql.push(join(p.slice(cursorFor + 1)));
        continue;
      }
      const at = p.findIndex((t) => t.text === ':=' || t.text === '=' || t.word === 'DEFAULT');
      if (at >= 0) sql.push(`SELECT ${join(p.slice(at + 1))}`);
      continue;
    }
    if (w === 'END' || w === 'NULL' || w === 'GET' || w === 'FETCH' || w === 'MOVE' || w === 'CLOSE' || (p.length === 1 && OPENERS.has(w))) continue;
    if (w === 'ELSE' || w === 'EXCEPTION') p = p.slice(1);
    if (p.length === 0) continue;
    const head = p[0]!.word;
    const last = p[p.length - 1]!.word;
    if (head === 'IF' || head === 'ELSIF' || head === 'ELSEIF' || head === 'WHILE' || head === 'WHEN') {
      const cond = p.slice(1, last === 'THEN' || last === 'LOOP' ? -1 : undefined);
      // Exception conditions (`WHEN division_by_zero OR SQLSTATE '22012' THEN`) name errors, not expressions.
      if (head === 'WHEN' && cond.some((t) => t.word === 'SQLSTATE')) continue;
      if (cond.length) sql.push(`SELECT (${join(cond)})`);
      continue;
    }
    if (head === 'CASE') {
      sql.push(`SELECT ${join(p.slice(0, last === 'THEN' ? -1 : undefined))}${last === 'THEN' ? ' THEN NULL END' : ''}`);
      continue;
    }
    if (head === 'LOOP' && p.length === 1) continue;
    if (head === 'FOR' || head === 'FOREACH') {
      const inAt = p.findIndex((t) => t.word === 'IN');
      let body = p.slice(inAt + 1, last === 'LOOP' ? -1 : undefined);
      if (body[0]?.word === 'REVERSE' || body[0]?.word === 'ARRAY') body = body.slice(1);
      if (body[0]?.word === 'EXECUTE') {
        dynamic = true;
        continue;
      }
      const range = body.findIndex((t) => t.text === '..');
      if (range >= 0) {
        const by = body.findIndex((t) => t.word === 'BY');
        sql.push(`SELECT (${join(body.slice(0, range))}), (${join(body.slice(range + 1, by >= 0 ? by : undefined))})${by >= 0 ? `, (${join(body.slice(by + 1))})` : ''}`);
      } else if (inAt < 0 || body.length === 0) sql.push(join(p));
      else sql.push(head === 'FOREACH' ? `SELECT ${join(body)}` : join(body));
      continue;
    }
    if (head === 'RETURN') {
      let rest = p.slice(1);
      if (rest[0]?.word === 'QUERY') {
        if (rest[1]?.word === 'EXECUTE') dynamic = true;
        else sql.push(join(rest.slice(1)));
        continue;
      }
      if (rest[0]?.word === 'NEXT') rest = rest.slice(1);
      if (rest.length) sql.push(`SELECT ${join(rest)}`);
      continue;
    }
    if (head === 'PERFORM') {
      sql.push(`SELECT ${join(p.slice(1))}`);
      continue;
    }
    if (head === 'EXECUTE') {
      dynamic = true;
      continue;
    }
    if (head === 'OPEN') {
      const forAt = p.findIndex((t) => t.word === 'FOR');
      if (forAt < 0) continue;
      if (p[forAt + 1]?.word === 'EXECUTE') dynamic = true;
      else sql.push(join(p.slice(forAt + 1)));
      continue;
    }
    if (head === 'EXIT' || head === 'CONTINUE') {
      const whenAt = p.findIndex((t) => t.word === 'WHEN');
      if (whenAt >= 0) sql.push(`SELECT (${join(p.slice(whenAt + 1))})`);
      continue;
    }
    if (head === 'ASSERT') {
      sql.push(`SELECT ${join(p.slice(1))}`);
      continue;
    }
    if (head === 'RAISE') {
      sql.push(...raiseExpressions(p));
      continue;
    }
    const assign = assignment(p);
    if (assign) {
      sql.push(`SELECT ${join(assign)}`);
      continue;
    }
    sql.push(join(withoutInto(p)));
  }
  return { sql, dynamic };
}

/** Open CASE expressions in a piece (CASE … END pairs). */
function caseDepth(ts: Token[]): number {
  let d = 0;
  for (const t of ts) {
    if (t.word === 'CASE') d++;
    else if (t.word === 'END' && d > 0) d--;
  }
  return d;
}

/** `target := expr` / `target = expr` (target a name, field or array element): the expression. */
function assignment(p: Token[]): Token[] | null {
  let i = 0;
  let depth = 0;
  for (; i < p.length; i++) {
    const t = p[i]!;
    if (t.text === '[') depth++;
    else if (t.text === ']') depth--;
    else if (depth === 0 && (t.text === ':=' || t.text === '=')) break;
    else if (depth === 0 && !(t.word || t.text.startsWith('"') || t.text === '.')) return null;
    if (depth === 0 && t.word && i > 0 && p[i - 1]!.text !== '.' && p[i - 1]!.text !== ']') return null;
  }
  if (i === 0 || i >= p.length) return null;
  return p.slice(i + 1);
}

/** The expressions a RAISE evaluates: the arguments after the format string, and the USING options' values. */
function raiseExpressions(p: Token[]): string[] {
  const out: string[] = [];
  const fmt = p.findIndex((t) => t.text.startsWith("'") || /^[EeUu]&?'/.test(t.text) || t.text.startsWith('$'));
  const using = p.findIndex((t) => t.word === 'USING');
  if (fmt >= 0 && (using < 0 || fmt < using)) {
    const args = p.slice(fmt + 1, using >= 0 ? using : undefined);
    if (args[0]?.text === ',' && args.length > 1) out.push(`SELECT ${join(args.slice(1))}`);
  }
  if (using >= 0) {
    const opts = p.slice(using + 1);
    const values: Token[][] = [];
    let depth = 0;
    let item: Token[] = [];
    for (const t of opts) {
      if (t.text === '(') depth++;
      else if (t.text === ')') depth--;
      if (depth === 0 && t.text === ',') {
        values.push(item);
        item = [];
      } else item.push(t);
    }
    values.push(item);
    for (const v of values) {
      const eq = v.findIndex((t) => t.text === '=' || t.text === ':=');
      out.push(`SELECT ${join(eq >= 0 ? v.slice(eq + 1) : v)}`);
    }
  }
  return out;
}

/** PL/pgSQL's `INTO [STRICT] target, …` in a SQL statement stores into variables, not a new table: drop it. */
function withoutInto(p: Token[]): Token[] {
  const out: Token[] = [];
  for (let i = 0; i < p.length; i++) {
    const t = p[i]!;
    const prev = out[out.length - 1]?.word;
    if (t.word === 'INTO' && prev !== 'INSERT' && prev !== 'MERGE') {
      let j = i + 1;
      if (p[j]?.word === 'STRICT') j++;
      // Targets: names (optionally dotted), separated by commas.
      for (;;) {
        if (!p[j] || !(p[j]!.word || p[j]!.text.startsWith('"'))) break;
        j++;
        while (p[j]?.text === '.' && p[j + 1]) j += 2;
        if (p[j]?.text === ',') j++;
        else break;
      }
      i = j - 1;
      continue;
    }
    out.push(t);
  }
  return out;
}
