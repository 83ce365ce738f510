/**
 * `CUSTODY_TEST_STORE=postgres` (docs/SCALE-OUT.md, "One store interface, two implementations"):
 * loaded before the tests by scripts/test.mjs (`node --import tsx --import ./test/support/pg-store.ts`),
 * and through NODE_OPTIONS by every `custody` (or proxy/entry.ts) process the tests start. Every `Gateway.start` whose
 * config has no `store` gets one: a database on the local PostgreSQL server (CUSTODY_TEST_PG_URL,
 * default postgres://postgres@127.0.0.1:5432/postgres), one per data directory, so a gateway
 * restarted on its data directory finds its store again (a process killed and started again
 * too). The start returns once the gateway is admitted (the first on its database enrols itself),
 * as a test expects a gateway that has started to serve.
 *
 * Databases are named `custody_t_<run>_<hash of the data directory>`. The test file's process
 * makes the run id; the `custody` processes it starts inherit it, and never drop anything: the
 * test file's process drops every database of its run when it exits, whoever made them.
 *
 * A test that cannot run on a shared store (it damages the SQLite file under a running gateway,
 * or counts the events of a chain the store adds to) says so with `sqliteOnly(reason)`.
 */
import { spawnSync } from 'node:child_process';
import { appendFileSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { isMainThread } from 'node:worker_threads';
import type { Gateway as GatewayClass, GatewayOptions } from '../../proxy/gateway';
import type { PG_ADMIN_URL as AdminUrl } from './pg-database';

export const PG_MODE = process.env['CUSTODY_TEST_STORE'] === 'postgres';

/** `{ skip }` for a test that cannot run against the shared store (says why), `{}` otherwise. */
export function sqliteOnly(reason: string): { skip?: string } {
  return PG_MODE ? { skip: `CUSTODY_TEST_STORE=postgres: ${reason}` } : {};
}

const RUN_ENV = 'CUSTODY_TEST_STORE_RUN';
const originalNodeOptions = process.env['NODE_OPTIONS'] ?? '';
/**
 * A test file's process owns a run (it drops the run's databases at exit); a `custody` process
 * (or the desktop app's gateway process, proxy/entry.ts, as the supervisor tests fork it) with a
 * run joins its parent's. Any other process (the test runner's own, a helper a test starts)
 * is left alone, and so is every worker thread: it inherits the `--import` of this module with its
 * parent's argv, and one that a test's thread waits on synchronously (a library's `*Sync` call run
 * on a worker) would otherwise start a run of its own and never answer.
 */
const role = !isMainThread ? undefined : /\.test\.tsx?$/.test(process.argv[1] ?? '') ? 'owner' : /[\\/](bin[\\/]custody\.mjs|proxy[\\/]entry\.ts)$/.test(process.argv[1] ?? '') && process.env[RUN_ENV] ? 'member' : undefined;

function databaseFor(run: string, dataDir: string): string {
  return `custody_t_${run}_${createHash('sha256').update(resolve(dataDir)).digest('hex').slice(0, 12)}`;
}

/**
 * Loaded only in a process that owns or joins a run: every process and thread the tests start loads
 * this module (NODE_OPTIONS), and `pg` loaded in a worker thread that its parent waits on
 * synchronously (recheck's `checkSync`) never lets it answer.
 */
let PG_ADMIN_URL: typeof AdminUrl;
let pg: typeof import('pg').default;

function urlOf(name: string): string {
  return PG_ADMIN_URL.replace(/\/[^/]*$/, `/${name}`);
}

async function ensureDatabase(name: string): Promise<void> {
  const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
  await admin.connect();
  try {
    if ((await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [name])).rowCount) return;
    await admin.query(`CREATE DATABASE ${name}`).catch((err: { code?: string }) => {
      // Made meanwhile by another process of the run (a gateway and its restart): that is the one.
      if (err.code !== '42P04') throw err;
    });
  } finally {
    await admin.end();
  }
}

/** Drops every database of run `run`, synchronously (at exit): a small `node -e` with pg. */
function dropRun(run: string): void {
  const script = `
    const pg = require('pg');
    (async () => {
      const c = new pg.Client({ connectionString: ${JSON.stringify(PG_ADMIN_URL)} });
      await c.connect();
      const names = (await c.query("SELECT datname FROM pg_database WHERE datname LIKE $1", [${JSON.stringify(`custody_t_${run}_%`)}])).rows.map((r) => r.datname);
      for (const n of names) await c.query('DROP DATABASE IF EXISTS ' + n + ' WITH (FORCE)');
      await c.end();
    })().catch((e) => { console.error('CUSTODY_TEST_STORE=postgres: cannot drop the test databases: ' + e.message); process.exitCode = 1; });`;
  // Not through this module again: the environment as it was before it added itself.
  const env: NodeJS.ProcessEnv = { ...process.env, NODE_OPTIONS: originalNodeOptions };
  delete env['CUSTODY_TEST_STORE'];
  const r = spawnSync(process.execPath, ['-e', script], { cwd: resolve(import.meta.dirname, '../..'), env, stdio: ['ignore', 'ignore', 'inherit'], timeout: 30_000 });
  if (r.status !== 0) process.stderr.write(`CUSTODY_TEST_STORE=postgres: databases custody_t_${run}_* may be left on the server\n`);
}

async function admitted(gw: GatewayClass, ms = 20_000): Promise<void> {
  const member = gw.services.sharedStore;
  if (!member) return;
  for (const deadline = Date.now() + ms; member.refusal() !== undefined; ) {
    if (Date.now() > deadline) throw new Error(`CUSTODY_TEST_STORE=postgres: the gateway was not admitted to its test store within ${ms} ms: ${member.refusal()}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

if (PG_MODE && role) {
  // Imported here, not above: the other processes that load this module need none of it.
  pg = (await import('pg')).default;
  ({ PG_ADMIN_URL } = await import('./pg-database'));
  const { Gateway } = await import('../../proxy/gateway');
  const { StoreConfig } = await import('../../shared/config');
  if (role === 'owner') {
    const owned = `${process.pid.toString(36)}${randomBytes(3).toString('hex')}`;
    process.env[RUN_ENV] = owned;
    process.on('exit', () => dropRun(owned));
  }
  const run = process.env[RUN_ENV]!;
  // Every process the tests start loads this too (a `custody serve` among them).
  // Through a plain-JavaScript shim that loads this module in `custody` processes only (see there).
  const self = pathToFileURL(resolve(import.meta.dirname, 'pg-store-member.mjs')).href;
  const opts = process.env['NODE_OPTIONS'] ?? '';
  // tsx by its URL: a process the tests start in another directory could not resolve the bare name.
  if (!opts.includes(self)) process.env['NODE_OPTIONS'] = `${opts} --import ${import.meta.resolve('tsx')} --import ${self}`.trim();

  const start = Gateway.start.bind(Gateway);
  Gateway.start = async (opts: GatewayOptions): Promise<GatewayClass> => {
    if (opts.config.store) return start(opts);
    const name = databaseFor(run, opts.dataDir);
    await ensureDatabase(name);
    // CUSTODY_TEST_STORE_LOG=FILE: one line per gateway given a store (which test, which database).
    const log = process.env['CUSTODY_TEST_STORE_LOG'];
    if (log) appendFileSync(log, `${process.argv[1]} ${name}\n`);
    const gw = await start({ ...opts, config: { ...opts.config, store: StoreConfig.parse({ url: urlOf(name) }) } });
    try {
      await admitted(gw);
    } catch (err) {
      await gw.stop();
      throw err;
    }
    return gw;
  };
}
