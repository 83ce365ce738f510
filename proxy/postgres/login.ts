/**
 * Login, after the startup packet: the client's password is a Custody API key or an OIDC token,
 * which becomes an identity; then the gateway logs in to the upstream with the connection's own
 * credential (upstream.ts: TLS, SCRAM-SHA-256, MD5 or cleartext), as the group's role when the
 * connection maps groups to roles (upstream-role.ts). A failure is recorded here (`auth.failure`, or
 * `pg.error` in phase `connect`: no session began, but who tried and why it failed is part of the
 * record) and returned as the FATAL error the client gets.
 */
import type { AuthFailureDetails } from '../../shared/events';
import type { Identity } from '../../shared/identity';
import { AuthError } from '../identity/authenticator';
import type { ErrorInit } from './backend-messages';
import { SqlState } from './message-codes';
import type { PgListenerContext } from './session-context';
import { connectUpstream, UpstreamError, type UpstreamSession } from './upstream';
import { upstreamRoleFor } from './upstream-role';

/** Who is logging in, from where, with which startup parameters. */
export interface LoginAttempt {
  /** The user name the client sent (any: the credential says who it is). */
  user: string;
  clientAddress: string;
  startupParams: ReadonlyMap<string, string>;
}

export type Refused = { refusal: ErrorInit };

/** Checks the password (a Custody API key or an OIDC token); a failure is recorded as `auth.failure`. */
export async function authenticateClient(ctx: PgListenerContext, password: string, attempt: LoginAttempt): Promise<{ identity: Identity } | Refused> {
  const services = ctx.services;
  try {
    return { identity: await services.auth.authenticate(password || undefined) };
  } catch (err) {
    const message = err instanceof AuthError ? err.message : 'the credential could not be checked';
    try {
      const payload = { protocol: 'postgres', user: attempt.user, client: attempt.clientAddress, reason: err instanceof AuthError ? err.code : 'error', message } satisfies AuthFailureDetails;
      if (services.login) services.login.failures.record(attempt.clientAddress, payload, { connection: ctx.connection.name, credential: services.keys?.knownPrefix(password || undefined) });
      else services.store.appendMany([{ kind: 'auth.failure', connection: ctx.connection.name, payload }]);
    } catch {
      // the refusal below stands either way
    }
    return { refusal: { severity: 'FATAL', code: SqlState.InvalidPassword, message: `password authentication failed for user "${attempt.user}": ${message}` } };
  }
}

/**
 * Logs in to the upstream for `identity`: the client's startup parameters but its user and database
 * (the connection's credential and database are used), plus the group's role when the connection
 * maps groups to roles. A refusal or a failed connection is recorded as `pg.error`.
 */
export async function connectUpstreamFor(
  ctx: PgListenerContext,
  identity: Identity,
  attempt: LoginAttempt,
): Promise<{ upstream: UpstreamSession; role: string | undefined } | Refused> {
  const params: Record<string, string> = {};
  for (const [k, v] of attempt.startupParams) if (k !== 'user' && k !== 'database' && !k.startsWith('_pq_.')) params[k] = v;
  const role = upstreamRoleFor(ctx.connection, identity.groups, attempt.startupParams);
  if ('refuse' in role) return { refusal: { severity: 'FATAL', code: SqlState.InvalidAuthorization, message: role.refuse } };
  if ('role' in role) params['role'] = role.role;
  try {
    const upstream = await connectUpstream(ctx.target, { params, database: attempt.startupParams.get('database') ?? attempt.user });
    return { upstream, role: 'role' in role ? role.role : undefined };
  } catch (err) {
    const fields = err instanceof UpstreamError ? err.fields : undefined;
    const code = fields?.get('C') ?? SqlState.ConnectionRejected;
    const message = `upstream ${ctx.connection.name}: ${fields?.get('M') ?? (err as Error).message}`;
    try {
      const target = ctx.target;
      ctx.services.store.appendMany([
        {
          kind: 'pg.error',
          actor: identity.subject,
          connection: ctx.connection.name,
          payload: {
            protocol: 'postgres',
            fatal: true,
            phase: 'connect',
            code,
            message,
            actorName: identity.name,
            user: attempt.user,
            client: attempt.clientAddress,
            upstream: { host: target.host, port: target.port },
          },
        },
      ]);
    } catch {
      // the refusal below stands either way
    }
    return { refusal: { severity: 'FATAL', code, message } };
  }
}
