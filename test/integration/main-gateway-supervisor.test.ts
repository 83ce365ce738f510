import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { AuditStore } from '../../proxy/audit/store';
import { backoffDelay, forkGatewayProcess, type GatewaySupervisor as Supervisor, GatewaySupervisor, type ReadyReport, type SupervisorState } from '../../main/gateway-supervisor';
import { tempDir } from '../support/tmp';

const ENTRY = 'proxy/entry.ts';
const TSX = ['--import', 'tsx'];

function gatewayConfig(dir: string, extra = ''): string {
  const file = join(dir, 'custody.yaml');
  writeFileSync(file, `listen:\n  control: 127.0.0.1:0\n  http: 127.0.0.1:0\n${extra}`);
  return file;
}

function next<T>(sup: Supervisor, event: 'ready' | 'crash', timeoutMs = 30_000): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} within ${timeoutMs}ms; state ${JSON.stringify(sup.state)}; output:\n${sup.lastLines().join('\n')}`)), timeoutMs);
    const onState = (st: SupervisorState) => {
      if (event === 'ready' && st.state === 'failed') {
        clearTimeout(timer);
        reject(new Error(`the gateway failed instead of becoming ready: ${st.reason}\n${st.lastLines.join('\n')}`));
      }
    };
    sup.on('state', onState);
    sup.once(event, (v: unknown) => {
      clearTimeout(timer);
      sup.off('state', onState);
      resolve(v as T);
    });
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('gateway supervision', () => {
  it('computes exponential backoff with a cap', () => {
    assert.deepEqual([1, 2, 3, 4, 5, 10].map((n) => backoffDelay(n, 500, 5000)), [500, 1000, 2000, 4000, 5000, 5000]);
  });

  it('runs the real gateway, restarts it after a crash, and stops it cleanly', async () => {
    const dir = tempDir();
    const config = gatewayConfig(dir);
    const dataDir = join(dir, 'data');
    let spawned = 0;
    const sup = new GatewaySupervisor({
      spawn: () => {
        spawned++;
        return forkGatewayProcess(ENTRY, ['--config', config, '--data-dir', dataDir], { execArgv: TSX, env: { ...process.env, CUSTODY_LOG: 'info' } });
      },
      initialBackoffMs: 200,
    });
    const firstReady = next<ReadyReport>(sup, 'ready');
    sup.start();
    const first = await firstReady;
    assert.match(first.controlUrl, /^http:\/\/127\.0\.0\.1:\d+$/);
    const health = await fetch(`${first.controlUrl}/api/health`);
    assert.equal(health.status, 200);
    assert.equal(((await health.json()) as { status: string }).status, 'ok');

    const crash = next<{ exitCode: number | null; restartInMs: number | null; lastLines: string[] }>(sup, 'crash');
    const secondReady = next<ReadyReport>(sup, 'ready');
    process.kill(first.pid, 'SIGKILL');
    const c = await crash;
    assert.equal(c.restartInMs, 200, 'first restart waits the initial backoff');
    assert.ok(c.lastLines.some((l) => l.includes('gateway ready')), `the crash report carries the gateway's last log lines: ${c.lastLines.join(' | ')}`);
    assert.equal(sup.state.state, 'restarting');
    const second = await secondReady;
    assert.notEqual(second.pid, first.pid);
    assert.equal(spawned, 2);
    assert.equal((await fetch(`${second.controlUrl}/api/health`)).status, 200);

    // Login links work once: the desktop asks the running gateway for a fresh one each time.
    const links = [second.loginUrl!, await sup.loginLink(), await sup.loginLink()];
    assert.equal(new Set(links).size, 3, 'a new link each time');
    for (const link of links) {
      const signIn = await fetch(link, { redirect: 'manual' });
      assert.equal(signIn.headers.get('location'), '/', 'each link signs in');
      const again = await fetch(link, { redirect: 'manual' });
      assert.equal(again.headers.getSetCookie().length, 0, 'once');
    }

    await sup.stop();
    await assert.rejects(sup.loginLink(), /not running/);
    assert.equal(sup.state.state, 'stopped');
    assert.equal(alive(second.pid), false, 'the gateway process is gone after stop');
    const store = AuditStore.open(dataDir);
    const kinds = store.db.prepare('SELECT kind FROM events ORDER BY seq').all().map((r) => (r as { kind: string }).kind);
    store.close();
    // (With a shared store, CUSTODY_TEST_STORE=postgres, the chain also says the gateway enrolled it.)
    assert.deepEqual(kinds.filter((k) => k === 'gateway.start' || k === 'gateway.stop'), ['gateway.start', 'gateway.start', 'gateway.stop'], 'the killed run left no stop record; the clean stop did');
  });

  it('backs off between crashes, then gives up and reports the last output', async () => {
    const dir = tempDir();
    const script = join(dir, 'crasher.mjs');
    writeFileSync(script, "console.error('listen EADDRINUSE: 127.0.0.1:7420 is already in use'); process.exit(3);\n");
    const spawnTimes: number[] = [];
    const sup = new GatewaySupervisor({
      spawn: () => {
        spawnTimes.push(Date.now());
        return forkGatewayProcess(script, []);
      },
      initialBackoffMs: 150,
      maxFailures: 4,
    });
    const crashes: { exitCode: number | null; restartInMs: number | null; lastLines: string[]; reason: string }[] = [];
    sup.on('crash', (c) => crashes.push(c));
    const failed = new Promise<SupervisorState>((resolve) => sup.on('state', (s) => s.state === 'failed' && resolve(s)));
    sup.start();
    const s = await failed;
    assert.deepEqual(crashes.map((c) => c.restartInMs), [150, 300, 600, null]);
    assert.deepEqual(crashes.map((c) => c.exitCode), [3, 3, 3, 3]);
    const gaps = spawnTimes.slice(1).map((t, i) => t - spawnTimes[i]!);
    assert.equal(gaps.length, 3);
    gaps.forEach((gap, i) => assert.ok(gap >= [150, 300, 600][i]! - 5, `restart ${i + 1} waited ${gap}ms`));
    assert.ok(s.state === 'failed' && /gave up after 4 attempts/.test(s.reason));
    assert.ok(s.state === 'failed' && s.lastLines.some((l) => l.includes('EADDRINUSE')));

    // retry() starts over with a fresh count.
    const again = new Promise<void>((resolve) => sup.once('crash', () => resolve()));
    sup.retry();
    await again;
    assert.equal(crashes.at(-1)!.restartInMs, 150);
    await sup.stop();
    assert.equal(spawnTimes.length, 5);
  });

  it('does not restart a gateway that said why it cannot start', async () => {
    const dir = tempDir();
    const config = gatewayConfig(dir, 'connections:\n  - name: Bad Name\n    kind: openai\n    upstream: https://example.invalid\n');
    let spawned = 0;
    const sup = new GatewaySupervisor({
      spawn: () => {
        spawned++;
        return forkGatewayProcess(ENTRY, ['--config', config, '--data-dir', join(dir, 'data')], { execArgv: TSX });
      },
      initialBackoffMs: 50,
    });
    const crash = next<{ restartInMs: number | null; reason: string }>(sup, 'crash');
    sup.start();
    const c = await crash;
    assert.equal(c.restartInMs, null);
    assert.match(c.reason, /custody\.yaml:5: connections\[0\]\.name/);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(spawned, 1);
    assert.equal(sup.state.state, 'failed');
  });

  it('kills a gateway that does not stop in time', async () => {
    const dir = tempDir();
    const script = join(dir, 'stubborn.mjs');
    writeFileSync(
      script,
      "process.on('message', () => {}); process.on('SIGTERM', () => {}); process.send({ type: 'ready', pid: process.pid, version: '0', controlUrl: 'http://127.0.0.1:1', loginUrl: null, loginToken: null, listeners: [], firstKey: null, secrets: 'plain' }); setInterval(() => {}, 1000);\n",
    );
    const sup = new GatewaySupervisor({ spawn: () => forkGatewayProcess(script, []), stopTimeoutMs: 300 });
    const ready = next<ReadyReport>(sup, 'ready');
    sup.start();
    const r = await ready;
    const t0 = Date.now();
    await sup.stop();
    assert.ok(Date.now() - t0 >= 290);
    assert.equal(alive(r.pid), false);
  });

  it('hands the vault key to the gateway, which seals its key files with it', async () => {
    const dir = tempDir();
    const config = gatewayConfig(dir);
    const dataDir = join(dir, 'data');
    const vaultKey = randomBytes(32).toString('base64');
    const sup = new GatewaySupervisor({
      spawn: () => forkGatewayProcess(ENTRY, ['--config', config, '--data-dir', dataDir, '--sealed-secrets'], { execArgv: TSX }),
      firstCommands: () => [{ type: 'vault-key', key: vaultKey }],
    });
    const ready = next<ReadyReport>(sup, 'ready');
    sup.start();
    const r = await ready;
    assert.equal(r.secrets, 'vault');
    await sup.stop();
    assert.equal(existsSync(join(dataDir, 'masking-hmac.key')), false, 'no plain key file on the desktop');
    assert.equal(readFileSync(join(dataDir, 'masking-hmac.key.sealed')).subarray(0, 5).toString(), 'CSTV1');
  });
});
