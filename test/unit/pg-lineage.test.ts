// Column lineage (proxy/postgres/lineage.ts) on its own: which masked columns each result column
// comes from, `reads_masked`, and bad input (text the parser rejects, absurd nesting) handled
// without a crash and on the side of masking. The end-to-end corpus is in
// test/integration/pg-masking-lineage.test.ts.
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { loadSqlParser } from '../../proxy/postgres/classify';
import { isMasked, type MaskedColumn, statementLineage, withLineage, withSources } from '../../proxy/postgres/lineage';

const MASKED: MaskedColumn[] = [{ table: 'users', column: 'ssn' }, { column: 'email' }];
const masked = (sql: string, n: number) => statementLineage(sql, MASKED)!.resolve(n).map((s) => (s ? isMasked(MASKED, s) : false));

describe('column lineage', () => {
  before(() => loadSqlParser());

  it('does nothing without masked columns', () => {
    assert.equal(statementLineage('SELECT ssn FROM users', []), undefined);
    const r = withLineage('SELECT reverse(ssn) FROM users', ['select'], {});
    assert.deepEqual(r, { lineage: undefined, classes: ['select'] });
  });

  it('maps result columns to their masked sources', () => {
    assert.deepEqual(masked('SELECT id, reverse(ssn), name FROM users', 3), [false, true, false]);
    assert.deepEqual(masked('SELECT u.id, u.ssn || u.name AS x FROM users u', 2), [false, true]);
    assert.deepEqual(masked('WITH c AS (SELECT id, ssn AS s FROM users) SELECT s, id FROM c', 2), [true, false]);
    assert.deepEqual(masked('SELECT id, (SELECT max(email) FROM contacts) FROM users', 2), [false, true]);
    assert.deepEqual(masked('SELECT id FROM users UNION SELECT ssn::int FROM users', 1), [true]);
    // A `*` over a table is left to what PostgreSQL reports; the computed column after it still lines up.
    assert.deepEqual(masked('SELECT *, upper(ssn) FROM users', 4), [false, false, false, true]);
    // ssn of another table is not users.ssn.
    assert.deepEqual(masked('SELECT ssn FROM orders', 1), [false]);
  });

  it('classes other uses as reads_masked, and plain projections not', () => {
    const cls = (sql: string) => withLineage(sql, ['select'], { maskedColumns: () => MASKED }).classes;
    assert.deepEqual(cls("SELECT id FROM users WHERE ssn LIKE '1%'"), ['select', 'reads_masked']);
    assert.deepEqual(cls('SELECT id, ssn FROM users'), ['select']);
    assert.deepEqual(cls('SELECT ssn FROM orders WHERE ssn > 1'), ['select']);
  });

  it('errs on masking for text the parser rejects', () => {
    const l = statementLineage('SELEC ssn FRO users', MASKED)!;
    assert.equal(l.readsMasked, true);
    assert.ok(l.resolve(2).every((s) => s && isMasked(MASKED, s)));
    const none = statementLineage('not sql at all', MASKED)!;
    assert.equal(none.readsMasked, false);
  });

  it('survives absurd nesting without a crash', () => {
    const deep = `SELECT ${'('.repeat(3000)}ssn${')'.repeat(3000)} FROM users`;
    const l = statementLineage(deep, MASKED)!;
    assert.ok(l.resolve(1)[0] === undefined || isMasked(MASKED, l.resolve(1)[0]!));
  });

  it('adds sources to result columns, view columns from their definition', () => {
    const l = statementLineage('SELECT * FROM v_users', MASKED)!;
    const cols: { ref: { column: string; sources?: readonly { table?: string; column: string }[] } }[] = [{ ref: { column: 'id' } }, { ref: { column: 'r' } }];
    const catalog = { name: () => 'v_users', columnName: () => undefined, viewDefinition: (oid: number) => (oid === 9 ? 'SELECT u.id, reverse(u.ssn) AS r FROM users u;' : undefined) };
    const out = withSources(cols, l, [{ tableOid: 9, column: 1 }, { tableOid: 9, column: 2 }], catalog);
    assert.equal(out[0]!.ref.sources && isMasked(MASKED, out[0]!.ref.sources), false);
    assert.equal(isMasked(MASKED, out[1]!.ref.sources!), true);
  });
});
