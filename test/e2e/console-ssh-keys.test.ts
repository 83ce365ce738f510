// SSH keys from the console's Keys page, in Chromium: a person (not an admin) signed in with their
// API key pastes their public key, sees it listed with the fingerprint ssh-keygen shows, and then
// OpenSSH's `ssh -i` logs in through the gateway to a real sshd; bad key text is refused on the
// page and nothing is stored; removing the key from the page refuses the next connection.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Page } from 'playwright-core';
import { newPage, screenshot, signIn } from '../support/browser';
import { run, SSH_KEY_ONLY } from '../support/ssh-box';
import { startSshd, type Sshd } from '../support/sshd';
import { type ConsoleEnv, eventually, startConsoleEnv } from './console-harness';

let env: ConsoleEnv;
let sshd: Sshd;
let work: string;
let port: number;
let page: Page;
let errors: string[];

// Not execFileSync: the gateway runs in this process and must keep answering.
const ssh = (identity: string, command: string) => run('ssh', [...SSH_KEY_ONLY, '-i', identity, '-p', String(port), 'maya@127.0.0.1', command]);

const storedKeys = () => (env.gw.services.store.db.prepare('SELECT fingerprint FROM ssh_keys WHERE removed_at IS NULL').all() as { fingerprint: string }[]).map((r) => r.fingerprint);

describe('console: SSH keys on the Keys page', () => {
  before(async () => {
    sshd = await startSshd();
    work = mkdtempSync(join(tmpdir(), 'custody-console-ssh-keys-'));
    env = await startConsoleEnv({
      config: {
        connections: [{ name: 'web-1', kind: 'ssh', upstream: `ssh://${sshd.user}@127.0.0.1:${sshd.port}`, secret: { value: sshd.clientKey }, listen: '127.0.0.1:0' }],
      },
    });
    port = Number(env.gw.address('ssh:web-1').split(':').pop());
    ({ page, errors } = await newPage(env.browser));
    page.on('dialog', (d) => void d.accept());
    await signIn(page, env.control, env.key('maya.chen', ['engineering']));
  });

  after(async () => {
    await page?.close().catch(() => {});
    await env?.stop();
    await sshd?.close();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('refuses bad key text on the page, storing nothing', async () => {
    await page.getByRole('link', { name: 'Keys' }).click();
    await page.getByTestId('ssh-keys').waitFor();
    assert.equal(await page.getByTestId('api-keys').count(), 0, 'API keys are for admins');
    const priv = join(work, 'oops');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', priv]);
    await page.getByTestId('ssh-key-text').fill(readFileSync(priv, 'utf8'));
    await page.getByTestId('ssh-key-add').click();
    await page.locator('[data-testid="ssh-key-form"] .field-error').getByText(/this is a private key; register the public half/).waitFor();
    await page.getByTestId('ssh-key-text').fill('ssh-ed25519 bm90IGEga2V5 me@laptop');
    await page.getByTestId('ssh-key-add').click();
    await page.locator('[data-testid="ssh-key-form"] .field-error').getByText(/not an OpenSSH public key/).waitFor();
    assert.deepEqual(storedKeys(), []);
  });

  it('adds a key in the page; ssh -i then logs in through the gateway; removing it refuses the next connection', async () => {
    const identity = join(work, 'maya_ed25519');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'maya@laptop', '-f', identity]);
    const fingerprint = execFileSync('ssh-keygen', ['-l', '-f', `${identity}.pub`], { encoding: 'utf8' }).split(' ')[1]!;
    const before = await ssh(identity, 'echo before');
    assert.equal(before.code, 255, 'not registered yet: refused');

    await page.getByTestId('ssh-key-text').fill(readFileSync(`${identity}.pub`, 'utf8'));
    await page.getByTestId('ssh-key-add').click();
    const row = page.locator(`[data-testid="ssh-key-list"] tr[data-fingerprint="${fingerprint}"]`);
    await row.waitFor();
    assert.match(await row.innerText(), /maya@laptop[\s\S]*ssh-ed25519[\s\S]*active/);
    assert.equal(await page.getByTestId('ssh-key-text').inputValue(), '', 'the field is cleared');
    // The page shows the command for this gateway's ssh listener.
    assert.match(await page.getByTestId('ssh-keys').locator('.code-block pre').innerText(), new RegExp(`ssh -i \\S+ -p ${port} \\S+@127\\.0\\.0\\.1`));
    assert.deepEqual(storedKeys(), [fingerprint]);
    await screenshot(page, 'keys-ssh');

    const r = await ssh(identity, 'echo hello from $USER');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `hello from ${sshd.user}\n`);
    const sessions = ((await (await fetch(`${env.control}/api/sessions?protocol=ssh`, { headers: { authorization: `Bearer ${env.adminKey}` } })).json()) as { sessions: { actorName: string }[] }).sessions;
    assert.ok(sessions.some((s) => s.actorName === 'maya.chen'), JSON.stringify(sessions));

    await row.getByTestId('ssh-key-remove').click();
    await eventually(async () => (await row.count()) === 0, 'the row to go');
    await page.getByText('No SSH keys yet').waitFor();
    assert.deepEqual(storedKeys(), []);
    const after = await ssh(identity, 'echo after');
    assert.equal(after.code, 255, 'a removed key is refused');
    assert.match(after.stderr, /Permission denied \(publickey/);
    assert.equal(after.stdout, '');
  });

  it('raised no script errors', () => {
    assert.deepEqual(errors.filter((e) => !/Failed to load resource/.test(e)), []);
  });
});
