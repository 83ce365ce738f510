// `custody ssh-login`: a person with an OIDC token from a real OpenID Provider (`oidc-provider` on
// loopback) gets a short-lived SSH key through the gateway, and OpenSSH's own client logs in with
// it until the TTL passes; then the gateway refuses it. The CLI runs as its own process, as a user
// runs it. Also: a refused token writes no key, bad options are one line and exit 2, `--key`
// registers an existing key without writing anything, and `--issuer` signs in through the browser
// (RFC 8252) before registering.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Gateway } from '../../proxy/gateway';
import { startTestIdp, TestBrowser, type TestIdp } from '../support/oidc-provider';
import { run, type Run, SSH_KEY_ONLY, type SshBox, startSshBox } from '../support/ssh-box';

let idp: TestIdp;
let box: SshBox;
let gw: Gateway;
let work: string;
let control: string;
let tokenFile: string;

const custody = (...args: string[]) => run(process.execPath, ['bin/custody.mjs', 'ssh-login', ...args], { ...process.env, CUSTODY_TOKEN: '' });

/** Runs the `ssh -i … -p … user@host` line ssh-login printed, with `command`. */
function sshAsPrinted(line: string, command: string): Promise<Run> {
  const m = /^ssh -i (\S+) -p (\d+) (\S+)$/.exec(line.trim());
  assert.ok(m, `an ssh command line: ${line}`);
  return run('ssh', [...SSH_KEY_ONLY, '-i', m[1]!, '-p', m[2]!, m[3]!, command]);
}

const events = (kind: string) => box.events(kind);

describe('custody ssh-login: a short-lived SSH key through the IdP', () => {
  before(async () => {
    idp = await startTestIdp({ services: [{ clientId: 'alice-laptop', groups: ['dev'] }, { clientId: 'mallory', groups: [] }] });
    box = await startSshBox({ identity: { oidc: [{ issuer: idp.issuer, audience: idp.audience }] } });
    gw = box.gw;
    control = box.control;
    work = mkdtempSync(join(tmpdir(), 'custody-ssh-login-'));
    tokenFile = join(work, 'token');
    writeFileSync(tokenFile, `${await idp.clientCredentialsToken({ clientId: 'alice-laptop' })}\n`, { mode: 0o600 });
  });

  after(async () => {
    await box?.stop();
    await idp?.close();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('registers a new key for the token\'s person; ssh -i as printed logs in with their groups; after the TTL the key is refused', async () => {
    const out = join(work, 'dot-ssh', 'alice_ed25519');
    const r = await custody('--gateway', control, '--token-file', tokenFile, '--ttl', '10s', '--out', out, '--user', 'alice');
    assert.equal(r.code, 0, r.stderr);
    const port = gw.address('ssh:box').split(':').pop();
    assert.equal(r.stdout, `ssh -i ${out} -p ${port} alice@127.0.0.1\n`);
    assert.match(r.stderr, /^Registered ssh-ed25519 key SHA256:\S+ for .*alice-laptop.*; it logs in until \S+Z\. Private key: .* \(mode 0600\)\.\n$/);
    assert.equal(statSync(out).mode & 0o777, 0o600, 'the private key is for its owner only');
    assert.equal(statSync(join(work, 'dot-ssh')).mode & 0o777, 0o700, 'a missing folder is made, for its owner only');
    assert.match(readFileSync(out, 'utf8'), /^-----BEGIN OPENSSH PRIVATE KEY-----/);
    const fingerprint = execFileSync('ssh-keygen', ['-l', '-f', `${out}.pub`], { encoding: 'utf8' }).split(' ')[1]!;
    assert.ok(r.stderr.includes(fingerprint), 'the registered key is the one written');

    // What the gateway stored: a key of the OIDC subject's person, with the token's groups, expiring with the TTL.
    const created = events('key.created').find((e) => e.payload['fingerprint'] === fingerprint)!;
    assert.equal(created.actor, `${idp.issuer}#alice-laptop`);
    const expiresAt = created.payload['expiresAt'] as number;
    assert.ok(expiresAt > Date.now() && expiresAt <= Date.now() + 10000, String(expiresAt));
    assert.equal(created.payload['person'], gw.services.persons.personOf(`${idp.issuer}#alice-laptop`));
    const apiKey = gw.services.keys.get(created.payload['keyId'] as string)!;
    assert.deepEqual(apiKey.groups, ['dev']);

    const ok = await sshAsPrinted(r.stdout, 'echo hello from $USER');
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout, `hello from ${box.sshd.user}\n`);
    const denied = await sshAsPrinted(r.stdout, 'id');
    assert.equal(denied.code, 126, 'the policy sees the token\'s groups');

    await new Promise((res) => setTimeout(res, Math.max(0, expiresAt - Date.now()) + 300));
    const late = await sshAsPrinted(r.stdout, 'echo too late');
    assert.equal(late.code, 255, 'refused after the TTL');
    assert.match(late.stderr, /Permission denied \(publickey/);
    assert.equal(late.stdout, '');
  });

  it('with --issuer, signs in through the browser (authorization code, PKCE, loopback redirect) and registers the key for that person', async () => {
    idp.setUser({ sub: 'bob', email: 'bob@example.test', name: 'Bob', groups: ['dev'] });
    const out = join(work, 'bob_ed25519');
    const args = ['--gateway', control, '--issuer', idp.issuer, '--client-id', idp.consoleClientId, '--resource', idp.audience, '--scope', 'openid email profile groups api'];
    const child = spawn(process.execPath, ['bin/custody.mjs', 'ssh-login', ...args, '--redirect-path', '/api/auth/oidc/callback', '--ttl', '1h', '--out', out, '--user', 'bob'], { env: { ...process.env, CUSTODY_TOKEN: '', BROWSER: '' } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    const url = await new Promise<string>((resolve, reject) => {
      child.stderr.on('data', (d: Buffer) => {
        stderr += d.toString();
        const m = /Sign in to your identity provider in a browser: (\S+)/.exec(stderr);
        if (m) resolve(m[1]!);
      });
      child.once('exit', () => reject(new Error(`ssh-login ended before asking for a sign-in: ${stderr}`)));
    });
    // The user's browser: follows the IdP's pages and redirects back to the CLI's loopback listener.
    void new TestBrowser().navigate(url);
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    assert.equal(code, 0, stderr);
    assert.match(stderr, /Registered ssh-ed25519 key SHA256:\S+ for /);
    const created = events('key.created').at(-1)!;
    assert.equal(created.actor, `${idp.issuer}#bob`, 'the key belongs to the person who signed in');
    const ok = await sshAsPrinted(stdout, 'echo signed in as $USER');
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout, `signed in as ${box.sshd.user}\n`);
  });

  it('a refused token registers nothing and writes no key', async () => {
    const before = (gw.services.store.db.prepare('SELECT count(*) AS n FROM ssh_keys').get() as { n: number }).n;
    const bad = join(work, 'bad-token');
    writeFileSync(bad, await idp.signWithUnknownKey({ iss: idp.issuer, aud: idp.audience, sub: 'mallory', exp: Math.floor(Date.now() / 1000) + 300 }));
    const out = join(work, 'mallory_ed25519');
    const r = await custody('--gateway', control, '--token-file', bad, '--out', out);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^custody ssh-login: the gateway refused: .* \(401\)\n$/);
    assert.ok(!existsSync(out), 'no private key written');
    assert.equal((gw.services.store.db.prepare('SELECT count(*) AS n FROM ssh_keys').get() as { n: number }).n, before);
  });

  it('--key registers an existing key, writing nothing; the default TTL is 8 hours; locking the person refuses it', async () => {
    const own = join(work, 'own_ed25519');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'alice@laptop', '-f', own]);
    const before = readFileSync(own, 'utf8');
    const r = await custody('--gateway', control, '--token-file', tokenFile, '--key', `${own}.pub`, '--json');
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout) as { expiresAt: number; identityFile: string; commands: { command: string }[] };
    assert.equal(j.identityFile, own);
    assert.ok(Math.abs(j.expiresAt - (Date.now() + 8 * 3600_000)) < 60_000, `expires in about 8 h: ${new Date(j.expiresAt).toISOString()}`);
    assert.equal(readFileSync(own, 'utf8'), before, 'the private key is left alone');
    assert.equal((await sshAsPrinted(j.commands[0]!.command, 'echo mine')).stdout, 'mine\n');
    // Locking the token's person refuses the key at once, TTL or not.
    const person = gw.services.persons.personOf(`${idp.issuer}#alice-laptop`)!;
    const lock = await fetch(`${control}/api/persons/${encodeURIComponent(person)}/lock`, { method: 'POST', headers: { authorization: `Bearer ${gw.firstKey!}` } });
    assert.equal(lock.status, 200, await lock.text());
    const locked = await sshAsPrinted(j.commands[0]!.command, 'echo mine');
    assert.equal(locked.code, 255, 'a locked person\'s key is refused');
    assert.equal(locked.stdout, '');
  });

  it('bad options: one line on stderr, exit 2', async () => {
    const cases: [string[], RegExp][] = [
      [['--gateway', control], /needs your OIDC token .*--token-file FILE/],
      [['--gateway', control, '--token-file', tokenFile, '--ttl', 'forever'], /--ttl: invalid duration "forever"/],
      [['--gateway', control, '--token-file', join(work, 'missing')], /cannot read --token-file/],
      [['--gateway', 'ftp://x', '--token-file', tokenFile], /--gateway: expected http\(s\)/],
      [['--gateway', control, '--token-file', tokenFile, '--key', 'a.pub', '--out', 'b'], /with --key your own key is registered/],
      [['--gateway', control, '--token-file', tokenFile, '--colour'], /unknown option --colour/],
      [['--gateway', control, '--token-file', tokenFile, '--client-id', 'x'], /--client-id goes with --issuer/],
      [['--gateway', control, '--issuer', 'http://127.0.0.1:1'], /--issuer needs --client-id/],
      [['--gateway', control, '--issuer', 'http://127.0.0.1:1', '--client-id', 'x', '--token-file', tokenFile], /--issuer .* or a token, not both/],
    ];
    for (const [args, re] of cases) {
      const r = await custody(...args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, re);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    }
  });
});
