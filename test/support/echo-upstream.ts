/**
 * A small upstream that reports what it received and echoes the credential back in every response
 * shape a careless or hostile upstream could use, for the path and credential-scrubbing tests.
 *
 *   GET  /…/echo/header     the credential in response headers (`x-echo-authorization`, …)
 *   GET  /…/echo/json       a content-length JSON body carrying it (as sent, Basic, URL-encoded)
 *   GET  /…/echo/chunked    a chunked text body carrying it, cut into 3-byte writes
 *   GET  /…/echo/sse        an OpenAI chat-completions stream whose deltas carry it, split mid-secret
 *   GET  /…/echo/error      a 401 error body carrying it
 *   POST /…/chat/completions an OpenAI chat completion whose content is the credential
 *   POST /…/v1/messages      an Anthropic message whose text is the credential (stream: true too)
 *   anything else           200 JSON `{ method, path }`
 *
 * Every request is kept in `requests` with the raw request-target as received.
 */
import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface EchoRequest {
  method: string;
  /** The request-target exactly as it arrived (path and query). */
  target: string;
  headers: IncomingHttpHeaders;
}

export interface EchoUpstream {
  url: string;
  requests: EchoRequest[];
  close(): Promise<void>;
}

/** The credential the upstream received, whichever header carried it. */
function credentialOf(headers: IncomingHttpHeaders): string {
  const auth = headers['authorization'];
  if (typeof auth === 'string') return auth.replace(/^Bearer\s+/i, '');
  const key = headers['x-api-key'];
  return typeof key === 'string' ? key : '';
}

/** The encodings an echo may use: as sent, in Basic auth (`user:secret`, `secret:`), URL-encoded. */
export function encodingsOf(secret: string): string[] {
  return [
    secret,
    Buffer.from(`user:${secret}`).toString('base64'),
    Buffer.from(`${secret}:`).toString('base64'),
    Buffer.from(secret).toString('base64'),
    encodeURIComponent(secret),
  ];
}

async function writeSlowly(res: ServerResponse, text: string, size: number): Promise<void> {
  for (let i = 0; i < text.length; i += size) {
    res.write(text.slice(i, i + size));
    await new Promise((r) => setImmediate(r));
  }
}

export async function startEchoUpstream(): Promise<EchoUpstream> {
  const requests: EchoRequest[] = [];
  const sockets = new Set<Socket>();
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      requests.push({ method: req.method ?? '', target: req.url ?? '', headers: req.headers });
      const secret = credentialOf(req.headers);
      const body = Buffer.concat(chunks).toString('utf8');
      const path = (req.url ?? '').split('?')[0]!;
      const [asSent, basicUser, basicBlank, plain64, urlEncoded] = encodingsOf(secret) as [string, string, string, string, string];
      const echoes = `as sent ${asSent}; basic ${basicUser} and ${basicBlank}; base64 ${plain64}; url ${urlEncoded}`;
      const json = (status: number, value: unknown, headers: Record<string, string> = {}) => {
        const text = JSON.stringify(value);
        res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
        res.end(text);
      };
      void (async () => {
        if (path.endsWith('/echo/header')) {
          json(200, { ok: true }, { 'x-echo-authorization': `Bearer ${asSent}`, 'www-authenticate': `Basic realm="${basicUser}"`, location: `/next?key=${urlEncoded}` });
        } else if (path.endsWith('/echo/json')) {
          json(200, { echoes });
        } else if (path.endsWith('/echo/chunked')) {
          res.writeHead(200, { 'content-type': 'text/plain' });
          await writeSlowly(res, `chunked ${echoes} end`, 3);
          res.end();
        } else if (path.endsWith('/echo/sse') || (path.endsWith('/chat/completions') && body.includes('"stream":true'))) {
          res.writeHead(200, { 'content-type': 'text/event-stream' });
          res.write(`: keep-alive ${asSent}\n\n`);
          const pieces = [`the key is ${asSent.slice(0, 5)}`, asSent.slice(5, 11), `${asSent.slice(11)} and ${basicUser}`, ` url ${urlEncoded}`];
          for (const [i, p] of pieces.entries()) {
            const chunk = { id: 'chatcmpl-echo', object: 'chat.completion.chunk', created: 1, model: 'gpt-4o', choices: [{ index: 0, delta: i === 0 ? { role: 'assistant', content: p } : { content: p }, finish_reason: null }] };
            // each event is itself cut in two writes, so the secret also straddles TCP chunks
            const text = `${i === 0 && path.endsWith('/echo/sse') ? `id: ${asSent}\nevent: ${plain64}\n` : ''}data: ${JSON.stringify(chunk)}\n\n`;
            await writeSlowly(res, text, Math.ceil(text.length / 2));
          }
          res.write(`data: ${JSON.stringify({ id: 'chatcmpl-echo', object: 'chat.completion.chunk', created: 1, model: 'gpt-4o', choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] })}\n\n`);
          res.end('data: [DONE]\n\n');
        } else if (path.endsWith('/echo/error')) {
          json(401, { error: { message: `Incorrect API key provided: ${asSent} (${basicUser})`, type: 'invalid_request_error', code: 'invalid_api_key', param: null } });
        } else if (path.endsWith('/chat/completions')) {
          json(200, { id: 'chatcmpl-echo', object: 'chat.completion', created: 1, model: 'gpt-4o', choices: [{ index: 0, message: { role: 'assistant', content: echoes }, finish_reason: 'stop' }], usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 } });
        } else if (path.endsWith('/v1/messages') && body.includes('"stream":true')) {
          res.writeHead(200, { 'content-type': 'text/event-stream' });
          const ev = (event: string, data: unknown) => `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
          await writeSlowly(res, ev('message_start', { type: 'message_start', message: { id: 'msg_echo', type: 'message', role: 'assistant', model: 'claude', content: [], stop_reason: null, stop_sequence: null, usage: { input_tokens: 1, output_tokens: 0 } } }), 64);
          await writeSlowly(res, ev('content_block_start', { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } }), 64);
          for (const p of [`key ${asSent.slice(0, 7)}`, asSent.slice(7), ` basic ${basicUser}`]) await writeSlowly(res, ev('content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: p } }), 16);
          res.write(ev('content_block_stop', { type: 'content_block_stop', index: 0 }));
          res.write(ev('message_delta', { type: 'message_delta', delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: { output_tokens: 3 } }));
          res.end(ev('message_stop', { type: 'message_stop' }));
        } else if (path.endsWith('/v1/messages')) {
          json(200, { id: 'msg_echo', type: 'message', role: 'assistant', model: 'claude', content: [{ type: 'text', text: echoes }], stop_reason: 'end_turn', stop_sequence: null, usage: { input_tokens: 1, output_tokens: 1 } });
        } else json(200, { method: req.method, path: req.url });
      })().catch((err: unknown) => res.destroy(err as Error));
    });
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}
