/** An evidence export over REST (what the console's export does), downloaded to a file. */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { until } from './until';

/** Starts an export on the console at `control` (`http://host:port`) with `key`, waits until it is done, and writes the bundle to `out`. */
export async function exportOverRest(control: string, key: string, out: string, filter: Record<string, unknown> = {}): Promise<void> {
  const headers = { authorization: `Bearer ${key}` };
  const res = await fetch(`${control}/api/exports`, { method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body: JSON.stringify(filter) });
  const started = (await res.json()) as { id: string };
  assert.equal(res.status, 202, JSON.stringify(started));
  const job = await until(
    'the export done',
    async () => {
      const j = (await (await fetch(`${control}/api/exports/${started.id}`, { headers })).json()) as { state: string; error?: string };
      if (j.state === 'failed') throw new Error(`the export failed: ${j.error}`);
      return j.state === 'done' ? j : undefined;
    },
    60_000,
  );
  assert.ok(job);
  const download = await fetch(`${control}/api/exports/${started.id}/download`, { headers });
  assert.equal(download.status, 200);
  writeFileSync(out, Buffer.from(await download.arrayBuffer()));
}
