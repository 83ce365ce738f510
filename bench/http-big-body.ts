/**
 * `npm run bench -- http-big-body` (`node --import tsx bench/http-big-body.ts [--mib N]`): a large
 * unmasked body (default 32 MiB, under the default limits.maxResponseBytes; sent chunked in 64 KiB pieces by the local upstream stand-in)
 * fetched by one client, directly and through the gateway, alternating, 3 rounds of 5 fetches each
 * after one warm-up. Through the gateway the body is relayed piece by piece: each turn's pieces go
 * out once that turn's `http.body` is journaled, and the last with the `http.response` that records
 * the whole body (docs/AUDIT.md, "Results before replies"). Prints the mean time per fetch and the
 * ratio gateway / direct per round.
 */
import type { ServerResponse } from 'node:http';
import { startLlmUpstream, type RecordedRequest } from '../test/support/llm-upstream';
import { startTestGateway, VECTOR_SECRET } from '../test/integration/http-harness';

const mibArg = process.argv.indexOf('--mib');
const MIB = mibArg > 0 ? Number(process.argv[mibArg + 1]) : 32;
const PIECE = 64 * 1024;
const piece = Buffer.alloc(PIECE, 0x61);

async function bigBody(rec: RecordedRequest, res: ServerResponse): Promise<boolean> {
  if (!rec.path.startsWith('/vectors/big')) return false;
  res.writeHead(200, { 'content-type': 'application/octet-stream' });
  const pieces = (MIB * 1024 * 1024) / PIECE;
  let i = 0;
  const more = () => {
    while (i < pieces) {
      i++;
      if (!res.write(piece)) {
        res.once('drain', more);
        return;
      }
    }
    res.end();
  };
  more();
  return true;
}

const upstream = await startLlmUpstream({ vectorKey: VECTOR_SECRET, handler: bigBody });
const gw = await startTestGateway(upstream);

async function fetchAll(url: string, authorization: string): Promise<number> {
  const r = await fetch(url, { headers: { authorization } });
  let bytes = 0;
  for await (const chunk of r.body as unknown as AsyncIterable<Uint8Array>) bytes += chunk.length;
  if (r.status !== 200 || bytes !== MIB * 1024 * 1024) throw new Error(`${url}: status ${r.status}, ${bytes} bytes`);
  return bytes;
}
async function time(url: string, authorization: string): Promise<number> {
  await fetchAll(url, authorization);
  const t = performance.now();
  for (let i = 0; i < 5; i++) await fetchAll(url, authorization);
  return (performance.now() - t) / 5;
}
const rows: string[] = [];
for (let r = 0; r < 3; r++) {
  const d = await time(`${upstream.url}/vectors/big`, `Bearer ${VECTOR_SECRET}`);
  const g = await time(`${gw.proxy}/vectors/big`, `Bearer ${gw.adminKey}`);
  rows.push(`${MIB} MiB: direct ${d.toFixed(0)} ms, gateway ${g.toFixed(0)} ms, ratio ${(g / d).toFixed(2)}`);
}
console.log(rows.join('\n'));
await gw.stop();
await upstream.close();
