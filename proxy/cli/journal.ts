import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { AuditStore } from '../audit/store';
import { noStoreMessage, resolveConfig } from '../config';
import { type Io, type ParsedArgs, rejectUnknown, str, UsageError } from './args';

/**
 * `custody journal salvage [--config FILE | --data-dir DIR]`: the way past a damaged journal line
 * that stopped a start. Folds every readable line the store does not have yet, keeps the damaged
 * lines in a file beside the store, records a `journal.salvaged` event naming them, and deletes
 * the journal. Refused while a gateway runs on the store.
 */
export async function journalCommand(args: ParsedArgs, io: Io): Promise<number> {
  rejectUnknown(args, ['config', 'data-dir', 'json']);
  const [, sub] = args.positionals;
  if (sub !== 'salvage' || args.positionals.length > 2) throw new UsageError('usage: custody journal salvage [--config FILE | --data-dir DIR]');
  const resolved = resolveConfig({ config: str(args, 'config'), dataDir: str(args, 'data-dir') });
  if (!existsSync(join(resolved.dataDir, 'custody.db'))) throw new Error(noStoreMessage(resolved));
  const store = AuditStore.open(resolved.dataDir, { replay: false });
  try {
    const r = store.salvageJournal();
    if (args.flags['json']) {
      io.out(`${JSON.stringify({ folded: r.folded, rechained: r.rechained, lost: r.lost.map(({ text: _, ...l }) => l), skipped: r.skipped.map(({ text: _, ...l }) => l), keptIn: r.keptIn ?? null })}\n`);
      return 0;
    }
    io.out(`folded ${r.folded} journaled event${r.folded === 1 ? '' : 's'} into the log${r.rechained ? ` (${r.rechained} given new places in the chain after the damage)` : ''}\n`);
    for (const l of r.skipped) io.out(`skipped ${l.file} line ${l.line}: already in the log (${l.message})\n`);
    for (const l of r.lost) io.out(`NOT RECOVERED ${l.file} line ${l.line}: ${l.message}\n`);
    if (r.keptIn) io.out(`the damaged line${r.lost.length === 1 ? ' is' : 's are'} kept in ${r.keptIn}; the journal.salvaged event in the log names ${r.lost.length === 1 ? 'it' : 'them'} with ${r.lost.length === 1 ? 'its' : 'their'} SHA-256\n`);
    return 0;
  } finally {
    store.close();
  }
}
