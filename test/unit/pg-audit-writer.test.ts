import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AuditEventInput } from '../../shared/events';
import { AuditWriter } from '../../proxy/postgres/audit-writer';

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

describe('AuditWriter (PostgreSQL group commit)', () => {
  it('commits the statements of one turn together, after the deferred results, in order', async () => {
    const store = fakeStore();
    const w = new AuditWriter(store as never);
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
    const w = new AuditWriter(store as never, 5);
    w.defer(ev('r1'), () => {});
    w.defer(ev('r2'), () => {});
    await new Promise((r) => setTimeout(r, 30));
    assert.deepEqual(store.batches, [['r1', 'r2']]);
  });

  it('fails every waiting statement and tells the owners of deferred events, keeping them queued', async () => {
    const store = fakeStore();
    const w = new AuditWriter(store as never, 1000);
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
