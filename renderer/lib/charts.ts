/**
 * Geometry for the dashboard's inline SVG charts: a nice axis maximum, tick values, polyline and
 * area paths for time series, stacked bars. Pure numbers in, SVG path strings out.
 */

/** Smallest "nice" number (1, 2, 2.5, 5 × 10^k) ≥ v; at least 1. */
export function niceMax(v: number): number {
  if (!(v > 0)) return 1;
  const exp = Math.floor(Math.log10(v));
  const base = 10 ** exp;
  for (const m of [1, 2, 2.5, 5, 10]) if (m * base >= v) return m * base;
  return 10 * base;
}

export function ticks(max: number, count = 4): number[] {
  return Array.from({ length: count + 1 }, (_, i) => (max * i) / count);
}

/**
 * An axis for counts: whole-number ticks only (no "0.3 requests"), at most `count` steps of 1, 2, 5,
 * 10, 20, 50… The axis maximum is the last tick, at or above `v`.
 */
export function countAxis(v: number, count = 4): { max: number; ticks: number[] } {
  const target = Math.max(1, v) / count;
  let step = 1;
  for (let base = 1; step < target; base *= 10) {
    for (const m of [1, 2, 5]) {
      step = m * base;
      if (step >= target) break;
    }
  }
  const max = Math.max(step, Math.ceil(Math.max(1, v) / step) * step);
  return { max, ticks: Array.from({ length: Math.round(max / step) + 1 }, (_, i) => i * step) };
}

export interface Box {
  width: number;
  height: number;
}

/** Polyline through the values, x spread evenly, y scaled to [0, max]. */
export function linePath(values: number[], box: Box, max: number): string {
  if (!values.length) return '';
  const dx = values.length > 1 ? box.width / (values.length - 1) : 0;
  return values.map((v, i) => `${i ? 'L' : 'M'}${round(i * dx)},${round(box.height - (Math.min(v, max) / max) * box.height)}`).join('');
}

/** The same line closed down to the x axis, for a filled area. */
export function areaPath(values: number[], box: Box, max: number): string {
  if (!values.length) return '';
  const dx = values.length > 1 ? box.width / (values.length - 1) : 0;
  return `${linePath(values, box, max)}L${round((values.length - 1) * dx)},${box.height}L0,${box.height}Z`;
}

export interface BarRect {
  x: number;
  y: number;
  width: number;
  height: number;
  series: number;
  value: number;
}

/** Stacked bars: one column per bucket, one rect per series with a non-zero value. */
export function stackedBars(columns: number[][], box: Box, max: number, gap = 2): BarRect[] {
  const n = columns.length;
  if (!n) return [];
  const w = box.width / n;
  const out: BarRect[] = [];
  columns.forEach((col, i) => {
    let y = box.height;
    col.forEach((v, s) => {
      if (v <= 0) return;
      const h = (v / max) * box.height;
      y -= h;
      out.push({ x: round(i * w + gap / 2), y: round(y), width: round(Math.max(1, w - gap)), height: round(h), series: s, value: v });
    });
  });
  return out;
}

function round(v: number): number {
  return Math.round(v * 10) / 10;
}

/** Axis label for a bucket start: time of day for spans under two days, else the date. */
export function bucketLabel(t: number, spanMs: number): string {
  const d = new Date(t);
  const p = (n: number) => String(n).padStart(2, '0');
  return spanMs <= 2 * 86_400_000 ? `${p(d.getHours())}:${p(d.getMinutes())}` : `${p(d.getMonth() + 1)}-${p(d.getDate())}`;
}
