// Hash routes and links (renderer/lib/route.ts): every screen, and every event of a recording, has
// a URL someone can paste.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { afterSignIn, formatRoute, parseRoute, sessionLink } from '../../renderer/lib/route';

describe('routes', () => {
  it('parses pages, the inbox history tab and a session at an event', () => {
    assert.deepEqual(parseRoute('#/sessions/ses_abc?event=42'), { page: 'replay', param: 'ses_abc', query: { event: '42' } });
    assert.deepEqual(parseRoute('#/inbox/history'), { page: 'inbox', param: 'history', query: {} });
    assert.deepEqual(parseRoute('#/policies'), { page: 'policies', query: {} });
    assert.deepEqual(parseRoute(''), { page: 'inbox', query: {} });
    assert.deepEqual(parseRoute('#/nonsense'), { page: 'inbox', query: {} });
  });

  it('opens the inbox on a hold from a desktop notification link', () => {
    assert.deepEqual(parseRoute('#/holds/hold_9'), { page: 'inbox', query: { hold: 'hold_9' } });
  });

  it('round-trips ids that need escaping', () => {
    const r = { page: 'replay' as const, param: 'a/b c', query: { event: '7' } };
    assert.deepEqual(parseRoute(formatRoute(r)), r);
    assert.equal(sessionLink('http://127.0.0.1:7420', 'ses_1', 12), 'http://127.0.0.1:7420/#/sessions/ses_1?event=12');
    assert.equal(sessionLink('http://h', 'ses_1'), 'http://h/#/sessions/ses_1');
  });
});

describe('after sign-in', () => {
  it('returns to the same-origin page that asked for sign-in, never elsewhere', () => {
    assert.equal(afterSignIn('?next=%2Fsessions'), '/sessions');
    assert.equal(afterSignIn('?next=%2F'), '/');
    assert.equal(afterSignIn('?error=expired'), '/');
    for (const bad of ['?next=https%3A%2F%2Fevil.example', '?next=%2F%2Fevil.example', '?next=%2F%5Cevil.example', '?next=%2Flogin%3Fnext%3D%2F'])
      assert.equal(afterSignIn(bad), '/', bad);
  });
});
