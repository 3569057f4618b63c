/**
 * Post-processing of raw SSD head outputs into detections, shared by eval,
 * infer and every model: decode, score threshold, NMS, caps, clipping.
 *
 * The defaults of the config section reproduce the tutorial's evaluation path:
 * `SsdInferWithDecoder` decodes with prior scaling 0.1/0.2 and clips to [0, 1]
 * (so clipping happens before NMS), then `COCOMetrics.update` keeps, per class
 * 1..C-1, the boxes with score `> min_score` (0.1), runs `apply_nms` with IoU
 * threshold 0.6 and at most `max_boxes` (100) per class, and concatenates the
 * classes in order with no cap per image. Boxes are scaled to the original
 * image size in pixels (IoU does not change under that scaling because no
 * "+1 pixel" area term is used; see lib/nms.ts).
 *
 * Layouts: `loc` [A, 4] as ty, tx, th, tw; `scores` [A, C] row-major, one
 * column per class including the background column; anchors [A, 4] as cy, cx,
 * h, w normalised. Output boxes [K, 4] as y1, x1, y2, x2, normalised or in
 * pixels when `imageSize` is given.
 *
 * @module
 */
import type { Spec } from "./config.ts";
import { decodeBoxes, type ScaleFactors } from "./box_coder.ts";
import { nms, sortByScore } from "./nms.ts";

/** Where boxes are clipped to the image. */
export type ClipMode = "before_nms" | "after_nms" | "none";

/** Options of {@linkcode postprocess}. */
export interface PostprocessOptions {
  /** [A, 4] default boxes as cy, cx, h, w (`DefaultBoxes.centers`). */
  anchors: Float32Array;
  /** Box coder scale factors (tutorial [10, 10, 5, 5]). */
  scaleFactors: ScaleFactors;
  /** Keep scores above this (tutorial `min_score` 0.1). */
  scoreThreshold: number;
  /** Keep scores `>=` the threshold instead of the tutorial's `>`. */
  keepAtThreshold?: boolean;
  /** NMS IoU threshold (tutorial `nms_threshold` 0.6). */
  iouThreshold: number;
  /** Suppress at IoU `>=` the threshold instead of the tutorial's `>`. */
  suppressAtThreshold?: boolean;
  /** `per_class` (tutorial) or `class_agnostic` (each box competes with its best class). */
  nmsMode?: "per_class" | "class_agnostic";
  /** At most this many boxes per class after NMS (tutorial `max_boxes` 100); in class-agnostic mode, in all. */
  maxPerClass?: number | null;
  /** At most this many boxes per image, the highest scores; no cap when absent (tutorial). */
  maxPerImage?: number | null;
  /** Only the highest this many candidates per class enter NMS; all when absent (tutorial). */
  preNmsTopK?: number | null;
  /** Clip to [0, 1] before NMS (tutorial, in its decoder), after NMS, or not at all. */
  clip?: ClipMode;
  /** Score column of the background, skipped; null when every column is a class. */
  backgroundIndex?: number | null;
  /** Added to a column index to give the label (0: label = column). */
  labelOffset?: number;
  /**
   * The score columns that are classes, in `scores`' own indices; the others are ignored (e.g. face-api's
   * SSD, whose heads give 3 logits and which reads column 1 only). Labels stay column + `labelOffset`.
   * All columns when absent.
   */
  classColumns?: readonly number[] | null;
  /** Activation to apply to `scores` first; "none" when they are already probabilities (tutorial). */
  activation?: "none" | "sigmoid" | "softmax";
  /** Scale output boxes to pixels of an image of this size; normalised when absent. */
  imageSize?: { height: number; width: number } | null;
  /** Output order: class by class, each by score (tutorial), or all by score. */
  order?: "class" | "score";
}

/** Detections of one image. */
export interface Detections {
  /** Number of detections K. */
  count: number;
  /** [K, 4] as y1, x1, y2, x2, normalised or pixels (see `imageSize`). */
  boxes: Float32Array;
  /** [K] scores. */
  scores: Float32Array;
  /** [K] labels (score column + `labelOffset`). */
  labels: Int32Array;
  /** [K] index of the default box each detection came from. */
  anchorIndices: Int32Array;
}

function activate(scores: ArrayLike<number>, numClasses: number, activation: string): ArrayLike<number> {
  if (activation === "none") return scores;
  const out = new Float32Array(scores.length);
  if (activation === "sigmoid") {
    for (let i = 0; i < out.length; i++) out[i] = 1 / (1 + Math.exp(-scores[i]));
    return out;
  }
  if (activation !== "softmax") throw new RangeError(`unknown activation ${JSON.stringify(activation)}`);
  for (let p = 0; p < out.length; p += numClasses) {
    let max = -Infinity, sum = 0;
    for (let c = 0; c < numClasses; c++) max = Math.max(max, scores[p + c]);
    for (let c = 0; c < numClasses; c++) sum += out[p + c] = Math.exp(scores[p + c] - max);
    for (let c = 0; c < numClasses; c++) out[p + c] /= sum;
  }
  return out;
}

/**
 * Turns raw predictions of one image into detections.
 *
 * @param loc [A, 4] raw box regressions, ty, tx, th, tw.
 * @param scores [A, C] class scores (probabilities unless `activation` says otherwise).
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * // Two identical default boxes, zero regressions, classes [background, cat]:
 * // both boxes decode to the same square; NMS keeps the higher score.
 * const d = postprocess(new Float32Array(8), new Float32Array([0.1, 0.8, 0.1, 0.7]), {
 *   anchors: new Float32Array([0.5, 0.5, 0.2, 0.2, 0.5, 0.5, 0.2, 0.2]),
 *   scaleFactors: [10, 10, 5, 5], scoreThreshold: 0.1, iouThreshold: 0.6, backgroundIndex: 0,
 * });
 * assertEquals(d.count, 1);
 * assertEquals(Array.from(d.labels), [1]);
 * assertEquals(Array.from(d.boxes).map((v) => +v.toFixed(6)), [0.4, 0.4, 0.6, 0.6]);
 * ```
 */
export function postprocess(
  loc: ArrayLike<number>,
  scores: ArrayLike<number>,
  options: PostprocessOptions,
): Detections {
  const a = options.anchors.length / 4;
  if (loc.length !== 4 * a) throw new RangeError(`loc has ${loc.length / 4} boxes, anchors ${a}`);
  if (a === 0 || scores.length % a !== 0) throw new RangeError(`scores length ${scores.length} is not ${a} x C`);
  const numClasses = scores.length / a;
  const clip = options.clip ?? "before_nms";
  const bg = options.backgroundIndex === undefined ? 0 : options.backgroundIndex;
  const offset = options.labelOffset ?? 0;
  // Compared in float32, as numpy compares the tutorial's float32 scores with the Python float 0.1
  // (the threshold is cast to float32): a score of float32(0.1) does not pass `> 0.1`.
  const thr = Math.fround(options.scoreThreshold), atThr = options.keepAtThreshold ?? false;
  const passes = (s: number) => (atThr ? s >= thr : s > thr);
  const probs = activate(scores, numClasses, options.activation ?? "none");
  const columns = options.classColumns ?? Array.from({ length: numClasses }, (_, c) => c);
  for (const c of columns) {
    if (!Number.isInteger(c) || c < 0 || c >= numClasses) throw new RangeError(`class column ${c} of ${numClasses}`);
  }
  const boxes = decodeBoxes(loc, options.anchors, { scaleFactors: options.scaleFactors, clip: clip === "before_nms" });
  const nmsOptions = {
    iouThreshold: options.iouThreshold,
    suppressAtThreshold: options.suppressAtThreshold,
    maxOutput: options.maxPerClass ?? undefined,
  };
  const topK = options.preNmsTopK ?? Infinity;
  // Kept detections, in tutorial order (class by class, each by score).
  const keptAnchor: number[] = [], keptClass: number[] = [], keptScore: number[] = [];
  const column = new Float32Array(a);
  const candidates = new Int32Array(a);

  const run = (n: number, cls: (i: number) => number) => {
    let idx: ArrayLike<number> = candidates.subarray(0, n);
    if (n > topK) idx = sortByScore(column, idx).subarray(0, topK);
    for (const i of nms(boxes, column, { ...nmsOptions, indices: idx })) {
      keptAnchor.push(i), keptClass.push(cls(i)), keptScore.push(column[i]);
    }
  };

  if ((options.nmsMode ?? "per_class") === "per_class") {
    for (const c of columns) {
      if (c === bg) continue;
      let n = 0;
      for (let i = 0; i < a; i++) {
        const s = probs[i * numClasses + c];
        if (passes(s)) column[i] = s, candidates[n++] = i;
      }
      if (n > 0) run(n, () => c);
    }
  } else {
    const best = new Int32Array(a);
    let n = 0;
    for (let i = 0; i < a; i++) {
      let bc = -1, bs = -Infinity;
      for (const c of columns) {
        const s = probs[i * numClasses + c];
        if (c !== bg && s > bs) bs = s, bc = c;
      }
      if (bc >= 0 && passes(bs)) column[i] = bs, best[i] = bc, candidates[n++] = i;
    }
    if (n > 0) run(n, (i) => best[i]);
  }

  let picked = Array.from(keptAnchor.keys());
  const cap = options.maxPerImage ?? Infinity;
  if (picked.length > cap || options.order === "score") {
    // Stable: equal scores keep tutorial order.
    picked.sort((p, q) => keptScore[q] - keptScore[p] || p - q);
    picked = picked.slice(0, cap);
    if ((options.order ?? "class") === "class") picked.sort((p, q) => p - q);
  }

  const k = picked.length;
  const out: Detections = {
    count: k,
    boxes: new Float32Array(4 * k),
    scores: new Float32Array(k),
    labels: new Int32Array(k),
    anchorIndices: new Int32Array(k),
  };
  const sy = options.imageSize?.height ?? 1, sx = options.imageSize?.width ?? 1;
  const clamp = (v: number) => (clip === "after_nms" ? Math.min(Math.max(v, 0), 1) : v);
  picked.forEach((p, r) => {
    const i = keptAnchor[p];
    out.boxes[4 * r] = clamp(boxes[4 * i]) * sy;
    out.boxes[4 * r + 1] = clamp(boxes[4 * i + 1]) * sx;
    out.boxes[4 * r + 2] = clamp(boxes[4 * i + 2]) * sy;
    out.boxes[4 * r + 3] = clamp(boxes[4 * i + 3]) * sx;
    out.scores[r] = keptScore[p];
    out.labels[r] = keptClass[p] + offset;
    out.anchorIndices[r] = i;
  });
  return out;
}

/** The `postprocess` section of a model config (ModelZoo key names where it has them). */
export interface PostprocessConfig {
  /** Score threshold (ModelZoo `min_score`). */
  min_score: number;
  /** `gt`: keep score > min_score (tutorial); `ge`: keep score >= min_score. */
  score_compare: "gt" | "ge";
  /** NMS IoU threshold (ModelZoo `nms_threshold`). */
  nms_threshold: number;
  /** `gt`: suppress IoU > nms_threshold (tutorial); `ge`: suppress IoU >= nms_threshold. */
  nms_compare: "gt" | "ge";
  /** per_class (tutorial) or class_agnostic. */
  nms_mode: "per_class" | "class_agnostic";
  /** Boxes kept per class after NMS (ModelZoo `max_boxes`); null for no limit. */
  max_boxes: number | null;
  /** Boxes kept per image; null for no cap (tutorial). */
  max_per_image: number | null;
  /** Candidates per class entering NMS; null for all (tutorial). */
  pre_nms_top_k: number | null;
  /** Where boxes are clipped to the image. */
  clip: ClipMode;
  /** Background score column; null when there is none. */
  background_index: number | null;
  /** Label = score column + label_offset. */
  label_offset: number;
  /** Score columns that are classes (others ignored); null for all. */
  class_columns: number[] | null;
  /** Activation applied to head scores before thresholding. */
  activation: "none" | "sigmoid" | "softmax";
  /** Output order. */
  order: "class" | "score";
}

/** Spec fragment of the `postprocess` section; defaults are the tutorial's. */
export const postprocessSpec: Spec = {
  type: "object",
  doc: "Decoding, score threshold and NMS of head outputs",
  fields: {
    min_score: { type: "number", min: 0, default: 0.1, doc: "score threshold" },
    score_compare: { type: "string", enum: ["gt", "ge"], default: "gt", doc: "keep score > (gt) or >= (ge)" },
    nms_threshold: { type: "number", min: 0, max: 1, default: 0.6, doc: "NMS IoU threshold" },
    nms_compare: { type: "string", enum: ["gt", "ge"], default: "gt", doc: "suppress IoU > (gt) or >= (ge)" },
    nms_mode: { type: "string", enum: ["per_class", "class_agnostic"], default: "per_class", doc: "NMS grouping" },
    max_boxes: { type: "number", int: true, min: 1, default: 100, nullable: true, doc: "boxes per class after NMS" },
    max_per_image: { type: "number", int: true, min: 1, nullable: true, doc: "boxes per image (null: no cap)" },
    pre_nms_top_k: { type: "number", int: true, min: 1, nullable: true, doc: "candidates per class into NMS" },
    clip: { type: "string", enum: ["before_nms", "after_nms", "none"], default: "before_nms", doc: "clip to image" },
    background_index: { type: "number", int: true, min: 0, default: 0, nullable: true, doc: "background column" },
    label_offset: { type: "number", int: true, default: 0, doc: "label = column + label_offset" },
    class_columns: {
      type: "array",
      items: { type: "number", int: true, min: 0 },
      nullable: true,
      doc: "score columns that are classes (null: all)",
    },
    activation: { type: "string", enum: ["none", "sigmoid", "softmax"], default: "none", doc: "score activation" },
    order: { type: "string", enum: ["class", "score"], default: "class", doc: "output order" },
  },
};

/**
 * Options for {@linkcode postprocess} from a validated `postprocess` section.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * import { validate } from "./config.ts";
 * const cfg = validate({}, postprocessSpec) as PostprocessConfig;
 * const o = postprocessOptionsFromConfig(cfg, { anchors: new Float32Array(4), scaleFactors: [10, 10, 5, 5] });
 * assertEquals([o.scoreThreshold, o.iouThreshold, o.maxPerClass, o.clip], [0.1, 0.6, 100, "before_nms"]);
 * ```
 */
export function postprocessOptionsFromConfig(
  cfg: PostprocessConfig,
  options: Pick<PostprocessOptions, "anchors" | "scaleFactors" | "imageSize">,
): PostprocessOptions {
  return {
    ...options,
    scoreThreshold: cfg.min_score,
    keepAtThreshold: cfg.score_compare === "ge",
    iouThreshold: cfg.nms_threshold,
    suppressAtThreshold: cfg.nms_compare === "ge",
    nmsMode: cfg.nms_mode,
    maxPerClass: cfg.max_boxes,
    maxPerImage: cfg.max_per_image,
    preNmsTopK: cfg.pre_nms_top_k,
    clip: cfg.clip,
    backgroundIndex: cfg.background_index,
    labelOffset: cfg.label_offset,
    classColumns: cfg.class_columns,
    activation: cfg.activation,
    order: cfg.order,
  };
}
