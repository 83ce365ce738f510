/**
 * One listener per `ssh` connection (config `listen`): an SSH server (ssh2) that hands each client
 * connection to an SshProxySession. The gateway's own host key (Ed25519) is made once and kept in
 * the data dir, protected like the other keys at rest, so clients can pin it.
 */
import type { AddressInfo, Server as NetServer, Socket } from 'node:net';
import ssh2 from 'ssh2';
import type { Connection } from '../../shared/config';
import { listen, splitHostPort } from '../net';
import { SshKeyStore } from '../identity/ssh-keys';
import type { GatewayServices } from '../services';
import { generateEd25519 } from './keygen';
import { type SshListenerContext, SshProxySession } from './session';
import { fingerprint, KnownHosts, sshUpstreamTarget } from './upstream';

export interface SshListenerOptions {
  connection: Connection;
  services: GatewayServices;
  dataDir: string;
  connectTimeoutMs?: number;
  /** How long a client may take from TCP connect to a finished login (default 30 s). */
  loginTimeoutMs?: number;
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
/** After the login timeout, how long the client has to close its end before its socket is destroyed. */
const LOGIN_GRACE_MS = 1000;

export async function startSshListener(opts: SshListenerOptions): Promise<SshListener> {
  const { connection, services } = opts;
  if (!connection.listen) throw new Error(`connection ${connection.name}: an ssh connection needs listen`);
  const hostKey = services.keyFile('ssh-host-ed25519.key', () => Buffer.from(generateEd25519().private));
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
  const loginTimeoutMs = opts.loginTimeoutMs ?? LOGIN_TIMEOUT_MS;
  const loggedIn = new WeakSet<Socket>();
  const server = new Server({ hostKeys: [hostKey], ident: 'Custody' }, (client, info) => {
    // A client that does not finish its login in time is told so and let go (a silent or stalled
    // one, which never gets this far, is cut off below).
    const sock = (client as unknown as { _sock?: Socket })._sock;
    const timer = setTimeout(() => client.end(), loginTimeoutMs);
    timer.unref();
    client.once('ready', () => {
      clearTimeout(timer);
      if (sock) loggedIn.add(sock);
    });
    client.once('close', () => clearTimeout(timer));
    try {
      new SshProxySession(client, info, ctx);
    } catch (err) {
      services.log.error(`ssh ${connection.name}: cannot start a session: ${(err as Error).message}`);
      client.end();
    }
  });
  // ssh2 hands a connection over only once its key exchange is under way: a client that connects and
  // stays silent, or stalls part-way through the exchange, is seen only as a socket. Every socket
  // that has not logged in by the timeout (and its grace to close) is destroyed, so it cannot hold
  // a descriptor or the session table.
  (server as unknown as { _srv: NetServer })._srv.prependListener('connection', (socket: Socket) => {
    // Echo and keystrokes are tiny packets: send them at once rather than wait out Nagle's delay.
    socket.setNoDelay(true);
    const cutoff = setTimeout(() => {
      if (!loggedIn.has(socket)) socket.destroy();
    }, loginTimeoutMs + LOGIN_GRACE_MS);
    cutoff.unref();
    socket.once('close', () => clearTimeout(cutoff));
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
