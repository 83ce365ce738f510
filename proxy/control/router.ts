/**
 * A minimal router for the control plane's REST API: `router.get('/api/sessions/:id', handler)`.
 * Routes are typed from the REST contract (shared/api.ts): a path must be one of the contract's,
 * and its handler returns that route's response (sent as JSON), or HANDLED when it wrote the
 * answer itself. Thrown HttpErrors become JSON errors `{"error": {"code", "message"}}` with their
 * status.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ApiMethod, ApiPath, ApiRequest, ApiResponse, ApiRoute, Untrusted } from '../../shared/api';
import type { Role } from '../../shared/config';
import type { Identity } from '../../shared/identity';

export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export interface RequestContext<Body = unknown> {
  req: IncomingMessage;
  res: ServerResponse;
  params: Record<string, string>;
  query: URLSearchParams;
  url: URL;
  /** The signed-in user; undefined only on routes marked `public`. */
  identity: Identity | undefined;
  /** Parsed JSON body (limited in size), not validated yet; throws HttpError 400/413. */
  json<T = Untrusted<Body> | undefined>(): Promise<T>;
}

/** Raw response: the handler wrote to `res` itself. (An instance, not a symbol: async handlers keep its type.) */
class Handled {
  private readonly handled = true;
}
export const HANDLED = new Handled();

/** A route's handler: its contract response, or HANDLED (a promise of either). */
export type Handler<R extends ApiRoute = ApiRoute> = (ctx: RequestContext<ApiRequest<R>>) => ApiResponse<R> | typeof HANDLED | Promise<ApiResponse<R> | typeof HANDLED>;

type RouteOf<M extends ApiMethod, P extends string> = `${M} ${P}` & ApiRoute;

export interface RouteOptions {
  /** No sign-in needed (health, login). */
  public?: boolean;
  /** Role required; admin satisfies every role. */
  role?: Role;
}

interface Route {
  method: string;
  parts: string[];
  handler: (ctx: RequestContext) => unknown;
  options: RouteOptions;
}

export class Router {
  private routes: Route[] = [];

  private add(method: ApiMethod, path: string, handler: (ctx: RequestContext<never>) => unknown, options: RouteOptions = {}): void {
    this.routes.push({ method, parts: path.split('/').filter(Boolean), handler: handler as (ctx: RequestContext) => unknown, options });
  }
  get<P extends ApiPath<'GET'>>(path: P, handler: Handler<RouteOf<'GET', P>>, options?: RouteOptions) {
    this.add('GET', path, handler, options);
  }
  post<P extends ApiPath<'POST'>>(path: P, handler: Handler<RouteOf<'POST', P>>, options?: RouteOptions) {
    this.add('POST', path, handler, options);
  }
  put<P extends ApiPath<'PUT'>>(path: P, handler: Handler<RouteOf<'PUT', P>>, options?: RouteOptions) {
    this.add('PUT', path, handler, options);
  }
  delete<P extends ApiPath<'DELETE'>>(path: P, handler: Handler<RouteOf<'DELETE', P>>, options?: RouteOptions) {
    this.add('DELETE', path, handler, options);
  }

  /** Finds the route for a method and path; `methodMismatch` when the path exists under another method. */
  match(method: string, pathname: string): { route: Route; params: Record<string, string> } | { methodMismatch: boolean } {
    const parts = pathname.split('/').filter(Boolean);
    let mismatch = false;
    for (const route of this.routes) {
      if (route.parts.length !== parts.length) continue;
      const params: Record<string, string> = {};
      let ok = true;
      for (let i = 0; i < parts.length && ok; i++) {
        const want = route.parts[i]!;
        if (want.startsWith(':')) params[want.slice(1)] = decodeURIComponent(parts[i]!);
        else ok = want === parts[i];
      }
      if (!ok) continue;
      if (route.method !== method && !(method === 'HEAD' && route.method === 'GET')) {
        mismatch = true;
        continue;
      }
      return { route, params };
    }
    return { methodMismatch: mismatch };
  }
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store', ...headers });
  res.end(text);
}

export async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw new HttpError(413, 'body_too_large', `request body exceeds ${limit} bytes`);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

/** An optional numeric query parameter; 400 when present but not a number. */
export function intParam(q: URLSearchParams, name: string): number | undefined {
  const v = q.get(name);
  if (v === null || v === '') return undefined;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new HttpError(400, 'bad_request', `${name} must be a number`);
  return n;
}

/** An optional time query parameter: ISO 8601 or ms since epoch; 400 otherwise. */
export function timeParam(q: URLSearchParams, name: string): number | undefined {
  const v = q.get(name);
  if (!v) return undefined;
  const n = /^\d+$/.test(v) ? Number(v) : Date.parse(v);
  if (!Number.isFinite(n)) throw new HttpError(400, 'bad_request', `${name} must be a time (ISO 8601 or ms since epoch)`);
  return n;
}
