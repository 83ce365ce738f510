// Public-key login to an ssh connection, the way a new user meets it: `custody serve` runs, an admin
// registers the user's public key with `custody keys add-ssh` beside it, and the user logs in with
// OpenSSH's `ssh -i` and nothing else (no Custody key typed). Checked: what the ssh client got, what
// happened on the host, and who the gateway recorded (over the control plane's REST API).
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type CustodyServe, startServe, writeConfig } from '../support/custody-process';
import { freePort } from '../support/ports';
import { startSshd, type Sshd } from '../support/sshd';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(cmd, args, { encoding: 'utf8', timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

let sshd: Sshd;
let serve: CustodyServe;
let dir: string;
let config: string;
let port: number;

function custody(...args: string[]) {
  const r = spawnSync(process.execPath, ['bin/custody.mjs', ...args, '--config', config], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

function keygen(name: string): string {
  const file = join(dir, name);
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `${name}@laptop`, '-f', file]);
  return file;
}

/** OpenSSH's client with one identity file and nothing else: no agent, no password, no known_hosts. */
const sshWith = (identity: string, user: string, command: string) =>
  run('ssh', ['-F', '/dev/null', '-i', identity, '-o', 'IdentitiesOnly=yes', '-o', 'IdentityAgent=none', '-o', 'BatchMode=yes', '-o', 'PreferredAuthentications=publickey', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', '-p', String(port), `${user}@127.0.0.1`, command]);

async function sshSessions(): Promise<{ actorName: string | null; connection: string | null }[]> {
  const res = await fetch(`http://${serve.control}/api/sessions?protocol=ssh`, { headers: { authorization: `Bearer ${serve.key!}` } });
  assert.equal(res.status, 200);
  return ((await res.json()) as { sessions: { actorName: string | null; connection: string | null }[] }).sessions;
}

describe('custody keys add-ssh: public-key login through the gateway with OpenSSH', () => {
  before(async () => {
    sshd = await startSshd();
    dir = mkdtempSync(join(tmpdir(), 'custody-ssh-keys-'));
    port = await freePort();
    const upstreamKey = join(dir, 'data', 'secrets', 'upstream_key');
    mkdirSync(join(dir, 'data', 'secrets'), { recursive: true, mode: 0o700 });
    writeFileSync(upstreamKey, sshd.clientKey, { mode: 0o600 });
    config = writeConfig(dir, {
      dataDir: join(dir, 'data'),
      listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
      connections: [{ name: 'box', kind: 'ssh', upstream: `ssh://${sshd.user}@127.0.0.1:${sshd.port}`, secret: { file: upstreamKey }, listen: `127.0.0.1:${port}` }],
      policies: [
        { name: 'dev-echo', match: { connections: ['box'], groups: ['dev'], commands: ['echo *', 'touch *'] }, action: 'allow' },
        { name: 'nothing-else', match: { connections: ['box'] }, action: 'deny', reason: 'only echo and touch here' },
      ],
    });
    serve = await startServe(config);
  });

  after(async () => {
    await serve?.stop();
    await sshd?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('registers a person\'s public key with --owner; ssh -i logs in as them, with their groups, and runs on the host', async () => {
    const id = keygen('alice');
    const added = custody('keys', 'add-ssh', `${id}.pub`, '--owner', 'alice', '--groups', 'dev');
    // --owner names a person; there is none yet: a clear error, nothing registered.
    assert.equal(added.code, 2, added.err);
    assert.match(added.err, /--owner: no person "alice"/);
    assert.equal(custody('persons', 'create', 'alice').code, 0);
    const ok = custody('keys', 'add-ssh', `${id}.pub`, '--owner', 'alice', '--groups', 'dev');
    assert.equal(ok.code, 0, ok.err);
    const fingerprint = execFileSync('ssh-keygen', ['-l', '-f', `${id}.pub`], { encoding: 'utf8' }).split(' ')[1]!;
    assert.equal(ok.out.trim(), fingerprint, 'add-ssh prints the fingerprint ssh-keygen shows');
    assert.match(ok.err, /logs in to ssh connections as API key \w+ \(new, groups: dev, person person_/);
    assert.match(custody('keys', 'list-ssh').out, new RegExp(`${fingerprint.replace(/[+/]/g, '\\$&')}\\s+ssh-ed25519\\s+key=\\w+\\s+alice@laptop`));

    const marker = join(dir, 'made-by-alice');
    const r = await sshWith(id, 'alice', `echo hello from $USER && touch ${marker}`);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `hello from ${sshd.user}\n`);
    assert.ok(existsSync(marker), 'the command ran on the host');
    // The policy sees alice's groups: a command outside dev's allow-list is refused.
    const no = await sshWith(id, 'alice', 'id');
    assert.equal(no.code, 126);
    assert.match(no.stderr, /custody: refused by policy "nothing-else": only echo and touch here/);
    const sessions = await sshSessions();
    assert.ok(sessions.some((s) => s.actorName === 'ssh alice@laptop' && s.connection === 'box'), JSON.stringify(sessions));
  });

  it('refuses a key nobody registered, and a removed one, without a password prompt', async () => {
    const stranger = keygen('stranger');
    const r = await sshWith(stranger, 'stranger', 'echo hi');
    assert.equal(r.code, 255);
    assert.match(r.stderr, /Permission denied \(publickey,password,keyboard-interactive\)/);
    assert.equal(r.stdout, '');

    const bob = keygen('bob');
    assert.equal(custody('persons', 'create', 'bob').code, 0);
    const added = custody('keys', 'add-ssh', `${bob}.pub`, '--owner', 'bob', '--groups', 'dev');
    assert.equal(added.code, 0, added.err);
    assert.equal((await sshWith(bob, 'bob', 'echo in')).stdout, 'in\n');
    const removed = custody('keys', 'remove-ssh', added.out.trim());
    assert.equal(removed.code, 0, removed.err);
    const after = await sshWith(bob, 'bob', 'echo in');
    assert.equal(after.code, 255, 'a removed key no longer logs in');
    assert.equal(custody('keys', 'remove-ssh', added.out.trim()).code, 1);
  });

  it('--key ties the SSH key to an existing API key: revoking that key refuses the SSH key too', async () => {
    const created = custody('keys', 'create', '--name', 'ci-runner', '--groups', 'dev', '--json');
    assert.equal(created.code, 0, created.err);
    const keyId = (JSON.parse(created.out) as { id: string }).id;
    const ci = keygen('ci');
    const added = custody('keys', 'add-ssh', `${ci}.pub`, '--key', keyId);
    assert.equal(added.code, 0, added.err);
    assert.equal((await sshWith(ci, 'ci', 'echo ci')).stdout, 'ci\n');
    assert.equal(custody('keys', 'revoke', keyId).code, 0);
    const r = await sshWith(ci, 'ci', 'echo ci');
    assert.equal(r.code, 255, 'the revoked API key\'s SSH key is refused');
    // Registering again for a revoked key is refused with a reason.
    const again = custody('keys', 'add-ssh', `${keygen('ci2')}.pub`, '--key', keyId);
    assert.equal(again.code, 2);
    assert.match(again.err, /is revoked/);
  });

  it('refuses bad input with one line and exit 2, registering nothing', () => {
    const priv = keygen('oops');
    writeFileSync(join(dir, 'garbage.pub'), 'ssh-ed25519 bm90IGEga2V5 me@laptop\n');
    const before = custody('keys', 'list-ssh', '--json').out;
    const cases: [string[], RegExp][] = [
      [['keys', 'add-ssh', priv, '--owner', 'alice'], /this is a private key; register the public half/],
      [['keys', 'add-ssh', join(dir, 'custody.yaml'), '--owner', 'alice'], /give one public key \(one line\)/],
      [['keys', 'add-ssh', join(dir, 'garbage.pub'), '--owner', 'alice'], /not an OpenSSH public key/],
      [['keys', 'add-ssh', join(dir, 'missing.pub'), '--owner', 'alice'], /cannot read/],
      [['keys', 'add-ssh', `${priv}.pub`], /exactly one of --key KEY_ID .* or --owner PERSON/],
      [['keys', 'add-ssh', `${priv}.pub`, '--key', 'nosuchkey000'], /no API key nosuchkey000/],
    ];
    for (const [args, re] of cases) {
      const r = custody(...args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.err}`);
      assert.match(r.err, re);
      assert.equal(r.err.trim().split('\n').length, 1, r.err);
    }
    // The same public key twice: refused, naming where it is registered.
    const dup = custody('keys', 'add-ssh', join(dir, 'alice.pub'), '--owner', 'alice');
    assert.equal(dup.code, 2);
    assert.match(dup.err, /is already registered \(for API key \w+\)/);
    assert.equal(custody('keys', 'list-ssh', '--json').out, before);
    assert.ok(readFileSync(join(dir, 'alice.pub'), 'utf8').startsWith('ssh-ed25519 '));
  });
});
