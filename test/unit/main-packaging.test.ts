import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createRequire } from 'node:module';
import { describe, it } from 'node:test';
import { parse } from 'yaml';

// electron-builder lives in desktop/ (the desktop toolchain, installed before the tests); ajv arrives
// with it (app-builder-lib validates its own config with it).
const builderLib = 'desktop/node_modules/app-builder-lib';
const require = createRequire(resolve(builderLib, 'package.json'));
const Ajv = (require('ajv') as { default: new (o: object) => { compile(schema: object): ((data: unknown) => boolean) & { errors?: { instancePath: string; message?: string }[] | null } } }).default;

const config = parse(readFileSync('electron-builder.yml', 'utf8')) as Record<string, unknown> & {
  mac: { target: string[]; icon: string; entitlements: string };
  win: { target: string[]; icon: string };
  linux: { target: string[]; icon: string };
  asarUnpack: string[];
  files: string[];
};
const validate = new Ajv({ allErrors: true, strict: false }).compile(JSON.parse(readFileSync(join(builderLib, 'scheme.json'), 'utf8')) as object);

function pngSize(file: string): { width: number; height: number } {
  const b = readFileSync(file);
  assert.equal(b.subarray(1, 4).toString('latin1'), 'PNG', `${file} is a PNG`);
  return { width: b.readUInt32BE(16), height: b.readUInt32BE(20) };
}

describe('packaging (electron-builder.yml)', () => {
  it("is valid against electron-builder's JSON schema", () => {
    const ok = validate(config);
    assert.ok(ok, JSON.stringify(validate.errors));
    // the schema is strict enough to catch a misspelt key
    assert.equal(validate({ ...config, asarUnpak: ['x'] }), false);
    assert.equal(validate({ ...config, linux: { ...config.linux, target: 5 } }), false);
  });

  it('sets the Electron fuses: no run-as-node, NODE_OPTIONS or inspector; encrypted cookies; asar integrity', () => {
    assert.deepEqual(config['electronFuses'], {
      runAsNode: false,
      enableNodeOptionsEnvironmentVariable: false,
      enableNodeCliInspectArguments: false,
      enableCookieEncryption: true,
      enableEmbeddedAsarIntegrityValidation: true,
      onlyLoadAppFromAsar: true,
      grantFileProtocolExtraPrivileges: false,
    });
    assert.equal(config['asar'], true, 'asar integrity needs an asar archive');
    // The installed app starts the gateway as a utilityProcess, which works with runAsNode off.
    assert.match(readFileSync('main/main.ts', 'utf8'), /utilityProcess\.fork\(ENTRY/);
  });

  it('builds AppImage and deb, dmg, and nsis with this app id', () => {
    assert.equal(config['appId'], 'dev.custody.desktop');
    assert.equal(config['productName'], 'Custody');
    assert.deepEqual(config.linux.target, ['AppImage', 'deb']);
    assert.deepEqual(config.mac.target, ['dmg']);
    assert.deepEqual(config.win.target, ['nsis']);
  });

  it('keeps the native SQLite module outside the asar and rebuilds it for Electron', () => {
    assert.ok(config.asarUnpack.some((p) => p.startsWith('node_modules/better-sqlite3')));
    assert.equal(config['npmRebuild'], true);
    const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as { main: string; scripts: Record<string, string>; dependencies: Record<string, string> };
    assert.ok(pkg.dependencies['better-sqlite3'], 'better-sqlite3 is a production dependency, so it is packaged');
    assert.match(pkg.scripts['dist']!, /scripts\/dist\.mjs/);
    assert.match(readFileSync('scripts/dist.mjs', 'utf8'), /'--config', 'electron-builder\.yml'/);
    assert.match(pkg.scripts['postdist']!, /npm rebuild better-sqlite3/, 'node_modules goes back to Node after packaging');
    assert.equal(pkg.main, 'dist/main/main.cjs');
    assert.ok(config.files.includes('dist/**/*'));
  });

  it('has the icons and entitlements it names', () => {
    assert.deepEqual(pngSize(config.mac.icon), { width: 512, height: 512 });
    assert.deepEqual(pngSize(config.win.icon), { width: 512, height: 512 });
    for (const s of [16, 32, 48, 64, 128, 256, 512]) assert.deepEqual(pngSize(`${config.linux.icon}/${s}x${s}.png`), { width: s, height: s });
    for (const f of ['tray.png', 'tray@2x.png', 'trayTemplate.png', 'trayTemplate@2x.png']) assert.ok(existsSync(`build/icons/${f}`), f);
    const plist = readFileSync(config.mac.entitlements, 'utf8');
    assert.match(plist, /<key>com\.apple\.security\.cs\.allow-jit<\/key>\s*<true\/>/);
    assert.ok(existsSync('build/icon.svg'));
  });
});
