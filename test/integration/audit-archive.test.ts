/**
 * Sealed archives in object storage, end to end against a real S3-compatible server (s3rver, from
 * npm, started here on a loopback port) through the AWS SDK v3: the segments the gateway uploads
 * are read back from the bucket and checked with `custody verify` alone (the data dir deleted),
 * tampering in the bucket is caught, retention waits for the archive, and a bucket that is down
 * shows in health while traffic flows.
 *
 * s3rver does not implement Object Lock (it answers NotImplemented), so the Object Lock case puts a
 * small loopback proxy in front of it that answers the bucket's Object Lock configuration as
 * enabled and records the headers of every upload on their way to s3rver.
 */
import assert from 'node:assert/strict';
import { createServer, request, type IncomingHttpHeaders, type Server } from 'node:http';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import S3rver from 's3rver';
import { DeleteObjectCommand, GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import Database from 'better-sqlite3';
import { Config } from '../../shared/config';
import { Archiver, type ArchiveWitnesses } from '../../proxy/audit/archive/archiver';
import type { S3Location } from '../../proxy/audit/archive/object-store';
import { openAuditTrail } from '../../proxy/audit/checkpoints';
import { CheckpointSigner } from '../../proxy/audit/checkpoint-signer';
import { AuditStore, canonicalEventBody, canonicalPayload, chainHashOfText, sha256hex } from '../../proxy/audit/store';
import { readTar, writeTarGz } from '../../proxy/audit/tar';
import { WitnessPublisher } from '../../proxy/audit/witnessing';
import { Gateway } from '../../proxy/gateway';
import { main } from '../../proxy/cli';
import { silentLogger } from '../../proxy/log';
import { startLlmUpstream } from '../support/llm-upstream';
import { freePort } from '../support/ports';
import { tempDir } from '../support/tmp';
import { chatThrough, eventually } from './http-harness';
import { startWitness } from '../support/witness-process';

// s3rver checks SigV4 signatures against its one built-in key pair.
const CREDS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };
const BUCKET = 'evidence';
process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] = 'true';
// Where no credentials are given, the SDK's default chain would ask the EC2 metadata address: keep every request on loopback.
process.env['AWS_EC2_METADATA_DISABLED'] = 'true';

interface RunningS3 {
  endpoint: string;
  port: number;
  directory: string;
  client: S3Client;
  stop(): Promise<void>;
}

const servers = new Set<RunningS3>();
after(async () => {
  for (const s of servers) await s.stop();
});

/** s3rver on a loopback port; restarted on the same port and directory, it holds what it held. */
async function startS3(port = 0, directory = tempDir('custody-s3-')): Promise<RunningS3> {
  const srv = new S3rver({ port, address: '127.0.0.1', silent: true, directory, configureBuckets: [{ name: BUCKET, configs: [] }] });
  const addr = await srv.run();
  const endpoint = `http://127.0.0.1:${addr.port}`;
  const client = new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true, credentials: CREDS, requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED' });
  let stopped = false;
  const s: RunningS3 = {
    endpoint,
    port: addr.port,
    directory,
    client,
    stop: async () => {
      if (stopped) return;
      stopped = true;
      servers.delete(s);
      client.destroy();
      await srv.close();
    },
  };
  servers.add(s);
  return s;
}

async function cli(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await main(argv, { out: (t) => (out += t), err: (t) => (err += t) });
  return { code, out, err };
}

async function listKeys(s3: RunningS3, prefix: string): Promise<string[]> {
  const r = await s3.client.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: prefix }));
  return (r.Contents ?? []).map((o) => o.Key!).sort();
}

async function getObject(s3: RunningS3, key: string): Promise<Buffer> {
  const r = await s3.client.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
  return Buffer.from(await r.Body!.transformToByteArray());
}

async function putObject(s3: RunningS3, key: string, body: Buffer): Promise<void> {
  await s3.client.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: body }));
}

/** A store with its trail, and an archiver to `s3` under `prefix`. */
function archiveSetup(location: S3Location, extra: { retention?: Config['retention']; lockMode?: 'COMPLIANCE' | 'GOVERNANCE'; segmentEvents?: number; witnesses?: ArchiveWitnesses } = {}) {
  const dir = tempDir('custody-archive-');
  const config = Config.parse({ audit: { origin: 'custody.test/archive' } });
  const store = AuditStore.open(dir);
  const trail = openAuditTrail(store, dir, config);
  const archiver = new Archiver({
    store,
    trail,
    archive: { s3: { bucket: location.bucket, prefix: location.prefix }, every: '1h', lockMode: extra.lockMode ?? 'COMPLIANCE' },
    retention: extra.retention ?? {},
    workDir: join(dir, 'archive'),
    location,
    log: silentLogger,
    segmentEvents: extra.segmentEvents,
    witnesses: extra.witnesses,
  });
  let n = 0;
  const append = (count: number) => {
    for (let i = 0; i < count; i++, n++) store.append({ kind: 'http.request', session: `s${n % 3}`, actor: 'key:alice', connection: 'openai', payload: { n, text: n % 5 === 0 ? 'z'.repeat(5000) : `prompt ${n}` } });
  };
  return { dir, store, trail, archiver, append };
}

const loc = (s3: RunningS3, prefix: string): S3Location => ({ bucket: BUCKET, prefix, endpoint: s3.endpoint, forcePathStyle: true, credentials: CREDS });

describe('sealed archives in object storage', () => {
  it('segments verify from the bucket alone, one by one and as a whole archive; the data dir is not needed', async () => {
    const s3 = await startS3();
    const { dir, store, archiver, append, trail } = archiveSetup(loc(s3, 'custody/alone'));
    append(40);
    await archiver.flush();
    append(25);
    await trail.checkpoints.write();
    append(3);
    await archiver.flush();
    const st = archiver.status();
    assert.equal(st.state, 'ok', st.lastError ?? '');
    const head = store.head().size;
    assert.equal(st.archivedThrough, head);
    assert.equal(st.behind, 0);
    assert.equal(st.objectLock.state, 'absent');
    assert.match(st.objectLock.detail!, /does not implement Object Lock/);
    const key = trail.signer.info();
    archiver.stop();
    store.close();
    rmSync(dir, { recursive: true, force: true });

    const keys = await listKeys(s3, 'custody/alone/');
    assert.deepEqual(
      keys.map((k) => k.replace(/0{6,}/g, '')),
      [`custody/alone/segments/1-${st.lastSegment!.firstSeq - 1}.tar.gz`, `custody/alone/segments/${st.lastSegment!.firstSeq}-${head}.tar.gz`],
    );
    // One segment, on its own, from the bytes in the bucket.
    const out = tempDir('custody-archive-dl-');
    const file = join(out, 'segment-2.tar.gz');
    writeFileSync(file, await getObject(s3, keys[1]!));
    const one = await cli('verify', file, '--key', key.fingerprint);
    assert.equal(one.code, 0, one.err);
    assert.match(one.out, new RegExp(`OK: segment .* is intact: seq ${st.lastSegment!.firstSeq}–${head} \\(segment 2\\)`));
    // The whole archive, reached through the AWS_* environment.
    const saved = { ...process.env };
    Object.assign(process.env, { AWS_ACCESS_KEY_ID: CREDS.accessKeyId, AWS_SECRET_ACCESS_KEY: CREDS.secretAccessKey, AWS_REGION: 'us-east-1' });
    try {
      const all = await cli('verify', 's3://evidence/custody/alone', '--endpoint', s3.endpoint, '--key', key.fingerprint);
      assert.equal(all.code, 0, all.err);
      assert.match(all.out, new RegExp(`OK: archive s3://evidence/custody/alone is intact: 2 segments holding seq 1–${head}`));
      const json = await cli('verify', 's3://evidence/custody/alone', '--endpoint', s3.endpoint, '--json');
      const report = JSON.parse(json.out) as { ok: boolean; events: number; segments: number; payloadsChecked: number };
      assert.deepEqual([report.ok, report.events, report.segments, report.payloadsChecked], [true, head, 2, head]);
    } finally {
      for (const k of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_REGION']) if (saved[k] === undefined) delete process.env[k];
    }
    await s3.stop();
  });

  it('verify s3:// catches a tampered segment, a missing one, an overlapping one and one signed with a key the log never announced', async () => {
    const s3 = await startS3();
    const prefix = 'custody/tamper';
    const { store, archiver, append, trail } = archiveSetup(loc(s3, prefix));
    for (let i = 0; i < 3; i++) {
      append(12);
      await trail.checkpoints.write();
      await archiver.flush();
    }
    assert.equal(archiver.status().state, 'ok', archiver.status().lastError ?? '');
    archiver.stop();
    store.close();
    const configFile = join(tempDir('custody-archive-cfg-'), 'custody.yaml');
    writeFileSync(
      configFile,
      `audit:\n  archive:\n    s3:\n      bucket: ${BUCKET}\n      prefix: ${prefix}\n      endpoint: ${s3.endpoint}\n      credentials: { accessKeyId: { value: S3RVER }, secretAccessKey: { value: S3RVER } }\n`,
    );
    const verifyArchive = () => cli('verify', `s3://${BUCKET}/${prefix}`, '--config', configFile);
    assert.equal((await verifyArchive()).code, 0);
    const keys = await listKeys(s3, `${prefix}/`);
    assert.equal(keys.length, 3);
    const original = await getObject(s3, keys[1]!);
    const files = readTar(original);
    const events = files.get('events.jsonl')!.toString('utf8').split('\n').filter(Boolean);
    const target = JSON.parse(events[4]!) as { seq: number; payload: { text: string } };

    // 1. An event's payload edited in the bucket.
    const edited = new Map(files);
    edited.set('events.jsonl', Buffer.from(files.get('events.jsonl')!.toString('utf8').replace(JSON.stringify(target.payload.text), JSON.stringify('nothing to see here'))));
    await putObject(s3, keys[1]!, await tarGz(edited));
    let r = await verifyArchive();
    assert.equal(r.code, 1);
    assert.match(r.err, new RegExp(`FAILED at seq ${target.seq}: modified — ${keys[1]}: its payload does not match the payload hash recorded for it`));

    // 2. The same, with the payload hash, the event hashes after it and the manifest digests all
    //    recomputed: the manifest's signature gives it away, and the inclusion proof before that.
    const forged = rechain(files, target.seq, 'nothing to see here');
    await putObject(s3, keys[1]!, await tarGz(forged));
    r = await verifyArchive();
    assert.equal(r.code, 1);
    assert.match(r.err, new RegExp(`FAILED at seq ${target.seq}: modified — ${keys[1]}: its inclusion proof does not lead to the signed checkpoint's root`));

    // 3. The segment re-signed, whole, by another key: consistent on its own, refused in the archive.
    const other = CheckpointSigner.loadOrCreate(tempDir('custody-archive-other-'), 'custody.test/archive').signer;
    await putObject(s3, keys[1]!, await tarGz(await resign(files, other)));
    r = await verifyArchive();
    assert.equal(r.code, 1);
    assert.match(r.err, new RegExp(`key-replaced — ${keys[1]} is signed with key ${other.info().fingerprint.replace(/[+/]/g, '\\$&')}, which the log never announced`));

    // 4. Back to the original; then the middle segment removed.
    await putObject(s3, keys[1]!, original);
    assert.equal((await verifyArchive()).code, 0);
    await s3.client.send(new DeleteObjectCommand({ Bucket: BUCKET, Key: keys[1]! }));
    r = await verifyArchive();
    assert.equal(r.code, 1);
    const range = /(\d+)-(\d+)\.tar\.gz$/.exec(keys[1]!)!;
    assert.match(r.err, new RegExp(`FAILED at seq ${Number(range[1])}: deleted — seq ${Number(range[1])}–${Number(range[2])} are missing from the archive: no segment holds them`));

    // 5. A segment overlapping another.
    await putObject(s3, keys[1]!, original);
    await putObject(s3, keys[1]!.replace(/-(\d+)\.tar\.gz$/, (_m, last: string) => `-${String(Number(last) + 1).padStart(16, '0')}.tar.gz`), original);
    r = await verifyArchive();
    assert.equal(r.code, 1);
    assert.match(r.err, /segments overlap/);
    await s3.stop();
  });

  it('custody serve with audit.witnesses and audit.archive seals segments that carry the witness cosignature', async () => {
    const s3 = await startS3();
    const dir = tempDir('custody-archive-gw-witnessed-');
    const origin = 'custody.test/archive-gw-witnessed';
    // The gateway's signing key exists before it starts, so the witness can be told it.
    const first = AuditStore.open(dir);
    const logKey = openAuditTrail(first, dir, Config.parse({ audit: { origin } })).signer.info();
    first.close();
    const w = await startWitness(dir, 'gw', [logKey.verifierKey]);
    const upstream = await startLlmUpstream();
    const gw = await Gateway.start({
      config: Config.parse({
        listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
        connections: [{ name: 'openai', kind: 'openai', upstream: `${upstream.url}/v1`, secret: { value: 'sk-upstream' } }],
        audit: {
          origin,
          witnesses: [{ name: 'gw', url: w.url, key: w.key }],
          archive: { s3: { bucket: BUCKET, prefix: 'gw-witnessed', endpoint: s3.endpoint, credentials: { accessKeyId: { value: CREDS.accessKeyId }, secretAccessKey: { value: CREDS.secretAccessKey } } }, every: '1h' },
        },
      }),
      dataDir: dir,
      log: silentLogger,
    });
    try {
      for (let i = 0; i < 3; i++) await chatThrough(gw, `witnessed ${i}`);
      await gw.services.audit!.archiver!.flush();
      const st = gw.services.audit!.archiver!.status();
      assert.equal(st.state, 'ok', st.lastError ?? '');
      const keys = await listKeys(s3, 'gw-witnessed/');
      const last = readTar(await getObject(s3, keys.at(-1)!));
      const cosigned = last.get('cosignatures.jsonl')!.toString('utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { witness: string; tree_size: number });
      assert.deepEqual(cosigned.map((c) => [c.witness, c.tree_size]), [['witness.test/gw', st.lastSegment!.lastSeq]]);
    } finally {
      await gw.stop();
      await upstream.close();
      await w.stop();
    }
    const saved = { ...process.env };
    Object.assign(process.env, { AWS_ACCESS_KEY_ID: CREDS.accessKeyId, AWS_SECRET_ACCESS_KEY: CREDS.secretAccessKey });
    try {
      const r = await cli('verify', `s3://${BUCKET}/gw-witnessed`, '--endpoint', s3.endpoint, '--witness-key', w.key);
      assert.equal(r.code, 0, r.err);
      assert.match(r.out, /witness witness\.test\/gw: cosigned the checkpoint of every segment/);
    } finally {
      for (const k of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY']) if (saved[k] === undefined) delete process.env[k];
      await s3.stop();
    }
  });

  it('a bucket that is down never blocks traffic and shows in health; retention purges only payloads in segments read back and verified', async () => {
    const port = await freePort();
    const dir = tempDir('custody-archive-gw-');
    const upstream = await startLlmUpstream();
    const gw = await Gateway.start({
      config: Config.parse({
        listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
        connections: [{ name: 'openai', kind: 'openai', upstream: `${upstream.url}/v1`, secret: { value: 'sk-upstream' } }],
        retention: { payloadsAfter: '1s' },
        audit: {
          origin: 'custody.test/archive-gw',
          archive: { s3: { bucket: BUCKET, prefix: 'gw', endpoint: `http://127.0.0.1:${port}`, credentials: { accessKeyId: { value: CREDS.accessKeyId }, secretAccessKey: { value: CREDS.secretAccessKey } } }, every: '1h' },
        },
      }),
      dataDir: dir,
      log: silentLogger,
    });
    let s3: RunningS3 | undefined;
    const bucketDir = tempDir('custody-s3-');
    try {
      const control = `http://${gw.address('control')}`;
      type Health = { status: string; audit: { archive: { state: string; archivedThrough: number; behind: number; failures: number; objectLock: string; lastSegment: { lastSeq: number } | null } } };
      const health = async () => (await (await fetch(`${control}/api/health`)).json()) as Health;
      const chat = (text: string) => chatThrough(gw, text);
      await eventually(async () => (await health()).audit.archive.state === 'failing', 'health to show the archive failing', 20_000);
      for (let i = 0; i < 3; i++) await chat(`before the bucket is back ${i}`);
      let h = await health();
      assert.equal(h.status, 'ok');
      assert.equal(h.audit.archive.archivedThrough, 0);
      assert.ok(h.audit.archive.behind > 0);
      assert.ok(h.audit.archive.failures >= 1);
      const status = (await (await fetch(`${control}/api/audit/status`, { headers: { authorization: `Bearer ${gw.firstKey!}` } })).json()) as { archive: { lastError: string; location: string } };
      assert.match(status.archive.lastError, /ECONNREFUSED|connect/);
      assert.equal(status.archive.location, `s3://${BUCKET}/gw at http://127.0.0.1:${port}`);

      // Old enough for retention, but not archived: nothing is purged.
      await new Promise((r) => setTimeout(r, 1100));
      gw.services.audit!.retention.runIfDue();
      const db = new Database(join(dir, 'custody.db'), { readonly: true });
      const purgedCount = () => (db.prepare("SELECT count(*) AS n FROM events WHERE encoding = 'purged'").get() as { n: number }).n;
      assert.equal(purgedCount(), 0);

      // The bucket comes back: the archive catches up, and retention purges what it now holds.
      s3 = await startS3(port, bucketDir);
      await gw.services.audit!.archiver!.flush();
      h = await health();
      assert.equal(h.audit.archive.state, 'ok');
      const through = h.audit.archive.archivedThrough;
      assert.ok(through > 0 && h.audit.archive.lastSegment?.lastSeq === through);
      assert.equal(h.audit.archive.objectLock, 'absent');
      const rows = () => db.prepare('SELECT seq, encoding, time FROM events ORDER BY seq').all() as { seq: number; encoding: string; time: number }[];
      const purgedBefore = rows().filter((r) => r.encoding === 'purged');
      assert.ok(purgedBefore.length > 0, 'archived payloads older than the window are purged');
      assert.ok(purgedBefore.every((r) => r.seq <= through), 'nothing beyond the archive is purged');

      // More traffic, old enough, but the bucket is down again: those payloads stay.
      await chat('after the archive');
      await s3.stop();
      await new Promise((r) => setTimeout(r, 1100));
      gw.services.audit!.retention.runIfDue();
      const after = rows();
      assert.ok(after.filter((r) => r.encoding === 'purged').every((r) => r.seq <= through));
      assert.ok(after.some((r) => r.seq > through && r.encoding !== 'purged' && r.time < Date.now() - 1000), 'old payloads after the archive are kept');
      db.close();

      // The local log still verifies (every purge has its retention run); so does the archive, with every payload.
      s3 = await startS3(port, bucketDir);
      await gw.services.audit!.archiver!.flush();
      assert.equal(gw.services.audit!.archiver!.status().state, 'ok');
      const configFile = join(dir, 'verify.yaml');
      writeFileSync(configFile, `audit:\n  archive:\n    s3: { bucket: ${BUCKET}, prefix: gw, endpoint: 'http://127.0.0.1:${port}', credentials: { accessKeyId: { value: S3RVER }, secretAccessKey: { value: S3RVER } } }\n`);
      const archive = await cli('verify', `s3://${BUCKET}/gw`, '--config', configFile, '--json');
      assert.equal(archive.code, 0, archive.err);
      const report = JSON.parse(archive.out) as { payloadsPurged: number; payloadsChecked: number; events: number };
      assert.equal(report.payloadsPurged, 0);
      assert.equal(report.payloadsChecked, report.events);
    } finally {
      await gw.stop();
      await upstream.close();
      await s3?.stop();
    }
    const local = await cli('verify', dir);
    assert.equal(local.code, 0, local.err);
    assert.match(local.out, /[1-9]\d* purged by retention/);
  });

  it('writes each segment under Object Lock with the retention date from retention.archiveFor, where the bucket has Object Lock', async () => {
    const s3 = await startS3();
    const uploads: IncomingHttpHeaders[] = [];
    const proxy = await objectLockProxy(s3.port, uploads);
    try {
      const { store, archiver, append } = archiveSetup({ ...loc(s3, 'locked'), endpoint: proxy.url }, { retention: { archiveFor: '730d' }, lockMode: 'GOVERNANCE' });
      append(10);
      const before = Date.now();
      await archiver.flush();
      const st = archiver.status();
      assert.equal(st.state, 'ok', st.lastError ?? '');
      assert.deepEqual([st.objectLock.state, st.objectLock.mode, st.objectLock.retainFor, st.objectLock.detail], ['enabled', 'GOVERNANCE', '730d', null]);
      assert.equal(uploads.length, 1);
      const h = uploads[0]!;
      assert.equal(h['x-amz-object-lock-mode'], 'GOVERNANCE');
      const until = Date.parse(String(h['x-amz-object-lock-retain-until-date']));
      assert.ok(Math.abs(until - (before + 730 * 86_400_000)) < 60_000, `retain-until ${h['x-amz-object-lock-retain-until-date']}`);
      assert.equal(st.lastSegment!.retainUntil, until);
      assert.match(String(h['content-md5']), /^[A-Za-z0-9+/]{22}==$/);
      archiver.stop();
      store.close();
    } finally {
      await new Promise<void>((r) => proxy.server.close(() => r()));
      await s3.stop();
    }
  });

  it('cuts a large backlog at stored checkpoints, and a restart resumes a segment that was sealed but not uploaded under the same name', async () => {
    const s3 = await startS3();
    const { dir, store, trail, archiver, append } = archiveSetup(loc(s3, 'backlog'), { segmentEvents: 30 });
    for (let i = 0; i < 4; i++) {
      append(20);
      await trail.checkpoints.write();
    }
    await s3.stop();
    await archiver.flush();
    assert.equal(archiver.status().state, 'failing');
    const pending = store.db.prepare('SELECT first_seq, last_seq, object_key FROM archive_segments WHERE verified_at IS NULL').all() as { first_seq: number; last_seq: number; object_key: string }[];
    assert.equal(pending.length, 1, 'the first segment is sealed before its upload');
    archiver.stop();

    const back = await startS3(s3.port, s3.directory);
    const again = new Archiver({
      store,
      trail,
      archive: { s3: { bucket: BUCKET, prefix: 'backlog' }, every: '1h', lockMode: 'COMPLIANCE' },
      retention: {},
      workDir: join(dir, 'archive'),
      location: loc(back, 'backlog'),
      log: silentLogger,
      segmentEvents: 30,
    });
    await again.flush();
    assert.equal(again.status().state, 'ok', again.status().lastError ?? '');
    const rows = store.db.prepare('SELECT first_seq, last_seq, object_key FROM archive_segments ORDER BY idx').all() as { first_seq: number; last_seq: number; object_key: string }[];
    assert.deepEqual(rows[0], pending[0]);
    const sizes = new Set((store.db.prepare('SELECT tree_size FROM checkpoints').all() as { tree_size: number }[]).map((c) => c.tree_size));
    for (const r of rows) assert.ok(sizes.has(r.last_seq), `segment ${r.first_seq}–${r.last_seq} ends at a stored checkpoint`);
    for (let i = 1; i < rows.length; i++) assert.equal(rows[i]!.first_seq, rows[i - 1]!.last_seq + 1);
    assert.equal(rows.at(-1)!.last_seq, store.head().size);
    assert.deepEqual(await listKeys(back, 'backlog/'), rows.map((r) => r.object_key).sort());
    again.stop();
    store.close();
    const saved = { ...process.env };
    Object.assign(process.env, { AWS_ACCESS_KEY_ID: CREDS.accessKeyId, AWS_SECRET_ACCESS_KEY: CREDS.secretAccessKey });
    try {
      const r = await cli('verify', `s3://${BUCKET}/backlog`, '--endpoint', back.endpoint);
      assert.equal(r.code, 0, r.err);
    } finally {
      for (const k of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY']) if (saved[k] === undefined) delete process.env[k];
    }
    await back.stop();
  });

  it('a cycle archives what was recorded when it began; events recorded meanwhile wait for the next one', async () => {
    const s3 = await startS3();
    const { store, archiver, append } = archiveSetup(loc(s3, 'steady'));
    append(10);
    const cycle = archiver.flush(); // seals seq 1–11 before its first upload begins
    append(5); // recorded while the segment is on its way
    await cycle;
    const segments = () => (store.db.prepare('SELECT first_seq, last_seq FROM archive_segments ORDER BY idx').all() as { first_seq: number; last_seq: number }[]).map((r) => [r.first_seq, r.last_seq]);
    assert.deepEqual(segments(), [[1, 11]]);
    assert.equal(archiver.status().behind, 5);
    // The segment stored the compact range of the tree it ends with (11 = 8 + 2 + 1 leaves); the
    // next seal continues it. One that does not give the signed root is not trusted, but rebuilt.
    const range = JSON.parse(store.db.prepare('SELECT compact_range FROM archive_segments WHERE idx = 1').pluck().get() as string) as string[];
    assert.equal(range.length, 3);
    store.db.prepare('UPDATE archive_segments SET compact_range = ? WHERE idx = 1').run(JSON.stringify([range[0], range[2], range[1]]));
    await archiver.flush();
    assert.equal(archiver.status().state, 'ok', archiver.status().lastError ?? '');
    assert.deepEqual(segments(), [[1, 11], [12, 16]]);
    store.db.prepare('UPDATE archive_segments SET compact_range = ? WHERE idx = 2').run('not a range');
    append(3);
    await archiver.flush();
    assert.equal(archiver.status().state, 'ok', archiver.status().lastError ?? '');
    assert.deepEqual(segments(), [[1, 11], [12, 16], [17, 19]]);
    archiver.stop();
    store.close();
    await s3.stop();
  });

  it('witnessed segments carry the cosignatures on their checkpoint (a witness that is down does not hold them back); verify --witness-key holds every segment to them', async () => {
    const s3 = await startS3();
    const prefix = 'custody/witnessed';
    const dir = tempDir('custody-archive-witnessed-');
    const store = AuditStore.open(dir);
    const trail = openAuditTrail(store, dir, Config.parse({ audit: { origin: 'custody.test/archive' } }));
    const logKey = trail.signer.info();
    const w1 = await startWitness(dir, 'a1', [logKey.verifierKey]);
    let w2 = await startWitness(dir, 'a2', [logKey.verifierKey]);
    const witnesses = new WitnessPublisher(store, [
      { name: 'a1', url: w1.url, key: w1.key },
      { name: 'a2', url: w2.url, key: w2.key },
    ]);
    const archiver = new Archiver({ store, trail, archive: { s3: { bucket: BUCKET, prefix }, every: '1h', lockMode: 'COMPLIANCE' }, retention: {}, workDir: join(dir, 'archive'), location: loc(s3, prefix), log: silentLogger, witnesses });
    const append = (count: number, tag: string) => {
      for (let i = 0; i < count; i++) store.append({ kind: 'http.request', session: `w${i % 2}`, actor: 'key:alice', connection: 'openai', payload: { text: `${tag} ${i}` } });
    };
    const cosigs = (files: Map<string, Buffer>) => files.get('cosignatures.jsonl')!.toString('utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { witness: string; tree_size: number; signature: string });

    // No checkpoint is cosigned yet: the archiver writes one at the head, has both witnesses cosign it, and cuts there.
    append(15, 'first');
    await archiver.flush();
    assert.equal(archiver.status().state, 'ok', archiver.status().lastError ?? '');
    const head1 = store.head().size;
    // A cosigned checkpoint at the head already: it is the cut.
    append(20, 'second');
    await trail.checkpoints.write();
    await witnesses.flush();
    await archiver.flush();
    const head2 = store.head().size;
    assert.equal(archiver.status().archivedThrough, head2);

    // A witness that is down does not hold the archive back: the segment carries the cosignature of the one that works.
    await w2.stop();
    append(7, 'third');
    await archiver.flush();
    assert.equal(archiver.status().state, 'ok', archiver.status().lastError ?? '');
    const head3 = store.head().size;
    assert.equal(archiver.status().archivedThrough, head3);
    // Back on its port with its state: it is caught up, and the next segment carries both again.
    w2 = await startWitness(dir, 'a2', [logKey.verifierKey], w2.port);
    append(9, 'fourth');
    await archiver.flush();
    assert.equal(archiver.status().state, 'ok', archiver.status().lastError ?? '');
    const head = store.head().size;
    assert.equal(archiver.status().archivedThrough, head);
    archiver.stop();
    witnesses.stop();
    store.close();

    const keys = await listKeys(s3, `${prefix}/`);
    assert.equal(keys.length, 4);
    const segs = await Promise.all(keys.map(async (k) => readTar(await getObject(s3, k))));
    const both = ['witness.test/a1', 'witness.test/a2'];
    for (const [i, [size, who]] of ([[head1, both], [head2, both], [head3, ['witness.test/a1']], [head, both]] as const).entries()) {
      assert.deepEqual(cosigs(segs[i]!).map((c) => [c.witness, c.tree_size]), who.map((w) => [w, size]), `segment ${i + 1}`);
      const manifest = JSON.parse(segs[i]!.get('manifest.json')!.toString('utf8')) as { files: Record<string, { sha256: string }> };
      assert.equal(manifest.files['cosignatures.jsonl']!.sha256, sha256hex(segs[i]!.get('cosignatures.jsonl')!), 'the signed manifest lists the cosignatures');
    }

    const env = { AWS_ACCESS_KEY_ID: CREDS.accessKeyId, AWS_SECRET_ACCESS_KEY: CREDS.secretAccessKey, AWS_REGION: 'us-east-1' };
    const saved = { ...process.env };
    Object.assign(process.env, env);
    try {
      const verifyArchive = (...extra: string[]) => cli('verify', `s3://${BUCKET}/${prefix}`, '--endpoint', s3.endpoint, '--key', logKey.fingerprint, ...extra);
      let r = await verifyArchive('--witness-key', w1.key);
      assert.equal(r.code, 0, r.err);
      assert.match(r.out, new RegExp(`witness witness\\.test/a1: cosigned the checkpoint of every segment, the newest of ${head} events`));
      // a2 was down while segment 3 was sealed, and verify says so.
      r = await verifyArchive('--witness-key', w1.key, '--witness-key', w2.key);
      assert.equal(r.code, 1);
      assert.match(r.err, new RegExp(`FAILED: unwitnessed — ${keys[2]}: the segment's checkpoint of ${head3} events is not cosigned by witness witness\\.test/a2`));
      const dl = tempDir('custody-archive-witnessed-dl-');
      const seg2 = join(dl, 'segment-2.tar.gz');
      writeFileSync(seg2, await getObject(s3, keys[1]!));
      const one = await cli('verify', seg2, '--key', logKey.fingerprint, '--witness-key', w1.key, '--witness-key', w2.key);
      assert.equal(one.code, 0, one.err);
      assert.match(one.out, new RegExp(`witness witness\\.test/a2: cosigned the segment's checkpoint of ${head2} events`));

      // A witness these segments never saw.
      const stranger = await startWitness(dir, 'stranger', [logKey.verifierKey]);
      r = await verifyArchive('--witness-key', w1.key, '--witness-key', stranger.key);
      assert.equal(r.code, 1);
      assert.match(r.err, new RegExp(`FAILED: unwitnessed — ${keys[0]}: the segment's checkpoint of ${head1} events is not cosigned by witness witness\\.test/stranger`));
      await stranger.stop();

      // Someone with the gateway's key re-packs a segment (the manifest re-signed): a forged cosignature
      // does not verify; one dropped leaves the segment unwitnessed.
      const repack = async (files: Map<string, Buffer>, lines: object[]) => {
        const out = new Map(files);
        out.set('cosignatures.jsonl', Buffer.from(lines.map((l) => `${JSON.stringify(l)}\n`).join('')));
        const manifest = JSON.parse(files.get('manifest.json')!.toString('utf8')) as { files: Record<string, { sha256: string; bytes: number }> };
        manifest.files['cosignatures.jsonl'] = { sha256: sha256hex(out.get('cosignatures.jsonl')!), bytes: out.get('cosignatures.jsonl')!.length };
        out.set('manifest.json', Buffer.from(`${JSON.stringify(manifest, null, 2)}\n`));
        out.set('manifest.note', Buffer.from(await trail.signer.signText(`custody-evidence-manifest\nsha256 ${sha256hex(out.get('manifest.json')!)}\n`)));
        return tarGz(out);
      };
      const flipped = (line: string) => {
        const [, head, b64, tail] = /^(.* )([A-Za-z0-9+/=]+)(\n?)$/.exec(line)!;
        const sig = Buffer.from(b64!, 'base64');
        sig[sig.length - 10]! ^= 1; // a bit of the Ed25519 signature itself
        return `${head}${sig.toString('base64')}${tail}`;
      };
      const forgedLines = cosigs(segs[1]!).map((c) => (c.witness === 'witness.test/a2' ? { ...c, signature: flipped(c.signature) } : c));
      assert.notDeepEqual(forgedLines, cosigs(segs[1]!));
      await putObject(s3, keys[1]!, await repack(segs[1]!, forgedLines));
      r = await verifyArchive('--witness-key', w2.key);
      assert.equal(r.code, 1);
      assert.match(r.err, new RegExp(`FAILED at seq ${head2}: signature-invalid — ${keys[1]}: the cosignature by witness witness\\.test/a2 on the checkpoint of ${head2} events does not verify`));
      assert.equal((await verifyArchive('--witness-key', w1.key)).code, 0, "the other witness's cosignature is untouched");
      await putObject(s3, keys[3]!, await repack(segs[3]!, cosigs(segs[3]!).filter((c) => c.witness !== 'witness.test/a1')));
      r = await verifyArchive('--witness-key', w1.key);
      assert.equal(r.code, 1);
      assert.match(r.err, new RegExp(`FAILED: unwitnessed — ${keys[3]}: the segment's checkpoint of ${head} events is not cosigned by witness witness\\.test/a1`));
      // Re-signed with the gateway's own key, the archive is consistent: only the witnesses catch it.
      assert.equal((await verifyArchive()).code, 0);
    } finally {
      for (const k of Object.keys(env)) if (saved[k] === undefined) delete process.env[k];
      await w1.stop();
      await w2.stop();
      await s3.stop();
    }
  });

  it('refuses bad archive addresses and flags with one line', async () => {
    let r = await cli('verify', 's3://Bad_Bucket/x');
    assert.equal(r.code, 2);
    assert.match(r.err, /not an archive address \(expected s3:\/\/bucket\/prefix\)/);
    r = await cli('verify', 's3://evidence/x', '--endpoint', 'ftp://nope');
    assert.equal(r.code, 2);
    assert.match(r.err, /--endpoint ftp:\/\/nope: an endpoint URL/);
    r = await cli('verify', tempDir(), '--endpoint', 'http://127.0.0.1:9');
    assert.equal(r.code, 2);
    assert.match(r.err, /go with an s3:\/\/ archive address/);
    const port = await freePort();
    r = await cli('verify', 's3://evidence/x', '--endpoint', `http://127.0.0.1:${port}`);
    assert.equal(r.code, 1);
    assert.equal(r.err.trim().split('\n').length, 1, r.err);
    assert.match(r.err, /s3:\/\/evidence\/x at http:\/\/127\.0\.0\.1:\d+: cannot list/);
  });
});

async function tarGz(files: Map<string, Buffer>): Promise<Buffer> {
  const dir = tempDir('custody-archive-tar-');
  const out = join(dir, 'x.tar.gz');
  await writeTarGz(
    out,
    [...files].map(([name, data]) => ({ name, data, size: data.length })),
  );
  return readFileSync(out);
}

/** An attacker's edit without the key: the payload rewritten, every hash after it recomputed, the manifest's file digests updated. */
function rechain(files: Map<string, Buffer>, seq: number, text: string): Map<string, Buffer> {
  const out = new Map(files);
  const lines = files.get('events.jsonl')!.toString('utf8').split('\n').filter(Boolean);
  let prev: string | undefined;
  const rewritten = lines.map((line) => {
    const e = JSON.parse(line) as Record<string, unknown> & { seq: number; payload: { text: string }; spans: unknown[]; prevHash: string; hash: string; payloadHash: string };
    if (e.seq < seq) return line;
    if (e.seq === seq) {
      e.payload = { ...e.payload, text };
      e.payloadHash = sha256hex(`{"payload":${canonicalPayload(e.payload)},"spans":${canonicalPayload(e.spans)}}`);
    }
    if (prev) e.prevHash = prev;
    e.hash = chainHashOfText(e.prevHash, canonicalEventBody({ seq: e.seq, time: e.time as number, kind: e.kind as never, session: e.session as string, actor: e.actor as string, connection: e.connection as string, payloadHash: e.payloadHash }));
    prev = e.hash;
    return JSON.stringify(e);
  });
  out.set('events.jsonl', Buffer.from(`${rewritten.join('\n')}\n`));
  const manifest = JSON.parse(files.get('manifest.json')!.toString('utf8')) as { files: Record<string, { sha256: string; bytes: number }> };
  manifest.files['events.jsonl'] = { sha256: sha256hex(out.get('events.jsonl')!), bytes: out.get('events.jsonl')!.length };
  out.set('manifest.json', Buffer.from(`${JSON.stringify(manifest, null, 2)}\n`));
  return out;
}

/** The same files with the checkpoint and manifest signed by `signer`, and its key as public-key.txt. */
async function resign(files: Map<string, Buffer>, signer: CheckpointSigner): Promise<Map<string, Buffer>> {
  const out = new Map(files);
  const cpText = files.get('checkpoint.txt')!.toString('utf8').split('\n\n')[0]! + '\n';
  out.set('checkpoint.txt', Buffer.from(await signer.signText(cpText)));
  out.set('public-key.txt', Buffer.from(`${signer.info().verifierKey}\n${signer.info().fingerprint}\n`));
  const manifest = JSON.parse(files.get('manifest.json')!.toString('utf8')) as { files: Record<string, { sha256: string; bytes: number }> };
  for (const name of ['checkpoint.txt', 'public-key.txt']) manifest.files[name] = { sha256: sha256hex(out.get(name)!), bytes: out.get(name)!.length };
  out.set('manifest.json', Buffer.from(`${JSON.stringify(manifest, null, 2)}\n`));
  out.set('manifest.note', Buffer.from(await signer.signText(`custody-evidence-manifest\nsha256 ${sha256hex(out.get('manifest.json')!)}\n`)));
  return out;
}

/**
 * A loopback proxy to s3rver that says the bucket has Object Lock enabled (s3rver does not
 * implement it) and records the headers of every upload before passing it on.
 */
async function objectLockProxy(s3Port: number, uploads: IncomingHttpHeaders[]): Promise<{ url: string; server: Server }> {
  const server = createServer((req, res) => {
    if (req.method === 'GET' && /[?&]object-lock(=|&|$)/.test(req.url ?? '')) {
      res.writeHead(200, { 'content-type': 'application/xml' });
      res.end('<?xml version="1.0" encoding="UTF-8"?><ObjectLockConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><ObjectLockEnabled>Enabled</ObjectLockEnabled></ObjectLockConfiguration>');
      return;
    }
    if (req.method === 'PUT') uploads.push(req.headers);
    const up = request({ host: '127.0.0.1', port: s3Port, method: req.method, path: req.url, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  return { url: `http://127.0.0.1:${port}`, server };
}
