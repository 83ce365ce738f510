/**
 * Remembers the console window's bounds and maximized state between launches, in
 * `<userData>/window-state.json`. Saved bounds are used only if they still overlap a display's work
 * area (a monitor may have been unplugged); otherwise the window opens centred at the default size.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

export interface Rect {
  x: number;
  y: number;
  width: number;
  height: number;
}

export interface WindowState {
  bounds: Rect;
  maximized: boolean;
}

export const DEFAULT_SIZE = { width: 1280, height: 820 };
export const MIN_SIZE = { width: 720, height: 480 };
/** How much of the window must be on a display for the saved position to be kept. */
const MIN_VISIBLE = 120;

function isRect(v: unknown): v is Rect {
  const r = v as Rect | null;
  return typeof r === 'object' && r !== null && [r.x, r.y, r.width, r.height].every((n) => Number.isFinite(n));
}

/** Reads the saved state; anything missing or malformed gives null (the default placement). */
export function readWindowState(file: string): WindowState | null {
  try {
    const v = JSON.parse(readFileSync(file, 'utf8')) as Partial<WindowState>;
    if (!isRect(v.bounds)) return null;
    return { bounds: v.bounds, maximized: v.maximized === true };
  } catch {
    return null;
  }
}

export function writeWindowState(file: string, state: WindowState): void {
  mkdirSync(dirname(file), { recursive: true });
  const tmp = `${file}.tmp`;
  writeFileSync(tmp, JSON.stringify(state));
  renameSync(tmp, file);
}

function overlap(a: Rect, b: Rect): { w: number; h: number } {
  return {
    w: Math.min(a.x + a.width, b.x + b.width) - Math.max(a.x, b.x),
    h: Math.min(a.y + a.height, b.y + b.height) - Math.max(a.y, b.y),
  };
}

/**
 * Where to open the window: the saved bounds (size clamped to the display) if enough of the window
 * lands on some display's work area, else the default size centred on the primary display.
 */
export function placeWindow(saved: WindowState | null, workAreas: Rect[]): WindowState {
  const primary = workAreas[0] ?? { x: 0, y: 0, ...DEFAULT_SIZE };
  if (saved) {
    for (const area of workAreas) {
      const o = overlap(saved.bounds, area);
      if (o.w >= MIN_VISIBLE && o.h >= MIN_VISIBLE) {
        const width = Math.max(MIN_SIZE.width, Math.min(saved.bounds.width, area.width));
        const height = Math.max(MIN_SIZE.height, Math.min(saved.bounds.height, area.height));
        return { bounds: { x: Math.round(saved.bounds.x), y: Math.round(saved.bounds.y), width: Math.round(width), height: Math.round(height) }, maximized: saved.maximized };
      }
    }
  }
  const width = Math.min(DEFAULT_SIZE.width, primary.width);
  const height = Math.min(DEFAULT_SIZE.height, primary.height);
  return {
    bounds: { x: Math.round(primary.x + (primary.width - width) / 2), y: Math.round(primary.y + (primary.height - height) / 2), width, height },
    maximized: saved?.maximized ?? false,
  };
}

/** The part of BrowserWindow used to track its state. */
export interface TrackedWindow {
  on(event: 'resize' | 'move' | 'close' | 'maximize' | 'unmaximize', fn: () => void): unknown;
  getNormalBounds(): Rect;
  isMaximized(): boolean;
  isDestroyed(): boolean;
}

/** Saves the window's state shortly after it moves or resizes, and when it closes. */
export function trackWindowState(win: TrackedWindow, file: string, debounceMs = 500): () => void {
  let timer: NodeJS.Timeout | undefined;
  const save = () => {
    clearTimeout(timer);
    if (win.isDestroyed()) return;
    try {
      writeWindowState(file, { bounds: win.getNormalBounds(), maximized: win.isMaximized() });
    } catch {
      // a read-only profile only costs the remembered position
    }
  };
  const later = () => {
    clearTimeout(timer);
    timer = setTimeout(save, debounceMs);
  };
  for (const e of ['resize', 'move', 'maximize', 'unmaximize'] as const) win.on(e, later);
  win.on('close', save);
  return save;
}
