// Matching and encoding: the tutorial's ssd_bboxes_encode rules on hand-made cases, and golden values.
import { tutorialBoxes } from "./tutorial_boxes.ts";
import assert from "node:assert";
import * as fs from "node:fs";
import { matchAndEncode, type MatcherConfig, matcherSpec } from "../lib/matcher.ts";
import { storedAnchors } from "../lib/default_boxes.ts";
import { decodeBoxes } from "../lib/box_coder.ts";
import { validate } from "../lib/config.ts";
import { createRng, uniform } from "../lib/rng.ts";
import { InputError } from "../lib/errors.ts";

const golden = JSON.parse(
  fs.readFileSync(new URL("./fixtures/anchors/tutorial_formulas_golden.json", import.meta.url), "utf8"),
);
const OPTS = { matchThreshold: 0.5, scaleFactors: [10, 10, 5, 5] };

// Hand-made priors, as y1, x1, y2, x2.
const QUADRANTS = [
  [0, 0, 0.5, 0.5], // A0 top-left
  [0, 0.5, 0.5, 1], // A1 top-right
  [0.5, 0, 1, 0.5], // A2 bottom-left
  [0.5, 0.5, 1, 1], // A3 bottom-right
  [0, 0, 1, 1], // A4 whole image
  [0, 0, 0.5, 1], // A5 top half
];
const anchorsOf = (rows: number[][]) => storedAnchors(rows.flat(), { format: "y1_x1_y2_x2" });
const labelsOf = (r: { labels: Int32Array }) => Array.from(r.labels);

Deno.test("a gt on a prior matches it, and an IoU of exactly the threshold does not match", () => {
  // gt = A0: IoU 1 with A0, 0.25 with A4, 0.25 / 0.5 = 0.5 with A5 (not > 0.5).
  const r = matchAndEncode({ boxes: [0, 0, 0.5, 0.5], labels: [1] }, anchorsOf(QUADRANTS), OPTS);
  assert.deepStrictEqual(labelsOf(r), [1, 0, 0, 0, 0, 0]);
  assert.strictEqual(r.numMatch, 1);
  assert.deepStrictEqual(Array.from(r.matchedGt), [0, -1, -1, -1, -1, -1]);
  assert.deepStrictEqual(Array.from(r.loc), new Array(24).fill(0));
});

Deno.test("a gt's best prior is forced even below the threshold, and encoded against that prior", () => {
  // gt 0.2 x 0.2 inside A3: IoU 0.04 / 0.25 = 0.16 with A3, 0.04 with A4.
  const r = matchAndEncode({ boxes: [0.5, 0.5, 0.7, 0.7], labels: [2] }, anchorsOf(QUADRANTS), OPTS);
  assert.deepStrictEqual(labelsOf(r), [0, 0, 0, 2, 0, 0]);
  // Centre (0.6, 0.6) vs prior (0.75, 0.75) of size 0.5: (0.6 - 0.75) / 0.5 · 10 = -3; ln(0.2 / 0.5) · 5.
  const t = Array.from(r.loc.subarray(12, 16));
  const expected = [-3, -3, 5 * Math.log(0.4), 5 * Math.log(0.4)];
  assert.ok(t.every((v, k) => Math.abs(v - expected[k]) < 1e-5), `${t}`);
});

Deno.test("when two priors tie for a gt's best IoU, the first one is forced (numpy argmax)", () => {
  // gt straddles A0 and A2 equally: IoU 0.125 / 0.375 = 1/3 with both.
  const r = matchAndEncode({ boxes: [0.25, 0, 0.75, 0.5], labels: [3] }, anchorsOf(QUADRANTS), OPTS);
  assert.deepStrictEqual(labelsOf(r), [3, 0, 0, 0, 0, 0]);
});

const NESTED = [...QUADRANTS, [0, 0, 0.8, 0.8], [0, 0, 0.9, 0.9]]; // A6, A7
const G_SMALL = [0, 0, 0.8, 0.8], G_BIG = [0, 0, 0.9, 0.9];

Deno.test("each prior takes the gt it overlaps most, whatever the gt order", () => {
  // A4 overlaps the small gt 0.64 and the big one 0.81: it goes to the big one both ways round.
  const a = matchAndEncode({ boxes: [...G_SMALL, ...G_BIG], labels: [1, 2] }, anchorsOf(NESTED), OPTS);
  const b = matchAndEncode({ boxes: [...G_BIG, ...G_SMALL], labels: [2, 1] }, anchorsOf(NESTED), OPTS);
  assert.strictEqual(a.labels[4], 2);
  assert.strictEqual(b.labels[4], 2);
});

Deno.test("a forced prior beats a plain IoU: it steals from an earlier gt and keeps against a later one", () => {
  const r = matchAndEncode({ boxes: [...G_SMALL, ...G_BIG], labels: [1, 2] }, anchorsOf(NESTED), OPTS);
  // A6 is the small gt's best (forced); the big gt overlaps it 0.79 later and cannot take it.
  assert.strictEqual(r.labels[6], 1);
  // A7 overlaps the small gt 0.79 first, then is forced by the big gt, which takes it.
  assert.strictEqual(r.labels[7], 2);
  // A0: IoU 0.25 / 0.64 = 0.39 with the small gt: background. A5 (top half): 0.4 / 0.74 = 0.54 with
  // the small gt beats 0.45 / 0.86 = 0.52 with the big one.
  assert.deepStrictEqual(labelsOf(r), [0, 0, 0, 0, 2, 1, 1, 2]);
  assert.strictEqual(r.numMatch, 4);
});

Deno.test("two gts with the same best prior: the first keeps it and the second may match nothing", () => {
  const anchors = anchorsOf([[0, 0, 0.5, 0.5], [0, 0, 1, 1]]);
  const r = matchAndEncode({ boxes: [0, 0, 0.9, 0.9, 0.05, 0.05, 0.95, 0.95], labels: [4, 5] }, anchors, OPTS);
  assert.deepStrictEqual(labelsOf(r), [0, 4]);
  assert.deepStrictEqual(Array.from(r.matchedGt), [-1, 0]);
  assert.strictEqual(r.numMatch, 1);
});

Deno.test("an image without ground truth gives all background and zero targets", () => {
  const r = matchAndEncode({ boxes: [], labels: [] }, anchorsOf(QUADRANTS), OPTS);
  assert.strictEqual(r.numMatch, 0);
  assert.ok(r.labels.every((v) => v === 0) && r.loc.every((v) => v === 0));
});

Deno.test("a background or fractional gt label, or a box count that disagrees, is refused", () => {
  const anchors = anchorsOf(QUADRANTS);
  assert.throws(() => matchAndEncode({ boxes: [0, 0, 1, 1], labels: [0] }, anchors, OPTS), InputError);
  assert.throws(() => matchAndEncode({ boxes: [0, 0, 1, 1], labels: [1.5] }, anchors, OPTS), /not a class/);
  assert.throws(() => matchAndEncode({ boxes: [0, 0, 1, 1], labels: [1, 2] }, anchors, OPTS), /1 boxes but 2 labels/);
});

Deno.test("on the tutorial's 8732 priors the matches and targets equal ssd_bboxes_encode's (golden)", () => {
  const g = golden.encode_tutorial_ssd300_vgg16;
  const gt = g.gt as number[][];
  const r = matchAndEncode(
    { boxes: gt.flatMap((b) => b.slice(0, 4)), labels: gt.map((b) => b[4]) },
    tutorialBoxes(),
    OPTS,
  );
  assert.strictEqual(r.numMatch, g.numMatch);
  const expectedLabels = new Int32Array(r.labels.length);
  let worst = 0;
  for (const m of g.matched) {
    expectedLabels[m.index] = m.label;
    for (let k = 0; k < 4; k++) worst = Math.max(worst, Math.abs(r.loc[4 * m.index + k] - m.loc[k]));
  }
  assert.deepStrictEqual(r.labels, expectedLabels);
  assert.ok(worst <= 1e-5, `max target difference ${worst}`);
});

Deno.test("decoding the targets of matched priors gives back their gt boxes", () => {
  const b = tutorialBoxes(), rng = createRng(3);
  const boxes: number[] = [], labels: number[] = [];
  for (let g = 0; g < 20; g++) {
    const y = uniform(rng, 0, 0.7), x = uniform(rng, 0, 0.7);
    boxes.push(y, x, y + uniform(rng, 0.05, 0.3), x + uniform(rng, 0.05, 0.3));
    labels.push(1 + (g % 5));
  }
  const r = matchAndEncode({ boxes, labels }, b, OPTS);
  const decoded = decodeBoxes(r.loc, b.centers, { scaleFactors: OPTS.scaleFactors });
  let worst = 0;
  for (let a = 0; a < b.count; a++) {
    const g = r.matchedGt[a];
    if (g < 0) continue;
    assert.strictEqual(r.labels[a], labels[g]);
    for (let k = 0; k < 4; k++) worst = Math.max(worst, Math.abs(decoded[4 * a + k] - boxes[4 * g + k]));
  }
  assert.ok(r.numMatch >= 20, `every gt has at least its forced prior (${r.numMatch})`);
  assert.ok(worst <= 1e-5, `max round-trip error ${worst}`);
});

Deno.test("matching 100 gts against 8732 priors is fast enough for a data loader", () => {
  const b = tutorialBoxes(), rng = createRng(5);
  const boxes = new Float32Array(400), labels = new Int32Array(100);
  for (let g = 0; g < 100; g++) {
    const y = uniform(rng, 0, 0.8), x = uniform(rng, 0, 0.8);
    boxes.set([y, x, y + uniform(rng, 0.02, 0.2), x + uniform(rng, 0.02, 0.2)], 4 * g);
    labels[g] = 1 + (g % 80);
  }
  matchAndEncode({ boxes, labels }, b, OPTS); // warm up
  const t0 = performance.now();
  for (let i = 0; i < 5; i++) matchAndEncode({ boxes, labels }, b, OPTS);
  const ms = (performance.now() - t0) / 5;
  assert.ok(ms < 250, `${ms.toFixed(1)} ms per image`);
});

Deno.test("the matcher config section needs a threshold in [0, 1]", () => {
  assert.deepStrictEqual(validate({ match_threshold: 0.5 }, matcherSpec) as MatcherConfig, { match_threshold: 0.5 });
  assert.throws(() => validate({}, matcherSpec), /match_threshold/);
  assert.throws(() => validate({ match_threshold: 1.5 }, matcherSpec), /<= 1/);
});
