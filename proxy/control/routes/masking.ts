/**
 * Masking over REST:
 *
 *   GET  /api/masking                    reviewer: {detectors, masking} in force, version, built-in detectors
 *   PUT  /api/masking                    admin: {detectors, masking, baseVersion?, note?} → new version, applied at once
 *   POST /api/masking/check              reviewer: {detectors, masking, sample?} → issues, and the sample masked
 *   GET  /api/masking/versions           reviewer: every version, newest first (?limit&offset)
 *   GET  /api/masking/versions/:v        reviewer: one version
 *   GET  /api/masking/detectors          signed in: the built-in detectors (id, type, kind, description) and groups
 *
 * Bodies are validated with the config schema (shared/config.ts) and compiled (regular
 * expressions, detector references, JSON paths) before anything is saved; a PUT with problems is
 * refused with 400 and the issues. Each PUT is a new `policy_versions` row (kind `masking`), a
 * chained `masking.changed` event, a live engine reload and a `masking.updated` bus message.
 */
import type { ServerResponse } from 'node:http';
import type { ConfigIssue } from '../../../shared/config';
import { BUILTIN_DETECTORS, DETECTOR_GROUPS } from '../../masking/detectors';
import { createMaskingEngine, type CustodyMaskingEngine, MaskingError, validateMaskingConfig } from '../../masking/engine';
import { applyMaskingChange, maskingHistory } from '../../masking/versions';
import type { GatewayServices } from '../../services';
import { HANDLED, HttpError, type Router, sendJson } from '../router';
import { connectionsNow } from '../../connections/store';

function invalid(res: ServerResponse, issues: ConfigIssue[]): typeof HANDLED {
  sendJson(res, 400, { error: { code: 'invalid_masking', message: `the masking config is not valid: ${issues.map((i) => `${i.path.join('.') || '(body)'}: ${i.message}`).join('; ')}`, issues } });
  return HANDLED;
}

function bodyObject(body: unknown): Record<string, unknown> {
  if (!body || typeof body !== 'object' || Array.isArray(body)) throw new HttpError(400, 'bad_request', 'send {"detectors": [...], "masking": [...]}');
  return body as Record<string, unknown>;
}

/** Validates `{detectors, masking}` against the schema, the connections and the policies in force. */
function check(s: GatewayServices, body: Record<string, unknown>) {
  const r = validateMaskingConfig({ detectors: body['detectors'] ?? [], masking: body['masking'] ?? [] }, { connections: connectionsNow(s.config, s.store).map((c) => c.name) });
  if (!r.ok) return r;
  const ids = new Set(r.config.masking.map((m) => m.id));
  const issues: ConfigIssue[] = [];
  for (const p of s.policy.rules)
    for (const id of p.mask ?? []) if (!ids.has(id)) issues.push({ path: ['masking'], message: `policy "${p.name}" uses masking rule "${id}", which this config does not define` });
  return issues.length ? { ok: false as const, issues } : r;
}

export function registerMaskingRoutes(router: Router, s: GatewayServices): void {
  const history = maskingHistory(s.store);
  const describe = () => {
    const latest = history.latest();
    const engine = s.masking as Partial<CustodyMaskingEngine>;
    return {
      version: latest?.version ?? 0,
      author: latest?.authorName ?? null,
      updatedAt: latest?.createdAt ?? null,
      source: latest?.source ?? 'config',
      detectors: s.config.detectors,
      masking: s.config.masking,
      builtinDetectors: (engine.detectors?.() ?? []).filter((d) => d.kind !== 'custom'),
      detectorGroups: Object.keys(DETECTOR_GROUPS),
    };
  };

  router.get('/api/masking', () => describe(), { role: 'reviewer' });

  // What a rule may name: the console's rule form offers these, so nobody copies the list by hand.
  router.get('/api/masking/detectors', () => ({
    detectors: BUILTIN_DETECTORS.map(({ id, type, kind, description }) => ({ id, type, kind, description })),
    groups: DETECTOR_GROUPS,
  }));

  router.put(
    '/api/masking',
    async ({ identity, res, json }) => {
      const body = bodyObject(await json<unknown>());
      const r = check(s, body);
      if (!r.ok) return invalid(res, r.issues);
      const current = history.latest()?.version ?? 0;
      if (body['baseVersion'] !== undefined && body['baseVersion'] !== null && Number(body['baseVersion']) !== current)
        throw new HttpError(409, 'version_conflict', `the masking config changed since version ${String(body['baseVersion'])} (now version ${current}); reload and edit again`);
      const note = typeof body['note'] === 'string' && body['note'].trim() ? body['note'].trim().slice(0, 500) : undefined;
      applyMaskingChange(s, { config: r.config, author: { subject: identity!.subject, name: identity!.name }, source: 'console', note });
      return describe();
    },
    { role: 'admin' },
  );

  router.post(
    '/api/masking/check',
    async ({ res, json }) => {
      const body = bodyObject(await json<unknown>());
      const r = check(s, body);
      if (!r.ok) return invalid(res, r.issues);
      const sample = typeof body['sample'] === 'string' ? body['sample'].slice(0, 64 * 1024) : undefined;
      if (sample === undefined) return { ok: true, issues: [] };
      // A throwaway engine with a throwaway key: the preview never shows this install's hash tokens.
      const preview = createMaskingEngine(r.config, { hmacKey: Buffer.from('preview') });
      const masked = preview.forConnection({ name: 'preview', kind: 'http', upstream: 'http://preview.invalid' }, r.config.masking.map((m) => m.id));
      let out;
      try {
        out = masked?.request('/', 'text/plain', Buffer.from(sample), r.config.masking.map((m) => m.id));
      } catch (err) {
        // The scan budget ran out (or a detector failed): said as an issue with the sample, never a 500.
        if (!(err instanceof MaskingError)) throw err;
        return invalid(res, [{ path: ['sample'], message: err.message }]);
      }
      return { ok: true, issues: [], sample: out ? { text: out.log, spans: out.spans, counts: out.counts } : { text: sample, spans: [], counts: {} } };
    },
    { role: 'reviewer' },
  );

  router.get(
    '/api/masking/versions',
    ({ query }) => {
      const limit = Math.min(Math.max(Number(query.get('limit') ?? 200) || 200, 1), 1000);
      const offset = Math.max(Number(query.get('offset') ?? 0) || 0, 0);
      return history.list(limit, offset);
    },
    { role: 'reviewer' },
  );

  router.get(
    '/api/masking/versions/:v',
    ({ params }) => {
      const n = Number(params['v']);
      const v = Number.isInteger(n) ? history.get(n) : undefined;
      if (!v) throw new HttpError(404, 'not_found', `no masking version ${params['v']}`);
      return v;
    },
    { role: 'reviewer' },
  );
}
