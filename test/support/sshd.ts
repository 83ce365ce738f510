/**
 * A real OpenSSH server for tests (Debian's openssh-server, installed by scripts/system-deps.sh):
 * its own config, host key and authorized key in a temp dir, listening on a free loopback port,
 * started as `/usr/sbin/sshd -D -e -f CONFIG`. The gateway logs in to it with `clientKey`.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { mkdtempSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { freePort } from './ports';

export const SSHD = '/usr/sbin/sshd';

export interface Sshd {
  port: number;
  dir: string;
  user: string;
  /** The private key the gateway uses (OpenSSH format). */
  clientKey: string;
  /** The server's host key fingerprint, as `ssh-keygen -l` prints it. */
  hostKey: string;
  /** Makes a new host key and restarts the server with it (a re-keyed or impersonated host). */
  rekey(): Promise<void>;
  close(): Promise<void>;
}

function keygen(file: string): void {
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', file]);
}

function fingerprintOf(pub: string): string {
  return execFileSync('ssh-keygen', ['-l', '-f', pub], { encoding: 'utf8' }).split(' ')[1]!;
}

export async function startSshd(): Promise<Sshd> {
  const dir = mkdtempSync(join(tmpdir(), 'custody-sshd-'));
  mkdirSync('/run/sshd', { recursive: true });
  const port = await freePort();
  keygen(join(dir, 'host_ed25519'));
  keygen(join(dir, 'client_ed25519'));
  writeFileSync(join(dir, 'authorized_keys'), readFileSync(join(dir, 'client_ed25519.pub')));
  const config = join(dir, 'sshd_config');
  writeFileSync(
    config,
    [
      `Port ${port}`,
      'ListenAddress 127.0.0.1',
      `HostKey ${join(dir, 'host_ed25519')}`,
      `PidFile ${join(dir, 'sshd.pid')}`,
      `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'PubkeyAuthentication yes',
      'PermitRootLogin prohibit-password',
      'StrictModes no',
      'UsePAM no',
      'AllowTcpForwarding yes',
      'AcceptEnv LANG LC_*',
      'Subsystem sftp internal-sftp',
      'LogLevel ERROR',
      '',
    ].join('\n'),
  );
  let proc: ChildProcess | undefined;
  const start = async () => {
    proc = spawn(SSHD, ['-D', '-e', '-f', config], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    for (let i = 0; i < 100; i++) {
      if (proc.exitCode !== null) throw new Error(`sshd exited: ${stderr}`);
      const up = await new Promise<boolean>((resolve) => {
        const s = connect(port, '127.0.0.1', () => {
          s.destroy();
          resolve(true);
        });
        s.on('error', () => resolve(false));
      });
      if (up) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`sshd did not start listening: ${stderr}`);
  };
  const stop = async () => {
    if (proc && proc.exitCode === null) {
      const exited = new Promise((r) => proc!.once('exit', r));
      proc.kill('SIGTERM');
      await exited;
    }
  };
  await start();
  const sshd: Sshd = {
    port,
    dir,
    user: userInfo().username,
    clientKey: readFileSync(join(dir, 'client_ed25519'), 'utf8'),
    hostKey: fingerprintOf(join(dir, 'host_ed25519.pub')),
    async rekey() {
      await stop();
      rmSync(join(dir, 'host_ed25519'));
      rmSync(join(dir, 'host_ed25519.pub'));
      keygen(join(dir, 'host_ed25519'));
      sshd.hostKey = fingerprintOf(join(dir, 'host_ed25519.pub'));
      await start();
    },
    async close() {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return sshd;
}
