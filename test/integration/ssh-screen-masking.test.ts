// Masking on a terminal keeps the screen's layout: through the gateway to a real sshd, `cat` of a
// full-screen-ish file (clear and cursor moves, a reverse-video title, a box-drawn table with a
// coloured card number, CJK names, an emoji, a status line) on a pty reaches OpenSSH's client with
// the card number replaced by a placeholder exactly as wide, every border in its column, every
// escape sequence intact and valid UTF-8; the record holds the same screen. Without a pty the same
// file gets the plain `[CREDIT_CARD]` label, as scripts expect.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { SshKeyStore } from '../../proxy/identity/ssh-keys';
import { textCells } from '../../proxy/masking/terminal-width';
import { run, SSH_KEY_ONLY, type SshBox, startSshBox } from '../support/ssh-box';

const CARD = '4111 1111 1111 1111';
const SCREEN = [
  '\x1b[2J\x1b[H\x1b[7m Customers — page 1 \x1b[0m',
  '┌──────────┬─────────────────────┬──────┐',
  `│ Ana Lima │ \x1b[31m${CARD}\x1b[0m │ ok   │`,
  `│ 李小龍   │ ${CARD.replace(/ /g, '-')} │ 😀   │`,
  `│ Bo Chen  │ 4111 \x1b[1m1111\x1b[22m 1111 1111 │ late │`,
  '└──────────┴─────────────────────┴──────┘',
  '\x1b[24;1H\x1b[K\x1b[44m q:quit  ↑↓ move \x1b[0m',
  '',
].join('\n');

// eslint-disable-next-line no-control-regex
const ESCAPES = /\x1b\[[0-?]*[ -/]*[@-~]|\x1b[ -/]*[0-~]/g;
/** The cells each line takes on screen (escape sequences and CRs take none). */
const lineCells = (text: string) => text.replace(ESCAPES, '').replace(/\r/g, '').split('\n').map(textCells);

let box: SshBox;
let work: string;
let identity: string;
let file: string;

describe('ssh: masked values keep their width on a terminal', () => {
  before(async () => {
    box = await startSshBox({
      masking: [{ id: 'cards', detectors: ['credit_card'], scope: ['client', 'log'] }],
      policies: [{ name: 'cat', match: { connections: ['box'], commands: ['cat *'] }, action: 'allow' }],
    });
    work = mkdtempSync(join(tmpdir(), 'custody-ssh-screen-'));
    file = join(work, 'screen.txt');
    writeFileSync(file, SCREEN);
    identity = join(work, 'id_ed25519');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'ops@laptop', '-f', identity]);
    const { record } = box.gw.services.keys.create({ name: 'ops', groups: ['ops'] });
    new SshKeyStore(box.gw.services.store.db).add(record.id, readFileSync(`${identity}.pub`, 'utf8'), 'test');
  });

  after(async () => {
    await box?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('on a pty: the same screen, the card replaced cell for cell, escapes and UTF-8 intact', async () => {
    const r = await run('ssh', [...SSH_KEY_ONLY, '-tt', '-i', identity, '-p', String(box.port), 'ops@127.0.0.1', `cat ${file}`]);
    assert.equal(r.code, 0, r.stderr);
    const out = r.stdout;
    assert.ok(!out.includes('4111') && !out.includes('1111-1111'), out);
    assert.ok(!out.includes('\ufffd'), 'valid UTF-8 all through');
    // The pty turns \n into \r\n; otherwise the screen is the file's, each line as wide as before.
    assert.deepEqual(lineCells(out), lineCells(SCREEN));
    assert.deepEqual(out.match(ESCAPES), SCREEN.match(ESCAPES), 'every escape sequence, in order');
    const lines = out.split('\r\n');
    assert.equal(lines[2], '│ Ana Lima │ \x1b[31m[CREDIT_CARD******]\x1b[0m │ ok   │');
    assert.equal(lines[3], '│ 李小龍   │ [CREDIT_CARD******] │ 😀   │');
    assert.equal(lines[4], '│ Bo Chen  │ [CRED\x1b[1mIT_C\x1b[22mARD******] │ late │', 'a value with a colour change inside is found, the change kept');
    // The record holds what the client saw.
    const exit = box.events('ssh.exit').at(-1)!.payload as { stdout?: string };
    assert.equal(exit.stdout, out);
  });

  it('without a pty: the plain label, found through colours too, the escapes kept', async () => {
    const r = await run('ssh', [...SSH_KEY_ONLY, '-T', '-i', identity, '-p', String(box.port), 'ops@127.0.0.1', `cat ${file}`]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.split('\n');
    assert.equal(lines[2], '│ Ana Lima │ \x1b[31m[CREDIT_CARD]\x1b[0m │ ok   │');
    assert.equal(lines[3], '│ 李小龍   │ [CREDIT_CARD] │ 😀   │');
    assert.equal(lines[4], '│ Bo Chen  │ [CREDIT_CARD]\x1b[1m\x1b[22m │ late │');
    assert.ok(!r.stdout.includes('4111'), r.stdout);
  });
});
