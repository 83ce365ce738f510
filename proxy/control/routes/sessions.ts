import type { GatewayServices } from '../../services';
import { HttpError, intParam, type Router, timeParam } from '../router';

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
      const session = s.store.session(params['id']!);
      if (!session) throw new HttpError(404, 'not_found', `no session ${params['id']}`);
      const after = intParam(query, 'after') ?? 0;
      const events = s.store.sessionEvents(params['id']!, after, Math.min(intParam(query, 'limit') ?? 10_000, 10_000));
      // Opening a recording is itself recorded (once per opening, not per page).
      if (after === 0) s.store.append({ kind: 'recording.viewed', actor: identity!.subject, payload: { session: session.id, viewer: identity!.name } });
      return { session, events };
    },
    { role: 'reviewer' },
  );
}
