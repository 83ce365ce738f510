// `npm run dist`: installers for the desktop app. The Electron runtime and electron-builder live in
// desktop/ (their own package, engines node >= 22.12), apart from the project's install, which runs
// on Node 20. This builds the bundles, then runs that electron-builder on this project.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 22 || (major === 22 && minor < 12)) {
  console.error(`custody: packaging needs Node >= 22.12 (Electron 45's tools require it); this is Node ${process.versions.node}.`);
  process.exit(1);
}
const builder = join('desktop', 'node_modules', '.bin', process.platform === 'win32' ? 'electron-builder.cmd' : 'electron-builder');
if (!existsSync(builder)) {
  console.error('custody: the desktop toolchain is not installed; run `npm run desktop:install` first (it needs network access).');
  process.exit(1);
}
const run = (cmd, args) => {
  const r = spawnSync(cmd, args, { stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
};
run(process.execPath, ['scripts/build.mjs']);
const electron = JSON.parse(readFileSync(join('desktop', 'node_modules', 'electron', 'package.json'), 'utf8'));
run(builder, ['--config', 'electron-builder.yml', '--projectDir', '.', `-c.electronVersion=${electron.version}`, ...process.argv.slice(2)]);
