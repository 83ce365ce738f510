/**
 * Holds over REST (DESIGN.md, Control plane):
 *
 *   GET  /api/holds?state=pending|approved|denied|expired|abandoned|cancelled&limit&offset
 *   GET  /api/holds/:id
 *   POST /api/holds/:id/decision   {"decision": "approve"|"deny", "reason": "…", "grant": "30m"?}
 *
 * Admins and reviewers read the whole history; anyone else sees the holds they may decide (their
 * groups are among the hold's approvers) and their own requests. Deciding follows HoldQueue.decide;
 * a pending hold carries `youMayNotDecide` (why the viewer may not decide it) and `approversWhoCan`
 * (the persons who still may approve it).
 */
import type { HoldDecisionRequest, HoldState, HoldView } from '../../../shared/holds';
import { hasRole, type Identity } from '../../../shared/identity';
import { HoldDecisionError, holdVisibleTo, whyCannotDecide } from '../../approvals/hold-queue';
import { rolesFor } from '../../identity/authenticator';
import { LOCAL_PERSON } from '../../identity/persons';
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

/**
 * Who could act on holds: every person holding an active API key or a recently seen identity,
 * with the groups and roles that credential gives. Built once per listing.
 */
function candidates(s: GatewayServices): { person: string; name: string; identity: Identity }[] {
  const now = Date.now();
  const out: { person: string; name: string; identity: Identity }[] = [];
  const add = (subject: string, groups: string[], via: Identity['via']) => {
    const person = s.persons.personOf(subject);
    if (!person || s.persons.isLocked(person)) return;
    out.push({ person, name: s.persons.get(person)?.name ?? subject, identity: { subject, name: subject, groups, roles: rolesFor(groups, s.config.identity.roles), via, person } });
  };
  for (const k of s.keys.list()) if (!k.revokedAt && !(k.expiresAt !== null && k.expiresAt <= now)) add(`key:${k.id}`, k.groups, 'api-key');
  for (const u of s.users.list()) if (u.subject.includes('#')) add(u.subject, u.groups, 'oidc');
  const local = s.persons.get(LOCAL_PERSON);
  if (local && local.lockedAt === null) out.push({ person: LOCAL_PERSON, name: local.name, identity: { subject: 'local:', name: local.name, groups: [], roles: ['admin', 'user'], via: 'console', person: LOCAL_PERSON } });
  return out;
}

/**
 * A pending hold as `who` sees it: why they may not decide it, if they may not, and which persons
 * still may approve it (so a requester knows whom to ask).
 */
function forViewer(s: GatewayServices, who: Identity, view: HoldView, pool: () => ReturnType<typeof candidates>): HoldView {
  if (view.state !== 'pending') return view;
  const sod = { separationOfDuties: s.config.identity.separationOfDuties, idpBacked: (p: string) => s.persons.isIdpBacked(p) };
  const why = whyCannotDecide(who, view, 'approve', sod);
  const can = new Set<string>();
  for (const c of pool()) if (!whyCannotDecide(c.identity, view, 'approve', sod)) can.add(c.name);
  return { ...view, ...(why ? { youMayNotDecide: { code: why.code, message: why.message } } : {}), approversWhoCan: [...can].sort() };
}

export function registerHoldRoutes(router: Router, s: GatewayServices): void {
  router.get('/api/holds', async ({ identity, query }) => {
    const state = query.get('state') || undefined;
    if (state !== undefined && !STATES.includes(state as HoldState)) throw new HttpError(400, 'bad_request', `state must be one of ${STATES.join(', ')}`);
    const who = identity!;
    const all = hasRole(who, 'reviewer');
    // Read on the commit thread: the console shares the proxies' thread.
    const page = await s.holds.listAsync({
      state: state as HoldState | undefined,
      limit: Math.min(intParam(query, 'limit', 100), 1000),
      offset: intParam(query, 'offset', 0),
      visible: all ? undefined : (v) => holdVisibleTo(who, v),
    });
    let pool: ReturnType<typeof candidates> | undefined;
    const lazyPool = () => (pool ??= candidates(s));
    return { ...page, holds: page.holds.map((h) => forViewer(s, who, h, lazyPool)) };
  });

  router.get('/api/holds/:id', async ({ identity, params }) => {
    const view = await s.holds.getAsync(params['id']!);
    // Not visible reads as not found: the id alone should not reveal that a hold exists.
    if (!view || !(hasRole(identity!, 'reviewer') || holdVisibleTo(identity!, view))) throw new HttpError(404, 'not_found', `no hold ${params['id']}`);
    return forViewer(s, identity!, view, () => candidates(s));
  });

  router.post('/api/holds/:id/decision', async ({ identity, params, json }) => {
    const body = await json<HoldDecisionRequest>();
    if (!body || typeof body !== 'object') throw new HttpError(400, 'bad_request', 'send {"decision": "approve"|"deny", "reason": "…"}');
    try {
      return await s.holds.decide(params['id']!, identity!, body);
    } catch (err) {
      if (err instanceof HoldDecisionError) throw new HttpError(err.status, err.code, err.message);
      throw err;
    }
  });
}
