// NMS: hand-made cases, thresholds, ties, caps, and agreement with the tutorial's loop (tests/tutorial_reference.ts).
import assert from "node:assert";
import { nms, sortByScore } from "../lib/nms.ts";
import { iouAt, iouMatrix } from "../lib/iou.ts";
import { createRng, uniform } from "../lib/rng.ts";
import { refApplyNms } from "./tutorial_reference.ts";

const keepOf = (boxes: number[][], scores: number[], options: Parameters<typeof nms>[2]) =>
  Array.from(nms(boxes.flat(), scores, options));

Deno.test("IoU of two unit squares offset by half is 1/3, and disjoint boxes have IoU 0", () => {
  assert.strictEqual(iouAt([0, 0, 1, 1], 0, [0, 0.5, 1, 1.5], 0), 0.5 / 1.5);
  assert.strictEqual(iouAt([0, 0, 1, 1], 0, [2, 2, 3, 3], 0), 0);
  assert.strictEqual(iouAt([0, 0, 0, 0], 0, [0, 0, 0, 0], 0), 0);
  assert.deepStrictEqual(Array.from(iouMatrix([0, 0, 1, 1, 0, 0, 2, 2], [0, 0, 1, 1])), [1, 0.25]);
});

Deno.test("a box overlapping a higher-scored one above the threshold is suppressed, others kept", () => {
  const boxes = [[0, 0, 1, 1], [0, 0.1, 1, 1.1], [0, 2, 1, 3]];
  // IoU(0, 1) = 0.9 / 1.1 = 0.82 > 0.6; box 2 is disjoint.
  assert.deepStrictEqual(keepOf(boxes, [0.9, 0.8, 0.7], { iouThreshold: 0.6 }), [0, 2]);
  // With the scores reversed the lower-left box is the one dropped.
  assert.deepStrictEqual(keepOf(boxes, [0.7, 0.8, 0.9], { iouThreshold: 0.6 }), [2, 1]);
});

Deno.test("an IoU exactly at the threshold is kept by default (tutorial ovr <= thres) and dropped with >=", () => {
  const boxes = [[0, 0, 1, 1], [0, 0, 1, 0.5]]; // IoU 0.5 exactly
  assert.deepStrictEqual(keepOf(boxes, [0.9, 0.8], { iouThreshold: 0.5 }), [0, 1]);
  assert.deepStrictEqual(keepOf(boxes, [0.9, 0.8], { iouThreshold: 0.5, suppressAtThreshold: true }), [0]);
});

Deno.test("equal scores keep index order, so the lower index survives", () => {
  const boxes = [[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1]];
  assert.deepStrictEqual(keepOf(boxes, [0.5, 0.5, 0.5], { iouThreshold: 0.6 }), [0]);
  assert.deepStrictEqual(Array.from(sortByScore([0.2, 0.5, 0.2, 0.5])), [1, 3, 0, 2]);
});

Deno.test("suppression is greedy: a box suppressed itself no longer suppresses others", () => {
  // A overlaps B (IoU 0.8 / 1.2), B overlaps C (0.8 / 1.2), A and C only 0.6 / 1.4: A and C survive.
  const boxes = [[0, 0, 1, 1], [0, 0.2, 1, 1.2], [0, 0.4, 1, 1.4]];
  assert.deepStrictEqual(keepOf(boxes, [0.9, 0.8, 0.7], { iouThreshold: 0.6 }), [0, 2]);
});

Deno.test("no +1 pixel: two small disjoint normalised boxes both survive", () => {
  // With the tutorial's (x2 - x1 + 1) areas these would overlap almost fully and one would go.
  const boxes = [[0, 0, 0.01, 0.01], [0, 0.02, 0.01, 0.03]];
  assert.deepStrictEqual(keepOf(boxes, [0.9, 0.8], { iouThreshold: 0.6 }), [0, 1]);
});

Deno.test("the cap stops after maxOutput kept boxes, the highest scored", () => {
  const boxes = Array.from({ length: 10 }, (_, i) => [0, 2 * i, 1, 2 * i + 1]);
  const scores = Array.from({ length: 10 }, (_, i) => i / 10);
  assert.deepStrictEqual(keepOf(boxes, scores, { iouThreshold: 0.6, maxOutput: 3 }), [9, 8, 7]);
});

Deno.test("only the given indices take part", () => {
  const boxes = [[0, 0, 1, 1], [0, 0, 1, 1], [0, 5, 1, 6]];
  assert.deepStrictEqual(keepOf(boxes, [0.9, 0.8, 0.7], { iouThreshold: 0.6, indices: [1, 2] }), [1, 2]);
});

Deno.test("on random boxes the result equals the tutorial's suppress-from-the-top loop", () => {
  const rng = createRng(11);
  for (let trial = 0; trial < 20; trial++) {
    const n = 200, boxes: number[] = [], scores: number[] = [];
    for (let i = 0; i < n; i++) {
      const y = uniform(rng, 0, 0.8), x = uniform(rng, 0, 0.8);
      boxes.push(y, x, y + uniform(rng, 0.05, 0.2), x + uniform(rng, 0.05, 0.2));
      scores.push(Math.round(uniform(rng, 0, 20)) / 20); // many ties
    }
    const max = trial % 2 ? 100 : 10;
    assert.deepStrictEqual(
      Array.from(nms(boxes, scores, { iouThreshold: 0.6, maxOutput: max })),
      refApplyNms(Array.from({ length: n }, (_, i) => boxes.slice(4 * i, 4 * i + 4)), scores, 0.6, max),
    );
  }
});
