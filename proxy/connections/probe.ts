/**
 * The reachability test behind "Test connection": HTTP kinds send `HEAD <upstream>` (any HTTP
 * answer, even 401 or 404, means the upstream is reachable); postgres opens a TCP connection to the
 * upstream's host and port. Both give up after a few seconds, and neither sends a credential.
 */
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { connect } from 'node:net';
import type { ConnectionTestResult } from '../../shared/api';
import type { Connection } from '../../shared/config';
import { redactUpstream } from '../../shared/upstream-credentials';

const TEST_TIMEOUT_MS = 4000;

/** Tries to reach an upstream within a few seconds; never throws. */
export async function testUpstream(connection: Pick<Connection, 'kind' | 'upstream'>, timeoutMs = TEST_TIMEOUT_MS): Promise<ConnectionTestResult> {
  const startedAt = performance.now();
  const done = (ok: boolean, message: string, status?: number): ConnectionTestResult => ({ ok, latencyMs: Math.round(performance.now() - startedAt), message, ...(status ? { status } : {}) });
  let url: URL;
  try {
    url = new URL(connection.upstream);
  } catch {
    return done(false, `${redactUpstream(connection.upstream)} is not a URL`);
  }
  if (connection.kind === 'postgres') {
    const host = url.hostname.replace(/^\[|\]$/g, '') || '127.0.0.1';
    const port = Number(url.port || 5432);
    return new Promise((resolve) => {
      const socket = connect({ host, port });
      const timer = setTimeout(() => {
        socket.destroy();
        resolve(done(false, `no answer from ${host}:${port} within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.destroy();
        resolve(done(true, `TCP connection to ${host}:${port} opened`));
      });
      socket.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        resolve(done(false, `cannot connect to ${host}:${port}: ${err.code ?? err.message}`));
      });
    });
  }
  const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise((resolve) => {
    const probe = send(url, { method: 'HEAD', timeout: timeoutMs, headers: { 'user-agent': 'custody-connection-test' } }, (res) => {
      res.resume();
      resolve(done(true, `HEAD ${url.origin}${url.pathname} answered ${res.statusCode}`, res.statusCode));
    });
    probe.once('timeout', () => {
      probe.destroy();
      resolve(done(false, `no answer from ${url.host} within ${timeoutMs / 1000} s`));
    });
    probe.once('error', (err: NodeJS.ErrnoException) => resolve(done(false, `cannot reach ${url.host}: ${err.code ?? err.message}`)));
    probe.end();
  });
}
