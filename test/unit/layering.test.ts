import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ESLint } from 'eslint';

// The import boundaries from DESIGN.md (Folders), checked through the project's own ESLint config.
const eslint = new ESLint({ cwd: process.cwd() });

async function errorsFor(path: string, code: string): Promise<string[]> {
  const [result] = await eslint.lintText(code, { filePath: path });
  return result!.messages.filter((m) => m.ruleId === 'no-restricted-imports' || m.ruleId === 'no-restricted-globals').map((m) => m.message);
}

describe('layering lint rule', () => {
  it('keeps shared/ free of Node, Electron and other layers', async () => {
    assert.equal((await errorsFor('shared/x.ts', "import { readFileSync } from 'node:fs';\nexport const a = readFileSync;\n")).length, 1);
    assert.equal((await errorsFor('shared/x.ts', "import { join } from 'path';\nexport const a = join;\n")).length, 1);
    assert.equal((await errorsFor('shared/x.ts', "import { Gateway } from '../proxy/gateway';\nexport const a = Gateway;\n")).length, 1);
    assert.equal((await errorsFor('shared/x.ts', 'export const a = process.env;\n')).length, 1);
    assert.deepEqual(await errorsFor('shared/x.ts', "import { canonicalize } from './canonical-json';\nexport const a = canonicalize;\n"), []);
  });

  it('keeps Electron out of proxy/', async () => {
    assert.equal((await errorsFor('proxy/x.ts', "import { app } from 'electron';\nexport const a = app;\n")).length, 1);
    assert.deepEqual(await errorsFor('proxy/x.ts', "import { createServer } from 'node:http';\nexport const a = createServer;\n"), []);
  });

  it('keeps Node and the gateway out of renderer/', async () => {
    assert.equal((await errorsFor('renderer/x.ts', "import { readFileSync } from 'node:fs';\nexport const a = readFileSync;\n")).length, 1);
    assert.equal((await errorsFor('renderer/x.ts', "import { Gateway } from '../proxy/gateway';\nexport const a = Gateway;\n")).length, 1);
    assert.deepEqual(await errorsFor('renderer/x.ts', "import type { HoldView } from '../shared/holds';\nexport type A = HoldView;\n"), []);
  });

  it('lets main/ import only the proxy entry', async () => {
    assert.equal((await errorsFor('main/x.ts', "import { AuditStore } from '../proxy/audit/store';\nexport const a = AuditStore;\n")).length, 1);
    assert.deepEqual(await errorsFor('main/x.ts', "import { startGateway } from '../proxy/entry';\nexport const a = startGateway;\n"), []);
  });

  it('keeps the floors inside proxy/: core services below the adapters, the adapters below the control plane and the gateway', async () => {
    assert.equal((await errorsFor('proxy/masking/x.ts', "import { Exchange } from '../http/exchange';\nexport const a = Exchange;\n")).length, 1);
    assert.equal((await errorsFor('proxy/audit/x.ts', "import { PgProxySession } from '../postgres/session';\nexport const a = PgProxySession;\n")).length, 1);
    assert.equal((await errorsFor('proxy/policy/x.ts', "import { startControlPlane } from '../control/server';\nexport const a = startControlPlane;\n")).length, 1);
    assert.equal((await errorsFor('proxy/http/x.ts', "import { startControlPlane } from '../control/server';\nexport const a = startControlPlane;\n")).length, 1);
    assert.equal((await errorsFor('proxy/postgres/x.ts', "import { Gateway } from '../gateway';\nexport const a = Gateway;\n")).length, 1);
    assert.equal((await errorsFor('proxy/bus.ts', "import { Exchange } from './http/exchange';\nexport const a = Exchange;\n")).length, 1);
    // Downward is fine.
    assert.deepEqual(await errorsFor('proxy/http/x.ts', "import { canonicalPayload } from '../audit/chain';\nexport const a = canonicalPayload;\n"), []);
    assert.deepEqual(await errorsFor('proxy/control/x.ts', "import { Exchange } from '../http/exchange';\nexport const a = Exchange;\n"), []);
  });
});
