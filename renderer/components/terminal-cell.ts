/** The replay terminals' font (SqlTerminal, SshTerminal), and the size of one cell in it, for fitting a pane. */
export const TERMINAL_FONT = '"DejaVu Sans Mono", "JetBrains Mono", Menlo, Consolas, monospace';
export const TERMINAL_FONT_SIZE = 12.5;

export function measureCell(): { width: number; height: number } {
  const c = document.createElement('canvas').getContext('2d');
  if (!c) return { width: 7.5, height: 15 };
  c.font = `${TERMINAL_FONT_SIZE}px ${TERMINAL_FONT}`;
  return { width: c.measureText('MMMMMMMMMM').width / 10, height: Math.ceil(TERMINAL_FONT_SIZE * 1.2) };
}

/** How many of `entries` (in time order) are due at `position` (ms into the session): what a player shows. */
export function entriesDue(entries: readonly { at: number }[], position: number): number {
  let n = 0;
  while (n < entries.length && entries[n]!.at <= position) n++;
  return n;
}
