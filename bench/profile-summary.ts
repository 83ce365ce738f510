/**
 * Summarises a V8 CPU profile (`node --cpu-prof`, or `bench/http-overhead.ts --profile DIR`): self
 * time by function and by source file, and total (inclusive) time of the project's own functions,
 * as shares of the busy (non-idle) time.
 *
 *   node --import tsx bench/profile-summary.ts FILE.cpuprofile [--top 30]
 */
import { readFileSync } from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const args = process.argv.slice(2);
const file = args.find((a) => !a.startsWith('--'));
if (!file) {
  console.error('usage: profile-summary FILE.cpuprofile [--top N]');
  process.exit(2);
}
const top = args.includes('--top') ? Number(args[args.indexOf('--top') + 1]) : 30;
const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;

const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const parent = new Map<number, number>();
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

const selfUs = new Map<number, number>();
for (let i = 0; i < profile.samples.length; i++) {
  const id = profile.samples[i]!;
  selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
}

const shortUrl = (u: string) => u.replace(/^file:\/\//, '').replace(/^.*\/node_modules\//, 'node_modules/').replace(/^.*\/(proxy|shared|bench|test)\//, '$1/');
const label = (n: ProfileNode) => `${n.callFrame.functionName || '(anonymous)'} ${shortUrl(n.callFrame.url)}:${n.callFrame.lineNumber + 1}`;

let idle = 0;
let busy = 0;
const fnSelf = new Map<string, number>();
const fileSelf = new Map<string, number>();
const ownTotal = new Map<string, number>();
for (const [id, us] of selfUs) {
  const n = byId.get(id)!;
  if (n.callFrame.functionName === '(idle)') {
    idle += us;
    continue;
  }
  busy += us;
  fnSelf.set(label(n), (fnSelf.get(label(n)) ?? 0) + us);
  const f = shortUrl(n.callFrame.url) || `(${n.callFrame.functionName})`;
  fileSelf.set(f, (fileSelf.get(f) ?? 0) + us);
  // Inclusive time: credit each project function once per sample stack.
  const seen = new Set<string>();
  for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
    const c = byId.get(cur)!;
    if (!/\/(proxy|shared)\//.test(c.callFrame.url)) continue;
    const l = label(c);
    if (seen.has(l)) continue;
    seen.add(l);
    ownTotal.set(l, (ownTotal.get(l) ?? 0) + us);
  }
}

const pct = (us: number) => `${((100 * us) / busy).toFixed(1).padStart(5)}%`;
const print = (title: string, m: Map<string, number>) => {
  console.log(`\n${title}`);
  for (const [k, us] of [...m].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${pct(us)}  ${k}`);
};
console.log(`busy ${(busy / 1e6).toFixed(2)} s, idle ${(idle / 1e6).toFixed(2)} s`);
print('self time by file', fileSelf);
print('self time by function', fnSelf);
print('total time of the project’s functions', ownTotal);
