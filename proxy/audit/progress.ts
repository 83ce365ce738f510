/**
 * Terminal progress for long audit jobs: a redrawn bar on a TTY, a line every quarter otherwise
 * (logs stay readable), nothing for small jobs. Always on stderr, so stdout stays machine-readable.
 */
export interface ProgressSink {
  write(text: string): void;
  isTTY: boolean;
}

export function progressReporter(label: string, sink: ProgressSink, opts: { minTotal?: number; width?: number } = {}): { update(done: number, total: number): void; end(): void } {
  const minTotal = opts.minTotal ?? 100_000;
  const width = opts.width ?? 30;
  let lastQuarter = -1;
  let lastDraw = 0;
  let drawn = false;
  return {
    update(done, total) {
      if (total < minTotal) return;
      const frac = total ? Math.min(1, done / total) : 1;
      if (sink.isTTY) {
        const now = Date.now();
        if (now - lastDraw < 100 && done < total) return;
        lastDraw = now;
        const filled = Math.round(frac * width);
        sink.write(`\r${label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${Math.floor(frac * 100)}% ${done.toLocaleString('en-US')}/${total.toLocaleString('en-US')}`);
        drawn = true;
      } else {
        const quarter = Math.floor(frac * 4);
        if (quarter === lastQuarter) return;
        lastQuarter = quarter;
        sink.write(`${label}: ${done.toLocaleString('en-US')} of ${total.toLocaleString('en-US')} events (${Math.floor(frac * 100)}%)\n`);
      }
    },
    end() {
      if (drawn) sink.write('\n');
      drawn = false;
    },
  };
}
