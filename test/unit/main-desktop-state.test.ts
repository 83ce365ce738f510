import assert from 'node:assert/strict';
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { loadOrCreateSecretFile, plainSecrets, SecretUnwrapError, vaultSecrets } from '../../proxy/secret-wrapper';
import { KeychainError, loadOrCreateVaultKey, safeStorageKeychain, type SafeStorageLike, TokenVault, VAULT_KEY_FILE } from '../../main/secret-wrap';
import { type MenuItemTemplate, TrayController, trayMenuTemplate } from '../../main/tray';
import { DEFAULT_SIZE, placeWindow, readWindowState, trackWindowState, writeWindowState } from '../../main/window-state';
import { tempDir } from '../support/tmp';

/** A stand-in for Electron's safeStorage: AES-GCM under a per-"account" key. */
function fakeSafeStorage(accountKey = randomBytes(32), backend = 'gnome_libsecret'): SafeStorageLike {
  return {
    isEncryptionAvailable: () => true,
    getSelectedStorageBackend: () => backend,
    encryptString(text) {
      const iv = randomBytes(12);
      const c = createCipheriv('aes-256-gcm', accountKey, iv);
      const body = Buffer.concat([c.update(text, 'utf8'), c.final()]);
      return Buffer.concat([iv, c.getAuthTag(), body]);
    },
    decryptString(buf) {
      const d = createDecipheriv('aes-256-gcm', accountKey, buf.subarray(0, 12));
      d.setAuthTag(buf.subarray(12, 28));
      return Buffer.concat([d.update(buf.subarray(28)), d.final()]).toString('utf8');
    },
  };
}

describe('secrets at rest on the desktop', () => {
  it('keeps one vault key sealed by the OS keychain and refuses to replace it', () => {
    const dir = tempDir();
    const account = randomBytes(32);
    const keychain = safeStorageKeychain(fakeSafeStorage(account), 'linux');
    const key = loadOrCreateVaultKey(dir, keychain)!;
    assert.equal(key.length, 32);
    const stored = readFileSync(join(dir, VAULT_KEY_FILE));
    assert.equal(stored.includes(key), false, 'the key is not on disk in the clear');
    assert.equal(statSync(join(dir, VAULT_KEY_FILE)).mode & 0o777, 0o600);
    assert.deepEqual(loadOrCreateVaultKey(dir, keychain), key, 'the same key on the next launch');
    // another account's keychain cannot open it, and no new key is minted over it
    assert.throws(() => loadOrCreateVaultKey(dir, safeStorageKeychain(fakeSafeStorage(), 'linux')), KeychainError);
    assert.deepEqual(readFileSync(join(dir, VAULT_KEY_FILE)), stored);
  });

  it('treats Linux basic_text storage as no keychain: plain files, as headless', () => {
    const dir = tempDir();
    const weak = safeStorageKeychain(fakeSafeStorage(randomBytes(32), 'basic_text'), 'linux');
    assert.equal(weak.available, false);
    assert.match(weak.detail, /no keyring/);
    assert.equal(loadOrCreateVaultKey(dir, weak), null);
    assert.equal(existsSync(join(dir, VAULT_KEY_FILE)), false);
    assert.equal(safeStorageKeychain(fakeSafeStorage(randomBytes(32), 'basic_text'), 'darwin').available, true, 'the backend name matters on Linux only');
  });

  it('seals key files under the vault key, migrating a plain one, and fails closed on a wrong key', () => {
    const dir = tempDir();
    const plain = loadOrCreateSecretFile(dir, 'checkpoint-signing.key', plainSecrets, () => Buffer.from('pem-bytes'));
    assert.equal(statSync(join(dir, 'checkpoint-signing.key')).mode & 0o777, 0o600);
    const vault = vaultSecrets(randomBytes(32));
    assert.deepEqual(loadOrCreateSecretFile(dir, 'checkpoint-signing.key', vault), plain, 'migrated, same key');
    assert.equal(existsSync(join(dir, 'checkpoint-signing.key')), false, 'plain copy removed');
    assert.equal(readFileSync(join(dir, 'checkpoint-signing.key.sealed')).includes(Buffer.from('pem-bytes')), false);
    assert.deepEqual(loadOrCreateSecretFile(dir, 'checkpoint-signing.key', vault), plain);
    assert.throws(() => loadOrCreateSecretFile(dir, 'checkpoint-signing.key', vaultSecrets(randomBytes(32))), /does not open with this vault key/);
    // a headless gateway must not mint a new signing key next to a sealed one
    assert.throws(() => loadOrCreateSecretFile(dir, 'checkpoint-signing.key', plainSecrets), SecretUnwrapError);
    assert.equal(existsSync(join(dir, 'checkpoint-signing.key')), false);
  });

  it('round-trips connection secrets and detects tampering', () => {
    const vault = vaultSecrets(randomBytes(32));
    const sealed = vault.wrap(Buffer.from('sk-live-123'));
    assert.equal(vault.unwrap(sealed).toString(), 'sk-live-123');
    const tampered = Buffer.from(sealed);
    tampered[tampered.length - 1]! ^= 1;
    assert.throws(() => vault.unwrap(tampered), SecretUnwrapError);
    assert.throws(() => plainSecrets.unwrap(sealed), /sealed by the Custody desktop app/);
    assert.throws(() => vaultSecrets(Buffer.alloc(16)), /32 bytes/);
  });

  it('keeps remote sign-in tokens sealed', () => {
    const dir = tempDir();
    const vault = new TokenVault(join(dir, 'remote-tokens.safe'), safeStorageKeychain(fakeSafeStorage(), 'win32'));
    assert.equal(vault.load(), null);
    const tokens = { issuer: 'https://idp.example', clientId: 'custody-desktop', gateway: 'https://gw.example', accessToken: 'at-secret', refreshToken: 'rt-secret', expiresAt: 1 };
    vault.save(tokens);
    assert.equal(readFileSync(join(dir, 'remote-tokens.safe')).includes(Buffer.from('at-secret')), false);
    assert.deepEqual(vault.load(), tokens);
    writeFileSync(join(dir, 'remote-tokens.safe'), 'garbage');
    assert.equal(vault.load(), null, 'unreadable tokens mean: sign in again');
    vault.clear();
    assert.equal(existsSync(join(dir, 'remote-tokens.safe')), false);
  });
});

describe('window state', () => {
  const screenA = { x: 0, y: 0, width: 1920, height: 1040 };
  it('restores saved bounds on a display and clamps the size', () => {
    assert.deepEqual(placeWindow({ bounds: { x: 100, y: 80, width: 1400, height: 900 }, maximized: true }, [screenA]), { bounds: { x: 100, y: 80, width: 1400, height: 900 }, maximized: true });
    assert.deepEqual(placeWindow({ bounds: { x: 10, y: 10, width: 4000, height: 3000 }, maximized: false }, [screenA]).bounds, { x: 10, y: 10, width: 1920, height: 1040 });
  });
  it('recentres a window whose display is gone', () => {
    const placed = placeWindow({ bounds: { x: 2500, y: 100, width: 1000, height: 700 }, maximized: false }, [screenA]);
    assert.deepEqual(placed.bounds, { x: (1920 - DEFAULT_SIZE.width) / 2, y: (1040 - DEFAULT_SIZE.height) / 2, ...DEFAULT_SIZE });
    assert.deepEqual(placeWindow(null, [screenA]).bounds, placed.bounds);
    const second = { x: 1920, y: 0, width: 1280, height: 1000 };
    assert.equal(placeWindow({ bounds: { x: 2500, y: 100, width: 1000, height: 700 }, maximized: false }, [screenA, second]).bounds.x, 2500);
  });
  it('saves after moves and on close, and ignores a corrupt file', async () => {
    const file = join(tempDir(), 'sub', 'window-state.json');
    assert.equal(readWindowState(file), null);
    const handlers = new Map<string, () => void>();
    let bounds = { x: 5, y: 6, width: 800, height: 600 };
    trackWindowState({ on: (e, fn) => handlers.set(e, fn), getNormalBounds: () => bounds, isMaximized: () => false, isDestroyed: () => false }, file, 20);
    handlers.get('move')!();
    await new Promise((r) => setTimeout(r, 60));
    assert.deepEqual(readWindowState(file), { bounds, maximized: false });
    bounds = { x: 50, y: 60, width: 900, height: 700 };
    handlers.get('close')!();
    assert.deepEqual(readWindowState(file)!.bounds, bounds);
    writeFileSync(file, '{"bounds": {"x": "a"}}');
    assert.equal(readWindowState(file), null);
    writeWindowState(file, { bounds, maximized: true });
    assert.equal(readWindowState(file)!.maximized, true);
  });
});

describe('tray', () => {
  it('shows the pending count, pause toggle and quit, and offers a restart after the gateway gave up', () => {
    const calls: string[] = [];
    const actions = { open: () => calls.push('open'), openHolds: () => calls.push('holds'), setPaused: (p: boolean) => calls.push(`paused=${p}`), retryGateway: () => calls.push('retry'), quit: () => calls.push('quit') };
    const shown: { tooltip?: string; title?: string; menu?: MenuItemTemplate[]; badge?: number } = {};
    const tray = new TrayController(
      { setToolTip: (t) => (shown.tooltip = t), setTitle: (t) => (shown.title = t), setContextMenu: (m) => (shown.menu = m as MenuItemTemplate[]), on: () => {} },
      (t) => t,
      actions,
      (n) => (shown.badge = n),
      { pending: 0, paused: false, status: 'Gateway running on 127.0.0.1:7420' },
    );
    assert.equal(shown.title, '');
    assert.equal(shown.menu!.find((i) => i.label === 'No holds waiting')!.enabled, false);
    tray.update({ pending: 3 });
    assert.equal(shown.title, '3');
    assert.equal(shown.badge, 3);
    assert.match(shown.tooltip!, /3 holds waiting for you\nGateway running/);
    const labels = shown.menu!.map((i) => i.label ?? '—');
    assert.deepEqual(labels, ['Open Custody', '3 holds waiting for you', '—', 'Pause notifications', 'Gateway running on 127.0.0.1:7420', '—', 'Quit Custody']);
    shown.menu!.find((i) => i.label === 'Pause notifications')!.click!();
    shown.menu!.find((i) => i.label === 'Quit Custody')!.click!();
    tray.update({ paused: true, failed: true, status: 'Gateway stopped: port in use' });
    assert.equal(shown.menu!.find((i) => i.type === 'checkbox')!.checked, true);
    assert.match(shown.tooltip!, /notifications paused/);
    shown.menu!.find((i) => i.label === 'Restart the gateway')!.click!();
    assert.deepEqual(calls, ['paused=true', 'quit', 'retry']);
    assert.equal(trayMenuTemplate({ pending: 1, paused: false, status: 's' }, actions)[1]!.label, '1 hold waiting for you');
  });
});
