/**
 * The control-plane REST client (DESIGN.md, Control plane): same-origin fetches with the console's
 * session cookie. A 401 means the sign-in expired (the console shows the login page); a network
 * failure means the gateway is unreachable (the console shows a banner and retries).
 */
import type { CustomDetector, MaskingRule, PolicyRule } from '../shared/config';
import type { AuditEvent, SessionSummary } from '../shared/events';
import type { HoldDecisionRequest, HoldState, HoldView } from '../shared/holds';
import {
  type ApiKeyView,
  type ConnectionInput,
  type ConnectionList,
  type ConnectionTestResult,
  type ConnectionView,
  type ConsoleApi,
  listOf,
  type Provider,
  readAuditStatus,
  readDryRun,
  readMaskingSet,
  readPolicySet,
  readVerify,
  readVersions,
  strOrNull,
} from './lib/api-types';
import type { DashboardData } from './lib/charts';
import type { Me } from './lib/roles';
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

async function call<T>(method: string, path: string, body?: unknown, opts: { quiet401?: boolean } = {}): Promise<T> {
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
    if (res.status === 401 && !opts.quiet401) hooks.onUnauthenticated?.();
    if (res.status === 502 || res.status === 503 || res.status === 504) hooks.onUnreachable?.();
    throw new ApiError(res.status, err.code ?? `http_${res.status}`, err.message ?? (typeof data === 'string' && data ? data.slice(0, 300) : `${method} ${path} failed with ${res.status}`));
  }
  return data as T;
}

export const httpApi: ConsoleApi = {
  health: () => call('GET', '/api/health'),
  me: () => call<Me>('GET', '/api/me', undefined, { quiet401: true }),
  async providers() {
    const v = await call<unknown>('GET', '/api/auth/providers');
    return listOf<Record<string, unknown>>(v, 'oidc', 'providers', 'issuers')
      .map((p) => {
        const issuer = strOrNull(p['issuer']) ?? '';
        const id = strOrNull(p['id']) ?? issuer;
        return {
          issuer,
          name: strOrNull(p['name']) ?? strOrNull(p['label']) ?? (issuer ? new URL(issuer).host : 'identity provider'),
          startUrl: strOrNull(p['startUrl']) ?? `/api/auth/oidc/start?issuer=${encodeURIComponent(id)}`,
        };
      })
      .filter((p): p is Provider => !!p.issuer);
  },
  async loginWithKey(key) {
    await call('POST', '/api/auth/key', { key }, { quiet401: true });
  },
  async logout() {
    await call('POST', '/api/auth/logout', undefined, { quiet401: true });
  },
  async holds(state: HoldState, limit = 500) {
    return listOf<HoldView>(await call<unknown>('GET', `/api/holds?state=${state}&limit=${limit}`), 'holds', 'items');
  },
  async decide(id: string, req: HoldDecisionRequest) {
    const v = await call<unknown>('POST', `/api/holds/${encodeURIComponent(id)}/decision`, req);
    if (v && typeof v === 'object' && 'hold' in v) return (v as { hold: HoldView }).hold;
    return v && typeof v === 'object' && 'id' in v ? (v as HoldView) : undefined;
  },
  sessions: (filter, offset, limit) => call<{ total: number; sessions: SessionSummary[] }>('GET', `/api/sessions?${sessionQuery(filter, offset, limit)}`),
  async sessionEvents(id) {
    // The route returns at most 10,000 events per call: page through long recordings with `after`.
    const LIMIT = 10_000;
    const first = await call<{ session: SessionSummary; events: AuditEvent[] }>('GET', `/api/sessions/${encodeURIComponent(id)}/events?limit=${LIMIT}`);
    const events = first.events;
    let page = first.events;
    while (page.length === LIMIT) {
      const after = page[page.length - 1]!.seq;
      page = (await call<{ events: AuditEvent[] }>('GET', `/api/sessions/${encodeURIComponent(id)}/events?after=${after}&limit=${LIMIT}`)).events;
      events.push(...page);
    }
    return { session: first.session, events };
  },
  policies: async () => readPolicySet(await call('GET', '/api/policies')),
  putPolicies: async (policies: PolicyRule[], baseVersion?: number | null) => readPolicySet(await call('PUT', '/api/policies', { rules: policies, ...(baseVersion !== undefined && baseVersion !== null ? { baseVersion } : {}) })),
  masking: async () => readMaskingSet(await call('GET', '/api/masking')),
  putMasking: async (masking: MaskingRule[], detectors: CustomDetector[], baseVersion?: number | null) =>
    readMaskingSet(await call('PUT', '/api/masking', { masking, detectors, ...(baseVersion !== undefined && baseVersion !== null ? { baseVersion } : {}) })),
  async policyVersions() {
    const [policies, masking] = await Promise.all([
      call('GET', '/api/policies/versions'),
      // Masking history needs the reviewer role and may not exist on older gateways.
      call('GET', '/api/masking/versions').catch(() => []),
    ]);
    return [...readVersions(policies, 'policies'), ...readVersions(masking, 'masking')].sort((a, b) => b.version - a.version);
  },
  policyVersion: async (v: number, kind: 'policies' | 'masking') => readVersions([await call('GET', `/api/${kind}/versions/${v}`)], kind)[0]!,
  dryRun: async (policies, from, to, masking) => readDryRun(await call('POST', '/api/policies/dry-run', { rules: policies, from, to, ...masking })),
  auditStatus: async () => readAuditStatus(await call('GET', '/api/audit/status')),
  verify: async () => readVerify(await call('POST', '/api/audit/verify')),
  async createExport(req) {
    const v = (await call<Record<string, unknown>>('POST', '/api/exports', req)) ?? {};
    return { id: String(v['id'] ?? ''), url: typeof v['url'] === 'string' ? v['url'] : undefined };
  },
  keys: async () => listOf<ApiKeyView>(await call('GET', '/api/keys'), 'keys'),
  async createKey(req) {
    const v = await call<ApiKeyView & { key: string; record?: ApiKeyView }>('POST', '/api/keys', req);
    return { key: v.key, record: v.record ?? v };
  },
  async revokeKey(id) {
    try {
      await call('POST', `/api/keys/${encodeURIComponent(id)}/revoke`);
    } catch (err) {
      if (!(err instanceof ApiError) || (err.status !== 404 && err.status !== 405)) throw err;
      await call('DELETE', `/api/keys/${encodeURIComponent(id)}`);
    }
  },
  connections: () => call<ConnectionList>('GET', '/api/connections'),
  addConnection: (c: ConnectionInput) => call<ConnectionView>('POST', '/api/connections', c),
  editConnection: (name: string, c: ConnectionInput) => call<ConnectionView>('PUT', `/api/connections/${encodeURIComponent(name)}`, c),
  testConnection: (name: string) => call<ConnectionTestResult>('POST', `/api/connections/${encodeURIComponent(name)}/test`),
  testDraft: (c: ConnectionInput) => call<ConnectionTestResult>('POST', '/api/connections/test', c),
  dashboard: (from, to, buckets) => call<DashboardData>('GET', `/api/dashboard?from=${from}&to=${to}&buckets=${buckets}`),
};
