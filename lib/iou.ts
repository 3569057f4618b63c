/**
 * Intersection over union of axis-aligned boxes stored as y1, x1, y2, x2.
 *
 * Areas are plain `(y2 - y1) * (x2 - x1)`: no "+1 pixel" term. The tutorial's
 * `apply_nms` adds 1 to widths and heights (a Pascal VOC pixel-index habit);
 * that is wrong for normalised coordinates and for COCO's continuous boxes, so
 * the workbench never uses it (see lib/nms.ts).
 *
 * @module
 */

/**
 * IoU of box `i` of `a` and box `j` of `b`, both [N, 4] as y1, x1, y2, x2.
 * A pair whose union is empty (two zero-area boxes) has IoU 0, not NaN.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const a = new Float32Array([0, 0, 2, 2]);
 * const b = new Float32Array([1, 1, 3, 3]);
 * assertEquals(iouAt(a, 0, b, 0), 1 / 7); // intersection 1, union 4 + 4 - 1
 * ```
 */
export function iouAt(a: ArrayLike<number>, i: number, b: ArrayLike<number>, j: number): number {
  const ay1 = a[4 * i], ax1 = a[4 * i + 1], ay2 = a[4 * i + 2], ax2 = a[4 * i + 3];
  const by1 = b[4 * j], bx1 = b[4 * j + 1], by2 = b[4 * j + 2], bx2 = b[4 * j + 3];
  const h = Math.min(ay2, by2) - Math.max(ay1, by1);
  const w = Math.min(ax2, bx2) - Math.max(ax1, bx1);
  if (h <= 0 || w <= 0) return 0;
  const inter = h * w;
  const union = (ay2 - ay1) * (ax2 - ax1) + (by2 - by1) * (bx2 - bx1) - inter;
  return union > 0 ? inter / union : 0;
}

/**
 * IoU matrix between `a` [N, 4] and `b` [M, 4] (both y1, x1, y2, x2).
 *
 * @returns [N, M] row-major.
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const m = iouMatrix(new Float32Array([0, 0, 1, 1]), new Float32Array([0, 0, 1, 1, 0, 0, 1, 0.5]));
 * assertEquals(Array.from(m), [1, 0.5]);
 * ```
 */
export function iouMatrix(a: ArrayLike<number>, b: ArrayLike<number>): Float64Array {
  const n = a.length / 4, m = b.length / 4;
  const out = new Float64Array(n * m);
  for (let i = 0; i < n; i++) for (let j = 0; j < m; j++) out[i * m + j] = iouAt(a, i, b, j);
  return out;
}
