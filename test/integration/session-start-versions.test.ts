/**
 * `session.start` is versioned: version 2 is one shape for every protocol (shared/events.ts), and
 * version 1, one shape per protocol and no `v`, is what stores written before hold. Sessions
 * recorded in version 1 must still list, replay, export and verify.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Config } from '../../shared/config';
import { type AuditEvent, type AuditEventInput, readSessionStart, type SessionSummary } from '../../shared/events';
import type { Identity } from '../../shared/identity';
import { openAuditTrail } from '../../proxy/audit/checkpoints';
import { AuditStore } from '../../proxy/audit/store';
import { readTar } from '../../proxy/audit/tar';
import { main } from '../../proxy/cli';
import { Gateway } from '../../proxy/gateway';
import { silentLogger } from '../../proxy/log';
import { sessionStartEvent } from '../../proxy/postgres/recording';
import { buildConversation } from '../../renderer/lib/conversation';
import { buildTimeline, labelOf } from '../../renderer/lib/replay';
import { buildTranscript } from '../../renderer/lib/sql-transcript';
import { tempDir } from '../support/tmp';

const T0 = Date.parse('2026-03-01T10:00:00Z');

/** The three version-1 shapes, exactly as the HTTP, PostgreSQL and SSH proxies recorded them. */
const V1: AuditEventInput[] = [
  {
    kind: 'session.start',
    session: 'h1',
    actor: 'key:dev',
    connection: 'openai',
    time: T0,
    payload: { protocol: 'http', identity: 'key:dev', actorName: 'dev', via: 'api-key', groups: ['engineering'], clientAddress: '127.0.0.1', userAgent: 'OpenAI/JS 5.0', connection: 'openai', kind: 'openai', clientSession: 'agent-run-7' },
  },
  { kind: 'http.request', session: 'h1', actor: 'key:dev', connection: 'openai', time: T0 + 1, payload: { method: 'POST', path: '/chat/completions', model: 'gpt-4o', actorName: 'dev', body: { model: 'gpt-4o', messages: [{ role: 'user', content: 'hello' }] } } },
  { kind: 'http.response', session: 'h1', actor: 'key:dev', connection: 'openai', time: T0 + 2, payload: { status: 200, body: { choices: [{ message: { role: 'assistant', content: 'hi' } }] } } },
  {
    kind: 'session.start',
    session: 'p1',
    actor: 'key:bo',
    connection: 'warehouse',
    time: T0 + 10,
    payload: {
      protocol: 'postgres',
      actorName: 'bo',
      identity: { subject: 'key:bo', name: 'bo', groups: ['analyst'], via: 'api-key' },
      client: { address: '127.0.0.2', port: 50000, tls: false, user: 'bo', database: 'app', applicationName: 'psql' },
      database: 'app',
      upstream: { host: '127.0.0.1', port: 5432, user: 'custody', database: 'app', tls: false, auth: 'scram-sha-256', pid: 4242 },
    },
  },
  { kind: 'pg.statement', session: 'p1', actor: 'key:bo', connection: 'warehouse', time: T0 + 11, payload: { n: 1, protocol: 'simple', sql: 'select 1', classes: ['select'], tables: [], decision: { action: 'allow', rule: null, reason: null } } },
  { kind: 'pg.result', session: 'p1', actor: 'key:bo', connection: 'warehouse', time: T0 + 12, payload: { n: 1, durationMs: 1, rows: 1, columns: ['?column?'], sample: [['1']], command: 'SELECT 1' } },
  {
    kind: 'session.start',
    session: 's1',
    actor: 'oidc#carol',
    connection: 'bastion',
    time: T0 + 20,
    payload: {
      protocol: 'ssh',
      actorName: 'carol',
      identity: { subject: 'oidc#carol', name: 'carol', groups: ['ops'], via: 'oidc' },
      client: { address: '127.0.0.3', port: 50001, software: 'OpenSSH_9.6' },
      upstream: { host: '127.0.0.1', port: 22, user: 'ops', hostKey: 'SHA256:abc' },
    },
  },
];

async function seed(): Promise<string> {
  const dir = tempDir('custody-start-v1-');
  const store = AuditStore.open(dir);
  const trail = openAuditTrail(store, dir, Config.parse({ audit: { origin: 'custody.test/session-start' } }));
  store.appendMany(V1);
  await trail.checkpoints.write(T0 + 30);
  store.close();
  return dir;
}

async function cli(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await main(argv, { out: (t) => (out += t), err: (t) => (err += t) });
  return { code, out, err };
}

describe('session.start versions', () => {
  it('reads the same facts from version 1 of every protocol and from version 2', () => {
    const [http, , , pg, , , ssh] = V1.map((e) => readSessionStart(e.payload));
    assert.deepEqual(http, { version: 1, protocol: 'http', actorName: 'dev', subject: 'key:dev', groups: ['engineering'], via: 'api-key', clientAddress: '127.0.0.1', clientSession: 'agent-run-7' });
    assert.deepEqual(pg, { version: 1, protocol: 'postgres', actorName: 'bo', subject: 'key:bo', groups: ['analyst'], via: 'api-key', clientAddress: '127.0.0.2', clientSession: null });
    assert.deepEqual(ssh, { version: 1, protocol: 'ssh', actorName: 'carol', subject: 'oidc#carol', groups: ['ops'], via: 'oidc', clientAddress: '127.0.0.3', clientSession: null });
    // What the PostgreSQL proxy writes now: version 2, the same facts.
    const identity: Identity = { subject: 'key:bo', name: 'bo', groups: ['analyst'], via: 'api-key' } as Identity;
    const now = sessionStartEvent(
      { session: 'p2', actor: 'key:bo', connection: 'warehouse', forLog: (text) => ({ text, spans: [] }) },
      {
        identity,
        client: { address: '127.0.0.2', port: 50000, tls: false, user: 'bo', database: 'app', applicationName: 'psql' },
        database: 'app',
        upstream: { host: '127.0.0.1', port: 5432, user: 'custody', tls: false, auth: 'scram-sha-256', pid: 4242 },
      },
    );
    assert.deepEqual(readSessionStart(now.payload), { ...pg, version: 2 });
    // Nothing usable: every fact null, never a throw.
    assert.deepEqual(readSessionStart(null), { version: 1, protocol: null, actorName: null, subject: null, groups: null, via: null, clientAddress: null, clientSession: null });
  });

  it('lists and replays version-1 sessions through the console API and the console code', async () => {
    const dataDir = await seed();
    const gw = await Gateway.start({ config: Config.parse({ listen: { control: '127.0.0.1:0' } }), dataDir, log: silentLogger });
    try {
      const control = `http://${gw.address('control')}`;
      const api = async <T>(path: string): Promise<T> => {
        const r = await fetch(`${control}${path}`, { headers: { authorization: `Bearer ${gw.firstKey!}` } });
        assert.equal(r.status, 200, `GET ${path}: ${r.status}`);
        return (await r.json()) as T;
      };
      const { sessions } = await api<{ sessions: SessionSummary[] }>('/api/sessions?limit=100');
      const byId = new Map(sessions.map((s) => [s.id, s]));
      assert.deepEqual(
        ['h1', 'p1', 's1'].map((id) => [byId.get(id)?.protocol, byId.get(id)?.actorName]),
        [
          ['http', 'dev'],
          ['postgres', 'bo'],
          ['ssh', 'carol'],
        ],
      );
      const events = async (id: string) => (await api<{ events: AuditEvent[] }>(`/api/sessions/${id}/events`)).events;

      const http = await events('h1');
      assert.deepEqual(http[0]!.payload, V1[0]!.payload, 'the recorded payload comes back as it was written');
      const httpTimeline = buildTimeline(http);
      assert.equal(labelOf(http[0]!), 'session start · dev');
      const conversation = buildConversation(http, httpTimeline);
      assert.ok(conversation.blocks.some((b) => b.type === 'notice' && b.title === 'Session started'));
      assert.equal(conversation.exchanges, 1);

      const pg = await events('p1');
      const transcript = buildTranscript(pg, buildTimeline(pg), 'app').flatMap((e) => e.lines.map((l) => l.text.text));
      assert.equal(transcript[0], '-- connected as bo to warehouse');
      assert.ok(transcript.some((l) => l.includes('select 1')));

      const ssh = await events('s1');
      assert.equal(labelOf(ssh[0]!), 'session start · carol');
    } finally {
      await gw.stop();
    }
  });

  it('exports version-1 sessions into a bundle that verifies, payloads unchanged', async () => {
    const dataDir = await seed();
    const out = join(tempDir(), 'evidence.tar.gz');
    const r = await cli('export', '--data-dir', dataDir, '--out', out);
    assert.equal(r.code, 0, r.err);
    const fingerprint = /--key (SHA256:\S+)/.exec(r.out)![1]!;
    const files = readTar(readFileSync(out));
    const exported = files.get('events.jsonl')!.toString('utf8').trim().split('\n').map((l) => JSON.parse(l) as AuditEvent);
    const starts = exported.filter((e) => e.kind === 'session.start');
    assert.deepEqual(
      starts.map((e) => e.payload),
      V1.filter((e) => e.kind === 'session.start').map((e) => e.payload),
    );
    const ocsf = files.get('ocsf.jsonl')!.toString('utf8').trim().split('\n').map((l) => JSON.parse(l) as { metadata: { log_name: string }; actor?: { user: { name?: string } } });
    assert.deepEqual(
      ocsf.filter((o) => o.metadata.log_name === 'session.start').map((o) => o.actor?.user.name),
      ['dev', 'bo', 'carol'],
    );
    const v = await cli('verify', out, '--key', fingerprint);
    assert.equal(v.code, 0, v.err);
    assert.match(v.out, /^OK: bundle .* is intact/);
  });
});
