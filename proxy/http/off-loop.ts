/**
 * Large bodies are inspected off the event loop.
 *
 * Masking and scanning are linear, but linear is not free: a 10 MiB request dense with personal
 * data took 0.75 s to mask, and on the gateway's thread that would hold every other request for as
 * long. Bodies of at least `OFF_LOOP_BYTES` are therefore read, masked and scanned on a worker
 * thread (off-loop-worker.ts) with an engine rebuilt from the gateway's (the same rules and HMAC
 * key, rebuilt whenever they change), while the event loop goes on with other requests. The scan
 * budget still holds there (the worker's scan fails closed when it runs out), and a worker that does
 * not answer within twice the budget plus a second is stopped and the request refused: the gateway
 * never forwards what it could not inspect.
 *
 * Small bodies stay on the event loop: handing one to a thread costs more than scanning it.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { Worker } from 'node:worker_threads';
import type { Connection } from '../../shared/config';
import { withCanonicalText } from '../audit/chain';
import type { CustodyMaskingEngine } from '../masking/engine';
import { UnmaskableValueError } from '../masking/request';
import { type MaskedBody, MaskingError } from '../masking/types';
import { workerSource } from '../worker-source';
import { GatewayError, type GatewayErrorCode } from './errors';
import type { InspectedRequest } from './request-inspection';

/** Bodies this large or larger are inspected on the worker thread. */
export const OFF_LOOP_BYTES = 64 * 1024;

export type OffLoopFailure = { kind: 'gateway'; status: number; code: GatewayErrorCode; message: string } | { kind: 'unmaskable' | 'masking' | 'internal'; message: string };

interface RequestJob {
  op: 'request';
  connection: Connection;
  path: string;
  contentType: string | undefined;
  body: Uint8Array;
  search: string;
  headers: IncomingHttpHeaders;
  /** Rules the masker is made with (a policy's `mask` rules when no configured rule applies). */
  maskerRules: string[];
  extraRules?: string[];
  inspect: boolean;
  /** Compute `all` (every value of the body, for `match.content`). */
  wantAll: boolean;
}

interface ResponseJob {
  op: 'response';
  connection: Connection;
  path: string;
  contentType: string | undefined;
  body: Uint8Array;
  extraRules?: string[];
}

export type OffLoopRequest = (RequestJob | ResponseJob) & { id: number };

/** What the request says about itself (policy/llm-request.ts's RequestFacts, computed). */
export interface OffLoopFacts {
  model?: string;
  tools: boolean;
  stream: boolean;
  text: string;
  all?: string;
}

export type OffLoopReply =
  | {
      id: number;
      ok: true;
      facts?: OffLoopFacts;
      inspected?: InspectedRequest;
      maskError?: OffLoopFailure;
      response?: MaskedBody;
      /** Canonical JSON of the recorded body and of its spans, made on the worker. */
      canonical?: { body?: string; spans?: string };
    }
  | { id: number; ok: false; error: OffLoopFailure };

/** The outcome of inspecting a request on the worker. */
export type OffLoopInspection =
  | { refused: GatewayError }
  | { facts: OffLoopFacts; inspected: InspectedRequest; maskError?: undefined }
  | { facts: OffLoopFacts; inspected?: undefined; maskError: MaskingError };

interface Waiting {
  resolve(reply: OffLoopReply): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
}

function asError(f: OffLoopFailure): Error {
  switch (f.kind) {
    case 'gateway':
      return new GatewayError(f.status, f.code, f.message);
    case 'unmaskable':
      return new UnmaskableValueError(f.message);
    case 'masking':
      return new MaskingError(f.message);
    default:
      return new Error(`the masking thread failed: ${f.message}`);
  }
}

/** The worker's canonical texts, attached to the values they encode (recording then uses them). */
function adoptCanonical(body: unknown, spans: readonly unknown[], canonical: { body?: string; spans?: string } | undefined): void {
  if (canonical?.body !== undefined && typeof body === 'object' && body !== null) withCanonicalText(body, canonical.body);
  if (canonical?.spans !== undefined && spans.length) withCanonicalText(spans, canonical.spans);
}

const asBuffer = (bytes: Uint8Array): Buffer => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);

export class OffLoopMasking {
  private worker: Worker | undefined;
  private readonly waiting = new Map<number, Waiting>();
  private nextId = 1;
  /** The engine generation the worker was last given. */
  private sentGeneration = 0;

  private constructor(
    private readonly engine: CustodyMaskingEngine,
    private readonly source: NonNullable<ReturnType<typeof workerSource>>,
  ) {}

  /** Undefined where no worker can be started (the caller then inspects on its own thread). */
  static create(engine: unknown): OffLoopMasking | undefined {
    if (!engine || typeof (engine as CustodyMaskingEngine).built !== 'object') return undefined;
    const source = workerSource(import.meta.url, './off-loop-worker');
    return source ? new OffLoopMasking(engine as CustodyMaskingEngine, source) : undefined;
  }

  /** Whether this body should go to the worker (an engine built with validators in code cannot be rebuilt there). */
  wants(bytes: number): boolean {
    return bytes >= OFF_LOOP_BYTES && !this.engine.built.customValidators;
  }

  private ensure(): Worker {
    if (this.worker) return this.worker;
    const w = new Worker(this.source.entry, this.source.options);
    w.unref();
    w.on('message', (reply: OffLoopReply) => {
      const waiting = this.waiting.get(reply.id);
      if (!waiting) return;
      this.waiting.delete(reply.id);
      clearTimeout(waiting.timer);
      waiting.resolve(reply);
    });
    const gone = (why: string) => {
      if (this.worker !== w) return;
      this.worker = undefined;
      this.sentGeneration = 0;
      for (const [id, waiting] of this.waiting) {
        clearTimeout(waiting.timer);
        waiting.reject(new MaskingError(`masking failed closed: the masking thread stopped (${why})`));
        this.waiting.delete(id);
      }
    };
    w.on('error', (err) => gone(err.message));
    w.on('exit', (code) => gone(`exit code ${code}`));
    this.worker = w;
    return w;
  }

  private call(job: RequestJob | ResponseJob): Promise<OffLoopReply> {
    const worker = this.ensure();
    const built = this.engine.built;
    if (built.generation !== this.sentGeneration) {
      worker.postMessage({ engine: built });
      this.sentGeneration = built.generation;
    }
    const id = this.nextId++;
    // Generous: the worker fails closed on its own scan budget; this only catches one that hangs.
    const allowMs = 10 * built.budgetMs * Math.max(1, job.body.byteLength / (1 << 20)) + 5000;
    return new Promise<OffLoopReply>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        // A thread that does not answer in time is stopped; the next body gets a fresh one.
        void worker.terminate();
        reject(new MaskingError(`masking failed closed: inspecting ${job.body.byteLength} bytes did not finish within ${Math.round(allowMs)} ms`));
      }, allowMs);
      this.waiting.set(id, { resolve, reject, timer });
      worker.postMessage({ ...job, id });
    });
  }

  /** Reads, masks and scans a request body on the worker (request-body.ts, request-inspection.ts). */
  async inspectRequest(job: Omit<RequestJob, 'op'>): Promise<OffLoopInspection> {
    let reply: OffLoopReply;
    try {
      reply = await this.call({ op: 'request', ...job });
    } catch (err) {
      if (!(err instanceof MaskingError)) throw err;
      return { facts: { tools: false, stream: false, text: '' }, maskError: err };
    }
    if (!reply.ok) {
      const err = asError(reply.error);
      if (err instanceof GatewayError) return { refused: err };
      if (err instanceof MaskingError) return { facts: { tools: false, stream: false, text: '' }, maskError: err };
      throw err;
    }
    const facts = reply.facts!;
    if (reply.maskError) {
      const err = asError(reply.maskError);
      if (!(err instanceof MaskingError)) throw err;
      return { facts, maskError: err };
    }
    const inspected = reply.inspected!;
    inspected.forward = asBuffer(inspected.forward);
    adoptCanonical(inspected.log.body, inspected.spans, reply.canonical);
    return { facts, inspected };
  }

  /** Masks a complete response body on the worker (the connection masker's `response`). Throws MaskingError. */
  async maskResponse(job: Omit<ResponseJob, 'op'>): Promise<MaskedBody> {
    const reply = await this.call({ op: 'response', ...job });
    if (!reply.ok) throw asError(reply.error);
    const m = reply.response!;
    m.forward = asBuffer(m.forward);
    adoptCanonical(m.log, m.spans, reply.canonical);
    return m;
  }

  close(): void {
    const w = this.worker;
    this.worker = undefined;
    for (const waiting of this.waiting.values()) {
      clearTimeout(waiting.timer);
      waiting.reject(new MaskingError('masking failed closed: the gateway is stopping'));
    }
    this.waiting.clear();
    void w?.terminate();
  }
}
