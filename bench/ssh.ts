/**
 * SSH file throughput, in one run with alternating targets (docs/BENCHMARKS.md, "SSH"): OpenSSH's
 * `scp` (SFTP mode) uploading one file of `--mib` MiB to a local sshd (test/support/sshd.ts)
 *
 *   direct   straight to the sshd, with its key
 *   gateway  through Custody's ssh listener: cst_ key login, the SFTP subsystem relayed packet by
 *            packet, every write decided by a path rule, hashed and recorded
 *
 * Each round runs both; rounds repeat the alternation so drift on the shared machine hits both
 * alike. Reported: MB/s per target per round, the medians and gateway / direct (bar: ≥ 0.5).
 * Not yet measured: the bare ssh2 pass-through baseline and keystroke echo latency (docs/SSH.md).
 *
 *   node --import tsx bench/ssh.ts [--mib 200] [--rounds 3]   (npm run bench -- ssh)
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Config } from '../shared/config';
import { Gateway } from '../proxy/gateway';
import { silentLogger } from '../proxy/log';
import { startSshd } from '../test/support/sshd';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

const MIB = arg('mib', 200);
const ROUNDS = arg('rounds', 3);
const OPTS = ['-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR'];

function run(cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => execFile(cmd, args, { timeout: 600_000 }, (err, _out, stderr) => (err ? reject(new Error(`${cmd}: ${stderr || err.message}`)) : resolve())));
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

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
    policies: [{ name: 'no-etc', match: { ssh: ['file_transfer'], paths: ['/etc/*'] }, action: 'deny' }],
  });
  const gw = await Gateway.start({ config, dataDir: join(dir, 'data'), log: silentLogger, bootstrapKey: false });
  const key = gw.services.keys.create({ name: 'bench', groups: ['dev'] }).key;
  const port = gw.address('ssh:box').split(':')[1]!;
  const targets: Record<string, (dest: string) => Promise<void>> = {
    direct: (dest) => run('scp', ['-i', keyFile, '-P', String(sshd.port), ...OPTS, file, `${sshd.user}@127.0.0.1:${dest}`]),
    gateway: (dest) => run('sshpass', ['-p', key, 'scp', '-P', port, ...OPTS, file, `bench@127.0.0.1:${dest}`]),
  };
  const rates: Record<string, number[]> = { direct: [], gateway: [] };
  try {
    for (let round = 1; round <= ROUNDS; round++) {
      for (const [name, copy] of Object.entries(targets)) {
        const dest = join(dir, `out-${name}.bin`);
        const t0 = performance.now();
        await copy(dest);
        const s = (performance.now() - t0) / 1000;
        if (statSync(dest).size !== MIB * 1024 * 1024) throw new Error(`${name}: the copy is incomplete`);
        rmSync(dest);
        const rate = MIB * 1.048576 / s;
        rates[name]!.push(rate);
        console.log(`round ${round} ${name.padEnd(8)} ${rate.toFixed(1)} MB/s (${s.toFixed(2)} s)`);
      }
    }
    const d = median(rates['direct']!);
    const g = median(rates['gateway']!);
    console.log(`\nscp ${MIB} MiB, median of ${ROUNDS}: direct ${d.toFixed(1)} MB/s, gateway ${g.toFixed(1)} MB/s, gateway / direct ${(g / d).toFixed(2)} (bar ≥ 0.5)`);
  } finally {
    await gw.stop();
    await sshd.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
