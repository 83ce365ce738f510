// A console session from the IdP's code flow lives as long as the IdP vouches for the user: with a
// refresh token it is refreshed near the end of each (3-second) access token, reading groups again,
// so a group the IdP removed stops giving its role; without one, it ends with its token.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { Config } from '../../shared/config';
import { Gateway } from '../../proxy/gateway';
import { silentLogger } from '../../proxy/log';
import { startTestIdp, TestBrowser, type TestIdp } from '../support/oidc-provider';

const stops: (() => Promise<void>)[] = [];
after(async () => {
  for (const stop of stops.reverse()) await stop();
});

async function setup(refreshTokens: boolean): Promise<{ idp: TestIdp; control: string }> {
  const idp = await startTestIdp({ accessTokenTtl: 3, refreshTokens });
  const dataDir = mkdtempSync(join(tmpdir(), 'custody-refresh-'));
  const config = Config.parse({ listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' }, identity: { oidc: [{ issuer: idp.issuer, audience: idp.audience, clientId: idp.consoleClientId }] } });
  const gw = await Gateway.start({ config, dataDir, log: silentLogger });
  stops.push(async () => {
    await gw.stop();
    await idp.close();
    rmSync(dataDir, { recursive: true, force: true });
  });
  return { idp, control: `http://${gw.address('control')}` };
}

async function signIn(idp: TestIdp, control: string): Promise<string> {
  const browser = new TestBrowser();
  const { response } = await browser.navigate(`${control}/api/auth/oidc/start?issuer=0`);
  assert.equal(response.status, 200);
  return `custody_session=${browser.cookies(control).get('custody_session')}`;
}

const me = async (control: string, cookie: string) => {
  const r = await fetch(`${control}/api/me`, { headers: { cookie } });
  return { status: r.status, body: r.status === 200 ? ((await r.json()) as { roles: string[]; groups: string[] }) : undefined };
};

describe('IdP console sessions and refresh tokens', () => {
  it('refreshes before the access token ends, re-reading groups at each refresh', async () => {
    const { idp, control } = await setup(true);
    idp.setUser({ sub: 'rita', email: 'rita@example.test', groups: ['admin'] });
    const cookie = await signIn(idp, control);
    assert.deepEqual((await me(control, cookie)).body?.roles, ['admin', 'user']);
    idp.setUser({ sub: 'rita', email: 'rita@example.test', groups: ['reviewer'] });
    await new Promise((r) => setTimeout(r, 4000));
    const after = await me(control, cookie);
    assert.equal(after.status, 200, 'the session outlived its first access token through the refresh token');
    assert.deepEqual(after.body?.groups, ['reviewer'], 'groups read again from the IdP');
    assert.deepEqual(after.body?.roles, ['reviewer', 'user'], 'admin is gone with the admin group');
  });

  it('ends with its access token when the IdP grants no refresh token', async () => {
    const { idp, control } = await setup(false);
    idp.setUser({ sub: 'sam', email: 'sam@example.test', groups: ['admin'] });
    const cookie = await signIn(idp, control);
    assert.equal((await me(control, cookie)).status, 200);
    await new Promise((r) => setTimeout(r, 4000));
    assert.equal((await me(control, cookie)).status, 401);
  });
});
