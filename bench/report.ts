/** Shared shapes and printing for `deno task bench` sections. */

/** One measured figure. */
export interface BenchRow {
  section: string;
  name: string;
  /** Median milliseconds (or null when skipped). */
  ms: number | null;
  /** A comparison of values, not a timing: the time column stays empty. */
  untimed?: boolean;
  /** What the ratio is taken against, e.g. "vs shipped dX". */
  against?: string;
  /** Speed-up (reference time / this time); > 1 is faster. */
  speedup?: number;
  /** Free-form detail: GFLOP/s, images/s, why skipped. */
  note?: string;
}

/** Median of `reps` timed runs of `fn` after `warmup` untimed runs, in ms. */
export async function timeMedian(fn: () => Promise<void> | void, reps = 5, warmup = 1): Promise<number> {
  for (let i = 0; i < warmup; i++) await fn();
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    await fn();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)];
}

/** Renders rows as a fixed-width table. */
export function formatTable(rows: BenchRow[]): string {
  const cells = rows.map((r) => [
    r.section,
    r.name,
    r.untimed
      ? ""
      : r.ms === null
      ? "skipped"
      : r.ms >= 1000
      ? `${(r.ms / 1000).toFixed(2)} s`
      : `${r.ms.toFixed(1)} ms`,
    r.speedup === undefined ? "" : `${r.speedup.toFixed(2)}x ${r.against ?? ""}`.trim(),
    r.note ?? "",
  ]);
  const head = ["section", "measurement", "time", "ratio", "note"];
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
  const line = (c: string[]) => c.map((v, i) => v.padEnd(widths[i])).join("  ").trimEnd();
  return [line(head), widths.map((w) => "-".repeat(w)).join("  "), ...cells.map(line)].join("\n");
}
