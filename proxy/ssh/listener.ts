/**
 * One listener per `ssh` connection (config `listen`): an SSH server (ssh2) that hands each client
 * connection to an SshProxySession. The gateway's own host key (Ed25519) is made once and kept in
 * the data dir, protected like the other keys at rest, so clients can pin it.
 */
import type { AddressInfo } from 'node:net';
import ssh2 from 'ssh2';
import type { Connection } from '../../shared/config';
import { listen, splitHostPort } from '../net';
import { SshKeyStore } from '../identity/ssh-keys';
import type { GatewayServices } from '../services';
import { type SshListenerContext, SshProxySession } from './session';
import { fingerprint, KnownHosts, sshUpstreamTarget } from './upstream';

export interface SshListenerOptions {
  connection: Connection;
  services: GatewayServices;
  dataDir: string;
  connectTimeoutMs?: number;
}

export interface SshListener {
  name: string;
  address: string;
  /** The gateway's host key fingerprint (`SHA256:…`), for clients' known_hosts. */
  hostKey: string;
  readonly sessions: number;
  close(): Promise<void>;
}

const { Server, utils: sshUtils } = ssh2;

/** How long a client may take from TCP connect to a finished login. */
const LOGIN_TIMEOUT_MS = 30_000;

export async function startSshListener(opts: SshListenerOptions): Promise<SshListener> {
  const { connection, services } = opts;
  if (!connection.listen) throw new Error(`connection ${connection.name}: an ssh connection needs listen`);
  const hostKey = services.keyFile('ssh-host-ed25519.key', () => Buffer.from(sshUtils.generateKeyPairSync('ed25519').private));
  const parsed = sshUtils.parseKey(hostKey);
  if (parsed instanceof Error) throw new Error(`the gateway's SSH host key (ssh-host-ed25519.key in the data dir) does not load: ${parsed.message}`);
  const ctx: SshListenerContext = {
    connection,
    target: sshUpstreamTarget(connection, opts.connectTimeoutMs),
    knownHosts: new KnownHosts(opts.dataDir),
    sshKeys: new SshKeyStore(services.store.db, (sql, params) => services.store.readAsync(sql, params)),
    services,
    recordOutputBytes: services.config.limits.recordOutputBytes,
    recordFileBytes: services.config.limits.recordFileBytes,
    sessions: new Set(),
  };
  const server = new Server({ hostKeys: [hostKey], ident: 'Custody' }, (client, info) => {
    // A client that does not finish its login in time is let go.
    const timer = setTimeout(() => client.end(), LOGIN_TIMEOUT_MS);
    timer.unref();
    client.once('ready', () => clearTimeout(timer));
    client.once('close', () => clearTimeout(timer));
    try {
      new SshProxySession(client, info, ctx);
    } catch (err) {
      services.log.error(`ssh ${connection.name}: cannot start a session: ${(err as Error).message}`);
      client.end();
    }
  });
  // Garbage before the banner, a broken key exchange: that client's socket closes, the listener stays.
  server.on('error', (err: Error) => services.log.warn(`ssh ${connection.name}: ${err.message}`));
  const [host, port] = splitHostPort(connection.listen);
  await listen(server, host, port);
  const addr = server.address() as AddressInfo;
  const address = `${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}`;
  const hostKeyFingerprint = fingerprint(parsed.getPublicSSH());
  services.log.info(`ssh ${connection.name} listening on ${address} (host key ${hostKeyFingerprint})`);
  return {
    name: `ssh:${connection.name}`,
    address,
    hostKey: hostKeyFingerprint,
    get sessions() {
      return ctx.sessions.size;
    },
    close: async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      const sessions = [...ctx.sessions];
      for (const s of sessions) s.shutdown();
      // Each session records its end before the store closes; a client that never answers is cut off.
      const cutoff = new Promise<void>((resolve) => setTimeout(resolve, 3000).unref());
      await Promise.race([Promise.all([closed, ...sessions.map((s) => s.finished)]), cutoff]);
    },
  };
}
