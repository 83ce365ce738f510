import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Config } from '../shared/config';
import { Gateway } from '../proxy/gateway';
import { silentLogger } from '../proxy/log';
const run = promisify(execFile);
import { AuditWriter } from '../proxy/postgres/audit-writer';
if (process.env.NOAUDIT) {
  AuditWriter.prototype.flush = function (this: AuditWriter) {
    const self = this as unknown as { scheduled: boolean; queue: unknown[]; commits: { done(err: null): void }[]; timer?: NodeJS.Timeout };
    self.scheduled = false; if (self.timer) clearTimeout(self.timer); self.timer = undefined;
    const commits = self.commits; self.commits = []; self.queue = []; for (const c of commits) c.done(null);
  };
}
const secs = process.env.SECS ?? '8';
const dir = mkdtempSync(join(tmpdir(), 'pgx-'));
const config = Config.parse({
  listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
  connections: [{ name: 'bench', kind: 'postgres', upstream: 'postgres://postgres@127.0.0.1:5432/custody_bench', listen: '127.0.0.1:0', tls: { mode: 'disable' } }],
  masking: [{ id: 'bench-pii', detectors: ['email'], connections: ['bench'] }],
  policies: [{ name: 'hold-destructive', match: { connections: ['bench'], sql: ['drop', 'truncate', 'delete_without_where'] }, action: 'hold', hold: { approvers: ['dba'] } }],
});
const gw = await Gateway.start({ config, dataDir: join(dir, 'g'), log: silentLogger });
const port = gw.address('postgres:bench').split(':').pop()!;
const env = { ...process.env, PGSSLMODE: 'disable', PGPASSWORD: gw.firstKey! };
await run('pgbench', ['-S', '-n', '-c', '4', '-j', '2', '-T', '2', '-h', '127.0.0.1', '-p', port, '-U', 'bench', 'custody_bench'], { env });
const snap = () => Object.fromEntries(readdirSync(`/proc/${process.pid}/task`).map((t) => [t, readFileSync(`/proc/${process.pid}/task/${t}/stat`, 'utf8').split(') ')[1]!.split(' ').slice(11, 13).map(Number).reduce((a, b) => a + b, 0)]));
const io = () => Object.fromEntries(readFileSync(`/proc/${process.pid}/io`, 'utf8').trim().split('\n').map((l) => l.split(': ')).map(([k, v]) => [k, Number(v)]));
const io1 = io();
const s1 = snap();
const { stdout } = await run('pgbench', ['-S', '-n', '-c', '4', '-j', '2', '-T', secs, '-h', '127.0.0.1', '-p', port, '-U', 'bench', 'custody_bench'], { env });
const s2 = snap();
const io2 = io();
const tx = Number(/actually processed: (\d+)/.exec(stdout)![1]);
const tps = /tps = ([\d.]+)/.exec(stdout)![1];
console.log('tps', tps, 'syscr/tx', ((io2.syscr - io1.syscr) / tx).toFixed(2), 'syscw/tx', ((io2.syscw - io1.syscw) / tx).toFixed(2));
let tot = 0;
for (const t of Object.keys(s2)) { const d = s2[t]! - (s1[t] ?? 0); tot += d; if (d > 5) console.log(`tid ${t}: ${(d * 10000 / tx).toFixed(0)} us/tx`); }
console.log(`total ${(tot * 10000 / tx).toFixed(0)} us/tx`);
await gw.stop();
process.exit(0);
