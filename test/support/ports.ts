/**
 * Loopback ports for tests of upstreams that are down: `freePort` (nothing listens there, so a
 * connection is refused; or a port to start a server on), and `startStalledListener`, a port that
 * never completes a connection: a listening socket that never accepts,
 * its one-place accept queue filled, so the kernel drops further SYNs and a client's connect hangs
 * (what a firewalled or overloaded upstream looks like). Node accepts every connection it is
 * offered, so the listening socket is held by a small Python process; `available` is false when
 * there is no python3.
 */
import { spawn, spawnSync } from 'node:child_process';
import { connect, createServer, type Socket } from 'node:net';
import { createInterface } from 'node:readline';

/** A port on 127.0.0.1 that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

export const stalledListenerAvailable = spawnSync('python3', ['-c', 'pass']).status === 0;

const SCRIPT = [
  'import socket, sys',
  's = socket.socket()',
  "s.bind(('127.0.0.1', 0))",
  's.listen(0)',
  'print(s.getsockname()[1], flush=True)',
  'sys.stdin.read()',
].join('\n');

export async function startStalledListener(): Promise<{ port: number; close(): Promise<void> }> {
  const proc = spawn('python3', ['-c', SCRIPT], { stdio: ['pipe', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    createInterface({ input: proc.stdout! }).once('line', (line) => resolve(Number(line)));
    proc.once('exit', (code) => reject(new Error(`the stalled listener exited with ${code}`)));
  });
  // Fill the accept queue: this connection completes (the kernel queues it), later ones hang.
  const fillers: Socket[] = [];
  for (let i = 0; i < 2; i++) {
    const s = connect(port, '127.0.0.1');
    s.on('error', () => {});
    fillers.push(s);
  }
  await new Promise((r) => setTimeout(r, 100));
  return {
    port,
    close: async () => {
      for (const s of fillers) s.destroy();
      proc.stdin!.end();
      if (proc.exitCode === null) await new Promise((r) => proc.once('exit', r));
    },
  };
}
