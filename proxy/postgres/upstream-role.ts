/**
 * Per-group upstream roles (connection `roles: {dev: app_readonly, dba: app_admin}`): the role a
 * client's session runs as upstream, so PostgreSQL's own privileges back the classifier and the
 * server's logs name a role per group. It is applied at upstream login as the startup parameter
 * `role` — the same setting `SET ROLE` changes, and the value `RESET ROLE` and `DISCARD ALL` return
 * to. The gateway's login user must be a member of every role it maps to.
 */
import type { Connection } from '../../shared/config';

export type UpstreamRole = { role: string } | { none: true } | { refuse: string };

/** Startup settings a client may not send when roles are mapped: they would pick the role itself. */
const ROLE_OPTION = /(^|[\s-])(c\s*)?(role|session_authorization)\s*=/i;

/**
 * The role for a client with `groups`: the first entry of `roles` (in the order written) whose group
 * the client has, else the `'*'` entry; a client matching none is refused (fail closed: running it
 * as the login user would give it the gateway's own privileges).
 */
export function upstreamRoleFor(connection: Connection, groups: readonly string[], clientParams: ReadonlyMap<string, string>): UpstreamRole {
  const roles = connection.roles;
  if (!roles) return { none: true };
  for (const key of clientParams.keys()) {
    if (key === 'role' || key === 'session_authorization') return { refuse: `the startup parameter "${key}" is set by the gateway on connection ${connection.name}` };
  }
  if (ROLE_OPTION.test(clientParams.get('options') ?? '')) return { refuse: `startup options may not set role or session_authorization on connection ${connection.name}` };
  for (const [group, role] of Object.entries(roles)) if (group !== '*' && groups.includes(group)) return { role };
  if (roles['*']) return { role: roles['*'] };
  return { refuse: `no upstream role on connection ${connection.name} for groups ${groups.length ? groups.join(', ') : '(none)'}` };
}
