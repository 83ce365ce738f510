// The /api/events WebSocket: who receives which message, sign-out closing sockets, replay limits
// (resync), and keepalive dropping clients that stop answering.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import WebSocket from 'ws';
import { Config, HoldSpec } from '../../shared/config';
import type { Identity } from '../../shared/identity';
import type { ServerMessage } from '../../shared/messages';
import { EventBus } from '../../proxy/bus';
import { attachEventsSocket, messageVisibleTo } from '../../proxy/control/events-socket';
import { Gateway } from '../../proxy/gateway';
import { rolesFor } from '../../proxy/identity/authenticator';
import { silentLogger } from '../../proxy/log';
import type { GatewayServices } from '../../proxy/services';
import { EventsClient } from './holds-ws-client';

const ROLES = { admin: ['admin'], approver: ['approver'], reviewer: ['reviewer'] };
const who = (name: string, groups: string[]): Identity => ({ subject: `key:${name}`, name, groups, roles: rolesFor(groups, ROLES), via: 'api-key' });

describe('/api/events', () => {
  let gw: Gateway;
  let dataDir: string;
  let control: string;
  const keys: Record<string, string> = {};
  const ids: Record<string, Identity> = {};

  before(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'custody-events-'));
    gw = await Gateway.start({ config: Config.parse({ listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' } }), dataDir, log: silentLogger });
    control = `http://${gw.address('control')}`;
    for (const [name, groups] of [['dba', ['dba']], ['dev', ['engineering']], ['auditor', ['reviewer']], ['eve', ['marketing']]] as const) {
      const { key, record } = gw.services.keys.create({ name, groups: [...groups] });
      keys[name] = key;
      ids[name] = gw.services.auth.identityForKey(record);
    }
    keys['admin'] = gw.firstKey!;
  });
  after(async () => {
    await gw.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('pushes a hold to its approvers, admins, its requester and reviewers only; session events to reviewers', async () => {
    const clients = Object.fromEntries(await Promise.all(['dba', 'dev', 'auditor', 'eve', 'admin'].map(async (n) => [n, await EventsClient.connect(control, { bearer: keys[n] })] as const)));
    const ac = new AbortController();
    const pending = gw.services.holds.request({
      identity: ids['dev']!,
      connection: 'warehouse',
      protocol: 'postgres',
      session: 'sess-x',
      rule: 'hold-ddl',
      summary: 'DROP TABLE t',
      spec: HoldSpec.parse({ approvers: ['dba'] }),
      signal: ac.signal,
    });
    gw.services.store.append({ kind: 'pg.statement', session: 'sess-x', actor: ids['dev']!.subject, connection: 'warehouse', payload: { sql: 'select 1' } });
    for (const n of ['dba', 'admin', 'dev', 'auditor']) await clients[n]!.next((m) => m.type === 'hold.created');
    await clients['auditor']!.next((m) => m.type === 'session.event');
    ac.abort();
    await pending;
    for (const n of ['dba', 'admin', 'dev']) await clients[n]!.next((m) => m.type === 'hold.resolved');
    const types = (n: string) => clients[n]!.messages.map((m) => m.type);
    assert.ok(!types('eve').some((t) => t.startsWith('hold.') || t.startsWith('session.')), 'eve sees nothing of it');
    assert.ok(!types('dba').includes('session.event'), 'an approver without the reviewer role gets no session events');
    const hello = clients['dba']!.messages[0] as Extract<ServerMessage, { type: 'hello' }>;
    assert.deepEqual([hello.type, hello.user.name, hello.epoch], ['hello', 'dba', gw.services.bus.epoch]);
    await Promise.all(Object.values(clients).map((c) => c.close()));
  });

  it('decides visibility for every message kind', () => {
    const hold = { approvers: ['dba'], requester: 'key:dev' } as never;
    const m = (body: object) => ({ seq: 1, epoch: 'e', at: 0, ...body }) as ServerMessage;
    assert.equal(messageVisibleTo(who('x', ['dba']), m({ type: 'hold.updated', hold })), true);
    assert.equal(messageVisibleTo(who('x', ['admin']), m({ type: 'hold.updated', hold })), true);
    assert.equal(messageVisibleTo({ ...who('dev', []), subject: 'key:dev' }, m({ type: 'hold.resolved', hold })), true);
    assert.equal(messageVisibleTo(who('x', ['approver']), m({ type: 'hold.created', hold })), false, 'the approver role alone does not cover every group');
    assert.equal(messageVisibleTo(who('x', ['reviewer']), m({ type: 'hold.created', hold })), true, 'reviewers watch holds read-only');
    assert.equal(messageVisibleTo(who('x', ['marketing']), m({ type: 'hold.created', hold })), false);
    assert.equal(messageVisibleTo(who('x', []), m({ type: 'export.done', id: 'e', url: '/x', bytes: 1 })), false);
    assert.equal(messageVisibleTo(who('x', ['reviewer']), m({ type: 'export.done', id: 'e', url: '/x', bytes: 1 })), true);
    assert.equal(messageVisibleTo(who('x', []), m({ type: 'policy.updated', version: 2, author: 'a' })), true);
    // A session's live events are reading it: reviewers and admins, not the approver role alone.
    const event = { seq: 1, time: 0, kind: 'ssh.output', session: 's1', actor: 'key:k', connection: 'box', payload: {}, spans: [], payloadHash: '', prevHash: '', hash: '' } as const;
    assert.equal(messageVisibleTo(who('x', ['approver']), m({ type: 'session.event', event })), false, 'approvers do not receive every session live');
    assert.equal(messageVisibleTo(who('x', ['reviewer']), m({ type: 'session.event', event })), true);
    assert.equal(messageVisibleTo(who('x', ['admin']), m({ type: 'session.event', event })), true);
  });

  it('closes the socket of a console session that signs out', async () => {
    const res = await fetch(`${control}/api/auth/key`, { method: 'POST', headers: { 'content-type': 'application/json', origin: control }, body: JSON.stringify({ key: keys['dba'] }) });
    const cookie = res.headers.getSetCookie()[0]!.split(';')[0]!;
    const c = await EventsClient.connect(control, { cookie, origin: control });
    const closed = new Promise<number>((r) => c.ws.once('close', (code) => r(code)));
    await fetch(`${control}/api/auth/logout`, { method: 'POST', headers: { cookie, origin: control } });
    assert.equal(await closed, 4401);
  });

  it('asks for a resync when the missed messages are no longer buffered', async () => {
    const c = await EventsClient.connect(control, { bearer: keys['admin'] });
    const last = c.lastSeq;
    await c.close();
    // more than the bus keeps (it keeps at least 10,000 and trims in bulk at twice that)
    for (let i = 0; i < 20_050; i++) gw.services.bus.publish({ type: 'connections.updated' });
    const again = await EventsClient.connect(control, { bearer: keys['admin'] });
    again.send({ type: 'resume', epoch: gw.services.bus.epoch, after: last });
    const r = await again.next((m) => m.type === 'resync');
    assert.match((r as Extract<ServerMessage, { type: 'resync' }>).reason, /too many messages were missed/);
    // Two messages arrive live; a resume from just before hello replays only what came before it.
    const helloSeq = again.messages[0]!.seq;
    gw.services.bus.publish({ type: 'connections.updated' });
    gw.services.bus.publish({ type: 'connections.updated' });
    for (let i = 0; i < 100 && again.messages.filter((m) => m.type === 'connections.updated').length < 2; i++) await new Promise((r2) => setTimeout(r2, 10));
    again.send({ type: 'resume', epoch: gw.services.bus.epoch, after: helloSeq - 1 });
    await new Promise((r2) => setTimeout(r2, 100));
    const seqs = again.messages.filter((m) => m.type === 'connections.updated').map((m) => m.seq);
    assert.equal(seqs.length, 3);
    assert.equal(new Set(seqs).size, 3, 'nothing delivered twice');
    assert.ok(seqs.includes(helloSeq));
    await again.close();
  });

  it('drops a client that stops answering pings, and one whose key was revoked', async () => {
    const bus = new EventBus();
    const revoked = new Set<string>();
    const fake = {
      bus,
      version: 'test',
      log: silentLogger,
      login: { onLogout: () => () => {} },
      consoleSessions: { get: () => undefined },
      auth: {
        authenticate: async (key: string) => {
          if (revoked.has(key)) throw new Error('revoked');
          return who(key, ['admin']);
        },
      },
    } as unknown as GatewayServices;
    const server = createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const sock = attachEventsSocket(server, fake, { pingMs: 100 });
    const url = `ws://127.0.0.1:${(server.address() as AddressInfo).port}/api/events`;
    const open = (key: string, autoPong: boolean) =>
      new Promise<WebSocket>((resolve, reject) => {
        const ws = new WebSocket(url, { headers: { authorization: `Bearer ${key}` }, autoPong });
        ws.once('message', () => resolve(ws));
        ws.once('error', reject);
      });
    const silent = await open('silent', false);
    const healthy = await open('healthy', true);
    const revokedLater = await open('later', true);
    const t0 = Date.now();
    const silentClosed = new Promise<number>((r) => silent.once('close', (code) => r(code)));
    revoked.add('later');
    const revokedClosed = new Promise<number>((r) => revokedLater.once('close', (code) => r(code)));
    assert.equal(await revokedClosed, 4401);
    assert.equal(await silentClosed, 1006, 'terminated without a closing handshake');
    assert.ok(Date.now() - t0 < 2000);
    assert.equal(healthy.readyState, WebSocket.OPEN);
    for (let i = 0; i < 50 && sock.clients > 1; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(sock.clients, 1);
    healthy.close();
    await sock.close();
    server.close();
  });
});
