// `npm run bench [-- name ...]`: runs the benchmarks in bench/ one after another (each prints its
// figures and the ratios against its same-run baselines). Not part of `npm test`.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

/** name → file; each benchmark registers itself here. */
const BENCHES = {
  'http-overhead': 'bench/http-overhead.ts',
  audit: 'bench/audit.ts',
  masking: 'bench/masking.ts',
  'pattern-engines': 'bench/pattern-engines.ts',
  holds: 'bench/holds.ts',
  postgres: 'bench/postgres.ts',
  'approvals-loop': 'bench/approvals-loop.ts',
  'journal-append': 'bench/journal-append.ts',
  'shared-store': 'bench/shared-store.ts',
  'shared-store-http': 'bench/shared-store-http.ts',
  'holds-across': 'bench/holds-across.ts',
  'config-across': 'bench/config-across.ts',
  ssh: 'bench/ssh.ts',
  faults: 'bench/faults.ts',
  'pg-long-result': 'bench/pg-long-result.ts',
  'http-big-body': 'bench/http-big-body.ts',
  'sink-cost': 'bench/sink-cost.ts',
};

const wanted = process.argv.slice(2);
for (const name of wanted) {
  if (!BENCHES[name]) {
    console.error(`unknown benchmark "${name}" (known: ${Object.keys(BENCHES).join(', ')})`);
    process.exit(2);
  }
}
let failed = 0;
for (const [name, file] of Object.entries(BENCHES)) {
  if (wanted.length && !wanted.includes(name)) continue;
  if (!existsSync(file)) {
    console.error(`== ${name}: ${file} missing, skipped`);
    continue;
  }
  console.log(`\n== ${name} (node --import tsx ${file})`);
  const r = spawnSync(process.execPath, ['--import', 'tsx', file], { stdio: 'inherit' });
  if (r.status !== 0) failed++;
}
process.exit(failed ? 1 : 0);
