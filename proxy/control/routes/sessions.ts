import type { EndSessionRequest, SessionEvents, SessionList } from '../../../shared/api';
import type { RecordingViewedPayload, SessionFilter, SessionSummary, SessionTerminatedPayload } from '../../../shared/events';
import type { HoldView } from '../../../shared/holds';
import { hasRole, type Identity } from '../../../shared/identity';
import { canDecideHold } from '../../approvals/hold-queue';
import type { TeamStore } from '../../audit/shared-store/team';
import type { GatewayServices } from '../../services';
import { HttpError, intParam, type Router, timeParam } from '../router';
import { replayLimit } from './hold-replay';

const REASON_MAX = 500;
const EVENTS_MAX = 10_000;

/** With a shared store, this gateway's own sessions say so too: every row of the list names its gateway. */
function mark(team: TeamStore | undefined, session: SessionSummary): SessionSummary {
  return team ? { ...session, gateway: team.identity.id, gatewayName: team.identity.name } : session;
}

/**
 * The page of sessions: this gateway's from its SQLite index; with a shared store, merged with the
 * other gateways' from the store's index (read on the console worker), by latest activity.
 */
async function listSessions(s: GatewayServices, filter: SessionFilter, limit: number, offset: number): Promise<SessionList> {
  const team = s.team;
  if (!team) return s.store.settledRead(() => s.store.listSessions({ ...filter, limit, offset }));
  const want = offset + limit;
  const [local, remote] = await Promise.all([
    s.store.settledRead(() => s.store.listSessions({ ...filter, limit: want, offset: 0 })),
    team.ask('sessions', { filter, limit: want }).catch((err: Error) => err),
  ]);
  const mine = local.sessions.map((x) => mark(team, x));
  if (remote instanceof Error) return { total: local.total, sessions: mine.slice(offset, want), incomplete: `the other gateways' sessions could not be read from the shared store: ${remote.message}` };
  const merged = [...mine, ...remote.sessions].sort((a, b) => b.lastEventAt - a.lastEventAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return { total: local.total + remote.total, sessions: merged.slice(offset, want) };
}

/** A request to the shared store that got no answer: 503, saying so. */
function unavailable(err: Error): never {
  throw new HttpError(503, 'store_unavailable', `the shared store did not answer: ${err.message}`);
}

/** Another gateway's session `id`, from the shared store (404 when no gateway has it, 503 when the store does not answer). */
async function teamSession(team: TeamStore | undefined, id: string): Promise<SessionSummary> {
  const found = team ? await team.ask('session', { id }).catch((err: Error) => err) : null;
  if (found instanceof Error) throw new HttpError(503, 'store_unavailable', `no session ${id} on this gateway, and the shared store did not answer: ${found.message}`);
  if (!found) throw new HttpError(404, 'not_found', `no session ${id}`);
  return found;
}

/**
 * Another gateway's recording, from its events in the shared store, with the same rule as a local
 * one: reviewers see all of it; an approver of a hold in it sees it up to that hold's `hold.created`.
 */
async function teamRecording(s: GatewayServices, team: TeamStore, identity: Identity, session: SessionSummary, after: number, max: number): Promise<SessionEvents> {
  const gateway = session.gateway!;
  let limit: number | 'all' | null = 'all';
  if (!hasRole(identity, 'reviewer')) {
    const holds = await team.ask('holds', { gateway, id: session.id }).catch(unavailable);
    const seqs = holds.filter((h) => canDecideHold(identity, JSON.parse(h.view) as HoldView)).map((h) => h.createdSeq);
    limit = seqs.length ? Math.max(...seqs) : null;
  }
  if (limit === null) throw new HttpError(403, 'forbidden', 'this needs the reviewer role, or a hold in this session that you may decide');
  const { events, altered } = await team.ask('events', { gateway, id: session.id, after, limit: max }).catch(unavailable);
  if (after === 0) s.store.append({ kind: 'recording.viewed', actor: identity.subject, payload: { session: session.id, viewer: identity.name, gateway } satisfies RecordingViewedPayload });
  const shown = limit === 'all' ? events : events.filter((e) => e.seq <= (limit as number));
  const changed = altered.filter((seq) => shown.some((e) => e.seq === seq));
  return { session, events: shown, ...(limit === 'all' ? {} : { upToSeq: limit }), ...(changed.length ? { altered: changed } : {}) };
}

/** GET /api/sessions, /api/sessions/:id, /api/sessions/:id/events; POST /api/sessions/:id/end */
export function registerSessionRoutes(router: Router, s: GatewayServices): void {
  router.get(
    '/api/sessions',
    ({ query }) =>
      listSessions(
        s,
        {
          user: query.get('user') ?? undefined,
          connection: query.get('connection') ?? undefined,
          protocol: query.get('protocol') ?? undefined,
          from: timeParam(query, 'from'),
          to: timeParam(query, 'to'),
          hadHolds: query.get('hadHolds') === 'true',
          hadMasking: query.get('hadMasking') === 'true',
        },
        Math.min(intParam(query, 'limit') ?? 100, 1000),
        intParam(query, 'offset') ?? 0,
      ),
    { role: 'reviewer' },
  );
  router.get(
    '/api/sessions/:id',
    async ({ params }) => {
      const session = await s.store.settledRead(() => s.store.session(params['id']!));
      return session ? mark(s.team, session) : teamSession(s.team, params['id']!);
    },
    { role: 'reviewer' },
  );
  router.get(
    '/api/sessions/:id/events',
    async ({ params, query, identity }) => {
      const after = intParam(query, 'after') ?? 0;
      const max = Math.min(intParam(query, 'limit') ?? EVENTS_MAX, EVENTS_MAX);
      const { limit, session, all } = await s.store.settledRead(() => ({
        // Reviewers (and admins): every session, live ones included; an approver of a hold in it: the
        // session up to that hold. Watching a live session is reading it: the same rule.
        limit: replayLimit(s, identity!, params['id']!),
        session: s.store.session(params['id']!),
        all: s.store.sessionEvents(params['id']!, after, max),
      }));
      // Not recorded here: with a shared store, another gateway's session, replayed from its shipped events.
      if (!session && s.team) return teamRecording(s, s.team, identity!, await teamSession(s.team, params['id']!), after, max);
      if (limit === null) throw new HttpError(403, 'forbidden', 'this needs the reviewer role, or a hold in this session that you may decide');
      if (!session) throw new HttpError(404, 'not_found', `no session ${params['id']}`);
      const events = limit === 'all' ? all : all.filter((e) => e.seq <= limit);
      // Opening a recording is itself recorded (once per opening, not per page).
      if (after === 0) s.store.append({ kind: 'recording.viewed', actor: identity!.subject, payload: { session: session.id, viewer: identity!.name } satisfies RecordingViewedPayload });
      return { session: mark(s.team, session), events, ...(limit === 'all' ? {} : { upToSeq: limit }) };
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
      if (!session) {
        // Another gateway's: only the gateway holding its connection can end it.
        const other = s.team ? await s.team.ask('session', { id }).catch(() => null) : null;
        if (other) throw new HttpError(409, 'not_live', `session ${id} is recorded by gateway ${other.gatewayName ?? ''} ${other.gateway}: end it from that gateway's console`);
        throw new HttpError(404, 'not_found', `no session ${id}`);
      }
      if (!s.liveSessions.has(id)) throw new HttpError(409, 'not_live', session.endedAt !== null ? `session ${id} has already ended` : `session ${id} cannot be ended from here (only live SSH sessions on this gateway can)`);
      s.store.appendMany([{ kind: 'session.terminated', session: id, actor: identity!.subject, connection: session.connection ?? undefined, payload: { protocol: session.protocol, by: identity!.subject, byName: identity!.name, reason } satisfies SessionTerminatedPayload }]);
      s.liveSessions.endSession(id, `ended by ${identity!.name} from the Custody console: ${reason}`);
      return { session: id, ended: true as const };
    },
    { role: 'approver' },
  );
}
