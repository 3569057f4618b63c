/**
 * Greedy non-maximum suppression (tutorial `apply_nms`, ModelZoo
 * `src/eval_utils.py`): visit boxes by descending score, keep a box unless it
 * overlaps an already kept box by more than the IoU threshold, stop after
 * `maxOutput` kept boxes.
 *
 * Differences from the tutorial, on purpose:
 * - IoU uses plain areas, without the tutorial's "+1 pixel" on widths and
 *   heights (a Pascal VOC pixel-index habit that distorts small or normalised
 *   boxes); see lib/iou.ts.
 * - The sort is stable: equal scores keep index order (numpy's default
 *   `argsort()[::-1]` gives no defined order for ties).
 *
 * Visiting each candidate against the kept boxes is equivalent to the
 * tutorial's "suppress everything overlapping the current top box" loop and
 * costs O(N · kept), so a cap of 100 keeps it cheap even when thousands of
 * boxes pass the score threshold.
 *
 * @module
 */
import { iouAt } from "./iou.ts";

/** Options of {@linkcode nms}. */
export interface NmsOptions {
  /** Suppress a box whose IoU with a kept box is above this (tutorial `nms_threshold` 0.6). */
  iouThreshold: number;
  /** Stop after this many kept boxes (tutorial `max_boxes` 100); unlimited when absent. */
  maxOutput?: number;
  /** Suppress at IoU `>=` threshold instead of the tutorial's `>`. */
  suppressAtThreshold?: boolean;
  /** Only these box indices take part (e.g. the ones above a score threshold); all when absent. */
  indices?: ArrayLike<number>;
}

/**
 * Indices of `indices` (or of all boxes) sorted by descending score; ties keep
 * ascending index order.
 */
export function sortByScore(scores: ArrayLike<number>, indices?: ArrayLike<number>): Int32Array {
  const order = indices ? Int32Array.from(indices) : Int32Array.from({ length: scores.length }, (_, i) => i);
  return order.sort((a, b) => scores[b] - scores[a] || a - b);
}

/**
 * Greedy NMS on boxes [N, 4] (y1, x1, y2, x2, in any one unit) with scores [N].
 *
 * @returns indices of the kept boxes, by descending score.
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const boxes = new Float32Array([0, 0, 1, 1, 0, 0.1, 1, 1.1, 0, 2, 1, 3]);
 * const keep = nms(boxes, new Float32Array([0.9, 0.8, 0.7]), { iouThreshold: 0.6 });
 * assertEquals(Array.from(keep), [0, 2]); // box 1 overlaps box 0 with IoU 0.9 / 1.1
 * ```
 */
export function nms(boxes: ArrayLike<number>, scores: ArrayLike<number>, options: NmsOptions): Int32Array {
  const order = sortByScore(scores, options.indices);
  const max = options.maxOutput ?? Infinity;
  const t = options.iouThreshold, atThreshold = options.suppressAtThreshold ?? false;
  const keep: number[] = [];
  for (let o = 0; o < order.length && keep.length < max; o++) {
    const i = order[o];
    let suppressed = false;
    for (let k = 0; k < keep.length; k++) {
      const v = iouAt(boxes, keep[k], boxes, i);
      if (atThreshold ? v >= t : v > t) {
        suppressed = true;
        break;
      }
    }
    if (!suppressed) keep.push(i);
  }
  return Int32Array.from(keep);
}
