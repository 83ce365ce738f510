// `npm start`: the desktop app when the Electron runtime is available, otherwise the same gateway
// headless (`custody serve`) with the console in a browser, after one line saying why.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

function electronBinary() {
  try {
    const p = require('electron'); // the package exports the binary's path; throws if it was never downloaded
    return typeof p === 'string' && existsSync(p) ? p : undefined;
  } catch {
    return undefined;
  }
}

const extra = process.argv.slice(2);
const bin = electronBinary();
const hasDisplay = process.platform !== 'linux' || Boolean(process.env.DISPLAY || process.env.WAYLAND_DISPLAY);
let child;
if (bin && hasDisplay && existsSync('dist/main/main.cjs')) {
  child = spawn(bin, ['.', ...extra], { stdio: 'inherit' });
} else {
  const why = !bin
    ? 'the Electron runtime is not installed (it downloads on first run with network access)'
    : !hasDisplay
      ? 'there is no display'
      : 'the desktop shell is not built';
  console.error(`Custody: running headless because ${why}; open the console URL below in a browser.`);
  child = spawn(process.execPath, ['bin/custody.mjs', 'serve', ...extra], { stdio: 'inherit' });
}
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => child.kill(sig));
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
