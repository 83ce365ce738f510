// The audit.signer program interface (proxy/audit/external-signer.ts) against real child
// processes: a raw or base64 signature is taken, and only if it verifies under the pinned key;
// a failing, missing, silent, chatty or wrong-key program is a SignerError naming why.
import assert from 'node:assert/strict';
import { generateKeyPairSync, verify } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { rawSigner, type SigningKeySpec } from '../../proxy/audit/checkpoint-signer';
import { parseSignature, SignerError } from '../../proxy/audit/external-signer';
import { ed25519RawPublicKey } from '../../proxy/audit/signed-note';
import { tempDir } from '../support/tmp';

/** A node program that signs stdin with `pem` and writes the signature as `encoding`, after `extra` (JS run first). */
function program(dir: string, name: string, pem: string, encoding: 'raw' | 'base64', extra = ''): string[] {
  const file = join(dir, `${name}.cjs`);
  writeFileSync(
    file,
    `const c = require('node:crypto');
     ${extra}
     const key = c.createPrivateKey(${JSON.stringify(pem)});
     const parts = [];
     process.stdin.on('data', (d) => parts.push(d)).on('end', () => {
       const sig = c.sign(null, Buffer.concat(parts), key);
       process.stdout.write(${encoding === 'raw' ? 'sig' : "sig.toString('base64') + '\\n'"});
     });`,
  );
  return [process.execPath, file];
}

describe('the audit.signer program interface', () => {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const other = generateKeyPairSync('ed25519');
  const pem = privateKey.export({ format: 'pem', type: 'pkcs8' }) as string;
  const raw = ed25519RawPublicKey(publicKey);
  const spec = (command: string[], timeoutMs = 5000): SigningKeySpec => ({ kind: 'command', command, timeoutMs, publicKey: raw });
  const message = Buffer.from('custody.test/signer\n3\nAAAA\n');

  it('takes a raw or a base64 signature that verifies under the pinned key', async () => {
    const dir = tempDir('custody-ext-signer-');
    for (const encoding of ['raw', 'base64'] as const) {
      const sig = await rawSigner(spec(program(dir, encoding, pem, encoding)))(message);
      assert.equal(sig.length, 64);
      assert.ok(verify(null, message, publicKey, sig), encoding);
    }
  });

  it('refuses a program that fails, hangs, writes something else, or signs with another key, naming why', async () => {
    const dir = tempDir('custody-ext-signer-');
    const otherPem = other.privateKey.export({ format: 'pem', type: 'pkcs8' }) as string;
    const cases: [string[], RegExp, number?][] = [
      [[process.execPath, '-e', "process.stderr.write('\\nerror: token not present\\nmore\\n'); process.exit(3)"], /^the signer program node exited with code 3: error: token not present$/],
      [[join(dir, 'missing-program')], /^the signer program missing-program cannot be started: spawn .* ENOENT$/],
      [['sleep', '20'], /^the signer program sleep did not answer within 0\.5 s \(killed\)$/, 500],
      [[process.execPath, '-e', "process.stdout.write('not a signature')"], /^the signer program node wrote 15 bytes to stdout, not a 64-byte Ed25519 signature \(raw or base64\)$/],
      [[process.execPath, '-e', "process.stdout.write('x'.repeat(10000))"], /^the signer program node wrote more than 4096 bytes to stdout, not a signature$/],
      [program(dir, 'other', otherPem, 'base64'), /^the signature from node does not verify under audit\.signer\.publicKey: it signs with another key$/],
    ];
    for (const [command, why, timeoutMs] of cases) {
      const started = Date.now();
      await assert.rejects(rawSigner(spec(command, timeoutMs))(message), (err: Error) => {
        assert.ok(err instanceof SignerError, err.message);
        assert.match(err.message, why);
        return true;
      });
      assert.ok(Date.now() - started < 5000, `${command.join(' ')}: ${Date.now() - started} ms`);
    }
  });

  it('reads 64 raw bytes, or one line of base64 of 64 bytes, and nothing else', () => {
    const sig = Buffer.alloc(64, 7);
    assert.deepEqual(parseSignature(sig), sig);
    assert.deepEqual(parseSignature(Buffer.from(`${sig.toString('base64')}\n`)), sig);
    assert.equal(parseSignature(Buffer.from(sig.toString('base64').slice(4))), undefined);
    assert.equal(parseSignature(Buffer.alloc(65)), undefined);
    assert.equal(parseSignature(Buffer.from(`${Buffer.alloc(48).toString('base64')}\n`)), undefined);
  });
});
