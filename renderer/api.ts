/**
 * The control-plane REST client (DESIGN.md, Control plane): same-origin fetches with the console's
 * session cookie. A 401 means the sign-in expired (the console shows the login page); a network
 * failure means the gateway is unreachable (the console shows a banner and retries).
 */
import type { ApiRequest, ApiResponse, ApiRoute, PathParams } from '../shared/api';
import {
  type ConsoleApi,
  readAuditStatus,
  readDryRun,
  readMaskingSet,
  readMaskingVersion,
  readPolicySet,
  readPolicyVersion,
  readVerify,
} from './lib/api-types';
import { sessionQuery } from './lib/sessions';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export const hooks: { onUnauthenticated?: () => void; onUnreachable?: () => void; onReachable?: () => void } = {};

/** What a request to `route` needs: its `:name` parameters, a query string and its body, where it has them. */
type RequestParts<R extends ApiRoute> = (R extends `${string} ${infer P}` ? (keyof PathParams<P> extends never ? { params?: undefined } : { params: PathParams<P> }) : never) &
  (ApiRequest<R> extends undefined ? { body?: undefined } : { body: ApiRequest<R> }) & { query?: string; quiet401?: boolean };

/** `'/api/holds/:id'` with `{id: 'h 1'}` is `/api/holds/h%201`. */
function fillPath(path: string, params: Record<string, string> | undefined): string {
  return path.replace(/:([A-Za-z]+)/g, (_, name: string) => encodeURIComponent(params?.[name] ?? ''));
}

/** Calls one route of the REST contract (shared/api.ts) and returns its typed answer. */
async function request<R extends ApiRoute>(route: R, parts: RequestParts<R>): Promise<ApiResponse<R>> {
  const space = route.indexOf(' ');
  const method = route.slice(0, space);
  const path = fillPath(route.slice(space + 1), parts.params as Record<string, string> | undefined) + (parts.query ? `?${parts.query}` : '');
  const body: unknown = parts.body;
  let res: Response;
  try {
    res = await fetch(path, {
      method,
      credentials: 'same-origin',
      headers: body === undefined ? { accept: 'application/json' } : { 'content-type': 'application/json', accept: 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    hooks.onUnreachable?.();
    throw new ApiError(0, 'unreachable', 'The gateway cannot be reached. Is it running?');
  }
  hooks.onReachable?.();
  const text = await res.text();
  let data: unknown;
  try {
    data = text ? JSON.parse(text) : undefined;
  } catch {
    data = text;
  }
  if (!res.ok) {
    const err = (data && typeof data === 'object' ? (data as { error?: { code?: string; message?: string } }).error : undefined) ?? {};
    if (res.status === 401 && !parts.quiet401) hooks.onUnauthenticated?.();
    if (res.status === 502 || res.status === 503 || res.status === 504) hooks.onUnreachable?.();
    throw new ApiError(res.status, err.code ?? `http_${res.status}`, err.message ?? (typeof data === 'string' && data ? data.slice(0, 300) : `${method} ${path} failed with ${res.status}`));
  }
  return data as ApiResponse<R>;
}

export const httpApi: ConsoleApi = {
  health: () => request('GET /api/health', {}),
  me: () => request('GET /api/me', { quiet401: true }),
  async providers() {
    const providers = await request('GET /api/auth/providers', {});
    return providers.oidc.filter((p) => !!p.issuer);
  },
  async loginWithKey(key) {
    await request('POST /api/auth/key', { body: { key }, quiet401: true });
  },
  async logout() {
    await request('POST /api/auth/logout', { quiet401: true });
  },
  async holds(state, limit = 500) {
    return (await request('GET /api/holds', { query: `state=${state}&limit=${limit}` })).holds;
  },
  decide: (id, decision) => request('POST /api/holds/:id/decision', { params: { id }, body: decision }),
  sessions: (filter, offset, limit) => request('GET /api/sessions', { query: sessionQuery(filter, offset, limit) }),
  async sessionEvents(id) {
    // The route returns at most 10,000 events per call: page through long recordings with `after`.
    const LIMIT = 10_000;
    const first = await request('GET /api/sessions/:id/events', { params: { id }, query: `limit=${LIMIT}` });
    const events = first.events;
    let page = first.events;
    while (page.length === LIMIT) {
      const after = page[page.length - 1]!.seq;
      page = (await request('GET /api/sessions/:id/events', { params: { id }, query: `after=${after}&limit=${LIMIT}` })).events;
      events.push(...page);
    }
    return { session: first.session, events, ...(first.altered ? { altered: first.altered } : {}) };
  },
  policies: async () => readPolicySet(await request('GET /api/policies', {})),
  putPolicies: async (rules, baseVersion) => readPolicySet(await request('PUT /api/policies', { body: { rules, ...(baseVersion !== undefined && baseVersion !== null ? { baseVersion } : {}) } })),
  masking: async () => readMaskingSet(await request('GET /api/masking', {})),
  putMasking: async (masking, detectors, baseVersion) => readMaskingSet(await request('PUT /api/masking', { body: { masking, detectors, ...(baseVersion !== undefined && baseVersion !== null ? { baseVersion } : {}) } })),
  detectors: () => request('GET /api/masking/detectors', {}),
  async policyVersions() {
    const [policies, masking] = await Promise.all([
      request('GET /api/policies/versions', {}),
      // Masking history needs the reviewer role.
      request('GET /api/masking/versions', {}).catch(() => ({ total: 0, versions: [] })),
    ]);
    return [...policies.versions.map(readPolicyVersion), ...masking.versions.map(readMaskingVersion)].sort((a, b) => b.version - a.version);
  },
  policyVersion: async (version, kind) =>
    kind === 'policies' ? readPolicyVersion(await request('GET /api/policies/versions/:v', { params: { v: String(version) } })) : readMaskingVersion(await request('GET /api/masking/versions/:v', { params: { v: String(version) } })),
  dryRun: async (rules, from, to, masking) => readDryRun(await request('POST /api/policies/dry-run', { body: { rules, from, to, ...masking } })),
  auditStatus: async () => readAuditStatus(await request('GET /api/audit/status', {})),
  verify: async () => readVerify(await request('POST /api/audit/verify', {})),
  async createExport(filter) {
    const job = await request('POST /api/exports', { body: filter });
    return { id: job.id, url: job.url };
  },
  keys: async () => (await request('GET /api/keys', {})).keys,
  async createKey(req) {
    const created = await request('POST /api/keys', { body: req });
    return { key: created.key, record: created };
  },
  async endSession(id, reason) {
    await request('POST /api/sessions/:id/end', { params: { id }, body: { reason } });
  },
  async revokeKey(id) {
    await request('POST /api/keys/:id/revoke', { params: { id } });
  },
  sshKeys: (all) => request('GET /api/ssh-keys', all ? { query: 'all=1' } : {}),
  addSshKey: (req) => request('POST /api/ssh-keys', { body: req }),
  async removeSshKey(fingerprint) {
    await request('DELETE /api/ssh-keys/:fingerprint', { params: { fingerprint } });
  },
  connections: () => request('GET /api/connections', {}),
  addConnection: (connection) => request('POST /api/connections', { body: connection }),
  editConnection: (name, connection) => request('PUT /api/connections/:name', { params: { name }, body: connection }),
  testConnection: (name) => request('POST /api/connections/:name/test', { params: { name } }),
  testDraft: (connection) => request('POST /api/connections/test', { body: connection }),
  dashboard: (from, to, buckets) => request('GET /api/dashboard', { query: `from=${from}&to=${to}&buckets=${buckets}` }),
  gateways: () => request('GET /api/gateways', {}),
  approveGateway: (id) => request('POST /api/gateways/:id/approve', { params: { id } }),
  removeGateway: (id, reason) => request('POST /api/gateways/:id/remove', { params: { id }, body: { reason } }),
};
