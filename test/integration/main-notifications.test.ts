/**
 * Native hold notifications decided from a real WebSocket stream. The control plane here is a
 * small `ws` server that speaks shared/messages.ts through the gateway's own EventBus (sequence
 * numbers, epochs, resume), with `/api/me` and `/api/holds` beside it.
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, describe, it } from 'node:test';
import { WebSocketServer, type WebSocket } from 'ws';
import { EventBus } from '../../proxy/bus';
import type { HoldView } from '../../shared/holds';
import type { Identity } from '../../shared/identity';
import type { ClientMessage, ServerMessage } from '../../shared/messages';
import { type EventsStatus, watchHolds } from '../../main/control-events';
import { type HoldNotification, HoldNotifier, holdNotification, mayDecide, nativeHoldNotifications } from '../../main/notifications';

const TOKEN = 'console-token-123';
const ME: Identity = { subject: 'local:alice', name: 'alice', groups: ['dba'], roles: ['approver', 'user'], via: 'console' };

class FakeControlPlane {
  bus = new EventBus();
  holds = new Map<string, HoldView>();
  sockets = new Set<WebSocket>();
  resumes: ClientMessage[] = [];
  origin = '';
  private server: Server;
  private wss = new WebSocketServer({ noServer: true });

  constructor() {
    this.server = createServer((req, res) => {
      if (req.headers.authorization !== `Bearer ${TOKEN}`) {
        res.writeHead(401).end();
        return;
      }
      const url = new URL(req.url!, 'http://x');
      const body = url.pathname === '/api/me' ? ME : url.pathname === '/api/holds' ? { total: 0, holds: [...this.holds.values()].filter((h) => h.state === 'pending') } : undefined;
      res.writeHead(body ? 200 : 404, { 'content-type': 'application/json' }).end(JSON.stringify(body ?? { error: 'not found' }));
    });
    this.server.on('upgrade', (req, socket, head) => {
      if (req.url !== '/api/events' || req.headers.authorization !== `Bearer ${TOKEN}`) {
        socket.end('HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n');
        return;
      }
      this.wss.handleUpgrade(req, socket, head, (ws) => this.attach(ws));
    });
  }

  private attach(ws: WebSocket) {
    this.sockets.add(ws);
    const send = (m: ServerMessage) => ws.send(JSON.stringify(m));
    let live = false;
    const queued: ServerMessage[] = [];
    const unsubscribe = this.bus.subscribe((m) => (live ? send(m) : queued.push(m)));
    ws.on('close', () => {
      unsubscribe();
      this.sockets.delete(ws);
    });
    ws.on('message', (data) => {
      const msg = JSON.parse(String(data)) as ClientMessage;
      if (msg.type !== 'resume') return;
      this.resumes.push(msg);
      const missed = this.bus.since(msg.epoch, msg.after);
      if (missed) missed.forEach(send);
      else send({ type: 'resync', reason: 'gap', seq: this.bus.lastSeq, epoch: this.bus.epoch, at: Date.now() });
    });
    // hello first, at the bus's current position, then anything published meanwhile
    send({ type: 'hello', user: { subject: ME.subject, name: ME.name, roles: ME.roles }, gatewayVersion: 'test', seq: this.bus.lastSeq, epoch: this.bus.epoch, at: Date.now() });
    setImmediate(() => {
      live = true;
      queued.forEach(send);
    });
  }

  create(h: Partial<HoldView> & { id: string }): HoldView {
    const hold: HoldView = {
      state: 'pending',
      session: 's1',
      connection: 'warehouse',
      protocol: 'postgres',
      requester: 'key:k1',
      requesterName: 'etl-bot',
      rule: 'hold-destructive-sql',
      ruleReason: 'destructive statements need a DBA',
      summary: 'DROP TABLE customers',
      approvers: ['dba'],
      min: 1,
      denyMin: 1,
      reasonRequired: false,
      createdAt: Date.now(),
      expiresAt: Date.now() + 5 * 60_000,
      votes: [],
      ...h,
    };
    this.holds.set(hold.id, hold);
    this.bus.publish({ type: 'hold.created', hold });
    return hold;
  }

  resolve(id: string, state: HoldView['state'] = 'approved') {
    const hold = { ...this.holds.get(id)!, state, resolvedAt: Date.now() };
    this.holds.set(id, hold);
    this.bus.publish({ type: 'hold.resolved', hold });
  }

  dropConnections() {
    for (const ws of this.sockets) ws.terminate();
  }

  async listen(port = 0) {
    await new Promise<void>((r) => this.server.listen(port, '127.0.0.1', r));
    this.origin = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  async close() {
    for (const ws of this.sockets) ws.terminate();
    this.server.closeAllConnections();
    await new Promise((r) => this.server.close(r));
  }
}

/** A recorder standing in for the OS: which notifications are on screen now. */
function screen() {
  const shown: HoldNotification[] = [];
  const open = new Set<string>();
  const counts: number[] = [];
  const notifier = new HoldNotifier({
    show: (n) => {
      shown.push(n);
      open.add(n.holdId);
      return { close: () => open.delete(n.holdId) };
    },
    onPendingCount: (c) => counts.push(c),
  });
  return { shown, open, counts, notifier };
}

async function until(cond: () => boolean, what: string, ms = 5000) {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('hold notifications from the control-plane WebSocket', () => {
  const planes: FakeControlPlane[] = [];
  const watches: { stop(): void }[] = [];
  after(async () => {
    watches.forEach((w) => w.stop());
    await Promise.all(planes.map((p) => p.close()));
  });

  it('notifies for holds this approver may decide, withdraws them when resolved, and counts them', async () => {
    const cp = await new FakeControlPlane().listen();
    planes.push(cp);
    const s = screen();
    const watch = watchHolds({ origin: cp.origin, headers: () => ({ authorization: `Bearer ${TOKEN}` }), notifier: s.notifier, initialBackoffMs: 50 });
    watches.push(watch);
    await watch.synced();
    assert.deepEqual(s.notifier.approver, { subject: 'local:alice', name: 'alice', roles: ['approver', 'user'], groups: ['dba'] });

    cp.create({ id: 'h1' });
    cp.create({ id: 'h-own', requester: 'local:alice', requesterName: 'alice' }); // nobody approves their own request
    cp.create({ id: 'h-other-group', approvers: ['security'] });
    cp.create({ id: 'h2', connection: 'openai', protocol: 'http', rule: 'hold-bulk-export-prompts', summary: 'POST /chat/completions gpt-4o: "export all…"', requesterName: 'bob' });
    await until(() => s.shown.length === 2, 'two notifications');
    assert.deepEqual(s.shown.map((n) => n.holdId), ['h1', 'h2']);
    const n1 = s.shown[0]!;
    assert.equal(n1.title, 'Approval needed: hold-destructive-sql');
    assert.match(n1.body, /^etl-bot on warehouse: DROP TABLE customers\n/);
    assert.match(n1.body, /Rule hold-destructive-sql \(destructive statements need a DBA\) · expires in 5 min \(\d{1,2}:\d\d( [AP]M)?\)/);
    assert.equal(s.counts.at(-1), 2);

    cp.resolve('h1');
    await until(() => !s.open.has('h1'), 'h1 withdrawn');
    assert.ok(s.open.has('h2'));
    assert.equal(s.counts.at(-1), 1);
    cp.resolve('h2', 'denied');
    await until(() => s.open.size === 0 && s.counts.at(-1) === 0, 'all withdrawn');
    assert.equal(s.shown.length, 2, 'no notification for holds resolved or not ours');
  });

  it('stays quiet while paused but keeps the count', async () => {
    const cp = await new FakeControlPlane().listen();
    planes.push(cp);
    const s = screen();
    s.notifier.setPaused(true);
    const watch = watchHolds({ origin: cp.origin, headers: () => ({ authorization: `Bearer ${TOKEN}` }), notifier: s.notifier });
    watches.push(watch);
    await watch.synced();
    cp.create({ id: 'p1' });
    await until(() => s.counts.at(-1) === 1, 'count 1');
    assert.equal(s.shown.length, 0);
    s.notifier.setPaused(false);
    cp.create({ id: 'p2' });
    await until(() => s.shown.length === 1, 'p2 shown');
    assert.equal(s.shown[0]!.holdId, 'p2');
    watch.stop();
  });

  it('resumes after a dropped connection without losing or repeating holds', async () => {
    const cp = await new FakeControlPlane().listen();
    planes.push(cp);
    const s = screen();
    const statuses: EventsStatus[] = [];
    const watch = watchHolds({ origin: cp.origin, headers: () => ({ authorization: `Bearer ${TOKEN}` }), notifier: s.notifier, initialBackoffMs: 100, onStatus: (st) => statuses.push(st) });
    watches.push(watch);
    await watch.synced();
    cp.create({ id: 'r1' });
    await until(() => s.shown.length === 1, 'r1');
    const before = watch.events.position;
    cp.dropConnections();
    await until(() => statuses.some((st) => st.status === 'closed'), 'disconnect seen');
    // published while the desktop was disconnected
    cp.create({ id: 'r2' });
    cp.resolve('r1');
    await until(() => s.shown.length === 2 && !s.open.has('r1'), 'missed messages replayed');
    assert.equal(cp.resumes.length, 1);
    assert.deepEqual(cp.resumes[0], { type: 'resume', epoch: before.epoch, after: before.seq });
    assert.deepEqual(s.shown.map((n) => n.holdId), ['r1', 'r2']);
    assert.deepEqual([...s.open], ['r2']);
    assert.equal(s.counts.at(-1), 1);
  });

  it('re-reads pending holds quietly when the gateway restarted (new epoch)', async () => {
    const cp = await new FakeControlPlane().listen();
    planes.push(cp);
    const s = screen();
    const watch = watchHolds({ origin: cp.origin, headers: () => ({ authorization: `Bearer ${TOKEN}` }), notifier: s.notifier, initialBackoffMs: 50 });
    watches.push(watch);
    await watch.synced();
    cp.create({ id: 'e1' });
    await until(() => s.shown.length === 1, 'e1');
    // the gateway restarts: new bus (epoch), e1 is gone, e2 was created while nobody listened
    cp.bus = new EventBus();
    cp.holds.clear();
    cp.holds.set('e2', { ...holdTemplate('e2') });
    const resynced = watch.synced();
    cp.dropConnections();
    await resynced;
    assert.deepEqual(s.notifier.pending().map((h) => h.id), ['e2']);
    assert.equal(s.open.has('e1'), false, 'the vanished hold was withdrawn');
    assert.equal(s.shown.length, 1, 'holds found by re-reading are counted, not announced');
    assert.equal(s.counts.at(-1), 1);
  });

  it('reports a refused credential and keeps retrying', async () => {
    const cp = await new FakeControlPlane().listen();
    planes.push(cp);
    const statuses: EventsStatus[] = [];
    const watch = watchHolds({ origin: cp.origin, headers: () => ({ authorization: 'Bearer wrong' }), notifier: screen().notifier, initialBackoffMs: 20, onStatus: (st) => statuses.push(st) });
    await until(() => statuses.filter((st) => st.status === 'closed').length >= 2, 'two refusals');
    watch.stop();
    const closed = statuses.filter((st): st is Extract<EventsStatus, { status: 'closed' }> => st.status === 'closed');
    assert.match(closed[0]!.detail, /HTTP 401/);
    assert.ok(closed[1]!.retryInMs! > closed[0]!.retryInMs!, 'backs off');
  });
});

function holdTemplate(id: string): HoldView {
  return { id, state: 'pending', session: null, connection: 'warehouse', protocol: 'postgres', requester: 'key:k9', requesterName: 'cron', rule: 'r', summary: 'TRUNCATE t', approvers: ['dba'], min: 1, denyMin: 1, reasonRequired: false, createdAt: Date.now(), expiresAt: Date.now() + 60_000, votes: [] };
}

describe('hold notification decisions', () => {
  it('applies the gateway rule: admin or a member of an approver group, never the requester, never twice', () => {
    const h = holdTemplate('x');
    assert.equal(mayDecide(h, { subject: 'a', roles: ['admin'] }), true);
    assert.equal(mayDecide(h, { subject: 'a', roles: ['user'], groups: ['dba'] }), true);
    assert.equal(mayDecide(h, { subject: 'a', roles: ['approver'], groups: ['security'] }), false);
    assert.equal(mayDecide(h, { subject: 'key:k9', roles: ['admin'] }), false);
    assert.equal(mayDecide({ ...h, votes: [{ by: 'a', byName: 'a', decision: 'approve', reason: '', at: 1 }] }, { subject: 'a', roles: ['admin'] }), false);
  });

  it('withdraws a notification when this approver votes or the hold expires', async () => {
    const s = screen();
    s.notifier.setApprover({ subject: 'a', roles: ['admin'] });
    const msg = (body: { type: 'hold.created' | 'hold.updated'; hold: HoldView }, seq: number) => ({ ...body, seq, epoch: 'e', at: 0 }) as ServerMessage;
    const h = holdTemplate('v1');
    s.notifier.handle(msg({ type: 'hold.created', hold: h }, 1));
    s.notifier.handle(msg({ type: 'hold.created', hold: { ...holdTemplate('x1'), expiresAt: Date.now() + 80 } }, 2));
    assert.deepEqual([...s.open], ['v1', 'x1']);
    s.notifier.handle(msg({ type: 'hold.updated', hold: { ...h, votes: [{ by: 'a', byName: 'a', decision: 'approve', reason: 'ok', at: 1 }] } }, 3));
    assert.deepEqual([...s.open], ['x1']);
    await until(() => s.open.size === 0, 'expiry withdraws');
    assert.equal(s.counts.at(-1), 0);
  });

  it('opens the hold when the native notification is clicked', () => {
    class FakeNotification extends EventEmitter {
      static made: FakeNotification[] = [];
      shown = false;
      closed = false;
      constructor(readonly options: { title: string; body: string }) {
        super();
        FakeNotification.made.push(this);
      }
      show() {
        this.shown = true;
      }
      close() {
        this.closed = true;
      }
    }
    const opened: string[] = [];
    const show = nativeHoldNotifications(FakeNotification, (id) => opened.push(id));
    const handle = show(holdNotification(holdTemplate('c1'), Date.now()));
    const native = FakeNotification.made[0]!;
    assert.equal(native.shown, true);
    assert.equal(native.options.title, 'Approval needed: r');
    native.emit('click');
    assert.deepEqual(opened, ['c1']);
    handle.close();
    assert.equal(native.closed, true);
  });
});
