// Dashboard chart geometry (renderer/lib/charts.ts) and the formatting used across the console.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { areaPath, countAxis, linePath, niceMax, stackedBars, ticks } from '../../renderer/lib/charts';
import { formatBytes, formatClock, formatCount, formatCountdown } from '../../renderer/lib/format';
import { snippetsFor } from '../../renderer/lib/snippets';

describe('charts', () => {
  it('rounds the axis up to a nice number', () => {
    assert.deepEqual([0, 0.3, 1, 7, 12, 230, 999].map(niceMax), [1, 0.5, 1, 10, 20, 250, 1000]);
    assert.deepEqual(ticks(100, 4), [0, 25, 50, 75, 100]);
  });

  it('puts count axes on whole numbers', () => {
    assert.deepEqual(countAxis(0), { max: 1, ticks: [0, 1] });
    assert.deepEqual(countAxis(3), { max: 3, ticks: [0, 1, 2, 3] });
    assert.deepEqual(countAxis(7), { max: 8, ticks: [0, 2, 4, 6, 8] });
    assert.deepEqual(countAxis(230), { max: 300, ticks: [0, 100, 200, 300] });
    assert.ok(countAxis(12_345).ticks.every(Number.isInteger));
  });

  it('draws lines and areas inside the box', () => {
    assert.equal(linePath([0, 5, 10], { width: 100, height: 50 }, 10), 'M0,50L50,25L100,0');
    assert.equal(areaPath([10], { width: 100, height: 50 }, 10), 'M0,0L0,50L0,50Z');
    assert.equal(linePath([], { width: 1, height: 1 }, 1), '');
  });

  it('stacks bars per bucket and skips zero segments', () => {
    const bars = stackedBars([[1, 1], [0, 2]], { width: 100, height: 40 }, 4, 0);
    assert.deepEqual(bars.map((b) => [b.x, b.y, b.width, b.height, b.series]), [
      [0, 30, 50, 10, 0],
      [0, 20, 50, 10, 1],
      [50, 20, 50, 20, 1],
    ]);
  });
});

describe('formatting and snippets', () => {
  it('formats countdowns, clocks, counts and sizes', () => {
    assert.equal(formatCountdown(245_000), '4:05');
    assert.equal(formatCountdown(3_723_000), '1:02:03');
    assert.equal(formatCountdown(-5), '0:00');
    assert.equal(formatClock(62_340), '01:02.3');
    assert.equal(formatCount(1_234_567), '1,234,567');
    assert.equal(formatBytes(2048), '2.0 KiB');
  });

  it('points each client at the gateway with only an address and a key', () => {
    const openai = snippetsFor({ name: 'openai', kind: 'openai' }, { httpListen: '127.0.0.1:7421', key: 'cst_k' });
    assert.deepEqual(openai.map((s) => s.id), ['openai', 'langchain', 'curl']);
    assert.match(openai[0]!.code, /baseURL: 'http:\/\/127\.0\.0\.1:7421\/openai', apiKey: 'cst_k'/);
    const anthropic = snippetsFor({ name: 'claude', kind: 'anthropic' }, { httpListen: 'gw:7421' });
    assert.match(anthropic[0]!.code, /new Anthropic\(\{ baseURL: 'http:\/\/gw:7421\/claude'/);
    const psql = snippetsFor({ name: 'wh', kind: 'postgres', listen: '127.0.0.1:6432' }, { httpListen: 'x' });
    const ssh = snippetsFor({ name: 'box', kind: 'ssh', listen: '[::1]:2222' }, { httpListen: 'x' });
    assert.deepEqual(ssh.map((x) => x.id), ['ssh']);
    assert.match(ssh[0]!.code, /ssh -p 2222 \$USER@::1/);
    assert.match(psql[0]!.code, /psql "host=127\.0\.0\.1 port=6432/);
  });
});
