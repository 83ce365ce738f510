import { resolveConfig } from '../config';
import { Gateway } from '../gateway';
import { createLogger } from '../log';
import { maskingConfigIssues } from '../masking/engine';
import { type Io, type ParsedArgs, rejectUnknown, str } from './args';

/** `custody serve [--config FILE] [--data-dir DIR]`: runs the gateway until SIGINT/SIGTERM. */
export async function serveCommand(args: ParsedArgs, io: Io): Promise<number> {
  rejectUnknown(args, ['config', 'data-dir']);
  const { config, file, dataDir } = resolveConfig({ config: str(args, 'config'), dataDir: str(args, 'data-dir'), checks: [maskingConfigIssues] });
  const log = createLogger();
  const gw = await Gateway.start({ config, dataDir, configFile: file, log });
  // Signals are handled before anything is printed: a supervisor may stop the gateway the moment
  // it reads the ready lines.
  const stopped = new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      io.err(`${signal}: draining in-flight requests and stopping…\n`);
      process.off('SIGINT', onInt);
      process.off('SIGTERM', onTerm);
      gw.stop().then(resolve, (err: unknown) => {
        log.error(`stop failed: ${String(err)}`);
        resolve();
      });
    };
    const onInt = () => stop('SIGINT');
    const onTerm = () => stop('SIGTERM');
    process.on('SIGINT', onInt);
    process.on('SIGTERM', onTerm);
  });
  const control = gw.address('control');
  const http = gw.listeners.find((l) => l.name === 'http')?.address;
  io.err(`Custody ${gw.services.version} — ${file ? `config ${file}` : 'embedded default config'}, data in ${dataDir}\n`);
  for (const l of gw.listeners) io.err(`  ${l.name.padEnd(10)} ${l.name === 'control' ? `http://${l.address}/` : l.address}\n`);
  if (gw.firstKey) {
    const openai = config.connections.find((c) => c.kind === 'openai');
    const conn = openai?.name ?? 'openai';
    io.err(
      `\nFirst start: created an admin API key for the local user. It is shown only once:\n\n  ${gw.firstKey}\n\n` +
        `Point the OpenAI SDK at the gateway:\n\n` +
        `  import OpenAI from 'openai';\n` +
        `  const client = new OpenAI({ baseURL: 'http://${http ?? '127.0.0.1:7421'}/${conn}', apiKey: '${gw.firstKey}' });\n\n` +
        (openai ? '' : `(There is no openai connection yet: add one under connections: in a config file, or in the console's Connections page.)\n\n`),
    );
  }
  const loginLink = (gw as { loginLink?: () => string }).loginLink?.();
  if (loginLink) io.err(`Console: ${loginLink}\n`);
  else io.err(`Console: http://${control}/\n`);

  await stopped;
  io.err('stopped\n');
  return 0;
}
