/**
 * Python 3's `round()`, which several MindSpore sources rely on.
 *
 * @module
 */

/**
 * Nearest integer, ties to even, as Python 3's `round(x)` (the ModelZoo's
 * `create_coco_label` rounds boxes with it; MobileNetV2's `InvertedResidual`
 * rounds channel counts with it).
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * assertEquals([0.5, 1.5, 2.5, -0.5, -1.5, 2.4999].map(pyRound), [0, 2, 2, 0, -2, 2]);
 * ```
 */
export function pyRound(x: number): number {
  const f = Math.floor(x), d = x - f;
  if (d < 0.5) return f;
  if (d > 0.5) return f + 1;
  return f % 2 === 0 ? f : f + 1;
}
