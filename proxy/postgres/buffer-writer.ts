/**
 * Builds one protocol message: `Byte1 type, Int32 length, body`, or an untyped startup-phase packet
 * when the type is omitted (https://www.postgresql.org/docs/current/protocol-message-types.html).
 */
export class MessageWriter {
  private buf: Buffer;
  private pos: number;
  private readonly headerLen: number;

  /** `code` undefined: an untyped startup packet (`Int32 length, …`). */
  constructor(
    private readonly code?: number,
    sizeHint = 64,
  ) {
    this.headerLen = code === undefined ? 4 : 5;
    this.buf = Buffer.allocUnsafe(this.headerLen + sizeHint);
    this.pos = this.headerLen;
  }

  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  byte(v: number): this {
    this.ensure(1);
    this.buf[this.pos++] = v;
    return this;
  }

  int16(v: number): this {
    this.ensure(2);
    this.buf.writeInt16BE(v, this.pos);
    this.pos += 2;
    return this;
  }

  int32(v: number): this {
    this.ensure(4);
    this.buf.writeInt32BE(v, this.pos);
    this.pos += 4;
    return this;
  }

  cstring(s: string): this {
    const n = Buffer.byteLength(s);
    this.ensure(n + 1);
    this.buf.write(s, this.pos, 'utf8');
    this.pos += n;
    this.buf[this.pos++] = 0;
    return this;
  }

  bytes(b: Uint8Array): this {
    this.ensure(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
    return this;
  }

  finish(): Buffer {
    if (this.code === undefined) this.buf.writeInt32BE(this.pos, 0);
    else {
      this.buf[0] = this.code;
      this.buf.writeInt32BE(this.pos - 1, 1);
    }
    return this.buf.subarray(0, this.pos);
  }
}
