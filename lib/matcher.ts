/**
 * Matching ground truth to default boxes and encoding the targets, as the
 * tutorial's `ssd_bboxes_encode` (paper section 2.2 "Matching strategy").
 *
 * The tutorial's rule, gt by gt in input order:
 *
 * 1. compute the IoU of the gt with every default box;
 * 2. force the gt's best default box (first one on ties, numpy `argmax`) by
 *    setting its score to 2.0, above any IoU;
 * 3. a default box takes this gt when its score is above the threshold (0.5)
 *    and strictly above the best score it already holds from earlier gts.
 *
 * So each default box ends with the gt of largest IoU (earlier gt on ties), a
 * forced box beats any plain IoU, and a box forced by two gts keeps the first.
 * Unmatched boxes get label 0 (background) and a zero target.
 *
 * IoUs are computed in float32 step by step (`Math.fround`), like the numpy
 * original, so threshold and tie decisions agree with it exactly.
 *
 * @module
 */
import type { Spec } from "./config.ts";
import type { DefaultBoxes } from "./default_boxes.ts";
import { encodeInto, type ScaleFactors } from "./box_coder.ts";
import { InputError } from "./errors.ts";

/** Ground truth of one image. */
export interface GroundTruth {
  /** [N, 4] as y1, x1, y2, x2, normalised to the network input. */
  boxes: ArrayLike<number>;
  /** [N] class labels, 1..C (0 is background and is not a valid gt label). */
  labels: ArrayLike<number>;
}

/** Options of {@linkcode matchAndEncode}. */
export interface MatchOptions {
  /** IoU above which a default box takes a gt (tutorial `matching_threshold` 0.5); strict `>`. */
  matchThreshold: number;
  /** Box coder scale factors (tutorial [10, 10, 5, 5]). */
  scaleFactors: ScaleFactors;
}

/** Training targets of one image. */
export interface MatchResult {
  /** [A, 4] as ty, tx, th, tw; zeros for unmatched boxes. */
  loc: Float32Array;
  /** [A] class label per default box, 0 for background. */
  labels: Int32Array;
  /** [A] index of the matched gt, -1 for background. */
  matchedGt: Int32Array;
  /** Number of default boxes with a non-background label (tutorial `num_match`). */
  numMatch: number;
}

const areaCache = new WeakMap<Float32Array, Float32Array>();

/** [A] float32 areas of the corners, computed as the tutorial's `vol_anchors`; cached per anchor set. */
function anchorAreas(corners: Float32Array): Float32Array {
  let areas = areaCache.get(corners);
  if (!areas) {
    const f = Math.fround;
    areas = new Float32Array(corners.length / 4);
    for (let a = 0; a < areas.length; a++) {
      areas[a] = f(corners[4 * a + 3] - corners[4 * a + 1]) * f(corners[4 * a + 2] - corners[4 * a]);
    }
    areaCache.set(corners, areas);
  }
  return areas;
}

/**
 * Matches one image's ground truth to the default boxes and encodes the
 * regression targets (tutorial `ssd_bboxes_encode`). Runs per image in the data
 * loader: O(A·N) with typed arrays, no allocation per gt.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * import { storedAnchors } from "./default_boxes.ts";
 * // Two default boxes; the gt sits exactly on the second one.
 * const anchors = storedAnchors([0.25, 0.25, 0.5, 0.5, 0.75, 0.75, 0.5, 0.5], { format: "cy_cx_h_w" });
 * const r = matchAndEncode({ boxes: [0.5, 0.5, 1, 1], labels: [7] }, anchors, {
 *   matchThreshold: 0.5,
 *   scaleFactors: [10, 10, 5, 5],
 * });
 * assertEquals(Array.from(r.labels), [0, 7]);
 * assertEquals(r.numMatch, 1);
 * assertEquals(Array.from(r.loc), [0, 0, 0, 0, 0, 0, 0, 0]);
 * ```
 */
export function matchAndEncode(gt: GroundTruth, anchors: DefaultBoxes, options: MatchOptions): MatchResult {
  const f = Math.fround;
  const n = gt.labels.length, count = anchors.count;
  if (gt.boxes.length !== 4 * n) throw new InputError(`ground truth: ${gt.boxes.length / 4} boxes but ${n} labels`);
  const corners = anchors.corners, areas = anchorAreas(corners);
  // numpy compares the float32 scores with the threshold cast to float32.
  const threshold = Math.fround(options.matchThreshold);
  const preScores = new Float32Array(count);
  const scores = new Float32Array(count);
  const labels = new Int32Array(count);
  const matchedGt = new Int32Array(count).fill(-1);
  // The tutorial casts gt boxes to float32 before matching.
  const gtBoxes = Float32Array.from(gt.boxes);
  for (let g = 0; g < n; g++) {
    const label = gt.labels[g];
    if (!Number.isInteger(label) || label < 1) {
      throw new InputError(`ground truth: label ${label} of box ${g} is not a class (1..C; 0 is background)`);
    }
    const by1 = gtBoxes[4 * g], bx1 = gtBoxes[4 * g + 1], by2 = gtBoxes[4 * g + 2], bx2 = gtBoxes[4 * g + 3];
    const gtArea = f(f(by2 - by1) * f(bx2 - bx1));
    let best = 0, bestScore = -Infinity;
    for (let a = 0; a < count; a++) {
      const p = 4 * a;
      const h = Math.max(f(Math.min(corners[p + 2], by2) - Math.max(corners[p], by1)), 0);
      const w = Math.max(f(Math.min(corners[p + 3], bx2) - Math.max(corners[p + 1], bx1)), 0);
      const inter = f(h * w);
      const s = f(inter / f(f(areas[a] + gtArea) - inter));
      scores[a] = s;
      // Strict `>` keeps the first maximum, as numpy argmax.
      if (s > bestScore) bestScore = s, best = a;
    }
    scores[best] = 2.0;
    for (let a = 0; a < count; a++) {
      const s = scores[a];
      if (s > threshold && s > preScores[a]) {
        preScores[a] = s;
        labels[a] = label;
        matchedGt[a] = g;
      }
    }
  }
  const loc = new Float32Array(count * 4);
  let numMatch = 0;
  for (let a = 0; a < count; a++) {
    const g = matchedGt[a];
    if (g < 0) continue;
    numMatch++;
    encodeInto(gtBoxes, g, anchors.centers, a, loc, 4 * a, options.scaleFactors);
  }
  return { loc, labels, matchedGt, numMatch };
}

/** The `matcher` section of a model config. */
export interface MatcherConfig {
  /** IoU a default box needs (strictly above) to take a gt; tutorial and ModelZoo `match_threshold` 0.5. */
  match_threshold: number;
}

/** Spec fragment of the `matcher` section. */
export const matcherSpec: Spec = {
  type: "object",
  doc: "Matching ground truth to default boxes",
  fields: {
    match_threshold: { type: "number", min: 0, max: 1, doc: "IoU above which a default box takes a gt" },
  },
};
