/** Formatting helpers shared by the console's views. Pure: no DOM, importable from node tests. */

export function pad2(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}

/** `4:05` for 245 s, `1:02:03` past an hour; negative clamps to `0:00`. */
export function formatCountdown(ms: number): string {
  const total = Math.max(0, Math.ceil(ms / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  return h ? `${h}:${pad2(m)}:${pad2(s)}` : `${m}:${pad2(s)}`;
}

/** Replay clock: `01:02.3` (minutes, seconds, tenths). */
export function formatClock(ms: number): string {
  const t = Math.max(0, ms);
  const m = Math.floor(t / 60_000);
  const s = Math.floor((t % 60_000) / 1000);
  const d = Math.floor((t % 1000) / 100);
  return `${pad2(m)}:${pad2(s)}.${d}`;
}

/** `12 s`, `4 min`, `3 h`, `2 d` — short durations for tables. */
export function formatDuration(ms: number): string {
  const a = Math.abs(ms);
  if (a < 1000) return `${Math.round(a)} ms`;
  if (a < 60_000) return `${Math.round(a / 1000)} s`;
  if (a < 3_600_000) return `${Math.round(a / 60_000)} min`;
  if (a < 86_400_000) return `${Math.round(a / 3_600_000)} h`;
  return `${Math.round(a / 86_400_000)} d`;
}

/** `just now`, `5 min ago`, `3 h ago`, then the date. */
export function formatAgo(time: number, now: number): string {
  const d = now - time;
  if (d < 45_000) return 'just now';
  if (d < 86_400_000 * 2) return `${formatDuration(d)} ago`;
  return formatDate(time);
}

/** `2026-11-23 06:02:44` in local time. */
export function formatDateTime(time: number): string {
  const d = new Date(time);
  return `${formatDate(time)} ${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
}

export function formatDate(time: number): string {
  const d = new Date(time);
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())}`;
}

export function formatTime(time: number): string {
  const d = new Date(time);
  return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}

/** 1234567 → `1,234,567`. */
export function formatCount(n: number): string {
  return Math.round(n).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

/** `<input type="datetime-local">` value for a time, and back. */
export function toLocalInput(time: number): string {
  const d = new Date(time);
  return `${formatDate(time)}T${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
}

export function fromLocalInput(value: string): number | undefined {
  if (!value) return undefined;
  const t = new Date(value).getTime();
  return Number.isFinite(t) ? t : undefined;
}

/** Shortens a long id for display: `3f2a9c…81d0`. */
export function shortId(id: string, keep = 6): string {
  return id.length <= keep * 2 + 1 ? id : `${id.slice(0, keep)}…${id.slice(-4)}`;
}

/** A gateway of a shared store for people: its host name and the start of its key's fingerprint (host names repeat). */
export function gatewayLabel(id: string, name?: string | null): string {
  const fp = id.replace(/^SHA256:/, '').slice(0, 8);
  return name && name !== id ? `${name} · ${fp}` : fp;
}
