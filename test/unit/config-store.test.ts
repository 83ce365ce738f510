/**
 * `store:` — the shared PostgreSQL store (docs/SCALE-OUT.md): a URL without a password, the
 * password from `secret`, errors at the file's line; and a gateway whose store secret is missing
 * does not start. `audit.remoteCommit` (async by default, sync only with a store).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Config } from '../../shared/config';
import { Gateway } from '../../proxy/gateway';
import { parseConfig } from '../../proxy/config';
import { silentLogger } from '../../proxy/log';
import { tempDir } from '../support/tmp';

function errorOf(text: string): string {
  try {
    parseConfig(text, 'custody.yaml');
  } catch (err) {
    return (err as Error).message;
  }
  assert.fail('the config was accepted');
}

describe('config: store', () => {
  it('accepts a PostgreSQL URL with its password in a secret, and defaults to no shared store', () => {
    const c = parseConfig('store:\n  url: postgres://custody@db.internal:5432/custody\n  secret: { env: CUSTODY_SECRET_STORE }\n', 'custody.yaml');
    assert.deepEqual(c.store, { url: 'postgres://custody@db.internal:5432/custody', secret: { env: 'CUSTODY_SECRET_STORE' }, staleAfter: '5s' });
    assert.equal(parseConfig('', 'custody.yaml').store, undefined);
    assert.equal(parseConfig('store: { url: "postgresql://127.0.0.1/custody" }\n', 'custody.yaml').store?.url, 'postgresql://127.0.0.1/custody');
  });

  it('names the line and the fix for a URL that cannot be a shared store', () => {
    assert.equal(errorOf('listen: {}\nstore:\n  url: postgres://custody:hunter2@db/custody\n'), 'custody.yaml:3: store.url: the URL holds a password: put it in store.secret ({ env: VARIABLE } or { file: PATH }), never in the URL');
    assert.match(errorOf('store: { url: "mysql://db/custody" }\n'), /^custody\.yaml:1: store\.url: a PostgreSQL URL such as postgres:\/\/custody@db\.internal:5432\/custody$/);
    assert.match(errorOf('store: { url: "postgres://db.internal:5432" }\n'), /store\.url: no database in the URL/);
    assert.match(errorOf('store: { secret: { env: X } }\n'), /store\.url: /);
    assert.match(errorOf('store: { url: "postgres://db/c", pasword: x }\n'), /store\.pasword: unknown key "pasword"/);
    assert.match(errorOf('store: { url: "postgres://db/c", secret: { envv: X } }\n'), /store\.secret: /);
    assert.match(errorOf('store: { url: "postgres://db/c", staleAfter: soon }\n'), /store\.staleAfter: a duration such as 30s/);
  });

  it('a gateway whose store secret is not set refuses to start, naming it', async () => {
    const config = Config.parse({ listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' }, store: { url: 'postgres://custody@127.0.0.1:5432/custody', secret: { env: 'CUSTODY_TEST_UNSET_STORE_SECRET' } } });
    await assert.rejects(Gateway.start({ config, dataDir: tempDir(), log: silentLogger }), /store\.secret: environment variable CUSTODY_TEST_UNSET_STORE_SECRET is not set/);
  });
});

describe('config: audit.remoteCommit', () => {
  it('defaults to async, and takes sync with a shared store', () => {
    assert.equal(parseConfig('', 'custody.yaml').audit.remoteCommit, 'async');
    assert.equal(parseConfig('audit: { fsync: batch }\n', 'custody.yaml').audit.remoteCommit, 'async');
    const c = parseConfig('store: { url: "postgres://custody@db.internal/custody" }\naudit:\n  remoteCommit: sync\n', 'custody.yaml');
    assert.equal(c.audit.remoteCommit, 'sync');
  });

  it('refuses sync without a store, and a value that is neither, at its line', () => {
    assert.match(errorOf('audit:\n  remoteCommit: sync\n'), /^custody\.yaml:2: audit\.remoteCommit: remoteCommit: sync commits each batch to the shared store: configure store\.url, or remove it$/);
    assert.match(errorOf('store: { url: "postgres://db/c" }\naudit:\n  remoteCommit: always\n'), /^custody\.yaml:3: audit\.remoteCommit: .*async.*sync/);
  });
});
