/**
 * The gateway process of the desktop app. Electron's main process starts this bundle
 * (dist/proxy/entry.mjs) in a `utilityProcess`; tests start it with `child_process.fork`; it also
 * runs standalone, printing its reports as JSON lines on stdout.
 *
 * Arguments: `--config FILE`, `--data-dir DIR` (or `CUSTODY_CONFIG`, `CUSTODY_DATA_DIR`), and
 * `--sealed-secrets` when the parent hands over the vault key (see proxy/secret-wrapper.ts) before
 * the gateway may start.
 *
 * Reports to the parent and commands from it are typed in shared/gateway-process.ts. SIGTERM and
 * SIGINT stop too.
 * Channel: `process.parentPort` (utilityProcess), else `process.send` (fork), else stdout.
 */
import { parseArgs } from 'node:util';
import type { GatewayCommand, GatewayReport } from '../shared/gateway-process';
import { resolveConfig } from './config';
import { maskingConfigIssues } from './masking/engine';
import { Gateway } from './gateway';
import { createLogger } from './log';
import { plainSecrets, type SecretWrapper, vaultSecrets } from './secret-wrapper';

interface ParentPortLike {
  on(event: 'message', listener: (e: { data: unknown }) => void): void;
  postMessage(message: unknown): void;
}

const VAULT_KEY_WAIT_MS = 15_000;

function channel(): { send(r: GatewayReport): void; onCommand(fn: (c: GatewayCommand) => void): void } {
  const port = (process as unknown as { parentPort?: ParentPortLike }).parentPort;
  if (port) {
    return { send: (r) => port.postMessage(r), onCommand: (fn) => port.on('message', (e) => fn(e.data as GatewayCommand)) };
  }
  if (process.send) {
    const send = process.send.bind(process);
    return { send: (r) => void send(r), onCommand: (fn) => process.on('message', (m) => fn(m as GatewayCommand)) };
  }
  return { send: (r) => void process.stdout.write(`${JSON.stringify(r)}\n`), onCommand: () => {} };
}

/** Splits `http://host:port/login?token=T` into its origin-relative parts. */
export function tokenFromLoginUrl(loginUrl: string | undefined): string | null {
  if (!loginUrl) return null;
  try {
    return new URL(loginUrl).searchParams.get('token');
  } catch {
    return null;
  }
}

async function run(): Promise<void> {
  const { values } = parseArgs({
    options: { config: { type: 'string' }, 'data-dir': { type: 'string' }, 'sealed-secrets': { type: 'boolean' } },
    allowPositionals: false,
    strict: true,
  });
  const io = channel();
  const log = createLogger();
  let gateway: Gateway | undefined;
  let stopping = false;
  let vaultKey: ((key: string) => void) | undefined;

  const stop = async (why: string) => {
    if (stopping) return;
    stopping = true;
    log.info(`gateway stopping (${why})`);
    await gateway?.stop().catch((err: unknown) => log.error(`stop failed: ${String(err)}`));
    io.send({ type: 'stopped' });
    // Give the report a moment to cross the channel before the process goes away.
    setTimeout(() => process.exit(0), 50);
  };
  io.onCommand((cmd) => {
    if (cmd?.type === 'stop') void stop('stop requested');
    else if (cmd?.type === 'vault-key' && typeof cmd.key === 'string') vaultKey?.(cmd.key);
    // Each login link works once: the desktop app asks for one each time it signs in.
    else if (cmd?.type === 'login-link' && typeof cmd.id === 'number') io.send({ type: 'login-link', id: cmd.id, url: gateway && !stopping ? gateway.loginLink() : null });
  });
  process.once('SIGTERM', () => void stop('SIGTERM'));
  process.once('SIGINT', () => void stop('SIGINT'));

  try {
    const { config, file, dataDir } = resolveConfig({
      config: values.config ?? process.env['CUSTODY_CONFIG'],
      dataDir: values['data-dir'] ?? process.env['CUSTODY_DATA_DIR'],
      checks: [maskingConfigIssues],
    });
    let secrets: SecretWrapper = plainSecrets;
    if (values['sealed-secrets']) {
      const key = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no vault key from the desktop app within ${VAULT_KEY_WAIT_MS / 1000}s; refusing to start with unprotected secrets`)), VAULT_KEY_WAIT_MS);
        vaultKey = (k) => {
          clearTimeout(timer);
          resolve(k);
        };
      });
      secrets = vaultSecrets(Buffer.from(key, 'base64'));
    }
    if (stopping) return;
    gateway = await Gateway.start({ config, dataDir, configFile: file, log, secrets });
    if (stopping) {
      await gateway.stop();
      return;
    }
    const control = gateway.address('control');
    const loginUrl = (gateway as { loginLink?: () => string }).loginLink?.() ?? null;
    io.send({
      type: 'ready',
      pid: process.pid,
      version: gateway.services.version,
      controlUrl: `http://${control}`,
      loginUrl,
      loginToken: tokenFromLoginUrl(loginUrl ?? undefined),
      listeners: gateway.listeners.map((l) => ({ name: l.name, address: l.address })),
      firstKey: gateway.firstKey ?? null,
      secrets: secrets.kind,
    });
    log.info(`gateway ready: control plane http://${control}/ (data in ${dataDir})`);
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    log.error(`gateway could not start: ${message}`);
    io.send({ type: 'error', message });
    setTimeout(() => process.exit(1), 50);
  }
}

await run();
