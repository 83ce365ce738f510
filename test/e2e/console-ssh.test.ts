// SSH sessions in the console, in Chromium, against a real OpenSSH server through the gateway with
// OpenSSH's own client: an exec session replays in xterm with the masked card number highlighted;
// a running interactive session is watched live over the WebSocket as it is typed into, and ended
// from the console with a reason: the ssh client is told why and disconnected, and the log has who
// ended it; its replay then steps from one typed command line to the next.
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Page } from 'playwright-core';
import { SshKeyStore } from '../../proxy/identity/ssh-keys';
import { newPage, screenshot, signIn } from '../support/browser';
import { startSshd, type Sshd } from '../support/sshd';
import { type ConsoleEnv, eventually, startConsoleEnv } from './console-harness';

const CARD = '4111 1111 1111 1111';

let env: ConsoleEnv;
let sshd: Sshd;
let work: string;
let identity: string;
let port: number;
let page: Page;
let errors: string[];

const SSH_OPTS = ['-F', '/dev/null', '-o', 'IdentitiesOnly=yes', '-o', 'IdentityAgent=none', '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR'];

interface SshSessionRow {
  id: string;
  protocol: string;
  endedAt: number | null;
  requests: number;
}

async function sshSessions(): Promise<SshSessionRow[]> {
  const r = await fetch(`${env.control}/api/sessions?protocol=ssh&limit=100`, { headers: { authorization: `Bearer ${env.adminKey}` } });
  return ((await r.json()) as { sessions: SshSessionRow[] }).sessions;
}

function events(kind: string): Record<string, unknown>[] {
  env.gw.services.store.settle();
  return (env.gw.services.store.db.prepare('SELECT payload FROM events WHERE kind = ? ORDER BY seq').all(kind) as { payload: string }[]).map((r) => JSON.parse(r.payload) as Record<string, unknown>);
}

describe('console: SSH sessions', () => {
  before(async () => {
    sshd = await startSshd();
    work = mkdtempSync(join(tmpdir(), 'custody-console-ssh-'));
    writeFileSync(join(work, 'card.txt'), `customer card ${CARD} on file\n`);
    env = await startConsoleEnv({
      config: {
        connections: [{ name: 'web-1', kind: 'ssh', upstream: `ssh://${sshd.user}@127.0.0.1:${sshd.port}`, secret: { value: sshd.clientKey }, listen: '127.0.0.1:0' }],
        masking: [{ id: 'cards', detectors: ['credit_card'], scope: ['client', 'log'] }],
      },
    });
    port = Number(env.gw.address('ssh:web-1').split(':').pop());
    // The engineer logs in with their own SSH key, registered for their API key.
    const { record } = env.gw.services.keys.create({ name: 'maya.chen', groups: ['engineering'] });
    identity = join(work, 'maya_ed25519');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'maya@laptop', '-f', identity]);
    new SshKeyStore(env.gw.services.store.db).add(record.id, readFileSync(`${identity}.pub`, 'utf8'), 'test');
    ({ page, errors } = await newPage(env.browser));
    await signIn(page, env.control, env.adminKey);
  });

  after(async () => {
    await page?.close().catch(() => {});
    await env?.stop();
    await sshd?.close();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('replays an exec session in xterm: the command, its output with the card number highlighted as masked, its exit status', async () => {
    // Not execFileSync: the gateway runs in this process and must keep answering.
    const out = await new Promise<string>((resolve, reject) =>
      execFile('ssh', [...SSH_OPTS, '-i', identity, '-p', String(port), 'maya@127.0.0.1', `cat ${join(work, 'card.txt')}; echo done`], { encoding: 'utf8', timeout: 30_000 }, (err, stdout, stderr) => (err ? reject(new Error(`${err.message}: ${stderr}`)) : resolve(stdout))),
    );
    assert.equal(out, 'customer card [CREDIT_CARD] on file\ndone\n');
    const session = await eventually(async () => (await sshSessions()).find((s) => s.endedAt !== null), 'the exec session to end');
    await page.goto(`${env.control}/#/sessions`);
    await page.getByTestId('filter-protocol').selectOption('ssh');
    const row = page.locator(`[data-testid="session-row"][data-session-id="${session.id}"]`);
    await row.waitFor();
    assert.match(await row.innerText(), /SSH/);
    await row.click();
    await page.getByTestId('ssh-terminal').waitFor();
    assert.equal(await page.getByTestId('replay').getAttribute('data-mode'), 'ssh');
    const rows = page.locator('[data-testid="ssh-terminal"] .xterm-rows');
    await eventually(async () => /\[exit 0\]/.test(await rows.innerText()), 'the transcript up to the exit status');
    const text = await rows.innerText();
    assert.match(text, new RegExp(`\\$ cat ${join(work, 'card.txt').replace(/[/.]/g, '\\$&')}; echo done`));
    assert.match(text, /customer card \[CREDIT_CARD\] on file\s+done/);
    assert.ok(!text.includes(CARD));
    const mask = page.locator('[data-testid="ssh-terminal"] .xterm-mask[data-mask-type="CREDIT_CARD"]');
    await eventually(async () => (await mask.count()) >= 1, 'the mask overlay on the card number');
    assert.match((await mask.first().getAttribute('title'))!, /Masked: CREDIT_CARD \(rule cards\)/);
    await screenshot(page, 'replay-ssh');
  });

  it('shows a running shell live, as it is typed into, and ends it from the console: the ssh client is told why and disconnected', async () => {
    const ssh: ChildProcess = spawn('ssh', [...SSH_OPTS, '-tt', '-i', identity, '-p', String(port), 'maya@127.0.0.1'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let screen = '';
    ssh.stdout!.on('data', (d: Buffer) => (screen += d.toString('utf8')));
    ssh.stderr!.on('data', (d: Buffer) => (screen += d.toString('utf8')));
    const exited = new Promise<number | null>((resolve) => ssh.once('exit', (code) => resolve(code)));
    let liveId = '';
    try {
      await eventually(() => /[$#] $/.test(screen), `the shell's prompt; screen so far: ${JSON.stringify(screen.slice(-200))}`, 20_000);
      const live = await eventually(async () => (await sshSessions()).find((s) => s.endedAt === null), 'the live session in the list');
      liveId = live.id;
      await page.goto(`${env.control}/#/sessions/${live.id}`);
      await page.getByTestId('ssh-terminal').waitFor();
      assert.match(await page.locator('.replay-head').innerText(), /live/);
      const rows = page.locator('[data-testid="ssh-terminal"] .xterm-rows');
      // Typed after the page opened: it can only arrive over the WebSocket.
      ssh.stdin!.write('echo live-marker-$((6*7))\r');
      await eventually(() => screen.includes('live-marker-42'), 'the command to run');
      await eventually(async () => (await rows.innerText()).includes('live-marker-42'), 'the output in the console, live', 15_000);
      ssh.stdin!.write(`cat ${join(work, 'card.txt')}\r`);
      await eventually(async () => (await rows.innerText()).includes('customer card [CREDIT_CARD******] on file'), 'the masked card number, as wide as the number (a pty), live', 15_000);
      await eventually(async () => (await page.locator('[data-testid="ssh-terminal"] .xterm-mask[data-mask-type="CREDIT_CARD"]').count()) >= 1, 'the mask overlay, live');
      await screenshot(page, 'ssh-live');

      await page.getByTestId('end-session').click();
      await page.getByTestId('end-session-confirm').click();
      await page.getByText('Say why').waitFor();
      await page.getByTestId('end-session-reason').fill('maintenance window is over');
      await page.getByTestId('end-session-confirm').click();
      const code = await Promise.race([exited, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 15_000))]);
      assert.notEqual(code, 'hung', 'the ssh client was disconnected');
      assert.equal(code, 126, screen.slice(-300));
      assert.match(screen, /custody: ended by \S+ from the Custody console: maintenance window is over/);
    } finally {
      if (ssh.exitCode === null) ssh.kill();
    }
    const terminated = await eventually(() => events('session.terminated')[0], 'the session.terminated event');
    assert.equal(terminated['reason'], 'maintenance window is over');
    const end = await eventually(() => events('session.end').find((e) => /maintenance window is over/.test(String(e['reason']))), 'the session end with the reason');
    assert.match(String(end['reason']), /^ended by \S+ from the Custody console/);
    const rows = page.locator('[data-testid="ssh-terminal"] .xterm-rows');
    await eventually(async () => /ended by \S+ from the console: maintenance window is over/.test(await rows.innerText()), 'the ending shown in the console');
    await eventually(async () => !/\blive\b/.test(await page.locator('.replay-head').innerText()), 'the live badge gone');
    await screenshot(page, 'ssh-ended');
    // The lines typed into the shell, rebuilt from the keys, are commands the replay steps between.
    const items = page.locator('[data-testid="event-item"]');
    await eventually(async () => (await items.allInnerTexts()).some((t) => t.includes('$ echo live-marker-$((6*7))')), 'the shell line in the event list');
    await page.getByTestId('timeline').click({ position: { x: 0, y: 2 } });
    const current = page.locator('[data-testid="event-item"].current');
    await page.getByTestId('step-next-command').click();
    await eventually(async () => (await current.innerText()).includes('$ echo live-marker-$((6*7))'), 'the first command, stepped to');
    await page.getByTestId('step-next-command').click();
    await eventually(async () => (await current.innerText()).includes(`$ cat ${join(work, 'card.txt')}`), 'the second command, stepped to over the output between');
    await screenshot(page, 'ssh-step-command');
    // Ending it again: it has ended.
    const again = await fetch(`${env.control}/api/sessions/${encodeURIComponent(liveId)}/end`, { method: 'POST', headers: { authorization: `Bearer ${env.adminKey}`, 'content-type': 'application/json' }, body: '{"reason":"x"}' });
    assert.equal(again.status, 409);
    assert.match(((await again.json()) as { error: { message: string } }).error.message, /has already ended/);
  });

  it('raised no script errors', () => {
    assert.deepEqual(errors.filter((e) => !/Failed to load resource/.test(e)), []);
  });
});
