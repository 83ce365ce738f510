// Shell lines rebuilt from their keys (shared/shell-line.ts, docs/SSH.md "Shell lines"). The corpus
// is data: test/fixtures/shell-lines.jsonl, one attempt a line ({keys, line, uncertain}), so a new
// case is one line. Then what a terminal draws of an echo, and EchoWatch with edited lines: an
// edited line counts as echoed when the terminal shows the line its keys make; a password typed
// with echo off, edited or not, stays its length only.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { reconstructLine, renderEcho } from '../../shared/shell-line';
import { EchoWatch } from '../../proxy/ssh/terminal';

const corpus = readFileSync(join(import.meta.dirname, '../fixtures/shell-lines.jsonl'), 'utf8')
  .split('\n')
  .filter((l) => l.trim())
  .map((l) => JSON.parse(l) as { keys: string; line: string; uncertain: string[] });

describe('reconstructLine', () => {
  for (const c of corpus) {
    it(`${JSON.stringify(c.keys)} → ${JSON.stringify(c.line)}${c.uncertain.length ? ` (uncertain: ${c.uncertain.join(', ')})` : ''}`, () => {
      assert.deepEqual(reconstructLine(c.keys), { line: c.line, uncertain: c.uncertain });
    });
  }

  it('stops at the first Enter', () => {
    assert.equal(reconstructLine('true\rrm -rf /\r').line, 'true');
  });
});

describe('renderEcho', () => {
  it('draws backspace redraws, erasures, inserts and deletes as the terminal shows them', () => {
    assert.deepEqual(renderEcho('$ rm -rf /tmpx\b \b/cache'), ['$ rm -rf /tmp/cache']);
    assert.deepEqual(renderEcho('$ s -rf\r$ rm -rf'), ['$ rm -rf']);
    assert.deepEqual(renderEcho('$ echo abcdef\b\b\b\x1b[K\x1b[1@x'), ['$ echo abcx']);
    assert.deepEqual(renderEcho('abc\x1b[2D\x1b[P'), ['ac']);
    assert.deepEqual(renderEcho('\x1b]0;title\x07$ ls\r\nfile\r\n'), ['$ ls', 'file', '']);
  });
});

describe('EchoWatch with edited lines', () => {
  it('a line edited with Backspace, Ctrl-W and arrows is recorded once its redrawn echo shows it', () => {
    const w = new EchoWatch();
    w.input('rm -rf /tmpx', 1);
    w.output('rm -rf /tmpx');
    w.input('\x7f', 2);
    w.output('\b \b');
    w.input('/cache', 3);
    w.output('/cache');
    assert.deepEqual(w.input('\r', 4), [{ text: 'rm -rf /tmpx\x7f/cache\r', at: 1 }]);
    w.output('\r\n$ ');
    w.input('systemctl stop nginx\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D', 5);
    w.output('systemctl stop nginx\b\b\b\b\b\b\b\b\b\b\b\b\b\b\b\b\b\b\b\b');
    w.input('sudo ', 6);
    w.output('\x1b[1@s\x1b[1@u\x1b[1@d\x1b[1@o\x1b[1@ ');
    assert.equal(w.input('\r', 7).length, 1);
  });

  it('a password typed with echo off stays its length only, even with Backspace in it', () => {
    const w = new EchoWatch();
    w.output('[sudo] password for deploy: ');
    w.input('hunter3\x7f2', 1);
    assert.deepEqual(w.input('\r', 2), []);
    assert.deepEqual(w.output('\r\n'), []);
    // The length is of the keys typed (eight printable ones here), not of the password they made.
    assert.deepEqual(w.expire(2 + w.echoWaitMs), [{ hidden: true, length: 8, at: 1 }]);
  });
});

describe('EchoWatch timers', () => {
  it('an expiry that fires while the next line is being typed keeps that line\'s echo', () => {
    const w = new EchoWatch();
    w.input('true\r', 1);
    assert.deepEqual(w.output('true\r\n$ '), [{ text: 'true\r', at: 1 }]);
    w.input('echo edited-linX', 2);
    w.output('echo edited-linX');
    // The echo timer of the line before fires late, in the middle of this one.
    assert.deepEqual(w.expire(2 + w.echoWaitMs), []);
    w.input('\x7f', 3);
    w.output('\b \b');
    w.input('e ok', 4);
    w.output('e ok');
    assert.deepEqual(w.input('\r', 5), [{ text: 'echo edited-linX\x7fe ok\r', at: 2 }]);
  });
});
