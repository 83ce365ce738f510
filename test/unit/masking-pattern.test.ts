/**
 * The linear-time pattern engine for typed patterns (proxy/masking/pattern.ts): offsets in the
 * scanner's units, the `v` value group, refusals that name the rule, and the scan budget.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LinearPattern, PatternError, ScanBudgetError } from '../../proxy/masking/pattern';
import { compileContentRegex } from '../../proxy/policy/engine';

const all = (p: LinearPattern, text: string) => [...p.matches(text, 0, text.length)].map((m) => text.slice(m.start, m.end));

describe('LinearPattern', () => {
  it('reports UTF-16 offsets, as the rest of the scanner counts', () => {
    const p = LinearPattern.compile('\\d+', 'test');
    const text = 'é€😀 42 and 7';
    assert.deepEqual(all(p, text), ['42', '7']);
  });

  it('masks only the v group when there is one; (?i) and the flag both work', () => {
    assert.deepEqual(all(LinearPattern.compile('EMP-(?<v>\\d{4})', 'test'), 'id EMP-1234 x'), ['1234']);
    assert.deepEqual(all(LinearPattern.compile('(?i)secret', 'test'), 'SeCrEt'), ['SeCrEt']);
    assert.deepEqual(all(LinearPattern.compile('secret', 'test', true), 'SECRET'), ['SECRET']);
  });

  it('refuses what RE2 cannot run, naming the rule', () => {
    assert.throws(() => LinearPattern.compile('a(?=b)', 'detector "x"'), (e: Error) => e instanceof PatternError && /^detector "x": the pattern uses lookahead/.test(e.message));
    assert.throws(() => LinearPattern.compile('(a)\\1', 'policy rule "y"'), /policy rule "y": the pattern uses backreferences/);
    assert.throws(() => LinearPattern.compile('(unclosed', 'policy rule "y"'), /policy rule "y": invalid regular expression: missing closing \)/);
  });

  it('a text the budget cannot cover is refused (fail closed), not matched partly', () => {
    const p = LinearPattern.compile('(a|aa)+$', 'policy rule "z"');
    const big = 'a'.repeat(3 << 20) + '!';
    assert.throws(() => p.test(big, performance.now() - 1, Infinity, 'policy rule "z"'), (e: Error) => e instanceof ScanBudgetError && /policy rule "z": scanning \d+ characters exceeded the scan budget/.test(e.message));
    assert.equal(p.test('a'.repeat(40) + '!', performance.now() + 1000, Infinity, 'z'), false);
    assert.equal(p.test('a'.repeat(40), performance.now() + 1000, Infinity, 'z'), true);
  });

  it('content rules find a match across the windows of a large text', () => {
    const c = compileContentRegex('(?i)export (all|every)', 'policy rule "bulk"');
    const filler = 'lorem ipsum '.repeat(100_000); // 1.2 MB: tested in windows
    assert.equal(c.test(filler + 'please EXPORT ALL rows' + filler), true);
    assert.equal(c.test(filler.slice(0, (1 << 20) - 4) + 'export every' + filler), true, 'a match straddling a window edge');
    assert.equal(c.test(filler + filler), false);
    // anchors mean the text's ends, not a window's
    assert.equal(compileContentRegex('(a|aa)+$', 'r').test('a'.repeat(3 << 20) + '!'), false);
    assert.equal(compileContentRegex('^x', 'r').test('y'.repeat(3 << 20) + 'x'), false);
  });
});
