// `npm start`: the desktop app when the Electron runtime is available, otherwise the same gateway
// headless (`custody serve`) with the console in a browser, after one line saying why.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * The Electron binary if it was downloaded (`npm run desktop:install` puts it in desktop/, whose tools
 * need Node >= 22.12). Reads electron/path.txt instead of require('electron'), whose first call
 * would try to download the runtime (and fail offline).
 */
function electronBinary() {
  const dir = join('desktop', 'node_modules', 'electron');
  const override = process.env.ELECTRON_OVERRIDE_DIST_PATH;
  try {
    const rel = readFileSync(join(dir, 'path.txt'), 'utf8').trim();
    const bin = override ? join(override, rel || 'electron') : join(dir, 'dist', rel);
    return existsSync(bin) ? bin : undefined;
  } catch {
    return undefined;
  }
}

const extra = process.argv.slice(2);
const bin = electronBinary();
const hasDisplay = process.platform !== 'linux' || Boolean(process.env.DISPLAY || process.env.WAYLAND_DISPLAY);
let child;
if (bin && hasDisplay && existsSync('dist/main/main.cjs')) {
  // In a checkout, native modules are built for Node: the app runs its gateway under this Node.
  child = spawn(bin, ['.', ...extra], { stdio: 'inherit', env: { ...process.env, CUSTODY_GATEWAY_NODE: process.execPath } });
} else {
  const why = !bin
    ? 'the Electron runtime is not installed (`npm run desktop:install` downloads it, on Node >= 22.12 with network access)'
    : !hasDisplay
      ? 'there is no display'
      : 'the desktop shell is not built (npm run build)';
  console.error(`Custody: running headless because ${why}; open the console URL below in a browser.`);
  child = spawn(process.execPath, ['bin/custody.mjs', 'serve', ...extra], { stdio: 'inherit' });
}
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => child.kill(sig));
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
