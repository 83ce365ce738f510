/**
 * Persons over REST (admin only; see proxy/identity/persons.ts):
 *
 *   GET  /api/persons                    every person, their credentials, locked or not
 *   POST /api/persons                    {name} → a new person (recorded: person.created)
 *   POST /api/persons/:id/link           {credential: "key:<id>" | "<issuer>#<sub>"} → the credential
 *                                        now belongs to this person (recorded: person.linked)
 *   POST /api/persons/:id/lock           revokes every key of the person, ends all their sessions
 *                                        (console, held requests, psql); recorded: person.locked
 *
 * `:id` is a person id, or a name that exactly one person has.
 */
import type { Identity } from '../../../shared/identity';
import type { CredentialKind } from '../../../shared/identity';
import { lockPerson, PersonError } from '../../identity/persons';
import type { GatewayServices } from '../../services';
import { HttpError, type Router } from '../router';

function asHttp<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof PersonError) throw new HttpError(err.status, err.code, err.message);
    throw err;
  }
}

/** What kind of credential a subject names, or undefined when it names none the gateway knows. */
export function credentialKind(s: GatewayServices, credential: string): CredentialKind | undefined {
  if (credential.startsWith('key:')) return s.keys.get(credential.slice(4)) ? 'api-key' : undefined;
  if (credential.startsWith('local:')) return 'local';
  const hash = credential.indexOf('#');
  if (hash > 0 && hash < credential.length - 1 && s.config.identity.oidc.some((i) => i.issuer === credential.slice(0, hash))) return 'oidc';
  return undefined;
}

export function registerPersonRoutes(router: Router, s: GatewayServices): void {
  router.get('/api/persons', () => ({ persons: s.persons.list() }), { role: 'admin' });

  router.post(
    '/api/persons',
    async ({ identity, json }) => {
      const body = await json();
      if (typeof body?.name !== 'string') throw new HttpError(400, 'bad_request', 'send {"name": "…"}');
      return asHttp(() => s.persons.create(body.name as string, identity!.subject, `created by ${identity!.name}`));
    },
    { role: 'admin' },
  );

  router.post(
    '/api/persons/:id/link',
    async ({ identity, params, json }) => {
      const body = await json();
      const credential = typeof body?.credential === 'string' ? body.credential.trim() : '';
      const kind = credential ? credentialKind(s, credential) : undefined;
      if (!kind) throw new HttpError(400, 'bad_request', 'credential is "key:<key id>" or "<issuer>#<user claim>" of a configured issuer');
      return asHttp(() => {
        const person = s.persons.resolve(params['id']!);
        if (person.lockedAt !== null) throw new PersonError(409, 'locked', `${person.id} is locked`);
        s.persons.link(credential, kind, person.id, (identity as Identity).subject);
        return s.persons.get(person.id);
      });
    },
    { role: 'admin' },
  );

  router.post(
    '/api/persons/:id/lock',
    ({ identity, params }) =>
      asHttp(() => {
        const person = s.persons.resolve(params['id']!);
        const done = lockPerson(s, person.id, identity!.subject);
        return { ...s.persons.get(person.id)!, ...done };
      }),
    { role: 'admin' },
  );
}
