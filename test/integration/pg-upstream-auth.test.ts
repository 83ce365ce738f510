/**
 * Upstream logins with a stored credential: a throwaway PostgreSQL cluster (initdb in a temp dir, on
 * a free port) that demands SCRAM-SHA-256, MD5 or a cleartext password, and TLS for one role. The
 * shared server on 5432 trusts everyone, so it cannot show that these exchanges work.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { createSelfSignedCertificate } from '../../proxy/postgres/self-signed';
import { freePort } from '../support/ports';
import { eventsOf, startHarness } from './pg-harness';

const run = promisify(execFile);

function pgBin(name: string): string {
  const root = '/usr/lib/postgresql';
  const versions = existsSync(root) ? readdirSync(root).sort((a, b) => Number(b) - Number(a)) : [];
  for (const v of versions) if (existsSync(join(root, v, 'bin', name))) return join(root, v, 'bin', name);
  throw new Error(`${name} not found under ${root}: install the PostgreSQL server package`);
}

/** Runs a PostgreSQL binary as the `postgres` user when we are root (the server refuses root). */
function asPostgres(file: string, args: string[]) {
  const root = process.getuid?.() === 0;
  return run(root ? 'runuser' : file, root ? ['-u', 'postgres', '--', file, ...args] : args, { timeout: 60_000 });
}

describe('upstream authentication against a cluster that demands passwords', () => {
  let dir: string;
  let port: number;
  const data = () => join(dir, 'data');
  const cert = createSelfSignedCertificate('custody test upstream', ['127.0.0.1', 'localhost']);

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'custody-upstream-'));
    if (process.getuid?.() === 0) {
      const { stdout } = await run('id', ['-u', 'postgres']);
      const { stdout: gid } = await run('id', ['-g', 'postgres']);
      chownSync(dir, Number(stdout.trim()), Number(gid.trim()));
    }
    chmodSync(dir, 0o700);
    port = await freePort();
    await asPostgres(pgBin('initdb'), ['-D', data(), '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync']);
    writeFileSync(join(data(), 'server.crt'), cert.certPem);
    writeFileSync(join(data(), 'server.key'), cert.keyPem, { mode: 0o600 });
    if (process.getuid?.() === 0) {
      const uid = Number((await run('id', ['-u', 'postgres'])).stdout.trim());
      const gid = Number((await run('id', ['-g', 'postgres'])).stdout.trim());
      chownSync(join(data(), 'server.crt'), uid, gid);
      chownSync(join(data(), 'server.key'), uid, gid);
    }
    writeFileSync(
      join(data(), 'pg_hba.conf'),
      [
        'local all all trust',
        'host all custody_md5 127.0.0.1/32 md5',
        'host all custody_clear 127.0.0.1/32 password',
        'hostssl all custody_tls 127.0.0.1/32 scram-sha-256',
        'hostnossl all custody_tls 127.0.0.1/32 reject',
        'host all all 127.0.0.1/32 scram-sha-256',
        '',
      ].join('\n'),
    );
    await asPostgres(pgBin('pg_ctl'), [
      '-D', data(), '-w', '-l', join(dir, 'server.log'), '-o',
      `-p ${port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=${dir} -c ssl=on -c fsync=off`,
      'start',
    ]);
    const sql = [
      "CREATE ROLE custody_scram LOGIN PASSWORD 'scram-secret-1'",
      "SET password_encryption = 'md5'; CREATE ROLE custody_md5 LOGIN PASSWORD 'md5-secret-2'",
      "CREATE ROLE custody_clear LOGIN PASSWORD 'clear-secret-3'",
      "CREATE ROLE custody_tls LOGIN PASSWORD 'tls-secret-4'",
    ];
    for (const s of sql) await asPostgres(pgBin('psql'), ['-h', dir, '-p', String(port), '-U', 'postgres', '-d', 'postgres', '-X', '-qc', s]);
  });

  after(async () => {
    if (dir && existsSync(data())) await asPostgres(pgBin('pg_ctl'), ['-D', data(), '-m', 'immediate', 'stop']).catch(() => {});
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  async function through(user: string, secret: string, tls: { mode: 'disable' | 'prefer' | 'require' | 'verify-full'; ca?: string } = { mode: 'prefer' }) {
    const h = await startHarness({
      upstream: `postgres://${user}@127.0.0.1:${port}/postgres`,
      connection: { secret: { value: secret }, tls },
    });
    try {
      const c = new pg.Client({ host: h.host, port: h.port, user: 'someone', password: h.key, database: 'anything' });
      await c.connect();
      const r = await c.query('select current_user as u, ssl from pg_stat_ssl where pid = pg_backend_pid()');
      await c.end();
      const start = eventsOf(h.store, 'session.start')[0]!.payload as { upstream: { auth: string; tls: boolean } };
      return { user: r.rows[0].u as string, ssl: r.rows[0].ssl as boolean, auth: start.upstream.auth, tls: start.upstream.tls };
    } finally {
      await h.close();
    }
  }

  it('logs in with SCRAM-SHA-256', async () => {
    assert.deepEqual(await through('custody_scram', 'scram-secret-1', { mode: 'disable' }), { user: 'custody_scram', ssl: false, auth: 'scram-sha-256', tls: false });
  });

  it('logs in with MD5', async () => {
    assert.deepEqual(await through('custody_md5', 'md5-secret-2', { mode: 'disable' }), { user: 'custody_md5', ssl: false, auth: 'md5', tls: false });
  });

  it('logs in with a cleartext password (over TLS when the server offers it)', async () => {
    assert.deepEqual(await through('custody_clear', 'clear-secret-3'), { user: 'custody_clear', ssl: true, auth: 'cleartext', tls: true });
  });

  it('uses TLS upstream when required, and verifies the server with verify-full', async () => {
    assert.deepEqual(await through('custody_tls', 'tls-secret-4', { mode: 'require' }), { user: 'custody_tls', ssl: true, auth: 'scram-sha-256', tls: true });
    const ca = join(dir, 'ca.crt');
    writeFileSync(ca, cert.certPem);
    assert.equal((await through('custody_tls', 'tls-secret-4', { mode: 'verify-full', ca })).tls, true);
  });

  it('relays the upstream refusal of a wrong stored password without revealing the credential', async () => {
    const h = await startHarness({ upstream: `postgres://custody_scram@127.0.0.1:${port}/postgres`, connection: { secret: { value: 'wrong-secret-xyz' }, tls: { mode: 'disable' } } });
    try {
      const c = new pg.Client({ host: h.host, port: h.port, user: 'someone', password: h.key, database: 'postgres' });
      await assert.rejects(c.connect(), (e: pg.DatabaseError) => e.code === '28P01' && /upstream warehouse: password authentication failed for user "custody_scram"/.test(e.message) && !e.message.includes('wrong-secret'));
    } finally {
      await h.close();
    }
  });

  it('refuses when TLS is required but the upstream rule rejects plain connections', async () => {
    const h = await startHarness({ upstream: `postgres://custody_tls@127.0.0.1:${port}/postgres`, connection: { secret: { value: 'tls-secret-4' }, tls: { mode: 'disable' } } });
    try {
      const c = new pg.Client({ host: h.host, port: h.port, user: 'someone', password: h.key, database: 'postgres' });
      await assert.rejects(c.connect(), /upstream warehouse: pg_hba\.conf rejects connection/);
    } finally {
      await h.close();
    }
  });
});
