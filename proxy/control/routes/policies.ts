/**
 * Policies over REST:
 *
 *   GET  /api/policies                   the rules in force, their version and any warnings
 *   PUT  /api/policies                   admin: {rules, baseVersion?, note?} → new version, enforced at once
 *   GET  /api/policies/versions          every version, newest first (?limit&offset)
 *   GET  /api/policies/versions/:v       one version with its rules
 *   POST /api/policies/check             {rules} → errors and warnings, nothing saved
 *   POST /api/policies/dry-run           reviewer: {rules, from?, to?} → replay of recorded traffic
 *
 * A PUT with errors is refused with 400 and the issues; warnings do not block it (a rule may name
 * a connection that is about to be added) and come back with the result. `baseVersion` guards
 * against overwriting someone else's edit: when it is not the version in force, 409.
 */
import type { ServerResponse } from 'node:http';
import type { PolicyIssue } from '../../../shared/api';
import type { Config } from '../../../shared/config';
import { connectionsNow } from '../../connections/store';
import type { GatewayServices } from '../../services';
import { checkPolicies, parsePolicies } from '../../policy/check';
import { policyContext } from '../../policy/context';
import { candidateMasking, dryRun } from '../../policy/dry-run';
import { validateMaskingConfig } from '../../masking/engine';
import { applyPolicyChange, policyHistory } from '../../policy/versions';
import { HANDLED, HttpError, type Router, sendJson } from '../router';

function time(v: unknown, name: string): number | undefined {
  if (v === undefined || v === null || v === '') return undefined;
  const n = typeof v === 'number' ? v : /^\d+$/.test(String(v)) ? Number(v) : Date.parse(String(v));
  if (!Number.isFinite(n)) throw new HttpError(400, 'bad_request', `${name} must be a time (ISO 8601 or ms since epoch)`);
  return n;
}

function invalid(res: ServerResponse, issues: { path: (string | number)[]; message: string; level?: string }[]): typeof HANDLED {
  sendJson(res, 400, { error: { code: 'invalid_policies', message: `the rules are not valid: ${issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`, issues } });
  return HANDLED;
}

function rulesFrom(body: unknown): unknown {
  if (Array.isArray(body)) return body;
  if (body && typeof body === 'object' && 'rules' in body) return (body as { rules: unknown }).rules;
  throw new HttpError(400, 'bad_request', 'send {"rules": [...]}');
}

export function registerPolicyRoutes(router: Router, s: GatewayServices): void {
  const history = policyHistory(s.store);

  router.get('/api/policies', () => {
    const latest = history.latest();
    const rules = s.policy.rules;
    return {
      version: latest?.version ?? 0,
      author: latest?.authorName ?? null,
      updatedAt: latest?.createdAt ?? null,
      source: latest?.source ?? 'config',
      rules,
      warnings: checkPolicies(rules, policyContext(s)).filter((i) => i.level === 'warning'),
    };
  });

  router.put(
    '/api/policies',
    async ({ identity, res, json }) => {
      const body = await json<unknown>();
      const parsed = parsePolicies(rulesFrom(body));
      if (!parsed.ok) return invalid(res, parsed.issues);
      const issues: PolicyIssue[] = checkPolicies(parsed.rules, policyContext(s));
      const errors = issues.filter((i) => i.level === 'error');
      if (errors.length) return invalid(res, errors);
      const o = (body && typeof body === 'object' && !Array.isArray(body) ? body : {}) as { baseVersion?: unknown; note?: unknown };
      const current = history.latest()?.version ?? 0;
      if (o.baseVersion !== undefined && o.baseVersion !== null && Number(o.baseVersion) !== current) {
        throw new HttpError(409, 'version_conflict', `the rules changed since version ${o.baseVersion} (now version ${current}); reload and edit again`);
      }
      const note = typeof o.note === 'string' && o.note.trim() ? o.note.trim().slice(0, 500) : undefined;
      const v = applyPolicyChange(s, { rules: parsed.rules, author: { subject: identity!.subject, name: identity!.name }, source: 'console', note });
      return { version: v.version, author: v.authorName, updatedAt: v.createdAt, source: v.source, rules: v.rules, warnings: issues };
    },
    { role: 'admin' },
  );

  router.get('/api/policies/versions', ({ query }) => {
    const limit = Math.min(Math.max(Number(query.get('limit') ?? 200) || 200, 1), 1000);
    const offset = Math.max(Number(query.get('offset') ?? 0) || 0, 0);
    return history.list(limit, offset);
  });

  router.get('/api/policies/versions/:v', ({ params }) => {
    const n = Number(params['v']);
    const v = Number.isInteger(n) ? history.get(n) : undefined;
    if (!v) throw new HttpError(404, 'not_found', `no policy version ${params['v']}`);
    return v;
  });

  router.post('/api/policies/check', async ({ res, json }) => {
    const parsed = parsePolicies(rulesFrom(await json<unknown>()));
    if (!parsed.ok) return invalid(res, parsed.issues);
    const issues = checkPolicies(parsed.rules, policyContext(s));
    return { ok: !issues.some((i) => i.level === 'error'), issues };
  });

  router.post(
    '/api/policies/dry-run',
    async ({ res, json }) => {
      const body = await json();
      const parsed = parsePolicies(rulesFrom(body));
      if (!parsed.ok) return invalid(res, parsed.issues);
      const errors = checkPolicies(parsed.rules, policyContext(s)).filter((i) => i.level === 'error');
      if (errors.length) return invalid(res, errors);
      // A draft's masking rules, when sent, are what "masked" is judged by; else the gateway's.
      let masking: Pick<Config, 'masking' | 'detectors'> = s.config;
      if (body && typeof body === 'object' && (body.masking !== undefined || body.detectors !== undefined)) {
        const checked = validateMaskingConfig({ masking: body.masking ?? [], detectors: body.detectors ?? [] });
        if (!checked.ok) return invalid(res, checked.issues);
        masking = checked.config;
      }
      const opts = {
        masking: candidateMasking(masking),
        from: time(body && typeof body === 'object' ? (body as { from?: unknown }).from : undefined, 'from'),
        to: time(body && typeof body === 'object' ? (body as { to?: unknown }).to : undefined, 'to'),
        connections: connectionsNow(s.config, s.store),
        roles: s.config.identity.roles,
      };
      return s.store.settledRead(() => dryRun(s.store, parsed.rules, opts));
    },
    { role: 'reviewer' },
  );
}
