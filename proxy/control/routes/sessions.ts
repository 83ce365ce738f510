import type { GatewayServices } from '../../services';
import { HttpError, intParam, type Router, timeParam } from '../router';
import { replayLimit } from './hold-replay';

/** GET /api/sessions, /api/sessions/:id, /api/sessions/:id/events */
export function registerSessionRoutes(router: Router, s: GatewayServices): void {
  router.get(
    '/api/sessions',
    ({ query }) =>
      s.store.listSessions({
        user: query.get('user') ?? undefined,
        connection: query.get('connection') ?? undefined,
        protocol: query.get('protocol') ?? undefined,
        from: timeParam(query, 'from'),
        to: timeParam(query, 'to'),
        hadHolds: query.get('hadHolds') === 'true',
        hadMasking: query.get('hadMasking') === 'true',
        limit: Math.min(intParam(query, 'limit') ?? 100, 1000),
        offset: intParam(query, 'offset') ?? 0,
      }),
    { role: 'reviewer' },
  );
  router.get(
    '/api/sessions/:id',
    ({ params }) => {
      const session = s.store.session(params['id']!);
      if (!session) throw new HttpError(404, 'not_found', `no session ${params['id']}`);
      return session;
    },
    { role: 'reviewer' },
  );
  router.get(
    '/api/sessions/:id/events',
    ({ params, query, identity }) => {
      // Reviewers: every session; an approver of a hold in it: the session up to that hold.
      const limit = replayLimit(s, identity!, params['id']!);
      if (limit === null) throw new HttpError(403, 'forbidden', 'this needs the reviewer role, or a hold in this session that you may decide');
      const session = s.store.session(params['id']!);
      if (!session) throw new HttpError(404, 'not_found', `no session ${params['id']}`);
      const after = intParam(query, 'after') ?? 0;
      const all = s.store.sessionEvents(params['id']!, after, Math.min(intParam(query, 'limit') ?? 10_000, 10_000));
      const events = limit === 'all' ? all : all.filter((e) => e.seq <= limit);
      // Opening a recording is itself recorded (once per opening, not per page).
      if (after === 0) s.store.append({ kind: 'recording.viewed', actor: identity!.subject, payload: { session: session.id, viewer: identity!.name } });
      return { session, events, ...(limit === 'all' ? {} : { upToSeq: limit }) };
    },
  );
}
