import assert from "node:assert";
import sharp from "sharp";
import { type AugmentConfig, augmentSample, augmentSpec } from "../lib/augment.ts";
import { validate } from "../lib/config.ts";
import type { DetectionRecord } from "../lib/detection_record.ts";
import { ImageCache } from "../lib/image_cache.ts";
import { createRng } from "../lib/rng.ts";

/** A noisy JPEG of `w` x `h` with one box, as a record carrying its bytes. */
async function noisyRecord(w: number, h: number, seed: number): Promise<DetectionRecord> {
  const rng = createRng(seed);
  const raw = Uint8Array.from({ length: w * h * 3 }, () => Math.floor(rng() * 256));
  const jpg = await sharp(raw, { raw: { width: w, height: h, channels: 3 } }).jpeg().toBuffer();
  return {
    imgId: seed,
    file: `noise${seed}.jpg`,
    width: w,
    height: h,
    boxes: new Float64Array([w / 8, h / 4, w / 2, (3 * h) / 4]), // off-centre: a flip moves it
    labels: new Int32Array([1]),
    iscrowd: new Uint8Array([0]),
    image: new Uint8Array(jpg),
  };
}

Deno.test("augmentSample() with an image cache gives the same samples, flips and crops included", async () => {
  const base = validate({}, augmentSpec) as AugmentConfig;
  // Uncropped only (every sample can come from the cache), and mixed with IoU crops (which bypass it).
  const configs: AugmentConfig[] = [{ ...base, crop_min_ious: [null] }, { ...base, crop_min_ious: [null, 0.3] }];
  // Odd sizes, down- and upscaled, so a mirrored copy that rounded differently from sharp's flop would show.
  const sizes: [number, number, number][] = [[37, 23, 16], [160, 160, 128], [50, 71, 64]];
  for (const cfg of configs) {
    for (const [w, h, size] of sizes) {
      const rec = await noisyRecord(w, h, w + h);
      const cache = new ImageCache(2 ** 20);
      let flips = 0;
      for (let seed = 0; seed < 10; seed++) {
        const plain = await augmentSample(rec, size, createRng(seed), cfg);
        const cached = await augmentSample(rec, size, createRng(seed), cfg, cache);
        const what = `${w}x${h} -> ${size}, crops ${cfg.crop_min_ious}, seed ${seed}`;
        assert.deepStrictEqual(cached.image, plain.image, what);
        assert.deepStrictEqual([cached.boxes, cached.labels], [plain.boxes, plain.labels], what);
        if (cfg.crop_min_ious.length === 1 && Math.abs(plain.boxes[1] - 1 / 8) > 1e-6) flips++;
      }
      const st = cache.stats();
      assert.ok(st.hits > 0, `${w}x${h}: the cache served nothing`);
      assert.strictEqual(st.bytes, size * size * 3, "one unflipped copy is kept");
      if (cfg.crop_min_ious.length === 1) assert.ok(flips > 0 && flips < 10, `${flips} of 10 samples flipped`);
    }
  }
});

Deno.test("ImageCache keeps what fits its budget, makes each kept entry once, and keys by variant", async () => {
  const cache = new ImageCache(10);
  const a = {}, b = {};
  let made = 0;
  const make = (n: number) => () => Promise.resolve((made++, new Uint8Array(n)));
  // Two concurrent misses of one key: both make, one is kept.
  await Promise.all([cache.get(a, "s", make(4)), cache.get(a, "s", make(4))]);
  await cache.get(a, "s", make(4));
  assert.deepStrictEqual([made, cache.stats()], [2, { bytes: 4, hits: 1, misses: 2 }]);
  await cache.get(a, "t", make(4)); // another variant of the same record
  await cache.get(b, "s", make(4)); // 12 bytes would pass the budget: made, not kept
  await cache.get(b, "s", make(4));
  assert.deepStrictEqual([made, cache.stats().bytes], [5, 8]);
  assert.throws(() => new ImageCache(-1), RangeError);
});
