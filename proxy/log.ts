/** A small leveled logger writing one line per message to stderr; quiet in tests unless CUSTODY_LOG is set. */
export interface Logger {
  info(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
  debug(msg: string): void;
}

export function createLogger(level: 'debug' | 'info' | 'warn' | 'error' | 'silent' = (process.env['CUSTODY_LOG'] as 'info') ?? 'info'): Logger {
  const order = ['debug', 'info', 'warn', 'error', 'silent'];
  const min = order.indexOf(level);
  const at = (l: string) => (msg: string) => {
    if (order.indexOf(l) >= min) process.stderr.write(`${new Date().toISOString()} ${l.padEnd(5)} ${msg}\n`);
  };
  return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

export const silentLogger: Logger = { info() {}, warn() {}, error() {}, debug() {} };
