// Before `npm test`: the desktop toolchain's files the checks read (Electron's type definitions for
// main/main.ts and main/preload.ts, electron-builder's config schema), installed into desktop/ without
// running install scripts, so no Electron runtime is downloaded. Skipped when desktop/ is current.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';

const lock = createHash('sha256').update(readFileSync('desktop/package-lock.json')).digest('hex');
const stamp = 'desktop/node_modules/.custody-lock';
if (existsSync(stamp) && readFileSync(stamp, 'utf8') === lock) process.exit(0);
console.error('custody: installing the desktop toolchain into desktop/ for its types and schema (no runtime download)');
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
const r = spawnSync(npm, ['ci', '--prefix', 'desktop', '--ignore-scripts', '--no-audit', '--no-fund', '--loglevel=error'], { stdio: 'inherit' });
if (r.status !== 0) {
  console.error('custody: could not install the desktop toolchain (npm ci --prefix desktop); main/main.ts cannot be type-checked without it');
  process.exit(r.status ?? 1);
}
writeFileSync(stamp, lock);
