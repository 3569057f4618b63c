/**
 * Line plots as SVG (rendered to PNG with sharp): loss curves, learning-rate
 * schedules, precision-recall curves.
 *
 * @module
 */
import sharp from "sharp";
import { PALETTE } from "./draw.ts";

/** One line of a plot. */
export interface Series {
  name: string;
  x: number[];
  y: number[];
}

/** Options of {@linkcode linePlotSvg}. */
export interface PlotOptions {
  title?: string;
  xLabel?: string;
  yLabel?: string;
  width?: number;
  height?: number;
  /** Log-scale y axis (values <= 0 are dropped). */
  logY?: boolean;
  yRange?: [number, number];
  xRange?: [number, number];
}

function niceTicks(lo: number, hi: number, n = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? raw;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
  return out;
}

const fmt = (v: number) =>
  Math.abs(v) >= 1e4 || (Math.abs(v) < 1e-2 && v !== 0) ? v.toExponential(0) : String(+v.toPrecision(3));

/**
 * An SVG line plot of `series`.
 *
 * @example
 * ```ts
 * const svg = linePlotSvg([{ name: "loss", x: [0, 1, 2], y: [3, 2, 1] }], { title: "Loss" });
 * if (!svg.startsWith("<svg")) throw new Error("not an svg");
 * ```
 */
export function linePlotSvg(series: Series[], o: PlotOptions = {}): string {
  const W = o.width ?? 720, H = o.height ?? 420;
  const m = { l: 64, r: 150, t: o.title ? 40 : 16, b: 48 };
  const ty = (v: number) => o.logY ? Math.log10(v) : v;
  const pts = series.map((s) =>
    s.x.map((x, i) => [x, s.y[i]]).filter(([, y]) => Number.isFinite(y) && (!o.logY || y > 0))
  );
  // Loops, not Math.min(...xs): spreading a long series overflows the call stack past ~100k points.
  let xMin = Infinity, xMax = -Infinity, yMin = Infinity, yMax = -Infinity;
  for (const p of pts) {
    for (const [x, y] of p) {
      xMin = Math.min(xMin, x), xMax = Math.max(xMax, x);
      yMin = Math.min(yMin, ty(y)), yMax = Math.max(yMax, ty(y));
    }
  }
  let [x0, x1] = o.xRange ?? [xMin, xMax];
  let [y0, y1] = o.yRange ? o.yRange.map(ty) : [yMin, yMax];
  if (!(x1 > x0)) [x0, x1] = [x0 - 1, x0 + 1];
  if (!(y1 > y0)) [y0, y1] = [y0 - 1, y0 + 1];
  if (!Number.isFinite(x0)) [x0, x1, y0, y1] = [0, 1, 0, 1];
  const px = (x: number) => m.l + ((x - x0) / (x1 - x0)) * (W - m.l - m.r);
  const py = (y: number) => H - m.b - ((ty(y) - y0) / (y1 - y0)) * (H - m.t - m.b);
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="DejaVu Sans, sans-serif">`,
    `<rect width="${W}" height="${H}" fill="#ffffff"/>`,
  ];
  if (o.title) parts.push(`<text x="${W / 2}" y="24" font-size="16" text-anchor="middle">${o.title}</text>`);
  const yTicks = o.logY
    ? niceTicks(Math.floor(y0), Math.ceil(y1), Math.max(1, Math.ceil(y1) - Math.floor(y0))).map((e) => 10 ** e)
    : niceTicks(y0, y1);
  for (const t of yTicks) {
    const y = py(t);
    if (y < m.t - 1 || y > H - m.b + 1) continue;
    parts.push(`<line x1="${m.l}" x2="${W - m.r}" y1="${y}" y2="${y}" stroke="#e5e5e5"/>`);
    parts.push(`<text x="${m.l - 6}" y="${y + 4}" font-size="11" text-anchor="end">${fmt(t)}</text>`);
  }
  for (const t of niceTicks(x0, x1)) {
    const x = px(t);
    parts.push(`<line x1="${x}" x2="${x}" y1="${H - m.b}" y2="${H - m.b + 4}" stroke="#333"/>`);
    parts.push(`<text x="${x}" y="${H - m.b + 18}" font-size="11" text-anchor="middle">${fmt(t)}</text>`);
  }
  parts.push(
    `<rect x="${m.l}" y="${m.t}" width="${W - m.l - m.r}" height="${H - m.t - m.b}" fill="none" stroke="#333"/>`,
  );
  if (o.xLabel) {
    parts.push(`<text x="${(m.l + W - m.r) / 2}" y="${H - 10}" font-size="12" text-anchor="middle">${o.xLabel}</text>`);
  }
  if (o.yLabel) {
    parts.push(
      `<text transform="translate(16 ${
        (m.t + H - m.b) / 2
      }) rotate(-90)" font-size="12" text-anchor="middle">${o.yLabel}</text>`,
    );
  }
  pts.forEach((p, i) => {
    if (p.length === 0) return;
    const c = PALETTE[i % PALETTE.length];
    const d = p.map(([x, y], k) => `${k === 0 ? "M" : "L"}${px(x).toFixed(1)},${py(y).toFixed(1)}`).join("");
    parts.push(`<path d="${d}" fill="none" stroke="${c}" stroke-width="1.8"/>`);
    const ly = m.t + 16 + i * 18;
    parts.push(
      `<line x1="${W - m.r + 12}" x2="${W - m.r + 32}" y1="${ly - 4}" y2="${ly - 4}" stroke="${c}" stroke-width="3"/>`,
    );
    parts.push(`<text x="${W - m.r + 38}" y="${ly}" font-size="12">${series[i].name}</text>`);
  });
  parts.push("</svg>");
  return parts.join("");
}

/** Renders {@linkcode linePlotSvg} to PNG bytes. */
export async function linePlotPng(series: Series[], o: PlotOptions = {}): Promise<Uint8Array> {
  return new Uint8Array(await sharp(new TextEncoder().encode(linePlotSvg(series, o))).png().toBuffer());
}

/**
 * Means of consecutive runs of points, at most `maxBins` bins, for series too
 * long to draw point by point (a million-step loss log). Streams: `add` points
 * in x order; when the bins fill up, neighbours merge and each bin spans twice
 * as many points. Memory stays O(maxBins).
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const b = new Binner(2);
 * for (let i = 1; i <= 4; i++) b.add(i, 10 * i);
 * assertEquals(b.series(), { x: [1.5, 3.5], y: [15, 35] });
 * ```
 */
export class Binner {
  #x: number[] = [];
  #y: number[] = [];
  #n: number[] = [];
  #span = 1;
  constructor(readonly maxBins = 1000) {
    if (maxBins < 2) throw new RangeError("maxBins must be at least 2");
  }
  /** Points added so far. */
  count = 0;
  /** Adds one point (x ascending). */
  add(x: number, y: number): void {
    this.count++;
    const last = this.#n.length - 1;
    if (last >= 0 && this.#n[last] < this.#span) {
      this.#x[last] += x, this.#y[last] += y, this.#n[last]++;
    } else {
      this.#x.push(x), this.#y.push(y), this.#n.push(1);
    }
    if (this.#n.length > this.maxBins) this.#merge();
  }
  #merge(): void {
    const x: number[] = [], y: number[] = [], n: number[] = [];
    for (let i = 0; i < this.#n.length; i += 2) {
      const j = Math.min(i + 1, this.#n.length - 1);
      const both = j !== i;
      x.push(this.#x[i] + (both ? this.#x[j] : 0));
      y.push(this.#y[i] + (both ? this.#y[j] : 0));
      n.push(this.#n[i] + (both ? this.#n[j] : 0));
    }
    [this.#x, this.#y, this.#n] = [x, y, n];
    this.#span *= 2;
  }
  /** The bin means. */
  series(): { x: number[]; y: number[] } {
    return { x: this.#x.map((v, i) => v / this.#n[i]), y: this.#y.map((v, i) => v / this.#n[i]) };
  }
}

/** A moving average over `window` points, for smoothing noisy per-step losses. */
export function movingAverage(values: number[], window: number): number[] {
  const out: number[] = [];
  let sum = 0;
  for (let i = 0; i < values.length; i++) {
    sum += values[i];
    if (i >= window) sum -= values[i - window];
    out.push(sum / Math.min(i + 1, window));
  }
  return out;
}
