// The commit feed: the commit thread hands every committed event to the sink thread (a tap), and
// the sinks take their next batch from it while they are caught up, falling back to the store for
// anything it does not hold. What the tap delivers must be the store's rows, exactly.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MessagePort } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { TAP_FIELDS, type TapRows } from '../../proxy/audit/commit-thread';
import { CommitFeed } from '../../proxy/audit/sinks';
import { AuditStore, storedPayloadText } from '../../proxy/audit/store';
import type { AuditEventInput } from '../../shared/events';
import { tempDir } from '../support/tmp';

/** Rows as the tap sends them for consecutive seqs `from`…`to`. */
function rows(from: number, to: number): TapRows {
  const out: unknown[] = [];
  for (let s = from; s <= to; s++) out.push(s, 1000 + s, 'http.request', 'ses', 'key:a', 'c', `{"n":${s}}`, 0, `p${s}`, `h${s - 1}`, `h${s}`);
  return out;
}

describe('commit feed', () => {
  it('hands out consecutive events from any seq it holds, across commits, and nothing past a gap', () => {
    const feed = new CommitFeed();
    feed.push(rows(1, 3));
    feed.push(rows(4, 6));
    feed.push(rows(9, 10)); // 7 and 8 were appended elsewhere
    assert.deepEqual(feed.take(0, 100)!.map((e) => e.seq), [1, 2, 3, 4, 5, 6]);
    assert.deepEqual(feed.take(2, 3)!.map((e) => e.seq), [3, 4, 5]);
    assert.equal(feed.take(6, 100), undefined, 'seq 7 is not in the feed: the runner reads the store');
    assert.deepEqual(feed.take(8, 100)!.map((e) => e.seq), [9, 10]);
    assert.equal(feed.take(10, 100), undefined);
    const e = feed.take(4, 1)![0]!;
    assert.deepEqual(e, { seq: 5, time: 1005, kind: 'http.request', session: 'ses', actor: 'key:a', connection: 'c', text: '{"n":5}', masked: 0, payloadHash: 'p5', prevHash: 'h4', hash: 'h5' });
  });

  it('forgets what every runner has read, and keeps at most its bound (oldest dropped first)', () => {
    const feed = new CommitFeed(10);
    feed.push(rows(1, 4));
    feed.push(rows(5, 8));
    feed.trim(4);
    assert.equal(feed.take(0, 100), undefined, 'read by every runner: gone');
    assert.deepEqual(feed.take(4, 100)!.map((e) => e.seq), [5, 6, 7, 8]);
    feed.push(rows(9, 12));
    feed.push(rows(13, 16)); // 12 held: over the bound of 10, the oldest chunk goes
    assert.equal(feed.take(4, 100), undefined, 'a runner that far behind reads the store');
    assert.deepEqual(feed.take(8, 100)!.map((e) => e.seq), [9, 10, 11, 12, 13, 14, 15, 16]);
  });

  it("the store's tap carries every event the commit thread commits, as the store holds it, and none it does not", async () => {
    const dir = tempDir('custody-feed-');
    const store = AuditStore.open(dir, { commitThread: true });
    const feed = new CommitFeed();
    const port: MessagePort = store.tapCommits()!;
    assert.ok(port, 'a store with a commit thread has a tap');
    let received = 0;
    port.on('message', (r: TapRows) => {
      received += r.length / TAP_FIELDS;
      feed.push(r);
    });
    const ev = (n: number): AuditEventInput => ({ kind: 'http.request', session: 'ses_a', actor: 'key:alice', connection: 'openai', payload: { n, body: n === 3 ? 'y'.repeat(9000) : 'x' }, spans: n % 2 ? [{ path: '/body', start: 0, end: 1, type: 'email', rule: 'pii' }] : [] });
    try {
      store.appendMany([ev(1), ev(2)]);
      store.appendMany([ev(3)]); // over 4 KiB: stored deflated
      store.transaction(() => store.appendMany([ev(4)])); // on the gateway's own connection, not the commit thread's
      store.appendMany([ev(5), ev(6)]);
      store.settle();
      for (let i = 0; i < 100 && received < 5; i++) await new Promise((r) => setTimeout(r, 20));
      const db = new Database(`${dir}/custody.db`, { readonly: true });
      const stored = db.prepare('SELECT seq, time, kind, session, actor, connection, payload, encoding, json_array_length(spans) AS masked, payload_hash, prev_hash, hash FROM events ORDER BY seq').all() as { seq: number; time: number; kind: string; session: string; actor: string; connection: string; payload: Buffer; encoding: string; masked: number; payload_hash: string; prev_hash: string; hash: string }[];
      db.close();
      const first = stored[0]!.seq;
      let fromFeed = 0;
      for (const r of stored) {
        const got = feed.take(r.seq - 1, 1)?.[0];
        if (!got) continue;
        fromFeed++;
        assert.deepEqual(got, { seq: r.seq, time: r.time, kind: r.kind, session: r.session, actor: r.actor, connection: r.connection, text: storedPayloadText(r.encoding, r.payload), masked: r.masked ?? 0, payloadHash: r.payload_hash, prevHash: r.prev_hash, hash: r.hash });
      }
      assert.equal(fromFeed, 5, 'the five events the commit thread committed came through the tap');
      assert.equal(stored[3]!.seq, first + 3);
      assert.equal(feed.take(first + 3 - 1, 1), undefined, 'the event appended on the gateway connection did not: a runner reads it from the store');
    } finally {
      port.close();
      store.close();
    }
  });
});
