/**
 * Loads the YAML config, validates it against the schema in shared/config.ts, and reports every
 * problem with the file, line and field, e.g.
 *   custody.yaml:12: connections[0].upstream: an HTTP upstream is a URL such as https://api.openai.com/v1
 */
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, isAbsolute, join, resolve, sep } from 'node:path';
import { LineCounter, parseDocument, type Node as YamlNode } from 'yaml';
import { type Config, type ConfigIssue, formatIssuePath, type SecretSource, validateConfig } from '../shared/config';
import { yamlLineOf } from '../shared/yaml-lines';

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

export interface LoadedConfig {
  config: Config;
  /** The file it came from; undefined for the embedded default. */
  file?: string;
  dataDir: string;
}

/** The per-user app-data folder: ~/.config/Custody, ~/Library/Application Support/Custody, %APPDATA%\Custody. */
export function defaultDataDir(): string {
  if (process.env['CUSTODY_DATA_DIR']) return process.env['CUSTODY_DATA_DIR'];
  if (process.platform === 'darwin') return join(homedir(), 'Library', 'Application Support', 'Custody');
  if (process.platform === 'win32') return join(process.env['APPDATA'] ?? join(homedir(), 'AppData', 'Roaming'), 'Custody');
  return join(process.env['XDG_CONFIG_HOME'] ?? join(homedir(), '.config'), 'Custody');
}

/**
 * Checks beyond the schema that need the gateway's parts (e.g. detector ids known to the masking
 * engine). They see the raw document, so their findings come in the same pass as schema errors.
 */
export type ConfigCheck = (raw: Record<string, unknown>) => ConfigIssue[];

/** Parses and validates YAML text; `file` is used in messages only. */
export function parseConfig(text: string, file = 'config', checks: readonly ConfigCheck[] = []): Config {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length) {
    // Every syntax error at once, each at its own line and column (the parser gives offsets).
    const messages = doc.errors.map((e) => {
      const at = lines.linePos(e.pos[0]);
      return `${file}:${at.line}:${at.col}: invalid YAML: ${e.message.split('\n')[0]}`;
    });
    throw new ConfigError(messages.join('\n'));
  }
  const value = doc.toJS() ?? {};
  if (typeof value !== 'object' || Array.isArray(value)) throw new ConfigError(`${file}:1: the config must be a mapping of keys (dataDir, listen, connections, ...)`);
  const r = validateConfig(value);
  const issues = r.ok ? [] : [...r.issues];
  // A check that repeats a schema finding at the same field adds nothing.
  const seen = new Set(issues.map((i) => formatIssuePath(i.path)));
  for (const check of checks) for (const i of check(value as Record<string, unknown>)) if (!seen.has(formatIssuePath(i.path))) issues.push(i);
  if (r.ok && issues.length === 0) return r.config;
  const messages = issues
    .map((issue) => ({ issue, line: yamlLineOf(doc.contents as YamlNode | null, issue.path, lines) }))
    .sort((a, b) => a.line - b.line)
    .map(({ issue, line }) => `${file}:${line}: ${formatIssuePath(issue.path) || '(top level)'}: ${issue.message}`);
  throw new ConfigError(messages.join('\n'));
}

export function loadConfigFile(file: string, checks: readonly ConfigCheck[] = []): Config {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigError(`${file}: cannot read config (${code === 'ENOENT' ? 'no such file' : code ?? String(err)})`);
  }
  return parseConfig(text, file, checks);
}

export interface ResolvedConfig extends LoadedConfig {
  /** The config files tried, in order. */
  lookedAt: string[];
  /** The data dir came from --data-dir. */
  dataDirFromFlag: boolean;
}

/** Where a command looks for its config when `--config` is not given, in order. */
export function configCandidates(env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): string[] {
  return [...(env['CUSTODY_CONFIG'] ? [resolve(env['CUSTODY_CONFIG'])] : []), join(cwd, 'custody.yaml')];
}

/**
 * Resolves the config and data dir for a command: `--config FILE`, then `$CUSTODY_CONFIG`, then
 * `./custody.yaml`, then the embedded default. A config's `dataDir` is relative to its file, and
 * `--data-dir DIR` overrides it. `lookedAt` lists the files tried, for messages that help a person
 * who ran the command from the wrong folder.
 */
export function resolveConfig(opts: { config?: string; dataDir?: string; checks?: readonly ConfigCheck[] }): ResolvedConfig {
  const candidates = opts.config ? [resolve(opts.config)] : configCandidates();
  // An explicit --config or $CUSTODY_CONFIG must exist; ./custody.yaml is used only when it does.
  const file = opts.config || process.env['CUSTODY_CONFIG'] ? candidates[0] : candidates.find((f) => existsSync(f));
  const config = file ? loadConfigFile(file, opts.checks) : parseConfig('', 'embedded default', opts.checks);
  let dataDir = opts.dataDir ? resolve(opts.dataDir) : config.dataDir;
  if (dataDir && file && !isAbsolute(dataDir)) dataDir = resolve(dirname(file), dataDir);
  return { config, file, dataDir: dataDir ?? defaultDataDir(), lookedAt: candidates, dataDirFromFlag: !!opts.dataDir };
}

/** Reads a connection secret from its source. Throws a ConfigError naming the connection. */
export function readSecret(source: { env: string } | { value: string } | { file: string } | undefined, what: string): string | undefined {
  if (!source) return undefined;
  if ('value' in source) return source.value;
  if ('env' in source) {
    const v = process.env[source.env];
    if (v === undefined) throw new ConfigError(`${what}: environment variable ${source.env} is not set`);
    return v;
  }
  try {
    return readFileSync(source.file, 'utf8').trim();
  } catch (err) {
    throw new ConfigError(`${what}: cannot read secret file ${source.file} (${(err as NodeJS.ErrnoException).code ?? err})`);
  }
}

/**
 * The message for a command that found no audit store where its config led it: where it looked, and
 * how to point it at the gateway's store.
 */
export function noStoreMessage(resolved: ResolvedConfig): string {
  const how = resolved.dataDirFromFlag
    ? 'given by --data-dir'
    : resolved.file
      ? `chosen by config ${resolved.file}`
      : `the embedded default's, as no config was found (looked for ${resolved.lookedAt.join(', ')})`;
  return `${resolved.dataDir} has no audit store (custody.db); that data dir is ${how}. Pass --config FILE (the file custody serve used) or --data-dir DIR.`;
}

/**
 * Secret files are read only from the data dir's `secrets/` folder or the paths `secretFiles`
 * lists (symbolic links resolved), so a config that names any readable file cannot send it
 * upstream as a credential. Throws a ConfigError naming the first offending reference.
 */
export function checkSecretFiles(config: Config, dataDir: string): void {
  const real = (p: string) => {
    try {
      return realpathSync(p);
    } catch {
      return resolve(p);
    }
  };
  const folder = real(resolve(dataDir, 'secrets')) + sep;
  const listed = new Set(config.secretFiles.map(real));
  const check = (source: SecretSource | undefined, what: string) => {
    if (!source || !('file' in source)) return;
    const path = real(source.file);
    if (!path.startsWith(folder) && !listed.has(path)) throw new ConfigError(`${what}: secret file ${source.file} is outside ${folder} and not listed in secretFiles`);
  };
  for (const c of config.connections) check(c.secret, `connection ${c.name}`);
  for (const i of config.identity.oidc) check(i.clientSecret, `identity.oidc ${i.issuer} clientSecret`);
  check(config.store?.secret, 'store.secret');
  const s3 = config.audit.archive?.s3.credentials;
  if (s3) for (const [k, v] of Object.entries(s3)) check(v, `audit.archive.s3.credentials.${k}`);
}
