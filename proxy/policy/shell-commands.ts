/**
 * What an SSH `exec` request will run, read with a real shell grammar: mvdan/sh's parser (the one
 * shfmt uses), as the `mvdan-sh` package. docs/SSH.md says why this parser and not another.
 *
 * `parseExec` returns every simple command of the text — in pipelines, lists, subshells, blocks,
 * loops, functions, command substitutions and `find -exec` — with wrappers (`sudo`, `env`,
 * `xargs`, `nice`, `timeout`, …) unwrapped, the command name reduced to its base name, and short
 * options normalised (`-rf`, `-fr` and `-r -f` are all `-f -r`). What the gateway cannot know is
 * listed in `unknown`: an expansion or a glob in command position, command or process
 * substitution, an interpreter given code (`sh -c`, `bash`, `python`, `eval`, `source`, …, so also
 * a script fed on stdin), text that does not parse. Policies treat `unknown` as risky.
 *
 * File transfers that run as commands (`scp -t`/`-f`, `rsync --server`, `tar x`) are recognised
 * too, with the paths they write.
 */
import sh, { type ShNode, type ShWord } from 'mvdan-sh';

const { syntax } = sh;

/** One simple command as the policy sees it. */
export interface SimpleCommand {
  /** Command name (base name) and arguments, short options normalised; expansions kept as written. */
  argv: string[];
  /** Wrappers that were unwrapped to reach it (`sudo`, `env`, …). */
  wrappers: string[];
}

/** A file transfer carried by a command. */
export interface CommandTransfer {
  tool: 'scp' | 'rsync' | 'tar';
  direction: 'upload' | 'download';
  /** Where it writes (upload) or reads (download), as written (relative to the login directory when not absolute). */
  paths: string[];
}

export interface ParsedExec {
  commands: SimpleCommand[];
  /** Why the gateway cannot know everything this runs; empty when it can. */
  unknown: string[];
  transfers: CommandTransfer[];
  /** Output redirections to files (`> path`, `>> path`), as written. */
  writes: string[];
}

/** Programs that run code given to them as an argument, a file or on stdin. */
const INTERPRETERS = new Set([
  'sh', 'bash', 'dash', 'zsh', 'ksh', 'mksh', 'csh', 'tcsh', 'fish', 'ash', 'busybox',
  'python', 'python2', 'python3', 'node', 'nodejs', 'deno', 'bun', 'perl', 'ruby', 'php', 'lua', 'luajit', 'tclsh', 'wish', 'Rscript', 'osascript', 'pwsh', 'awk', 'gawk', 'mawk', 'nawk', 'sed', 'jq',
  'eval', 'source', '.', 'watch', 'script', 'expect', 'su', 'ssh', 'parallel', 'at', 'batch', 'crontab',
]);

/**
 * Programs that only become interpreters with certain options. `awk`, `sed` and `jq` run programs
 * too, but their programs cannot start other processes except through these options.
 */
const INTERPRETER_EXCEPT: Record<string, (args: string[]) => boolean> = {
  // awk runs commands with system() and pipes in its program: any program is code.
  awk: () => false,
  gawk: () => false,
  mawk: () => false,
  nawk: () => false,
  // sed's `e` command and `w` flag run or write; treat scripts with them as code (best read: any script).
  sed: (args) => !args.some((a) => /(^|[;\s}])e\b|\/w\s|^w\s/.test(a)),
  jq: () => true,
  // `su` without -c starts a shell; with -c it runs one.
  su: () => false,
  // `ssh host cmd` runs a command elsewhere.
  ssh: () => false,
};

/**
 * Wrappers that change who runs the command: listed as commands of their own (with their options,
 * `sudo -u postgres`), so an allow-list has to allow them too. The others are transparent.
 */
const PRIVILEGE_WRAPPERS = new Set(['sudo', 'doas', 'runuser', 'chroot', 'su']);

/** Wrappers whose command is their first operand after their own options. */
interface WrapperSpec {
  /** Options that take a value as the next word. */
  withValue: Set<string>;
  /** Leading operands before the command (timeout's duration, chroot's directory). */
  operands?: number;
  /** Options that mean the wrapper runs a shell or reads code (`sudo -s`, `env -S`). */
  shell?: Set<string>;
  /** Words like NAME=value are assignments, skipped (env). */
  assignments?: boolean;
}

const WRAPPERS: Record<string, WrapperSpec> = {
  sudo: { withValue: new Set(['-u', '-g', '-h', '-p', '-C', '-D', '-r', '-t', '-U', '-T', '-R', '--user', '--group', '--host', '--prompt', '--close-from', '--chdir', '--role', '--type', '--other-user', '--command-timeout', '--chroot']), shell: new Set(['-s', '-i', '--shell', '--login', '-e', '--edit']), assignments: true },
  doas: { withValue: new Set(['-u', '-C']), shell: new Set(['-s']) },
  env: { withValue: new Set(['-u', '--unset', '-C', '--chdir', '--split-string', '-S']), shell: new Set(['-S', '--split-string']), assignments: true },
  nice: { withValue: new Set(['-n', '--adjustment']) },
  ionice: { withValue: new Set(['-c', '-n', '-p', '-P', '-u', '--class', '--classdata']) },
  nohup: { withValue: new Set() },
  exec: { withValue: new Set(['-a']) },
  setsid: { withValue: new Set() },
  stdbuf: { withValue: new Set(['-i', '-o', '-e', '--input', '--output', '--error']) },
  timeout: { withValue: new Set(['-k', '-s', '--kill-after', '--signal']), operands: 1 },
  time: { withValue: new Set(['-f', '-o', '--format', '--output']) },
  command: { withValue: new Set() },
  builtin: { withValue: new Set() },
  chroot: { withValue: new Set(['--userspec', '--groups']), operands: 1 },
  xargs: { withValue: new Set(['-a', '-d', '-E', '-e', '-I', '-i', '-L', '-l', '-n', '-P', '-s', '--arg-file', '--delimiter', '--eof', '--replace', '--max-lines', '--max-args', '--max-procs', '--max-chars', '--process-slot-var']) },
  unbuffer: { withValue: new Set() },
  flock: { withValue: new Set(['-w', '-E', '--timeout', '--conflict-exit-code', '-c', '--command']), operands: 1, shell: new Set(['-c', '--command']) },
  runuser: { withValue: new Set(['-u', '-g', '-G', '--user', '--group', '--supp-group']), shell: new Set(['-c', '-l', '--login', '--command']) },
  taskset: { withValue: new Set(['-c', '--cpu-list']), operands: 1 },
  strace: { withValue: new Set(['-e', '-o', '-p', '-s', '-u', '-E']) },
  ltrace: { withValue: new Set(['-e', '-o', '-p', '-s', '-u']) },
};

/** Characters that make an unquoted literal a glob (pathname expansion). */
const GLOB_CHARS = /[*?[]/;

/** A word's value when the shell would take it as written (no expansion), else undefined. */
interface WordValue {
  text: string;
  /** The word expands (parameter, arithmetic, command substitution, brace or glob): not literal. */
  dynamic: boolean;
  /** It holds a command or process substitution. */
  substitution: boolean;
}

function unescapeUnquoted(s: string): string {
  return s.replace(/\\\n/g, '').replace(/\\(.)/gs, '$1');
}

function unescapeDouble(s: string): string {
  return s.replace(/\\\n/g, '').replace(/\\([$`"\\])/g, '$1');
}

function wordValue(word: ShWord, src: string): WordValue {
  let text = '';
  let dynamic = false;
  let substitution = false;
  const raw = (n: ShNode) => src.slice((n['Pos'] as () => { Offset(): number })().Offset(), (n['End'] as () => { Offset(): number })().Offset());
  for (const part of word.Parts) {
    const t = syntax.NodeType(part);
    if (t === 'Lit') {
      const v = part['Value'] as string;
      if (GLOB_CHARS.test(v.replace(/\\./g, ''))) dynamic = true;
      text += unescapeUnquoted(v);
    } else if (t === 'SglQuoted') {
      const v = part['Value'] as string;
      text += part['Dollar'] ? v.replace(/\\(.)/g, (_m, c: string) => ({ n: '\n', t: '\t', r: '\r', '\\': '\\', "'": "'" })[c] ?? `\\${c}`) : v;
    } else if (t === 'DblQuoted') {
      for (const inner of part['Parts'] as ShNode[]) {
        const it = syntax.NodeType(inner);
        if (it === 'Lit') text += unescapeDouble(inner['Value'] as string);
        else {
          dynamic = true;
          if (it === 'CmdSubst') substitution = true;
          text += raw(inner);
        }
      }
    } else {
      dynamic = true;
      if (t === 'CmdSubst' || t === 'ProcSubst') substitution = true;
      text += raw(part);
    }
  }
  return { text, dynamic, substitution };
}

/** `/usr/bin/rm` → `rm`. */
function baseName(name: string): string {
  const i = name.lastIndexOf('/');
  return i >= 0 && i < name.length - 1 ? name.slice(i + 1) : name;
}

/**
 * Splits combined short options (`-rf` → `-r -f`) and sorts each run of single-letter options, so
 * `rm -rf`, `rm -fr` and `rm -r -f` read the same. Stops at `--`. Applied alike to commands and to
 * the patterns rules match them with.
 */
export function normaliseOptions(argv: readonly string[]): string[] {
  // Programs whose options are words after a single dash (`find -name`): left as they are.
  if (argv.length && SINGLE_DASH_WORDS.has(argv[0]!)) return [...argv];
  const out: string[] = argv.length ? [argv[0]!] : [];
  let run: string[] = [];
  const flush = () => {
    run.sort();
    out.push(...run);
    run = [];
  };
  let i = 1;
  for (; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') break;
    if (/^-[A-Za-z]+$/.test(a)) {
      for (const c of a.slice(1)) if (!run.includes(`-${c}`)) run.push(`-${c}`);
      continue;
    }
    flush();
    out.push(a);
  }
  flush();
  for (; i < argv.length; i++) out.push(argv[i]!);
  return out;
}

const SINGLE_DASH_WORDS = new Set(['find', 'java', 'javac', 'gcc', 'g++', 'cc', 'clang', 'ld', 'go', 'iptables', 'ip6tables', 'ip', 'tc', 'openssl', 'ffmpeg', 'convert', 'mogrify', 'xterm', 'qemu-system-x86_64', 'virsh']);

/** Stands for the arguments xargs appends from its input: only a pattern ending in `*` matches them. */
export const XARGS_INPUT = '{xargs input}';

interface Walker {
  src: string;
  out: ParsedExec;
}

/**
 * Reduces one command's words to the command that really runs: wrappers unwrapped (each also
 * listed on its own so rules can name them), interpreters and dynamic names made `unknown`.
 */
function addCommand(w: Walker, words: WordValue[], wrappers: string[] = []): void {
  if (!words.length) return;
  const head = words[0]!;
  if (head.dynamic) {
    w.out.unknown.push(`the command name ${JSON.stringify(head.text)} is an expansion or a glob`);
    w.out.commands.push({ argv: normaliseOptions([head.text, ...words.slice(1).map((x) => x.text)]), wrappers });
    return;
  }
  const name = baseName(head.text);
  const args = words.slice(1);
  const argv = [name, ...args.map((x) => x.text)];
  const wrapper = WRAPPERS[name];
  if (wrapper) {
    let i = 0;
    for (; i < args.length; i++) {
      const a = args[i]!.text;
      if (args[i]!.dynamic) break;
      if (a === '--') {
        i++;
        break;
      }
      if (wrapper.assignments && /^[A-Za-z_][A-Za-z0-9_]*=/.test(a)) continue;
      if (!a.startsWith('-') || a === '-') break;
      const opt = a.includes('=') ? a.slice(0, a.indexOf('=')) : a;
      if (wrapper.shell?.has(opt) || (opt.length > 2 && !opt.startsWith('--') && [...opt.slice(1)].some((c) => wrapper.shell?.has(`-${c}`)))) {
        w.out.unknown.push(`${name} ${opt} runs a shell or code the gateway cannot see`);
        return;
      }
      if (wrapper.withValue.has(opt) && !a.includes('=')) i++;
      else if (!opt.startsWith('--') && opt.length > 2 && wrapper.withValue.has(opt.slice(0, 2))) {
        // `-uroot`: the value is attached
      }
    }
    i += wrapper.operands ?? 0;
    const rest = args.slice(i);
    if (PRIVILEGE_WRAPPERS.has(name)) w.out.commands.push({ argv: normaliseOptions(argv.slice(0, i + 1)), wrappers });
    if (name === 'command' && args.some((a) => a.text === '-v' || a.text === '-V')) return;
    if (!rest.length) {
      if (name === 'xargs') addCommand(w, [{ text: 'echo', dynamic: false, substitution: false }], [...wrappers, name]);
      return;
    }
    addCommand(w, name === 'xargs' ? [...rest, { text: XARGS_INPUT, dynamic: false, substitution: false }] : rest, [...wrappers, name]);
    return;
  }
  if (INTERPRETERS.has(name) && !(INTERPRETER_EXCEPT[name]?.(argv.slice(1)) ?? false)) {
    const onlyVersion = args.length === 1 && /^(--version|-V|--help|-h)$/.test(args[0]!.text);
    if (!onlyVersion) w.out.unknown.push(`${name} runs code the gateway cannot see (an interpreter given a program, a script or its input)`);
  }
  const command: SimpleCommand = { argv: normaliseOptions(argv), wrappers };
  w.out.commands.push(command);
  if (name === 'find') findExec(w, args, wrappers);
  transferOf(w, name, argv.slice(1));
}

/** `find … -exec cmd {} ;` runs cmd: it is a command of its own. */
function findExec(w: Walker, args: WordValue[], wrappers: string[]): void {
  for (let i = 0; i < args.length; i++) {
    if (!/^-(exec|execdir|ok|okdir)$/.test(args[i]!.text)) continue;
    const inner: WordValue[] = [];
    for (i++; i < args.length && args[i]!.text !== ';' && args[i]!.text !== '+'; i++) inner.push(args[i]!);
    addCommand(w, inner, [...wrappers, 'find']);
  }
}

/** scp's server side, rsync's server side and tar as file transfers. */
function transferOf(w: Walker, name: string, args: string[]): void {
  if (name === 'scp') {
    const to = args.includes('-t');
    const from = args.includes('-f');
    if (to || from) {
      const paths = operands(args, new Set(['-l', '-P', '-c', '-i', '-o', '-F', '-S', '-J', '-X']));
      w.out.transfers.push({ tool: 'scp', direction: to ? 'upload' : 'download', paths: paths.length ? paths : ['.'] });
    }
    return;
  }
  if (name === 'rsync' && args.includes('--server')) {
    const sender = args.includes('--sender');
    const dot = args.indexOf('.');
    const paths = dot >= 0 ? args.slice(dot + 1) : [];
    w.out.transfers.push({ tool: 'rsync', direction: sender ? 'download' : 'upload', paths: paths.length ? paths : ['.'] });
    return;
  }
  if (name === 'tar') {
    const first = args[0] ?? '';
    const modes = args.filter((a) => /^-/.test(a) && !a.startsWith('--')).join('') + (first.startsWith('-') ? '' : first);
    const extract = /x/.test(modes) || args.includes('--extract') || args.includes('--get');
    const create = /c/.test(modes) || args.includes('--create');
    if (!extract && !create) return;
    const dirIndex = args.findIndex((a) => a === '-C' || a === '--directory');
    const dirEq = args.find((a) => a.startsWith('--directory='));
    const dir = dirIndex >= 0 ? args[dirIndex + 1] : dirEq?.slice('--directory='.length);
    w.out.transfers.push({ tool: 'tar', direction: extract ? 'upload' : 'download', paths: [dir ?? '.'] });
  }
}

function operands(args: string[], withValue: Set<string>): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') return [...out, ...args.slice(i + 1)];
    if (a.startsWith('-')) {
      if (withValue.has(a)) i++;
      continue;
    }
    out.push(a);
  }
  return out;
}

function visit(w: Walker, node: ShNode): void {
  syntax.Walk(node, (n) => {
    if (!n) return true;
    const t = syntax.NodeType(n);
    switch (t) {
      case 'CallExpr': {
        const args = (n['Args'] as ShWord[] | null) ?? [];
        const values = args.map((a) => wordValue(a, w.src));
        for (const v of values) if (v.substitution) w.out.unknown.push('a command substitution decides part of a command');
        for (const a of (n['Assigns'] as ShNode[] | null) ?? []) {
          const value = a['Value'] as ShWord | null;
          if (value && wordValue(value, w.src).substitution) w.out.unknown.push('a command substitution sets a variable');
        }
        addCommand(w, values);
        return true;
      }
      case 'CmdSubst':
        w.out.unknown.push('a command substitution runs a command whose output becomes part of another');
        return true;
      case 'ProcSubst':
        w.out.unknown.push('a process substitution runs a command whose output is read as a file');
        return true;
      case 'Redirect': {
        const op = w.src.slice((n['OpPos'] as { Offset(): number }).Offset(), ((n['Word'] as ShWord).Pos as () => { Offset(): number })().Offset()).trim();
        const target = wordValue(n['Word'] as ShWord, w.src);
        if (/^(>|>>|>\||&>|&>>|<>)$/.test(op) && !/^\/dev\/(null|stdout|stderr)$/.test(target.text)) w.out.writes.push(target.text);
        if (target.substitution) w.out.unknown.push('a command substitution names a redirection target');
        return true;
      }
      case 'DeclClause': {
        // `declare`, `export`, `local`, `readonly`, `typeset`: assignments, maybe with substitutions (visited below).
        return true;
      }
      case 'CoprocClause':
        return true;
      case 'LetClause':
      case 'ArithmCmd':
      case 'ArithmExp':
        // Bash arithmetic evaluates `a[$(cmd)]` subscripts: CmdSubst nodes inside are caught above.
        return true;
      default:
        return true;
    }
  });
}

let parser: ReturnType<typeof syntax.NewParser> | undefined;

/** Parses an exec request's command text. Never throws: text that does not parse is `unknown`. */
export function parseExec(command: string): ParsedExec {
  const out: ParsedExec = { commands: [], unknown: [], transfers: [], writes: [] };
  if (!command.trim()) {
    out.unknown.push('an empty command starts the login shell');
    return out;
  }
  parser ??= syntax.NewParser();
  let file;
  try {
    file = parser.Parse(command, '');
  } catch (err) {
    const e = err as { Error?: () => string; message?: string };
    out.unknown.push(`the command does not parse as shell: ${e.Error?.() ?? e.message ?? String(err)}`);
    return out;
  }
  visit({ src: command, out }, file);
  out.unknown = [...new Set(out.unknown)];
  return out;
}

/** A command pattern (`systemctl status *`) split into words and normalised like commands are. */
export function compileCommandPattern(pattern: string): string[] {
  const words = pattern.trim().split(/\s+/);
  if (words.length) words[0] = baseName(words[0]!);
  return normaliseOptions(words);
}

function wordGlob(pattern: string): RegExp {
  return new RegExp(`^${pattern.split('*').map((p) => p.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\?/g, '.')).join('.*')}$`, 's');
}

const globCache = new Map<string, RegExp>();

function wordMatches(pattern: string, word: string): boolean {
  if (!/[*?]/.test(pattern)) return pattern === word;
  let re = globCache.get(pattern);
  if (!re) {
    re = wordGlob(pattern);
    if (globCache.size < 10_000) globCache.set(pattern, re);
  }
  return re.test(word);
}

/**
 * Whether `argv` matches a compiled pattern: a word `*` on its own matches any number of words
 * (none included); within a word, `*` matches any characters and `?` one.
 */
export function commandMatches(pattern: readonly string[], argv: readonly string[]): boolean {
  const memo = new Map<number, boolean>();
  const go = (p: number, a: number): boolean => {
    const key = p * 4096 + a;
    const seen = memo.get(key);
    if (seen !== undefined) return seen;
    let r: boolean;
    if (p === pattern.length) r = a === argv.length;
    else if (pattern[p] === '*') r = go(p + 1, a) || (a < argv.length && go(p, a + 1));
    else r = a < argv.length && wordMatches(pattern[p]!, argv[a]!) && go(p + 1, a + 1);
    memo.set(key, r);
    return r;
  };
  return go(0, 0);
}
