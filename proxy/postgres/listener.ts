/**
 * One listener per `postgres` connection (config `listen`): accepts clients, hands each to a
 * PgProxySession, routes CancelRequests by the keys it handed out, and drains on close. TLS uses
 * the connection's `tls.cert`/`tls.key`, or a self-signed certificate kept in the data dir.
 */
import { readFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { createSecureContext } from 'node:tls';
import type { Connection } from '../../shared/config';
import { POSTGRES_PACING, SessionAuditWriter } from '../audit/session-writer';
import { listen, splitHostPort } from '../net';
import { RoutineCatalog, TableNameResolver } from './catalog';
import { loadSqlParser } from './classify';
import { loadOrCreateListenerCertificate } from './self-signed';
import { PgProxySession } from './session';
import type { PgListenerContext, PgSessionServices } from './session-context';
import { upstreamTarget } from './upstream';

export interface PgListenerOptions {
  connection: Connection;
  services: PgSessionServices;
  dataDir: string;
  /** Result rows recorded per statement (config limits.recordRows). */
  recordRows: number;
  /** How long connecting to the upstream may take, in ms (config limits.upstreamConnectTimeout). */
  connectTimeoutMs?: number;
  /** Shared by every listener of a gateway so commits batch across them. */
  writer?: SessionAuditWriter;
}

export interface PgListener {
  name: string;
  address: string;
  /** Where the self-signed certificate is, when one is used (clients can pin it). */
  certificateFile?: string;
  readonly sessions: number;
  /** Client sockets the listener still holds open (a leak check: they close with their sessions). */
  openSockets(): Promise<number>;
  close(): Promise<void>;
}

export async function startPgListener(opts: PgListenerOptions): Promise<PgListener> {
  const { connection } = opts;
  if (!connection.listen) throw new Error(`connection ${connection.name}: a postgres connection needs listen`);
  await loadSqlParser();
  const target = upstreamTarget(connection, opts.connectTimeoutMs);
  const [host, port] = splitHostPort(connection.listen);
  let certificateFile: string | undefined;
  let cert: string | Buffer;
  let key: string | Buffer;
  if (connection.tls?.cert || connection.tls?.key) {
    if (!connection.tls.cert || !connection.tls.key) throw new Error(`connection ${connection.name}: tls needs both cert and key`);
    try {
      cert = readFileSync(connection.tls.cert);
      key = readFileSync(connection.tls.key);
    } catch (err) {
      throw new Error(`connection ${connection.name}: cannot read the TLS certificate or key: ${(err as Error).message}`);
    }
  } else {
    const generated = loadOrCreateListenerCertificate(opts.dataDir, host && host !== '0.0.0.0' && host !== '::' ? [host] : []);
    cert = generated.certPem;
    key = generated.keyPem;
    certificateFile = generated.certFile;
  }
  let secureContext;
  try {
    secureContext = createSecureContext({ cert, key, minVersion: 'TLSv1.2' });
  } catch (err) {
    throw new Error(`connection ${connection.name}: the TLS certificate and key do not load: ${(err as Error).message}`);
  }
  const ctx: PgListenerContext = {
    connection,
    target,
    services: opts.services,
    writer: opts.writer ?? new SessionAuditWriter(opts.services.store, POSTGRES_PACING),
    secureContext,
    tables: new TableNameResolver(target),
    routines: new RoutineCatalog(target),
    recordRows: opts.recordRows,
    cancelKeys: new Map(),
    sessions: new Set(),
  };
  const server: Server = createServer({ allowHalfOpen: true }, (socket: Socket) => {
    try {
      new PgProxySession(socket, ctx);
    } catch (err) {
      opts.services.log.error(`postgres ${connection.name}: cannot start a session: ${(err as Error).message}`);
      socket.destroy();
    }
  });
  server.on('error', (err) => opts.services.log.error(`postgres ${connection.name}: listener error: ${err.message}`));
  await listen(server, host, port);
  const addr = server.address() as import('node:net').AddressInfo;
  const address = `${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}`;
  return {
    name: `postgres:${connection.name}`,
    address,
    certificateFile,
    get sessions() {
      return ctx.sessions.size;
    },
    openSockets: () => new Promise<number>((resolve) => server.getConnections((err, n) => resolve(err ? -1 : n))),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of [...ctx.sessions]) s.shutdown();
        ctx.writer.flush();
        ctx.tables.close();
        ctx.routines.close();
      }),
  };
}
