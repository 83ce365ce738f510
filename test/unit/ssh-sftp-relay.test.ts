// The SFTP relay's flow control, over Node streams standing in for the two SSH channels: the
// client's channel is paused once about 1 MiB of requests waits for an upstream that does not take
// them, and resumed as the upstream drains; every byte reaches the upstream in order.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { Duplex } from 'node:stream';
import { describe, it } from 'node:test';
import { silentLogger } from '../../proxy/log';
import { SftpRelay } from '../../proxy/ssh/sftp';

const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
};
const str = (s: string | Buffer) => Buffer.concat([u32(Buffer.byteLength(s)), Buffer.from(s)]);
const u64 = (n: number) => Buffer.concat([u32(Math.floor(n / 2 ** 32)), u32(n >>> 0)]);
function packet(type: number, ...fields: Buffer[]): Buffer {
  const body = Buffer.concat([Buffer.from([type]), ...fields]);
  return Buffer.concat([u32(body.length), body]);
}
const tick = () => new Promise((r) => setImmediate(r));

describe('sftp relay flow control', () => {
  it('pauses the client while about 1 MiB of writes waits for the upstream, resumes as it drains, and forwards every byte in order', async () => {
    const toClient: Buffer[] = [];
    const client = new Duplex({
      read() {},
      write(chunk: Buffer, _enc, cb) {
        toClient.push(chunk);
        cb();
      },
    });
    // The upstream takes one write at a time and only when the test says so (its window is full).
    const received: Buffer[] = [];
    const held: (() => void)[] = [];
    const upstream = new Duplex({
      read() {},
      write(chunk: Buffer, _enc, cb) {
        received.push(chunk);
        held.push(cb);
      },
    });
    const records: Record<string, unknown>[] = [];
    const relay = new SftpRelay({ client, upstream, recordFileBytes: 0, home: () => Promise.resolve('/home/dev'), decide: () => Promise.resolve(null), record: (p) => records.push(p), forLog: (text) => ({ text, spans: [] }), log: silentLogger });
    relay.start();
    const release = async (n = Infinity) => {
      for (let i = 0; i < n && held.length; i++) {
        held.shift()!();
        await tick();
      }
    };

    const open = packet(3, u32(1), str('/srv/up.bin'), u32(0x1a), u32(0));
    client.push(open);
    await tick();
    await release();
    const handle = packet(102, u32(1), str('h1'));
    upstream.push(handle);
    await tick();

    // Twelve 255 KiB writes (3 MiB), arriving in 32 KiB pieces as SSH channel data does.
    const data = randomBytes(12 * 261_120);
    const writes = Array.from({ length: 12 }, (_, i) => packet(6, u32(i + 2), str('h1'), u64(i * 261_120), str(data.subarray(i * 261_120, (i + 1) * 261_120))));
    const wire = Buffer.concat(writes);
    // What arrives while the relay is paused waits in the channel's buffer (SSH's window keeps it small).
    for (let off = 0; off < wire.length; off += 32_768) {
      client.push(Buffer.from(wire.subarray(off, off + 32_768)));
      await tick();
    }
    assert.ok(client.isPaused(), 'the client is paused while the upstream takes nothing');
    assert.equal(received.length, 2, 'OPEN and the first WRITE went upstream');
    assert.ok(client.readableLength >= wire.length - 6 * 261_149, `the relay took in about 1 MiB, the rest waits (${client.readableLength} bytes)`);

    await release(1);
    assert.ok(client.isPaused(), 'still paused with more than 512 KiB waiting');
    for (let i = 0; i < 100 && received.length < 13; i++) await release();
    assert.equal(client.isPaused(), false, 'resumed once the upstream drained');
    assert.equal(received.length, 13);
    assert.ok(Buffer.concat(received).equals(Buffer.concat([open, wire])), 'every request went upstream whole and in order');

    client.push(packet(4, u32(99), str('h1')));
    await tick();
    await release();
    const closed = records.find((r) => r['op'] === 'write')!;
    assert.equal(closed['bytes'], data.length);
    assert.equal(closed['path'], '/srv/up.bin');
    assert.equal(closed['sha256'], createHash('sha256').update(data).digest('hex'));
    assert.ok(Buffer.concat(toClient).equals(handle), 'the client got the reply from upstream and nothing else (no refusal)');
  });
});
