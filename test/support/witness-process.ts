/**
 * `custody witness serve` as a child process on a loopback port, for the tests of witnessed
 * checkpoints and witnessed archives. Every process started here is killed when the test file ends.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after } from 'node:test';

export interface RunningWitness {
  url: string;
  port: number;
  key: string;
  stateFile: string;
  stderr: () => string;
  stop(): Promise<void>;
}

const running = new Set<ChildProcess>();
after(() => {
  for (const p of running) p.kill('SIGKILL');
});

/** Spawns `custody witness serve` and waits for its "listening" and "witness key" lines. */
export async function startWitness(dir: string, name: string, logKeys: string[], port = 0): Promise<RunningWitness> {
  const keyFile = join(dir, `${name}.key`);
  const proc = spawn(process.execPath, ['bin/custody.mjs', 'witness', 'serve', '--key', keyFile, '--listen', `127.0.0.1:${port}`, '--name', `witness.test/${name}`, ...logKeys.flatMap((k) => ['--log-key', k])], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(proc);
  let err = '';
  proc.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  const lines: string[] = [];
  await new Promise<void>((resolve, reject) => {
    const rl = createInterface({ input: proc.stdout! });
    rl.on('line', (l) => {
      lines.push(l);
      if (l.startsWith('witness key: ')) resolve();
    });
    proc.once('exit', (code) => reject(new Error(`witness exited with ${code}: ${err}`)));
  });
  const url = /listening on (http:\/\/\S+)/.exec(lines.join('\n'))![1]!;
  return {
    url,
    port: Number(new URL(url).port),
    key: lines.find((l) => l.startsWith('witness key: '))!.slice('witness key: '.length),
    stateFile: `${keyFile}.state.json`,
    stderr: () => err,
    stop: async () => {
      if (proc.exitCode === null) {
        const exited = new Promise((r) => proc.once('exit', r));
        proc.kill('SIGTERM');
        await exited;
      }
      running.delete(proc);
    },
  };
}

