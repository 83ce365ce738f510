/**
 * Classification by effect: each form in test/fixtures/pg-bypass/classes.jsonl (one statement a
 * line, with the classes it must and must not carry), the PL/pgSQL splitter, the fold of catalog
 * answers into classes, and passwords redacted from recorded statement text.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { Connection, type SqlClass } from '../../shared/config';
import { RoutineCatalog } from '../../proxy/postgres/catalog';
import { upstreamTarget } from '../../proxy/postgres/upstream';
import { classifyDefinition, classifySql, loadSqlParser } from '../../proxy/postgres/classify';
import { type EffectLookup, foldEffects, type RelationEffect, type ResolvedEffect } from '../../proxy/postgres/effects';
import { plpgsqlStatements } from '../../proxy/postgres/plpgsql';
import { REDACTED_PASSWORD, redactStatementSecrets } from '../../proxy/postgres/statement-secrets';

interface Form {
  sql: string;
  has?: SqlClass[];
  not?: SqlClass[];
  calls?: string[];
  operators?: string[];
  readOnlyIfResolved?: boolean;
}

const forms: Form[] = readFileSync(join(import.meta.dirname, '../fixtures/pg-bypass/classes.jsonl'), 'utf8')
  .split('\n')
  .filter((l) => l.trim())
  .map((l) => JSON.parse(l) as Form);

describe('classification by effect', () => {
  before(() => loadSqlParser());
  for (const f of forms) {
    it(`${f.sql}${f.has ? ` → ${f.has.join(', ')}` : ''}${f.not ? ` (not ${f.not.join(', ')})` : ''}`, () => {
      const c = classifySql(f.sql);
      assert.equal(c.statements.length, 1);
      const st = c.statements[0]!;
      for (const k of f.has ?? []) assert.ok(st.classes.includes(k), `${k} missing from ${st.classes.join(', ')}`);
      for (const k of f.not ?? []) assert.ok(!st.classes.includes(k), `${k} present in ${st.classes.join(', ')}`);
      for (const n of f.calls ?? []) assert.ok(st.calls?.includes(n), `call ${n} not listed (${st.calls?.join(', ')})`);
      for (const n of f.operators ?? []) assert.ok(st.operators?.includes(n), `operator ${n} not listed (${st.operators?.join(', ')})`);
      if (f.readOnlyIfResolved !== undefined) assert.equal(st.readOnlyIfResolved ?? false, f.readOnlyIfResolved);
    });
  }

  it('numbers compared with numbers are not shared through the shape cache', () => {
    assert.ok(classifySql('DELETE FROM t WHERE 1 = 2').statements[0]!.classes.includes('delete'));
    assert.ok(!classifySql('DELETE FROM t WHERE 1 = 2').statements[0]!.classes.includes('delete_without_where'));
    assert.ok(classifySql('DELETE FROM t WHERE 1 = 1').statements[0]!.classes.includes('delete_without_where'));
    assert.ok(!classifySql('DELETE FROM t WHERE (0)::bool').statements[0]!.classes.includes('delete_without_where'));
    assert.ok(classifySql('DELETE FROM t WHERE (1)::bool').statements[0]!.classes.includes('delete_without_where'));
  });

  it('multi-statement strings classify each statement, comments and quotes included', () => {
    const c = classifySql("SELECT 'x;' /* ; */; DELETE FROM t -- ;\n; SELECT 2");
    assert.deepEqual(
      c.statements.map((s) => s.classes.includes('delete_without_where')),
      [false, true, false],
    );
  });

  it('routine definitions carry what their bodies run', () => {
    const sql = classifyDefinition("CREATE OR REPLACE FUNCTION public.w() RETURNS void LANGUAGE sql AS $function$TRUNCATE t$function$");
    assert.deepEqual(sql?.classes, ['truncate']);
    const atomic = classifyDefinition('CREATE FUNCTION public.w() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; DELETE FROM t; END');
    assert.ok(atomic?.classes.includes('delete_without_where'));
    const plpgsql = classifyDefinition("CREATE FUNCTION public.w() RETURNS void LANGUAGE plpgsql AS $$BEGIN UPDATE t SET a = 1 WHERE id = 1; END$$");
    assert.deepEqual(plpgsql?.classes, ['update']);
    const returns = classifyDefinition("CREATE OR REPLACE FUNCTION pg_catalog.pg_relation_size(regclass) RETURNS bigint LANGUAGE sql RETURN pg_relation_size($1, 'main'::text)");
    assert.deepEqual(returns?.classes, ['select']);
    assert.deepEqual(returns?.calls, ['pg_relation_size']);
    assert.equal(classifyDefinition("CREATE FUNCTION public.w() RETURNS int LANGUAGE c AS 'lib', 'sym'"), null, 'C functions cannot be looked into');
    const rule = classifyDefinition('CREATE RULE r AS ON INSERT TO t DO ALSO DELETE FROM u');
    assert.ok(rule?.classes.includes('delete_without_where'));
  });
});

describe('PL/pgSQL splitting', () => {
  it('keeps SQL statements, rewrites control statements into the expressions they evaluate', () => {
    const r = plpgsqlStatements(`
      DECLARE r record; n int := f0(); c CURSOR FOR SELECT * FROM t;
      BEGIN
        SELECT count(*) INTO STRICT n FROM t; -- INTO a variable, not a new table
        <<outer>>
        FOR r IN SELECT * FROM t LOOP
          UPDATE t SET a = r.a || 'x' WHERE id = r.id;
        END LOOP outer;
        CASE WHEN n > 1 THEN DELETE FROM t; ELSE NULL; END CASE;
        IF (CASE WHEN n > 0 THEN true ELSE false END) THEN PERFORM f1(); ELSIF f2() THEN n := f3(); END IF;
        WHILE n > 0 LOOP n := n - 1; EXIT WHEN f4(); END LOOP;
        RAISE NOTICE 'x % %', n, f5() USING HINT = f6();
        RETURN QUERY SELECT * FROM u;
        RETURN NEXT f7();
      EXCEPTION WHEN division_by_zero OR SQLSTATE '22012' THEN INSERT INTO log VALUES (1);
      END`);
    assert.equal(r.dynamic, false);
    assert.deepEqual(r.sql, [
      'SELECT f0()',
      'SELECT * FROM t',
      'SELECT count(*) FROM t',
      'SELECT * FROM t',
      "UPDATE t SET a = r.a || 'x' WHERE id = r.id",
      'SELECT CASE WHEN n > 1 THEN NULL END',
      'DELETE FROM t',
      'SELECT ((CASE WHEN n > 0 THEN true ELSE false END))',
      'SELECT f1()',
      'SELECT (f2())',
      'SELECT f3()',
      'SELECT (n > 0)',
      'SELECT n - 1',
      'SELECT (f4())',
      'SELECT n, f5()',
      'SELECT f6()',
      'SELECT * FROM u',
      'SELECT f7()',
      'INSERT INTO log VALUES (1)',
    ]);
  });
  it('reports dynamic SQL', () => {
    assert.equal(plpgsqlStatements("BEGIN EXECUTE 'DROP TABLE ' || x; END").dynamic, true);
    assert.equal(plpgsqlStatements('BEGIN RETURN QUERY EXECUTE q; END').dynamic, true);
    assert.equal(plpgsqlStatements('DECLARE c refcursor; BEGIN OPEN c FOR EXECUTE q; END').dynamic, true);
    assert.equal(plpgsqlStatements("BEGIN RAISE NOTICE 'EXECUTE'; END").dynamic, false, 'a word inside a string is not a statement');
  });
});

describe('folding catalog answers', () => {
  before(() => loadSqlParser());
  const ro: ResolvedEffect = { classes: [], readOnly: true };
  const lookup = (routines: Record<string, ResolvedEffect>, relations: Record<string, RelationEffect> = {}): EffectLookup => ({
    routine: (n) => routines[n],
    operator: () => ro,
    type: () => ro,
    relation: (n) => relations[n],
  });
  const fold = (sql: string, l: EffectLookup) => foldEffects(classifySql(sql), l).statements[0]!.classes;

  it('a call carries its body classes and loses read_only', () => {
    const classes = fold('SELECT wipe()', lookup({ wipe: { classes: ['truncate'], readOnly: false } }));
    assert.ok(classes.includes('truncate'));
    assert.ok(!classes.includes('read_only'));
  });
  it('a query whose calls, operators and tables are all resolved read-only is read_only', () => {
    assert.ok(fold('SELECT lower(note) FROM t WHERE id = 1', lookup({ lower: ro }, { t: { read: ro, write: ro } })).includes('read_only'));
  });
  it('an unresolved call is unknown; an unresolved table withholds read_only', () => {
    assert.ok(fold('SELECT f()', lookup({})).includes('unknown'));
    const classes = fold('SELECT * FROM t WHERE id = 1', lookup({}));
    assert.ok(!classes.includes('read_only') && !classes.includes('unknown'));
  });
  it("a view's functions count on read, a trigger's only on write", () => {
    const rel = { t: { read: ro, write: { classes: ['truncate'] as SqlClass[], readOnly: false } } };
    assert.ok(fold('SELECT * FROM t WHERE id = 1', lookup({}, rel)).includes('read_only'));
    assert.ok(fold('INSERT INTO t VALUES (1)', lookup({}, rel)).includes('truncate'));
    const view = { v: { read: { classes: ['delete'] as SqlClass[], readOnly: false }, write: ro } };
    assert.ok(fold('SELECT * FROM v', lookup({}, view)).includes('delete'));
  });
});

describe('passwords inside statements', () => {
  const cases: [string, string][] = [
    ["ALTER ROLE bob PASSWORD 'hunter2'", `ALTER ROLE bob PASSWORD ${REDACTED_PASSWORD}`],
    ["CREATE USER bob WITH LOGIN ENCRYPTED PASSWORD 'hun''ter2' VALID UNTIL '2030-01-01'", `CREATE USER bob WITH LOGIN ENCRYPTED PASSWORD ${REDACTED_PASSWORD} VALID UNTIL '2030-01-01'`],
    ['CREATE ROLE bob PASSWORD $p$hunter2$p$', `CREATE ROLE bob PASSWORD ${REDACTED_PASSWORD}`],
    ["alter user bob password E'hun\\'ter2'", `alter user bob password ${REDACTED_PASSWORD}`],
    ["ALTER ROLE bob PASSWORD /* c */ U&'hunter2'; ALTER ROLE amy PASSWORD 'x'", `ALTER ROLE bob PASSWORD /* c */ ${REDACTED_PASSWORD}; ALTER ROLE amy PASSWORD ${REDACTED_PASSWORD}`],
    ["CREATE USER MAPPING FOR bob SERVER s OPTIONS (user 'bob', password 'hunter2')", `CREATE USER MAPPING FOR bob SERVER s OPTIONS (user 'bob', password ${REDACTED_PASSWORD})`],
    ['ALTER ROLE bob PASSWORD NULL', 'ALTER ROLE bob PASSWORD NULL'],
    ["SELECT 'password' FROM t WHERE password = 'x'", "SELECT 'password' FROM t WHERE password = 'x'"],
  ];
  for (const [sql, want] of cases) it(sql, () => assert.equal(redactStatementSecrets(sql), want));
});

describe('a catalog that cannot be read', () => {
  before(() => loadSqlParser());
  it('leaves calls unresolved: they fold to unknown, and nothing is read_only', async () => {
    // Nothing listens on port 1: the side connection is refused.
    const catalog = new RoutineCatalog(upstreamTarget(Connection.parse({ name: 'x', kind: 'postgres', upstream: 'postgres://postgres@127.0.0.1:1/postgres', listen: '127.0.0.1:0' })));
    try {
      const c = classifySql('SELECT lower(note) FROM t WHERE id = 1');
      assert.equal(catalog.needs(c), true);
      await catalog.resolve([c]);
      const folded = foldEffects(c, catalog.lookup()).statements[0]!.classes;
      assert.ok(folded.includes('unknown'), folded.join(', '));
      assert.ok(!folded.includes('read_only'));
    } finally {
      catalog.close();
    }
  });
});

describe('the shape cache', () => {
  before(() => loadSqlParser());
  it('does not share a classification between option values that decide what runs', () => {
    assert.ok(!classifySql('EXPLAIN (ANALYZE 0) DELETE FROM t').statements[0]!.classes.includes('delete'));
    assert.ok(classifySql('EXPLAIN (ANALYZE 1) DELETE FROM t').statements[0]!.classes.includes('delete_without_where'));
  });
});
