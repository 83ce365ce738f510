import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { userInfo } from 'node:os';
import { openAuditTrail } from '../audit/checkpoints';
import { exportBundle, type ExportFilter, parseTimeArg } from '../audit/export';
import { progressReporter } from '../audit/progress';
import { AuditStore } from '../audit/store';
import { verifyStore } from '../audit/verify/store';
import { writeGroupChains } from '../audit/shared-store/group-export';
import { connectStore, storeConnection, storeLabel } from '../audit/shared-store/schema';
import { noStoreMessage, resolveConfig } from '../config';
import { type Io, type ParsedArgs, processIo, rejectUnknown, str, UsageError } from './args';

/**
 * `custody export --out FILE [--from T] [--to T] [--user U] [--connection C]`: writes an evidence
 * bundle (.tar.gz) of the store of --config/--data-dir, with a freshly signed checkpoint. With a
 * shared store (`store.url`) the bundle also carries every chain of the group, read from the store.
 */
export async function exportCommand(args: ParsedArgs, io: Io): Promise<number> {
  rejectUnknown(args, ['config', 'data-dir', 'out', 'from', 'to', 'user', 'connection']);
  const outArg = str(args, 'out');
  if (!outArg) throw new UsageError('usage: custody export --out FILE [--from T] [--to T] [--user U] [--connection C]');
  if (args.positionals.length > 1) throw new UsageError(`unexpected argument "${args.positionals[1]}"`);
  const out = resolve(outArg);
  const now = Date.now();
  const filter: ExportFilter = {};
  const from = str(args, 'from');
  const to = str(args, 'to');
  if (from) filter.from = parseTimeArg(from, 'from', now);
  if (to) filter.to = parseTimeArg(to, 'to', now);
  if (str(args, 'user')) filter.user = str(args, 'user');
  if (str(args, 'connection')) filter.connection = str(args, 'connection');

  const resolved = resolveConfig({ config: str(args, 'config'), dataDir: str(args, 'data-dir') });
  const { config, dataDir } = resolved;
  if (!existsSync(join(dataDir, 'custody.db'))) throw new Error(`nothing to export: ${noStoreMessage(resolved)}`);
  const store = AuditStore.open(dataDir);
  const isTTY = io === processIo && !!process.stderr.isTTY;
  try {
    const user = safeUser();
    const trail = openAuditTrail(store, dataDir, config, `local:${user}`);
    const verifying = progressReporter('verifying', { write: io.err, isTTY });
    const exporting = progressReporter('exporting', { write: io.err, isTTY });
    const r = await exportBundle({
      store,
      trail,
      config,
      out,
      filter,
      actor: `local:${user}`,
      actorName: user,
      version: VERSION,
      verify: () => {
        const report = verifyStore(dataDir, { onProgress: verifying.update });
        verifying.end();
        return report;
      },
      onProgress: exporting.update,
      group: config.store
        ? async (dir) => {
            const client = await connectStore(storeConnection(config.store!), 5000, 'custody-export');
            try {
              return await writeGroupChains(client, dir, { filter, store: storeLabel(config.store!.url) });
            } catch (err) {
              throw new Error(`cannot read the group's chains from ${storeLabel(config.store!.url)}: ${(err as Error).message}`);
            } finally {
              await client.end().catch(() => {});
            }
          }
        : undefined,
    });
    exporting.end();
    if (!r.integrity.ok) {
      const f = r.integrity.failure!;
      io.err(`custody export: warning: the store failed verification${f.seq !== undefined ? ` at seq ${f.seq}` : ''} (${f.problem}: ${f.message}); the bundle's report says so\n`);
    }
    const n = (v: number) => v.toLocaleString('en-US');
    const group = r.group
      ? `  the group: ${r.group.chains.length} chain${r.group.chains.length === 1 ? '' : 's'} (${r.group.chains.map((c) => `${c.name || c.gateway} through seq ${n(c.size)}`).join(', ')}), ${n(r.group.chains.reduce((t, c) => t + c.events, 0))} of their events, ${n(r.group.combined)} combined checkpoint${r.group.combined === 1 ? '' : 's'}\n`
      : '';
    io.out(
      `${out}\n` +
        `  ${n(r.events)} events, ${n(r.bytes)} bytes, checkpoint of ${n(r.checkpoint.treeSize)} events (root ${r.checkpoint.rootHash})\n` +
        group +
        `  check it offline: custody verify ${outArg} --key ${trail.signer.info().fingerprint}${r.group ? ' --keys FILE (the group\'s pinned keys: custody verify --store URL --show-keys)' : ''}\n`,
    );
    return 0;
  } finally {
    store.close();
  }
}

const VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

function safeUser(): string {
  try {
    return userInfo().username || 'cli';
  } catch {
    return 'cli';
  }
}
