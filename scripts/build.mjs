// Builds what runs outside tsx: the console (renderer/ → dist/renderer), the Electron main and
// preload (main/ → dist/main), and the bundled gateway the desktop app starts (proxy/ → dist/proxy).
import { build } from 'esbuild';
import { cpSync, existsSync, mkdirSync, rmSync } from 'node:fs';

const prod = process.env.NODE_ENV === 'production';
rmSync('dist', { recursive: true, force: true });
mkdirSync('dist/renderer', { recursive: true });

const jobs = [];
if (existsSync('renderer/main.tsx')) {
  jobs.push(
    build({
      entryPoints: { app: 'renderer/main.tsx' },
      outdir: 'dist/renderer',
      bundle: true,
      format: 'esm',
      platform: 'browser',
      target: 'es2022',
      jsx: 'automatic',
      minify: prod,
      sourcemap: true,
      loader: { '.css': 'css', '.svg': 'dataurl', '.png': 'dataurl' },
      define: { 'process.env.NODE_ENV': JSON.stringify(prod ? 'production' : 'development') },
      logLevel: 'warning',
    }),
  );
  for (const f of ['index.html', 'favicon.svg']) if (existsSync(`renderer/${f}`)) cpSync(`renderer/${f}`, `dist/renderer/${f}`);
}
const nodeCommon = { bundle: true, platform: 'node', target: 'node20', sourcemap: true, logLevel: 'warning', packages: 'external' };
if (existsSync('main/main.ts')) {
  jobs.push(build({ ...nodeCommon, entryPoints: ['main/main.ts'], outfile: 'dist/main/main.cjs', format: 'cjs', external: ['electron'] }));
}
if (existsSync('main/preload.ts')) {
  // Sandboxed preloads cannot require() anything but electron: bundle everything else in.
  jobs.push(build({ ...nodeCommon, packages: undefined, entryPoints: ['main/preload.ts'], outfile: 'dist/main/preload.cjs', format: 'cjs', external: ['electron'] }));
}
if (existsSync('proxy/entry.ts')) {
  jobs.push(
    build({
      ...nodeCommon,
      // The gateway and its worker threads (proxy/worker-source.ts finds them beside entry.mjs).
      entryPoints: { entry: 'proxy/entry.ts', 'commit-worker': 'proxy/audit/commit-worker.ts', 'verify-worker': 'proxy/audit/verify-worker.ts', 'verify-scan-worker': 'proxy/audit/verify-scan-worker.ts', 'proof-worker': 'proxy/audit/proof-worker.ts', 'off-loop-worker': 'proxy/http/off-loop-worker.ts', 'archive-worker': 'proxy/audit/archive/archive-worker.ts', 'sink-worker': 'proxy/audit/sink-worker.ts', 'shipper-worker': 'proxy/audit/shared-store/shipper-worker.ts', 'hold-sync-worker': 'proxy/audit/shared-store/hold-sync-worker.ts', 'team-worker': 'proxy/audit/shared-store/team-worker.ts', 'combined-worker': 'proxy/audit/shared-store/combined-worker.ts' },
      outdir: 'dist/proxy',
      outExtension: { '.js': '.mjs' },
      format: 'esm',
      banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" },
    }),
  );
}
await Promise.all(jobs);
