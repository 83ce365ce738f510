/**
 * Connections over REST (the store and its rules: proxy/connections/):
 *
 *   GET  /api/connections               reviewer, approver or admin: every connection, without secrets
 *   POST /api/connections               admin: a connection plus a write-only secret → the new one
 *   PUT  /api/connections/:name         admin: changed fields (and secret) → the connection
 *   DELETE /api/connections/:name       admin: removes one added or edited from the console (an edited
 *                                       config-file connection goes back to the file's)
 *   POST /api/connections/test          admin: {kind, upstream} of an unsaved draft → reachability
 *   POST /api/connections/:name/test    admin: reachability of a saved connection
 *
 * A change applies after the gateway restarts (the listing marks it `pendingRestart`).
 */
import { ConnectionInputError } from '../../connections/input';
import { testUpstream } from '../../connections/probe';
import { ConnectionStore, fileConfig } from '../../connections/store';
import { ConnectionKind } from '../../../shared/config';
import type { GatewayServices } from '../../services';
import { HttpError, type Router } from '../router';

/** Where the gateway's listeners are bound, once they are. */
export interface BoundAddresses {
  /** The HTTP proxy, `host:port`. */
  http(): string | undefined;
  /** A postgres or ssh connection's listener, `host:port`. */
  postgres(name: string): string | undefined;
}

function asHttp<T>(change: () => T): T {
  try {
    return change();
  } catch (err) {
    if (err instanceof ConnectionInputError) throw new HttpError(err.status, err.code, err.message);
    throw err;
  }
}

/**
 * Registers the connection routes. `bound` gives the listeners' real addresses (for the client
 * snippets) once they listen.
 */
export function registerConnectionRoutes(router: Router, s: GatewayServices, bound: BoundAddresses = { http: () => undefined, postgres: () => undefined }): void {
  const connections = new ConnectionStore(fileConfig(s), (name) => bound.postgres(name));
  router.get('/api/connections', ({ identity }) => {
    if (!identity || !['admin', 'approver', 'reviewer'].some((r) => identity.roles.includes(r as never))) throw new HttpError(403, 'forbidden', 'this needs the reviewer, approver or admin role');
    return { connections: connections.list(), httpListen: bound.http() ?? s.config.listen.http, liveReload: false };
  });
  router.post(
    '/api/connections',
    async ({ identity, json, res }) => {
      const body = (await json()) ?? {};
      const added = asHttp(() => connections.add(body, identity!));
      res.statusCode = 201;
      return added;
    },
    { role: 'admin' },
  );
  router.put(
    '/api/connections/:name',
    async ({ identity, json, params }) => {
      const name = params['name']!;
      if (!connections.find(name)) throw new HttpError(404, 'not_found', `no connection ${name}`);
      const body = (await json()) ?? {};
      const edited = asHttp(() => connections.edit(name, body, identity!));
      if (!edited) throw new HttpError(404, 'not_found', `no connection ${name}`);
      return edited;
    },
    { role: 'admin' },
  );
  router.delete(
    '/api/connections/:name',
    ({ identity, params }) => {
      const removed = asHttp(() => connections.remove(params['name']!, identity!));
      if (!removed) throw new HttpError(404, 'not_found', `no connection ${params['name']}`);
      return { removed: removed.name, fromConfig: removed.fromConfig };
    },
    { role: 'admin' },
  );
  router.post(
    '/api/connections/test',
    async ({ json }) => {
      const body = (await json()) ?? {};
      const kind = ConnectionKind.safeParse(body.kind);
      if (typeof body.upstream !== 'string' || !kind.success) throw new HttpError(400, 'invalid_connection', 'kind (openai, anthropic, http or postgres) and upstream are required');
      return testUpstream({ kind: kind.data, upstream: body.upstream });
    },
    { role: 'admin' },
  );
  router.post(
    '/api/connections/:name/test',
    ({ params }) => {
      const connection = connections.find(params['name']!);
      if (!connection) throw new HttpError(404, 'not_found', `no connection ${params['name']}`);
      return testUpstream({ kind: connection.kind, upstream: connections.upstreamOf(connection.name) ?? connection.upstream });
    },
    { role: 'admin' },
  );
}
