/**
 * Collects outgoing messages for one socket and writes them in as few writes as possible: messages
 * that sit back to back in the same received chunk are merged into one slice (no copy), and the rest
 * go out corked as one writev.
 */
import type { Writable } from 'node:stream';

export class OutputBatch {
  private parts: Buffer[] = [];

  get empty(): boolean {
    return this.parts.length === 0;
  }

  /** Drops what was collected (the socket it was meant for is gone). */
  clear(): void {
    this.parts = [];
  }

  push(buf: Buffer): void {
    const n = this.parts.length;
    if (n > 0) {
      const last = this.parts[n - 1]!;
      if (last.buffer === buf.buffer && last.byteOffset + last.length === buf.byteOffset) {
        this.parts[n - 1] = Buffer.from(last.buffer, last.byteOffset, last.length + buf.length);
        return;
      }
    }
    this.parts.push(buf);
  }

  /** Writes everything collected; returns false when the socket asks the writer to wait for 'drain'. */
  flushTo(socket: Writable): boolean {
    const parts = this.parts;
    if (parts.length === 0) return true;
    this.parts = [];
    if (socket.destroyed || !socket.writable) return true;
    if (parts.length === 1) return socket.write(parts[0]!);
    socket.cork();
    let ok = true;
    for (const p of parts) ok = socket.write(p) && ok;
    socket.uncork();
    return ok;
  }
}
