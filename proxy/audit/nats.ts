/**
 * Just enough of the NATS client protocol (https://docs.nats.io/reference/reference-protocols/nats-protocol)
 * to publish to JetStream with acknowledgements: CONNECT with headers and no-responders, HPUB with
 * a reply inbox, and the PubAck (`{"stream","seq"}` or `{"error"}`) or a `NATS/1.0 503` no-responders
 * status on that inbox. Each message carries `Nats-Msg-Id`, so JetStream drops a re-sent duplicate
 * within its duplicate window. No npm client is needed for this much.
 */
import { randomBytes } from 'node:crypto';
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';

const CRLF = '\r\n';

interface Pending {
  resolve: (v: { data: Buffer; status?: number; description?: string }) => void;
  reject: (err: Error) => void;
}

export class NatsConnection {
  private buf = Buffer.alloc(0);
  private readonly inbox = `_INBOX.${randomBytes(8).toString('hex')}`;
  private next = 0;
  private readonly pending = new Map<string, Pending>();
  private closed?: Error;

  private constructor(private readonly socket: Socket) {
    socket.on('data', (d: Buffer) => this.onData(d));
    const fail = (err: Error) => {
      this.closed ??= err;
      for (const p of this.pending.values()) p.reject(this.closed);
      this.pending.clear();
    };
    socket.on('error', fail);
    socket.on('close', () => fail(new Error('the NATS server closed the connection')));
  }

  /** Connects (`nats://` or `tls://` URL; user:password in the URL if the server wants them) and subscribes to its inbox. */
  static async connect(url: string, timeoutMs: number, ca?: Buffer): Promise<NatsConnection> {
    const u = new URL(url);
    const port = Number(u.port || 4222);
    const host = u.hostname.replace(/^\[|\]$/g, '');
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = u.protocol === 'tls:' ? tlsConnect({ host, port, servername: host, ...(ca ? { ca } : {}) }) : netConnect({ host, port });
      const timer = setTimeout(() => (s.destroy(), reject(new Error(`connecting to ${host}:${port} timed out`))), timeoutMs);
      s.once(u.protocol === 'tls:' ? 'secureConnect' : 'connect', () => (clearTimeout(timer), resolve(s)));
      s.once('error', (e) => (clearTimeout(timer), reject(e)));
    });
    const c = new NatsConnection(socket);
    const opts: Record<string, unknown> = { verbose: false, pedantic: false, headers: true, no_responders: true, lang: 'custody', version: '1', protocol: 1 };
    if (u.username) Object.assign(opts, { user: decodeURIComponent(u.username), pass: decodeURIComponent(u.password) });
    socket.write(`CONNECT ${JSON.stringify(opts)}${CRLF}SUB ${c.inbox}.* 1${CRLF}`);
    // A PING answered by PONG proves CONNECT and SUB were accepted (an -ERR closes the socket first).
    await c.ping(timeoutMs);
    return c;
  }

  private pong?: () => void;

  private ping(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the NATS server did not answer PING')), timeoutMs);
      this.pong = () => (clearTimeout(timer), resolve());
      this.socket.write(`PING${CRLF}`);
    });
  }

  /** Publishes with a reply inbox and resolves with the reply (JetStream's PubAck, or a status). */
  request(subject: string, data: Buffer | string, headers: Record<string, string> = {}, timeoutMs = 15_000): Promise<{ data: Buffer; status?: number; description?: string }> {
    if (this.closed) return Promise.reject(this.closed);
    const reply = `${this.inbox}.${this.next++}`;
    const payload = Buffer.isBuffer(data) ? data : Buffer.from(data, 'utf8');
    const hdr = Buffer.from(`NATS/1.0${CRLF}${Object.entries(headers).map(([k, v]) => `${k}: ${v}${CRLF}`).join('')}${CRLF}`, 'utf8');
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(reply);
        reject(new Error(`no answer from NATS on ${subject} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(reply, { resolve: (v) => (clearTimeout(timer), resolve(v)), reject: (e) => (clearTimeout(timer), reject(e)) });
      this.socket.write(Buffer.concat([Buffer.from(`HPUB ${subject} ${reply} ${hdr.length} ${hdr.length + payload.length}${CRLF}`), hdr, payload, Buffer.from(CRLF)]));
    });
  }

  close(): void {
    this.closed ??= new Error('closed');
    this.socket.destroy();
  }

  private onData(d: Buffer): void {
    this.buf = Buffer.concat([this.buf, d]);
    for (;;) {
      const eol = this.buf.indexOf(CRLF);
      if (eol < 0) return;
      const line = this.buf.subarray(0, eol).toString('utf8');
      const [op, ...args] = line.split(' ');
      if (op === 'MSG' || op === 'HMSG') {
        const total = Number(args[args.length - 1]);
        const hdrLen = op === 'HMSG' ? Number(args[args.length - 2]) : 0;
        if (this.buf.length < eol + 2 + total + 2) return;
        const body = this.buf.subarray(eol + 2, eol + 2 + total);
        this.buf = this.buf.subarray(eol + 2 + total + 2);
        const subject = args[0]!;
        const p = this.pending.get(subject);
        if (!p) continue;
        this.pending.delete(subject);
        const status = hdrLen ? /^NATS\/1\.0 (\d{3}) ?(.*)\r\n/.exec(body.subarray(0, hdrLen).toString('utf8')) : null;
        p.resolve({ data: Buffer.from(body.subarray(hdrLen)), ...(status ? { status: Number(status[1]), description: status[2] } : {}) });
        continue;
      }
      this.buf = this.buf.subarray(eol + 2);
      if (op === 'PING') this.socket.write(`PONG${CRLF}`);
      else if (op === 'PONG') this.pong?.();
      else if (op === '-ERR') {
        this.closed = new Error(`NATS: ${args.join(' ').replace(/^'|'$/g, '')}`);
        this.socket.destroy();
      }
    }
  }
}
