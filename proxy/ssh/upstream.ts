/**
 * The gateway's side of an SSH connection to the upstream host: the target read from the
 * connection (`ssh://user@host:port`, `secret` as a private key or a password), the host key check
 * (the `hostKey` pin, else the first key seen, recorded in the data dir and pinned from then on),
 * and the connect itself through ssh2's client.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import ssh2, { type Client } from 'ssh2';
import type { Connection } from '../../shared/config';
import { ConfigError, readSecret } from '../config';

// ssh2 is CommonJS: its classes come from the default export.
const { Client: SshClient, utils: sshUtils } = ssh2;

export interface SshUpstreamTarget {
  connection: string;
  host: string;
  port: number;
  user: string;
  /** The upstream credential; never sent to the client, never recorded. */
  auth: { privateKey: string } | { password: string } | Record<string, never>;
  /** `hostKey` from the config, if pinned there. */
  pinned?: string;
  connectTimeoutMs: number;
}

/** Reads `ssh://user@host:port` and the secret. Throws ConfigError naming the connection. */
export function sshUpstreamTarget(connection: Connection, connectTimeoutMs = 10_000): SshUpstreamTarget {
  let url: URL;
  try {
    url = new URL(connection.upstream);
  } catch {
    throw new ConfigError(`connection ${connection.name}: upstream is not a URL such as ssh://deploy@10.0.0.5:22`);
  }
  const user = decodeURIComponent(url.username);
  if (!user) throw new ConfigError(`connection ${connection.name}: the ssh upstream needs the login user (ssh://user@host)`);
  const secret = readSecret(connection.secret, `connection ${connection.name}`);
  let auth: SshUpstreamTarget['auth'] = {};
  if (secret !== undefined) {
    if (/-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----/.test(secret)) {
      const parsed = sshUtils.parseKey(secret.endsWith('\n') ? secret : `${secret}\n`);
      if (parsed instanceof Error) throw new ConfigError(`connection ${connection.name}: the secret looks like a private key but does not load: ${parsed.message}`);
      auth = { privateKey: secret.endsWith('\n') ? secret : `${secret}\n` };
    } else auth = { password: secret };
  }
  return {
    connection: connection.name,
    host: url.hostname.replace(/^\[|\]$/g, ''),
    port: Number(url.port || 22),
    user,
    auth,
    pinned: connection.hostKey,
    connectTimeoutMs,
  };
}

/** `SHA256:…` as `ssh-keygen -l` prints it: unpadded base64 of the SHA-256 of the key blob. */
export function fingerprint(keyBlob: Buffer): string {
  return `SHA256:${createHash('sha256').update(keyBlob).digest('base64').replace(/=+$/, '')}`;
}

/**
 * Host keys first seen per connection and address, in `<dataDir>/ssh-known-hosts.json`. A key is
 * recorded once; a later different key is refused until an admin pins the new one (`hostKey`) or
 * removes the entry.
 */
export class KnownHosts {
  private readonly file: string;

  constructor(dataDir: string) {
    this.file = join(dataDir, 'ssh-known-hosts.json');
  }

  private read(): Record<string, string> {
    if (!existsSync(this.file)) return {};
    try {
      return JSON.parse(readFileSync(this.file, 'utf8')) as Record<string, string>;
    } catch (err) {
      // A damaged file cannot vouch for any host: refuse rather than re-learn keys.
      throw new Error(`${this.file} cannot be read (${(err as Error).message}); fix or remove it to learn the hosts' keys again`);
    }
  }

  get(key: string): string | undefined {
    return this.read()[key];
  }

  /** Records the first key seen; returns the key already recorded when there is one. */
  remember(key: string, fp: string): string | undefined {
    const all = this.read();
    if (all[key]) return all[key];
    all[key] = fp;
    const tmp = `${this.file}.tmp`;
    writeFileSync(tmp, `${JSON.stringify(all, null, 2)}\n`, { mode: 0o600 });
    renameSync(tmp, this.file);
    return undefined;
  }
}

export class SshUpstreamError extends Error {
  constructor(
    message: string,
    readonly phase: 'connect' | 'host_key' | 'auth',
  ) {
    super(message);
    this.name = 'SshUpstreamError';
  }
}

export interface UpstreamConnected {
  client: Client;
  hostKey: string;
  /** The key was seen for the first time and is now pinned. */
  learned: boolean;
}

/** Connects and authenticates to the upstream; rejects with SshUpstreamError saying why not. */
export function connectSshUpstream(t: SshUpstreamTarget, knownHosts: KnownHosts): Promise<UpstreamConnected> {
  return new Promise((resolve, reject) => {
    const client = new SshClient();
    let seen: string | undefined;
    let learned = false;
    let refusal: SshUpstreamError | undefined;
    const where = `${t.host}:${t.port}`;
    const entry = `${t.connection} ${where}`;
    client.once('ready', () => {
      // Keystrokes go out as they are typed (as OpenSSH does for interactive sessions), not batched by Nagle.
      client.setNoDelay(true);
      resolve({ client, hostKey: seen!, learned });
    });
    client.once('error', (err: Error & { level?: string }) => {
      client.end();
      if (refusal) return reject(refusal);
      const phase = err.level === 'client-authentication' ? 'auth' : 'connect';
      const why = phase === 'auth' ? `the upstream refused the gateway's credential for ${t.user} (${err.message})` : `cannot connect to ${where}: ${err.message}`;
      reject(new SshUpstreamError(`upstream ${t.connection}: ${why}`, phase));
    });
    client.connect({
      host: t.host,
      port: t.port,
      username: t.user,
      ...t.auth,
      readyTimeout: t.connectTimeoutMs,
      // Keyboard-interactive carries the password too, for servers that only offer that.
      tryKeyboard: 'password' in t.auth,
      hostVerifier: (key: Buffer) => {
        seen = fingerprint(key);
        const expected = t.pinned ?? knownHosts.get(entry);
        if (expected === undefined) {
          const raced = knownHosts.remember(entry, seen);
          if (raced === undefined || raced === seen) {
            learned = raced === undefined;
            return true;
          }
        } else if (expected === seen) return true;
        const pinnedBy = t.pinned ? 'the connection\'s hostKey' : 'the key first seen (ssh-known-hosts.json in the data dir)';
        refusal = new SshUpstreamError(
          `upstream ${t.connection}: the host key of ${where} changed: it presented ${seen}, but ${pinnedBy} is ${expected ?? knownHosts.get(entry)}; if the host was re-keyed, set hostKey to the new fingerprint`,
          'host_key',
        );
        return false;
      },
    });
  });
}
