import { parseDuration } from '../../shared/config';
import { AuditStore } from '../audit/store';
import { resolveConfig } from '../config';
import { ApiKeyStore } from '../identity/api-keys';
import { ConsoleSessions } from '../identity/console-sessions';
import { PersonDirectory, PersonError } from '../identity/persons';
import { type Io, type ParsedArgs, rejectUnknown, str, UsageError } from './args';

/** `custody keys create|list|revoke|expire` against the store of --config/--data-dir. */
export async function keysCommand(args: ParsedArgs, io: Io): Promise<number> {
  const [, sub, id] = args.positionals;
  const { dataDir } = resolveConfig({ config: str(args, 'config'), dataDir: str(args, 'data-dir') });
  const store = AuditStore.open(dataDir);
  try {
    const keys = new ApiKeyStore(store.db);
    switch (sub) {
      case 'create': {
        rejectUnknown(args, ['config', 'data-dir', 'name', 'owner', 'groups', 'expires', 'json']);
        const name = str(args, 'name');
        if (!name) throw new UsageError('keys create needs --name NAME');
        const groups = (str(args, 'groups') ?? '').split(',').map((g) => g.trim()).filter(Boolean);
        const expires = str(args, 'expires');
        let expiresAt: number | null = null;
        if (expires) {
          try {
            expiresAt = Date.now() + parseDuration(expires);
          } catch (err) {
            throw new UsageError(`--expires: ${(err as Error).message}`);
          }
        }
        // The key belongs to a person: --owner names one (id or unique name), else a person named
        // like the key is created (recorded), so each key created here is its own person.
        const persons = new PersonDirectory(store);
        const ownerArg = str(args, 'owner');
        let person: string;
        try {
          person = ownerArg ? persons.resolve(ownerArg).id : persons.create(name, 'cli', 'owner of a new API key (custody keys create)').id;
        } catch (err) {
          if (err instanceof PersonError) throw new UsageError(`--owner: ${err.message}`);
          throw err;
        }
        const { key, record } = keys.create({ name, groups, expiresAt, createdBy: 'cli' });
        persons.attach(`key:${record.id}`, 'api-key', person, 'cli');
        store.append({ kind: 'key.created', actor: 'cli', payload: { id: record.id, name, groups, expiresAt, person } });
        if (args.flags['json']) io.out(`${JSON.stringify({ key, ...record, person })}\n`);
        else {
          io.out(`${key}\n`);
          io.err(`Created key ${record.id} "${name}" (groups: ${groups.join(',') || 'none'}${expiresAt ? `, expires ${new Date(expiresAt).toISOString()}` : ''}). It is shown only once.\n`);
        }
        return 0;
      }
      case 'list': {
        rejectUnknown(args, ['config', 'data-dir', 'json']);
        const list = keys.list();
        if (args.flags['json']) io.out(`${JSON.stringify(list, null, 2)}\n`);
        else {
          const now = Date.now();
          for (const k of list) {
            const state = k.revokedAt ? 'revoked' : k.expiresAt && k.expiresAt <= now ? 'expired' : 'active';
            io.out(`${k.id}  ${state.padEnd(7)}  ${k.name}  groups=${k.groups.join(',')}  created=${new Date(k.createdAt).toISOString()}${k.expiresAt ? `  expires=${new Date(k.expiresAt).toISOString()}` : ''}\n`);
          }
          if (!list.length) io.err('no keys\n');
        }
        return 0;
      }
      case 'revoke':
      case 'expire': {
        rejectUnknown(args, ['config', 'data-dir']);
        if (!id) throw new UsageError(`keys ${sub} needs a key id (see custody keys list)`);
        const ok = sub === 'revoke' ? keys.revoke(id) : keys.expire(id);
        if (!ok) {
          io.err(`custody: no ${sub === 'revoke' ? 'active ' : ''}key ${id}\n`);
          return 1;
        }
        const ended = new ConsoleSessions(store.db).deleteForKey(id);
        store.append({ kind: 'key.revoked', actor: 'cli', payload: { id, how: sub, consoleSessionsEnded: ended } });
        io.err(`Key ${id} ${sub === 'revoke' ? 'revoked' : 'expired'}.\n`);
        return 0;
      }
      default:
        throw new UsageError('usage: custody keys create --name N [--owner PERSON] --groups a,b [--expires 30d] | keys list | keys revoke ID | keys expire ID');
    }
  } finally {
    store.close();
  }
}
