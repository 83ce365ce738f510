// Draws Custody's icons (a white shield with a keyhole on a teal rounded square) as PNGs with
// nothing but zlib: `node build/make-icons.mjs`. Output: build/icon.png (512, electron-builder's
// source for .icns/.ico), build/icons/<n>x<n>.png (Linux), build/icons/tray*.png (tray).
import { writeFileSync } from 'node:fs';
import { deflateSync } from 'node:zlib';

const CRC = new Int32Array(256).map((_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c;
});
function crc32(buf) {
  let c = -1;
  for (const b of buf) c = CRC[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}
function chunk(type, data) {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const td = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(td));
  return Buffer.concat([len, td, crc]);
}
/** RGBA pixels (size × size × 4) → PNG (RFC 2083: 8-bit RGBA, filter 0 per row). */
function png(size, rgba) {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(size, 0);
  ihdr.writeUInt32BE(size, 4);
  ihdr[8] = 8;
  ihdr[9] = 6;
  const raw = Buffer.alloc(size * (size * 4 + 1));
  for (let y = 0; y < size; y++) rgba.copy(raw, y * (size * 4 + 1) + 1, y * size * 4, (y + 1) * size * 4);
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr), chunk('IDAT', deflateSync(raw, { level: 9 })), chunk('IEND', Buffer.alloc(0))]);
}

const inRoundedSquare = (u, v, r = 0.2, m = 0.04) => {
  const x = Math.max(Math.abs(u - 0.5) - (0.5 - m - r), 0);
  const y = Math.max(Math.abs(v - 0.5) - (0.5 - m - r), 0);
  return x * x + y * y <= r * r;
};
const inShield = (u, v) => {
  if (v < 0.2 || v > 0.84) return false;
  const hw = v < 0.52 ? 0.26 : 0.26 * Math.sqrt(Math.max(0, 1 - ((v - 0.52) / 0.32) ** 2));
  return Math.abs(u - 0.5) <= hw;
};
const inKeyhole = (u, v) => (u - 0.5) ** 2 + (v - 0.44) ** 2 <= 0.075 ** 2 || (Math.abs(u - 0.5) <= 0.032 && v >= 0.44 && v <= 0.64);

/** kind: 'app' (full colour), 'tray' (white shield), 'template' (black shield, macOS template). */
function draw(size, kind) {
  const out = Buffer.alloc(size * size * 4);
  const ss = 4;
  for (let y = 0; y < size; y++)
    for (let x = 0; x < size; x++) {
      let bg = 0, shield = 0;
      for (let sy = 0; sy < ss; sy++)
        for (let sx = 0; sx < ss; sx++) {
          const u = (x + (sx + 0.5) / ss) / size;
          const v = (y + (sy + 0.5) / ss) / size;
          if (kind === 'app' && inRoundedSquare(u, v)) bg++;
          const su = kind === 'app' ? u : 0.5 + (u - 0.5) * 1.35;
          const sv = kind === 'app' ? v : 0.5 + (v - 0.52) * 1.35;
          if (inShield(su, sv) && !inKeyhole(su, sv)) shield++;
        }
      const n = ss * ss;
      const i = (y * size + x) * 4;
      if (kind === 'app') {
        const a = bg / n, s = shield / n;
        // teal #0f766e under a white shield
        const r = 15 * (1 - s) + 255 * s, g = 118 * (1 - s) + 255 * s, b = 110 * (1 - s) + 255 * s;
        out[i] = Math.round(r); out[i + 1] = Math.round(g); out[i + 2] = Math.round(b); out[i + 3] = Math.round(255 * Math.max(a, s));
      } else {
        const c = kind === 'template' ? 0 : 255;
        out[i] = c; out[i + 1] = c; out[i + 2] = c; out[i + 3] = Math.round((255 * shield) / n);
      }
    }
  return png(size, out);
}

const dir = new URL('.', import.meta.url);
writeFileSync(new URL('icon.png', dir), draw(512, 'app'));
for (const s of [16, 32, 48, 64, 128, 256, 512]) writeFileSync(new URL(`icons/${s}x${s}.png`, dir), draw(s, 'app'));
writeFileSync(new URL('icons/tray.png', dir), draw(22, 'tray'));
writeFileSync(new URL('icons/tray@2x.png', dir), draw(44, 'tray'));
writeFileSync(new URL('icons/trayTemplate.png', dir), draw(22, 'template'));
writeFileSync(new URL('icons/trayTemplate@2x.png', dir), draw(44, 'template'));
