import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { AuditStore } from '../../proxy/audit/store';
import { parseConfig } from '../../proxy/config';
import { maskingConfigIssues } from '../../proxy/masking/engine';
import { nearestKey } from '../../shared/config-hints';
import { tempDir } from '../support/tmp';

const CLI = resolve('bin/custody.mjs');

function custody(args: string[], opts: { cwd?: string; env?: Record<string, string> } = {}) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60_000, cwd: opts.cwd, env: { ...process.env, ...opts.env } });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

function errorOf(text: string): string {
  try {
    parseConfig(text, 'custody.yaml', [maskingConfigIssues]);
  } catch (err) {
    return (err as Error).message;
  }
  assert.fail('the config was accepted');
}

describe('config errors that point at the fix', () => {
  it('gives YAML syntax errors their own line and column', () => {
    assert.match(errorOf('dataDir: ./data\n\tlisten: {}\n'), /^custody\.yaml:2:1: invalid YAML: Tabs are not allowed/);
    const unclosed = ['dataDir: ./data', 'connections:', '  - name: a', '    kind: openai', '    upstream: https://x', 'listen: {control: 1', 'retention: {}', ''].join('\n');
    assert.match(errorOf(unclosed), /^custody\.yaml:[67]:\d+: invalid YAML/);
  });

  it('suggests the nearest key for a misspelt one, at the key\'s line', () => {
    const text = ['dataDir: ./data', 'listen: {}', '', '', 'conections: []', ''].join('\n');
    assert.equal(errorOf(text), 'custody.yaml:5: conections: unknown key "conections": did you mean "connections"?');
    const inItem = ['connections:', '  - name: openai', '    kind: openai', '    upstrem: https://api.openai.com/v1', ''].join('\n');
    const msg = errorOf(inItem);
    assert.match(msg, /custody\.yaml:4: connections\[0\]\.upstrem: unknown key "upstrem": did you mean "upstream"\?/);
    assert.match(msg, /connections\[0\]\.upstream: upstream is required \(a string\)/);
    assert.doesNotMatch(msg, /received undefined/);
  });

  it('lists valid keys when nothing is near', () => {
    assert.match(errorOf('zzzzzzzz: 1\n'), /unknown key "zzzzzzzz"\. Valid keys here: dataDir, listen, .*connections/);
    assert.equal(nearestKey('policys', ['policies', 'masking']), 'policies');
    assert.equal(nearestKey('frobnicate', ['policies', 'masking']), undefined);
  });

  it('reports schema and detector errors in one pass, in line order', () => {
    const text = ['masking:', '  - id: m1', '    detectors: [credit_crad]', 'connections:', '  - name: a', '    kind: openai', '    upstrem: https://x', ''].join('\n');
    const lines = errorOf(text).split('\n');
    assert.equal(lines.length, 3, lines.join('\n'));
    assert.match(lines[0]!, /^custody\.yaml:3: masking\[0\]\.detectors\[0\]: .*unknown detector "credit_crad"/);
    assert.match(lines[1]!, /^custody\.yaml:5: connections\[0\]\.upstream: upstream is required/);
    assert.match(lines[2]!, /^custody\.yaml:7: connections\[0\]\.upstrem: unknown key/);
  });

  it('writes nothing to disk when the config is invalid', () => {
    const dir = tempDir();
    const dataDir = join(dir, 'data');
    writeFileSync(join(dir, 'custody.yaml'), `dataDir: ${dataDir}\nmasking:\n  - id: m1\n    detectors: [credit_crad]\n`);
    const r = custody(['serve', '--config', join(dir, 'custody.yaml')]);
    assert.equal(r.code, 1, r.err);
    assert.match(r.err, /custody\.yaml:4: masking\[0\]\.detectors\[0\]/);
    assert.equal(existsSync(dataDir), false, 'the data dir was created by a start that failed');
  });
});

describe('data dirs and finding the store', () => {
  it('keeps every data dir out of version control', () => {
    const dataDir = join(tempDir(), 'fresh');
    AuditStore.open(dataDir).close();
    assert.equal(readFileSync(join(dataDir, '.gitignore'), 'utf8').split('\n').filter((l) => l && !l.startsWith('#')).join(), '*');
    const git = spawnSync('git', ['status', '--porcelain', '--untracked-files=all'], { cwd: dataDir, encoding: 'utf8' });
    if (git.status === 0) assert.equal(git.stdout.trim(), '', 'git would see files of the data dir');
  });

  it('finds ./custody.yaml and $CUSTODY_CONFIG, and says where it looked when no store is there', () => {
    const dir = tempDir();
    const dataDir = join(dir, 'from-yaml');
    writeFileSync(join(dir, 'custody.yaml'), `dataDir: ./from-yaml\n`);
    custody(['keys', 'create', '--name', 'ci'], { cwd: dir });
    assert.ok(existsSync(join(dataDir, 'custody.db')), './custody.yaml was not used');
    assert.equal(custody(['verify'], { cwd: dir }).code, 0);

    const other = tempDir();
    writeFileSync(join(other, 'elsewhere.yaml'), `dataDir: ./env-data\n`);
    custody(['keys', 'create', '--name', 'ci'], { cwd: dir, env: { CUSTODY_CONFIG: join(other, 'elsewhere.yaml') } });
    assert.ok(existsSync(join(other, 'env-data', 'custody.db')), '$CUSTODY_CONFIG was not used');

    const empty = tempDir();
    const r = custody(['verify'], { cwd: empty, env: { CUSTODY_DATA_DIR: join(empty, 'none') } });
    assert.equal(r.code, 1);
    assert.match(r.err, /has no audit store \(custody\.db\); that data dir is the embedded default's, as no config was found \(looked for .*custody\.yaml\)\. Pass --config FILE/);
  });
});
