/**
 * `npm run bench -- pg-long-result` (`node --import tsx bench/pg-long-result.ts`): a 300,000-row
 * SELECT (about 15 MB of DataRows) read by one `pg` client, directly and through the gateway,
 * alternating, 3 rounds of 5 queries each after one warm-up. The gateway masks nothing here; it
 * records the statement, the first rows and, for a result that spans several reads, a `pg.rows`
 * per read journaled before that read's rows go out (docs/AUDIT.md). Prints the mean time per
 * query and the ratio gateway / direct per round.
 */
import pg from 'pg';
import { startHarness } from '../test/integration/pg-harness';
const h = await startHarness();
const SQL = `SELECT g, repeat('x', 40) AS pad FROM generate_series(1, 300000) AS g`;
async function time(host: string, port: number, user: string, password: string | undefined): Promise<number> {
  const c = new pg.Client({ host, port, user, password, database: 'postgres' });
  await c.connect();
  await c.query(SQL);
  const t = performance.now();
  for (let i = 0; i < 5; i++) await c.query(SQL);
  const ms = (performance.now() - t) / 5;
  await c.end();
  return ms;
}
const rows: string[] = [];
for (let r = 0; r < 3; r++) {
  const d = await time('127.0.0.1', 5432, 'postgres', undefined);
  const g = await time(h.host, h.port, 'agent', h.key);
  rows.push(`direct ${d.toFixed(0)} ms, gateway ${g.toFixed(0)} ms, ratio ${(g / d).toFixed(2)}`);
}
console.log(rows.join('\n'));
await h.close();
