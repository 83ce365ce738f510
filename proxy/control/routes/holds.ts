/**
 * Holds over REST (DESIGN.md, Control plane):
 *
 *   GET  /api/holds?state=pending|approved|denied|expired|abandoned|cancelled&limit&offset
 *   GET  /api/holds/:id
 *   POST /api/holds/:id/decision   {"decision": "approve"|"deny", "reason": "…", "grant": "30m"?}
 *
 * Admins and reviewers read the whole history; anyone else sees the holds they may decide (their
 * groups are among the hold's approvers) and their own requests. Deciding follows HoldQueue.decide;
 * a pending hold the viewer may not decide carries `youMayNotDecide` saying why.
 */
import type { HoldDecisionRequest, HoldState, HoldView } from '../../../shared/holds';
import { hasRole, type Identity } from '../../../shared/identity';
import { HoldDecisionError, holdVisibleTo, whyCannotDecide } from '../../approvals/hold-queue';
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

/** A pending hold as `who` sees it: with why they may not decide it, if they may not. */
function forViewer(s: GatewayServices, who: Identity, view: HoldView): HoldView {
  if (view.state !== 'pending') return view;
  const why = whyCannotDecide(who, view, 'approve', { separationOfDuties: s.config.identity.separationOfDuties, idpBacked: (p) => s.persons.isIdpBacked(p) });
  return why ? { ...view, youMayNotDecide: { code: why.code, message: why.message } } : view;
}

export function registerHoldRoutes(router: Router, s: GatewayServices): void {
  router.get('/api/holds', ({ identity, query }) => {
    const state = query.get('state') || undefined;
    if (state !== undefined && !STATES.includes(state as HoldState)) throw new HttpError(400, 'bad_request', `state must be one of ${STATES.join(', ')}`);
    const who = identity!;
    const all = hasRole(who, 'reviewer');
    const page = s.holds.list({
      state: state as HoldState | undefined,
      limit: Math.min(intParam(query, 'limit', 100), 1000),
      offset: intParam(query, 'offset', 0),
      visible: all ? undefined : (v) => holdVisibleTo(who, v),
    });
    return { ...page, holds: page.holds.map((h) => forViewer(s, who, h)) };
  });

  router.get('/api/holds/:id', ({ identity, params }) => {
    const view = s.holds.get(params['id']!);
    // Not visible reads as not found: the id alone should not reveal that a hold exists.
    if (!view || !(hasRole(identity!, 'reviewer') || holdVisibleTo(identity!, view))) throw new HttpError(404, 'not_found', `no hold ${params['id']}`);
    return forViewer(s, identity!, view);
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
