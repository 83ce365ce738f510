/**
 * The bare SSH pass-through for bench/ssh.ts: the runtime's own limit for what Custody does, with
 * none of its work. An ssh2 server that lets anyone in (any password), opens one ssh2 client
 * connection to the upstream with its key, and pipes the SFTP subsystem and pty shells through as
 * raw channel streams: no identity, no policy, no SFTP parsing, no masking, no recording.
 */
import type { AddressInfo } from 'node:net';
import ssh2 from 'ssh2';
import { generateEd25519 } from '../proxy/ssh/keygen';

export interface BarePassThrough {
  port: number;
  close(): Promise<void>;
}

export async function startBarePassThrough(upstream: { port: number; username: string; privateKey: string }): Promise<BarePassThrough> {
  const hostKey = generateEd25519().private;
  const server = new ssh2.Server({ hostKeys: [hostKey] }, (client) => {
    const up = new ssh2.Client();
    const ready = new Promise<ssh2.Client>((resolve, reject) => {
      up.once('ready', () => resolve(up)).once('error', reject);
    });
    ready.catch(() => client.end());
    client.on('authentication', (ctx) => (ctx.method === 'password' || ctx.method === 'keyboard-interactive' || ctx.method === 'none' ? ctx.accept() : ctx.reject(['password'])));
    client.on('ready', () => {
      up.connect({ host: '127.0.0.1', ...upstream });
      // Echo and keystrokes are tiny packets, as the gateway sets it.
      ready.then((c) => c.setNoDelay(true)).catch(() => {});
    });
    client.on('session', (accept) => {
      const session = accept();
      let pty: ssh2.PseudoTtyOptions | undefined;
      session.on('pty', (ok, _no, info) => {
        pty = { term: info.term, cols: info.cols, rows: info.rows, width: info.width, height: info.height };
        ok?.();
      });
      session.on('env', (_ok, no) => no?.());
      session.on('window-change', (ok) => ok?.());
      const bridge = (down: ssh2.ServerChannel, open: (c: ssh2.Client) => Promise<ssh2.ClientChannel>) => {
        ready
          .then(open)
          .then((ch) => {
            down.pipe(ch).pipe(down);
            ch.stderr.pipe(down.stderr);
            ch.on('exit', (code: number | null) => down.exit(code ?? 0));
            ch.on('close', () => down.end());
          })
          .catch(() => down.close());
      };
      session.on('subsystem', (acc, _rej, info) => {
        const down = acc();
        bridge(down, (c) => new Promise((resolve, reject) => c.subsys(info.name, (e, ch) => (e ? reject(e) : resolve(ch)))));
      });
      session.on('shell', (acc) => {
        const down = acc();
        bridge(down, (c) => new Promise((resolve, reject) => (pty ? c.shell(pty, (e, ch) => (e ? reject(e) : resolve(ch))) : c.shell((e, ch) => (e ? reject(e) : resolve(ch))))));
      });
      session.on('exec', (acc, _rej, info) => {
        const down = acc();
        bridge(down, (c) => new Promise((resolve, reject) => c.exec(info.command, pty ? { pty } : {}, (e, ch) => (e ? reject(e) : resolve(ch)))));
      });
    });
    client.on('close', () => up.end());
    client.on('error', () => up.end());
  });
  // Same as the gateway's listener: no Nagle delay on the client side either.
  (server as unknown as { _srv: import('node:net').Server })._srv.prependListener('connection', (s: import('node:net').Socket) => s.setNoDelay(true));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
