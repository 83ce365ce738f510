import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Connection, MaskingRule } from '../../shared/config';
import { createMaskingEngine, MaskingError, validateMaskingConfig } from '../../proxy/masking/engine';

const KEY = Buffer.alloc(32, 9);
const svc: Connection = { name: 'svc', kind: 'http', upstream: 'http://127.0.0.1:9' };
const openai: Connection = { name: 'openai', kind: 'openai', upstream: 'https://api.openai.com/v1' };
const rule = (p: Partial<MaskingRule> & { id: string }): MaskingRule => ({ detectors: [], scope: ['client', 'upstream', 'log'], strategy: 'redact', keepLast: 4, ...p });

describe('masking fails closed', () => {
  it('a detector that throws refuses the body with a message naming the detector', () => {
    const e = createMaskingEngine(
      { detectors: [{ id: 'acct', pattern: 'ACCT-\\d{4}', validator: 'flaky', caseSensitive: false, contextWindow: 40 }], masking: [rule({ id: 'r', detectors: ['acct'] })] },
      { hmacKey: KEY, validators: { flaky: () => { throw new Error('lookup table missing'); } } },
    );
    const m = e.forConnection(svc)!;
    assert.throws(() => m.request('/', 'text/plain', Buffer.from('see ACCT-1234')), (err: Error) => err instanceof MaskingError && /detector "acct" raised lookup table missing/.test(err.message));
    assert.deepEqual(m.request('/', 'text/plain', Buffer.from('nothing to see')).counts, {}, 'text without candidates still passes');
    const s = m.stream('/x');
    assert.throws(() => s.push({ data: 'ACCT-1234 leaked?' }), MaskingError);
    const rows = e.rows({ name: 'pg', kind: 'postgres', upstream: 'postgres://x@127.0.0.1/db', listen: '127.0.0.1:0' });
    assert.throws(() => rows.value({ column: 'note', typeOid: 25 }, 'ACCT-1234', 'client'), MaskingError);
  });

  it('a scan over its time budget refuses the body (a custom pattern on a large input)', () => {
    // On the linear-time engine a pattern costs time in proportion to the text and its matches; a
    // text too large for the budget is refused after the window that used it up. The pattern matches
    // every word here, so the engine cannot skip ahead (a pattern that needs a literal the text lacks,
    // such as (a|aa)*c, can be ruled out by a fast literal search and finish inside any budget).
    const e = createMaskingEngine({ detectors: [{ id: 'slow', pattern: '(?:a|aa)+ ', caseSensitive: true, contextWindow: 40 }], masking: [rule({ id: 'r', detectors: ['slow'] })] }, { hmacKey: KEY, budgetMs: 2 });
    const body = Buffer.from(('a'.repeat(24) + ' ').repeat(200_000));
    const t0 = performance.now();
    assert.throws(() => e.forConnection(svc)!.request('/', 'text/plain', body), /masking failed closed: scanning \d+ characters exceeded the 2 ms budget \(detector "slow"\)/);
    assert.ok(performance.now() - t0 < 2_000, `refused after ${performance.now() - t0} ms`);
    // the same pattern on a small text is fast and finds nothing (no "c")
    const small = createMaskingEngine({ detectors: [{ id: 'slow', pattern: '(?:a|aa)*c', caseSensitive: true, contextWindow: 40 }], masking: [rule({ id: 'r', detectors: ['slow'] })] }, { hmacKey: KEY, budgetMs: 500 });
    assert.equal(small.forConnection(svc)!.request('/', 'text/plain', Buffer.from('a'.repeat(40) + '!')).forward.toString(), 'a'.repeat(40) + '!');
  });

  it('a body that cannot be parsed under a JSON-path rule is refused', () => {
    const e = createMaskingEngine({ detectors: [], masking: [rule({ id: 'r', detectors: ['email'], jsonPaths: ['$.note'] })] }, { hmacKey: KEY });
    assert.throws(() => e.forConnection(svc)!.request('/', 'application/json', Buffer.from('{"note": "jane@example.com"')), /jsonPaths applies but the body is not valid JSON/);
  });

  it('an invalid config refuses to build, and a failed reload keeps the rules in force', () => {
    assert.throws(() => createMaskingEngine({ detectors: [], masking: [rule({ id: 'r', detectors: ['no_such'] })] }, { hmacKey: KEY }), /masking rule "r": unknown detector "no_such"/);
    assert.throws(() => createMaskingEngine({ detectors: [{ id: 'bad', pattern: '([a-z]', caseSensitive: false, contextWindow: 40 }], masking: [] }, { hmacKey: KEY }), /detector "bad": invalid regular expression/);
    assert.throws(() => createMaskingEngine({ detectors: [], masking: [rule({ id: 'r', detectors: ['email'] })] }, { hmacKey: Buffer.alloc(0) }), /HMAC key/);
    const e = createMaskingEngine({ detectors: [], masking: [rule({ id: 'r', detectors: ['email'] })] }, { hmacKey: KEY });
    assert.throws(() => e.reload({ detectors: [{ id: 'x', pattern: '(?<=id:)\\d+' }], masking: [] }), /detector "x": the pattern uses lookahead and lookbehind/);
    assert.throws(() => e.reload({ detectors: [], masking: [{ id: 'r', detectors: ['email'], strategy: 'shred' }] }), /invalid masking config/);
    assert.equal(e.forConnection(openai)!.request('/chat/completions', 'application/json', Buffer.from('{"messages":[{"role":"user","content":"jane@example.com"}]}')).forward.toString(), '{"messages":[{"role":"user","content":"[EMAIL]"}]}');
    e.reload({ detectors: [], masking: [rule({ id: 'r2', detectors: ['us_ssn'] })] });
    assert.equal(e.forConnection(svc)!.request('/', 'text/plain', Buffer.from('jane@example.com 078-05-1120')).forward.toString(), 'jane@example.com [US_SSN]', 'the new rules apply at once');
  });

  it('validateMaskingConfig reports each problem with its path', () => {
    const r = validateMaskingConfig({ detectors: [{ id: 'ok', pattern: 'X\\d+' }, { id: 'bad', pattern: '(' }], masking: [{ id: 'r', detectors: ['ok'], connections: ['nope'] }] }, { connections: ['openai'] });
    assert.equal(r.ok, false);
    if (r.ok) return;
    assert.deepEqual(r.issues.map((i) => i.path), [['masking', 0, 'connections', 0], ['detectors', 1]]);
    assert.match(r.issues[1]!.message, /invalid regular expression/);
    const z = validateMaskingConfig({ masking: [{ id: 'has space', detectors: [] }] });
    assert.equal(z.ok, false);
    assert.ok(!z.ok && z.issues[0]!.path.join('.') === 'masking.0.id');
  });
});

describe('row masking', () => {
  const pg: Connection = { name: 'warehouse', kind: 'postgres', upstream: 'postgres://app@127.0.0.1:5432/app', listen: '127.0.0.1:0' };
  const e = createMaskingEngine(
    {
      detectors: [],
      masking: [
        rule({ id: 'cols', columns: ['users.ssn', '*.email', 'dob'], strategy: 'hash' }),
        rule({ id: 'cards', detectors: ['credit_card', 'us_ssn'], scope: ['log'] }),
        rule({ id: 'mail', detectors: ['email'], scope: ['client'], connections: ['warehouse'] }),
      ],
    },
    { hmacKey: KEY },
  );

  it('is inactive when no rule applies to the connection', () => {
    const other = createMaskingEngine({ detectors: [], masking: [rule({ id: 'x', detectors: ['email'], connections: ['openai'] })] }, { hmacKey: KEY });
    assert.equal(other.rows(pg).active, false);
    assert.equal(e.rows(pg).active, true);
  });

  it('column rules mask whole values; table-qualified patterns check the table', () => {
    const rows = e.rows(pg);
    const a = rows.value({ table: 'users', column: 'ssn', typeOid: 25 }, '078-05-1120', 'client')!;
    assert.match(a.text, /^\[US_SSN:[0-9a-f]{8}\]$|^\[SSN:[0-9a-f]{8}\]$/);
    assert.deepEqual(a.spans, [{ type: a.text.slice(1, a.text.indexOf(':')), start: 0, end: a.text.length, rule: 'cols' }]);
    assert.match(rows.value({ table: 'orders', column: 'email', typeOid: 1043 }, 'anything at all', 'client')!.text, /^\[EMAIL:/);
    assert.match(rows.value({ column: 'DOB', typeOid: 1082 }, '1985-03-14', 'log')!.text, /^\[DOB:/, 'no table known: the column name decides');
    assert.equal(rows.value({ table: 'orders', column: 'ssn', typeOid: 25 }, 'n/a', 'client'), null, 'users.ssn does not match orders.ssn');
  });

  it('detectors run over text values with the column name as context, per scope', () => {
    const rows = e.rows(pg);
    assert.equal(rows.value({ table: 't', column: 'note', typeOid: 25 }, 'paid with 4111 1111 1111 1111', 'client'), null, 'the card rule is log-only');
    assert.equal(rows.value({ table: 't', column: 'note', typeOid: 25 }, 'paid with 4111 1111 1111 1111', 'log')!.text, 'paid with [CREDIT_CARD]');
    assert.equal(rows.value({ table: 't', column: 'tax_ssn', typeOid: 25 }, '078051120', 'log')!.text, '[US_SSN]', 'a bare SSN is recognised by its column name');
    assert.equal(rows.value({ table: 't', column: 'contact', typeOid: 25 }, 'jane@example.com', 'client')!.text, '[EMAIL]');
    assert.equal(rows.value({ table: 't', column: 'id', typeOid: 2950 }, '4111-1111-1111-1111', 'log'), null, 'uuid columns are not scanned');
    assert.deepEqual(rows.text('SELECT * FROM t WHERE card = \'4111 1111 1111 1111\'', 'log').text, "SELECT * FROM t WHERE card = '[CREDIT_CARD]'");
  });
});
