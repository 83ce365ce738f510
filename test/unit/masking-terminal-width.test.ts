// Masking for a terminal screen (proxy/masking/terminal-width.ts): a masked value's placeholder
// takes exactly the cells the value took, the value's escape sequences and line breaks stay where
// they were, nothing of the value survives (not inside an OSC title, not in a made-up CSI), and a
// stream cut anywhere (inside an escape sequence, between the halves of an emoji) comes out as
// valid UTF-8 with the same screen.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type { Connection, CustomDetector, MaskingRule } from '../../shared/config';
import { createMaskingEngine } from '../../proxy/masking/engine';
import { charCells, fitPlaceholder, fitToScreen, textCells } from '../../proxy/masking/terminal-width';

const CARD = '4111 1111 1111 1111';
const box: Connection = { name: 'box', kind: 'ssh', upstream: 'ssh://u@127.0.0.1:22', listen: '127.0.0.1:0' } as Connection;
const rules: MaskingRule[] = [
  { id: 'cards', detectors: ['credit_card', 'email', 'token'], scope: ['client', 'log'], strategy: 'redact', keepLast: 4 },
];
const detectors = [{ id: 'token', pattern: 'token=\\S+', caseSensitive: false, contextWindow: 40 }] as CustomDetector[];
const engine = createMaskingEngine({ detectors, masking: rules }, { hmacKey: Buffer.alloc(32, 7) });

/** What a terminal shows per line: escape sequences and CR removed, cells counted. */
// eslint-disable-next-line no-control-regex
const ESCAPES = /\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[ -/]*[0-~]|\r/g;
/** Half of a character outside the BMP: not encodable as UTF-8. */
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
const lineCells = (text: string) => text.replace(ESCAPES, '').split('\n').map(textCells);
const escapesOf = (text: string) => text.match(ESCAPES) ?? [];

/** Pushes `text` through a screen masker in the given cuts; returns what the client gets. */
function throughScreen(text: string, cuts: number[] = []): { fwd: string; log: string } {
  const m = engine.forConnection(box)!.textStream(undefined, { screen: true });
  let fwd = '';
  let log = '';
  let at = 0;
  for (const cut of [...cuts.filter((c) => c > 0 && c < text.length).sort((a, b) => a - b), text.length]) {
    const p = m.push(text.slice(at, cut));
    fwd += p.fwd;
    log += p.log;
    at = cut;
  }
  const e = m.end();
  return { fwd: fwd + e.fwd, log: log + e.log };
}

describe('terminal width of masked values', () => {
  it('counts cells as a terminal does', () => {
    assert.deepEqual(['a', '€', '語', '한', '😀', 'ｆ', '\u0301', '\u200b'].map(charCells), [1, 1, 2, 2, 2, 2, 0, 0]);
    assert.equal(textCells('a語😀e\u0301'), 6);
  });

  it('pads a placeholder inside its brackets, or cuts it down keeping them', () => {
    assert.equal(fitPlaceholder('[CREDIT_CARD]', 19), '[CREDIT_CARD******]');
    assert.equal(fitPlaceholder('[EMAIL]', 5), '[EMA]');
    assert.equal(fitPlaceholder('[EMAIL]', 2), 'EM');
    assert.equal(fitPlaceholder('[EMAIL]', 0), '');
    assert.equal(fitPlaceholder('****-1111', 11), '****-1111**');
    for (let n = 0; n < 30; n++) assert.equal(textCells(fitPlaceholder('[CREDIT_CARD]', n)), n);
  });

  it('lays the placeholder over the value\'s cells, keeping its escape sequences, breaks and tabs where they were', () => {
    assert.equal(fitToScreen('[CREDIT_CARD]', CARD), '[CREDIT_CARD******]');
    assert.equal(fitToScreen('[CREDIT_CARD]', '4111 \x1b[1m1111\x1b[22m 1111 1111'), '[CRED\x1b[1mIT_C\x1b[22mARD******]');
    assert.equal(fitToScreen('[TOKEN]', 'token=abc\x1b[0m'), '[TOKEN**]\x1b[0m');
    assert.equal(fitToScreen('[X]', 'ab\r\ncd\tef'), '[X\r\n**\t*]');
    // Wide characters: two cells each, filled with two placeholder characters.
    assert.equal(fitToScreen('[EMAIL]', '語語@x.jp'), '[EMAIL**]');
    assert.equal(textCells(fitToScreen('[EMAIL]', '語語@x.jp')), textCells('語語@x.jp'));
    // An escape cut off by the end of the match is kept whole.
    assert.equal(fitToScreen('[TOKEN]', 'token=abcdef\x1b['), '[TOKEN*****]\x1b[');
  });

  it('never lets the value through a control sequence', () => {
    // A title (OSC) carrying the value: starred out, its frame kept.
    const osc = fitToScreen('[CREDIT_CARD]', `\x1b]0;${CARD}\x07`);
    assert.equal(osc, `\x1b]${'*'.repeat(`0;${CARD}`.length)}\x07`);
    assert.ok(!osc.includes('4111'));
    // A "CSI" far too long to be one is text, and masked.
    const fake = fitToScreen('[CREDIT_CARD]', `\x1b[${'4111111111111111'.repeat(3)}m`);
    assert.ok(!fake.includes('4111'), fake);
  });

  it('a card in a box-drawn table, coloured, keeps every border in its column and every escape', () => {
    const screen = [
      '\x1b[2J\x1b[H\x1b[7m Customers \x1b[0m',
      '┌──────────┬─────────────────────┐',
      `│ Ana Lima │ \x1b[31m${CARD}\x1b[0m │`,
      `│ 李小龍   │ ${CARD.replace(/ /g, '-')} │`,
      '└──────────┴─────────────────────┘',
      '\x1b[24;1H\x1b[Kq:quit  😀 done',
    ].join('\r\n');
    const { fwd, log } = throughScreen(screen);
    assert.ok(!fwd.includes('4111') && !log.includes('4111'), fwd);
    assert.deepEqual(lineCells(fwd), lineCells(screen), 'every line as wide as before');
    assert.deepEqual(escapesOf(fwd), escapesOf(screen), 'every escape sequence kept, in order');
    assert.ok(fwd.includes('│ \x1b[31m[CREDIT_CARD******]\x1b[0m │'), fwd);
    assert.equal(log, fwd, 'the record shows the screen the client saw');
  });

  it('is the same screen, as valid UTF-8, however the stream is cut', () => {
    const screen = `\x1b[1m😀 語 ${CARD}\x1b[0m token=s3cr3t\x1b[0m 🎉 mail a.person@example.com end\r\n`;
    const whole = throughScreen(screen).fwd;
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: screen.length - 1 }), { maxLength: 12 }), (cuts) => {
        const m = engine.forConnection(box)!.textStream(undefined, { screen: true });
        const pieces: string[] = [];
        let at = 0;
        for (const cut of [...new Set(cuts)].sort((a, b) => a - b)) {
          pieces.push(m.push(screen.slice(at, cut)).fwd);
          at = cut;
        }
        pieces.push(m.push(screen.slice(at)).fwd, m.end().fwd);
        for (const p of pieces) assert.ok(!LONE_SURROGATE.test(p), `a piece with half a character: ${JSON.stringify(p)}`);
        const joined = pieces.join('');
        assert.equal(joined, whole);
        assert.ok(!joined.includes('4111') && !joined.includes('s3cr3t') && !joined.includes('a.person'));
      }),
      { numRuns: 300 },
    );
    assert.deepEqual(lineCells(whole), lineCells(screen));
  });

  it('without a pty: labels, not widths; values found through escape sequences, which are kept', () => {
    const m = engine.forConnection(box)!.textStream();
    const p = m.push(`card ${CARD} on file, \x1b[31m${CARD}\x1b[0m, 4111 \x1b[1m1111\x1b[22m 1111 1111\n`);
    assert.equal(p.fwd + m.end().fwd, 'card [CREDIT_CARD] on file, \x1b[31m[CREDIT_CARD]\x1b[0m, [CREDIT_CARD]\x1b[1m\x1b[22m\n');
  });
});
