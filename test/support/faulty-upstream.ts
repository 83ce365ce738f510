/**
 * An upstream that misbehaves on purpose, written on a raw `net` server so it can do what an HTTP
 * server library would not let it: bodies that do not decode, lengths it never fills, chunk sizes
 * that are not hex, TCP resets mid-body or before the status line.
 *
 * The request header `x-fault: <relay> <fault>` picks the answer (the vocabulary is documented in
 * test/fixtures/upstream-faults.txt), plus `ok` (a clean answer), `silent` (never answers) and
 * `drip` (headers, then a piece every 20 ms until the gateway hangs up). Every connection is kept in `sockets` with the `x-fault-id`
 * of the request it carried and whether it is closed, so a test can check that the gateway let go
 * of it. The server never closes a connection itself unless the fault says so.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { constants, createGzip, type Gzip } from 'node:zlib';

export interface FaultySocket {
  /** `x-fault-id` of the last request on this connection. */
  id: string | undefined;
  closed: boolean;
  socket: Socket;
}

export interface FaultyUpstream {
  url: string;
  sockets: FaultySocket[];
  /** Requests received: `x-fault-id` → raw head. */
  requests: Map<string, string>;
  close(): Promise<void>;
}

/** What the body says, before any encoding: SSE events for `sse`, a chat completion JSON otherwise. */
function sseEvent(content: string): string {
  return `data: ${JSON.stringify({ id: 'chatcmpl-fault', object: 'chat.completion.chunk', created: 1, model: 'gpt-4o', choices: [{ index: 0, delta: { content }, finish_reason: null }] })}\n\n`;
}

function completion(content: string): string {
  return JSON.stringify({
    id: 'chatcmpl-fault',
    object: 'chat.completion',
    created: 1,
    model: 'gpt-4o',
    choices: [{ index: 0, message: { role: 'assistant', content, refusal: null }, finish_reason: 'stop', logprobs: null }],
    usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 },
  });
}

/** The body in two halves, so a fault can come between them. `large` is over 256 KiB. */
function bodyHalves(relay: string): [string, string] {
  if (relay === 'sse') return [sseEvent('Hel') + sseEvent('lo, '), sseEvent('world') + 'data: [DONE]\n\n'];
  const text = completion(relay === 'large' ? 'x'.repeat(300 * 1024) : 'Hello from the faulty upstream. '.repeat(20));
  const mid = Math.floor(text.length / 2);
  return [text.slice(0, mid), text.slice(mid)];
}

/** Garbage for the named encoding: each decoder refuses it at its first bytes, before any output. */
const NOT_ENCODED = Buffer.from('this is not compressed data, whatever the content-encoding says. '.repeat(8));

/** Compresses `parts`, flushing after each, so each part's output decodes on its own; `finish` ends the stream. */
async function gzipParts(parts: string[], finish: boolean): Promise<Buffer[]> {
  const z: Gzip = createGzip();
  const out: Buffer[] = [];
  let current: Buffer[] = [];
  z.on('data', (d: Buffer) => current.push(d));
  for (const p of parts) {
    z.write(p);
    await new Promise<void>((r) => z.flush(constants.Z_SYNC_FLUSH, () => r()));
    out.push(Buffer.concat(current));
    current = [];
  }
  if (finish) {
    await new Promise<void>((r) => z.end(() => r()));
    await new Promise<void>((r) => setImmediate(r));
    out.push(Buffer.concat(current));
  } else z.destroy();
  return out;
}

const wait = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
/** Long enough for the gateway to have relayed what came before. */
const BETWEEN = 60;

function chunk(data: Buffer | string): Buffer {
  const b = typeof data === 'string' ? Buffer.from(data) : data;
  return Buffer.concat([Buffer.from(`${b.length.toString(16)}\r\n`), b, Buffer.from('\r\n')]);
}

function head(relay: string, extra: Record<string, string | number>): string {
  const lines = ['HTTP/1.1 200 OK', `content-type: ${relay === 'sse' ? 'text/event-stream' : 'application/json'}`];
  for (const [k, v] of Object.entries(extra)) lines.push(`${k}: ${v}`);
  return `${lines.join('\r\n')}\r\n\r\n`;
}

/** Plays one fault on `socket`, the request having been read. */
async function play(socket: Socket, relay: string, fault: string): Promise<void> {
  const chunked = relay === 'chunked' || relay === 'sse';
  /** Writes the parts of a body with complete framing, a pause between parts (an empty part is only the pause). */
  const send = async (parts: Buffer[], headers: Record<string, string | number> = {}) => {
    const total = parts.reduce((n, p) => n + p.length, 0);
    socket.write(head(relay, chunked ? { ...headers, 'transfer-encoding': 'chunked' } : { ...headers, 'content-length': total }));
    for (let i = 0; i < parts.length; i++) {
      if (i) await wait(BETWEEN);
      if (parts[i]!.length) socket.write(chunked ? chunk(parts[i]!) : parts[i]!);
    }
    if (chunked) socket.write('0\r\n\r\n');
  };
  const [first, second] = bodyHalves(relay);
  switch (fault) {
    case 'bad-gzip':
    case 'bad-br':
    case 'bad-deflate': {
      const size = relay === 'large' ? 300 * 1024 : NOT_ENCODED.length;
      const body = Buffer.alloc(size);
      for (let i = 0; i < size; i += NOT_ENCODED.length) NOT_ENCODED.copy(body, i);
      await send([body], { 'content-encoding': fault.slice(4) });
      return;
    }
    case 'gzip-corrupt-midway': {
      const [a] = await gzipParts([first], false);
      await send([a!, NOT_ENCODED], { 'content-encoding': 'gzip' });
      return;
    }
    case 'gzip-cut-short': {
      // the first half, flushed; then the framing ends with the gzip stream unfinished
      const [a] = await gzipParts([first], false);
      await send([a!, Buffer.alloc(0)], { 'content-encoding': 'gzip' });
      return;
    }
    case 'truncated':
    case 'reset-mid-body':
    case 'reset-before-body': {
      const whole = Buffer.from(first + second);
      socket.write(head(relay, chunked ? { 'transfer-encoding': 'chunked' } : { 'content-length': whole.length }));
      if (fault !== 'reset-before-body') socket.write(chunked ? chunk(first) : Buffer.from(first));
      await wait(BETWEEN);
      if (fault === 'truncated') socket.end();
      else socket.resetAndDestroy();
      return;
    }
    case 'bad-framing':
      socket.write(head(relay, { 'transfer-encoding': 'chunked' }) + 'zz\r\nnot a chunk\r\n');
      return;
    case 'bad-framing-mid-stream':
      socket.write(head(relay, { 'transfer-encoding': 'chunked' }));
      socket.write(chunk(first));
      await wait(BETWEEN);
      socket.write('zz\r\nnot a chunk\r\n');
      return;
    case 'reset':
      socket.resetAndDestroy();
      return;
    case 'close':
      socket.end();
      return;
    case 'reset-mid-headers':
      socket.write('HTTP/1.1 200 OK\r\ncontent-type: appl');
      await wait(BETWEEN);
      socket.resetAndDestroy();
      return;
    case 'garbage-status-line':
      socket.write('THIS IS NOT HTTP\r\n\r\n');
      return;
    case 'silent':
      return;
    case 'drip': {
      socket.write(head(relay, { 'transfer-encoding': 'chunked' }));
      const piece = relay === 'sse' ? sseEvent('drip ') : 'drip '.repeat(3000);
      const timer = setInterval(() => socket.write(chunk(piece)), 20);
      socket.once('close', () => clearInterval(timer));
      return;
    }
    case 'ok': {
      await send([Buffer.from(first), Buffer.from(second)]);
      return;
    }
    default:
      socket.write(`HTTP/1.1 400 Bad Request\r\ncontent-length: ${fault.length + 15}\r\n\r\nunknown fault: ${fault}`);
  }
}

export async function startFaultyUpstream(): Promise<FaultyUpstream> {
  const sockets: FaultySocket[] = [];
  const requests = new Map<string, string>();
  const server: Server = createServer((socket) => {
    const entry: FaultySocket = { id: undefined, closed: false, socket };
    sockets.push(entry);
    socket.on('close', () => (entry.closed = true));
    socket.on('error', () => {});
    let buf = Buffer.alloc(0);
    let need = -1;
    let headText = '';
    const onData = (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (need === -1) {
        const end = buf.indexOf('\r\n\r\n');
        if (end === -1) return;
        headText = buf.subarray(0, end).toString('latin1');
        const len = /\r\ncontent-length:\s*(\d+)/i.exec(headText);
        need = end + 4 + (len ? Number(len[1]) : 0);
      }
      if (buf.length < need) return;
      buf = buf.subarray(need);
      need = -1;
      const id = /\r\nx-fault-id:\s*([^\r]*)/i.exec(headText)?.[1];
      const fault = /\r\nx-fault:\s*([^\r]*)/i.exec(headText)?.[1] ?? 'chunked ok';
      entry.id = id;
      if (id) requests.set(id, headText);
      const [relay, name] = fault.split(' ') as [string, string];
      void play(socket, relay, name);
    };
    socket.on('data', onData);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}`,
    sockets,
    requests,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.socket.destroy();
        server.close(() => r());
      }),
  };
}
