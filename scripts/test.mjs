// Runs every test file under test/ with Node's test runner (tsx loads the TypeScript).
// `node scripts/test.mjs unit` (or integration, e2e, or a file path) runs a subset.
// `CUSTODY_TEST_STORE=postgres` (or `--store=postgres`; `npm run test:postgres`) runs them against
// the shared store.
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

function collect(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...collect(p));
    else if (/\.test\.tsx?$/.test(name)) out.push(p);
  }
  return out;
}

const args = process.argv.slice(2).filter((a) => a !== '--store=postgres');
if (args.length < process.argv.length - 2) process.env.CUSTODY_TEST_STORE = 'postgres';
const files = (args.length ? args : ['test']).flatMap((a) => {
  const p = a.startsWith('test') ? a : join('test', a);
  return statSync(p).isDirectory() ? collect(p) : [p];
}).sort();
if (files.length === 0) {
  console.error('no test files found');
  process.exit(1);
}
// CUSTODY_TEST_STORE=postgres: every gateway the tests start, in process or as `custody serve`,
// gets a fresh database on the local PostgreSQL server as its shared store (test/support/pg-store.ts).
const preload = process.env.CUSTODY_TEST_STORE === 'postgres' ? ['--import', './test/support/pg-store.ts'] : [];
const r = spawnSync(
  process.execPath,
  ['--import', 'tsx', ...preload, '--test', '--test-concurrency=1', '--test-reporter=spec', ...files],
  { stdio: 'inherit', env: { ...process.env, NODE_ENV: 'test' } },
);
process.exit(r.status ?? 1);
