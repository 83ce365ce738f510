/**
 * The checkpoint signing key, sealed when the desktop app runs the gateway (issue 17, item 4): the
 * data dir holds only the sealed key and its public half; the same vault key opens the same key
 * again (a plain key from a headless run is sealed in place, with no rotation in the log); a copy
 * of the data dir without the vault key signs nothing — a headless gateway refuses to start on it,
 * saying why — while `custody verify` (the real command, headless) still checks its log by the
 * public half.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import Database from 'better-sqlite3';
import { Config } from '../../shared/config';
import { SIGNING_KEY_FILE, SIGNING_PUBLIC_KEY_FILE } from '../../proxy/audit/checkpoint-signer';
import { Gateway } from '../../proxy/gateway';
import { silentLogger } from '../../proxy/log';
import { type SecretWrapper, vaultSecrets } from '../../proxy/secret-wrapper';
import { tempDir } from '../support/tmp';

const config = () => Config.parse({ listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' } });

/** Starts a gateway on `dir`, writes a checkpoint, stops it; returns its signing key's verifier key. */
async function run(dir: string, secrets?: SecretWrapper): Promise<string> {
  const gw = await Gateway.start({ config: config(), dataDir: dir, log: silentLogger, ...(secrets ? { secrets } : {}) });
  try {
    await gw.services.audit!.trail.checkpoints.write();
    return gw.services.audit!.trail.signer.info().verifierKey;
  } finally {
    await gw.stop();
  }
}

function keyAnnouncements(dir: string): number {
  const db = new Database(join(dir, 'custody.db'), { readonly: true });
  try {
    return (db.prepare("SELECT count(*) AS n FROM events WHERE kind = 'key.created' AND payload LIKE '%checkpoint-signing%'").get() as { n: number }).n;
  } finally {
    db.close();
  }
}

async function verify(dir: string): Promise<{ status: number; out: string }> {
  try {
    const r = await promisify(execFile)(process.execPath, ['bin/custody.mjs', 'verify', dir], { encoding: 'utf8', timeout: 60_000 });
    return { status: 0, out: r.stdout + r.stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { status: e.code, out: e.stdout + e.stderr };
  }
}

describe('the checkpoint signing key sealed by the desktop app', () => {
  it('is kept sealed, opens with the same vault key, and a copy without it signs nothing', async () => {
    const dir = tempDir('custody-sealed-key-');
    const vault = vaultSecrets(randomBytes(32));
    const first = await run(dir, vault);
    assert.equal(existsSync(join(dir, SIGNING_KEY_FILE)), false, 'no plain key file');
    const sealed = readFileSync(join(dir, `${SIGNING_KEY_FILE}.sealed`));
    assert.equal(sealed.includes(Buffer.from('PRIVATE KEY')), false, 'the sealed file holds no PEM');
    assert.equal(readFileSync(join(dir, SIGNING_PUBLIC_KEY_FILE), 'utf8').trim(), first, 'the public half is kept beside it');
    assert.equal(await run(dir, vault), first, 'the same vault key opens the same signing key');
    assert.equal(keyAnnouncements(dir), 1);

    // Headless, without the vault key: no start, no new key minted.
    await assert.rejects(Gateway.start({ config: config(), dataDir: dir, log: silentLogger }), /sealed by the Custody desktop app/);
    assert.equal(existsSync(join(dir, SIGNING_KEY_FILE)), false);
    await assert.rejects(Gateway.start({ config: config(), dataDir: dir, log: silentLogger, secrets: vaultSecrets(randomBytes(32)) }), /does not open with this vault key/);

    const checked = await verify(dir);
    assert.equal(checked.status, 0, checked.out);
    assert.match(checked.out, /OK/);
  });

  it('a plain key from a headless run is sealed in place: the same key, no rotation', async () => {
    const dir = tempDir('custody-sealed-key-');
    const plain = await run(dir);
    assert.ok(existsSync(join(dir, SIGNING_KEY_FILE)));
    const sealed = await run(dir, vaultSecrets(randomBytes(32)));
    assert.equal(sealed, plain);
    assert.equal(existsSync(join(dir, SIGNING_KEY_FILE)), false, 'the plain copy is removed');
    assert.equal(keyAnnouncements(dir), 1, 'no second key announced');
    const checked = await verify(dir);
    assert.equal(checked.status, 0, checked.out);
  });
});
