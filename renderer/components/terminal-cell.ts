/** The replay terminals' font (SqlTerminal, SshTerminal), and the size of one cell in it, for fitting a pane. */
export const TERMINAL_FONT = '"DejaVu Sans Mono", "JetBrains Mono", Menlo, Consolas, monospace';
export const TERMINAL_FONT_SIZE = 12.5;

export function measureCell(): { width: number; height: number } {
  const c = document.createElement('canvas').getContext('2d');
  if (!c) return { width: 7.5, height: 15 };
  c.font = `${TERMINAL_FONT_SIZE}px ${TERMINAL_FONT}`;
  return { width: c.measureText('MMMMMMMMMM').width / 10, height: Math.ceil(TERMINAL_FONT_SIZE * 1.2) };
}
