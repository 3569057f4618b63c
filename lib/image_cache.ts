/**
 * A cache of decoded, resized training images, filled up to a byte budget.
 *
 * Decoding and resizing (sharp) cost the demo about 2.8 ms of CPU per image,
 * as much as the training step itself on two cores. A sample drawn without a
 * crop needs the same pixels every epoch, so they are kept here after the
 * first decode; a flip is mirrored from the kept copy, which equals sharp's
 * flopped resize byte for byte (tests/image_cache_test.ts). Entries are never
 * evicted: epochs visit images in a fresh random order, so any one image is as
 * likely to come next as another, and a full cache simply stops growing.
 *
 * @module
 */

/** Decoded images, each [S, S, 3] RGB bytes, keyed by record and size. */
export class ImageCache<K extends object = object> {
  readonly #budget: number;
  readonly #entries = new WeakMap<K, Map<string, Uint8Array>>();
  #bytes = 0;
  #hits = 0;
  #misses = 0;

  /** A cache that holds at most `budgetBytes` of pixels (0 keeps nothing). */
  constructor(budgetBytes: number) {
    if (!(budgetBytes >= 0)) throw new RangeError(`Expected budgetBytes to be 0 or more but found ${budgetBytes}`);
    this.#budget = budgetBytes;
  }

  /**
   * The kept pixels of `key` under `variant` (a size and kernel), else what
   * `make` returns, kept if the budget has room.
   *
   * @example
   * ```ts
   * import { strictEqual } from "node:assert";
   * const cache = new ImageCache(8), rec = {};
   * let made = 0;
   * const make = () => Promise.resolve((made++, new Uint8Array(6)));
   * await cache.get(rec, "2", make);
   * await cache.get(rec, "2", make);
   * await cache.get(rec, "3", make); // 6 + 6 bytes would pass the 8-byte budget: made, not kept
   * await cache.get(rec, "3", make);
   * strictEqual(made, 3);
   * ```
   */
  async get(key: K, variant: string, make: () => Promise<Uint8Array>): Promise<Uint8Array> {
    const kept = this.#entries.get(key)?.get(variant);
    if (kept) {
      this.#hits++;
      return kept;
    }
    this.#misses++;
    const made = await make();
    if (this.#bytes + made.byteLength <= this.#budget && !this.#entries.get(key)?.has(variant)) {
      let byVariant = this.#entries.get(key);
      if (!byVariant) this.#entries.set(key, byVariant = new Map());
      byVariant.set(variant, made);
      this.#bytes += made.byteLength;
    }
    return made;
  }

  /** Bytes kept, and lookups served from the cache or not. */
  stats(): { bytes: number; hits: number; misses: number } {
    return { bytes: this.#bytes, hits: this.#hits, misses: this.#misses };
  }
}

/**
 * An [H, W, 3] interleaved image mirrored left to right, as sharp's `flop()`.
 *
 * @example
 * ```ts
 * import { deepStrictEqual } from "node:assert";
 * const rgb = Uint8Array.of(1, 2, 3, 4, 5, 6); // one row of two pixels
 * deepStrictEqual(mirrorRgb(rgb, 2, 1), Uint8Array.of(4, 5, 6, 1, 2, 3));
 * ```
 */
export function mirrorRgb(rgb: Uint8Array, width: number, height: number): Uint8Array {
  const out = new Uint8Array(rgb.length);
  for (let y = 0; y < height; y++) {
    const row = 3 * y * width;
    for (let x = 0; x < width; x++) {
      const s = row + 3 * x, d = row + 3 * (width - 1 - x);
      out[d] = rgb[s];
      out[d + 1] = rgb[s + 1];
      out[d + 2] = rgb[s + 2];
    }
  }
  return out;
}
