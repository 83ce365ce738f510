/**
 * The gateway's JSON reader (proxy/masking/json.ts): the same values as JSON.parse for valid JSON,
 * and a refusal, in words and with a position, where parsers disagree or input would recurse.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { JsonReadError, nestedDeeperThan, readJson } from '../../proxy/masking/json';

function refused(text: string, reason: JsonReadError['reason'], message: RegExp): void {
  assert.throws(
    () => readJson(text),
    (err: unknown) => err instanceof JsonReadError && err.reason === reason && message.test(err.message),
    text.slice(0, 60),
  );
}

describe('readJson', () => {
  it('reads what JSON.parse reads, escapes, unicode and __proto__ included', () => {
    const samples = [
      '{"a":1,"b":[1,2,{"c":"x\\ny"}],"d":{},"e":[]}',
      ' { "a" : [ true , false , null , -1.5e3, 0, 0.25 ] } ',
      '"\\u00e9\\ud83d\\ude00 \\" \\\\ \\/"',
      '{"__proto__":{"polluted":true}}',
      '[[[[["deep enough"]]]]]',
      '{"k":"\\ud800"}',
      JSON.stringify({ text: 'Ça marche — 👋', n: -0.000001, big: 9007199254740991 }),
    ];
    for (const s of samples) assert.deepEqual(readJson(s), JSON.parse(s), s);
    assert.equal(({} as Record<string, unknown>)['polluted'], undefined, 'no prototype pollution');
    assert.deepEqual(readJson('\ufeff{"a":1}'), { a: 1 }, 'a byte order mark is skipped');
  });

  it('refuses duplicate keys, however they are spelled', () => {
    refused('{"a":1,"a":2}', 'duplicate', /duplicate key "a"/);
    refused('{"content":"x","\\u0063ontent":"y"}', 'duplicate', /duplicate key "content"/);
    refused('{"o":{"k":1},"p":[{"k":1,"k":2}]}', 'duplicate', /duplicate key "k"/);
  });

  it('refuses nesting past the limit without recursing', () => {
    refused(`${'['.repeat(100_000)}${']'.repeat(100_000)}`, 'depth', /deeper than 128/);
    refused(`${'{"a":'.repeat(129)}1${'}'.repeat(129)}`, 'depth', /deeper than 128/);
    assert.deepEqual(readJson(`${'['.repeat(128)}${']'.repeat(128)}`), JSON.parse(`${'['.repeat(128)}${']'.repeat(128)}`));
    assert.ok(nestedDeeperThan(`${'['.repeat(129)}${']'.repeat(129)}`, 128));
    assert.ok(!nestedDeeperThan(`["[[[[[[", ${'['.repeat(120)}${']'.repeat(120)}]`, 128), 'brackets inside strings do not count');
  });

  it('refuses numbers that would not be forwarded as sent', () => {
    refused('{"seed": 12345678901234567890}', 'number', /beyond ±2\^53/);
    refused('[1e400]', 'number', /out of range/);
    assert.deepEqual(readJson('[1.0, 1e2, -0]'), [1, 100, -0]);
  });

  it('refuses what is not JSON, saying where', () => {
    for (const s of ['', '{', '[1,]', '{"a":1,}', '{"a" 1}', '[01]', '[-]', "{'a':1}", '"abc', '{"a":1} x', 'NaN', '[1 2]', '"a\u0001b"', '"a\nb"', '["\\x41"]'])
      assert.throws(() => readJson(s), (err: unknown) => err instanceof JsonReadError && err.reason === 'syntax' && /at character \d+/.test(err.message), JSON.stringify(s));
  });
});
