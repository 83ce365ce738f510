/**
 * Recorded SSH terminals as asciicast v2 (https://docs.asciinema.org/manual/asciicast/v2/): a
 * header line, then one `[seconds, code, data]` line per frame. The gateway records a shell's
 * frames in `ssh.output` events (`[ms since the channel began, 'o' | 'i' | 'r', data]`, masked
 * for the log); this turns one channel's frames into a `.cast` file for the export bundle and for
 * players outside the console. Input typed while echo was off is recorded as its length only and
 * is left out here.
 */

/** One terminal frame as recorded: output, input, or a resize (`COLSxROWS`). */
export type TerminalFrame = [number, 'o' | 'i' | 'r', string | { hidden: true; length: number }];

export interface CastSource {
  /** Start of the channel, ms since the epoch. */
  startedAt: number;
  /** The pty as requested, when there was one. */
  pty?: { term?: string; cols: number; rows: number };
  frames: TerminalFrame[];
  title?: string;
}

/** The `.cast` text of one recorded terminal. */
export function toAsciicast(src: CastSource): string {
  const firstResize = src.frames.find((f) => f[1] === 'r' && typeof f[2] === 'string');
  const [cols, rows] = src.pty ? [src.pty.cols, src.pty.rows] : firstResize ? (firstResize[2] as string).split('x').map(Number) : [80, 24];
  const header = {
    version: 2,
    width: cols || 80,
    height: rows || 24,
    timestamp: Math.floor(src.startedAt / 1000),
    ...(src.pty?.term ? { env: { TERM: src.pty.term } } : {}),
    ...(src.title ? { title: src.title } : {}),
  };
  const lines = [JSON.stringify(header)];
  for (const [ms, code, data] of src.frames) {
    if (typeof data !== 'string') continue;
    lines.push(JSON.stringify([Math.round(ms) / 1000, code, data]));
  }
  return `${lines.join('\n')}\n`;
}
