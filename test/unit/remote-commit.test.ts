/**
 * The wait of `audit.remoteCommit: sync` (proxy/audit/remote-commit.ts): a batch is sent to the
 * shared store only once its journal lines are folded locally, answered with the store's answer,
 * refused at once when the store is known not to take it, and refused after the timeout when the
 * store does not answer. The whole path against PostgreSQL: test/integration/scale-commit.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RemoteCommitQueue, type RemoteCommitter } from '../../proxy/audit/remote-commit';

/** A committer whose answers the test gives by hand. */
function committer(timeoutMs = 1000) {
  const asked: ((why: string | undefined) => void)[] = [];
  let refusal: string | undefined;
  const c: RemoteCommitter = {
    remoteRefusal: () => refusal,
    commitRemote: (done) => asked.push(done),
    remoteCommitTimeoutMs: timeoutMs,
  };
  return { c, asked, refuse: (why: string | undefined) => (refusal = why) };
}

describe('remote commit queue', () => {
  it('asks the store only for batches whose lines are folded, one ask for all of them, and answers each', () => {
    const { c, asked } = committer();
    const q = new RemoteCommitQueue(c);
    const answers: (string | undefined | 'waiting')[] = ['waiting', 'waiting', 'waiting'];
    q.wait(3, (why) => (answers[0] = why));
    q.wait(5, (why) => (answers[1] = why));
    q.wait(9, (why) => (answers[2] = why));
    assert.equal(asked.length, 0, 'nothing is asked before a fold');
    q.folded(6);
    assert.equal(asked.length, 1, 'the two folded batches share one ask');
    assert.equal(q.pending, 1);
    asked[0]!(undefined);
    assert.deepEqual(answers, [undefined, undefined, 'waiting']);
    q.folded(9);
    asked[1]!('connection reset');
    assert.deepEqual(answers, [undefined, undefined, 'connection reset']);
  });

  it('refuses at once while the store is known not to take the batch, and after the timeout when it does not answer', async () => {
    const { c, asked, refuse } = committer(50);
    const q = new RemoteCommitQueue(c);
    refuse('the shared store cannot be written');
    let first: string | undefined | 'waiting' = 'waiting';
    q.wait(1, (why) => (first = why));
    assert.equal(first, 'the shared store cannot be written');
    refuse(undefined);
    const late = await new Promise<string | undefined>((resolve) => {
      q.wait(2, resolve);
      q.folded(2);
    });
    assert.match(late!, /did not confirm the commit within 0\.05 s/);
    asked[0]!(undefined); // a late answer changes nothing
  });

  it('refuses the waiting batches when their fold fails, without asking the store', () => {
    const { c, asked } = committer();
    const q = new RemoteCommitQueue(c);
    let why: string | undefined;
    q.wait(4, (w) => (why = w));
    q.folded(4, 'disk I/O error');
    assert.equal(asked.length, 0);
    assert.match(why!, /the local database could not commit the events \(disk I\/O error\)/);
  });
});
