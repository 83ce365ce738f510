/**
 * The baseline for the PostgreSQL proxy benchmark: a bare Node TCP pass-through — each client
 * socket piped to a new upstream socket, Nagle disabled, no parsing, auth, policy or recording — so
 * its figures are the runtime's own limit for relaying a connection through one Node process.
 *
 *   node --import tsx bench/tcp-pass-through.ts --upstream 127.0.0.1:5432 [--port 0]
 * prints `{"address": "127.0.0.1:<port>"}` on stdout once listening.
 */
import { type AddressInfo, connect, createServer, type Socket } from 'node:net';
import { pathToFileURL } from 'node:url';

export async function startTcpPassThrough(upstream: string, port = 0): Promise<{ address: string; close(): Promise<void> }> {
  const i = upstream.lastIndexOf(':');
  const host = upstream.slice(0, i);
  const upstreamPort = Number(upstream.slice(i + 1));
  const sockets = new Set<Socket>();
  const server = createServer({ noDelay: true }, (client) => {
    const up = connect({ host, port: upstreamPort, noDelay: true });
    sockets.add(client).add(up);
    client.pipe(up);
    up.pipe(client);
    const end = () => {
      client.destroy();
      up.destroy();
      sockets.delete(client);
      sockets.delete(up);
    };
    client.on('error', end).on('close', end);
    up.on('error', end).on('close', end);
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return {
    address: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const args = process.argv.slice(2);
  const arg = (name: string) => (args.includes(name) ? args[args.indexOf(name) + 1] : undefined);
  const p = await startTcpPassThrough(arg('--upstream') ?? '127.0.0.1:5432', Number(arg('--port') ?? 0));
  process.stdout.write(`${JSON.stringify({ address: p.address })}\n`);
}
