/**
 * Minimal POSIX ustar (IEEE Std 1003.1-2001, "pax interchange format" header layout without pax
 * records) writer and reader for evidence bundles: regular files with short names only, gzip on
 * top (RFC 1952, node:zlib). Any tar tool opens the result: `tar -xzf bundle.tar.gz`.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import { createGzip, gunzipSync } from 'node:zlib';

const BLOCK = 512;

export interface TarEntry {
  name: string;
  /** Contents in memory, or a file to stream (its size must not change while writing). */
  data?: Buffer;
  file?: string;
  size: number;
  mtime?: number;
}

export class TarFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TarFormatError';
  }
}

function octal(value: number, width: number): string {
  return value.toString(8).padStart(width - 1, '0') + '\0';
}

export function tarHeader(name: string, size: number, mtime: number): Buffer {
  if (!/^[A-Za-z0-9._/-]{1,100}$/.test(name) || name.includes('..')) throw new TarFormatError(`unsupported tar entry name "${name}"`);
  if (!Number.isSafeInteger(size) || size < 0 || size >= 8 ** 11) throw new TarFormatError(`entry ${name} is too large for ustar`);
  const h = Buffer.alloc(BLOCK);
  h.write(name, 0, 100, 'ascii');
  h.write(octal(0o644, 8), 100, 'ascii');
  h.write(octal(0, 8), 108, 'ascii');
  h.write(octal(0, 8), 116, 'ascii');
  h.write(octal(size, 12), 124, 'ascii');
  h.write(octal(Math.floor(mtime / 1000), 12), 136, 'ascii');
  h.write('        ', 148, 'ascii'); // checksum field counts as spaces while summing
  h.write('0', 156, 'ascii');
  h.write('ustar\u000000', 257, 'binary');
  h.write('custody', 265, 'ascii');
  h.write('custody', 297, 'ascii');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'ascii');
  return h;
}

async function* tarStream(entries: TarEntry[]): AsyncGenerator<Buffer> {
  for (const e of entries) {
    yield tarHeader(e.name, e.size, e.mtime ?? Date.now());
    let written = 0;
    if (e.data) {
      yield e.data;
      written = e.data.length;
    } else if (e.file) {
      for await (const chunk of createReadStream(e.file)) {
        written += (chunk as Buffer).length;
        yield chunk as Buffer;
      }
    }
    if (written !== e.size) throw new TarFormatError(`${e.name} changed size while it was archived`);
    const pad = (BLOCK - (e.size % BLOCK)) % BLOCK;
    if (pad) yield Buffer.alloc(pad);
  }
  yield Buffer.alloc(BLOCK * 2);
}

/** Writes a gzip-compressed ustar archive. */
export async function writeTarGz(out: string, entries: TarEntry[]): Promise<void> {
  await pipeline(Readable.from(tarStream(entries)), createGzip({ level: 6 }), createWriteStream(out, { mode: 0o600 }));
}

/** Reads every regular file of a (gzip-compressed or plain) ustar archive into memory. */
export function readTar(archive: Buffer): Map<string, Buffer> {
  const tar = archive[0] === 0x1f && archive[1] === 0x8b ? gunzipSync(archive) : archive;
  const files = new Map<string, Buffer>();
  let off = 0;
  while (off + BLOCK <= tar.length) {
    const h = tar.subarray(off, off + BLOCK);
    if (h.every((b) => b === 0)) break;
    let sum = 0;
    for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : h[i]!;
    const stored = parseInt(h.toString('ascii', 148, 156).replace(/[\0 ]/g, ''), 8);
    if (stored !== sum) throw new TarFormatError(`corrupt tar header at byte ${off}`);
    const name = h.toString('utf8', 0, 100).replace(/\0.*$/s, '');
    const prefix = h.toString('utf8', 345, 500).replace(/\0.*$/s, '');
    const size = parseInt(h.toString('ascii', 124, 136).replace(/[\0 ]/g, '') || '0', 8);
    const type = String.fromCharCode(h[156]!);
    off += BLOCK;
    if (off + size > tar.length) throw new TarFormatError(`tar entry ${name} is cut short`);
    if (type === '0' || type === '\0') files.set(prefix ? `${prefix}/${name}` : name, tar.subarray(off, off + size));
    off += Math.ceil(size / BLOCK) * BLOCK;
  }
  return files;
}
