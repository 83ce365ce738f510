/**
 * A gateway in this process under HTTP and PostgreSQL load with its health polled, for the disk
 * fault tests and `npm run bench -- faults`; and the count of what its clients saw acknowledged
 * but the log (or the database) lacks.
 */
import { Config } from '../../shared/config';
import { Gateway } from '../../proxy/gateway';
import { silentLogger } from '../../proxy/log';
import { UPSTREAM } from '../integration/pg-harness';
import { httpChatLoad, type LoadOutcome, loggedMarkers, newOutcome, pgInsertLoad, tableIds } from './fault-load';
import type { LlmUpstream } from './llm-upstream';

export interface Health {
  status: string;
  store?: { state: string; cause?: string };
}

/** A gateway on `dataDir` (LLM stand-in `upstream`, key sk-disk-faults) with HTTP and PostgreSQL load and a health poller; samples are tagged with `phase.name`. */
export async function gatewayUnderLoad(dataDir: string, upstream: LlmUpstream, table: string, prefix: string) {
  const config = Config.parse({
    listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
    connections: [
      { name: 'openai', kind: 'openai', upstream: `${upstream.url}/v1`, secret: { value: 'sk-disk-faults' } },
      { name: 'warehouse', kind: 'postgres', upstream: UPSTREAM, listen: '127.0.0.1:0' },
    ],
  });
  const gw = await Gateway.start({ config, dataDir, log: silentLogger });
  const key = gw.firstKey!;
  const pgAddress = gw.address('postgres:warehouse');
  const port = Number(pgAddress.slice(pgAddress.lastIndexOf(':') + 1));
  const control = gw.address('control');
  const phase = { name: 'before' };
  const http: { phase: string; status: number | 'error'; ms: number; body: string }[] = [];
  const health: { phase: string; ms: number; h: Health }[] = [];
  const httpOut = newOutcome();
  const pgOut = newOutcome();
  let stop = false;
  const healthLoop = async () => {
    while (!stop) {
      const t = performance.now();
      const p = phase.name;
      const h = (await (await fetch(`http://${control}/api/health`)).json()) as Health;
      health.push({ phase: p, ms: performance.now() - t, h });
      await new Promise((r) => setTimeout(r, 25));
    }
  };
  const loops = [
    httpChatLoad({ url: () => `http://${gw.address('http')}/openai/chat/completions`, key, prefix: `${prefix}h`, workers: 2, stop: () => stop, out: httpOut, onResult: (status, ms, body) => http.push({ phase: phase.name, status, ms, body }) }),
    pgInsertLoad({ port, key, table, prefix: `${prefix}p`, workers: 2, stop: () => stop, out: pgOut, pauseMs: 5 }),
    healthLoop(),
  ];
  return {
    gw,
    phase,
    http,
    health,
    httpOut,
    pgOut,
    async stop() {
      stop = true;
      await Promise.all(loops);
    },
  };
}

/** What the clients saw acknowledged that the database or the log lacks (`prefix`: as given to gatewayUnderLoad, a regular expression's source). */
export async function lostFromLog(dataDir: string, table: string, prefix: string, httpOut: LoadOutcome, pgOut: LoadOutcome) {
  const logged = loggedMarkers(dataDir, `${prefix}[hp]-\\d+-\\d+`);
  const rows = await tableIds(table);
  const whole = httpOut.acknowledged.filter((m) => !httpOut.streamed.has(m)).length;
  return {
    pgNotInDatabase: pgOut.acknowledged.filter((m) => !rows.has(m)),
    pgWithoutResult: pgOut.acknowledged.filter((m) => !logged.pgResults.has(m)),
    httpWithoutRequest: httpOut.acknowledged.filter((m) => !logged.httpRequests.has(m)),
    wholeAcknowledged: whole,
    wholeLogged: logged.httpOk,
    streamsAcknowledged: httpOut.acknowledged.length - whole,
    streamsLogged: logged.httpStreamOk,
  };
}
