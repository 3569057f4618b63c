// Post-processing: hand-made detections through every option, and the tutorial's eval path on random data
// (tests/tutorial_reference.ts, written from the tutorial's text).
import { tutorialBoxes } from "./tutorial_boxes.ts";
import assert from "node:assert";
import {
  type Detections,
  postprocess,
  type PostprocessConfig,
  type PostprocessOptions,
  postprocessOptionsFromConfig,
  postprocessSpec,
} from "../lib/postprocess.ts";
import { refCocoMetricsUpdate, refDecode } from "./tutorial_reference.ts";
import { validate } from "../lib/config.ts";
import { createRng, uniform } from "../lib/rng.ts";

const SF = [10, 10, 5, 5];
// Three default boxes (cy, cx, h, w); with zero regressions they decode to themselves:
// a0 -> [0.2, 0.2, 0.4, 0.4], a1 -> [0.21, 0.2, 0.41, 0.4] (IoU with a0 0.038 / 0.042 = 0.905),
// a2 -> [0.6, 0.6, 0.8, 0.8] (disjoint).
const ANCHORS = new Float32Array([0.3, 0.3, 0.2, 0.2, 0.31, 0.3, 0.2, 0.2, 0.7, 0.7, 0.2, 0.2]);
// Columns: background, cat, dog.
const SCORES = new Float32Array([
  ...[0.1, 0.9, 0.05], // a0
  ...[0.1, 0.2, 0.8], // a1
  ...[0.5, 0.1, 0.3], // a2
]);
const BASE: PostprocessOptions = { anchors: ANCHORS, scaleFactors: SF, scoreThreshold: 0.1, iouThreshold: 0.6 };

const summary = (d: Detections) => Array.from(d.anchorIndices, (a, r) => [a, d.labels[r], +d.scores[r].toFixed(4)]);
const run = (over: Partial<PostprocessOptions> = {}, loc = new Float32Array(12), scores = SCORES) =>
  postprocess(loc, scores, { ...BASE, ...over });

Deno.test("per-class NMS keeps overlapping boxes of different classes and drops same-class ones", () => {
  // cat: a0 0.9 and a1 0.2 (a2's 0.1 is not > 0.1); a1 overlaps a0 -> dropped. dog: a1 0.8, a2 0.3.
  const d = run();
  assert.deepStrictEqual(summary(d), [[0, 1, 0.9], [1, 2, 0.8], [2, 2, 0.3]]);
  assert.deepStrictEqual(Array.from(d.boxes.subarray(0, 4)).map((v) => +v.toFixed(6)), [0.2, 0.2, 0.4, 0.4]);
});

Deno.test("a score equal to the threshold passes only with keepAtThreshold (>=)", () => {
  assert.deepStrictEqual(summary(run({ keepAtThreshold: true })), [[0, 1, 0.9], [2, 1, 0.1], [1, 2, 0.8], [2, 2, 0.3]]);
});

Deno.test("class-agnostic NMS lets each box compete with its best class across classes", () => {
  // Best classes: a0 cat 0.9, a1 dog 0.8, a2 dog 0.3; a1 overlaps a0 -> dropped although it is a dog.
  assert.deepStrictEqual(summary(run({ nmsMode: "class_agnostic" })), [[0, 1, 0.9], [2, 2, 0.3]]);
});

Deno.test("caps: per class after NMS, per image by score, and candidates before NMS", () => {
  assert.deepStrictEqual(summary(run({ maxPerClass: 1 })), [[0, 1, 0.9], [1, 2, 0.8]]);
  // The two best of the image, still listed class by class.
  assert.deepStrictEqual(summary(run({ maxPerImage: 2, keepAtThreshold: true })), [[0, 1, 0.9], [1, 2, 0.8]]);
  // Only the top dog candidate (a1) enters NMS.
  assert.deepStrictEqual(summary(run({ preNmsTopK: 1 })), [[0, 1, 0.9], [1, 2, 0.8]]);
});

Deno.test("score order lists all detections by score, ties in class order", () => {
  const tied = SCORES.slice();
  tied[2 * 3 + 2] = 0.9; // a2 dog now ties a0 cat
  assert.deepStrictEqual(summary(run({ order: "score" }, undefined, tied)), [[0, 1, 0.9], [2, 2, 0.9], [1, 2, 0.8]]);
});

Deno.test("without a background column every column is a class, labelled column + offset", () => {
  // Column 0 now counts: a2 0.5 passes (a0 and a1 at 0.1 do not); labels become 1, 2, 3.
  const d = run({ backgroundIndex: null, labelOffset: 1 });
  assert.deepStrictEqual(summary(d), [[2, 1, 0.5], [0, 2, 0.9], [1, 3, 0.8], [2, 3, 0.3]]);
});

Deno.test("regressions are decoded against the default boxes before anything else", () => {
  const loc = new Float32Array(12);
  loc[0] = 1; // a0 moves down by 1 / 10 of its height: 0.02
  const d = run({ maxPerClass: 1 }, loc);
  assert.deepStrictEqual(Array.from(d.boxes.subarray(0, 4)).map((v) => +v.toFixed(6)), [0.22, 0.2, 0.42, 0.4]);
});

Deno.test("pixel output scales y by the image height and x by its width", () => {
  const d = run({ imageSize: { height: 200, width: 400 }, maxPerClass: 1 });
  assert.deepStrictEqual(Array.from(d.boxes.subarray(0, 4)).map((v) => +v.toFixed(3)), [40, 80, 80, 160]);
});

Deno.test("clipping before NMS changes which boxes overlap; after NMS only the output; none leaves boxes alone", () => {
  // b0 spans y -0.2..0.2, b1 y 0..0.2, same x: IoU 0.5 unclipped, 1 once b0 is clipped.
  const anchors = new Float32Array([0, 0.5, 0.4, 0.2, 0.1, 0.5, 0.2, 0.2]);
  const scores = new Float32Array([0, 0.9, 0, 0.8]);
  const go = (clip: "before_nms" | "after_nms" | "none") =>
    postprocess(new Float32Array(8), scores, { ...BASE, anchors, clip });
  const rounded = (d: Detections) => Array.from(d.boxes).map((v) => +v.toFixed(6));
  assert.deepStrictEqual(rounded(go("before_nms")), [0, 0.4, 0.2, 0.6]);
  assert.deepStrictEqual(rounded(go("after_nms")), [0, 0.4, 0.2, 0.6, 0, 0.4, 0.2, 0.6]);
  assert.deepStrictEqual(rounded(go("none")), [-0.2, 0.4, 0.2, 0.6, 0, 0.4, 0.2, 0.6]);
});

Deno.test("a one-class face model takes sigmoid of logit 1 and labels it 1", () => {
  // Logits [background, face]: sigmoid(2) = 0.8808 passes 0.5, sigmoid(-1) = 0.2689 does not.
  const logits = new Float32Array([0, 2, 0, -1, 0, -3]);
  const d = run({ activation: "sigmoid", scoreThreshold: 0.5 }, undefined, logits);
  assert.deepStrictEqual(summary(d), [[0, 1, 0.8808]]);
});

Deno.test("softmax scores are computed per default box over its columns", () => {
  // [0, ln 3]: probabilities 0.25, 0.75.
  const logits = new Float32Array([0, Math.log(3), 0, 0, 0, -10]);
  const d = run({ activation: "softmax", scoreThreshold: 0.6 }, undefined, logits);
  assert.deepStrictEqual(summary(d), [[0, 1, 0.75]]);
});

Deno.test("an image with nothing above the threshold gives empty arrays", () => {
  const d = run({ scoreThreshold: 0.95 });
  assert.strictEqual(d.count, 0);
  assert.deepStrictEqual([d.boxes.length, d.scores.length, d.labels.length], [0, 0, 0]);
});

Deno.test("mismatched shapes are refused", () => {
  assert.throws(() => postprocess(new Float32Array(8), SCORES, BASE), /loc has 2 boxes, anchors 3/);
  assert.throws(() => postprocess(new Float32Array(12), new Float32Array(10), BASE), /not 3 x C/);
});

Deno.test("with the tutorial's settings the output equals the tutorial's eval path on random predictions", () => {
  // Random default boxes (cy, cx, h, w): the reference needs no generator of the library's.
  const gen = createRng(20);
  const anchors = Float32Array.from(
    { length: 4 * 300 },
    (_, k) => k % 4 < 2 ? uniform(gen, 0, 1) : uniform(gen, 0.05, 0.6),
  );
  const a = 300, numClasses = 6, rng = createRng(21);
  const loc = Float32Array.from({ length: 4 * a }, () => uniform(rng, -1, 1));
  const scores = Float32Array.from({ length: a * numClasses }, () => uniform(rng, 0, 1) ** 3);
  const d = postprocess(loc, scores, {
    anchors,
    scaleFactors: SF,
    scoreThreshold: 0.1,
    iouThreshold: 0.6,
    maxPerClass: 100,
    imageSize: { height: 480, width: 640 },
  });
  const ref = refCocoMetricsUpdate(refDecode(loc, anchors), scores, numClasses, 480, 640, {
    minScore: 0.1,
    nmsThreshold: 0.6,
    maxBoxes: 100,
  });
  assert.ok(ref.length > 100, `a test with substance (${ref.length} detections)`);
  assert.strictEqual(d.count, ref.length);
  ref.forEach((r, k) => {
    assert.strictEqual(d.labels[k], r.label);
    assert.strictEqual(d.scores[k], r.score);
    r.box.forEach((v, q) => assert.ok(Math.abs(d.boxes[4 * k + q] - v) < 1e-3, `box ${k}`));
  });
});

Deno.test("an untrained model with every box above threshold in 80 classes is processed quickly", () => {
  const b = tutorialBoxes();
  const rng = createRng(4), numClasses = 81;
  const loc = Float32Array.from({ length: 4 * b.count }, () => uniform(rng, -0.5, 0.5));
  const scores = Float32Array.from({ length: b.count * numClasses }, () => uniform(rng, 0.4, 0.6));
  const t0 = performance.now();
  const d = postprocess(loc, scores, { ...BASE, anchors: b.centers, maxPerClass: 100 });
  const ms = performance.now() - t0;
  assert.strictEqual(d.count, 80 * 100);
  assert.ok(ms < 3000, `${ms.toFixed(0)} ms`);
});

Deno.test("the postprocess config defaults are the tutorial's and map onto the options", () => {
  const cfg = validate({}, postprocessSpec) as PostprocessConfig;
  assert.deepStrictEqual(cfg, {
    min_score: 0.1,
    score_compare: "gt",
    nms_threshold: 0.6,
    nms_compare: "gt",
    nms_mode: "per_class",
    max_boxes: 100,
    max_per_image: null,
    pre_nms_top_k: null,
    clip: "before_nms",
    background_index: 0,
    label_offset: 0,
    class_columns: null,
    activation: "none",
    order: "class",
  });
  const over = validate({ score_compare: "ge", nms_compare: "ge", max_per_image: 50 }, postprocessSpec);
  const o = postprocessOptionsFromConfig(over as PostprocessConfig, { anchors: ANCHORS, scaleFactors: SF });
  assert.deepStrictEqual([o.keepAtThreshold, o.suppressAtThreshold, o.maxPerImage], [true, true, 50]);
  assert.throws(() => validate({ clip: "sometimes" }, postprocessSpec), /postprocess|clip/);
});

Deno.test("class columns restrict the classes to some score columns and keep their labels", () => {
  // face-api's SSD gives 3 sigmoid scores per box and reads only column 1: column 2 (dog) must not compete.
  // Column 1 alone: a0 0.9 suppresses a1 0.2 (IoU 0.905); a2's 0.1 does not pass; a2's 0.5 in column 0 is not a class.
  const o = { backgroundIndex: null, nmsMode: "class_agnostic" } as const;
  assert.deepStrictEqual(summary(run({ ...o, classColumns: [1] })), [[0, 1, 0.9]]);
  assert.deepStrictEqual(summary(run(o)), [[0, 1, 0.9], [2, 0, 0.5]]);
  assert.deepStrictEqual(summary(run({ classColumns: [0, 1, 2] })), summary(run()));
  assert.throws(() => run({ classColumns: [3] }), /class column 3 of 3/);
  const cfg = validate({ class_columns: [1] }, postprocessSpec) as PostprocessConfig;
  assert.deepStrictEqual(postprocessOptionsFromConfig(cfg, { anchors: ANCHORS, scaleFactors: SF }).classColumns, [1]);
});
