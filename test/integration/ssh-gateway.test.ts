// SSH through the gateway against a real OpenSSH server (started here with its own config and keys)
// with OpenSSH's own clients (ssh, scp, sftp; the Custody key given as the password through
// sshpass) and ssh2's client. Each case checks what the client saw, what happened on the host
// (files made or left alone) and what the verifiable log holds.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { connect } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import ssh2 from 'ssh2';
import { Config } from '../../shared/config';
import type { Identity } from '../../shared/identity';
import { verifyBundle } from '../../proxy/audit/verify/bundle';
import { Gateway } from '../../proxy/gateway';
import { storedPayloadText } from '../../proxy/audit/store';
import { connectSshUpstream, KnownHosts, sshUpstreamTarget } from '../../proxy/ssh/upstream';
import { silentLogger } from '../../proxy/log';
import { startSshd, type Sshd } from '../support/sshd';

const CARD = '4111 1111 1111 1111';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], input?: string): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(cmd, args, { encoding: 'utf8', timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : -1) : 0;
      resolve({ code, stdout, stderr });
    });
    if (input !== undefined) child.stdin!.end(input);
  });
}

let sshd: Sshd;
let gw: Gateway;
let port: string;
let devKey: string;
let approver: Identity;
let work: string;
let dataDir: string;

const opts = () => ['-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', '-o', 'PreferredAuthentications=keyboard-interactive,password'];
const ssh = (command: string, input?: string) => run('sshpass', ['-p', devKey, 'ssh', '-p', port, ...opts(), 'dev@127.0.0.1', command], input);

function events(kind: string): Record<string, unknown>[] {
  // Read straight from the database: wait for what the gateway journaled to be folded in.
  gw.services.store.settle();
  return (gw.services.store.db.prepare('SELECT encoding, payload FROM events WHERE kind = ? ORDER BY seq').all(kind) as { encoding: string; payload: Buffer | string }[]).map((r) => JSON.parse(storedPayloadText(r.encoding, r.payload)) as Record<string, unknown>);
}

/** Every event's payload as text (large payloads are stored deflated), for what must be nowhere in the log. */
function allPayloads(): string {
  gw.services.store.settle();
  return (gw.services.store.db.prepare('SELECT encoding, payload FROM events').all() as { encoding: string; payload: Buffer | string }[]).map((r) => storedPayloadText(r.encoding, r.payload)).join('\n');
}

async function eventually<T>(f: () => T | undefined, what: string, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = f();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** ssh2's client, logged in with the dev key. */
async function sshClient(): Promise<ssh2.Client> {
  const client = new ssh2.Client();
  await new Promise<void>((resolve, reject) => {
    client.once('ready', resolve).once('error', reject);
    client.connect({ host: '127.0.0.1', port: Number(port), username: 'dev', password: devKey });
  });
  return client;
}

/** Decides the next pending hold whose summary contains `text`. */
async function decideHold(text: string, decision: 'approve' | 'deny'): Promise<void> {
  const hold = await eventually(() => gw.services.holds.list({ state: 'pending' }).holds.find((h) => h.summary.includes(text)), `a hold on ${text}`);
  assert.equal(hold.protocol, 'ssh');
  gw.services.holds.decide(hold.id, approver, { decision, reason: `${decision}d in the test` });
}

describe('ssh through the gateway', () => {
  before(async () => {
    sshd = await startSshd();
    work = mkdtempSync(join(tmpdir(), 'custody-ssh-work-'));
    dataDir = mkdtempSync(join(tmpdir(), 'custody-ssh-gw-'));
    mkdirSync(join(work, 'denied'));
    mkdirSync(join(work, 'open'));
    writeFileSync(join(work, 'card.txt'), `customer card ${CARD} on file\n`);
    const config = Config.parse({
      listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
      connections: [{ name: 'box', kind: 'ssh', upstream: `ssh://${sshd.user}@127.0.0.1:${sshd.port}`, secret: { value: sshd.clientKey }, listen: '127.0.0.1:0' }],
      masking: [{ id: 'cards', detectors: ['credit_card'], scope: ['client', 'log'] }],
      limits: { recordFileBytes: 64 * 1024 },
      policies: [
        { name: 'no-denied-writes', match: { connections: ['box'], ssh: ['file_transfer'], paths: [`${work}/denied`, `${work}/denied/*`] }, action: 'deny', reason: 'nothing is written there' },
        { name: 'transfers-ok', match: { connections: ['box'], ssh: ['file_transfer'] }, action: 'allow' },
        { name: 'read-only', match: { connections: ['box'], commands: ['echo *', 'cat *', 'uname *', 'ls *', 'true', 'exit *', 'scp *', 'rsync --server *', 'head *'] }, action: 'allow' },
        { name: 'hold-the-rest', match: { connections: ['box'], ssh: ['exec', 'shell'] }, action: 'hold', hold: { approvers: ['ops'], timeout: '20s' } },
      ],
    });
    gw = await Gateway.start({ config, dataDir, log: silentLogger, bootstrapKey: false });
    port = gw.address('ssh:box').split(':')[1]!;
    devKey = gw.services.keys.create({ name: 'dev', groups: ['dev'] }).key;
    approver = await gw.services.auth.authenticate(gw.services.keys.create({ name: 'oncall', groups: ['ops'] }).key);
  });

  after(async () => {
    await gw?.stop();
    await sshd?.close();
    for (const d of [work, dataDir]) if (d) rmSync(d, { recursive: true, force: true });
  });

  it('runs an allowed exec and gives back its output and exit status; the log has the command, output and status', async () => {
    const r = await ssh('echo hello; echo oops >&2; exit 3');
    assert.equal(r.code, 3);
    assert.equal(r.stdout, 'hello\n');
    assert.equal(r.stderr, 'oops\n');
    const exit = await eventually(() => events('ssh.exit').find((e) => e['stdout'] === 'hello\n'), 'the exit event');
    assert.equal(exit['exitStatus'], 3);
    assert.equal(exit['stderr'], 'oops\n');
    const req = events('ssh.request').find((e) => e['command'] === 'echo hello; echo oops >&2; exit 3')!;
    assert.deepEqual((req['decision'] as { rule: string }).rule, 'read-only');
  });

  it('refuses a wrong key at login, and the upstream credential never reaches the client', async () => {
    const r = await run('sshpass', ['-p', 'cst_not-a-key', 'ssh', '-p', port, ...opts(), 'dev@127.0.0.1', 'true']);
    assert.equal(r.code, 5, r.stderr); // sshpass: the password was refused
    // Failures are recorded as they are aggregated: wait for the event.
    await eventually(() => (events('auth.failure').some((f) => f['protocol'] === 'ssh') ? true : undefined), 'an ssh auth.failure event');
    const all = allPayloads();
    assert.ok(!all.includes('PRIVATE KEY'), 'the upstream key is nowhere in the log');
  });

  it('holds an rm -rf hidden in a pipeline; a denial reaches the client on stderr with exit status 126 and nothing is removed', async () => {
    const victim = join(work, 'victim1');
    mkdirSync(victim);
    const pending = ssh(`echo ok | rm -fr ${victim}`);
    await decideHold(victim, 'deny');
    const r = await pending;
    assert.equal(r.code, 126);
    assert.match(r.stderr, /custody: held for approval by policy "hold-the-rest" and denied by oncall/);
    assert.ok(existsSync(victim), 'the directory is still there');
  });

  it('holds an rm -rf behind sudo and one inside sh -c; the approved one runs', async () => {
    const a = join(work, 'victim2');
    const b = join(work, 'victim3');
    mkdirSync(a);
    mkdirSync(b);
    const sudo = ssh(`sudo -u root rm -r -f ${a}`);
    await decideHold(a, 'deny');
    assert.equal((await sudo).code, 126);
    assert.ok(existsSync(a));
    const shc = ssh(`sh -c "rm -rf ${b}"`);
    await decideHold(b, 'approve');
    const r = await shc;
    assert.equal(r.code, 0, r.stderr);
    assert.ok(!existsSync(b), 'the approved command ran');
    const req = events('ssh.request').find((e) => String(e['command']).includes(b))!;
    assert.ok((req['unknown'] as string[]).some((u) => u.startsWith('sh runs code')));
  });

  it('masks a card number in cat output, for the client and in the log', async () => {
    const r = await ssh(`cat ${join(work, 'card.txt')}`);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(!r.stdout.includes(CARD), r.stdout);
    assert.match(r.stdout, /customer card \[CREDIT_CARD\] on file/);
    const exit = await eventually(() => events('ssh.exit').find((e) => String(e['stdout']).startsWith('customer card')), 'the cat exit');
    assert.equal(exit['stdout'], 'customer card [CREDIT_CARD] on file\n');
    assert.deepEqual(exit['masked'], { CREDIT_CARD: 1 });
  });

  it('copies with scp in SFTP mode and in legacy mode and with rsync, recorded with size and SHA-256; each refused into a denied path', async () => {
    const local = join(work, 'upload.bin');
    const body = Buffer.from('some bytes to copy\n'.repeat(1000));
    writeFileSync(local, body);
    const scp = (legacy: boolean, dest: string) => run('sshpass', ['-p', devKey, 'scp', ...(legacy ? ['-O'] : []), '-P', port, ...opts(), local, `dev@127.0.0.1:${dest}`]);
    for (const legacy of [false, true]) {
      const okDest = join(work, 'open', legacy ? 'legacy.bin' : 'sftp.bin');
      const ok = await scp(legacy, okDest);
      assert.equal(ok.code, 0, `${legacy}: ${ok.stderr}`);
      assert.deepEqual(readFileSync(okDest), body);
      const deniedDest = join(work, 'denied', legacy ? 'legacy.bin' : 'sftp.bin');
      const no = await scp(legacy, deniedDest);
      assert.notEqual(no.code, 0);
      assert.match(no.stderr, /nothing is written there|Permission denied|refused by policy/);
      assert.ok(!existsSync(deniedDest), 'nothing was written');
    }
    // rsync runs `rsync --server … DEST` upstream: the same path rule applies.
    const rsh = `sshpass -p ${devKey} ssh -p ${port} ${opts().join(' ')}`;
    const rsyncOk = await run('rsync', ['-e', rsh, local, `dev@127.0.0.1:${join(work, 'open', 'rsync.bin')}`]);
    assert.equal(rsyncOk.code, 0, rsyncOk.stderr);
    assert.deepEqual(readFileSync(join(work, 'open', 'rsync.bin')), body);
    const rsyncNo = await run('rsync', ['-e', rsh, local, `dev@127.0.0.1:${join(work, 'denied', 'rsync.bin')}`]);
    assert.notEqual(rsyncNo.code, 0);
    assert.match(rsyncNo.stderr, /refused by policy "no-denied-writes"/);
    assert.ok(!existsSync(join(work, 'denied', 'rsync.bin')));
    const sha = createHash('sha256').update(body).digest('hex');
    const write = await eventually(() => events('ssh.sftp').find((e) => e['op'] === 'write' && e['path'] === join(work, 'open', 'sftp.bin')), 'the sftp write');
    assert.equal(write['bytes'], body.length);
    assert.equal(write['sha256'], sha);
    const legacyReq = events('ssh.request').find((e) => String(e['command']).startsWith('scp -t') && String(e['command']).includes(join(work, 'denied')))!;
    assert.equal((legacyReq['decision'] as { rule: string }).rule, 'no-denied-writes');
  });

  it('carries a file of several MiB up and down over SFTP unchanged; each is recorded with its size and SHA-256, the content up to recordFileBytes, masked', async () => {
    // Text with card numbers first (what is kept of the content), then random bytes: the packets
    // (255 KiB writes and reads) arrive in many pieces.
    const text = Buffer.from(Array.from({ length: 2000 }, (_, i) => `line ${i} card ${CARD}\n`).join(''));
    const body = Buffer.concat([text, randomBytes(3 * 1024 * 1024 + 12345)]);
    const local = join(work, 'big-up.bin');
    writeFileSync(local, body);
    const remote = join(work, 'open', 'big.bin');
    const up = await run('sshpass', ['-p', devKey, 'scp', '-P', port, ...opts(), local, `dev@127.0.0.1:${remote}`]);
    assert.equal(up.code, 0, up.stderr);
    assert.ok(readFileSync(remote).equals(body), 'the host has the file as sent');
    const back = join(work, 'big-down.bin');
    const down = await run('sshpass', ['-p', devKey, 'scp', '-P', port, ...opts(), `dev@127.0.0.1:${remote}`, back]);
    assert.equal(down.code, 0, down.stderr);
    assert.ok(readFileSync(back).equals(body), 'the client got the file as it is on the host');
    const sha = createHash('sha256').update(body).digest('hex');
    const write = await eventually(() => events('ssh.sftp').find((e) => e['op'] === 'write' && e['path'] === remote), 'the upload');
    const read = await eventually(() => events('ssh.sftp').find((e) => e['op'] === 'read' && e['path'] === remote), 'the download');
    for (const e of [write, read]) {
      assert.equal(e['bytes'], body.length);
      assert.equal(e['sha256'], sha);
      assert.equal(e['ordered'], undefined, 'the bytes passed in order');
      assert.equal(e['contentTruncated'], true);
      const content = String(e['content']);
      assert.ok(content.startsWith('line 0 card [CREDIT_CARD]\nline 1 card [CREDIT_CARD]\n'), content.slice(0, 80));
      assert.ok(!content.includes(CARD), 'card numbers are masked in the content');
      // 64 KiB of the original text, each card number shorter by its label.
      assert.ok(content.length > 50_000 && content.length <= 64 * 1024, `kept ${content.length} characters`);
    }
  });

  it('refuses an SFTP upload into a denied path and records the refusal', async () => {
    const local = join(work, 'put.txt');
    writeFileSync(local, 'hello\n');
    const batch = join(work, 'batch.txt');
    writeFileSync(batch, `put ${local} ${join(work, 'denied', 'put.txt')}\n`);
    const r = await run('sshpass', ['-p', devKey, 'sftp', '-o', 'BatchMode=no', '-P', port, ...opts(), '-b', batch, 'dev@127.0.0.1']);
    assert.match(r.stderr, /Permission denied|no-denied-writes/);
    assert.notEqual(r.code, 0);
    assert.ok(!existsSync(join(work, 'denied', 'put.txt')));
    const refused = await eventually(() => events('ssh.sftp').find((e) => e['refused'] && (e['paths'] as string[]).includes(join(work, 'denied', 'put.txt'))), `the refusal in ${JSON.stringify(events('ssh.sftp').slice(-4))}`);
    assert.match(String(refused['refused']), /no-denied-writes/);
  });

  it('refuses port forwarding by default', async () => {
    const client = await sshClient();
    const err = await new Promise<Error | undefined>((resolve) => client.forwardOut('127.0.0.1', 1, '127.0.0.1', sshd.port, (e) => resolve(e ?? undefined)));
    assert.ok(err, 'the forward was refused');
    client.end();
    const req = await eventually(() => events('ssh.request').find((e) => e['request'] === 'direct-tcpip'), 'the refusal');
    assert.equal((req['decision'] as { action: string }).action, 'deny');
  });

  it('survives garbage before the banner and refuses channels past the limit cleanly', async () => {
    await new Promise<void>((resolve) => {
      const s = connect(Number(port), '127.0.0.1', () => s.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n' + 'x'.repeat(70_000)));
      s.on('error', () => resolve());
      s.on('close', () => resolve());
      s.resume();
    });
    const client = await sshClient();
    const results = await Promise.all(Array.from({ length: 1000 }, () => new Promise<boolean>((resolve) => client.exec('true', (e, ch) => {
      if (e) return resolve(false);
      ch.on('close', () => resolve(true));
      ch.resume();
    }))));
    const opened = results.filter(Boolean).length;
    assert.ok(opened >= 1 && opened < 1000, `opened ${opened}`);
    client.end();
    const r = await ssh('echo still here');
    assert.equal(r.stdout, 'still here\n');
  });

  it('holds an interactive shell as a whole; once approved it runs in a pty with window changes, recorded as frames and rebuilt command lines without what was typed at a password prompt', async () => {
    const client = await sshClient();
    const shellP = new Promise<ssh2.ClientChannel>((resolve, reject) => client.shell({ term: 'xterm', cols: 80, rows: 24 }, (e, st) => (e ? reject(e) : resolve(st))));
    await decideHold('interactive shell', 'approve');
    const sh = await shellP;
    let screen = '';
    sh.on('data', (d: Buffer) => (screen += d.toString('utf8')));
    const waitFor = (re: RegExp) => eventually(() => (re.test(screen) ? true : undefined), `${re} on screen; screen so far: ${JSON.stringify(screen.slice(-300))}`);
    // Type only once the shell shows its first prompt (a loaded machine starts it slowly).
    await waitFor(/[$#] $/);
    sh.write("PS1='$ '; export PS1\r");
    await waitFor(/export PS1\r\n(.|\r|\n)*\$ $/);
    sh.setWindow(30, 100, 0, 0);
    await new Promise((r) => setTimeout(r, 200));
    sh.write('stty size\r');
    await waitFor(/30 100/);
    // A line edited while typed (Backspace), and one completed with Tab: both become ssh.command.
    sh.write('echo edited-linX');
    await waitFor(/edited-linX$/);
    sh.write('\x7f');
    await new Promise((r) => setTimeout(r, 100));
    // Enter only once the echo is on screen, as a person types: a line whose echo comes later than
    // 300 ms after its Enter is recorded as its length only (a loaded machine can take that long).
    sh.write('e ok');
    await waitFor(/e ok$/);
    sh.write('\r');
    await waitFor(/[\r\n]edited-line ok\r\n/);
    sh.write('echo tab-\t');
    await new Promise((r) => setTimeout(r, 200));
    sh.write('done');
    await waitFor(/done$/);
    sh.write('\r');
    await waitFor(/[\r\n]tab-\S*done\r\n/);
    sh.write("read -s -p 'Secret: ' S; echo; echo got-${#S}\r");
    await waitFor(/Secret: /);
    sh.write('hunter2\r');
    await waitFor(/got-7/);
    sh.write(`cat ${join(work, 'card.txt')}\r`);
    await waitFor(/customer card/);
    assert.ok(!screen.includes(CARD), 'the card number is masked on screen too');
    sh.write('exit\r');
    await new Promise((r) => sh.once('close', r));
    client.end();
    const frames = await eventually(() => {
      const all = events('ssh.output').flatMap((e) => e['frames'] as unknown[][]);
      // Output frames split where the shell's writes and the masker's held-back tail fall, so
      // "got-7" may span two frames: look in the output as a whole.
      const output = all.filter((f) => f[1] === 'o').map((f) => String(f[2])).join('');
      return output.includes('got-7') ? all : undefined;
    }, 'the shell frames');
    assert.ok(frames.some((f) => f[1] === 'r' && f[2] === '100x30'), 'the window change is a frame');
    assert.ok(frames.some((f) => f[1] === 'i' && (f[2] as { hidden?: boolean; length?: number }).hidden && (f[2] as { length: number }).length === 7), 'the secret is recorded as its length');
    assert.ok(frames.some((f) => f[1] === 'i' && String(f[2]).startsWith('stty size')), 'echoed input is recorded as typed');
    // Shell lines as commands, rebuilt from their keys: the edit replayed, the completion marked uncertain.
    const commands = events('ssh.command').map((c) => ({ line: c['line'], uncertain: c['uncertain'] }));
    assert.ok(commands.some((c) => c.line === 'stty size' && c.uncertain === undefined), JSON.stringify(commands));
    assert.ok(commands.some((c) => c.line === 'echo edited-line ok' && c.uncertain === undefined), JSON.stringify(commands));
    assert.ok(commands.some((c) => c.line === 'echo tab-done' && JSON.stringify(c.uncertain) === '["completion"]'), JSON.stringify(commands));
    assert.ok(!commands.some((c) => String(c.line).includes('hunter2')), 'the secret typed with echo off is no command');
    const log = allPayloads();
    assert.ok(!log.includes('hunter2'), 'the secret is nowhere in the log');
    assert.ok(!log.includes(CARD), 'the card number is nowhere in the log');

    // The export bundle carries the terminal as an asciicast v2 file, listed in its signed manifest.
    const job = gw.services.audit!.startExport({}, { subject: approver.subject, name: approver.name });
    const done = await eventually(() => {
      const j = gw.services.audit!.job(job.id);
      return j && j.state !== 'running' ? j : undefined;
    }, 'the export', 30_000);
    assert.equal(done.state, 'done', JSON.stringify(done));
    const out = join(work, 'bundle');
    mkdirSync(out);
    assert.equal((await run('tar', ['-xzf', done.file, '-C', out])).code, 0);
    const casts = readdirSync(out).filter((f) => f.endsWith('.cast'));
    const castOutput = (c: string) => c.trim().split('\n').slice(1).map((l) => JSON.parse(l) as unknown[]).filter((l) => l[1] === 'o').map((l) => String(l[2])).join('');
    const cast = casts.map((f) => readFileSync(join(out, f), 'utf8')).find((c) => castOutput(c).includes('got-7'));
    assert.ok(cast, `a cast with the session among ${casts.join(', ')}`);
    const [header, ...lines] = cast.trim().split('\n').map((l) => JSON.parse(l) as unknown);
    assert.deepEqual([(header as { version: number }).version, (header as { width: number }).width, (header as { height: number }).height], [2, 80, 24]);
    assert.ok(lines.every((l) => Array.isArray(l) && typeof l[0] === 'number' && ['o', 'i', 'r'].includes(l[1] as string)));
    assert.ok(!cast.includes('hunter2') && !cast.includes(CARD));
    const manifest = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8')) as { files: Record<string, unknown> };
    for (const f of casts) assert.ok(manifest.files[f], `${f} is in the manifest`);
    assert.equal(verifyBundle(done.file).ok, true);
  });

  it('ends a live session when its key is revoked, telling the client why', async () => {
    const { key, record } = gw.services.keys.create({ name: 'temp', groups: ['dev'] });
    const client = new ssh2.Client();
    await new Promise<void>((resolve, reject) => {
      client.once('ready', resolve).once('error', reject);
      client.connect({ host: '127.0.0.1', port: Number(port), username: 'temp', password: key });
    });
    const ch = await new Promise<ssh2.ClientChannel>((resolve, reject) => client.exec('cat', (e, c) => (e ? reject(e) : resolve(c))));
    let stderr = '';
    ch.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exit = new Promise<number>((resolve) => ch.once('exit', (code: number) => resolve(code)));
    ch.resume();
    await new Promise((r) => setTimeout(r, 200));
    gw.services.keys.revoke(record.id);
    assert.equal(await exit, 126);
    assert.match(stderr, /custody: terminating connection: the API key this session was opened with was revoked/);
    client.end();
    const end = await eventually(() => (gw.services.store.db.prepare("SELECT payload FROM events WHERE kind = 'session.end'").all() as { payload: string }[]).map((r) => JSON.parse(r.payload) as { reason: string }).find((p) => /revoked/.test(p.reason)), 'the session end');
    assert.match(end.reason, /revoked/);
  });

  it('connects only to the host key a connection pins', async () => {
    const connection = Config.parse({ connections: [{ name: 'pinned', kind: 'ssh', upstream: `ssh://${sshd.user}@127.0.0.1:${sshd.port}`, secret: { value: sshd.clientKey }, listen: '127.0.0.1:0', hostKey: sshd.hostKey }] }).connections[0]!;
    const known = new KnownHosts(dataDir);
    const ok = await connectSshUpstream(sshUpstreamTarget(connection), known);
    assert.equal(ok.hostKey, sshd.hostKey);
    assert.equal(ok.learned, false);
    ok.client.end();
    const wrong = sshUpstreamTarget({ ...connection, hostKey: `SHA256:${'A'.repeat(43)}` });
    await assert.rejects(connectSshUpstream(wrong, known), (err: Error & { phase?: string }) => err.phase === 'host_key' && /but the connection's hostKey is SHA256:A{43}/.test(err.message));
  });

  it('refuses an upstream whose host key changed, with a clear error', async () => {
    await sshd.rekey();
    const r = await ssh('echo hello');
    assert.equal(r.code, 126);
    assert.match(r.stderr, /host key of 127\.0\.0\.1:\d+ changed: it presented SHA256:\S+, but the key first seen/);
    const err = await eventually(() => events('ssh.error').find((e) => e['phase'] === 'host_key'), 'the error');
    assert.match(String(err['message']), /changed/);
  });
});
