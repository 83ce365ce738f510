/**
 * Writes schemas/config.schema.json from the zod schema the gateway validates with, so editors and
 * other tools see the same rules. `--check` exits 1 when the committed file is stale.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { z } from 'zod';
import { Config } from '../shared/config';

export function configJsonSchema(): string {
  const schema = z.toJSONSchema(Config, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
  return `${JSON.stringify({ ...schema, $id: 'https://custody.dev/schemas/config.schema.json', title: 'Custody configuration' }, null, 2)}\n`;
}

const FILE = new URL('../schemas/config.schema.json', import.meta.url);

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop()!)) {
  const text = configJsonSchema();
  if (process.argv.includes('--check')) {
    const current = readFileSync(FILE, 'utf8');
    if (current !== text) {
      console.error('schemas/config.schema.json is stale: run `npm run schema`');
      process.exit(1);
    }
  } else writeFileSync(FILE, text);
}
