/**
 * Loads the YAML config, validates it against the schema in shared/config.ts, and reports every
 * problem with the file, line and field, e.g.
 *   custody.yaml:12: connections[0].upstream: an HTTP upstream is a URL such as https://api.openai.com/v1
 */
import { readFileSync, realpathSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, isAbsolute, join, resolve, sep } from 'node:path';
import { LineCounter, parseDocument, type Node as YamlNode } from 'yaml';
import { type Config, formatIssuePath, type SecretSource, validateConfig } from '../shared/config';
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

/** Parses and validates YAML text; `file` is used in messages only. */
export function parseConfig(text: string, file = 'config'): Config {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length) {
    const e = doc.errors[0]!;
    const line = e.linePos?.[0]?.line ?? 1;
    throw new ConfigError(`${file}:${line}: invalid YAML: ${e.message.split('\n')[0]}`);
  }
  const value = doc.toJS() ?? {};
  if (typeof value !== 'object' || Array.isArray(value)) throw new ConfigError(`${file}:1: the config must be a mapping of keys (dataDir, listen, connections, ...)`);
  const r = validateConfig(value);
  if (r.ok) return r.config;
  const messages = r.issues.map((issue) => {
    const line = yamlLineOf(doc.contents as YamlNode | null, issue.path, lines);
    const field = formatIssuePath(issue.path) || '(top level)';
    return `${file}:${line}: ${field}: ${issue.message}`;
  });
  throw new ConfigError(messages.join('\n'));
}

export function loadConfigFile(file: string): Config {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigError(`${file}: cannot read config (${code === 'ENOENT' ? 'no such file' : code ?? String(err)})`);
  }
  return parseConfig(text, file);
}

/**
 * Resolves the config and data dir for a CLI command: `--config FILE` (its `dataDir` relative to
 * the file), then `--data-dir DIR` overrides the data dir; with neither, the embedded default.
 */
export function resolveConfig(opts: { config?: string; dataDir?: string }): LoadedConfig {
  const file = opts.config ? resolve(opts.config) : undefined;
  const config = file ? loadConfigFile(file) : parseConfig('', 'embedded default');
  let dataDir = opts.dataDir ? resolve(opts.dataDir) : config.dataDir;
  if (dataDir && file && !isAbsolute(dataDir)) dataDir = resolve(dirname(file), dataDir);
  return { config, file, dataDir: dataDir ?? defaultDataDir() };
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
}
