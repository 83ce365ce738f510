/**
 * A PostgreSQL client at the message level, for tests that must send what no driver sends: a
 * whole pipeline in one write (Parse into a used name, Bind of a statement another message
 * replaced, FunctionCall), to the gateway or straight to the server, and read every reply.
 */
import { connect, type Socket } from 'node:net';
import { parseErrorFields } from '../../proxy/postgres/backend-messages';
import {
  buildBind,
  buildClose,
  buildDescribe,
  buildExecute,
  buildFlush,
  buildParse,
  buildPasswordMessage,
  buildQuery,
  buildStartupMessage,
  buildSync,
  buildTerminate,
} from '../../proxy/postgres/frontend-messages';
import { MessageBuffer, type RawMessage } from '../../proxy/postgres/message-buffer';
import { AuthCode, BackendCode } from '../../proxy/postgres/message-codes';

/**
 * One message of a pipeline, as a corpus line writes it:
 * `["P", name, sql]`, `["B", portal, statement, ...textParams]`, `["D", "S"|"P", name]`, `["E", portal, maxRows?]`,
 * `["C", "S"|"P", name]`, `["S"]`, `["H"]`, `["Q", sql]`, `["F", oid, ...textArgs]`.
 */
export type WireStep = [string, ...(string | number)[]];

export function buildFunctionCall(oid: number, args: string[]): Buffer {
  const parts: Buffer[] = [];
  const head = Buffer.alloc(4 + 2 + 2 + 2);
  head.writeInt32BE(oid, 0);
  head.writeInt16BE(1, 4); // one format code for every argument: text
  head.writeInt16BE(0, 6);
  head.writeInt16BE(args.length, 8);
  parts.push(head);
  for (const a of args) {
    const v = Buffer.from(a);
    const len = Buffer.alloc(4);
    len.writeInt32BE(v.length);
    parts.push(len, v);
  }
  const tail = Buffer.alloc(2);
  tail.writeInt16BE(0); // result format: text
  parts.push(tail);
  const body = Buffer.concat(parts);
  const msg = Buffer.alloc(5 + body.length);
  msg.write('F', 0, 'latin1');
  msg.writeInt32BE(4 + body.length, 1);
  body.copy(msg, 5);
  return msg;
}

export function encodeStep(step: WireStep): Buffer {
  const [kind, ...a] = step;
  const s = (i: number) => String(a[i] ?? '');
  switch (kind) {
    case 'P':
      return buildParse(s(0), s(1));
    case 'B':
      return buildBind(s(0), s(1), a.slice(2).map(String));
    case 'D':
      return buildDescribe(s(0) as 'S' | 'P', s(1));
    case 'E':
      return buildExecute(s(0), Number(a[1] ?? 0));
    case 'C':
      return buildClose(s(0) as 'S' | 'P', s(1));
    case 'S':
      return buildSync();
    case 'H':
      return buildFlush();
    case 'Q':
      return buildQuery(s(0));
    case 'X':
      return buildTerminate();
    case 'F':
      return buildFunctionCall(Number(a[0]), a.slice(1).map(String));
    default:
      throw new Error(`unknown pipeline step ${JSON.stringify(step)}`);
  }
}

/** How many ReadyForQuery messages a pipeline gets back from a server that answers all of it. */
export function readyCount(steps: WireStep[]): number {
  return steps.filter((s) => s[0] === 'S' || s[0] === 'Q' || s[0] === 'F').length;
}

export interface Reply {
  code: number;
  /** SQLSTATE of an ErrorResponse. */
  sqlstate?: string;
  message?: string;
}

export class WireClient {
  private readonly buf = new MessageBuffer();
  readonly replies: RawMessage[] = [];
  closed = false;
  private waiters: (() => void)[] = [];

  private constructor(readonly socket: Socket) {
    socket.on('data', (d: Buffer) => {
      this.buf.push(d);
      for (let m = this.buf.next(); m; m = this.buf.next()) this.replies.push({ ...m, body: Buffer.from(m.body), raw: Buffer.from(m.raw) });
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => {});
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Connects and logs in (a password when the server asks for one), then waits for ReadyForQuery. */
  static async open(port: number, params: Record<string, string>, password?: string): Promise<WireClient> {
    const socket = connect({ host: '127.0.0.1', port });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const c = new WireClient(socket);
    socket.write(buildStartupMessage(params));
    for (;;) {
      await c.until(() => c.replies.length > 0, 10_000);
      const m = c.replies.shift()!;
      if (m.code === BackendCode.Authentication && m.body.readInt32BE(0) === AuthCode.CleartextPassword) socket.write(buildPasswordMessage(password ?? ''));
      else if (m.code === BackendCode.ErrorResponse) throw new Error(`login failed: ${parseErrorFields(m.body).get('M')}`);
      else if (m.code === BackendCode.BackendKeyData) {
        c.pid = m.body.readInt32BE(0);
        c.secret = Buffer.from(m.body.subarray(4));
      } else if (m.code === BackendCode.ReadyForQuery) return c;
    }
  }

  pid = 0;
  secret = Buffer.alloc(0);

  /** Resolves when `cond` holds, or the connection closes, or `ms` pass (then returns false). */
  until(cond: () => boolean, ms: number): Promise<boolean> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(cond()), ms);
      const check = () => {
        if (cond() || this.closed) {
          clearTimeout(timer);
          resolve(cond());
        } else this.waiters.push(check);
      };
      check();
    });
  }

  send(steps: WireStep[]): void {
    this.socket.write(Buffer.concat(steps.map(encodeStep)));
  }

  /** Sends the pipeline in one write and collects replies until as many ReadyForQuery as it asks for, or the connection closes. */
  async run(steps: WireStep[], ms = 15_000): Promise<Reply[]> {
    const start = this.replies.length;
    const want = readyCount(steps);
    this.send(steps);
    // A Query sent while the server skips to Sync gets no answer at all, so fewer ReadyForQuery may
    // come: a ReadyForQuery followed by silence also ends the wait.
    const end = Date.now() + ms;
    let seen = -1;
    while (Date.now() < end && !this.closed) {
      const done = await this.until(() => this.replies.slice(start).filter((m) => m.code === BackendCode.ReadyForQuery).length >= want, 400);
      if (done) break;
      const last = this.replies.at(-1);
      if (this.replies.length === seen && this.replies.length > start && last?.code === BackendCode.ReadyForQuery) break;
      seen = this.replies.length;
    }
    return this.replies.slice(start).map((m) => {
      if (m.code !== BackendCode.ErrorResponse) return { code: m.code };
      const f = parseErrorFields(m.body);
      return { code: m.code, sqlstate: f.get('C'), message: f.get('M') };
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.socket.end(buildTerminate());
    await this.until(() => this.closed, 2000);
    this.socket.destroy();
  }
}
