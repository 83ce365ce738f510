// The Audit page's "evidence leaving the box": a witness that cosigns (spawned with the real CLI
// after the gateway started, so it is also caught up from behind), a witness and a sink that are
// down (a banner for admins, not for reviewers), each sink's backlog, and the archive's last sealed
// segment in a bucket (s3rver on loopback, which has no Object Lock). Screenshot: audit-evidence.png.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import S3rver from 's3rver';
import { formatCosignerKey } from '../../proxy/audit/cosignature';
import { ed25519RawPublicKey } from '../../proxy/audit/signed-note';
import { newPage, screenshot, signIn } from '../support/browser';
import { freePort } from '../support/ports';
import { tempDir } from '../support/tmp';
import { type ConsoleEnv, eventually, startConsoleEnv } from './console-harness';

let env: ConsoleEnv;
let witness: ChildProcess | undefined;
let s3: S3rver | undefined;
const CLI = join(import.meta.dirname, '../../bin/custody.mjs');

describe('console: witnesses and sinks on the Audit page', () => {
  const dir = tempDir('custody-console-evidence-');
  const keyFile = join(dir, 'witness.key');
  const { privateKey } = generateKeyPairSync('ed25519');
  writeFileSync(keyFile, privateKey.export({ format: 'pem', type: 'pkcs8' }) as string, { mode: 0o600 });
  const witnessKey = formatCosignerKey('witness.test/offsite', ed25519RawPublicKey(privateKey));
  let witnessPort: number;
  const bucketDir = tempDir('custody-console-s3-');

  before(async () => {
    witnessPort = await freePort();
    const deadPort = await freePort();
    s3 = new S3rver({ port: 0, address: '127.0.0.1', silent: true, directory: bucketDir, configureBuckets: [{ name: 'evidence', configs: [] }] });
    const s3Port = (await s3.run()).port;
    env = await startConsoleEnv({
      config: {
        audit: {
          checkpointInterval: '2s',
          // s3rver's built-in key pair.
          archive: { s3: { bucket: 'evidence', prefix: 'console', endpoint: `http://127.0.0.1:${s3Port}`, credentials: { accessKeyId: { value: 'S3RVER' }, secretAccessKey: { value: 'S3RVER' } } }, every: '1h' },
          witnesses: [
            { name: 'offsite', url: `http://127.0.0.1:${witnessPort}`, key: witnessKey },
            { name: 'unreachable', url: `http://127.0.0.1:${deadPort}`, key: formatCosignerKey('witness.test/gone', ed25519RawPublicKey(generateKeyPairSync('ed25519').privateKey)) },
          ],
          sinks: [{ name: 'siem', kind: 'http', url: `http://127.0.0.1:${deadPort}/hook`, secret: 'whsec' }],
        },
      },
    });
    const status = (await (await fetch(`${env.control}/api/audit/status`, { headers: { authorization: `Bearer ${env.adminKey}` } })).json()) as { publicKey: string };
    witness = spawn(process.execPath, [CLI, 'witness', 'serve', '--key', keyFile, '--name', 'witness.test/offsite', '--listen', `127.0.0.1:${witnessPort}`, '--log-key', status.publicKey], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      createInterface({ input: witness!.stdout! }).on('line', (l) => l.startsWith('witness key:') && resolve());
      witness!.once('exit', (c) => reject(new Error(`witness exited ${c}`)));
    });
  });
  after(async () => {
    witness?.kill('SIGTERM');
    await env?.stop();
    await s3?.close();
  });

  it('shows the cosigned checkpoint, the failing witness and sink with a banner for admins', async () => {
    const { page, errors } = await newPage(env.browser);
    await signIn(page, env.control, env.adminKey);
    await page.goto(`${env.control}/#/audit`);
    const offsite = page.getByTestId('witness-offsite');
    await eventually(async () => /ok/.test(await offsite.innerText().catch(() => '')) && /events/.test(await offsite.innerText()), 'the offsite witness to cosign', 40_000);
    const banner = page.getByTestId('evidence-banner');
    await banner.waitFor({ timeout: 20_000 });
    const text = await banner.innerText();
    assert.match(text, /witness unreachable/);
    assert.match(text, /sink siem/);
    // On a shared store the gateway also sends the group's log of combined checkpoints, a second log
    // this witness was not given the key of (`--log-key`): it refuses that one once it is sent, which
    // may come before or after this look, so only the gateway's own log is looked at there.
    if (process.env['CUSTODY_TEST_STORE'] === 'postgres') assert.doesNotMatch(text.replace(/witness offsite \(group log\)/, ''), /offsite/);
    else assert.doesNotMatch(text, /offsite/);
    assert.match(await page.getByTestId('witness-unreachable').innerText(), /failing[\s\S]*cannot reach[\s\S]*none yet/);
    assert.match(await page.getByTestId('sink-siem').innerText(), /failing[\s\S]*\d+ events/);
    const lastSegment = page.getByTestId('archive-last-segment');
    await eventually(async () => /#\d+: seq [\d,]+–[\d,]+ · verified/.test(await lastSegment.innerText().catch(() => '')), 'the archive to show its last sealed segment', 20_000);
    assert.match(await lastSegment.innerText(), /console\/segments\/\d{16}-\d{16}\.tar\.gz/);
    assert.match(await page.getByTestId('archive-object-lock').innerText(), /absent[\s\S]*does not implement Object Lock/);
    assert.doesNotMatch(text, /archive/);
    const path = await screenshot(page, 'audit-evidence');
    assert.ok(path.endsWith('audit-evidence.png'));
    // A 401 before sign-in is a failed resource load, not a script error.
    assert.deepEqual(errors.filter((e) => !/Failed to load resource/.test(e)), []);
    await page.close();

    // A reviewer sees the tables but no admin banner.
    const reviewer = await newPage(env.browser);
    await signIn(reviewer.page, env.control, env.key('rita', ['reviewer']));
    await reviewer.page.goto(`${env.control}/#/audit`);
    await reviewer.page.getByTestId('witness-unreachable').waitFor();
    assert.equal(await reviewer.page.getByTestId('evidence-banner').count(), 0);
    await reviewer.page.close();
  });
});
