// Notebook views: pictures have the expected size, tables and summaries the expected numbers, and a trained
// small model is reused only when its config is the same.
import assert from "node:assert";
import sharp from "sharp";
import { setBackend } from "../lib/engine/backend.ts";
import { loadConfig } from "../lib/config.ts";
import { ssdDefaultBoxes } from "../lib/default_boxes.ts";
import { matchAndEncode } from "../lib/matcher.ts";
import {
  anchorLevels,
  cropBoxes,
  cropPreview,
  defaultBoxesGrid,
  lossCurves,
  markdownTable,
  matchedDefaultBoxes,
  matchSummary,
  modelSummary,
  recordBoxes,
  trainOrReuse,
} from "../lib/notebook_views.ts";
import { anchorsOf, loadSsdConfig } from "../lib/ssd_config.ts";
import { type SynthConfig, synthSpec, writeSynthDataset } from "../lib/synth.ts";
import { readDetectionRecords } from "../lib/mindrecord_ssd.ts";

const data = Deno.makeTempDirSync();
const synth = loadConfig<SynthConfig>("configs/synth.yaml", synthSpec, {
  image_size: "64",
  "splits.train": "8",
  "splits.val": "4",
});
await writeSynthDataset(data, synth, { seed: 3, quiet: true });
const records = readDetectionRecords(`${data}/annotations/instances_train.json`, { images: `${data}/images/train` });
const names = ["background", ...synth.classes];

Deno.test("anchorLevels and modelSummary count the tutorial's 8732 default boxes", () => {
  const cfg = loadSsdConfig("configs/ssd300_vgg16.yaml");
  const levels = anchorLevels(cfg.anchors, anchorsOf(cfg));
  assert.deepStrictEqual(levels.map((l) => l.perCell), [4, 6, 6, 6, 4, 4]);
  assert.deepStrictEqual(levels.map((l) => l.boxes), [5776, 2166, 600, 150, 36, 4]);
  assert.strictEqual(levels.at(-1)!.cumulative, 8732);
  const s = modelSummary(cfg);
  assert.strictEqual(s.anchors, 8732);
  assert.strictEqual(s.featureMaps, "38, 19, 10, 5, 3, 1");
  assert.ok(s.params > 20e6 && s.params <= s.total, `params ${s.params}`);
  assert.match(
    markdownTable(levels),
    /\| 5 \| 1 \| 300 \| 0.95 \| 4 \| 4 \| 8732 \|/,
  );
});

Deno.test("defaultBoxesGrid draws one tile per level", async () => {
  const anchors = ssdDefaultBoxes({
    imageSize: 64,
    featureSizes: [4, 2, 1],
    steps: [16, 32, 64],
    minScale: 0.2,
    maxScale: 0.9,
    aspectRatios: [[2], [2], [2]],
  });
  const png = await defaultBoxesGrid(records[0].image!, anchors, {
    img_shape: [64, 64],
    feature_size: [4, 2, 1],
    steps: [16, 32, 64],
  }, { tile: 100, cols: 3 });
  const meta = await sharp(png).metadata();
  // tiles of 100 + 2 * 30 margin, 3 columns, gaps of 4
  assert.deepStrictEqual([meta.width, meta.height], [3 * 160 + 4 * 4, 160 + 2 * 4]);
});

Deno.test("matchSummary and matchedDefaultBoxes agree with the matcher", () => {
  const anchors = ssdDefaultBoxes({
    imageSize: 64,
    featureSizes: [4, 2, 1],
    steps: [16, 32, 64],
    minScale: 0.2,
    maxScale: 0.9,
    aspectRatios: [[2], [2], [2]],
  });
  const gt = { boxes: [0.1, 0.1, 0.5, 0.4, 0.3, 0.5, 0.95, 0.95], labels: [1, 3] };
  const m = matchAndEncode(gt, anchors, { matchThreshold: 0.5, scaleFactors: [10, 10, 5, 5] });
  const rows = matchSummary(m, anchors, gt.labels, names);
  assert.strictEqual(rows.reduce((s, r) => s + r.matched, 0), m.numMatch);
  assert.deepStrictEqual(rows.map((r) => r.class), ["rectangle", "triangle"]);
  assert.ok(rows.every((r) => r.matched >= 1), "every object gets at least its best default box");
  const drawn = matchedDefaultBoxes(m, anchors, 64);
  assert.strictEqual(drawn.length, m.numMatch);
  assert.ok(drawn.every((d) => d.colour! >= 0 && d.colour! <= 2), "coloured by level");
  assert.strictEqual(matchedDefaultBoxes(m, anchors, 64, { object: 1 }).length, rows[1].matched);
});

Deno.test("cropBoxes keeps or drops every box, and cropPreview renders", async () => {
  const r = records.find((x) => x.labels.length >= 2) ?? records[0];
  const crop = {
    rect: { x: 0, y: 0, w: r.width, h: r.height },
    boxes: Float64Array.from(r.boxes.subarray(0, 4)),
    labels: Int32Array.from(r.labels.subarray(0, 1)),
    kept: [0],
  };
  const boxes = cropBoxes(r, crop, names);
  assert.strictEqual(boxes.length, 1 + r.labels.length);
  assert.strictEqual(boxes.filter((b) => b.label === "dropped").length, r.labels.length - 1);
  assert.deepStrictEqual(recordBoxes(r, names)[0].box, Array.from(r.boxes.subarray(0, 4)));
  const png = await cropPreview(records, names, {
    crop_min_ious: [0.3],
    crop_tries: 50,
    crop_scale: [0.3, 1],
    crop_aspect: [0.5, 2],
  }, { count: 2, cols: 2 });
  assert.strictEqual((await sharp(png).metadata()).width, 2 * 256 + 3 * 4);
});

Deno.test("lossCurves: cross-entropy, focal and SmoothL1 at known points", async () => {
  await setBackend("cpu");
  const { cls, loc } = await lossCurves({ gamma: 2, alpha: 0.75 });
  const at = (s: { x: number[]; y: number[] }, x: number) => s.y[s.x.findIndex((v) => Math.abs(v - x) < 1e-9)];
  assert.ok(Math.abs(at(cls[0], 0.5) - Math.LN2) < 1e-5, "cross-entropy at p = 0.5 is ln 2");
  assert.ok(Math.abs(at(cls[1], 0.5) - 0.25 * 0.75 * Math.LN2) < 1e-5, "focal positive at p = 0.5");
  assert.ok(Math.abs(at(cls[2], 0.5) - 0.25 * 0.25 * Math.LN2) < 1e-5, "focal negative at p = 0.5");
  assert.ok(Math.abs(at(loc[0], 0.5) - 0.125) < 1e-6 && Math.abs(at(loc[0], 2) - 1.5) < 1e-6, "SmoothL1");
});

Deno.test("trainOrReuse trains once and reuses the checkpoint for the same config only", async () => {
  const out = Deno.makeTempDirSync();
  const cfg = (epochs: string) =>
    loadSsdConfig("tests/fixtures/configs/tiny_train.yaml", {
      "data.train.format": "coco",
      "data.train.path": `${data}/annotations/instances_train.json`,
      "data.train.images": `${data}/images/train`,
      "data.val.path": `${data}/annotations/instances_val.json`,
      "data.val.images": `${data}/images/val`,
      "train.epochs": epochs,
    });
  const a = await trainOrReuse(cfg("1"), out);
  assert.strictEqual(a.reused, false);
  const b = await trainOrReuse(cfg("1"), out);
  assert.deepStrictEqual([b.reused, b.checkpoint], [true, a.checkpoint]);
  const c = await trainOrReuse(cfg("2"), out);
  assert.strictEqual(c.reused, false);
});
