/**
 * A local stand-in for the OpenAI and Anthropic APIs and a vector-store-shaped JSON API, speaking
 * their wire formats exactly as the official SDKs parse them (JSON bodies, SSE streams, error
 * shapes), so tests can put the gateway in front of it and use the real clients.
 *
 *   OpenAI    POST /v1/chat/completions (stream, stream_options.include_usage, tools)
 *             POST /v1/responses (stream with lifecycle events), POST /v1/embeddings (float|base64)
 *             GET  /v1/models
 *   Anthropic POST /v1/messages (stream with message_start … message_stop, tools)
 *   Vectors   PUT  /vectors/collections/:name/points   {points: [{id, vector, payload}]}
 *             POST /vectors/collections/:name/query    {vector, limit} → {result: [{id, score, payload}]}
 *             GET  /vectors/collections/:name          → {result: {name, points}}
 *   Bench     GET|POST /bench/json?bytes=N  → a JSON body of about N bytes
 *
 * Every request is kept in `requests` (method, path, headers, body) for assertions.
 */
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { brotliCompressSync, constants as zlibConstants, createBrotliCompress, createDeflate, createGzip, deflateSync, gzipSync } from 'node:zlib';
import type { Transform } from 'node:stream';

export type Compression = 'gzip' | 'br' | 'deflate';

export interface RecordedRequest {
  method: string;
  /** Path with query, as received. */
  path: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** Parsed JSON body, when it is JSON. */
  json?: unknown;
  /** The client (the gateway) went away before the response was complete. */
  aborted: boolean;
  /** Resolves when the response has ended or the connection closed. */
  done: Promise<void>;
  /** Streamed responses: events written so far. */
  eventsSent: number;
}

export interface StreamEventInfo {
  path: string;
  index: number;
  total: number;
  request: RecordedRequest;
}

export interface LlmUpstreamOptions {
  /** Secrets the stand-in expects (provider-shaped 401 otherwise): Bearer for OpenAI, x-api-key for Anthropic, Bearer for /vectors. */
  openaiKey?: string;
  anthropicKey?: string;
  vectorKey?: string;
  /** What the models answer. Default: "Hello from the stand-in! Ça marche — 👋". */
  reply?: string;
  /** What streamed answers say, when it should differ from `reply`. */
  streamReply?: string;
  /** Pause between streamed events, ms (default 0). */
  streamDelayMs?: number;
  /** Called before each streamed event is written; return a promise to hold that event back. */
  beforeStreamEvent?: (info: StreamEventInfo) => void | Promise<void>;
  /** Write each streamed event in pieces of this many bytes (splits lines and UTF-8 characters). */
  fragmentBytes?: number;
  /** Compress every response body with this encoding, whatever the client asked for. */
  compress?: Compression;
  /** Answer a request yourself; return true when you did. */
  handler?: (req: RecordedRequest, res: ServerResponse) => boolean | Promise<boolean>;
  /** Keep requests in `requests` (default true; benchmarks turn it off). */
  record?: boolean;
  host?: string;
  port?: number;
}

export interface LlmUpstream {
  url: string;
  requests: RecordedRequest[];
  /** Requests whose path starts with `prefix`. */
  requestsTo(prefix: string): RecordedRequest[];
  close(): Promise<void>;
}

/** What the models answer unless `reply` says otherwise. */
export const DEFAULT_REPLY = 'Hello from the stand-in! Ça marche — 👋';

/** Deterministic pseudo-embedding of a text: `dims` floats in [-1, 1). */
export function fakeEmbedding(text: string, dims = 8): number[] {
  let h = 2166136261;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 16777619);
  const out: number[] = [];
  for (let i = 0; i < dims; i++) {
    h = Math.imul(h ^ (h >>> 15), 2246822507) ^ i;
    h = Math.imul(h ^ (h >>> 13), 3266489909);
    out.push(Math.fround(((h >>> 0) / 2 ** 32) * 2 - 1));
  }
  return out;
}

/** Splits a reply into stream deltas the way tokenizers do (words with their leading space). */
export function deltasOf(text: string): string[] {
  return text.match(/\s*\S+|\s+$/gu) ?? [text];
}

const id = (prefix: string) => `${prefix}${randomBytes(12).toString('hex')}`;
const tokens = (text: string) => Math.max(1, Math.ceil(text.length / 4));

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function compressWhole(body: Buffer, c: Compression): Buffer {
  return c === 'gzip' ? gzipSync(body) : c === 'br' ? brotliCompressSync(body) : deflateSync(body);
}

function compressStream(c: Compression): Transform & { flush(kind?: number): void } {
  return c === 'gzip' ? createGzip() : c === 'br' ? createBrotliCompress() : createDeflate();
}

export async function startLlmUpstream(opts: LlmUpstreamOptions = {}): Promise<LlmUpstream> {
  const requests: RecordedRequest[] = [];
  const baseReply = opts.reply ?? DEFAULT_REPLY;
  const replyFor = (body: Record<string, unknown>) => (body['stream'] === true && opts.streamReply !== undefined ? opts.streamReply : baseReply);
  const vectors = new Map<string, Map<string | number, { vector: number[]; payload: unknown }>>();
  const sockets = new Set<Socket>();

  function sendJson(res: ServerResponse, status: number, value: unknown, extra: Record<string, string> = {}): void {
    let body: Buffer = Buffer.from(JSON.stringify(value));
    const headers: Record<string, string | number> = { 'content-type': 'application/json', ...extra };
    if (opts.compress) {
      body = compressWhole(body, opts.compress);
      headers['content-encoding'] = opts.compress;
    }
    headers['content-length'] = body.length;
    res.writeHead(status, headers);
    res.end(body);
  }

  const openAiError = (res: ServerResponse, status: number, message: string, code: string | null, type = 'invalid_request_error') =>
    sendJson(res, status, { error: { message, type, param: null, code } });
  const anthropicError = (res: ServerResponse, status: number, type: string, message: string) =>
    sendJson(res, status, { type: 'error', error: { type, message }, request_id: id('req_') });

  /** Writes SSE events one by one, honouring delay, hook, fragmentation and compression. */
  async function sendStream(rec: RecordedRequest, res: ServerResponse, events: { event?: string; data: string }[]): Promise<void> {
    const headers: Record<string, string> = { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', 'x-request-id': id('req_') };
    let out: { write(b: Buffer): void; end(): void } = { write: (b) => res.write(b), end: () => res.end() };
    if (opts.compress) {
      headers['content-encoding'] = opts.compress;
      const z = compressStream(opts.compress);
      z.on('data', (d: Buffer) => res.write(d));
      z.on('end', () => res.end());
      const flush = () => (opts.compress === 'br' ? z.flush(zlibConstants.BROTLI_OPERATION_FLUSH) : z.flush());
      out = {
        write: (b) => {
          z.write(b);
          flush();
        },
        end: () => z.end(),
      };
    }
    res.writeHead(200, headers);
    res.flushHeaders();
    for (let i = 0; i < events.length; i++) {
      if (rec.aborted || res.destroyed) return;
      await opts.beforeStreamEvent?.({ path: rec.path, index: i, total: events.length, request: rec });
      if (opts.streamDelayMs) await new Promise((r) => setTimeout(r, opts.streamDelayMs));
      if (rec.aborted || res.destroyed) return;
      const e = events[i]!;
      const bytes = Buffer.from(`${e.event !== undefined ? `event: ${e.event}\n` : ''}data: ${e.data}\n\n`, 'utf8');
      const step = opts.fragmentBytes ?? bytes.length;
      for (let at = 0; at < bytes.length; at += step) {
        out.write(bytes.subarray(at, at + step));
        if (opts.fragmentBytes) await new Promise((r) => setImmediate(r));
      }
      rec.eventsSent++;
    }
    out.end();
  }

  function bearer(headers: IncomingHttpHeaders): string | undefined {
    const m = /^Bearer (.+)$/.exec(headers.authorization ?? '');
    return m?.[1];
  }

  async function chatCompletions(rec: RecordedRequest, res: ServerResponse, body: Record<string, unknown>): Promise<void> {
    const reply = replyFor(body);
    const model = typeof body['model'] === 'string' ? body['model'] : 'gpt-4o';
    const messages = Array.isArray(body['messages']) ? body['messages'] : [];
    if (!messages.length) return openAiError(res, 400, "Missing required parameter: 'messages'.", 'missing_required_parameter');
    const tools = Array.isArray(body['tools']) ? (body['tools'] as { function?: { name?: string } }[]) : [];
    const last = messages[messages.length - 1] as { role?: string } | undefined;
    const toolCall = tools.length && last?.role === 'user' ? { id: id('call_'), name: tools[0]?.function?.name ?? 'tool', args: JSON.stringify({ query: reply }) } : undefined;
    const created = Math.floor(Date.now() / 1000);
    const cid = id('chatcmpl-');
    const promptTokens = tokens(JSON.stringify(messages));
    const usage = { prompt_tokens: promptTokens, completion_tokens: tokens(reply), total_tokens: promptTokens + tokens(reply), prompt_tokens_details: { cached_tokens: 0, audio_tokens: 0 }, completion_tokens_details: { reasoning_tokens: 0, audio_tokens: 0, accepted_prediction_tokens: 0, rejected_prediction_tokens: 0 } };
    if (body['stream'] !== true) {
      const message = toolCall
        ? { role: 'assistant', content: null, refusal: null, annotations: [], tool_calls: [{ id: toolCall.id, type: 'function', function: { name: toolCall.name, arguments: toolCall.args } }] }
        : { role: 'assistant', content: reply, refusal: null, annotations: [] };
      return sendJson(res, 200, { id: cid, object: 'chat.completion', created, model, choices: [{ index: 0, message, logprobs: null, finish_reason: toolCall ? 'tool_calls' : 'stop' }], usage, service_tier: 'default', system_fingerprint: 'fp_standin' }, { 'x-request-id': id('req_') });
    }
    const includeUsage = (body['stream_options'] as { include_usage?: boolean } | undefined)?.include_usage === true;
    const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) =>
      JSON.stringify({ id: cid, object: 'chat.completion.chunk', created, model, service_tier: 'default', system_fingerprint: 'fp_standin', choices, ...(includeUsage ? { usage: null } : {}), ...extra });
    const events: { data: string }[] = [];
    events.push({ data: chunk([{ index: 0, delta: { role: 'assistant', content: toolCall ? null : '', refusal: null }, logprobs: null, finish_reason: null }]) });
    if (toolCall) {
      events.push({ data: chunk([{ index: 0, delta: { tool_calls: [{ index: 0, id: toolCall.id, type: 'function', function: { name: toolCall.name, arguments: '' } }] }, logprobs: null, finish_reason: null }]) });
      for (let i = 0; i < toolCall.args.length; i += 7)
        events.push({ data: chunk([{ index: 0, delta: { tool_calls: [{ index: 0, function: { arguments: toolCall.args.slice(i, i + 7) } }] }, logprobs: null, finish_reason: null }]) });
    } else {
      for (const d of deltasOf(reply)) events.push({ data: chunk([{ index: 0, delta: { content: d }, logprobs: null, finish_reason: null }]) });
    }
    events.push({ data: chunk([{ index: 0, delta: {}, logprobs: null, finish_reason: toolCall ? 'tool_calls' : 'stop' }]) });
    if (includeUsage) events.push({ data: JSON.stringify({ id: cid, object: 'chat.completion.chunk', created, model, service_tier: 'default', system_fingerprint: 'fp_standin', choices: [], usage }) });
    events.push({ data: '[DONE]' });
    await sendStream(rec, res, events);
  }

  async function responses(rec: RecordedRequest, res: ServerResponse, body: Record<string, unknown>): Promise<void> {
    const reply = replyFor(body);
    const model = typeof body['model'] === 'string' ? body['model'] : 'gpt-4o';
    if (body['input'] === undefined) return openAiError(res, 400, "Missing required parameter: 'input'.", 'missing_required_parameter');
    const rid = id('resp_');
    const mid = id('msg_');
    const created = Math.floor(Date.now() / 1000);
    const inputTokens = tokens(JSON.stringify(body['input']));
    const usage = { input_tokens: inputTokens, input_tokens_details: { cached_tokens: 0 }, output_tokens: tokens(reply), output_tokens_details: { reasoning_tokens: 0 }, total_tokens: inputTokens + tokens(reply) };
    const part = { type: 'output_text', text: reply, annotations: [], logprobs: [] };
    const item = { id: mid, type: 'message', status: 'completed', role: 'assistant', content: [part] };
    const response = (status: string, output: unknown[], withUsage: boolean) => ({
      id: rid,
      object: 'response',
      created_at: created,
      status,
      background: false,
      error: null,
      incomplete_details: null,
      instructions: body['instructions'] ?? null,
      max_output_tokens: null,
      model,
      output,
      parallel_tool_calls: true,
      previous_response_id: null,
      reasoning: { effort: null, summary: null },
      store: true,
      temperature: 1,
      text: { format: { type: 'text' } },
      tool_choice: 'auto',
      tools: [],
      top_p: 1,
      truncation: 'disabled',
      usage: withUsage ? usage : null,
      user: null,
      metadata: {},
    });
    if (body['stream'] !== true) return sendJson(res, 200, response('completed', [item], true), { 'x-request-id': id('req_') });
    let seq = 0;
    const ev = (type: string, data: Record<string, unknown>) => ({ event: type, data: JSON.stringify({ type, sequence_number: seq++, ...data }) });
    const events = [
      ev('response.created', { response: response('in_progress', [], false) }),
      ev('response.in_progress', { response: response('in_progress', [], false) }),
      ev('response.output_item.added', { output_index: 0, item: { id: mid, type: 'message', status: 'in_progress', role: 'assistant', content: [] } }),
      ev('response.content_part.added', { item_id: mid, output_index: 0, content_index: 0, part: { type: 'output_text', text: '', annotations: [], logprobs: [] } }),
      ...deltasOf(reply).map((delta) => ev('response.output_text.delta', { item_id: mid, output_index: 0, content_index: 0, delta, logprobs: [] })),
      ev('response.output_text.done', { item_id: mid, output_index: 0, content_index: 0, text: reply, logprobs: [] }),
      ev('response.content_part.done', { item_id: mid, output_index: 0, content_index: 0, part }),
      ev('response.output_item.done', { output_index: 0, item }),
      ev('response.completed', { response: response('completed', [item], true) }),
    ];
    await sendStream(rec, res, events);
  }

  function embeddings(res: ServerResponse, body: Record<string, unknown>): void {
    const input = body['input'];
    const inputs = typeof input === 'string' ? [input] : Array.isArray(input) ? input.map((v) => (typeof v === 'string' ? v : JSON.stringify(v))) : null;
    if (!inputs) return openAiError(res, 400, "Missing required parameter: 'input'.", 'missing_required_parameter');
    const dims = typeof body['dimensions'] === 'number' ? body['dimensions'] : 8;
    const base64 = body['encoding_format'] === 'base64';
    const data = inputs.map((text, index) => {
      const v = fakeEmbedding(text, dims);
      return { object: 'embedding', index, embedding: base64 ? Buffer.from(new Float32Array(v).buffer).toString('base64') : v };
    });
    const t = inputs.reduce((n, s) => n + tokens(s), 0);
    sendJson(res, 200, { object: 'list', data, model: body['model'] ?? 'text-embedding-3-small', usage: { prompt_tokens: t, total_tokens: t } });
  }

  async function messages(rec: RecordedRequest, res: ServerResponse, body: Record<string, unknown>): Promise<void> {
    const reply = replyFor(body);
    const model = typeof body['model'] === 'string' ? body['model'] : 'claude-opus-4-6';
    if (!Array.isArray(body['messages']) || typeof body['max_tokens'] !== 'number')
      return anthropicError(res, 400, 'invalid_request_error', !Array.isArray(body['messages']) ? 'messages: Field required' : 'max_tokens: Field required');
    const tools = Array.isArray(body['tools']) ? (body['tools'] as { name?: string }[]) : [];
    const mid = id('msg_');
    const inputTokens = tokens(JSON.stringify(body['messages']));
    const toolUse = tools.length ? { type: 'tool_use', id: id('toolu_'), name: tools[0]?.name ?? 'tool', input: { query: reply } } : undefined;
    const stopReason = toolUse ? 'tool_use' : 'end_turn';
    if (body['stream'] !== true) {
      return sendJson(
        res,
        200,
        { id: mid, type: 'message', role: 'assistant', model, content: toolUse ? [toolUse] : [{ type: 'text', text: reply }], stop_reason: stopReason, stop_sequence: null, usage: { input_tokens: inputTokens, cache_creation_input_tokens: 0, cache_read_input_tokens: 0, output_tokens: tokens(reply), service_tier: 'standard' } },
        { 'request-id': id('req_') },
      );
    }
    const ev = (type: string, data: Record<string, unknown>) => ({ event: type, data: JSON.stringify({ type, ...data }) });
    const events = [
      ev('message_start', { message: { id: mid, type: 'message', role: 'assistant', model, content: [], stop_reason: null, stop_sequence: null, usage: { input_tokens: inputTokens, cache_creation_input_tokens: 0, cache_read_input_tokens: 0, output_tokens: 1, service_tier: 'standard' } } }),
    ];
    if (toolUse) {
      const json = JSON.stringify(toolUse.input);
      events.push(ev('content_block_start', { index: 0, content_block: { type: 'tool_use', id: toolUse.id, name: toolUse.name, input: {} } }));
      events.push(ev('ping', {}));
      for (let i = 0; i < json.length; i += 9) events.push(ev('content_block_delta', { index: 0, delta: { type: 'input_json_delta', partial_json: json.slice(i, i + 9) } }));
    } else {
      events.push(ev('content_block_start', { index: 0, content_block: { type: 'text', text: '' } }));
      events.push(ev('ping', {}));
      for (const d of deltasOf(reply)) events.push(ev('content_block_delta', { index: 0, delta: { type: 'text_delta', text: d } }));
    }
    events.push(ev('content_block_stop', { index: 0 }));
    events.push(ev('message_delta', { delta: { stop_reason: stopReason, stop_sequence: null }, usage: { output_tokens: tokens(reply) } }));
    events.push(ev('message_stop', {}));
    await sendStream(rec, res, events);
  }

  function vectorApi(rec: RecordedRequest, res: ServerResponse, parts: string[], body: Record<string, unknown> | undefined): void {
    const [, , collection, action] = parts; // vectors, collections, :name, points|query
    if (!collection) return sendJson(res, 404, { status: { error: 'not found' } });
    let points = vectors.get(collection);
    if (rec.method === 'GET' && !action) {
      if (!points) return sendJson(res, 404, { status: { error: `Collection ${collection} not found` }, time: 0 });
      return sendJson(res, 200, { result: { name: collection, points: points.size }, status: 'ok', time: 0 });
    }
    if (rec.method === 'PUT' && action === 'points') {
      const list = (body?.['points'] ?? []) as { id: string | number; vector: number[]; payload?: unknown }[];
      if (!Array.isArray(list) || list.some((p) => !Array.isArray(p.vector))) return sendJson(res, 400, { status: { error: 'points[].vector is required' }, time: 0 });
      if (!points) vectors.set(collection, (points = new Map()));
      for (const p of list) points.set(p.id, { vector: p.vector, payload: p.payload ?? {} });
      return sendJson(res, 200, { result: { operation_id: points.size, status: 'completed' }, status: 'ok', time: 0 });
    }
    if (rec.method === 'POST' && action === 'query') {
      if (!points) return sendJson(res, 404, { status: { error: `Collection ${collection} not found` }, time: 0 });
      const q = body?.['vector'] as number[] | undefined;
      if (!Array.isArray(q)) return sendJson(res, 400, { status: { error: 'vector is required' }, time: 0 });
      const limit = typeof body?.['limit'] === 'number' ? body['limit'] : 3;
      const scored = [...points.entries()].map(([pid, p]) => ({ id: pid, score: cosine(q, p.vector), payload: p.payload }));
      scored.sort((a, b) => b.score - a.score);
      return sendJson(res, 200, { result: scored.slice(0, limit), status: 'ok', time: 0 });
    }
    sendJson(res, 404, { status: { error: `no route ${rec.method} ${rec.path}` }, time: 0 });
  }

  async function route(rec: RecordedRequest, res: ServerResponse): Promise<void> {
    if (opts.handler && (await opts.handler(rec, res))) return;
    const url = new URL(rec.path, 'http://standin.invalid');
    const parts = url.pathname.split('/').filter(Boolean);
    if (parts[0] === 'bench' && parts[1] === 'json') {
      const bytes = Number(url.searchParams.get('bytes') ?? 1024);
      const base = { id: 'bench', object: 'bench', padding: '' };
      base.padding = 'x'.repeat(Math.max(0, bytes - JSON.stringify(base).length));
      return sendJson(res, 200, base);
    }
    let body: Record<string, unknown> | undefined;
    if (rec.body.length) {
      try {
        body = JSON.parse(rec.body.toString('utf8')) as Record<string, unknown>;
        rec.json = body;
      } catch {
        if (parts[0] === 'v1' && parts[1] === 'messages') return anthropicError(res, 400, 'invalid_request_error', 'There was an error parsing the body of your request.');
        return openAiError(res, 400, 'We could not parse the JSON body of your request.', null);
      }
    }
    if (parts[0] === 'vectors') {
      if (opts.vectorKey !== undefined && bearer(rec.headers) !== opts.vectorKey) return sendJson(res, 401, { status: { error: 'unauthorized: invalid api key' }, time: 0 });
      return vectorApi(rec, res, parts, body);
    }
    if (parts[0] !== 'v1') return openAiError(res, 404, `Invalid URL (${rec.method} ${url.pathname})`, null);
    if (parts[1] === 'messages' && parts.length === 2) {
      if (opts.anthropicKey !== undefined && rec.headers['x-api-key'] !== opts.anthropicKey) return anthropicError(res, 401, 'authentication_error', 'invalid x-api-key');
      if (!rec.headers['anthropic-version']) return anthropicError(res, 400, 'invalid_request_error', 'anthropic-version: header is required');
      if (rec.method !== 'POST') return anthropicError(res, 405, 'invalid_request_error', 'Method not allowed');
      return messages(rec, res, body ?? {});
    }
    if (opts.openaiKey !== undefined && bearer(rec.headers) !== opts.openaiKey)
      return openAiError(res, 401, `Incorrect API key provided: ${(bearer(rec.headers) ?? '').slice(0, 3)}***. You can find your API key at https://platform.openai.com/account/api-keys.`, 'invalid_api_key');
    const endpoint = parts.slice(1).join('/');
    if (rec.method === 'GET' && endpoint === 'models')
      return sendJson(res, 200, { object: 'list', data: ['gpt-4o', 'gpt-4o-mini', 'text-embedding-3-small'].map((m) => ({ id: m, object: 'model', created: 1715367049, owned_by: 'system' })) });
    if (rec.method !== 'POST') return openAiError(res, 404, `Invalid URL (${rec.method} ${url.pathname})`, null);
    if (endpoint === 'chat/completions') return chatCompletions(rec, res, body ?? {});
    if (endpoint === 'responses') return responses(rec, res, body ?? {});
    if (endpoint === 'embeddings') return embeddings(res, body ?? {});
    return openAiError(res, 404, `Invalid URL (POST ${url.pathname})`, null);
  }

  const server = createServer(async (req, res) => {
    let resolveDone!: () => void;
    const rec: RecordedRequest = {
      method: req.method ?? 'GET',
      path: req.url ?? '/',
      headers: req.headers,
      body: Buffer.alloc(0),
      aborted: false,
      done: new Promise<void>((r) => (resolveDone = r)),
      eventsSent: 0,
    };
    res.once('close', () => {
      if (!res.writableFinished) rec.aborted = true;
      resolveDone();
    });
    try {
      rec.body = await readBody(req);
      if (opts.record !== false) requests.push(rec);
      await route(rec, res);
    } catch (err) {
      if (!res.headersSent) openAiError(res, 500, `stand-in failure: ${(err as Error).message}`, null, 'server_error');
      else res.destroy();
    }
  });
  server.on('connection', (s: Socket) => {
    s.setNoDelay(true);
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', resolve));
  const addr = server.address() as AddressInfo;
  return {
    url: `http://${addr.address}:${addr.port}`,
    requests,
    requestsTo: (prefix) => requests.filter((r) => r.path.startsWith(prefix)),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      }),
  };
}

function cosine(a: number[], b: number[]): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    dot += a[i]! * b[i]!;
    na += a[i]! * a[i]!;
    nb += b[i]! * b[i]!;
  }
  return na && nb ? dot / Math.sqrt(na * nb) : 0;
}
