/**
 * The baseline for the HTTP proxy benchmark: a bare Node pass-through proxy — no auth, no policy,
 * no masking, no recording — with the same keep-alive upstream agent and Nagle disabled, so its
 * figures are the runtime's own limit for proxying HTTP in one Node process.
 *
 *   node --import tsx bench/bare-proxy.ts --upstream http://127.0.0.1:8080 [--port 0]
 * prints `{"url": "http://127.0.0.1:<port>"}` on stdout once listening.
 */
import { Agent, createServer, type IncomingHttpHeaders, request } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { pathToFileURL } from 'node:url';

const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade'];

function strip(headers: IncomingHttpHeaders): IncomingHttpHeaders {
  const out = { ...headers };
  for (const h of HOP_BY_HOP) delete out[h];
  return out;
}

export async function startBareProxy(upstream: string, port = 0): Promise<{ url: string; close(): Promise<void> }> {
  const target = new URL(upstream);
  const agent = new Agent({ keepAlive: true, maxFreeSockets: 64, scheduling: 'lifo', noDelay: true } as ConstructorParameters<typeof Agent>[0]);
  const server = createServer({ noDelay: true }, (req, res) => {
    const headers = strip(req.headers);
    headers.host = target.host;
    const up = request({ hostname: target.hostname, port: target.port, method: req.method, path: req.url, headers, agent }, (upRes) => {
      res.writeHead(upRes.statusCode ?? 502, strip(upRes.headers));
      upRes.pipe(res);
    });
    up.on('error', () => {
      if (!res.headersSent) res.writeHead(502).end();
      else res.destroy();
    });
    res.on('close', () => {
      if (!res.writableFinished) up.destroy();
    });
    req.pipe(up);
  });
  server.on('connection', (s: Socket) => s.setNoDelay(true));
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  const addr = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${addr.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
        agent.destroy();
      }),
  };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const args = process.argv.slice(2);
  const upstream = args[args.indexOf('--upstream') + 1];
  const port = args.includes('--port') ? Number(args[args.indexOf('--port') + 1]) : 0;
  if (!args.includes('--upstream') || !upstream) {
    console.error('usage: bare-proxy.ts --upstream URL [--port N]');
    process.exit(2);
  }
  const p = await startBareProxy(upstream, port);
  process.stdout.write(`${JSON.stringify({ url: p.url })}\n`);
  process.on('SIGTERM', () => void p.close().then(() => process.exit(0)));
}
