/**
 * The `sftp` subsystem, relayed packet by packet (SFTP version 3, draft-ietf-secsh-filexfer-02,
 * with OpenSSH's extensions: PROTOCOL in openssh-portable). The client's requests are read before
 * they are forwarded: every request that writes — OPEN for writing, WRITE's handle, REMOVE, MKDIR,
 * RMDIR, RENAME, SYMLINK, SETSTAT, FSETSTAT, and the extensions `posix-rename`, `hardlink`,
 * `lsetstat` and `copy-data` — is decided on its absolute path(s) (both ends of a rename or link),
 * and refused with SSH_FX_PERMISSION_DENIED when the policy says no. Unknown extensions are refused
 * (SSH_FX_OP_UNSUPPORTED). The server's replies pass through unchanged; the relay reads them to
 * learn handles and to hash what is read.
 *
 * Recorded (`ssh.sftp`): each file opened, when closed, with its path, mode, size and the SHA-256
 * of the bytes written or read (in the order they passed), and each remove, rename, link, mkdir,
 * rmdir and attribute change with the server's status. Content is kept only up to
 * `recordFileBytes`, masked.
 */
import { createHash, type Hash } from 'node:crypto';
import { posix } from 'node:path';
import type { MaskSpan } from '../../shared/events';
import type { Logger } from '../log';

const enum T {
  Init = 1,
  Version = 2,
  Open = 3,
  Close = 4,
  Read = 5,
  Write = 6,
  Lstat = 7,
  Fstat = 8,
  Setstat = 9,
  Fsetstat = 10,
  Opendir = 11,
  Readdir = 12,
  Remove = 13,
  Mkdir = 14,
  Rmdir = 15,
  Realpath = 16,
  Stat = 17,
  Rename = 18,
  Readlink = 19,
  Symlink = 20,
  Status = 101,
  Handle = 102,
  Data = 103,
  Name = 104,
  Attrs = 105,
  Extended = 200,
  ExtendedReply = 201,
}

const FX_PERMISSION_DENIED = 3;
const FX_OP_UNSUPPORTED = 8;
const FXF_WRITE = 0x02;
const FXF_APPEND = 0x04;
const FXF_CREAT = 0x08;
const FXF_TRUNC = 0x10;
/** Largest packet the relay accepts (OpenSSH's sftp-server allows 256 KiB). */
const MAX_PACKET = 256 * 1024 + 1024;

/**
 * Requests held in the relay (waiting for a decision or for the upstream's window) before the
 * client's channel is paused, by count and by bytes; it resumes below the lower pair. SSH's own
 * windows then hold the client back. A byte bound keeps bulk writes from piling up: scp keeps 64
 * writes of 255 KiB in flight, and 16 MiB of buffers lingering in the gateway outlive the young
 * generation and set off a full garbage collection every few MiB copied (about 20 per 200 MiB).
 */
const PAUSE_REQUESTS = 256;
const RESUME_REQUESTS = 64;
const PAUSE_BYTES = 1024 * 1024;
const RESUME_BYTES = 512 * 1024;

/** Extensions that only read or ask for information: forwarded as they are. */
const READ_EXTENSIONS = new Set(['statvfs@openssh.com', 'fstatvfs@openssh.com', 'fsync@openssh.com', 'limits@openssh.com', 'expand-path@openssh.com', 'home-directory', 'users-groups-by-id@openssh.com']);

/** `p` as an absolute, normalised path: relative paths are relative to `home` (the login directory). */
export function resolveRemotePath(home: string, p: string): string {
  const abs = p.startsWith('/') ? p : `${home.replace(/\/+$/, '')}/${p}`;
  const n = posix.normalize(abs);
  return n.length > 1 ? n.replace(/\/+$/, '') : n;
}

/**
 * Reads SFTP packets out of a byte stream split anywhere. A packet that arrives in pieces (a 255 KiB
 * WRITE comes as eight 32 KiB channel packets) is joined once, when its last piece is in, not each
 * time a piece arrives.
 */
export class SftpPacketReader {
  /** Pieces of the packet being gathered. */
  private pieces: Buffer[] = [];
  private held = 0;
  /** Length of that packet with its length field, once its first 4 bytes are in (else 0). */
  private need = 0;

  /** Returns the complete packets in `chunk` and what came before, each with its 4-byte length; throws on an oversize packet. */
  push(chunk: Buffer): Buffer[] {
    let buf = chunk;
    if (this.held) {
      this.pieces.push(chunk);
      this.held += chunk.length;
      if (!this.need && this.held >= 4) {
        const head = Buffer.concat(this.pieces, this.held);
        this.pieces = [head];
        this.need = 4 + packetLength(head, 0);
      }
      if (!this.need || this.held < this.need) return [];
      buf = Buffer.concat(this.pieces, this.held);
      this.pieces = [];
      this.held = 0;
    }
    const out: Buffer[] = [];
    let off = 0;
    while (buf.length - off >= 4) {
      const len = packetLength(buf, off);
      if (buf.length - off - 4 < len) break;
      out.push(buf.subarray(off, off + 4 + len));
      off += 4 + len;
    }
    this.need = 0;
    if (off < buf.length) {
      const rest = buf.subarray(off);
      this.pieces = [rest];
      this.held = rest.length;
      if (rest.length >= 4) this.need = 4 + packetLength(rest, 0);
    }
    return out;
  }
}

function packetLength(b: Buffer, off: number): number {
  const len = b.readUInt32BE(off);
  if (len < 1 || len > MAX_PACKET) throw new Error(`an SFTP packet of ${len} bytes is out of bounds`);
  return len;
}

/** Field reader over one packet body. */
class Fields {
  private off: number;
  constructor(
    private readonly b: Buffer,
    start: number,
  ) {
    this.off = start;
  }
  u32(): number {
    if (this.off + 4 > this.b.length) throw new Error('a truncated SFTP packet');
    const v = this.b.readUInt32BE(this.off);
    this.off += 4;
    return v;
  }
  u64(): number {
    const hi = this.u32();
    const lo = this.u32();
    return hi * 2 ** 32 + lo;
  }
  bytes(): Buffer {
    const n = this.u32();
    if (this.off + n > this.b.length) throw new Error('a truncated SFTP packet');
    const v = this.b.subarray(this.off, this.off + n);
    this.off += n;
    return v;
  }
  str(): string {
    return this.bytes().toString('utf8');
  }
}

function statusPacket(id: number, code: number, message: string): Buffer {
  const msg = Buffer.from(message, 'utf8');
  const body = Buffer.alloc(1 + 4 + 4 + 4 + msg.length + 4);
  let o = body.writeUInt8(T.Status, 0);
  o = body.writeUInt32BE(id, o);
  o = body.writeUInt32BE(code, o);
  o = body.writeUInt32BE(msg.length, o);
  o += msg.copy(body, o);
  body.writeUInt32BE(0, o);
  const len = Buffer.alloc(4);
  len.writeUInt32BE(body.length);
  return Buffer.concat([len, body]);
}

interface OpenFile {
  path: string;
  mode: 'read' | 'write';
  flags: number;
  bytes: number;
  hash: Hash;
  next: number;
  ordered: boolean;
  content: Buffer[];
  kept: number;
  openedAt: number;
}

interface Pending {
  op: string;
  paths: string[];
  /** OPEN: the file's handle is learned from the reply. */
  open?: { path: string; mode: 'read' | 'write'; flags: number };
  /** READ: the handle whose data comes back. */
  read?: { handle: string; offset: number };
  dir?: boolean;
}

export interface SftpRelayOptions {
  client: NodeJS.ReadWriteStream;
  upstream: NodeJS.ReadWriteStream;
  recordFileBytes: number;
  /** The login directory, for relative paths. */
  home: () => Promise<string>;
  /** Decides one writing operation; resolves to a refusal message, or null to go ahead. */
  decide: (op: string, paths: string[], detail: string) => Promise<string | null>;
  record: (payload: Record<string, unknown>, spans?: MaskSpan[]) => void;
  forLog: (text: string) => { text: string; spans: MaskSpan[] };
  log: Logger;
}

export class SftpRelay {
  readonly startedAt = Date.now();
  operations = 0;
  private readonly fromClient = new SftpPacketReader();
  private readonly fromServer = new SftpPacketReader();
  private readonly handles = new Map<string, OpenFile>();
  private readonly dirs = new Set<string>();
  private readonly pending = new Map<number, Pending>();
  private queue: Promise<void> = Promise.resolve();
  private queued = 0;
  private queuedBytes = 0;
  private paused = false;
  private homeDir?: string;
  private failed = false;
  /** The client's channel is full: replies wait. */
  private clientFull = false;

  constructor(private readonly o: SftpRelayOptions) {}

  start(): void {
    this.o.client.on('data', (chunk: Buffer) => {
      let packets: Buffer[];
      try {
        packets = this.fromClient.push(chunk);
      } catch (err) {
        return this.fail((err as Error).message);
      }
      for (const p of packets) {
        this.queued++;
        this.queuedBytes += p.length;
        this.queue = this.queue.then(() => this.onRequest(p)).catch((err: unknown) => this.fail((err as Error).message)).finally(() => {
          this.queued--;
          this.queuedBytes -= p.length;
          if (this.paused && this.queued < RESUME_REQUESTS && this.queuedBytes < RESUME_BYTES) {
            this.paused = false;
            this.o.client.resume();
          }
        });
      }
      if ((this.queued >= PAUSE_REQUESTS || this.queuedBytes >= PAUSE_BYTES) && !this.paused) {
        this.paused = true;
        this.o.client.pause();
      }
    });
    this.o.client.on('end', () => void this.queue.then(() => this.o.upstream.end()));
    this.o.upstream.on('data', (chunk: Buffer) => {
      if (!this.o.client.write(chunk) && !this.clientFull) {
        this.clientFull = true;
        this.o.upstream.pause();
        this.o.client.once('drain', () => {
          this.clientFull = false;
          this.o.upstream.resume();
        });
      }
      try {
        for (const p of this.fromServer.push(chunk)) this.onReply(p);
      } catch (err) {
        this.fail(`the upstream's SFTP reply cannot be read: ${(err as Error).message}`);
      }
    });
  }

  /** The channel closed: files still open are recorded as they stand. */
  end(): void {
    for (const [handle, f] of this.handles) this.recordFile(handle, f, 'channel closed');
    this.handles.clear();
  }

  private fail(message: string): void {
    if (this.failed) return;
    this.failed = true;
    this.o.log.warn(`sftp relay: ${message}; closing the channel`);
    this.o.record({ op: 'error', message });
    this.o.client.end();
    this.o.upstream.end();
  }

  private async abs(p: string): Promise<string> {
    if (p.startsWith('/')) return resolveRemotePath('/', p);
    this.homeDir ??= await this.o.home();
    return resolveRemotePath(this.homeDir, p);
  }

  /** Forwards one request (with its length, in one write); waits while the upstream's buffer is full. */
  private async forward(packet: Buffer): Promise<void> {
    if (!this.o.upstream.write(packet)) await new Promise((resolve) => this.o.upstream.once('drain', resolve));
  }

  private refuse(id: number, code: number, message: string): void {
    this.o.client.write(statusPacket(id, code, message));
  }

  private async onRequest(p: Buffer): Promise<void> {
    if (this.failed) return;
    const type = p[4]!;
    if (type === T.Init) return this.forward(p);
    const f = new Fields(p, 5);
    const id = f.u32();
    let check: { op: string; paths: string[]; detail: string } | undefined;
    switch (type) {
      case T.Open: {
        const path = await this.abs(f.str());
        const flags = f.u32();
        const write = (flags & (FXF_WRITE | FXF_APPEND | FXF_CREAT | FXF_TRUNC)) !== 0;
        this.pending.set(id, { op: 'open', paths: [path], open: { path, mode: write ? 'write' : 'read', flags } });
        if (write) check = { op: 'write', paths: [path], detail: `write ${path}` };
        break;
      }
      case T.Write: {
        const handle = f.bytes().toString('latin1');
        const offset = f.u64();
        const data = f.bytes();
        const file = this.handles.get(handle);
        if (file) this.wrote(file, offset, data);
        break;
      }
      case T.Read: {
        const handle = f.bytes().toString('latin1');
        const offset = f.u64();
        this.pending.set(id, { op: 'read', paths: [], read: { handle, offset } });
        break;
      }
      case T.Close: {
        const handle = f.bytes().toString('latin1');
        const file = this.handles.get(handle);
        if (file) {
          this.handles.delete(handle);
          this.recordFile(handle, file, null);
        }
        this.dirs.delete(handle);
        break;
      }
      case T.Remove:
      case T.Rmdir:
      case T.Mkdir:
      case T.Setstat: {
        const path = await this.abs(f.str());
        const op = type === T.Remove ? 'remove' : type === T.Rmdir ? 'rmdir' : type === T.Mkdir ? 'mkdir' : 'setstat';
        check = { op, paths: [path], detail: `${op} ${path}` };
        break;
      }
      case T.Fsetstat: {
        const file = this.handles.get(f.bytes().toString('latin1'));
        check = { op: 'setstat', paths: file ? [file.path] : [], detail: `setstat ${file?.path ?? '(an open handle)'}` };
        break;
      }
      case T.Rename:
      case T.Symlink: {
        const a = await this.abs(f.str());
        const b = await this.abs(f.str());
        const op = type === T.Rename ? 'rename' : 'symlink';
        check = { op, paths: [a, b], detail: `${op} ${a} ${b}` };
        break;
      }
      case T.Extended: {
        const name = f.str();
        if (name === 'posix-rename@openssh.com' || name === 'hardlink@openssh.com') {
          const a = await this.abs(f.str());
          const b = await this.abs(f.str());
          const op = name.startsWith('posix') ? 'rename' : 'link';
          check = { op, paths: [a, b], detail: `${op} ${a} ${b}` };
        } else if (name === 'lsetstat@openssh.com') {
          const path = await this.abs(f.str());
          check = { op: 'setstat', paths: [path], detail: `setstat ${path}` };
        } else if (name === 'copy-data') {
          const from = this.handles.get(f.bytes().toString('latin1'));
          f.u64();
          f.u64();
          const to = this.handles.get(f.bytes().toString('latin1'));
          const paths = [from?.path, to?.path].filter((x): x is string => !!x);
          check = { op: 'copy', paths, detail: `copy ${from?.path ?? '?'} ${to?.path ?? '?'}` };
        } else if (!READ_EXTENSIONS.has(name)) {
          this.o.record({ op: 'extension', name: name.slice(0, 128), refused: 'not supported through the gateway' });
          return this.refuse(id, FX_OP_UNSUPPORTED, `custody: the SFTP extension ${name.slice(0, 64)} is not supported through the gateway`);
        }
        break;
      }
      case T.Opendir:
        this.pending.set(id, { op: 'opendir', paths: [], dir: true });
        break;
      default:
        break;
    }
    if (check) {
      this.operations++;
      if (!check.paths.length) {
        this.o.record({ op: check.op, refused: 'the handle is not one the gateway saw opened' });
        return this.refuse(id, FX_PERMISSION_DENIED, 'custody: the gateway does not know this handle');
      }
      const refusal = await this.o.decide(check.op, check.paths, check.detail);
      if (refusal) {
        this.pending.delete(id);
        this.o.record({ op: check.op, paths: check.paths, refused: refusal });
        return this.refuse(id, FX_PERMISSION_DENIED, `custody: ${refusal}`);
      }
      if (check.op !== 'write') this.pending.set(id, { op: check.op, paths: check.paths });
    }
    // Awaited: while the upstream's window is full the queue waits, and past PAUSE_REQUESTS or
    // PAUSE_BYTES queued the client is paused (one 'drain' listener at a time, not one per request).
    return this.forward(p);
  }

  private onReply(p: Buffer): void {
    const type = p[4]!;
    if (type === T.Version) return;
    const f = new Fields(p, 5);
    const id = f.u32();
    const pending = this.pending.get(id);
    if (!pending) return;
    this.pending.delete(id);
    if (type === T.Handle) {
      const handle = f.bytes().toString('latin1');
      if (pending.dir) this.dirs.add(handle);
      else if (pending.open) this.handles.set(handle, { ...pending.open, bytes: 0, hash: createHash('sha256'), next: 0, ordered: true, content: [], kept: 0, openedAt: Date.now() });
      return;
    }
    if (type === T.Data && pending.read) {
      const file = this.handles.get(pending.read.handle);
      if (file) this.wrote(file, pending.read.offset, f.bytes());
      return;
    }
    if (type === T.Status) {
      const code = f.u32();
      if (pending.op === 'open' || pending.op === 'read' || pending.op === 'opendir') {
        if (pending.op === 'open') this.o.record({ op: 'open', path: pending.open!.path, mode: pending.open!.mode, status: code });
        return;
      }
      this.o.record({ op: pending.op, paths: pending.paths, status: code });
    }
  }

  private wrote(file: OpenFile, offset: number, data: Buffer): void {
    if (offset !== file.next) file.ordered = false;
    file.next = offset + data.length;
    file.bytes += data.length;
    file.hash.update(data);
    const room = this.o.recordFileBytes - file.kept;
    if (room > 0) {
      const piece = data.subarray(0, room);
      file.content.push(piece);
      file.kept += piece.length;
    }
  }

  private recordFile(_handle: string, f: OpenFile, note: string | null): void {
    let content: { text: string; spans: MaskSpan[] } | undefined;
    if (f.kept) content = this.o.forLog(Buffer.concat(f.content).toString('utf8'));
    this.o.record(
      {
        op: f.mode,
        path: f.path,
        bytes: f.bytes,
        sha256: f.hash.digest('hex'),
        ...(f.ordered ? {} : { ordered: false }),
        durationMs: Date.now() - f.openedAt,
        ...(content ? { content: content.text, contentTruncated: f.kept < f.bytes } : {}),
        ...(note ? { note } : {}),
      },
      content?.spans.map((s) => ({ ...s, path: '/content' })),
    );
  }
}
