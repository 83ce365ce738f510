// The console in team mode, in a real browser: two gateways on one real PostgreSQL store. An admin
// signed in to A's console approves B (pending) from the Audit page's Gateways view — the approval
// lands in A's chain and B starts serving — and B's console lists and replays a conversation
// recorded on A, marked as A's, with the masked card number highlighted as on A; then the admin
// removes B from the group, with a reason, and B's clients are refused saying why. Rows forged in
// the store with SQL (an enrolled gateway, and one approved in that forged gateway's own chain) are
// marked "not proven" in the view, while A and the removed B show how they are proven.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import OpenAI from 'openai';
import type { Browser, Page } from 'playwright-core';
import type pg from 'pg';
import type { Gateway } from '../../proxy/gateway';
import { newPage, screenshot, signIn } from '../support/browser';
import { forgedKey, writeForgedRoot, writeGatewayRow } from '../support/forged-member';
import { eventually } from './console-harness';
import { control, idOf, startTeam, type Team } from './console-team';

const CARD = '4111 1111 1111 1111';
let team: Team;
let upstream: Team['upstream'];
let sql: pg.Client;
let browser: Browser;
let page: Page;

describe('console: gateways of a shared store', () => {
  let a: Gateway;
  let b: Gateway;
  before(async () => {
    team = await startTeam('console_team', 'Charged.');
    ({ upstream, browser, page } = team);
    sql = await team.store.client();
    [a, b] = await team.pair();
  });
  after(async () => {
    await team?.close();
  });

  it('approves a pending gateway from the Audit page', async () => {
    assert.match(b.services.admissionRefusal!() ?? '', /waiting for enrolment/, 'B serves nothing yet');
    await signIn(page, control(a), a.firstKey!);
    await page.goto(`${control(a)}/#/audit`);
    const rowB = page.locator(`[data-testid="gateway-row"][data-gateway-id="${idOf(b)}"]`);
    await rowB.waitFor();
    assert.equal(await rowB.getAttribute('data-status'), 'pending');
    assert.equal(await page.locator(`[data-testid="gateway-row"][data-gateway-id="${idOf(a)}"]`).getAttribute('data-status'), 'enrolled');
    assert.match(await page.getByTestId('gateway-list').innerText(), /this gateway/);
    await screenshot(page, 'audit-gateways-pending');

    await rowB.getByTestId('approve-gateway').click();
    assert.equal(await page.getByTestId('approve-fingerprint').innerText(), idOf(b), 'the dialog shows the whole fingerprint to compare');
    await page.getByTestId('confirm-approve-gateway').click();
    await eventually(async () => (await rowB.getAttribute('data-status')) === 'approved', 'B approved in the view');
    assert.match(await rowB.innerText(), /approved/);
    await screenshot(page, 'audit-gateways');

    // The effects: the row in the store, the approval in A's own chain naming the admin, and B serving.
    const row = (await sql.query<{ status: string; approved_by: string; approval_seq: string }>('SELECT status, approved_by, approval_seq FROM custody_gateways WHERE id = $1', [idOf(b)])).rows[0]!;
    assert.deepEqual([row.status, row.approved_by], ['approved', idOf(a)]);
    const approval = a.services.store.event(Number(row.approval_seq))!;
    assert.equal(approval.kind, 'gateway.approved');
    assert.equal((approval.payload as { id: string; actorName: string }).id, idOf(b));
    assert.equal((approval.payload as { actorName: string }).actorName, 'local-admin');
    await eventually(() => b.services.admissionRefusal!() === undefined, 'B serving', 15_000);
  });

  it("lists and replays on B a conversation recorded on A, marked as A's, masked spans highlighted", async () => {
    await new OpenAI({ baseURL: `http://${a.address('http')}/openai`, apiKey: a.firstKey!, maxRetries: 0 }).chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: `Charge ${CARD} please` }] });
    const { page: pageB } = await newPage(browser);
    try {
      await signIn(pageB, control(b), b.firstKey!);
      await pageB.goto(`${control(b)}/#/sessions`);
      const remote = pageB.locator('[data-testid="session-row"]', { has: pageB.locator('[data-testid="session-gateway"]', { hasText: idOf(a).replace(/^SHA256:/, '').slice(0, 8) }) }).first();
      await eventually(
        async () => {
          if ((await remote.count()) > 0) return true;
          await pageB.reload();
          return false;
        },
        "A's session in B's list",
        15_000,
      );
      await screenshot(pageB, 'sessions-team');
      await remote.click();
      await pageB.getByTestId('conversation').waitFor();
      assert.match(await pageB.getByTestId('replay-gateway').innerText(), new RegExp(`recorded by .*${idOf(a).replace(/^SHA256:/, '').slice(0, 8).replace(/[+/]/g, '\\$&')}`));
      const card = pageB.locator('[data-testid="msg"][data-role="user"] mark.masked[data-mask-type="CREDIT_CARD"]').first();
      assert.equal(await card.innerText(), '[CREDIT_CARD]');
      assert.doesNotMatch(await pageB.getByTestId('conversation').innerText(), /4111 1111/);
      await screenshot(pageB, 'replay-team');
    } finally {
      await pageB.close();
    }
  });

  it('removes B from the group from the Audit page: recorded in A\'s chain with the reason, and B refuses requests saying why', async () => {
    const client = new OpenAI({ baseURL: `http://${b.address('http')}/openai`, apiKey: a.firstKey!, maxRetries: 0 });
    await client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'before the removal' }] });
    await page.goto(`${control(a)}/#/audit`);
    const rowB = page.locator(`[data-testid="gateway-row"][data-gateway-id="${idOf(b)}"]`);
    await rowB.waitFor();
    const rowA = page.locator(`[data-testid="gateway-row"][data-gateway-id="${idOf(a)}"]`);
    assert.equal(await rowA.getByTestId('remove-gateway').count(), 0, 'a gateway offers no Remove for itself');
    await rowB.getByTestId('remove-gateway').click();
    assert.equal(await page.getByTestId('confirm-remove-gateway').isDisabled(), true, 'no removal without a reason');
    await page.getByTestId('remove-gateway-reason').fill('host decommissioned');
    await page.getByTestId('confirm-remove-gateway').click();
    await eventually(async () => (await rowB.getAttribute('data-status')) === 'removed', 'B removed in the view');
    await screenshot(page, 'audit-gateways-removed');

    const row = (await sql.query<{ status: string; removed_by: string; removal_seq: string }>('SELECT status, removed_by, removal_seq FROM custody_gateways WHERE id = $1', [idOf(b)])).rows[0]!;
    assert.deepEqual([row.status, row.removed_by], ['removed', idOf(a)]);
    const removal = a.services.store.event(Number(row.removal_seq))!;
    assert.equal(removal.kind, 'gateway.removed');
    assert.deepEqual([(removal.payload as { id: string }).id, (removal.payload as { reason: string }).reason, (removal.payload as { actorName: string }).actorName], [idOf(b), 'host decommissioned', 'local-admin']);
    // What a client of B sees once B's next round has read the removal: a refusal that says why,
    // and nothing reaching the upstream.
    const ask = (content: string) => client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content }] }).then(() => undefined, (e: { status?: number; message: string }) => e);
    await eventually(async () => (await ask('while B learns of it'))?.status === 503, 'B refusing', 15_000);
    const refused = await ask('after the removal');
    assert.equal(refused?.status, 503);
    assert.match(refused.message, /this gateway was removed from the group by SHA256:\S+ \(host decommissioned\): it serves nothing/);
    assert.equal(upstream.requests.filter((r) => JSON.stringify(r.json).includes('after the removal')).length, 0, 'the refused request never reached the upstream');
    // B's own console can approve nobody any more.
    const approveFromB = await fetch(`${control(b)}/api/gateways/${encodeURIComponent(idOf(a))}/approve`, { method: 'POST', headers: { authorization: `Bearer ${a.firstKey!}` } });
    assert.equal(approveFromB.status, 409);
    assert.match(await approveFromB.text(), /itself removed/);
  });

  it('marks a state the store\'s table claims without proof: forged rows "not proven", A and the removed B proven', async () => {
    const root = forgedKey('custody/mallory-root');
    const member = forgedKey('custody/mallory');
    await writeForgedRoot(sql, root, [member]);
    await writeGatewayRow(sql, member, 'approved', { approvedBy: root.id, approvalSeq: 2 });

    await page.goto(`${control(a)}/#/audit`);
    const row = (id: string) => page.locator(`[data-testid="gateway-row"][data-gateway-id="${id}"]`);
    await eventually(async () => (await row(member.id).count()) > 0, 'the forged rows in the view', 10_000);
    for (const [id, status] of [[root.id, 'enrolled'], [member.id, 'approved']] as const) {
      assert.equal(await row(id).getAttribute('data-status'), status);
      assert.equal(await row(id).getAttribute('data-proven'), 'false');
      const mark = row(id).getByTestId('gateway-unproven');
      assert.equal(await mark.isVisible(), true, 'the mark is visible');
      assert.match(await mark.innerText(), /not proven[\s\S]*in the table only: /);
    }
    assert.equal(await row(idOf(a)).getAttribute('data-proven'), 'true');
    assert.match(await row(idOf(a)).getByTestId('gateway-proven').innerText(), /proven: this gateway \(it enrolled the group/);
    assert.equal(await row(idOf(b)).getAttribute('data-proven'), 'true');
    assert.match(await row(idOf(b)).getByTestId('gateway-proven').innerText(), /proven: removal at seq \d+ in chain .*, checkpoint-signed/);
    assert.equal(await row(idOf(b)).getByTestId('gateway-unproven').count(), 0);
    await screenshot(page, 'audit-gateways-unproven');
  });
});
