/**
 * `custody ssh-login`: a short-lived SSH key for the person behind an OIDC token (or an API key).
 *
 *   custody ssh-login --token-file ~/.cache/idp-token [--ttl 8h] [--out ~/.ssh/custody_ed25519]
 *   custody ssh-login --issuer https://idp.example.com --client-id custody-cli [--resource URI] …
 *
 * With `--issuer`, it signs in through the system browser first (RFC 8252: authorization code with
 * PKCE and a loopback redirect, proxy/identity/native-login.ts, as the desktop app does): it prints
 * the sign-in URL (and opens it with `$BROWSER` when that is set) and uses the access token it gets.
 *
 * Makes an Ed25519 key pair here (or takes the public half of `--key FILE`), registers the public
 * key with the gateway's control plane as the token's person (`POST /api/ssh-keys`, the token as
 * the Bearer credential, so the gateway verifies it against the issuer like any other), with an
 * expiry of `--ttl`; only then writes the private key (mode 0600) and prints the `ssh` command for
 * each ssh connection. The gateway refuses the key once the TTL has passed. The private key never
 * leaves this machine.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { homedir, hostname, userInfo } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import type { SshKeyList, SshKeyView } from '../../shared/api';
import { parseDuration } from '../../shared/config';
import { resolveConfig } from '../config';
import { signInWithBrowser } from '../identity/native-login';
import { generateEd25519 } from '../ssh/keygen';
import { type Io, type ParsedArgs, rejectUnknown, str, UsageError } from './args';

/** How long an ssh-login key logs in unless --ttl says otherwise. */
export const SSH_LOGIN_DEFAULT_TTL = '8h';

/** The token to register with: signed in through the browser (`--issuer`), or given. */
async function obtainToken(args: ParsedArgs, io: Io): Promise<string> {
  const issuer = str(args, 'issuer');
  if (issuer === undefined) {
    for (const o of ['client-id', 'resource', 'scope', 'redirect-path']) if (str(args, o) !== undefined) throw new UsageError(`--${o} goes with --issuer (a browser sign-in)`);
    return readToken(args);
  }
  if (str(args, 'token') !== undefined || str(args, 'token-file') !== undefined) throw new UsageError('give --issuer (sign in through the browser) or a token, not both');
  const clientId = str(args, 'client-id');
  if (!clientId) throw new UsageError('--issuer needs --client-id: a public native client registered with the IdP (redirect URI http://127.0.0.1/callback, any port)');
  const resource = str(args, 'resource');
  const tokens = await signInWithBrowser({
    issuer,
    clientId,
    ...(resource ? { resource } : {}),
    scope: str(args, 'scope') ?? 'openid profile email',
    redirectPath: str(args, 'redirect-path') ?? '/callback',
    openBrowser: (url) => {
      io.err(`Sign in to your identity provider in a browser: ${url}\n`);
      const browser = process.env['BROWSER'];
      if (browser) spawn(browser, [url], { stdio: 'ignore', detached: true }).on('error', () => {}).unref();
    },
  });
  return tokens.accessToken;
}

function readToken(args: ParsedArgs): string {
  const file = str(args, 'token-file');
  if (file !== undefined && str(args, 'token') !== undefined) throw new UsageError('give --token or --token-file, not both');
  let token = str(args, 'token') ?? process.env['CUSTODY_TOKEN'];
  if (file !== undefined) {
    try {
      token = readFileSync(file === '-' ? 0 : file, 'utf8');
    } catch (err) {
      throw new UsageError(`cannot read --token-file ${file}: ${(err as Error).message}`);
    }
  }
  token = token?.trim();
  if (!token) throw new UsageError('needs your OIDC token (ID or access token from your IdP) or Custody API key: --token-file FILE (- for stdin), $CUSTODY_TOKEN or --token');
  return token;
}

function gatewayUrl(args: ParsedArgs): string {
  const given = str(args, 'gateway') ?? process.env['CUSTODY_GATEWAY'];
  if (given) {
    let url: URL;
    try {
      url = new URL(given.includes('://') ? given : `http://${given}`);
    } catch {
      throw new UsageError(`--gateway: not a URL: ${given}`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new UsageError(`--gateway: expected http(s)://host:port of the console, got ${given}`);
    return url.origin;
  }
  const { config } = resolveConfig({ config: str(args, 'config') });
  return `http://${config.listen.control.replace(/^0\.0\.0\.0:/, '127.0.0.1:').replace(/^\[::\]:/, '[::1]:')}`;
}

async function api<T>(gateway: string, token: string, method: string, path: string, body?: unknown): Promise<T> {
  let res: Response;
  try {
    res = await fetch(`${gateway}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(30_000),
    });
  } catch (err) {
    throw new Error(`cannot reach the gateway at ${gateway}: ${(err as Error).cause instanceof Error ? ((err as Error).cause as Error).message : (err as Error).message}`);
  }
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  if (!res.ok) {
    const message = (json as { error?: { message?: string } } | undefined)?.error?.message ?? `HTTP ${res.status}`;
    throw new Error(`the gateway refused: ${message} (${res.status})`);
  }
  return json as T;
}

/** Writes `text` to `file` with mode 0600, replacing it whole (a new file renamed over the old). */
function writePrivate(file: string, text: string): void {
  const tmp = join(dirname(file), `.${randomBytes(6).toString('hex')}.tmp`);
  try {
    writeFileSync(tmp, text, { mode: 0o600, flag: 'wx' });
    renameSync(tmp, file);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw new Error(`cannot write the private key to ${file}: ${(err as Error).message}`);
  }
}

export async function sshLoginCommand(args: ParsedArgs, io: Io): Promise<number> {
  rejectUnknown(args, ['config', 'gateway', 'token', 'token-file', 'issuer', 'client-id', 'resource', 'scope', 'redirect-path', 'ttl', 'key', 'out', 'connection', 'user', 'json']);
  if (args.positionals.length > 1) throw new UsageError(`unexpected argument ${args.positionals[1]}`);
  const ttl = str(args, 'ttl') ?? SSH_LOGIN_DEFAULT_TTL;
  try {
    parseDuration(ttl);
  } catch (err) {
    throw new UsageError(`--ttl: ${(err as Error).message}`);
  }
  const keyFile = str(args, 'key');
  if (keyFile !== undefined && str(args, 'out') !== undefined) throw new UsageError('--out is where a new key is written; with --key your own key is registered and nothing is written');
  const gateway = gatewayUrl(args);
  const token = await obtainToken(args, io);

  let publicKey: string;
  let privateKey: string | undefined;
  let identityFile: string;
  if (keyFile !== undefined) {
    const pub = keyFile.endsWith('.pub') ? keyFile : `${keyFile}.pub`;
    try {
      publicKey = readFileSync(pub, 'utf8');
    } catch (err) {
      throw new UsageError(`--key: cannot read ${pub}: ${(err as Error).message}`);
    }
    identityFile = resolve(pub.slice(0, -4));
  } else {
    const pair = generateEd25519(`custody-ssh-login ${userInfo().username}@${hostname()}`);
    publicKey = pair.public;
    privateKey = pair.private;
    identityFile = resolve(str(args, 'out') ?? join(homedir(), '.ssh', 'custody_ed25519'));
    // Where the key goes must exist before the gateway registers it.
    try {
      mkdirSync(dirname(identityFile), { recursive: true, mode: 0o700 });
    } catch (err) {
      throw new UsageError(`--out: cannot create ${dirname(identityFile)}: ${(err as Error).message}`);
    }
  }

  // Registered first: a refused token leaves no key behind.
  const added = await api<SshKeyView>(gateway, token, 'POST', '/api/ssh-keys', { publicKey, expires: ttl });
  if (privateKey !== undefined) {
    writePrivate(identityFile, privateKey);
    writeFileSync(`${identityFile}.pub`, `${publicKey.trim()}\n`, { mode: 0o644 });
  }
  const { listeners } = await api<SshKeyList>(gateway, token, 'GET', '/api/ssh-keys');
  const only = str(args, 'connection');
  const chosen = only ? listeners.filter((l) => l.connection === only) : listeners;
  if (only && !chosen.length) io.err(`custody ssh-login: the gateway has no ssh connection "${only}" (it has: ${listeners.map((l) => l.connection).join(', ') || 'none'})\n`);
  const user = str(args, 'user') ?? userInfo().username;
  const gatewayHost = new URL(gateway).hostname;
  const commands = chosen.map((l) => {
    const i = l.address.lastIndexOf(':');
    const host = l.address.slice(0, i).replace(/^0\.0\.0\.0$|^\[::\]$/, gatewayHost);
    return { connection: l.connection, command: `ssh -i ${identityFile} -p ${l.address.slice(i + 1)} ${user}@${host}` };
  });
  if (args.flags['json']) io.out(`${JSON.stringify({ ...added, identityFile, commands })}\n`);
  else {
    for (const c of commands) io.out(`${c.command}\n`);
    io.err(
      `Registered ${added.algo} key ${added.fingerprint} for ${added.personName ?? added.person ?? 'you'}; it logs in until ${added.expiresAt ? new Date(added.expiresAt).toISOString() : 'its API key ends'}` +
        `${privateKey !== undefined ? `. Private key: ${identityFile} (mode 0600)` : ''}.\n`,
    );
  }
  return only && !chosen.length ? 1 : 0;
}
