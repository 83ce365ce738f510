/**
 * Holds over REST (DESIGN.md, Control plane):
 *
 *   GET  /api/holds?state=pending|approved|denied|expired|abandoned|cancelled&limit&offset
 *   GET  /api/holds/:id
 *   POST /api/holds/:id/decision   {"decision": "approve"|"deny", "reason": "…", "grant": "30m"?}
 *
 * Admins and reviewers read the whole history; anyone else sees the holds they may decide (their
 * groups are among the hold's approvers) and their own requests. Deciding follows HoldQueue.decide.
 */
import type { HoldDecisionRequest, HoldState } from '../../../shared/holds';
import { hasRole } from '../../../shared/identity';
import { HoldDecisionError, holdVisibleTo } from '../../approvals/hold-queue';
import type { GatewayServices } from '../../services';
import { HttpError, type Router } from '../router';

const STATES: HoldState[] = ['pending', 'approved', 'denied', 'expired', 'abandoned', 'cancelled'];

function intParam(q: URLSearchParams, name: string, fallback: number): number {
  const v = q.get(name);
  if (v === null || v === '') return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new HttpError(400, 'bad_request', `${name} must be a non-negative integer`);
  return n;
}

export function registerHoldRoutes(router: Router, s: GatewayServices): void {
  router.get('/api/holds', ({ identity, query }) => {
    const state = query.get('state') || undefined;
    if (state !== undefined && !STATES.includes(state as HoldState)) throw new HttpError(400, 'bad_request', `state must be one of ${STATES.join(', ')}`);
    const who = identity!;
    const all = hasRole(who, 'reviewer');
    return s.holds.list({
      state: state as HoldState | undefined,
      limit: Math.min(intParam(query, 'limit', 100), 1000),
      offset: intParam(query, 'offset', 0),
      visible: all ? undefined : (v) => holdVisibleTo(who, v),
    });
  });

  router.get('/api/holds/:id', ({ identity, params }) => {
    const view = s.holds.get(params['id']!);
    // Not visible reads as not found: the id alone should not reveal that a hold exists.
    if (!view || !(hasRole(identity!, 'reviewer') || holdVisibleTo(identity!, view))) throw new HttpError(404, 'not_found', `no hold ${params['id']}`);
    return view;
  });

  router.post('/api/holds/:id/decision', async ({ identity, params, json }) => {
    const body = await json<HoldDecisionRequest>();
    if (!body || typeof body !== 'object') throw new HttpError(400, 'bad_request', 'send {"decision": "approve"|"deny", "reason": "…"}');
    try {
      return s.holds.decide(params['id']!, identity!, body);
    } catch (err) {
      if (err instanceof HoldDecisionError) throw new HttpError(err.status, err.code, err.message);
      throw err;
    }
  });
}
