// Default boxes: hand-computed boxes, counts, and golden values from the tutorial's formulas.
import { TUTORIAL_BOXES } from "./tutorial_boxes.ts";
import assert from "node:assert";
import * as fs from "node:fs";
import {
  type DefaultBoxes,
  type DefaultBoxesConfig,
  defaultBoxesFromConfig,
  defaultBoxesSpec,
  gridAnchors,
  ssdDefaultBoxes,
  ssdScales,
  storedAnchors,
} from "../lib/default_boxes.ts";
import { boxCoderSpec } from "../lib/box_coder.ts";
import { matcherSpec } from "../lib/matcher.ts";
import { postprocessSpec } from "../lib/postprocess.ts";
import { parseYaml, type Spec, validate } from "../lib/config.ts";
import { ConfigError } from "../lib/errors.ts";

const FIXTURE = new URL("./fixtures/anchors/tutorial_formulas_golden.json", import.meta.url);
const golden = JSON.parse(fs.readFileSync(FIXTURE, "utf8"));

const TUTORIAL = TUTORIAL_BOXES;
const MODELZOO_SSD300 = {
  imageSize: 300,
  featureSizes: [19, 10, 5, 3, 2, 1],
  steps: [16, 32, 64, 100, 150, 300],
  minScale: 0.2,
  maxScale: 0.95,
  aspectRatios: [[], [2, 3], [2, 3], [2, 3], [2, 3], [2, 3]],
  numDefault: [3, 6, 6, 6, 6, 6],
  lowestLayerScale: 0.1,
  lowestLayerRatio: 2,
};
const FPN = {
  imageShape: [640, 640],
  steps: [8, 16, 32, 64, 128],
  anchorScale: 4,
  scalesPerOctave: 2,
  aspectRatios: [1, 2, 0.5],
};

const f = Math.fround;
const row = (a: Float32Array, i: number) => Array.from(a.subarray(4 * i, 4 * i + 4));
const close = (actual: number[], expected: number[], tol = 1e-6) =>
  assert.ok(actual.every((v, k) => Math.abs(v - expected[k]) <= tol), `${actual} != ${expected}`);

Deno.test("the tutorial's scales run linearly from 0.1 to 0.95 in steps of 0.17, then 1.0", () => {
  close(ssdScales(0.1, 0.95, 6), [0.1, 0.27, 0.44, 0.61, 0.78, 0.95, 1.0], 1e-12);
});

Deno.test("the tutorial's 1x1 last layer on a 300 image gives four boxes computable on paper", () => {
  const b = ssdDefaultBoxes(TUTORIAL);
  const last = b.count - 4;
  // Centre (0 + 0.5) / (300 / 300) = 0.5; scale 0.95; ratio 2: w = 0.95·√2, h = 0.95/√2; extra √(0.95·1.0).
  close(row(b.centers, last), [0.5, 0.5, 0.95, 0.95]);
  close(row(b.centers, last + 1), [0.5, 0.5, 0.95 / Math.SQRT2, 0.95 * Math.SQRT2]);
  close(row(b.centers, last + 2), [0.5, 0.5, 0.95 * Math.SQRT2, 0.95 / Math.SQRT2]);
  close(row(b.centers, last + 3), [0.5, 0.5, Math.sqrt(0.95), Math.sqrt(0.95)]);
  // Corners are centre ± size / 2, unclipped (the tutorial does not clip default boxes).
  close(row(b.corners, last + 1), [
    0.5 - 0.95 / Math.SQRT2 / 2,
    0.5 - 0.95 * Math.SQRT2 / 2,
    0.5 + 0.95 / Math.SQRT2 / 2,
    1.1717514,
  ]);
  assert.ok(b.corners[4 * (last + 1) + 1] < 0, "the wide box sticks out of the image on the left");
});

Deno.test("the tutorial's first layer starts at centre 4/300 with a 0.1 square and runs x fastest", () => {
  const b = ssdDefaultBoxes(TUTORIAL);
  const c0 = 0.5 * 8 / 300; // (j + 0.5) / (300 / 8)
  assert.deepStrictEqual(row(b.centers, 0), [f(c0), f(c0), f(0.1), f(0.1)]);
  close(row(b.corners, 0), [c0 - 0.05, c0 - 0.05, c0 + 0.05, c0 + 0.05]);
  // Box 4 is the next cell in x (j = 1), box 38 * 4 the next row (i = 1).
  close(row(b.centers, 4), [c0, 1.5 * 8 / 300, 0.1, 0.1]);
  close(row(b.centers, 38 * 4), [1.5 * 8 / 300, c0, 0.1, 0.1]);
  // Within a cell: (s, s), (w, h) = (s√2, s/√2) stored as h, w, then (h, w) swapped, then √(s·s').
  close(row(b.centers, 1).slice(2), [0.1 / Math.SQRT2, 0.1 * Math.SQRT2]);
  close(row(b.centers, 3).slice(2), [Math.sqrt(0.1 * 0.27), Math.sqrt(0.1 * 0.27)]);
  // Last box of the first layer: cell (37, 37), the extra square.
  const c37 = 37.5 * 8 / 300;
  close(row(b.centers, 5775), [c37, c37, Math.sqrt(0.1 * 0.27), Math.sqrt(0.1 * 0.27)]);
  // First box of the second layer: centre 0.5 · 16 / 300, scale 0.27.
  close(row(b.centers, 5776), [8 / 300, 8 / 300, 0.27, 0.27]);
});

Deno.test("the tutorial's SSD300-VGG16 has 8732 boxes: 4, 6, 6, 6, 4, 4 per cell", () => {
  const b = ssdDefaultBoxes(TUTORIAL);
  assert.strictEqual(b.count, 8732);
  assert.deepStrictEqual(b.perLayer, [38 * 38 * 4, 19 * 19 * 6, 10 * 10 * 6, 5 * 5 * 6, 3 * 3 * 4, 1 * 1 * 4]);
  assert.strictEqual(b.centers.length, 8732 * 4);
});

Deno.test("the ModelZoo ssd300 (MobileNetV2) has 1917 boxes with a reduced lowest layer", () => {
  const b = ssdDefaultBoxes(MODELZOO_SSD300);
  assert.strictEqual(b.count, 1917);
  assert.deepStrictEqual(b.perLayer, [1083, 600, 150, 54, 24, 6]);
  // Lowest layer: (0.1, 0.1), then scale 0.2 with ratio 2, no extra square. Centre 0.5 · 16 / 300.
  const c = 8 / 300;
  close(row(b.centers, 0), [c, c, 0.1, 0.1]);
  close(row(b.centers, 1), [c, c, 0.2 / Math.SQRT2, 0.2 * Math.SQRT2]);
  close(row(b.centers, 2), [c, c, 0.2 * Math.SQRT2, 0.2 / Math.SQRT2]);
  close(row(b.centers, 3), [c, 3 * c, 0.1, 0.1]); // next cell in x
});

Deno.test("the FPN grid anchors have 6 per cell and 51150 in all on a 640 image", () => {
  const b = gridAnchors(FPN);
  assert.strictEqual(b.count, 51150);
  assert.deepStrictEqual(b.perLayer, [80 * 80 * 6, 40 * 40 * 6, 20 * 20 * 6, 10 * 10 * 6, 5 * 5 * 6]);
  // First cell: centre 4 px, base side 4 · 8 = 32 px; ratio 1 at scales 1 and √2.
  close(row(b.centers, 0), [4 / 640, 4 / 640, 32 / 640, 32 / 640]);
  close(row(b.centers, 1), [4 / 640, 4 / 640, 32 * Math.SQRT2 / 640, 32 * Math.SQRT2 / 640]);
  // Ratio 2 (w/h): h = 32/√2, w = 32·√2.
  close(row(b.centers, 2), [4 / 640, 4 / 640, 32 / Math.SQRT2 / 640, 32 * Math.SQRT2 / 640]);
  // Last box: level 128, cell (4, 4) centred at 576 px, ratio 0.5 at scale √2: h = 2 · 512, w = 512.
  close(row(b.centers, b.count - 1), [0.9, 0.9, 1.6, 0.8]);
  close(row(b.corners, b.count - 1), [0.1, 0.5, 1.7, 1.3]);
});

function checkGolden(name: string, boxes: DefaultBoxes) {
  const g = golden[name];
  assert.strictEqual(boxes.count, g.count);
  assert.deepStrictEqual(boxes.perLayer, g.perLayer);
  for (const { index, centers, corners } of g.boxes) {
    // Same operations in the same precision: equal to the last bit.
    assert.deepStrictEqual(row(boxes.centers, index), centers, `${name} centers[${index}]`);
    assert.deepStrictEqual(row(boxes.corners, index), corners, `${name} corners[${index}]`);
  }
}

Deno.test("the tutorial boxes equal the numpy golden values bit for bit", () => {
  checkGolden("tutorial_ssd300_vgg16", ssdDefaultBoxes(TUTORIAL));
});

Deno.test("the ModelZoo ssd300 and ssd_vgg16 boxes equal the numpy golden values bit for bit", () => {
  checkGolden("modelzoo_ssd300", ssdDefaultBoxes(MODELZOO_SSD300));
  checkGolden(
    "modelzoo_ssd_vgg16",
    ssdDefaultBoxes({ ...MODELZOO_SSD300, featureSizes: [38, 19, 10, 5, 3, 1], steps: [8, 16, 32, 64, 100, 300] }),
  );
});

Deno.test("the FPN grid anchors equal the numpy golden values bit for bit", () => {
  checkGolden("modelzoo_fpn_640", gridAnchors(FPN));
});

Deno.test("a wrong numDefault is refused with the level named", () => {
  assert.throws(() => ssdDefaultBoxes({ ...TUTORIAL, numDefault: [4, 6, 6, 6, 6, 4] }), /level 4: 4 boxes per cell/);
  assert.throws(() => ssdDefaultBoxes({ ...TUTORIAL, steps: [8, 16] }), /one entry per level/);
  assert.throws(() => gridAnchors({ ...FPN, steps: [8, 100] }), /not a multiple of step 100/);
});

Deno.test("stored anchors are converted from every layout to both of ours", () => {
  const expected = [0.5, 0.25, 0.2, 0.1];
  for (
    const [format, data] of [
      ["cy_cx_h_w", [0.5, 0.25, 0.2, 0.1]],
      ["cx_cy_w_h", [0.25, 0.5, 0.1, 0.2]],
      ["y1_x1_y2_x2", [0.4, 0.2, 0.6, 0.3]],
    ] as const
  ) {
    const b = storedAnchors(Float32Array.from(data), { format });
    assert.strictEqual(b.count, 1);
    close(row(b.centers, 0), expected);
    close(row(b.corners, 0), [0.4, 0.2, 0.6, 0.3]);
  }
  assert.throws(() => storedAnchors([0.5, 0.5, 0, 0.1], { format: "cy_cx_h_w" }), /no area/);
  assert.throws(() => storedAnchors([1, 2, 3], { format: "cy_cx_h_w" }), /multiple of 4/);
});

const sectionsSpec: Spec = {
  type: "object",
  fields: { anchors: defaultBoxesSpec, box_coder: boxCoderSpec, matcher: matcherSpec, postprocess: postprocessSpec },
};

Deno.test("each configs/anchors yaml validates and gives its model's box count", () => {
  const expected: Record<string, number> = {
    "ssd300_vgg16.yaml": 8732,
    "ssd300_mobilenetv2.yaml": 1917,
    "ssd_mobilenetv1_fpn.yaml": 51150,
    "ssd_resnet50_fpn.yaml": 51150,
  };
  for (const [name, count] of Object.entries(expected)) {
    const file = new URL(`../configs/anchors/${name}`, import.meta.url);
    const cfg = validate(parseYaml(fs.readFileSync(file, "utf8"), name), sectionsSpec, { file: name }) as {
      anchors: DefaultBoxesConfig;
    };
    const boxes = defaultBoxesFromConfig(cfg.anchors, { file: name });
    assert.strictEqual(boxes.count, count, name);
  }
});

function tutorialConfig(over: Partial<DefaultBoxesConfig> = {}): DefaultBoxesConfig {
  const raw = {
    generator: "ssd",
    img_shape: [300, 300],
    feature_size: [38, 19, 10, 5, 3, 1],
    steps: [8, 16, 32, 64, 100, 300],
    min_scale: 0.1,
    max_scale: 0.95,
    aspect_ratios: [[2], [2, 3], [2, 3], [2, 3], [2], [2]],
    num_default: [4, 6, 6, 6, 4, 4],
    num_boxes: 8732,
    ...over,
  };
  return validate(raw, defaultBoxesSpec) as DefaultBoxesConfig;
}

Deno.test("a config missing a number of its generator is refused naming the key", () => {
  assert.throws(() => defaultBoxesFromConfig(tutorialConfig({ min_scale: null })), (e: unknown) => {
    return e instanceof ConfigError && /key "anchors\.min_scale": is required for generator "ssd"/.test(e.message);
  });
  assert.throws(
    () => defaultBoxesFromConfig({ ...tutorialConfig(), generator: "grid", anchor_scale: 4, grid_aspect_ratios: [1] }),
    /anchors\.scales_per_octave/,
  );
});

Deno.test("a config whose counts disagree with its numbers is refused naming the key", () => {
  assert.throws(() => defaultBoxesFromConfig(tutorialConfig({ num_boxes: 8733 })), /anchors\.num_boxes.*gives 8732/);
  assert.throws(
    () => defaultBoxesFromConfig(tutorialConfig({ num_default: [4, 6, 6, 6, 6, 4] })),
    /anchors\.num_default/,
  );
  assert.throws(
    () => defaultBoxesFromConfig(tutorialConfig({ aspect_ratios: [[], [2], [2], [2], [2], [2]], num_default: null })),
    /anchors\.lowest_layer_scale/,
  );
});

Deno.test("a stored-anchors config takes the anchors given and checks their count", () => {
  const raw = { generator: "stored", img_shape: [320, 320], stored_format: "y1_x1_y2_x2", num_boxes: 2 };
  const cfg = validate(raw, defaultBoxesSpec) as DefaultBoxesConfig;
  const b = defaultBoxesFromConfig(cfg, { stored: new Float32Array([0, 0, 1, 1, 0, 0, 0.5, 0.5]) });
  assert.deepStrictEqual(row(b.centers, 1), [0.25, 0.25, 0.5, 0.5]);
  assert.throws(() => defaultBoxesFromConfig(cfg), /needs the anchors themselves/);
  assert.throws(() => defaultBoxesFromConfig(cfg, { stored: new Float32Array([0, 0, 0.5, 0.5]) }), /expected 2 boxes/);
});

Deno.test("a stored-anchors config may carry its anchors in its own stored list", () => {
  const raw = { generator: "stored", img_shape: [320, 320], stored_format: "y1_x1_y2_x2", stored: [0, 0, 1, 1] };
  const cfg = validate(raw, defaultBoxesSpec) as DefaultBoxesConfig;
  assert.deepStrictEqual(Array.from(defaultBoxesFromConfig(cfg).centers), [0.5, 0.5, 1, 1]);
  // Anchors passed in win over the list; other generators default it to null.
  assert.strictEqual(defaultBoxesFromConfig(cfg, { stored: [0, 0, 0.5, 0.5] }).centers[2], 0.5);
  assert.strictEqual(tutorialConfig().stored, null);
});
