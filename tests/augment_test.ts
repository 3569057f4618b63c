import assert from "node:assert";
import sharp from "sharp";
import { augmentSample, colourJitter, denormalise, evalSample, randomSampleCrop } from "../lib/augment.ts";
import { validate } from "../lib/config.ts";
import { type AugmentConfig, augmentSpec } from "../lib/augment.ts";
import type { DetectionRecord } from "../lib/detection_record.ts";
import { createRng } from "../lib/rng.ts";

const cfg = validate({}, augmentSpec) as AugmentConfig;

Deno.test("randomSampleCrop() keeps boxes whose centre is inside, clipped and shifted", () => {
  const boxes = new Float64Array([10, 10, 30, 30, 60, 60, 90, 90, 40, 0, 60, 100]);
  const labels = new Int32Array([1, 2, 3]);
  let cropped = 0;
  for (let seed = 0; seed < 200; seed++) {
    const r = randomSampleCrop(boxes, labels, 100, 100, createRng(seed), cfg);
    const { x, y, w, h } = r.rect;
    assert.ok(x >= 0 && y >= 0 && x + w <= 100 && y + h <= 100);
    if (w < 100 || h < 100) {
      cropped++;
      assert.ok(w >= 29 && h >= 29 && h / w >= 0.5 - 0.05 && h / w <= 2 + 0.1, `crop ${w}x${h}`);
    }
    assert.ok(r.labels.length >= 1);
    r.kept.forEach((i, k) => {
      const cx = (boxes[4 * i] + boxes[4 * i + 2]) / 2, cy = (boxes[4 * i + 1] + boxes[4 * i + 3]) / 2;
      if (w < 100 || h < 100) assert.ok(cx > x && cx < x + w && cy > y && cy < y + h, "centre inside the crop");
      assert.strictEqual(r.labels[k], labels[i]);
      const b = r.boxes.subarray(4 * k, 4 * k + 4);
      assert.deepStrictEqual(Array.from(b), [
        Math.max(boxes[4 * i], x) - x,
        Math.max(boxes[4 * i + 1], y) - y,
        Math.min(boxes[4 * i + 2], x + w) - x,
        Math.min(boxes[4 * i + 3], y + h) - y,
      ]);
    });
  }
  assert.ok(cropped > 50, `only ${cropped} of 200 draws cropped`);
});

Deno.test("colourJitter() leaves the image alone at factor 1 and blends toward grey at saturation 0", () => {
  const px = new Float32Array([200, 100, 50, 10, 20, 30]);
  const same = px.slice();
  colourJitter(same, { brightness: 1, contrast: 1, saturation: 1 });
  assert.deepStrictEqual(same, px);
  const grey = px.slice();
  colourJitter(grey, { brightness: 1, contrast: 1, saturation: 0 });
  const g0 = 0.299 * 200 + 0.587 * 100 + 0.114 * 50;
  for (let c = 0; c < 3; c++) assert.ok(Math.abs(grey[c] - g0) < 1e-3);
  const bright = px.slice();
  colourJitter(bright, { brightness: 2, contrast: 1, saturation: 1 });
  assert.deepStrictEqual(Array.from(bright), [255, 200, 100, 20, 40, 60]);
});

/** A 40x20 image: black, with a white block at x 30..40, y 5..15, and a record for it. */
async function blockRecord(): Promise<DetectionRecord> {
  const raw = new Uint8Array(40 * 20 * 3);
  for (let y = 5; y < 15; y++) for (let x = 30; x < 40; x++) raw.fill(255, 3 * (y * 40 + x), 3 * (y * 40 + x) + 3);
  const png = await sharp(raw, { raw: { width: 40, height: 20, channels: 3 } }).png().toBuffer();
  return {
    imgId: 1,
    file: "block.png",
    width: 40,
    height: 20,
    boxes: new Float64Array([30, 5, 40, 15]),
    labels: new Int32Array([1]),
    iscrowd: new Uint8Array([0]),
    image: new Uint8Array(png),
  };
}

Deno.test("augmentSample() moves boxes with the pixels, flips included", async () => {
  const rec = await blockRecord();
  const plain: AugmentConfig = { ...cfg, crop_min_ious: [null], brightness: 0, contrast: 0, saturation: 0 };
  let flipped = 0, kept = 0;
  for (let seed = 0; seed < 12; seed++) {
    const s = await augmentSample(rec, 32, createRng(seed), { ...plain, crop_min_ious: seed % 2 ? [null] : [0.1] });
    const px = denormalise(s.image, plain);
    const [y1, x1, y2, x2] = s.boxes;
    // Inside the box the image is white, just outside it is black.
    const at = (x: number, y: number) => px[3 * (Math.floor(y * 32) * 32 + Math.floor(x * 32))];
    assert.ok(at((x1 + x2) / 2, (y1 + y2) / 2) > 200, `seed ${seed}: centre of the box is not white`);
    if (x1 > 0.1) assert.ok(at(x1 - 0.06, (y1 + y2) / 2) < 60, `seed ${seed}: left of the box is not black`);
    if (x2 < 0.9) assert.ok(at(x2 + 0.06, (y1 + y2) / 2) < 60, `seed ${seed}: right of the box is not black`);
    if (x1 < 0.5) flipped++;
    kept++;
  }
  assert.ok(flipped > 0 && flipped < kept, "some samples are flipped, some not");
});

Deno.test("evalSample() resizes without augmentation and normalises boxes y first", async () => {
  const rec = await blockRecord();
  const s = await evalSample(rec, 16, cfg);
  assert.deepStrictEqual(Array.from(s.boxes), [0.25, 0.75, 0.75, 1]);
  assert.strictEqual(s.image.length, 16 * 16 * 3);
});

Deno.test("augmentSample() names the record of an undecodable image", async () => {
  const rec = { ...(await blockRecord()), file: "broken.jpg", imgId: 9, image: new Uint8Array([0xff, 0xd8, 1, 2, 3]) };
  await assert.rejects(() => augmentSample(rec, 16, createRng(1), cfg), /broken\.jpg \(image id 9\)/);
});
