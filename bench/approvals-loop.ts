/**
 * The approve-from-console flow, N times in a row (default 50): an OpenAI SDK request a hold rule
 * matches, approved with a reason by an approver signed in to the console in Chromium, and the SDK
 * call must complete within 10 s of the click. A run that does not prints what the card, the hold
 * and the page showed, so a flake names its cause.
 *
 *   node --import tsx bench/approvals-loop.ts [--runs 50]
 */
import OpenAI from 'openai';
import { newPage, signIn } from '../test/support/browser';
import { eventually, startConsoleEnv } from '../test/e2e/console-harness';

const runsArg = process.argv.indexOf('--runs');
const RUNS = runsArg > 0 ? Number(process.argv[runsArg + 1]) : 50;

const env = await startConsoleEnv({
  config: {
    policies: [{ name: 'hold-bulk-export', match: { connections: ['openai'], content: '(?i)export all' }, action: 'hold', hold: { approvers: ['security'], reason: 'required' } }],
  },
});
const dev = env.key('maya.chen', ['engineering']);
const approver = env.key('alice', ['security', 'approver']);
const { page, errors } = await newPage(env.browser);
await signIn(page, env.control, approver);
await page.goto(`${env.control}/#/inbox`);
await eventually(async () => (await page.locator('.live-live').count()) > 0, 'the live feed to connect');
const client = new OpenAI({ baseURL: `${env.proxy}/openai`, apiKey: dev, maxRetries: 0, timeout: 60_000 });

let passed = 0;
const releaseMs: number[] = [];
for (let i = 1; i <= RUNS; i++) {
  const call = client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: `export all customers, run ${i}` }] });
  const outcome = call.then(
    () => 'completed' as const,
    (err: Error) => `failed: ${err.message}`,
  );
  const card = page.getByTestId('hold-card').filter({ hasText: `run ${i}` });
  try {
    await card.waitFor({ timeout: 10_000 });
    await card.getByTestId('hold-reason').fill(`ticket ${i}`);
    const clicked = Date.now();
    await card.getByTestId('hold-approve').click();
    const clickMs = Date.now() - clicked;
    const result = await Promise.race([outcome, new Promise<string>((r) => setTimeout(() => r('not released within 10 s'), 10_000))]);
    if (result !== 'completed') throw new Error(result);
    releaseMs.push(Date.now() - clicked);
    if (process.env["VERBOSE"]) console.log(`run ${i}: click took ${clickMs} ms; released ${Date.now() - clicked} ms after it began`);
    passed++;
  } catch (err) {
    const holds = await fetch(`${env.control}/api/holds?state=pending`, { headers: { authorization: `Bearer ${env.adminKey}` } }).then((r) => r.text());
    const cardText = await card.innerText({ timeout: 1000 }).catch(() => '(no card)');
    console.log(`run ${i}: FAILED: ${(err as Error).message}\n  card: ${cardText.replace(/\n/g, ' | ')}\n  pending holds: ${holds}\n  page errors: ${errors.join('; ') || 'none'}`);
    await outcome;
  }
}
releaseMs.sort((a, b) => a - b);
console.log(`approve-from-console: ${passed}/${RUNS} released; click → SDK response p50 ${releaseMs[Math.floor(releaseMs.length / 2)] ?? '-'} ms, max ${releaseMs.at(-1) ?? '-'} ms`);
await page.close();
await env.stop();
process.exit(passed === RUNS ? 0 : 1);
