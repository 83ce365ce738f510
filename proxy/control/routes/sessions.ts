import type { EndSessionRequest } from '../../../shared/api';
import type { RecordingViewedPayload, SessionTerminatedPayload } from '../../../shared/events';
import type { GatewayServices } from '../../services';
import { HttpError, intParam, type Router, timeParam } from '../router';
import { replayLimit } from './hold-replay';

const REASON_MAX = 500;

/** GET /api/sessions, /api/sessions/:id, /api/sessions/:id/events; POST /api/sessions/:id/end */
export function registerSessionRoutes(router: Router, s: GatewayServices): void {
  router.get(
    '/api/sessions',
    ({ query }) =>
      s.store.settledRead(() =>
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
      })),
    { role: 'reviewer' },
  );
  router.get(
    '/api/sessions/:id',
    async ({ params }) => {
      const session = await s.store.settledRead(() => s.store.session(params['id']!));
      if (!session) throw new HttpError(404, 'not_found', `no session ${params['id']}`);
      return session;
    },
    { role: 'reviewer' },
  );
  router.get(
    '/api/sessions/:id/events',
    async ({ params, query, identity }) => {
      const after = intParam(query, 'after') ?? 0;
      const { limit, session, all } = await s.store.settledRead(() => ({
        // Reviewers (and admins): every session, live ones included; an approver of a hold in it: the
        // session up to that hold. Watching a live session is reading it: the same rule.
        limit: replayLimit(s, identity!, params['id']!),
        session: s.store.session(params['id']!),
        all: s.store.sessionEvents(params['id']!, after, Math.min(intParam(query, 'limit') ?? 10_000, 10_000)),
      }));
      if (limit === null) throw new HttpError(403, 'forbidden', 'this needs the reviewer role, or a hold in this session that you may decide');
      if (!session) throw new HttpError(404, 'not_found', `no session ${params['id']}`);
      const events = limit === 'all' ? all : all.filter((e) => e.seq <= limit);
      // Opening a recording is itself recorded (once per opening, not per page).
      if (after === 0) s.store.append({ kind: 'recording.viewed', actor: identity!.subject, payload: { session: session.id, viewer: identity!.name } satisfies RecordingViewedPayload });
      return { session, events, ...(limit === 'all' ? {} : { upToSeq: limit }) };
    },
  );
  // Ends a live session: recorded first (who, why), then every channel is told the reason and closed.
  router.post(
    '/api/sessions/:id/end',
    async ({ params, identity, json }) => {
      const id = params['id']!;
      const body = await json<EndSessionRequest>();
      const reason = typeof body?.reason === 'string' ? body.reason.trim() : '';
      if (!reason || reason.length > REASON_MAX || [...reason].some((ch) => ch.charCodeAt(0) < 0x20)) throw new HttpError(400, 'bad_request', `send {"reason": "…"}: 1 to ${REASON_MAX} printable characters saying why the session is ended`);
      const session = await s.store.settledRead(() => s.store.session(id));
      if (!session) throw new HttpError(404, 'not_found', `no session ${id}`);
      if (!s.liveSessions.has(id)) throw new HttpError(409, 'not_live', session.endedAt !== null ? `session ${id} has already ended` : `session ${id} cannot be ended from here (only live SSH sessions on this gateway can)`);
      s.store.appendMany([{ kind: 'session.terminated', session: id, actor: identity!.subject, connection: session.connection ?? undefined, payload: { protocol: session.protocol, by: identity!.subject, byName: identity!.name, reason } satisfies SessionTerminatedPayload }]);
      s.liveSessions.endSession(id, `ended by ${identity!.name} from the Custody console: ${reason}`);
      return { session: id, ended: true as const };
    },
    { role: 'approver' },
  );
}
