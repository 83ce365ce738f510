// Credentials written into upstream addresses (shared/upstream-credentials.ts) are redacted
// wherever an address is shown or recorded. The cases are data: test/fixtures/upstream-credentials.txt.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { hasUpstreamCredentials, redactUpstream, scrubCredentials, upstreamCredentialWarning } from '../../shared/upstream-credentials';

const cases = readFileSync(new URL('../fixtures/upstream-credentials.txt', import.meta.url), 'utf8')
  .split('\n')
  .filter((l) => l.trim() && !l.startsWith('#'))
  .map((l) => JSON.parse(l) as [string, string, string]);

describe('upstream credentials', () => {
  it('has a corpus', () => assert.ok(cases.length >= 20, String(cases.length)));
  for (const [address, shown, secret] of cases) {
    it(`shows ${address} as ${shown}`, () => {
      const out = redactUpstream(address);
      assert.equal(out, shown);
      if (secret) {
        assert.ok(!out.includes(secret), out);
        assert.ok(hasUpstreamCredentials(address));
        assert.match(upstreamCredentialWarning('db', address)!, /move it into secret/);
        assert.ok(!upstreamCredentialWarning('db', address)!.includes(secret));
        assert.ok(!scrubCredentials(`cannot use ${address} (${secret})`, address).includes(secret));
      } else {
        assert.equal(hasUpstreamCredentials(address), false);
        assert.equal(upstreamCredentialWarning('db', address), undefined);
      }
      // Redacting twice changes nothing: a redacted address shown back is recognised as such.
      assert.equal(redactUpstream(out), out);
    });
  }
  it('scrubs the percent-decoded form too', () => {
    assert.equal(scrubCredentials('login as app with p@ss/w0rd failed', 'postgres://app:p%40ss%2Fw0rd@db/x'), 'login as app with *** failed');
  });
});
