import { connect, createServer, type Server, type Socket } from 'node:net';

/** A TCP relay to the PostgreSQL server that the test can cut (every connection reset, new ones refused) and restore. */
export async function startRelay(port: number): Promise<{ cut(): Promise<void>; restore(): Promise<void>; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  let server: Server | undefined;
  const listen = () =>
    new Promise<void>((resolve) => {
      server = createServer((client) => {
        const upstream = connect(5432, '127.0.0.1');
        for (const s of [client, upstream]) {
          sockets.add(s);
          s.on('error', () => {});
          s.on('close', () => sockets.delete(s));
        }
        client.pipe(upstream).pipe(client);
      }).listen(port, '127.0.0.1', () => resolve());
    });
  const cut = async () => {
    await new Promise<void>((resolve) => {
      server!.close(() => resolve());
      for (const s of sockets) s.resetAndDestroy();
    });
  };
  await listen();
  return { cut, restore: listen, close: cut };
}
