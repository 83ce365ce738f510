// Damaged journal lines at start, with the real `custody serve` process: one already folded into
// the store is reported and skipped (the gateway starts); one that is not stops the start with the
// file, the line and the command that salvages the rest, and `custody journal salvage` does. Every
// exchange a client saw complete is in the log afterwards, and `custody verify` passes.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { type LlmUpstream, startLlmUpstream } from '../support/llm-upstream';
import { custody, lockStore, serveRefused, startServe, writeConfig } from '../support/custody-process';
import { tempDir } from '../support/tmp';

let upstream: LlmUpstream;

function config(dataDir: string): unknown {
  return {
    dataDir,
    listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
    connections: [{ name: 'openai', kind: 'openai', upstream: `${upstream.url}/v1`, secret: { value: 'sk-journal' } }],
  };
}

/** One chat completion through the gateway; the marker when the client saw it complete, else undefined. */
async function exchange(http: string, key: string, marker: string): Promise<string | undefined> {
  try {
    const r = await fetch(`http://${http}/openai/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: marker }] }),
    });
    const body = (await r.json()) as { choices?: { message: { content: string } }[] };
    return r.status === 200 && body.choices?.[0]?.message.content ? marker : undefined;
  } catch {
    return undefined;
  }
}

/** The markers of every http.request and whether its http.response is recorded, read from the store file. */
function recorded(dataDir: string): { requests: Set<string>; responses: Set<string> } {
  const db = new Database(join(dataDir, 'custody.db'), { readonly: true });
  try {
    const rows = db.prepare("SELECT kind, session, payload, encoding, seq FROM events WHERE kind IN ('http.request', 'http.response') ORDER BY seq").all() as { kind: string; session: string; payload: string | Buffer; encoding: string }[];
    const requests = new Set<string>();
    const responses = new Set<string>();
    const bySessionOpen = new Map<string, string[]>();
    for (const r of rows) {
      const text = typeof r.payload === 'string' ? r.payload : r.payload.toString('utf8');
      if (r.kind === 'http.request') {
        const m = /m-\d+-\d+/.exec(text);
        if (!m) continue;
        requests.add(m[0]);
        bySessionOpen.set(r.session, [...(bySessionOpen.get(r.session) ?? []), m[0]]);
      } else {
        // One exchange at a time per client here: a response answers the oldest open request of its session.
        const open = bySessionOpen.get(r.session);
        const m = open?.shift();
        if (m) responses.add(m);
      }
    }
    return { requests, responses };
  } finally {
    db.close();
  }
}

function journalFiles(dataDir: string): string[] {
  const dir = join(dataDir, 'custody.db.journal');
  return readdirSync(dir)
    .filter((f) => f.endsWith('.jsonl'))
    .sort()
    .map((f) => join(dir, f));
}

/** Damages whole line `n` (1-based) of `file` so it cannot be read; returns the line as it was. */
function damageLine(file: string, n: number): string {
  const lines = readFileSync(file, 'utf8').split('\n');
  const was = lines[n - 1]!;
  lines[n - 1] = was.replace('\t', ' ').replace('[', '{');
  writeFileSync(file, lines.join('\n'));
  return was;
}

describe('damaged journal lines at start (custody serve)', () => {
  before(async () => {
    upstream = await startLlmUpstream({ openaiKey: 'sk-journal' });
  });
  after(() => upstream.close());

  it('a damaged line already folded into the store is reported and skipped; the gateway starts and loses nothing', async () => {
    const dataDir = tempDir();
    const file = writeConfig(dataDir, config(dataDir));
    const first = await startServe(file);
    const seen: string[] = [];
    try {
      for (let i = 0; i < 20; i++) {
        const m = await exchange(first.http, first.key!, `m-1-${i}`);
        if (m) seen.push(m);
      }
      // Folded: the commit thread writes the journal into the database within milliseconds.
      await new Promise((r) => setTimeout(r, 1000));
    } finally {
      await first.kill();
    }
    assert.equal(seen.length, 20);
    const [jfile] = journalFiles(dataDir);
    assert.ok(jfile, 'a killed gateway leaves its journal file');
    damageLine(jfile, 3);

    const second = await startServe(file);
    try {
      const log = second.stderr();
      assert.match(log, new RegExp(`journal file ${jfile.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} line 3 cannot be read .*already folded into the store, so nothing is lost and it was skipped`));
      assert.ok(await exchange(second.http, first.key!, 'm-1-after'), 'the gateway serves');
    } finally {
      assert.equal(await second.stop(), 0);
    }
    const { requests, responses } = recorded(dataDir);
    for (const m of seen) {
      assert.ok(requests.has(m), `request ${m} is in the log`);
      assert.ok(responses.has(m), `response to ${m} is in the log`);
    }
    const v = custody('verify', dataDir);
    assert.equal(v.status, 0, v.stderr);
  });

  it('a damaged line not yet folded stops the start, naming the file, the line and the salvage command; salvage folds the rest', async () => {
    const dataDir = tempDir();
    const file = writeConfig(dataDir, config(dataDir));
    const first = await startServe(file);
    const key = first.key!;
    const seen: string[] = [];
    // Another process locks the database: the gateway keeps journaling (it acknowledges from the
    // journal) until its commit thread reports that the fold failed, then refuses (503).
    const lock = await lockStore(join(dataDir, 'custody.db'));
    try {
      for (let i = 0; i < 400; i++) {
        const m = await exchange(first.http, key, `m-2-${i}`);
        if (m) seen.push(m);
        else break;
      }
      await first.kill();
    } finally {
      await first.kill();
      await lock.release();
    }
    assert.ok(seen.length >= 3, `${seen.length} exchanges completed while the store was locked`);
    const files = journalFiles(dataDir);
    const last = files[files.length - 1]!;
    const lineCount = readFileSync(last, 'utf8').split('\n').length - 1;
    // The last whole line is certainly past the fold mark (nothing was folded under the lock).
    const damaged = damageLine(last, lineCount);

    const refused = await serveRefused(file);
    assert.notEqual(refused.code, 0);
    const oneLine = refused.stderr.trim().split('\n').pop()!;
    assert.match(oneLine, new RegExp(`journal file ${last.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} line ${lineCount} cannot be read`));
    assert.match(oneLine, new RegExp(`custody journal salvage --data-dir ${dataDir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
    assert.deepEqual(journalFiles(dataDir), files, 'the journal is left as it was');

    const salvage = custody('journal', 'salvage', '--data-dir', dataDir);
    assert.equal(salvage.status, 0, salvage.stderr);
    assert.match(salvage.stdout, /^folded \d+ journaled events? into the log/m);
    assert.match(salvage.stdout, new RegExp(`NOT RECOVERED .* line ${lineCount}:`));
    const kept = /kept in (\S+);/.exec(salvage.stdout)?.[1];
    assert.ok(kept && readFileSync(kept, 'utf8').includes(damaged.slice(20, 80)), 'the damaged line is kept aside as it was');

    const again = await startServe(file);
    try {
      assert.ok(await exchange(again.http, key, 'm-2-after'), 'the gateway serves after the salvage');
    } finally {
      assert.equal(await again.stop(), 0);
    }
    // Every exchange the client saw complete is recorded, except what the damaged line held.
    const lostText = damaged;
    const { requests, responses } = recorded(dataDir);
    for (const m of seen) {
      if (lostText.includes(`"${m}"`)) continue;
      assert.ok(requests.has(m), `request ${m} is in the log`);
    }
    assert.ok(responses.size >= seen.length - 1);
    const v = custody('verify', dataDir);
    assert.equal(v.status, 0, v.stderr);
    const db = new Database(join(dataDir, 'custody.db'), { readonly: true });
    const salvaged = db.prepare("SELECT payload FROM events WHERE kind = 'journal.salvaged'").get() as { payload: string };
    db.close();
    assert.match(salvaged.payload, new RegExp(`"line":${lineCount}`));
  });
});
