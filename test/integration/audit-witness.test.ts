/**
 * Witnessed checkpoints, end to end: `custody witness serve` processes spawned with the real CLI on
 * loopback ports, the gateway's WitnessPublisher sending them checkpoints, and `custody verify
 * --witness-key` holding a data dir to what they cosigned. Every assertion reads an effect: the
 * witness's state file on disk, its HTTP answers, the cosignature rows, verify's exit code.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { Config } from '../../shared/config';
import { CheckpointSigner, keyFingerprint } from '../../proxy/audit/checkpoint-signer';
import { openAuditTrail } from '../../proxy/audit/checkpoints';
import { findCosignature, parseCosignerKey } from '../../proxy/audit/cosignature';
import { MerkleTree } from '../../proxy/audit/merkle';
import { parseNote } from '../../proxy/audit/signed-note';
import { AuditStore, sha256hex } from '../../proxy/audit/store';
import { Witness } from '../../proxy/audit/witness';
import { WitnessPublisher } from '../../proxy/audit/witnessing';
import { Gateway } from '../../proxy/gateway';
import { main } from '../../proxy/cli';
import { silentLogger } from '../../proxy/log';
import { startLlmUpstream } from '../support/llm-upstream';
import { freePort } from '../support/ports';
import { rewriteFrom } from '../support/audit-rewrite';
import { tempDir } from '../support/tmp';
import { chatThrough, eventually } from './http-harness';
import { type RunningWitness, startWitness } from '../support/witness-process';

const ORIGIN = 'custody.test/witnessed';
const config = Config.parse({ audit: { origin: ORIGIN } });

async function cli(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await main(argv, { out: (t) => (out += t), err: (t) => (err += t) });
  return { code, out, err };
}

function witnessState(w: RunningWitness): { size: number; root: string } {
  return (JSON.parse(readFileSync(w.stateFile, 'utf8')) as { logs: Record<string, { size: number; root: string }> }).logs[ORIGIN]!;
}

function appendEvents(store: AuditStore, n: number, tag: string): void {
  for (let i = 0; i < n; i++) store.append({ kind: 'http.request', session: `s${i % 3}`, actor: 'key:alice', connection: 'openai', payload: { method: 'POST', path: '/chat/completions', text: `${tag} ${i}` } });
}


describe('witnessed checkpoints', () => {
  it('two witnesses cosign; a history rewritten and re-signed with the gateway key passes plain verify but not --witness-key, and the witnesses refuse it', async () => {
    const dir = tempDir('custody-witnessed-');
    let store = AuditStore.open(dir);
    let trail = openAuditTrail(store, dir, config);
    const logKey = trail.signer.info().verifierKey;
    const w1 = await startWitness(dir, 'w1', [logKey]);
    const w2 = await startWitness(dir, 'w2', [logKey]);
    const witnesses = [
      { name: 'w1', url: w1.url, key: w1.key },
      { name: 'w2', url: w2.url, key: w2.key },
    ];
    let pub = new WitnessPublisher(store, witnesses);

    appendEvents(store, 20, 'first');
    await trail.checkpoints.write();
    await pub.flush();
    appendEvents(store, 13, 'second');
    const cp = await trail.checkpoints.write();
    await pub.flush();
    assert.deepEqual(
      pub.status().map((s) => [s.name, s.state, s.lastCosigned?.treeSize]),
      [
        ['w1', 'ok', cp.treeSize],
        ['w2', 'ok', cp.treeSize],
      ],
      JSON.stringify(pub.status()),
    );
    // The witnesses' own disks hold the latest tree they cosigned (the second one came with a consistency proof).
    for (const w of [w1, w2]) assert.deepEqual(witnessState(w), { ...witnessState(w), size: cp.treeSize, root: Buffer.from(cp.rootHash, 'hex').toString('base64') });
    store.close();

    // Every witnessed checkpoint names the signing key's fingerprint (a replaced key is caught by name).
    assert.match(cp.note, new RegExp(`\nkey ${trail.signer.info().fingerprint.replace(/[+/]/g, '\\$&')}\n`));
    const good = await cli('verify', dir, '--witness-key', w1.key, '--witness-key', w2.key);
    assert.equal(good.code, 0, good.err);
    assert.match(good.out, new RegExp(`witness witness.test/w1: cosigned the tree of ${cp.treeSize} events`));

    // An export carries the cosignatures: the bundle alone is held to what the witnesses cosigned.
    const bundle = join(dir, 'evidence.tar.gz');
    const exported = await cli('export', '--out', bundle, '--data-dir', dir);
    assert.equal(exported.code, 0, exported.err);
    const bundleOk = await cli('verify', bundle, '--witness-key', w1.key, '--witness-key', w2.key);
    assert.equal(bundleOk.code, 0, bundleOk.err);
    assert.match(bundleOk.out, /witness witness\.test\/w2: cosigned the tree of \d+ events/);
    const stranger = (await startWitness(dir, 'never-asked', [logKey])) as RunningWitness;
    const bundleUnwitnessed = await cli('verify', bundle, '--witness-key', stranger.key);
    assert.equal(bundleUnwitnessed.code, 1);
    assert.match(bundleUnwitnessed.err, /unwitnessed — no checkpoint in this store is cosigned by witness witness\.test\/never-asked/);
    await stranger.stop();

    // The attacker rewrites event 7, recomputes the chain and re-signs a checkpoint with the gateway's own key.
    const db = new Database(join(dir, 'custody.db'));
    rewriteFrom(db, 7, { method: 'POST', path: '/chat/completions', text: 'nothing to see here' });
    db.prepare('DELETE FROM checkpoints').run();
    db.close();
    store = AuditStore.open(dir);
    trail = openAuditTrail(store, dir, config);
    const forged = await trail.checkpoints.write();
    assert.notEqual(forged.rootHash, cp.rootHash);
    store.close();

    const plain = await cli('verify', dir);
    assert.equal(plain.code, 0, `the rewrite is internally consistent, so plain verify passes: ${plain.err}`);
    const caught = await cli('verify', dir, '--witness-key', w1.key);
    assert.equal(caught.code, 1);
    assert.match(caught.err, /FAILED at seq \d+: inconsistent — history up to seq \d+ was rewritten after the witness saw it: witness witness\.test\/w1 cosigned/);

    // Submitting the forged checkpoint: each witness refuses, and its state keeps the true root.
    store = AuditStore.open(dir);
    pub = new WitnessPublisher(store, witnesses);
    await pub.flush();
    for (const s of pub.status()) {
      assert.equal(s.state, 'failing');
      assert.match(s.lastError!, /refuses the checkpoint/);
    }
    pub.stop();
    for (const w of [w1, w2]) {
      assert.equal(witnessState(w).root, Buffer.from(cp.rootHash, 'hex').toString('base64'));
      // The witness's log line reaches this process through a pipe, possibly after its answer did.
      const forkLine = /fork: "custody\.test\/witnessed" (presented a different root at size \d+|size \d+ is not consistent with the cosigned size \d+)/;
      await eventually(() => forkLine.test(w.stderr()), 'the witness to log the fork', 10_000);
    }
    // Removing the cosignatures to hide the rewrite leaves nothing witnessed: still caught.
    store.db.prepare('DELETE FROM checkpoint_cosignatures').run();
    store.close();
    const stripped = await cli('verify', dir, '--witness-key', w2.key);
    assert.equal(stripped.code, 1);
    assert.match(stripped.err, /unwitnessed — no checkpoint in this store is cosigned by witness witness\.test\/w2/);
    // A bad key is a clear usage error, not a pass.
    const bad = await cli('verify', dir, '--witness-key', logKey);
    assert.equal(bad.code, 1);
    assert.match(bad.err, /--witness-key .*: a witness key is an Ed25519 cosignature\/v1 key/);
    await Promise.all([w1.stop(), w2.stop()]);
  });

  it('the witness refuses a fork and every malformed or foreign submission, and keeps its state across a restart', async () => {
    const dir = tempDir('custody-witness-fork-');
    const { signer } = CheckpointSigner.loadOrCreate(dir, ORIGIN);
    const other = CheckpointSigner.loadOrCreate(tempDir('custody-witness-other-'), ORIGIN).signer;
    const stranger = CheckpointSigner.loadOrCreate(tempDir('custody-witness-stranger-'), 'custody.test/stranger').signer;
    const w = await startWitness(dir, 'forks', [signer.info().verifierKey]);
    const leaves = (tag: string, n: number) => Buffer.concat(Array.from({ length: n }, (_, i) => sha256Buf(`${tag}-${i}`)));
    const honest = MerkleTree.fromEventHashes(Buffer.concat([leaves('a', 3), leaves('b', 4)]));
    const fork = MerkleTree.fromEventHashes(Buffer.concat([leaves('a', 1), leaves('x', 6)]));
    const note = (s: CheckpointSigner, tree: MerkleTree, size: number, key = keyFingerprint(s.publicKey)) => s.signCheckpoint({ origin: s.name, treeSize: size, rootHash: tree.root(size), time: 1_700_000_000_000 + size, key });
    const post = async (body: string) => {
      const r = await fetch(`${w.url}/add-checkpoint`, { method: 'POST', body });
      return { status: r.status, type: r.headers.get('content-type'), body: await r.text() };
    };
    const proofLines = (tree: MerkleTree, from: number, to: number) => tree.consistencyProof(from, to).map((p) => `${p.toString('base64')}\n`).join('');
    const witnessKey = parseCosignerKey(w.key);

    const first = await post(`old 0\n\n${await note(signer, honest, 3)}`);
    assert.equal(first.status, 200, first.body);
    assert.ok(findCosignature(parseNote(await note(signer, honest, 3)).text, first.body, witnessKey).ok, 'a valid cosignature/v1 over the checkpoint');

    // The corpus: each line is an attempt that must not be cosigned.
    const cp3 = await note(signer, honest, 3);
    const text3 = parseNote(cp3).text;
    const subst: Record<string, string> = {
      CP: cp3,
      CP_NOSIG: text3,
      CP_OTHER_KEY: await note(other, honest, 3),
      CP_WRONG_FP: await note(signer, honest, 3, keyFingerprint(other.publicKey)),
      CP_UNKNOWN_ORIGIN: await note(stranger, honest, 3),
      CP_TAMPERED: cp3.replace(honest.root(3).toString('base64'), fork.root(3).toString('base64')),
      PROOF: sha256Buf('p').toString('base64'),
    };
    const corpus = readFileSync('test/fixtures/witness/requests.txt', 'utf8')
      .split('\n')
      .filter((l) => l && !l.startsWith('#'));
    assert.ok(corpus.length >= 15);
    for (const line of corpus) {
      const [status, json] = line.split('\t') as [string, string];
      const body = (JSON.parse(json) as string).replace(/\{([A-Z_]+)\}/g, (_, k: string) => subst[k] ?? `{${k}}`);
      const r = await post(body);
      assert.equal(r.status, Number(status), `${json} → ${r.status} ${r.body}`);
      if (r.status === 409) {
        assert.equal(r.type, 'text/x.tlog.size');
        assert.equal(r.body, '3\n');
      }
    }
    assert.equal(witnessState(w).size, 3);
    assert.equal(witnessState(w).root, honest.root(3).toString('base64'));

    // A fork: another tree of the same size (409), or a larger tree whose proof is from the fork (422).
    assert.equal((await post(`old 3\n\n${await note(signer, fork, 3)}`)).status, 409);
    assert.equal((await post(`old 3\n${proofLines(fork, 3, 7)}\n${await note(signer, fork, 7)}`)).status, 422);
    assert.equal((await post(`old 3\n${proofLines(honest, 3, 7)}\n${await note(signer, fork, 7)}`)).status, 422);
    assert.equal(witnessState(w).root, honest.root(3).toString('base64'), 'nothing forked was recorded');
    // The honest extension is cosigned.
    const ext = await post(`old 3\n${proofLines(honest, 3, 7)}\n${await note(signer, honest, 7)}`);
    assert.equal(ext.status, 200, ext.body);

    // Restarted on the same key and state: it still holds 7 and still refuses the fork.
    const port = w.port;
    await w.stop();
    const again = await startWitness(dir, 'forks', [signer.info().verifierKey], port);
    const probe = await fetch(`${again.url}/add-checkpoint`, { method: 'POST', body: `old 0\n\n${await note(signer, fork, 7)}` });
    assert.equal(probe.status, 409);
    assert.equal(await probe.text(), '7\n');
    assert.equal((await fetch(`${again.url}/add-checkpoint`, { method: 'POST', body: `old 7\n\n${await note(signer, fork, 7)}` })).status, 409);
    assert.equal((await fetch(`${again.url}/add-checkpoint`)).status, 405);
    await again.stop();
  });

  it('a witness that cannot record a checkpoint does not cosign it, and does not pretend it did', async () => {
    const dir = tempDir('custody-witness-disk-');
    const { signer } = CheckpointSigner.loadOrCreate(dir, ORIGIN);
    const stateFile = join(dir, 'state.json');
    const w = new Witness({ name: 'witness.test/disk', privateKey: generateKeyPairSync('ed25519').privateKey, stateFile, logs: new Map([[ORIGIN, [signer.verifier()]]]) });
    const tree = MerkleTree.fromEventHashes(Buffer.concat([sha256Buf('a'), sha256Buf('b')]));
    const body = `old 0\n\n${await signer.signCheckpoint({ origin: ORIGIN, treeSize: 2, rootHash: tree.root(), key: keyFingerprint(signer.publicKey) })}`;
    // The state file cannot be replaced (its temporary name is taken by a directory).
    mkdirSync(`${stateFile}.tmp`);
    assert.throws(() => w.addCheckpoint(body), /EISDIR|illegal operation/);
    assert.equal(w.latest(ORIGIN), undefined, 'nothing is held that is not on disk');
    rmSync(`${stateFile}.tmp`, { recursive: true });
    assert.match(w.addCheckpoint(body), /^\u2014 witness\.test\/disk /);
    assert.equal(w.latest(ORIGIN)?.size, 2);
  });

  it('custody witness serve refuses bad usage with one line and exit 2', async () => {
    const dir = tempDir('custody-witness-usage-');
    const { signer } = CheckpointSigner.loadOrCreate(dir, ORIGIN);
    const vkey = signer.info().verifierKey;
    const cases: [string[], RegExp][] = [
      [['witness'], /usage: custody witness serve/],
      [['witness', 'serve', '--listen', '127.0.0.1:0', '--log-key', vkey], /--key and --listen are required/],
      [['witness', 'serve', '--key', join(dir, 'k'), '--listen', 'nowhere', '--log-key', vkey], /--listen: an address such as/],
      [['witness', 'serve', '--key', join(dir, 'k'), '--listen', '127.0.0.1:99999', '--log-key', vkey], /--listen: an address such as/],
      [['witness', 'serve', '--key', join(dir, 'k'), '--listen', '127.0.0.1:0'], /at least one --log-key/],
      [['witness', 'serve', '--key', join(dir, 'k'), '--listen', '127.0.0.1:0', '--log-key', 'garbage'], /--log-key garbage: a verifier key looks like/],
      [['witness', 'serve', '--key', join(dir, 'k'), '--listen', '127.0.0.1:0', '--log-key', vkey, '--name', 'has+plus'], /cannot be a key name/],
      [['witness', 'serve', '--key', join(dir, 'k'), '--listen', '127.0.0.1:0', '--log-key', vkey, '--bogus', 'x'], /unknown option --bogus/],
    ];
    for (const [argv, message] of cases) {
      const r = await cli(...argv);
      assert.equal(r.code, 2, `${argv.join(' ')}: ${r.err}`);
      assert.equal(r.err.trim().split('\n').length, 1, r.err);
      assert.match(r.err, message);
    }
    // A key file that is not an Ed25519 key is a clear error, not a crash.
    writeFileSync(join(dir, 'bad.key'), 'not a key');
    const bad = await cli('witness', 'serve', '--key', join(dir, 'bad.key'), '--listen', '127.0.0.1:0', '--log-key', vkey);
    assert.equal(bad.code, 1);
    assert.match(bad.err, /bad\.key: not a usable Ed25519 key/);
    // A damaged state file stops it rather than letting it forget what it cosigned.
    writeFileSync(join(dir, 'w.key.state.json'), '{"logs": {"x": {"size": "many"}}}');
    const { privateKey } = generateKeyPairSync('ed25519');
    writeFileSync(join(dir, 'w.key'), privateKey.export({ format: 'pem', type: 'pkcs8' }) as string);
    const damaged = await cli('witness', 'serve', '--key', join(dir, 'w.key'), '--listen', '127.0.0.1:0', '--log-key', vkey);
    assert.equal(damaged.code, 1);
    assert.match(damaged.err, /the entry for "x" is damaged/);
  });

  it('a witness that is down never blocks traffic, shows in health, and catches up when it is back', async () => {
    const dir = tempDir('custody-witness-down-');
    const origin = 'custody.test/down';
    const { signer } = CheckpointSigner.loadOrCreate(dir, origin);
    const port = await freePort();
    // The witness's key must be known before it runs: start it once to make the key, then stop it.
    const keyMaker = await startWitness(dir, 'late', [signer.info().verifierKey], port);
    const witnessKey = keyMaker.key;
    await keyMaker.stop();
    const upstream = await startLlmUpstream();
    const gw = await Gateway.start({
      config: Config.parse({
        listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
        connections: [{ name: 'openai', kind: 'openai', upstream: `${upstream.url}/v1`, secret: { value: 'sk-upstream' } }],
        audit: { origin, checkpointInterval: '2s', witnesses: [{ name: 'late', url: `http://127.0.0.1:${port}`, key: witnessKey }] },
      }),
      dataDir: dir,
      log: silentLogger,
    });
    try {
      const control = `http://${gw.address('control')}`;
      const health = async () => (await (await fetch(`${control}/api/health`)).json()) as { status: string; audit: { witnesses: { name: string; state: string; cosignedTreeSize: number | null; failures: number }[] } };
      await eventually(async () => (await health()).audit.witnesses[0]!.state === 'failing', 'health to show the witness failing', 10_000);
      // Traffic flows while the witness is down.
      for (let i = 0; i < 3; i++) await chatThrough(gw, `hello ${i}`);
      const h = await health();
      assert.equal(h.status, 'ok');
      assert.ok(h.audit.witnesses[0]!.failures >= 1);
      assert.equal(h.audit.witnesses[0]!.cosignedTreeSize, null);

      const back = await startWitness(dir, 'late', [signer.info().verifierKey], port);
      const events = gw.services.store.head().size;
      const ok = await eventually(async () => {
        const w = (await health()).audit.witnesses[0]!;
        return w.state === 'ok' && (w.cosignedTreeSize ?? 0) >= events ? w : undefined;
      }, 'the witness to catch up', 40_000);
      assert.ok(ok.cosignedTreeSize! >= events);
      assert.ok(witnessState2(back, origin).size >= events, 'the witness recorded the caught-up tree');
      await back.stop();
    } finally {
      await gw.stop();
      await upstream.close();
    }
  });
});

function witnessState2(w: RunningWitness, origin: string): { size: number } {
  return (JSON.parse(readFileSync(w.stateFile, 'utf8')) as { logs: Record<string, { size: number }> }).logs[origin]!;
}

function sha256Buf(s: string): Buffer {
  return Buffer.from(sha256hex(s), 'hex');
}
