import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AuditEventInput } from '../../shared/events';
import { HTTP_PACING, POSTGRES_PACING, SessionAuditWriter } from '../../proxy/audit/session-writer';

function fakeStore() {
  const batches: string[][] = [];
  let failing = false;
  return {
    batches,
    fail(on: boolean) {
      failing = on;
    },
    appendMany(inputs: AuditEventInput[]) {
      if (failing) throw new Error('disk full');
      batches.push(inputs.map((i) => (i.payload as { id: string }).id));
      return [];
    },
    /** As the store with a commit thread does: the answer comes later. */
    appendAsync(inputs: AuditEventInput[], done: (err: Error | null) => void) {
      let err: Error | null = null;
      try {
        this.appendMany(inputs);
      } catch (e) {
        err = e as Error;
      }
      setImmediate(() => done(err));
    },
  };
}

const ev = (id: string): AuditEventInput => ({ kind: 'pg.statement', payload: { id } });
const tick = () => new Promise((r) => setImmediate(r));

describe('SessionAuditWriter, PostgreSQL pacing (group commit)', () => {
  it('commits the statements of one turn together, after the deferred results, in order', async () => {
    const store = fakeStore();
    const w = new SessionAuditWriter(store as never, POSTGRES_PACING);
    const done: string[] = [];
    w.defer(ev('r1'), () => {});
    w.commit([ev('s1')], (err) => done.push(`a:${err}`), {});
    w.commit([ev('s2')], (err) => done.push(`b:${err}`), {});
    assert.deepEqual(store.batches, [], 'nothing is written synchronously');
    for (let i = 0; i < 20 && done.length < 2; i++) await tick();
    assert.deepEqual(store.batches, [['r1', 's1', 's2']]);
    assert.deepEqual(done, ['a:null', 'b:null']);
  });

  it('writes deferred results on a timer when no statement comes', async () => {
    const store = fakeStore();
    const w = new SessionAuditWriter(store as never, { ...POSTGRES_PACING, deferMs: 5 });
    w.defer(ev('r1'), () => {});
    w.defer(ev('r2'), () => {});
    await new Promise((r) => setTimeout(r, 30));
    assert.deepEqual(store.batches, [['r1', 'r2']]);
  });

  it('fails every waiting statement and tells the owners of deferred events, keeping them queued', async () => {
    const store = fakeStore();
    const w = new SessionAuditWriter(store as never, { ...POSTGRES_PACING, deferMs: 1000 });
    const failures: string[] = [];
    w.defer(ev('r1'), (err) => failures.push(`owner:${err.message}`));
    store.fail(true);
    const err = await new Promise<Error | null>((resolve) => w.commit([ev('s1')], resolve, {}));
    assert.match(String(err), /disk full/);
    assert.deepEqual(failures, ['owner:disk full']);
    store.fail(false);
    w.appendNow([ev('end')]);
    assert.deepEqual(store.batches.flat(), ['r1', 'end'], 'the deferred event is written once the store is back; the refused statement is not');
  });
});

describe('SessionAuditWriter, HTTP pacing', () => {
  it('commits what one turn queued at its end, deferred events first, and answers the commit as a promise', async () => {
    const store = fakeStore();
    const w = new SessionAuditWriter(store as never, HTTP_PACING);
    const committed = w.commit([ev('req1'), ev('req2')]);
    w.defer([ev('res0')]);
    assert.deepEqual(store.batches, [], 'nothing is written synchronously');
    await committed;
    assert.deepEqual(store.batches, [['res0', 'req1', 'req2']]);
    // A deferred event alone does not wait for a timer: it is written at the end of its turn.
    w.defer([ev('chunk1'), ev('chunk2')]);
    await tick();
    assert.deepEqual(store.batches.at(-1), ['chunk1', 'chunk2']);
  });

  it('rejects the commit and tells each owner once when the batch cannot be written, and drops what it deferred', async () => {
    const store = fakeStore();
    const w = new SessionAuditWriter(store as never, HTTP_PACING);
    const failures: string[] = [];
    w.defer([ev('res1')], (err) => failures.push(`a:${err.message}`));
    w.defer([ev('res2')], (err) => failures.push(`b:${err.message}`));
    store.fail(true);
    await assert.rejects(w.commit([ev('req')]), /disk full/);
    assert.deepEqual(failures, ['a:disk full', 'b:disk full']);
    store.fail(false);
    await w.commit([ev('next')]);
    assert.deepEqual(store.batches.flat(), ['next'], 'the dropped events are not written later');
  });
});
