/**
 * A gateway in this process in front of a real sshd, with one ssh connection `box` on which group
 * `dev` may run `echo` and nothing else, for the tests of SSH keys (registered over the API, from
 * the console, by `custody ssh-login`). Clients are run as child processes, never synchronously:
 * the gateway must keep answering.
 */
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Config, type ConfigInput } from '../../shared/config';
import { Gateway } from '../../proxy/gateway';
import { silentLogger } from '../../proxy/log';
import { startSshd, type Sshd } from './sshd';

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** OpenSSH's client with the identity given and nothing else: no agent, no password, no known_hosts. */
export const SSH_KEY_ONLY = ['-F', '/dev/null', '-o', 'IdentitiesOnly=yes', '-o', 'IdentityAgent=none', '-o', 'BatchMode=yes', '-o', 'PreferredAuthentications=publickey', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR'];

/** A new ed25519 key pair `DIR/NAME` (comment `NAME@laptop`): the private key's file, the public key line, its fingerprint. */
export function sshKeygen(dir: string, name: string): { file: string; pub: string; fingerprint: string } {
  const file = join(dir, name);
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `${name}@laptop`, '-f', file]);
  return { file, pub: readFileSync(`${file}.pub`, 'utf8'), fingerprint: execFileSync('ssh-keygen', ['-l', '-f', `${file}.pub`], { encoding: 'utf8' }).split(' ')[1]! };
}

/** Runs a program to its end; its exit code (-1 when killed), stdout and stderr. */
export function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<Run> {
  return new Promise((resolve) => {
    execFile(cmd, args, { encoding: 'utf8', timeout: 60_000, env }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

export interface SshBox {
  sshd: Sshd;
  gw: Gateway;
  /** `http://127.0.0.1:<port>` of the control plane. */
  control: string;
  /** The ssh listener's port. */
  port: number;
  /** `ssh -i IDENTITY -p PORT me@127.0.0.1 COMMAND` through the gateway. */
  ssh(identity: string, command: string): Promise<Run>;
  /** Recorded events of one kind, oldest first. */
  events(kind: string): { actor: string; payload: Record<string, unknown> }[];
  stop(): Promise<void>;
}

/** The ssh connection `box` to `sshd`, on which group `dev` may run `echo` and nothing else (as config input). */
export function boxConfig(sshd: Sshd): Pick<ConfigInput, 'connections' | 'policies'> {
  return {
    connections: [{ name: 'box', kind: 'ssh', upstream: `ssh://${sshd.user}@127.0.0.1:${sshd.port}`, secret: { value: sshd.clientKey }, listen: '127.0.0.1:0' }],
    policies: [
      { name: 'dev-echo', match: { connections: ['box'], groups: ['dev'], commands: ['echo *'] }, action: 'allow' },
      { name: 'nothing-else', match: { connections: ['box'] }, action: 'deny', reason: 'only dev may echo here' },
    ],
  };
}

/** `ssh -i IDENTITY -p PORT me@127.0.0.1 COMMAND` through the `box` listener of `gw`. */
export function sshThrough(gw: Gateway, identity: string, command: string): Promise<Run> {
  const port = gw.address('ssh:box').split(':').pop()!;
  return run('ssh', [...SSH_KEY_ONLY, '-i', identity, '-p', port, 'me@127.0.0.1', command]);
}

export async function startSshBox(extra: Partial<ConfigInput> = {}): Promise<SshBox> {
  const sshd = await startSshd();
  const dataDir = mkdtempSync(join(tmpdir(), 'custody-ssh-box-'));
  const config = Config.parse({ listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' }, ...boxConfig(sshd), ...extra });
  const gw = await Gateway.start({ config, dataDir, log: silentLogger });
  const port = Number(gw.address('ssh:box').split(':').pop());
  return {
    sshd,
    gw,
    control: `http://${gw.address('control')}`,
    port,
    ssh: (identity, command) => sshThrough(gw, identity, command),
    events(kind) {
      gw.services.store.settle();
      return (gw.services.store.db.prepare('SELECT actor, payload FROM events WHERE kind = ? ORDER BY seq').all(kind) as { actor: string; payload: string }[]).map((r) => ({ actor: r.actor, payload: JSON.parse(r.payload) as Record<string, unknown> }));
    },
    async stop() {
      await gw.stop();
      await sshd.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
