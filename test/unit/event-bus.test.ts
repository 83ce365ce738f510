// The control-plane bus's resume buffer: exact resumes, resync past its end, and recorded events
// kept as their seq (restored from the store when a client resumes).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AuditEvent } from '../../shared/events';
import type { ServerMessage } from '../../shared/messages';
import { EventBus, sessionEventsFromStore } from '../../proxy/bus';

const event = (seq: number): AuditEvent => ({
  seq,
  time: 1,
  kind: 'http.request',
  session: 'ses_1',
  actor: 'key:a',
  connection: 'openai',
  payload: { body: 'x'.repeat(100), n: seq },
  spans: [],
  payloadHash: 'p',
  prevHash: 'h',
  hash: `h${seq}`,
});

describe('EventBus', () => {
  it('replays exactly what a client missed, and asks for a resync past the buffer', () => {
    const bus = new EventBus(2);
    const first = bus.publish({ type: 'policy.updated', version: 1, author: 'a' });
    for (let v = 2; v <= 6; v++) bus.publish({ type: 'policy.updated', version: v, author: 'a' });
    assert.equal(bus.since('another-epoch', first), null);
    assert.equal(bus.since(bus.epoch, first), null, 'the gap fell out of the buffer');
    assert.deepEqual(
      bus.since(bus.epoch, bus.lastSeq - 1)!.map((m) => (m as Extract<ServerMessage, { type: 'policy.updated' }>).version),
      [6],
    );
  });

  it('keeps recorded events light and restores them for a resuming client', () => {
    const stored = new Map<number, AuditEvent>();
    const bus = new EventBus(100, sessionEventsFromStore({ event: (seq) => stored.get(seq) }));
    const live: ServerMessage[] = [];
    bus.subscribe((m) => live.push(m));
    for (let i = 1; i <= 3; i++) {
      stored.set(i, event(i));
      bus.publish({ type: 'session.event', event: event(i) });
    }
    assert.deepEqual((live[0] as Extract<ServerMessage, { type: 'session.event' }>).event.payload, event(1).payload, 'subscribers get the whole event');
    const kept = (bus as unknown as { kept: (ServerMessage | undefined)[] }).kept;
    assert.ok(kept.every((m) => m === undefined), 'the buffer holds recorded events by their seq, not as objects');
    const resumed = bus.since(bus.epoch, live[0]!.seq)!;
    assert.deepEqual(
      resumed.map((m) => (m as Extract<ServerMessage, { type: 'session.event' }>).event),
      [event(2), event(3)],
    );
    stored.delete(3); // e.g. a payload the store can no longer give back
    assert.equal(bus.since(bus.epoch, live[0]!.seq), null, 'a client that cannot be given the events resyncs');
  });

  it("keeps another gateway's events whole: this store's event of the same seq is not theirs", () => {
    const stored = new Map<number, AuditEvent>([[7, event(7)]]);
    const bus = new EventBus(100, sessionEventsFromStore({ event: (seq) => stored.get(seq) }));
    const from = bus.lastSeq;
    const theirs = { ...event(7), payload: { from: 'gateway A' }, hash: 'a'.repeat(64) };
    bus.publish({ type: 'session.event', event: theirs, gateway: 'SHA256:gatewayA' });
    bus.publish({ type: 'session.event', event: event(7) });
    const resumed = bus.since(bus.epoch, from)! as Extract<ServerMessage, { type: 'session.event' }>[];
    assert.deepEqual(
      resumed.map((m) => [m.gateway, m.event]),
      [
        ['SHA256:gatewayA', theirs],
        [undefined, event(7)],
      ],
    );
  });
});
