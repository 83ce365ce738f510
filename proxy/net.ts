/**
 * Listening sockets, shared by every listener (the HTTP proxy, the PostgreSQL listeners, the control
 * plane): address parsing, a listen that names the address in its error, and a graceful close.
 */
import type { Server } from 'node:http';
import type { Server as NetServer } from 'node:net';

/** A listener the gateway started and must drain on stop. */
export interface Listener {
  name: string;
  address: string;
  close(): Promise<void>;
}

export function splitHostPort(address: string): [string, number] {
  const i = address.lastIndexOf(':');
  const host = address.slice(0, i).replace(/^\[|\]$/g, '');
  return [host, Number(address.slice(i + 1))];
}

export function listen(server: Server | NetServer, host: string, port: number): Promise<void> {
  return new Promise((resolveListen, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      reject(new Error(err.code === 'EADDRINUSE' ? `${host}:${port} is already in use (another gateway running?)` : `cannot listen on ${host}:${port}: ${err.message}`));
    };
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolveListen();
    });
  });
}

/** Stops accepting, lets in-flight requests finish (up to `graceMs`), then closes what is left. */
export function closeServer(server: Server, graceMs = 10_000): Promise<void> {
  return new Promise((done) => {
    const timer = setTimeout(() => server.closeAllConnections(), graceMs);
    timer.unref();
    server.close(() => {
      clearTimeout(timer);
      done();
    });
    server.closeIdleConnections();
  });
}
