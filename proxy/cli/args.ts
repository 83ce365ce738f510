/** Command-line parsing shared by the subcommands: positionals and `--flag value` / `--flag=value` / `--switch`. */
export class UsageError extends Error {}

export interface ParsedArgs {
  positionals: string[];
  flags: Record<string, string | true>;
  /** Flags given without the value they need; reported by rejectUnknown after unknown flags, so a typo reads as one. */
  missingValue?: string[];
  /** Every value of each flag, in order, for flags that may repeat (`--log-key A --log-key B`). */
  all?: Record<string, string[]>;
}

export function parseArgs(argv: string[], switches: string[] = []): ParsedArgs {
  const positionals: string[] = [];
  const flags: Record<string, string | true> = {};
  const missingValue: string[] = [];
  const all: Record<string, string[]> = {};
  const record = (name: string, value: string) => {
    flags[name] = value;
    (all[name] ??= []).push(value);
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      const name = eq > 0 ? a.slice(2, eq) : a.slice(2);
      if (eq > 0) record(name, a.slice(eq + 1));
      else if (switches.includes(name)) flags[name] = true;
      else {
        const v = argv[i + 1];
        if (v === undefined || v.startsWith('--')) {
          flags[name] = true;
          missingValue.push(name);
          continue;
        }
        record(name, v);
        i++;
      }
    } else positionals.push(a);
  }
  return { positionals, flags, missingValue, all };
}

export function str(args: ParsedArgs, name: string): string | undefined {
  const v = args.flags[name];
  return typeof v === 'string' ? v : undefined;
}

/** Every value given for a repeatable flag. */
export function strs(args: ParsedArgs, name: string): string[] {
  return args.all?.[name] ?? [];
}

export function rejectUnknown(args: ParsedArgs, known: string[]): void {
  for (const k of Object.keys(args.flags)) if (!known.includes(k)) throw new UsageError(`unknown option --${k}`);
  for (const k of args.missingValue ?? []) throw new UsageError(`--${k} needs a value`);
}

/** Output streams, injectable for tests. */
export interface Io {
  out: (text: string) => void;
  err: (text: string) => void;
}

export const processIo: Io = {
  out: (t) => process.stdout.write(t),
  err: (t) => process.stderr.write(t),
};
