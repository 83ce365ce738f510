import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { tempDir } from '../support/tmp';

function custody(...args: string[]) {
  const r = spawnSync(process.execPath, ['bin/custody.mjs', ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

describe('custody CLI', () => {
  it('creates a key, prints it once, and lists it without the secret', () => {
    const dir = tempDir();
    const created = custody('keys', 'create', '--name', 'ci-bot', '--groups', 'dev,approver', '--expires', '30d', '--data-dir', dir);
    assert.equal(created.code, 0, created.err);
    const key = created.out.trim();
    assert.match(key, /^cst_[a-z0-9]{12}_[A-Za-z0-9_-]{32}$/);
    assert.match(created.err, /shown only once/);
    const listed = custody('keys', 'list', '--data-dir', dir);
    assert.equal(listed.code, 0, listed.err);
    assert.match(listed.out, /active\s+ci-bot\s+groups=dev,approver/, `keys list printed:\n${listed.out}\nstderr:\n${listed.err}`);
    assert.ok(!listed.out.includes(key.split('_')[2]!));
  });

  it('refuses bad usage with one line and exit 2', () => {
    const r = custody('keys', 'create', '--data-dir', tempDir());
    assert.equal(r.code, 2);
    assert.equal(r.err.trim().split('\n').length, 1);
    assert.match(r.err, /needs --name/);
    const expires = custody('keys', 'create', '--name', 'x', '--expires', 'soon', '--data-dir', tempDir());
    assert.equal(expires.code, 2);
    assert.match(expires.err, /invalid duration "soon"/);
    const help = custody('keys', '--help');
    assert.equal(help.code, 0);
    assert.match(help.out, /^usage: custody keys create/);
    // An unknown flag at the end reads as unknown, not as a flag missing its value.
    const bogus = custody('verify', '--bogus');
    assert.equal(bogus.code, 2);
    assert.match(bogus.err, /unknown option --bogus/);
    const noValue = custody('verify', '--key');
    assert.equal(noValue.code, 2);
    assert.match(noValue.err, /--key needs a value/);
    const unknown = custody('frobnicate');
    assert.equal(unknown.code, 2);
    assert.match(unknown.err, /unknown command "frobnicate"/);
  });

  it('serve exits non-zero naming file, line and field for an invalid config', () => {
    const dir = tempDir();
    const file = join(dir, 'custody.yaml');
    writeFileSync(file, `dataDir: ./data\nlisten:\n  control: 127.0.0.1:0\n  http: nowhere\n`);
    const r = custody('serve', '--config', file);
    assert.equal(r.code, 1);
    assert.match(r.err, new RegExp(`${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}:4: listen\\.http: an address such as 127\\.0\\.0\\.1:7421`));
  });

  it('serve exits non-zero for a missing config file', () => {
    const r = custody('serve', '--config', '/nonexistent/custody.yaml');
    assert.equal(r.code, 1);
    assert.match(r.err, /\/nonexistent\/custody\.yaml: cannot read config \(no such file\)/);
  });
});
