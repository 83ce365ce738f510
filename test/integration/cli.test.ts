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
    // The secret is everything after the id (it may itself contain '_', so a split could leave a short fragment).
    const secret = key.slice(key.indexOf('_', 4) + 1);
    assert.equal(secret.length, 32);
    assert.ok(!listed.out.includes(secret), 'keys list never prints the secret');
  });

  it('keys belong to persons: --owner names one; persons list, link and lock; login-link makes single-use links', () => {
    const dir = tempDir();
    const json = (r: { code: number | null; out: string; err: string }) => {
      assert.equal(r.code, 0, r.err);
      return JSON.parse(r.out) as Record<string, unknown>;
    };
    const a1 = json(custody('keys', 'create', '--name', 'alice', '--groups', 'dba', '--json', '--data-dir', dir));
    const a2 = json(custody('keys', 'create', '--name', 'alice ci', '--owner', 'alice', '--groups', 'dba', '--json', '--data-dir', dir));
    assert.equal(a2['person'], a1['person'], '--owner puts the second key with the same person');
    const b = json(custody('keys', 'create', '--name', 'bob', '--json', '--data-dir', dir));
    assert.notEqual(b['person'], a1['person'], 'without --owner a key gets a new person of its name');
    assert.equal(custody('keys', 'create', '--name', 'x', '--owner', 'nobody', '--data-dir', dir).code, 2);
    const listed = custody('persons', 'list', '--data-dir', dir);
    assert.match(listed.out, new RegExp(`${String(a1['person'])}\\s+active\\s+alice\\s+key:${String(a1['id'])} key:${String(a2['id'])}`));
    const linked = custody('persons', 'link', 'alice', `key:${String(b['id'])}`, '--data-dir', dir);
    assert.equal(linked.code, 0, linked.err);
    const locked = custody('persons', 'lock', 'alice', '--data-dir', dir);
    assert.equal(locked.code, 0, locked.err);
    assert.match(locked.out, /3 key\(s\) revoked/);
    assert.match(custody('keys', 'list', '--data-dir', dir).out, /revoked\s+bob/);
    const again = custody('persons', 'lock', 'alice', '--data-dir', dir);
    assert.equal(again.code, 1);
    assert.match(again.err, /already locked/);
    assert.equal(custody('persons', 'lock', '--data-dir', dir).code, 2);
    assert.match(custody('persons', 'link', 'alice', 'nonsense', '--data-dir', dir).err, /CREDENTIAL is key:/);
    const link = custody('login-link', '--data-dir', dir);
    assert.equal(link.code, 0, link.err);
    assert.match(link.out, /^http:\/\/127\.0\.0\.1:7420\/login\?token=[\w-]{43}\n$/);
    assert.match(link.err, /Signs in once/);
    assert.notEqual(custody('login-link', '--data-dir', dir).out, link.out);
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
