/**
 * Gateway API keys over REST (admin only):
 *
 *   GET  /api/keys                       every key (never the secret; only its hash is stored)
 *   POST /api/keys                       {name, groups, expires?: "30d", owner?: person, newOwner?: name}
 *                                        → the key, shown this once; owned by the caller's person by default
 *   POST /api/keys/:id/revoke            revoke now
 *   POST /api/keys/:id/expire            expire now (same effect, recorded as an expiry)
 *
 * Creation and revocation are recorded (`key.created`, `key.revoked`); revoking or expiring a key
 * also ends the console sessions signed in with it.
 */
import type { KeyView } from '../../../shared/api';
import { parseDuration } from '../../../shared/config';
import type { KeyCreatedPayload, KeyRevokedPayload } from '../../../shared/events';
import type { ApiKeyRecord, Identity } from '../../../shared/identity';
import { PersonError } from '../../identity/persons';
import type { GatewayServices } from '../../services';
import { HttpError, type Router } from '../router';

function view(k: ApiKeyRecord, now = Date.now()): KeyView {
  return { ...k, state: k.revokedAt ? 'revoked' : k.expiresAt !== null && k.expiresAt <= now ? 'expired' : 'active' };
}

const GROUP_RE = /^[A-Za-z0-9_.:@/-]{1,128}$/;

/**
 * Who owns a key being minted: the signed-in person by default, so nobody mints a second identity
 * to vote twice; an existing person named by `owner`; or a new person `newOwner`, which an admin
 * may create (recorded as person.created).
 */
function keyOwner(s: GatewayServices, identity: Identity, owner: unknown, newOwner: unknown): string {
  if (owner !== undefined && newOwner !== undefined) throw new HttpError(400, 'bad_request', 'give owner (an existing person) or newOwner (a new person), not both');
  try {
    if (typeof newOwner === 'string') return s.persons.create(newOwner, identity.subject, `owner of a new API key, created by ${identity.name}`).id;
    if (typeof owner === 'string' && owner.trim()) return s.persons.resolve(owner.trim()).id;
  } catch (err) {
    if (err instanceof PersonError) throw new HttpError(err.status, err.code, err.message);
    throw err;
  }
  if (owner !== undefined || newOwner !== undefined) throw new HttpError(400, 'bad_request', 'owner is a person id or name; newOwner is the name of a new person');
  if (!identity.person) throw new HttpError(409, 'no_person', 'your credential has no person; name the key\'s owner with owner or newOwner');
  return identity.person;
}

export function registerKeyRoutes(router: Router, s: GatewayServices): void {
  router.get('/api/keys', () => ({ keys: s.keys.list().map((k) => view(k)) }), { role: 'admin' });

  router.post(
    '/api/keys',
    async ({ identity, json }) => {
      const body = (await json()) ?? {};
      const name = typeof body.name === 'string' ? body.name.trim() : '';
      if (!name || name.length > 200) throw new HttpError(400, 'bad_request', 'name is required (at most 200 characters)');
      const groups = body.groups === undefined ? [] : body.groups;
      if (!Array.isArray(groups) || !groups.every((g) => typeof g === 'string' && GROUP_RE.test(g))) throw new HttpError(400, 'bad_request', 'groups must be a list of group names (letters, digits, _ . : @ / -)');
      let expiresAt: number | null = null;
      if (body.expires !== undefined && body.expires !== null && body.expires !== '') {
        try {
          expiresAt = Date.now() + parseDuration(String(body.expires));
        } catch (err) {
          throw new HttpError(400, 'bad_request', `expires: ${(err as Error).message}`);
        }
      }
      const person = keyOwner(s, identity!, body.owner, body.newOwner);
      const { key, record } = s.keys.create({ name, groups: groups as string[], expiresAt, createdBy: identity!.subject });
      s.persons.attach(`key:${record.id}`, 'api-key', person, identity!.subject);
      s.store.append({ kind: 'key.created', actor: identity!.subject, payload: { id: record.id, name, groups: groups as string[], expiresAt, person, actorName: identity!.name } satisfies KeyCreatedPayload });
      return { key, ...view(record), person };
    },
    { role: 'admin' },
  );

  for (const how of ['revoke', 'expire'] as const) {
    router.post(
      `/api/keys/:id/${how}`,
      ({ identity, params }) => {
        const id = params['id']!;
        const record = s.keys.get(id);
        if (!record) throw new HttpError(404, 'not_found', `no key ${id}`);
        if (record.revokedAt) throw new HttpError(409, 'already_revoked', `key ${id} is already revoked`);
        if (how === 'revoke') s.keys.revoke(id);
        else s.keys.expire(id);
        const ended = s.consoleSessions.deleteForKey(id);
        s.store.append({ kind: 'key.revoked', actor: identity!.subject, payload: { id, how, name: record.name, consoleSessionsEnded: ended, actorName: identity!.name } satisfies KeyRevokedPayload });
        return view(s.keys.get(id)!);
      },
      { role: 'admin' },
    );
  }
}
