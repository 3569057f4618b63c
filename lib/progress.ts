/**
 * A terminal progress bar: count, rate, ETA and free-form fields. On a TTY it
 * redraws one line; elsewhere (CI logs, notebooks) it prints a line every few
 * seconds so logs stay short.
 *
 * @module
 */
import process from "node:process";

/** Options for {@linkcode Progress}. */
export interface ProgressOptions {
  /** Unit shown after the rate, e.g. "img" or "B". */
  unit?: string;
  /** Format counts as bytes (KiB, MiB ...). */
  bytes?: boolean;
  /** Stream to write to; stderr by default. */
  write?: (s: string) => void;
  /** Force or disable TTY-style redraws. */
  tty?: boolean;
  /** Seconds between lines when not a TTY. */
  interval?: number;
  /** Print nothing. */
  quiet?: boolean;
}

/** Formats a byte count with binary prefixes. */
export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i === 0 ? n.toFixed(0) : n.toFixed(1)} ${units[i]}`;
}

/** Formats seconds as h:mm:ss or m:ss. */
export function formatDuration(s: number): string {
  if (!Number.isFinite(s) || s < 0) return "?";
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  const mm = String(m).padStart(h > 0 ? 2 : 1, "0"), ss = String(sec).padStart(2, "0");
  return h > 0 ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

/**
 * A progress bar over `total` items (or an unknown total when 0).
 *
 * @example
 * ```ts
 * const lines: string[] = [];
 * const bar = new Progress("work", 10, { write: (s) => lines.push(s), tty: false });
 * for (let i = 0; i < 10; i++) bar.tick();
 * bar.done();
 * if (!lines.at(-1)!.includes("10/10")) throw new Error("missing count");
 * ```
 */
export class Progress {
  #label: string;
  #total: number;
  #count = 0;
  #start = performance.now();
  #lastDraw = 0;
  #opts: Required<Omit<ProgressOptions, "unit">> & { unit: string };
  #fields = "";

  constructor(label: string, total: number, options: ProgressOptions = {}) {
    this.#label = label;
    this.#total = total;
    this.#opts = {
      unit: options.unit ?? "it",
      bytes: options.bytes ?? false,
      write: options.write ?? ((s) => process.stderr.write(s)),
      tty: options.tty ?? (process.stderr.isTTY === true),
      interval: options.interval ?? 5,
      quiet: options.quiet ?? false,
    };
  }

  /** Items done so far. */
  get count(): number {
    return this.#count;
  }

  /** Sets the total (for transfers whose size becomes known late). */
  setTotal(total: number): void {
    this.#total = total;
  }

  /** Advances by `n` and optionally replaces the free-form fields (e.g. "loss 1.23"). */
  tick(n = 1, fields?: string): void {
    this.#count += n;
    if (fields !== undefined) this.#fields = fields;
    this.#draw(false);
  }

  /** Sets the absolute count. */
  update(count: number, fields?: string): void {
    this.#count = count;
    if (fields !== undefined) this.#fields = fields;
    this.#draw(false);
  }

  /** Draws the final line. */
  done(fields?: string): void {
    if (fields !== undefined) this.#fields = fields;
    this.#draw(true);
  }

  /** The current line, without terminal control codes. */
  line(): string {
    const elapsed = (performance.now() - this.#start) / 1000;
    const rate = elapsed > 0 ? this.#count / elapsed : 0;
    const fmt = (n: number) => this.#opts.bytes ? formatBytes(n) : String(n);
    const rateText = this.#opts.bytes
      ? `${formatBytes(rate)}/s`
      : `${rate >= 10 ? rate.toFixed(0) : rate.toFixed(2)} ${this.#opts.unit}/s`;
    let bar = "";
    let eta = "";
    if (this.#total > 0) {
      const frac = Math.min(1, this.#count / this.#total);
      const width = 24;
      const full = Math.round(frac * width);
      bar = `[${"#".repeat(full)}${".".repeat(width - full)}] ${(frac * 100).toFixed(0).padStart(3)}% `;
      eta = ` eta ${formatDuration(rate > 0 ? (this.#total - this.#count) / rate : NaN)}`;
    }
    const count = this.#total > 0 ? `${fmt(this.#count)}/${fmt(this.#total)}` : fmt(this.#count);
    const f = this.#fields ? ` | ${this.#fields}` : "";
    return `${this.#label} ${bar}${count} ${rateText} ${formatDuration(elapsed)}${eta}${f}`;
  }

  #draw(final: boolean): void {
    if (this.#opts.quiet) return;
    const now = performance.now();
    if (this.#opts.tty) {
      if (!final && now - this.#lastDraw < 100) return;
      this.#lastDraw = now;
      this.#opts.write(`\r\x1b[2K${this.line()}${final ? "\n" : ""}`);
    } else {
      if (!final && now - this.#lastDraw < this.#opts.interval * 1000) return;
      this.#lastDraw = now;
      this.#opts.write(`${this.line()}\n`);
    }
  }
}
