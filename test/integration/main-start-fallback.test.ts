/**
 * `npm start` where the Electron runtime cannot be obtained (this machine: no network, no display):
 * one line says so, then `custody serve` runs and serves the console; SIGINT stops it cleanly.
 * Runs scripts/start.mjs directly (`npm start` = build + this), so the test does not rebuild dist/.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { tempDir } from '../support/tmp';

describe('npm start without the Electron runtime', () => {
  it('says why in one line, serves the console, and stops on SIGINT', async () => {
    const dir = tempDir();
    const config = join(dir, 'custody.yaml');
    writeFileSync(config, 'listen:\n  control: 127.0.0.1:0\n  http: 127.0.0.1:0\n');
    const env = { ...process.env, DISPLAY: '', WAYLAND_DISPLAY: '', ELECTRON_OVERRIDE_DIST_PATH: join(dir, 'no-electron-here'), NODE_TEST_CONTEXT: undefined };
    const child = spawn(process.execPath, ['scripts/start.mjs', '--config', config, '--data-dir', join(dir, 'data')], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    let exitCode: number | null | undefined;
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve((exitCode = code))));
    try {
      const t0 = Date.now();
      let control: string | undefined;
      while (!control) {
        if (exitCode !== undefined) throw new Error(`npm start exited (${exitCode}) before serving:\n${stderr}`);
        if (Date.now() - t0 > 30_000) throw new Error(`no console URL within 30s:\n${stderr}`);
        control = /control\s+(http:\/\/127\.0\.0\.1:\d+)\//.exec(stderr)?.[1];
        await new Promise((r) => setTimeout(r, 50));
      }
      const lines = stderr.split('\n');
      assert.match(lines[0]!, /^Custody: running headless because the Electron runtime is not installed .*; open the console URL below in a browser\.$/);
      assert.equal(lines.filter((l) => l.startsWith('Custody: running headless')).length, 1, 'exactly one line explains the fallback');
      const health = await fetch(`${control}/api/health`);
      assert.equal(health.status, 200);
      assert.equal(((await health.json()) as { status: string }).status, 'ok');
      const page = await fetch(`${control}/`);
      assert.ok(page.status === 200 || page.status === 503, `the console is served (or says it is not built): ${page.status}`);
      assert.match(stderr, /Console: http:\/\/127\.0\.0\.1:\d+\/login\?token=/);
      child.kill('SIGINT');
      assert.equal(await exited, 0);
      assert.match(stderr, /stopped/);
    } finally {
      child.kill('SIGKILL');
    }
  });
});
