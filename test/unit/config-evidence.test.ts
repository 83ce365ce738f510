// audit.witnesses[], audit.sinks[] and audit.archive: every refused value names its path and the fix (corpus in
// test/fixtures/config/audit-evidence-bad.txt, one attempt a line); good values parse.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { formatIssuePath, validateConfig } from '../../shared/config';

describe('audit.witnesses, audit.sinks and audit.archive in the config', () => {
  it('refuses each bad value with its path and a message that names the fix', () => {
    const lines = readFileSync('test/fixtures/config/audit-evidence-bad.txt', 'utf8')
      .split('\n')
      .filter((l) => l && !l.startsWith('#'));
    assert.ok(lines.length >= 15);
    for (const line of lines) {
      const [path, message, json] = line.split('\t') as [string, string, string];
      const r = validateConfig({ audit: JSON.parse(json) as unknown });
      assert.equal(r.ok, false, `accepted: ${json}`);
      if (r.ok) continue;
      const hit = r.issues.find((i) => formatIssuePath(i.path).replace(/\[(\d+)\]/g, '.$1') === `audit.${path}`);
      assert.ok(hit, `${json}: no issue at audit.${path}; got ${JSON.stringify(r.issues)}`);
      assert.match(hit.message, new RegExp(message), json);
    }
  });

  it('accepts the documented shapes and defaults both lists to empty', () => {
    const r = validateConfig({
      audit: {
        witnesses: [{ name: 'offsite', url: 'https://witness.example:7430', key: 'witness.example/w1+1c2d3e4f+BFxBase64Key+/=' }],
        sinks: [
          { name: 'soc', kind: 'syslog', url: 'tls://siem.example:6514' },
          { name: 'hook', kind: 'http', url: 'https://hooks.example/custody', secret: 'whsec' },
          { name: 'splunk', kind: 'http', preset: 'splunk', url: 'https://splunk.example:8088/services/collector/event', secret: 'tok' },
          { name: 'js', kind: 'nats', url: 'nats://127.0.0.1:4222/custody.audit' },
        ],
      },
    });
    assert.ok(r.ok, JSON.stringify(!r.ok && r.issues));
    const d = validateConfig({});
    assert.ok(d.ok);
    if (d.ok) assert.deepEqual([d.config.audit.witnesses, d.config.audit.sinks, d.config.audit.archive], [[], [], undefined]);
  });

  it('accepts audit.signer with either form of public key, its timeout defaulting to 10s', () => {
    for (const publicKey of ['r7SmouQycZlBsX9p/Pj79S/2M4xxZxIINrc2pnJUVS8=', 'custody/h+0badc0de+Aa+0pqLkMnGZQbF/af8+PvvUv9jOMcWcSCDa3NqZyVFUv']) {
      const r = validateConfig({ audit: { signer: { command: ['scripts/pkcs11-sign.sh', '--module', '/usr/lib/softhsm/libsofthsm2.so', '--id', '01'], publicKey } } });
      assert.ok(r.ok, JSON.stringify(!r.ok && r.issues));
      if (r.ok) assert.equal(r.config.audit.signer?.timeout, '10s');
    }
  });

  it('accepts an archive with its defaults, and refuses retention.archiveFor without one', () => {
    const r = validateConfig({
      retention: { payloadsAfter: '400d', archiveFor: '730d' },
      audit: { archive: { s3: { bucket: 'evidence.example', prefix: 'custody/prod/', endpoint: 'http://127.0.0.1:9000', credentials: { accessKeyId: { env: 'ARCHIVE_KEY_ID' }, secretAccessKey: { file: '/run/secrets/archive' } } } } },
    });
    assert.ok(r.ok, JSON.stringify(!r.ok && r.issues));
    if (r.ok) assert.deepEqual([r.config.audit.archive?.every, r.config.audit.archive?.lockMode, r.config.audit.archive?.s3.forcePathStyle], ['1h', 'COMPLIANCE', undefined]);
    const bad = validateConfig({ retention: { archiveFor: '730d' } });
    assert.equal(bad.ok, false);
    if (!bad.ok) {
      assert.deepEqual(bad.issues[0]!.path, ['retention', 'archiveFor']);
      assert.match(bad.issues[0]!.message, /archiveFor locks archive segments: configure audit.archive/);
    }
  });
});
