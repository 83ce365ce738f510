/**
 * The checkpoint signing key on a PKCS#11 token (issue 17, item 4): `custody serve` with
 * `audit.signer` running scripts/pkcs11-sign.sh against a SoftHSM token whose Ed25519 key was
 * generated on the token. Checked from outside the gateway: the checkpoints in custody.db verify
 * under the token's public key (read from the token by pkcs11-tool), `custody verify --key` accepts
 * the store and an evidence export the CLI signed through the token, and the data dir holds no
 * private key. A signer that fails (a wrong PIN, another key, no answer) writes no checkpoint,
 * says why in the log and in /api/health, does not hold up traffic, and signs again once fixed.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { verify } from 'node:crypto';
import { readdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { ed25519KeyId, ed25519PublicKeyObject, formatVerifierKey, type NoteVerifier, parseNote, verifyNote } from '../../proxy/audit/signed-note';
import { canonicalize } from '../../shared/canonical-json';
import { custody, type CustodyServe, startServe, writeConfig } from '../support/custody-process';
import { type EchoUpstream, startEchoUpstream } from '../support/echo-upstream';
import { createTestDatabase } from '../support/pg-database';
import { PG_MODE, sqliteOnly } from '../support/pg-store';
import { tempDir } from '../support/tmp';
import { until } from '../support/until';

const MODULE = ['/usr/lib/softhsm/libsofthsm2.so', '/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so', '/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so'].find((f) => {
  try {
    return statSync(f).isFile();
  } catch {
    return false;
  }
});
const ORIGIN = 'custody.test/hsm';
const PIN = '246810';

/** A SoftHSM token in a temp dir with two Ed25519 key pairs made on it (ids 01 and 02). */
function makeToken(): { conf: string; pinFile: string; publicKey: (id: string) => Buffer } {
  assert.ok(MODULE, 'SoftHSM is installed (scripts/system-deps.sh test)');
  const dir = tempDir('custody-hsm-');
  const conf = join(dir, 'softhsm2.conf');
  execFileSync('mkdir', ['-p', join(dir, 'tokens')]);
  writeFileSync(conf, `directories.tokendir = ${join(dir, 'tokens')}\nobjectstore.backend = file\nlog.level = ERROR\n`);
  const env = { ...process.env, SOFTHSM2_CONF: conf };
  execFileSync('softhsm2-util', ['--init-token', '--free', '--label', 'custody', '--pin', PIN, '--so-pin', '13579'], { env, stdio: 'pipe' });
  for (const id of ['01', '02']) {
    execFileSync('pkcs11-tool', ['--module', MODULE!, '--login', '--pin', PIN, '--keypairgen', '--key-type', 'EC:edwards25519', '--id', id, '--label', `checkpoint-${id}`], { env, stdio: 'pipe' });
  }
  const pinFile = join(dir, 'pin');
  writeFileSync(pinFile, `${PIN}\n`, { mode: 0o600 });
  return {
    conf,
    pinFile,
    // The public half as the token gives it (SubjectPublicKeyInfo PEM), not through the wrapper.
    publicKey: (id) => {
      const pem = execFileSync('pkcs11-tool', ['--module', MODULE!, '--read-object', '--type', 'pubkey', '--id', id], { env, stdio: ['ignore', 'pipe', 'ignore'] }).toString('utf8');
      return Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64').subarray(-32);
    },
  };
}

function verifierFor(publicKey: Buffer): NoteVerifier {
  return { name: ORIGIN, keyId: ed25519KeyId(ORIGIN, publicKey), publicKey, key: ed25519PublicKeyObject(publicKey) };
}

function checkpointNotes(dataDir: string): string[] {
  const db = new Database(join(dataDir, 'custody.db'), { readonly: true });
  try {
    return (db.prepare('SELECT note FROM checkpoints ORDER BY tree_size, time').all() as { note: string }[]).map((r) => r.note);
  } finally {
    db.close();
  }
}

function allFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? allFiles(join(dir, e.name)) : [join(dir, e.name)]));
}

async function health(gw: CustodyServe): Promise<{ ms: number; signer: { kind: string; state: string; failures: number } }> {
  const t = performance.now();
  const r = await fetch(`http://${gw.control}/api/health`);
  const body = (await r.json()) as { audit: { signer: { kind: string; state: string; failures: number } } };
  return { ms: performance.now() - t, signer: body.audit.signer };
}

/** A chat completion through the gateway's HTTP proxy; its status. */
async function chat(gw: CustodyServe, content: string): Promise<number> {
  const r = await fetch(`http://${gw.http}/openai/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${gw.key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content }] }),
  });
  await r.text();
  return r.status;
}

describe('audit.signer: the checkpoint key on a PKCS#11 token', () => {
  let upstream: EchoUpstream;
  before(async () => {
    upstream = await startEchoUpstream();
  });
  after(() => upstream.close());

  const configFor = (dataDir: string, token: { conf: string; pinFile: string }, signer: { id?: string; publicKey: string; timeout?: string; command?: string[] }, extra: Record<string, unknown> = {}) =>
    writeConfig(dataDir, {
      ...extra,
      dataDir,
      listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
      connections: [{ name: 'openai', kind: 'openai', upstream: `${upstream.url}/v1`, secret: { value: 'sk-hsm-test' } }],
      audit: {
        origin: ORIGIN,
        checkpointInterval: '1h',
        signer: {
          command: signer.command ?? ['env', `SOFTHSM2_CONF=${token.conf}`, 'scripts/pkcs11-sign.sh', '--module', MODULE, '--id', signer.id ?? '01', '--pin-file', token.pinFile],
          publicKey: signer.publicKey,
          ...(signer.timeout ? { timeout: signer.timeout } : {}),
        },
      },
    });

  it('signs every checkpoint on the token; custody verify accepts the store and an export by the pinned key; no private key in the data dir', async () => {
    const token = makeToken();
    const raw = token.publicKey('01');
    const verifierKey = formatVerifierKey(verifierFor(raw));
    // The wrapper's public-key mode prints what the config takes.
    const printed = execFileSync('scripts/pkcs11-sign.sh', ['public-key', '--module', MODULE!, '--id', '01'], { env: { ...process.env, SOFTHSM2_CONF: token.conf } }).toString('utf8').trim();
    assert.equal(printed, raw.toString('base64'));

    const dataDir = tempDir('custody-hsm-data-');
    const file = configFor(dataDir, token, { publicKey: printed });
    const gw = await startServe(file);
    try {
      assert.match(gw.stderr(), /checkpoint signing key held by audit\.signer \(env\)/);
      assert.equal(await chat(gw, 'signed by the token'), 200);
      assert.equal(upstream.requests.length, 1, 'the request reached the upstream');
      await until('the first checkpoint', async () => (await health(gw)).signer.state === 'ok');
    } finally {
      assert.equal(await gw.stop(), 0);
    }

    // The start's checkpoint and the stop's (covering the request), both by the token's key.
    const notes = checkpointNotes(dataDir);
    assert.ok(notes.length >= 2, `${notes.length} checkpoints`);
    for (const note of notes) assert.equal(verifyNote(note, verifierFor(raw)).ok, true, `signed by the token's key 01:\n${note}`);
    assert.equal(verifyNote(notes.at(-1)!, verifierFor(token.publicKey('02'))).ok, false, 'and not by another key');

    const verified = custody('verify', dataDir, '--key', verifierKey);
    assert.equal(verified.status, 0, verified.stdout + verified.stderr);
    assert.match(verified.stdout, /^OK: /m);
    const wrongKey = custody('verify', dataDir, '--key', formatVerifierKey(verifierFor(token.publicKey('02'))));
    assert.notEqual(wrongKey.status, 0, 'another --key is refused');
    assert.match(wrongKey.stdout + wrongKey.stderr, /key-replaced/);

    // `custody export` signs its checkpoint and manifest through the token too.
    const bundle = join(tempDir('custody-hsm-export-'), 'bundle.tar.gz');
    const exported = custody('export', '--config', file, '--out', bundle);
    assert.equal(exported.status, 0, exported.stdout + exported.stderr);
    const bundleOk = custody('verify', bundle, '--key', verifierKey);
    assert.equal(bundleOk.status, 0, bundleOk.stdout + bundleOk.stderr);

    // The data dir holds the public half only.
    const files = allFiles(dataDir);
    assert.deepEqual(
      files.filter((f) => /checkpoint-signing\.key/.test(f)),
      [],
      'no checkpoint-signing.key, sealed or plain',
    );
    for (const f of files) assert.equal(readFileSync(f).includes(Buffer.from('PRIVATE KEY')), false, `${f} holds no private key`);
    assert.equal(readFileSync(join(dataDir, 'checkpoint-signing.pub'), 'utf8').trim(), verifierKey);
    const db = new Database(join(dataDir, 'custody.db'), { readonly: true });
    try {
      const announced = db.prepare("SELECT count(*) AS n FROM events WHERE kind = 'key.created' AND payload LIKE ?").get(`%${raw.toString('base64').slice(0, 20)}%`) as { n: number };
      assert.equal(announced.n, 1, 'the log announces the token key once');
    } finally {
      db.close();
    }
  });

  it('joins a shared store with the token key: its enrolment request and the key rows the shipper worker signs verify under it', async () => {
    const token = makeToken();
    const raw = token.publicKey('01');
    const db = await createTestDatabase('custody_test_hsm_store');
    const dataDir = tempDir('custody-hsm-store-');
    const gw = await startServe(configFor(dataDir, token, { publicKey: raw.toString('base64') }, { store: { url: db.url } }));
    try {
      const sql = await db.client();
      // (The worker creates the store's tables once it connects.)
      const row = await until('the gateway row', async () =>
        sql.query<{ id: string; public_key: string; key_name: string; status: string; request: string }>('SELECT id, public_key, key_name, status, request FROM custody_gateways').then(
          (q) => q.rows[0],
          () => undefined,
        ),
      );
      assert.equal(row.status, 'enrolled');
      assert.equal(row.public_key, raw.toString('base64'));
      assert.equal(verifyNote(row.request, verifierFor(raw)).ok, true, 'the enrolment request is signed by the token key');
      assert.match(parseNote(row.request).text, /^custody-enrolment-request\n/);

      // A key made on this gateway is signed into the store by the shipper worker, through the program.
      const r = await fetch(`http://${gw.control}/api/keys`, { method: 'POST', headers: { authorization: `Bearer ${gw.key}`, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'hsm-signed' }) });
      assert.equal(r.status, 200, await r.clone().text());
      const { id } = (await r.json()) as { id: string };
      const signed = await until('the key row signed in the store', async () => {
        const q = await sql.query<{ name: string; hash: string; groups: string; created_at: string; created_by: string | null; signature: string }>(
          'SELECT k.name, k.hash, k.groups, k.created_at, k.created_by, s.signature FROM custody_api_keys k JOIN custody_api_key_signatures s ON s.id = k.id WHERE k.id = $1 AND s.gateway = $2',
          [id, row.id],
        );
        return q.rows[0];
      });
      const text = `custody-api-key/v1\n${canonicalize([id, signed.name, signed.hash, signed.groups, Number(signed.created_at), signed.created_by])}`;
      assert.equal(verify(null, Buffer.from(text), ed25519PublicKeyObject(raw), Buffer.from(signed.signature, 'base64')), true, 'the key row is signed by the token key');
    } finally {
      assert.equal(await gw.stop(), 0);
      await db.drop();
    }
  });

  it('signs from many processes at once: a gateway signs from several threads, and a file-backed token fails sessions opened while another process logs in', async () => {
    // Without the wrapper's lock, 17 and 19 of 24 such signatures failed here ("Token not
    // initialized", CKR_GENERAL_ERROR from C_GetTokenInfo).
    const token = makeToken();
    const publicKey = token.publicKey('01');
    const key = ed25519PublicKeyObject(publicKey);
    const sign = (message: string) =>
      new Promise<Buffer>((resolve, reject) => {
        const child = spawn('scripts/pkcs11-sign.sh', ['--module', MODULE!, '--id', '01', '--pin-file', token.pinFile], { env: { ...process.env, SOFTHSM2_CONF: token.conf } });
        const out: Buffer[] = [];
        let err = '';
        child.stdout.on('data', (c: Buffer) => out.push(c));
        child.stderr.on('data', (c: Buffer) => (err += c.toString('utf8')));
        child.on('close', (code) => (code === 0 ? resolve(Buffer.concat(out)) : reject(new Error(`exit ${code}: ${err.trim()}`))));
        child.stdin.end(message);
      });
    const messages = Array.from({ length: 16 }, (_, i) => `checkpoint ${i}\n`);
    const signatures = await Promise.all(messages.map(sign));
    signatures.forEach((sig, i) => assert.ok(verify(null, Buffer.from(messages[i]!), key, sig), `signature ${i} verifies under the token's key`));
  });

  it('a failing signer writes no checkpoint and says why; traffic flows; it signs again once fixed', async () => {
    const token = makeToken();
    const raw = token.publicKey('01');
    const dataDir = tempDir('custody-hsm-fail-');
    writeFileSync(token.pinFile, '000000\n');
    if (PG_MODE) {
      // In a group the key also signs the enrolment request and the rows the gateway shares: no start.
      await assert.rejects(startServe(configFor(dataDir, token, { publicKey: formatVerifierKey(verifierFor(raw)) })), /needs this gateway's signature \(its enrolment request, and the key, vote and console rows it shares\), and the checkpoint signer failed: the signer program env exited with code 1: error: PKCS11 function C_Login failed/);
      return;
    }
    const gw = await startServe(configFor(dataDir, token, { publicKey: formatVerifierKey(verifierFor(raw)) }));
    try {
      const failing = await until('the signer to fail', async () => {
        const h = await health(gw);
        return h.signer.state === 'failing' && h;
      });
      assert.equal(failing.signer.kind, 'command');
      assert.ok(failing.ms < 1000, `health answered in ${failing.ms} ms`);
      assert.deepEqual(checkpointNotes(dataDir), [], 'no checkpoint without a signature');
      assert.match(gw.stderr(), /audit: checkpoint not written, the signer failed \(attempt 1, next in 1 s\): the signer program env exited with code 1: error: PKCS11 function C_Login failed: rv = CKR_PIN_INCORRECT/);

      // Traffic is not held up by the signer.
      assert.equal(await chat(gw, 'while the signer fails'), 200);

      // The PIN is put right: the next retry signs, without a restart.
      writeFileSync(token.pinFile, `${PIN}\n`);
      await until('a checkpoint after the fix', async () => checkpointNotes(dataDir).length > 0, 40_000);
      assert.equal((await health(gw)).signer.state, 'ok');
      assert.match(gw.stderr(), /audit: the checkpoint signer signs again/);
    } finally {
      assert.equal(await gw.stop(), 0);
    }
    for (const note of checkpointNotes(dataDir)) assert.equal(verifyNote(note, verifierFor(raw)).ok, true);
    const verified = custody('verify', dataDir, '--key', formatVerifierKey(verifierFor(raw)));
    assert.equal(verified.status, 0, verified.stdout + verified.stderr);
  });

  it('a signer that signs with another key, or does not answer, writes no checkpoint', sqliteOnly('in a group a gateway whose signer fails does not start (the test above checks that)'), async () => {
    const token = makeToken();
    const pinned = token.publicKey('01').toString('base64');

    // Key 02 answers where key 01 is pinned.
    const wrongDir = tempDir('custody-hsm-wrong-');
    const wrong = await startServe(configFor(wrongDir, token, { id: '02', publicKey: pinned }));
    try {
      await until('the signer to fail', async () => (await health(wrong)).signer.state === 'failing');
      assert.match(wrong.stderr(), /the signature from env does not verify under audit\.signer\.publicKey: it signs with another key/);
    } finally {
      await wrong.kill();
    }
    assert.deepEqual(checkpointNotes(wrongDir), []);

    // A program that never answers is killed at the timeout; the gateway keeps answering meanwhile.
    const slowDir = tempDir('custody-hsm-slow-');
    const slow = await startServe(configFor(slowDir, token, { command: ['sleep', '30'], timeout: '2s', publicKey: pinned }));
    try {
      const during = await health(slow);
      assert.equal(during.signer.state, 'pending', 'the first signature is still awaited');
      assert.ok(during.ms < 1000, `health answered in ${during.ms} ms while the signer hangs`);
      await until('the signer to time out', async () => (await health(slow)).signer.state === 'failing');
      assert.match(slow.stderr(), /the signer program sleep did not answer within 2 s \(killed\)/);
    } finally {
      await slow.kill();
    }
    assert.deepEqual(checkpointNotes(slowDir), []);
  });

  it('refuses to start on a data dir that still holds a key file; with it moved out, the token key is announced as a rotation', sqliteOnly('in a group a new checkpoint key is a new member, which waits for approval (docs/SCALE-OUT.md, "A new key")'), async () => {
    const token = makeToken();
    const dataDir = tempDir('custody-hsm-keyfile-');
    // A plain run makes checkpoint-signing.key.
    const plain = await startServe(writeConfig(dataDir, { dataDir, listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' }, audit: { origin: ORIGIN } }));
    assert.equal(await plain.stop(), 0);
    const refused = await startServe(configFor(dataDir, token, { publicKey: token.publicKey('01').toString('base64') })).then(
      async (gw) => {
        await gw.kill();
        return '';
      },
      (err: { stderr?: string }) => err.stderr ?? '',
    );
    assert.match(refused, /checkpoint-signing\.key is a checkpoint signing key in the data dir, and audit\.signer signs with a key held elsewhere: move that file out/);

    // Moved out: the token key is announced, earlier checkpoints still verify under the key file's announcement.
    renameSync(join(dataDir, 'checkpoint-signing.key'), join(tempDir('custody-hsm-moved-'), 'old.key'));
    const raw = token.publicKey('01');
    const gw = await startServe(configFor(dataDir, token, { publicKey: raw.toString('base64') }));
    await until('a checkpoint by the token', async () => (await health(gw)).signer.state === 'ok');
    assert.equal(await gw.stop(), 0);
    const notes = checkpointNotes(dataDir);
    assert.equal(verifyNote(notes.at(-1)!, verifierFor(raw)).ok, true);
    const verified = custody('verify', dataDir, '--key', formatVerifierKey(verifierFor(raw)));
    assert.equal(verified.status, 0, verified.stdout + verified.stderr);
    assert.match(verified.stdout, /^note: the signing key was replaced by SHA256:\S+ at seq \d+ \(recorded in the log\)$/m);
  });
});
