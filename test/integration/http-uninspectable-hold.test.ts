/**
 * A body the gateway cannot inspect, where masking applies, goes on only to a person: a `hold`
 * rule is the explicit way out of the 415 (docs/HTTP.md, "Bodies"). Approved, the upstream gets the
 * bytes as they were sent; without the hold rule, the same body is refused.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Identity } from '../../shared/identity';
import { type LlmUpstream, startLlmUpstream } from '../support/llm-upstream';
import { eventually, startTestGateway, type TestGateway, VECTOR_SECRET } from './http-harness';

const PNG = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==', 'base64');
const APPROVER: Identity = { subject: 'key:approver', name: 'sec-approver', groups: ['sec'], roles: ['approver'], via: 'api-key' };

let upstream: LlmUpstream;
let gw: TestGateway;

before(async () => {
  upstream = await startLlmUpstream({ vectorKey: VECTOR_SECRET });
  gw = await startTestGateway(upstream, {
    masking: [{ id: 'pii', detectors: ['credit_card'], scope: ['upstream', 'log'], connections: ['vectors'] }],
    policies: [{ name: 'blobs-need-a-person', match: { connections: ['vectors'], paths: ['/blobs/*'] }, action: 'hold', hold: { approvers: ['sec'] } }],
  });
});
after(async () => {
  await gw.stop();
  await upstream.close();
});

const put = (path: string) => fetch(`${gw.proxy}/vectors${path}`, { method: 'PUT', headers: { authorization: `Bearer ${gw.adminKey}`, 'content-type': 'image/png' }, body: PNG });

describe('uninspectable bodies and holds', () => {
  it('without a hold rule the body is refused with 415', async () => {
    const from = upstream.requests.length;
    const r = await put('/images/a.png');
    assert.equal(r.status, 415);
    assert.match(((await r.json()) as { error: { message: string } }).error.message, /cannot inspect.*passthroughTypes/);
    assert.equal(upstream.requests.length, from);
  });

  it('a hold rule sends it to an approver; approved, the upstream gets the bytes as sent', async () => {
    const from = upstream.requests.length;
    const pending = put('/blobs/a.png');
    const hold = await eventually(() => gw.gw.services.holds.list({ state: 'pending' }).holds[0], 'the hold');
    assert.equal(upstream.requests.length, from, 'nothing forwarded while held');
    await gw.gw.services.holds.decide(hold.id, APPROVER, { decision: 'approve', reason: 'a logo' });
    const r = await pending;
    assert.notEqual(r.status, 415);
    assert.equal(r.headers.get('x-custody-error'), null);
    assert.deepEqual(upstream.requests[from]!.body, PNG);
  });
});
