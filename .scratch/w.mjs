import { openSync, writeSync } from 'node:fs';
const fd = openSync(process.argv[2], 'a');
const s = 'x'.repeat(500) + '\n';
const n = 100000; const t = process.hrtime.bigint(); const c0 = process.cpuUsage();
for (let i = 0; i < n; i++) writeSync(fd, s);
const c = process.cpuUsage(c0);
console.log(process.argv[2], 'wall', (Number(process.hrtime.bigint() - t) / n / 1000).toFixed(2), 'us/write; cpu', ((c.user + c.system) / n).toFixed(2), 'us (sys', (c.system / n).toFixed(2), ')');
