/**
 * A measuring stick, not a proxy: relays HTTP/1.1 requests and responses between raw `net` sockets,
 * parsing only the request/status line, the header lines and `content-length` — no chunked
 * encoding, no validation, no limits, no error handling worth the name. It shows what relaying
 * HTTP costs in Node below its `http` module (the bare pass-through's cost), i.e. how much of the
 * bare pass-through's budget is the runtime's HTTP machinery rather than the work of proxying.
 * `bench/http-overhead.ts --floor` runs it beside the other targets.
 *
 *   node --import tsx bench/raw-socket-floor.ts --upstream http://127.0.0.1:8080
 * prints `{"url": "http://127.0.0.1:<port>"}` on stdout once listening.
 */
import { connect, createServer, type Socket } from 'node:net';
import { pathToFileURL } from 'node:url';

interface Head {
  start: string;
  headers: string[];
  length: number;
  bodyAt: number;
}

const SKIP = new Set(['host', 'connection', 'keep-alive']);

function parseHead(buf: Buffer): Head | undefined {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return undefined;
  const lines = buf.toString('latin1', 0, end).split('\r\n');
  const headers: string[] = [];
  let length = 0;
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    const name = line.slice(0, line.indexOf(':')).toLowerCase();
    if (name === 'content-length') length = Number(line.slice(name.length + 1).trim());
    if (!SKIP.has(name)) headers.push(line);
  }
  return { start: lines[0]!, headers, length, bodyAt: end + 4 };
}

/** Calls `onMessage` for every complete Content-Length–framed message read from `socket`. */
function readMessages(socket: Socket, onMessage: (head: Head, body: Buffer) => void): void {
  let buf: Buffer = Buffer.alloc(0);
  let head: Head | undefined;
  socket.on('data', (data: Buffer) => {
    buf = buf.length ? Buffer.concat([buf, data]) : data;
    for (;;) {
      head ??= parseHead(buf);
      if (!head || buf.length < head.bodyAt + head.length) return;
      const body = buf.subarray(head.bodyAt, head.bodyAt + head.length);
      const done = head;
      buf = buf.subarray(head.bodyAt + head.length);
      head = undefined;
      onMessage(done, body);
    }
  });
}

function frame(start: string, headers: string[], extra: string, body: Buffer): Buffer {
  return Buffer.concat([Buffer.from(`${start}\r\n${extra}${headers.join('\r\n')}\r\n\r\n`, 'latin1'), body]);
}

export async function startRawSocketFloor(upstream: string, port = 0): Promise<{ url: string; close(): Promise<void> }> {
  const target = new URL(upstream);
  type Upstream = Socket & { waiting: ((head: Head, body: Buffer) => void)[] };
  const idle: Upstream[] = [];
  const upstreamSocket = (): Upstream => {
    const reused = idle.pop();
    if (reused) return reused;
    const s = connect(Number(target.port), target.hostname) as Upstream;
    s.setNoDelay(true);
    s.waiting = [];
    s.on('error', () => s.destroy());
    // The upstream closes idle keep-alive connections (Node's default: after 5 s).
    s.on('close', () => {
      const i = idle.indexOf(s);
      if (i >= 0) idle.splice(i, 1);
    });
    readMessages(s, (head, body) => {
      const answer = s.waiting.shift()!;
      idle.push(s);
      answer(head, body);
    });
    return s;
  };
  const server = createServer({ noDelay: true }, (client) => {
    client.on('error', () => client.destroy());
    readMessages(client, (head, body) => {
      const up = upstreamSocket();
      up.waiting.push((rhead, rbody) => client.write(frame(rhead.start, rhead.headers, '', rbody)));
      up.write(frame(head.start, head.headers, `host: ${target.host}\r\n`, body));
    });
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  const { port: bound } = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${bound}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of idle) s.destroy();
        server.close(() => resolve());
      }),
  };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const args = process.argv.slice(2);
  const upstream = args[args.indexOf('--upstream') + 1];
  if (!upstream || !args.includes('--upstream')) {
    console.error('usage: raw-socket-floor.ts --upstream http://host:port [--port N]');
    process.exit(2);
  }
  const port = args.includes('--port') ? Number(args[args.indexOf('--port') + 1]) : 0;
  const floor = await startRawSocketFloor(upstream, port);
  process.stdout.write(`${JSON.stringify({ url: floor.url })}\n`);
  process.on('SIGTERM', () => void floor.close().then(() => process.exit(0)));
}
