import Database from 'better-sqlite3';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { migrate } from '/work/main/proxy/audit/store';
import { ChainWriter, chainAfter, prepareEvent, type PreparedEvent } from '/work/main/proxy/audit/chain-writer';
const content = 'The quick brown fox jumps over the lazy dog. '.repeat(22);
const resp = { status: 200, headers: { 'content-type': 'application/json', date: 'Fri, 04 Dec 2026 16:19:46 GMT' }, body: { id: 'chatcmpl-abc123', object: 'chat.completion', created: 1733300000, model: 'gpt-4o', choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: 'stop' }] }, bodyEncoding: 'json', duration: 0.8 };
const req = { method: 'POST', path: '/chat/completions', headers: { host: '127.0.0.1:7421', 'content-type': 'application/json' }, body: { model: 'gpt-4o', messages: [{ role: 'user', content: 'Say something short.' }] } };
function run(label: string, drop: string[], batch: number, pragmas: string[] = []) {
  const dir = mkdtempSync(join(tmpdir(), 'fold-'));
  const db = new Database(join(dir, 'x.db'));
  db.pragma('journal_mode = WAL'); db.pragma('synchronous = NORMAL');
  for (const p of pragmas) db.pragma(p);
  migrate(db);
  for (const d of drop) db.exec(`DROP INDEX ${d}`);
  const w = new ChainWriter(db);
  let head = { seq: 0, hash: w.head().hash };
  const N = 40000;
  const evs: PreparedEvent[] = [];
  for (let i = 0; i < N; i++) {
    const e = prepareEvent({ kind: i % 2 ? 'http.response' : 'http.request', session: 'ses_' + (i >> 6), actor: 'key:a', connection: 'bench', payload: i % 2 ? resp : req });
    e.chained = chainAfter(head, e); head = { seq: e.chained.seq, hash: e.chained.hash }; evs.push(e);
  }
  const t = process.hrtime.bigint();
  for (let i = 0; i < N; i += batch) w.append(evs.slice(i, i + batch));
  w.flushSessions();
  const us = Number(process.hrtime.bigint() - t) / 1000 / N;
  console.log(label.padEnd(40), us.toFixed(2), 'us/event');
  db.close();
}
run('all indexes, batch 100', [], 100);
run('all indexes, batch 1000', [], 1000);
run('no events_time, batch 100', ['events_time'], 100);
run('no events_time/session, batch 100', ['events_time', 'events_session'], 100);
run('all, batch 100, wal_autocheckpoint=0', [], 100, ['wal_autocheckpoint = 0']);
run('all, batch 100, page 8192', [], 100, ['page_size = 8192']);
