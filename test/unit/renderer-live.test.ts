// The console's WebSocket bookkeeping (renderer/lib/live.ts) against the gateway's resume protocol
// (proxy/control/events-socket.ts): filtered feeds have gaps, replays may arrive after newer live
// messages, and a new epoch or `resync` means reloading.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { backoff, SeqTracker } from '../../renderer/lib/live';

const m = (seq: number, type = 'hold.created', epoch = 'E1') => ({ seq, type, epoch });

describe('SeqTracker', () => {
  it('applies the first hello and every later message, gaps included', () => {
    const t = new SeqTracker();
    assert.equal(t.accept(m(10, 'hello')), 'apply');
    assert.equal(t.accept(m(13)), 'apply');
    assert.equal(t.accept(m(20)), 'apply');
    assert.deepEqual(t.resumeMessage(), { type: 'resume', epoch: 'E1', after: 20 });
  });

  it('drops duplicates and anything older than the first hello', () => {
    const t = new SeqTracker();
    t.accept(m(10, 'hello'));
    assert.equal(t.accept(m(9)), 'duplicate');
    assert.equal(t.accept(m(11)), 'apply');
    assert.equal(t.accept(m(11)), 'duplicate');
  });

  it('after a reconnect applies replayed messages even when a newer live one came first', () => {
    const t = new SeqTracker();
    t.accept(m(10, 'hello'));
    t.accept(m(12));
    // reconnect: hello at 30, a live 31 arrives before the replay of 13..30
    assert.equal(t.accept(m(30, 'hello')), 'apply');
    assert.equal(t.accept(m(31)), 'apply');
    assert.equal(t.accept(m(15)), 'apply');
    assert.equal(t.accept(m(28)), 'apply');
    assert.equal(t.accept(m(15)), 'duplicate');
    assert.equal(t.resumeMessage()!.type, 'resume');
    assert.equal((t.resumeMessage() as { after: number }).after, 31);
  });

  it('asks for a reload when the gateway restarted or cannot replay', () => {
    const t = new SeqTracker();
    t.accept(m(5, 'hello'));
    assert.equal(t.accept(m(1, 'hello', 'E2')), 'resync');
    assert.equal(t.accept(m(2, 'hold.created', 'E2')), 'apply');
    assert.equal(t.accept(m(90, 'resync', 'E2')), 'resync');
    assert.equal(t.accept(m(50, 'hold.created', 'E2')), 'duplicate');
    assert.equal(t.accept(m(91, 'hold.created', 'E2')), 'apply');
  });

  it('has nothing to resume before the first message', () => {
    assert.equal(new SeqTracker().resumeMessage(), undefined);
  });
});

describe('reconnect backoff', () => {
  it('doubles from half a second up to ten seconds, with jitter', () => {
    assert.equal(backoff(0), 500);
    assert.equal(backoff(1), 1000);
    assert.equal(backoff(10), 10_000);
    assert.equal(backoff(0, 0), 400);
    assert.equal(backoff(0, 1), 600);
  });
});
