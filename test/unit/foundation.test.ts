import assert from 'node:assert/strict';
import { chmodSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { canonicalize } from '../../shared/canonical-json';
import { AuditStore, chainHash, eventBody, GENESIS_HASH, StoreUnavailableError } from '../../proxy/audit/store';
import { parseConfig, ConfigError } from '../../proxy/config';
import { ApiKeyStore } from '../../proxy/identity/api-keys';
import { tempDir } from '../support/tmp';

describe('canonical JSON (RFC 8785)', () => {
  it('sorts keys by UTF-16 code units and drops whitespace', () => {
    assert.equal(canonicalize({ b: 1, a: [true, null, 'x'], '\u20ac': 1, '\r': 2 }), '{"\\r":2,"a":[true,null,"x"],"b":1,"€":1}');
  });
  it('writes numbers in ECMAScript form', () => {
    assert.equal(canonicalize([1e21, 1e-7, -0, 0.1 + 0.2, 100]), '[1e+21,1e-7,0,0.30000000000000004,100]');
  });
  it('refuses values JSON cannot carry', () => {
    assert.throws(() => canonicalize(NaN), /NaN/);
    assert.throws(() => canonicalize(undefined), /undefined/);
  });
});

describe('audit store', () => {
  it('chains each event to the previous one and survives reopening', () => {
    const dir = tempDir();
    let store = AuditStore.open(dir);
    const a = store.append({ kind: 'http.request', session: 's1', actor: 'key:x', connection: 'openai', payload: { n: 1 } });
    const b = store.append({ kind: 'http.response', session: 's1', actor: 'key:x', connection: 'openai', payload: { n: 2 } });
    assert.equal(a.prevHash, GENESIS_HASH);
    assert.equal(b.prevHash, a.hash);
    assert.equal(b.hash, chainHash(a.hash, eventBody(b)));
    store.close();
    store = AuditStore.open(dir);
    const c = store.append({ kind: 'session.end', session: 's1', payload: {} });
    assert.equal(c.seq, 3);
    assert.equal(c.prevHash, b.hash);
    assert.deepEqual(store.sessionEvents('s1').map((e) => e.kind), ['http.request', 'http.response', 'session.end']);
    const s = store.session('s1')!;
    assert.equal(s.requests, 1);
    assert.ok(s.endedAt);
    store.close();
  });

  it('stores large payloads compressed and returns them intact', () => {
    const store = AuditStore.open(tempDir());
    const big = { text: 'x'.repeat(100_000) };
    const e = store.append({ kind: 'http.request', session: 's', payload: big });
    assert.deepEqual(store.event(e.seq)!.payload, big);
    store.close();
  });

  it('fails closed with StoreUnavailableError when the file cannot be written', () => {
    const dir = tempDir();
    const store = AuditStore.open(dir);
    store.append({ kind: 'gateway.start', payload: {} });
    store.db.pragma('query_only = ON'); // what a read-only or locked file looks like to a writer
    assert.throws(() => store.append({ kind: 'http.request', payload: {} }), StoreUnavailableError);
    store.db.pragma('query_only = OFF');
    const next = store.append({ kind: 'http.request', payload: {} });
    assert.equal(next.seq, 2, 'a failed append leaves no gap in the sequence');
    store.close();
  });

  it('refuses to open a data dir it cannot create', () => {
    const dir = tempDir();
    chmodSync(dir, 0o500);
    if (process.getuid?.() === 0) return; // root ignores directory permissions; covered by the query_only case
    assert.throws(() => AuditStore.open(join(dir, 'sub')), /EACCES|unavailable/);
  });
});

describe('config', () => {
  it('accepts the empty config as the embedded default', () => {
    const c = parseConfig('');
    assert.equal(c.listen.control, '127.0.0.1:7420');
    assert.equal(c.listen.http, '127.0.0.1:7421');
    assert.deepEqual(c.connections, []);
  });
  it('names file, line and field for schema errors', () => {
    const yaml = ['listen:', '  http: 127.0.0.1:7421', 'connections:', '  - name: openai', '    kind: openai', '    upstream: not-a-url', ''].join('\n');
    assert.throws(() => parseConfig(yaml, 'custody.yaml'), (err: Error) => {
      assert.ok(err instanceof ConfigError);
      assert.match(err.message, /^custody\.yaml:6: connections\[0\]\.upstream: an HTTP upstream is a URL/);
      return true;
    });
  });
  it('reports YAML syntax errors with their line', () => {
    assert.throws(() => parseConfig('listen:\n  http: [unclosed\n', 'c.yaml'), /c\.yaml:\d+:\d+: invalid YAML/);
  });
  it('rejects unknown keys', () => {
    assert.throws(() => parseConfig('lisen: {}\n', 'c.yaml'), /c\.yaml:1: .*lisen/);
  });
});

describe('API keys', () => {
  it('stores only a hash and checks expiry and revocation', () => {
    const store = AuditStore.open(tempDir());
    const keys = new ApiKeyStore(store.db);
    const { key, record } = keys.create({ name: 'ci', groups: ['dev'], expiresAt: Date.now() + 60_000 });
    assert.match(key, /^cst_[a-z0-9]{12}_[A-Za-z0-9_-]{32}$/);
    const raw = JSON.stringify(store.db.prepare('SELECT * FROM api_keys').all());
    // The secret is everything after the id (it may itself contain '_').
    const secret = key.slice(key.indexOf('_', 4) + 1);
    assert.equal(secret.length, 32);
    assert.ok(!raw.includes(secret), 'the secret part is not stored');
    assert.equal(keys.check(key).ok, true);
    assert.deepEqual(keys.check(key.slice(0, -1) + (key.endsWith('A') ? 'B' : 'A')), { ok: false, reason: 'unknown' });
    assert.deepEqual(keys.check('sk-not-ours'), { ok: false, reason: 'malformed' });
    assert.deepEqual(keys.check(key, Date.now() + 120_000), { ok: false, reason: 'expired' });
    keys.revoke(record.id);
    assert.deepEqual(keys.check(key), { ok: false, reason: 'revoked' });
    store.close();
  });

  it('a refresh that read before a write here does not undo it', async () => {
    const store = AuditStore.open(tempDir());
    const old = keys0(store);
    // A reader that answers with what the table held before the writes below.
    const stale = store.db.prepare('SELECT * FROM api_keys').all();
    let answer!: () => void;
    const keys = new ApiKeyStore(store.db, <T>() => new Promise<T[]>((resolve) => (answer = () => resolve(stale as T[]))));
    const pending = keys.refresh();
    const made = keys.create({ name: 'new', groups: ['dev'] });
    keys.revoke(old.record.id);
    answer();
    await pending;
    assert.equal(keys.check(made.key).ok, true, 'a key created during the refresh is still known');
    assert.deepEqual(keys.check(old.key), { ok: false, reason: 'revoked' }, 'a key revoked during the refresh stays revoked');
    // The next refresh, which reads after the writes, agrees.
    const fresh = new ApiKeyStore(store.db, async <T>() => store.db.prepare('SELECT * FROM api_keys').all() as T[]);
    await fresh.refresh();
    assert.deepEqual(fresh.check(old.key), { ok: false, reason: 'revoked' });
    store.close();
  });
});

function keys0(store: AuditStore): { key: string; record: { id: string } } {
  return new ApiKeyStore(store.db).create({ name: 'old', groups: ['dev'] });
}
