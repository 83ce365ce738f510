// `npm ci` / `npm install` (postinstall): builds ssh2's optional native crypto binding
// (node_modules/ssh2/lib/protocol/crypto: ChaCha20-Poly1305, AES-GCM and the other ciphers and MACs
// in C++ over OpenSSL) against the headers of the Node that runs the install, so nothing is
// downloaded. ssh2's own install script stays off (allowScripts in package.json): it has node-gyp
// fetch headers from nodejs.org. Without headers or a compiler the binding is left out with one
// line, and ssh2 runs its JavaScript code instead (slower SSH transfers, same behaviour; docs/SSH.md).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';

const require = createRequire(import.meta.url);
const say = (text) => console.log(`custody: ssh2's native crypto binding ${text}`);
const fallback = "ssh2 uses its JavaScript ciphers (SSH transfers through the gateway are slower)";

let dir;
try {
  dir = join(dirname(require.resolve('ssh2/package.json')), 'lib', 'protocol', 'crypto');
} catch {
  process.exit(0); // ssh2 is not installed: nothing to build
}
const built = join(dir, 'build', 'Release', 'sshcrypto.node');
const loads = () => {
  try {
    require(built);
    return true;
  } catch {
    return false;
  }
};
if (existsSync(built) && loads()) process.exit(0);

// The Node headers ship with Node itself: <prefix>/include/node beside <prefix>/bin/node.
const nodedir = process.env.npm_config_nodedir || resolve(dirname(process.execPath), '..');
if (!existsSync(join(nodedir, 'include', 'node', 'node_api.h'))) {
  say(`is not built: no Node headers in ${join(nodedir, 'include', 'node')} (set npm_config_nodedir to Node's prefix); ${fallback}`);
  process.exit(0);
}
// npm's own node-gyp (npm names it to lifecycle scripts), else the one beside npm.
const gyp = [
  process.env.npm_config_node_gyp,
  process.env.npm_execpath && join(dirname(process.env.npm_execpath), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
  join(nodedir, 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
].find((f) => f && existsSync(f));
if (!gyp) {
  say(`is not built: node-gyp was not found; ${fallback}`);
  process.exit(0);
}
const r = spawnSync(process.execPath, [gyp, 'rebuild', `--nodedir=${nodedir}`, `--real_openssl_major=${/^\d+/.exec(process.versions.openssl)[0]}`], { cwd: dir, encoding: 'utf8' });
if (r.status === 0 && loads()) {
  say(`is built (${nodedir}/include/node)`);
} else {
  // The compiler's first error, or node-gyp's own.
  const lines = `${r.stdout ?? ''}\n${r.stderr ?? ''}\n${r.error?.message ?? ''}`.split('\n');
  const why = lines.find((l) => /: (fatal )?error:/.test(l)) ?? lines.find((l) => /Error:/.test(l)) ?? `exit status ${r.status}`;
  say(`is not built (node-gyp: ${why.replace(/^gyp ERR! stack /, '').trim()}); ${fallback}`);
}
