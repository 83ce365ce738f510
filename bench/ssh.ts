/**
 * SSH file throughput, in one run with alternating targets (docs/BENCHMARKS.md, "SSH"): OpenSSH's
 * `scp` (SFTP mode) uploading one file of `--mib` MiB to a local sshd (test/support/sshd.ts)
 *
 *   direct   straight to the sshd, with its key
 *   bare     through a bare ssh2 pass-through (bench/ssh-bare.ts): any password, the SFTP channel
 *            piped as raw bytes to one ssh2 client connection, nothing decided, parsed or recorded
 *            — the runtime's own limit, the fair baseline for the gateway
 *   gateway  through Custody's ssh listener: cst_ key login, the SFTP subsystem relayed packet by
 *            packet, every write decided by a path rule, hashed and recorded
 *
 * Each round runs all three; rounds repeat the alternation so drift on the shared machine hits all
 * alike. Reported: MB/s per target per round (and for bare and gateway the CPU time this process,
 * which runs both relays, spent on the copy), the medians, gateway / direct (bar: ≥ 0.5) and
 * gateway / bare.
 *
 * Then keystroke echo latency in an interactive shell (a pty, `cat > /dev/null` reading it): one
 * character is typed, and the time until the pty's echo of it comes back is measured, `--keys`
 * times per target per round, alternating direct (ssh2's client straight to the sshd, with its key),
 * the bare pass-through, and the gateway (cst_ key; the shell recorded as frames, a card-number
 * masking rule on the connection). Reported: p50 and p99 per target and the gateway's added p50 /
 * p99 over direct (bar: p50 ≤ +2 ms) and over bare. `--mib 0` skips the copy.
 *
 *   node --import tsx bench/ssh.ts [--mib 200] [--rounds 3] [--keys 300] [--targets direct,bare,gateway] [--cipher NAME]   (npm run bench -- ssh)
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import ssh2 from 'ssh2';
import { Config } from '../shared/config';
import { Gateway } from '../proxy/gateway';
import { silentLogger } from '../proxy/log';
import { startSshd } from '../test/support/sshd';
import { startBarePassThrough } from './ssh-bare';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

const MIB = arg('mib', 200);
const ROUNDS = arg('rounds', 3);
const KEYS = arg('keys', 300);
/** `--targets gateway` (comma-separated) runs only those, e.g. under `node --cpu-prof`. */
const TARGETS = process.argv.includes('--targets') ? process.argv[process.argv.indexOf('--targets') + 1]!.split(',') : ['direct', 'bare', 'gateway'];
/** `--cipher aes128-gcm@openssh.com`: scp asks for this cipher on every target (OpenSSH's own first choice, chacha20-poly1305, otherwise). */
const CIPHER = process.argv.includes('--cipher') ? process.argv[process.argv.indexOf('--cipher') + 1]! : undefined;
const OPTS = [...(CIPHER ? ['-c', CIPHER] : []), '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR'];

function run(cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => execFile(cmd, args, { timeout: 600_000 }, (err, _out, stderr) => (err ? reject(new Error(`${cmd}: exit ${String(err.code)} ${stderr || err.message}`)) : resolve())));
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const percentile = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))]!;

function sshClient(opts: { port: number; username: string; password?: string; privateKey?: string }): Promise<ssh2.Client> {
  const client = new ssh2.Client();
  return new Promise((resolve, reject) => {
    client.once('ready', () => {
      client.setNoDelay(true);
      resolve(client);
    }).once('error', reject);
    client.connect({ host: '127.0.0.1', ...opts });
  });
}

/**
 * Types `n` single characters into a shell whose pty echoes them (`cat > /dev/null` reads the
 * line, so nothing but the echo comes back) and returns each one's echo time in ms.
 */
async function keystrokes(client: ssh2.Client, n: number): Promise<number[]> {
  const sh = await new Promise<ssh2.ClientChannel>((resolve, reject) => client.shell({ term: 'xterm', cols: 120, rows: 40 }, (e, s) => (e ? reject(e) : resolve(s))));
  let screen = '';
  let waiting: ((chunk: string) => void) | undefined;
  sh.on('data', (d: Buffer) => {
    const text = d.toString('utf8');
    screen += text;
    waiting?.(text);
  });
  const until = async (re: RegExp) => {
    for (let i = 0; i < 400 && !re.test(screen); i++) await new Promise((r) => setTimeout(r, 25));
    if (!re.test(screen)) throw new Error(`the shell did not show ${re}: ${JSON.stringify(screen.slice(-200))}`);
  };
  await until(/[$#] $/);
  sh.write('cat > /dev/null\r');
  await until(/cat > \/dev\/null\r\n/);
  await new Promise((r) => setTimeout(r, 200));
  const samples: number[] = [];
  for (let i = 0; i < n; i++) {
    // A line end now and then, so the line never fills; those are not timed.
    if (i > 0 && i % 64 === 0) {
      sh.write('\r');
      await new Promise((r) => setTimeout(r, 20));
    }
    const t0 = performance.now();
    await new Promise<void>((resolve) => {
      waiting = (chunk) => {
        if (chunk.includes('k')) {
          waiting = undefined;
          resolve();
        }
      };
      sh.write('k');
    });
    samples.push(performance.now() - t0);
    await new Promise((r) => setTimeout(r, 2));
  }
  sh.write('\x03exit\r');
  await new Promise((r) => {
    sh.once('close', r);
    setTimeout(r, 2000).unref();
  });
  client.end();
  return samples;
}

async function main(): Promise<void> {
  const sshd = await startSshd();
  const dir = mkdtempSync(join(tmpdir(), 'custody-bench-ssh-'));
  const keyFile = join(dir, 'client_key');
  writeFileSync(keyFile, sshd.clientKey, { mode: 0o600 });
  const file = join(dir, 'payload.bin');
  writeFileSync(file, randomBytes(MIB * 1024 * 1024));
  const config = Config.parse({
    listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
    connections: [{ name: 'box', kind: 'ssh', upstream: `ssh://${sshd.user}@127.0.0.1:${sshd.port}`, secret: { value: sshd.clientKey }, listen: '127.0.0.1:0' }],
    masking: [{ id: 'cards', detectors: ['credit_card'], scope: ['client', 'log'] }],
    policies: [{ name: 'no-etc', match: { ssh: ['file_transfer'], paths: ['/etc/*'] }, action: 'deny' }],
  });
  const gw = await Gateway.start({ config, dataDir: join(dir, 'data'), log: silentLogger, bootstrapKey: false });
  const key = gw.services.keys.create({ name: 'bench', groups: ['dev'] }).key;
  const port = gw.address('ssh:box').split(':')[1]!;
  const bare = await startBarePassThrough({ port: sshd.port, username: sshd.user, privateKey: sshd.clientKey });
  const targets: Record<string, (dest: string) => Promise<void>> = {
    direct: (dest) => run('scp', ['-i', keyFile, '-P', String(sshd.port), ...OPTS, file, `${sshd.user}@127.0.0.1:${dest}`]),
    bare: (dest) => run('sshpass', ['-p', 'anything', 'scp', '-P', String(bare.port), ...OPTS, file, `bench@127.0.0.1:${dest}`]),
    gateway: (dest) => run('sshpass', ['-p', key, 'scp', '-P', port, ...OPTS, file, `bench@127.0.0.1:${dest}`]),
  };
  const rates: Record<string, number[]> = { direct: [], bare: [], gateway: [] };
  try {
    for (let round = 1; round <= ROUNDS && MIB > 0; round++) {
      for (const [name, copy] of Object.entries(targets)) {
        if (!TARGETS.includes(name)) continue;
        const dest = join(dir, `out-${name}.bin`);
        let t0 = performance.now();
        let cpu0 = process.cpuUsage();
        try {
          await copy(dest);
        } catch (err) {
          // Said, not hidden: a failed copy is retried once, and the retry is what is timed.
          console.log(`round ${round} ${name.padEnd(8)} failed (${(err as Error).message.trim().split('\n').pop()}), retried`);
          t0 = performance.now();
          cpu0 = process.cpuUsage();
          await copy(dest);
        }
        const s = (performance.now() - t0) / 1000;
        const cpu = process.cpuUsage(cpu0);
        const cpuS = (cpu.user + cpu.system) / 1e6;
        if (statSync(dest).size !== MIB * 1024 * 1024) throw new Error(`${name}: the copy is incomplete`);
        rmSync(dest);
        const rate = MIB * 1.048576 / s;
        rates[name]!.push(rate);
        // The relay runs in this process (bare and gateway): its CPU time per copy is steadier than the
        // rate on a shared machine, where others' load stretches the wall clock.
        console.log(`round ${round} ${name.padEnd(8)} ${rate.toFixed(1)} MB/s (${s.toFixed(2)} s)${name === 'direct' ? '' : `, relay CPU ${cpuS.toFixed(2)} s (user ${(cpu.user / 1e6).toFixed(2)}, system ${(cpu.system / 1e6).toFixed(2)})`}`);
      }
    }
    if (MIB > 0 && TARGETS.length === 3) {
      const d = median(rates['direct']!);
      const b = median(rates['bare']!);
      const g = median(rates['gateway']!);
      console.log(
        `\nscp ${MIB} MiB, median of ${ROUNDS}: direct ${d.toFixed(1)} MB/s, bare ${b.toFixed(1)} MB/s, gateway ${g.toFixed(1)} MB/s; gateway / direct ${(g / d).toFixed(2)} (bar ≥ 0.5), gateway / bare ${(g / b).toFixed(2)}, bare / direct ${(b / d).toFixed(2)}\n`,
      );
    }
    const shells: Record<string, () => Promise<ssh2.Client>> = {
      direct: () => sshClient({ port: sshd.port, username: sshd.user, privateKey: sshd.clientKey }),
      bare: () => sshClient({ port: bare.port, username: 'bench', password: 'anything' }),
      gateway: () => sshClient({ port: Number(port), username: 'bench', password: key }),
    };
    const echo: Record<string, number[]> = { direct: [], bare: [], gateway: [] };
    for (let round = 1; round <= ROUNDS && KEYS > 0; round++) {
      for (const [name, open] of Object.entries(shells)) {
        if (!TARGETS.includes(name)) continue;
        const samples = await keystrokes(await open(), KEYS);
        echo[name]!.push(...samples);
        console.log(`round ${round} ${name.padEnd(8)} echo p50 ${percentile(samples, 50).toFixed(2)} ms, p99 ${percentile(samples, 99).toFixed(2)} ms (${samples.length} keys)`);
      }
    }
    if (KEYS > 0 && TARGETS.length === 3) {
      const p = (name: string, q: number) => percentile(echo[name]!, q);
      console.log(
        `\nkeystroke echo, ${echo['direct']!.length} keys per target: direct p50 ${p('direct', 50).toFixed(2)} ms p99 ${p('direct', 99).toFixed(2)} ms; bare p50 ${p('bare', 50).toFixed(2)} ms p99 ${p('bare', 99).toFixed(2)} ms; gateway p50 ${p('gateway', 50).toFixed(2)} ms p99 ${p('gateway', 99).toFixed(2)} ms; ` +
          `gateway added over direct p50 ${(p('gateway', 50) - p('direct', 50)).toFixed(2)} ms, p99 ${(p('gateway', 99) - p('direct', 99)).toFixed(2)} ms (bar: p50 ≤ +2 ms); over bare p50 ${(p('gateway', 50) - p('bare', 50)).toFixed(2)} ms`,
      );
    }
  } finally {
    await bare.close();
    await gw.stop();
    await sshd.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
