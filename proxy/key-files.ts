import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Reads `<dataDir>/<name>`, creating it with `create()` (mode 0600) on first use. Headless installs
 * keep per-install secrets this way; the desktop app wraps them with the OS keychain.
 */
export function loadOrCreateKeyFile(dataDir: string, name: string, create: () => Buffer = () => randomBytes(32)): Buffer {
  const file = join(dataDir, name);
  if (existsSync(file)) return readFileSync(file);
  const value = create();
  writeFileSync(file, value, { mode: 0o600, flag: 'wx' });
  chmodSync(file, 0o600);
  return value;
}
