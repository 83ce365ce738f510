// The OCSF record is written as JSON text (ocsf.ts): it must parse, and its derived fields must be
// what the values say, whatever order events arrive in.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ocsfJson, type OcsfContext } from '../../proxy/audit/ocsf';

const ctx: OcsfContext = { connectionKinds: new Map([['openai', 'openai']]), actorNames: new Map([['key:q', 'Quote "Q" \\ Person']]), product: { name: 'Custody', version: '1.0' }, origin: 'gw"1' };

describe('OCSF records as JSON text', () => {
  it('time_dt is the ISO text of time, across seconds, in any order, including before 1970', () => {
    const times = [1796580954000, 1796580954001, 1796580954099, 1796580954100, 1796580954999, 1796580955000, 1796580954500, 0, 999, -1, -1000, -1500, 1796580955007, 1796580955007.5, 8.64e15];
    for (const t of times) {
      const rec = JSON.parse(ocsfJson({ seq: 1, time: t, kind: 'http.request', session: 's', actor: 'key:q', connection: 'openai', payload: {}, masked: 0, hash: 'h' }, ctx)) as { time: number; time_dt: string };
      assert.equal(rec.time_dt, new Date(t).toISOString(), `time ${t}`);
      assert.equal(rec.time, t);
    }
  });

  it('strings from the event are escaped, whatever they hold', () => {
    const odd = 'a"b\\c\nd\u2028e</script>\u0000';
    const rec = JSON.parse(ocsfJson({ seq: 7, time: 1, kind: 'http.error', session: odd, actor: 'key:q', connection: odd, payload: { method: odd, path: odd, query: odd, message: odd, model: odd }, masked: 3, hash: odd }, ctx, { prevHash: odd, payloadHash: odd })) as {
      metadata: { uid: string; correlation_uid: string };
      actor: { user: { name: string } };
      api: { service: { name: string } };
      http_request: { url: { query_string: string } };
      status_detail: string;
      unmapped: { custody: unknown };
    };
    assert.equal(rec.metadata.uid, 'gw"1#7');
    assert.equal(rec.metadata.correlation_uid, odd);
    assert.equal(rec.actor.user.name, 'Quote "Q" \\ Person');
    assert.equal(rec.api.service.name, odd);
    assert.equal(rec.http_request.url.query_string, odd);
    assert.equal(rec.status_detail, odd);
    assert.deepEqual(rec.unmapped.custody, { seq: 7, kind: 'http.error', hash: odd, connection: odd, masked: 3, prev_hash: odd, payload_hash: odd });
  });
});
