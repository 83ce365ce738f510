/**
 * Two `custody serve` processes on one shared store, for the benchmarks that time what travels
 * between gateways (holds-across.ts, config-across.ts): A starts and enrols the group, B starts
 * and waits, `custody gateways approve` run as A admits B. And the figures they print.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type CustodyServe, custody, startServe } from '../test/support/custody-process';
import { type EchoUpstream, startEchoUpstream } from '../test/support/echo-upstream';
import { createTestDatabase, type TestDatabase } from '../test/support/pg-database';

/** Runs `custody ARGS --config FILE`; its output, or throws with what it printed. */
export function cli(file: string, ...a: string[]): string {
  const r = custody(...a, '--config', file);
  if (r.status !== 0) throw new Error(`custody ${a.join(' ')}: ${r.stderr}`);
  return r.stdout.trim();
}

export function pct(xs: number[], p: number): number {
  const s = [...xs].sort((x, y) => x - y);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
}

export const fmt = (xs: number[]) => `p50 ${pct(xs, 50).toFixed(1)} ms   p99 ${pct(xs, 99).toFixed(1)} ms   max ${Math.max(...xs).toFixed(1)} ms`;

/** Polls `fn` every `everyMs` until it is true (a throw counts as false), or throws after `ms`. */
export async function until(what: string, fn: () => Promise<boolean>, everyMs = 50, ms = 60_000): Promise<void> {
  for (const deadline = Date.now() + ms; !(await fn().catch(() => false)); ) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Starts A (`fileA`) and B (`fileB`) on `db`, B approved by A; each is pushed to `serving` once started. */
export async function startStorePair(db: TestDatabase, fileA: string, fileB: string, serving: CustodyServe[]): Promise<{ gwA: CustodyServe; gwB: CustodyServe }> {
  const gwA = await startServe(fileA);
  serving.push(gwA);
  const sql = await db.client();
  try {
    await until('A enrolled', async () => (await sql.query("SELECT 1 FROM custody_gateways WHERE status = 'enrolled'")).rowCount === 1);
    const gwB = await startServe(fileB);
    serving.push(gwB);
    await until('B pending', async () => (await sql.query("SELECT 1 FROM custody_gateways WHERE status = 'pending'")).rowCount === 1);
    const idB = (await sql.query<{ id: string }>("SELECT id FROM custody_gateways WHERE status = 'pending'")).rows[0]!.id;
    cli(fileA, 'gateways', 'approve', idB);
    return { gwA, gwB };
  } finally {
    await sql.end();
  }
}

/**
 * Runs `fn` with a temporary directory, a local echo upstream and a fresh database named
 * `<name>_…`; the gateways `fn` pushes to `serving` are stopped when it returns (killed when it
 * throws), and everything else removed.
 */
export async function onFreshStore(name: string, fn: (env: { root: string; echo: EchoUpstream; db: TestDatabase; serving: CustodyServe[] }) => Promise<void>): Promise<void> {
  const root = mkdtempSync(join(tmpdir(), `${name.replaceAll('_', '-')}-`));
  const echo = await startEchoUpstream();
  const db = await createTestDatabase(name);
  const serving: CustodyServe[] = [];
  try {
    await fn({ root, echo, db, serving });
    for (const gw of serving.splice(0)) await gw.stop();
  } finally {
    for (const gw of serving) await gw.kill();
    await echo.close();
    await db.drop();
    rmSync(root, { recursive: true, force: true });
  }
}
