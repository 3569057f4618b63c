// The tutorial's eval path written out from its text (SsdInferWithDecoder, apply_nms, COCOMetrics.update), sharing no
// code with lib/, as the reference that tests/nms_test.ts and tests/postprocess_test.ts compare against. Two changes
// to the letter, the library's documented ones: IoU without the "+1" on widths and heights, and a stable order for
// equal scores (numpy's argsort()[::-1] leaves it undefined).

/** IoU of two [y1, x1, y2, x2] boxes, plain areas. */
export function refIou(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const h = Math.max(0, Math.min(a[2], b[2]) - Math.max(a[0], b[0]));
  const w = Math.max(0, Math.min(a[3], b[3]) - Math.max(a[1], b[1]));
  const inter = h * w;
  const union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
  return union > 0 ? inter / union : 0;
}

/** apply_nms: visit by descending score; keep the top, drop all with ovr > thres; stop at maxBoxes kept. */
export function refApplyNms(boxes: number[][], scores: number[], thres: number, maxBoxes: number): number[] {
  // Array.prototype.sort is stable: equal scores keep index order.
  let order = scores.map((_, i) => i).sort((i, j) => scores[j] - scores[i]);
  const keep: number[] = [];
  while (order.length > 0) {
    const i = order[0];
    keep.push(i);
    if (keep.length >= maxBoxes) break;
    order = order.slice(1).filter((j) => refIou(boxes[i], boxes[j]) <= thres);
  }
  return keep;
}

/**
 * SsdInferWithDecoder.construct for one image: default boxes [A, 4] as cy, cx, h, w and regressions [A, 4];
 * centre += loc * 0.1 * size, size *= exp(loc * 0.2), corners clamped to [0, 1]. Returns [A][y1, x1, y2, x2].
 */
export function refDecode(loc: ArrayLike<number>, defaults: ArrayLike<number>): number[][] {
  const out: number[][] = [];
  for (let i = 0; i < defaults.length / 4; i++) {
    const [cy, cx, h, w] = [0, 1, 2, 3].map((k) => defaults[4 * i + k]);
    const [ty, tx, th, tw] = [0, 1, 2, 3].map((k) => loc[4 * i + k]);
    const y = ty * 0.1 * h + cy, x = tx * 0.1 * w + cx;
    const hh = Math.exp(th * 0.2) * h, ww = Math.exp(tw * 0.2) * w;
    out.push([y - hh / 2, x - ww / 2, y + hh / 2, x + ww / 2].map((v) => Math.min(1, Math.max(0, v))));
  }
  return out;
}

/** COCOMetrics.update for one image: per class c >= 1, scores > minScore, pixel boxes, apply_nms; class by class. */
export function refCocoMetricsUpdate(
  boxes: number[][],
  scores: ArrayLike<number>,
  numClasses: number,
  imageHeight: number,
  imageWidth: number,
  o: { minScore: number; nmsThreshold: number; maxBoxes: number },
): { box: number[]; score: number; label: number }[] {
  const out: { box: number[]; score: number; label: number }[] = [];
  for (let c = 1; c < numClasses; c++) {
    const idx = boxes.map((_, i) => i).filter((i) => scores[i * numClasses + c] > o.minScore);
    const px = idx.map((
      i,
    ) => [boxes[i][0] * imageHeight, boxes[i][1] * imageWidth, boxes[i][2] * imageHeight, boxes[i][3] * imageWidth]);
    const sc = idx.map((i) => scores[i * numClasses + c]);
    for (const k of refApplyNms(px, sc, o.nmsThreshold, o.maxBoxes)) out.push({ box: px[k], score: sc[k], label: c });
  }
  return out;
}
