// Two things an SSH gateway meets in the field, against a real OpenSSH server:
// - a real sudo password prompt in an interactive shell: the password typed there (echo off) never
//   reaches the log, the journal or the database file, only its length;
// - clients that connect and stall (silent after TCP connect, or stuck part-way through the key
//   exchange): each is dropped after a bounded time, its descriptors are released, and the gateway
//   carries on serving.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import ssh2 from 'ssh2';
import { Config } from '../../shared/config';
import { Gateway } from '../../proxy/gateway';
import { silentLogger } from '../../proxy/log';
import { startSshListener } from '../../proxy/ssh/listener';
import { startSshd, type Sshd } from '../support/sshd';

const SECRET = 'hunter2-sudo-Zq8';

let sshd: Sshd;
let gw: Gateway;
let dataDir: string;
let devKey: string;
let port: number;

async function eventually<T>(f: () => T | undefined | Promise<T | undefined>, what: string, ms = 15_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? filesUnder(p) : [p];
  });
}

const openFds = () => readdirSync('/proc/self/fd').length;

describe('ssh: a sudo password prompt, and clients that stall', () => {
  before(async () => {
    sshd = await startSshd();
    dataDir = mkdtempSync(join(tmpdir(), 'custody-ssh-prompts-'));
    const config = Config.parse({
      listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
      connections: [{ name: 'box', kind: 'ssh', upstream: `ssh://${sshd.user}@127.0.0.1:${sshd.port}`, secret: { value: sshd.clientKey }, listen: '127.0.0.1:0' }],
    });
    gw = await Gateway.start({ config, dataDir, log: silentLogger, bootstrapKey: false });
    port = Number(gw.address('ssh:box').split(':')[1]);
    devKey = gw.services.keys.create({ name: 'dev', groups: ['dev'] }).key;
  });

  after(async () => {
    await gw?.stop();
    await sshd?.close();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  it('keeps a password typed at a real sudo prompt out of the log, the journal and the database file: only its length is recorded', async () => {
    const client = new ssh2.Client();
    await new Promise<void>((resolve, reject) => {
      client.once('ready', resolve).once('error', reject);
      client.connect({ host: '127.0.0.1', port, username: 'dev', password: devKey });
    });
    const sh = await new Promise<ssh2.ClientChannel>((resolve, reject) => client.shell({ term: 'xterm', cols: 200, rows: 30 }, (e, st) => (e ? reject(e) : resolve(st))));
    let screen = '';
    sh.on('data', (d: Buffer) => (screen += d.toString('utf8')));
    const waitFor = (re: RegExp) => eventually(() => (re.test(screen) ? true : undefined), `${re} on screen; so far: ${JSON.stringify(screen.slice(-300))}`);
    await waitFor(/[$#] $/);
    // sudo as an unprivileged user asks for that user's password, with echo off on the pty.
    sh.write("setpriv --reuid=nobody --regid=nogroup --clear-groups sudo -k -p 'Password for sudo: ' true; echo sudo-done-$?\r");
    await waitFor(/Password for sudo: $/);
    sh.write(`${SECRET}\r`);
    await waitFor(/Sorry, try again\.\r?\n.*Password for sudo: $/s);
    sh.write('\x03');
    await waitFor(/sudo-done-1/);
    assert.ok(!screen.includes(SECRET), 'the host did not echo the password');
    sh.write('exit\r');
    await new Promise((r) => sh.once('close', r));
    client.end();

    const frames = await eventually(() => {
      gw.services.store.settle();
      const rows = gw.services.store.db.prepare("SELECT seq FROM events WHERE kind = 'ssh.output' ORDER BY seq").all() as { seq: number }[];
      const all = rows.flatMap((r) => ((gw.services.store.event(r.seq)?.payload as { frames: unknown[][] }).frames ?? []));
      return all.some((f) => f[1] === 'o' && String(f[2]).includes('sudo-done-1')) ? all : undefined;
    }, 'the shell frames');
    const hidden = frames.filter((f) => f[1] === 'i' && typeof f[2] === 'object' && (f[2] as { hidden?: boolean }).hidden);
    assert.ok(hidden.some((f) => (f[2] as { length: number }).length === SECRET.length), `the password is recorded as its length: ${JSON.stringify(hidden)}`);
    assert.ok(frames.some((f) => f[1] === 'i' && String(f[2]).startsWith('setpriv --reuid=nobody')), 'the echoed command line is recorded as typed');
    // Every event, decoded (payloads may be stored deflated), and every file the gateway wrote.
    const count = (gw.services.store.db.prepare('SELECT max(seq) AS n FROM events').get() as { n: number }).n;
    for (let seq = 1; seq <= count; seq++) assert.ok(!JSON.stringify(gw.services.store.event(seq)).includes(SECRET), `event ${seq} holds the password`);
    for (const file of filesUnder(dataDir)) assert.ok(!readFileSync(file).includes(SECRET), `${file} holds the password`);
  });

  it('drops clients that stay silent or stall in the key exchange after a bounded time, releases their descriptors, and carries on', async () => {
    const connection = gw.services.config.connections[0]!;
    const listener = await startSshListener({ connection: { ...connection, listen: '127.0.0.1:0' }, services: gw.services, dataDir, loginTimeoutMs: 1500 });
    try {
      const lport = Number(listener.address.split(':').pop());
      const baseline = openFds();
      const stalled: { socket: Socket; closedAt?: number; kind: string }[] = [];
      const t0 = Date.now();
      const open = (kind: string, send?: (s: Socket) => void) =>
        new Promise<void>((resolve) => {
          const socket = connect(lport, '127.0.0.1', () => {
            send?.(socket);
            resolve();
          });
          const entry = { socket, kind } as (typeof stalled)[number];
          // The client never closes its end: only the gateway can end these connections.
          socket.on('end', () => undefined);
          socket.on('close', () => (entry.closedAt = Date.now()));
          socket.on('error', () => undefined);
          socket.resume();
          stalled.push(entry);
        });
      for (let i = 0; i < 10; i++) await open('silent');
      // A real SSH banner, then the first bytes of a KEXINIT packet, and nothing more.
      for (let i = 0; i < 10; i++) await open('mid-kex', (s) => s.write(Buffer.concat([Buffer.from('SSH-2.0-OpenSSH_9.2p1 stall\r\n'), Buffer.from([0, 0, 0x05, 0xdc, 0x0a, 0x14, 1, 2, 3])])));
      assert.ok(openFds() >= baseline + 20, 'the connections are open');
      await eventually(() => (stalled.every((c) => c.closedAt !== undefined) ? true : undefined), `every stalled client to be dropped (${stalled.filter((c) => c.closedAt === undefined).map((c) => c.kind).join(', ')} still open)`, 20_000);
      const slowest = Math.max(...stalled.map((c) => c.closedAt! - t0));
      assert.ok(slowest < 1500 + 1000 + 8000, `dropped within the timeout and its grace (slowest ${slowest} ms)`);
      for (const c of stalled) c.socket.destroy();
      // Both ends are gone: the process holds no more descriptors than before.
      await eventually(() => (openFds() <= baseline + 2 ? true : undefined), `descriptors back to ${baseline} (now ${openFds()})`);
      assert.equal(listener.sessions, 0);
    } finally {
      await listener.close();
    }
    // The gateway's own listener still serves.
    const r = await new Promise<{ code: number; stdout: string }>((resolve) =>
      execFile('sshpass', ['-p', devKey, 'ssh', '-p', String(port), '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', 'dev@127.0.0.1', 'echo still-serving'], { encoding: 'utf8', timeout: 30_000 }, (err, stdout) =>
        resolve({ code: err ? 1 : 0, stdout }),
      ),
    );
    assert.equal(r.stdout, 'still-serving\n');
  });
});
