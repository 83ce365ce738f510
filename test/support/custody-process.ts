/**
 * The real `custody` command in its own process, for tests that kill it, damage what it left and
 * start it again; and a second process holding a lock on its store.
 */
import { type ChildProcess, execFile, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

export interface CustodyServe {
  proc: ChildProcess;
  http: string;
  control: string;
  /** The first admin key, when this start created it. */
  key: string | undefined;
  /** Everything it wrote to stderr so far. */
  stderr(): string;
  /** SIGKILL, then waits for the exit. */
  kill(): Promise<void>;
  /** SIGTERM (a clean stop), then waits for the exit. */
  stop(): Promise<number | null>;
}

/** Writes `config` (an object; JSON is YAML) as `<dir>/custody.yaml` and returns its path. */
export function writeConfig(dir: string, config: unknown): string {
  const file = join(dir, 'custody.yaml');
  writeFileSync(file, JSON.stringify(config, null, 2));
  return file;
}

/**
 * `custody serve --config FILE`; resolves once it prints its console line (it listens), rejects
 * with what it printed when it exits first.
 */
export async function startServe(configFile: string, env: Record<string, string> = {}): Promise<CustodyServe> {
  const proc = spawn(process.execPath, ['bin/custody.mjs', 'serve', '--config', configFile], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, CUSTODY_LOG: 'info', ...env } });
  let err = '';
  proc.stderr!.setEncoding('utf8');
  proc.stderr!.on('data', (d: string) => (err += d));
  const exited = once(proc, 'exit');
  await new Promise<void>((resolve, reject) => {
    const check = () => {
      if (/^Console: /m.test(err)) resolve();
    };
    proc.stderr!.on('data', check);
    void exited.then(([code]) => reject(Object.assign(new Error(`custody serve exited with ${String(code)} before it listened:\n${err}`), { stderr: err, code })));
  });
  const addr = (name: string) => new RegExp(`^ {2}${name}\\s+(?:http://)?([\\d.]+:\\d+)`, 'm').exec(err)?.[1];
  return {
    proc,
    http: addr('http')!,
    control: addr('control')!,
    key: /^ {2}(cst_\S+)$/m.exec(err)?.[1],
    stderr: () => err,
    async kill() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      await exited.catch(() => {});
    },
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      const [code, signal] = (await exited) as [number | null, string | null];
      if (code === null) process.stderr.write(`custody serve ended by ${signal}; it printed:\n${err}\n`);
      return code;
    },
  };
}

/** Runs `custody serve` expecting it to refuse to start; returns its exit code and stderr. */
export async function serveRefused(configFile: string): Promise<{ code: number | null; stderr: string }> {
  try {
    const s = await startServe(configFile);
    await s.kill();
    throw new Error(`custody serve started:\n${s.stderr()}`);
  } catch (err) {
    const e = err as { stderr?: string; code?: number | null };
    if (e.stderr === undefined) throw err;
    return { code: e.code ?? null, stderr: e.stderr };
  }
}

/** Runs a `custody` command to completion. */
export function custody(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['bin/custody.mjs', ...args], { encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/**
 * Runs a `custody` command to completion without blocking this process: gateways under test that
 * share its event loop keep serving meanwhile.
 */
export async function custodyAsync(...args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  try {
    const r = await promisify(execFile)(process.execPath, ['bin/custody.mjs', ...args], { encoding: 'utf8', timeout: 60_000 });
    return { status: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    if (typeof e.code !== 'number') throw err;
    return { status: e.code, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

export interface StoreLock {
  /** Releases the lock (ends the process). */
  release(): Promise<void>;
}

/**
 * Another process holding `BEGIN EXCLUSIVE` on the SQLite file `dbPath` (better-sqlite3), as a
 * backup script or a person at the sqlite3 prompt would; resolves once the lock is held.
 */
export async function lockStore(dbPath: string): Promise<StoreLock> {
  const script = `
    const Database = require('better-sqlite3');
    const db = new Database(${JSON.stringify(dbPath)}, { timeout: 10000 });
    db.exec('BEGIN EXCLUSIVE');
    process.stdout.write('locked\\n');
    process.stdin.resume();
    process.stdin.on('end', () => process.exit(0));`;
  const proc = spawn(process.execPath, ['-e', script], { stdio: ['pipe', 'pipe', 'inherit'] });
  const exited = once(proc, 'exit');
  await new Promise<void>((resolve, reject) => {
    proc.stdout!.once('data', () => resolve());
    void exited.then(([code]) => reject(new Error(`the lock holder exited with ${String(code)}`)));
  });
  return {
    async release() {
      proc.kill('SIGKILL');
      await exited;
    },
  };
}
