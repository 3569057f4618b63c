/**
 * Error analysis of COCO bbox results beyond the 12 COCO stats: a confusion
 * matrix, the PR-curve breakdown C75 / C50 / Loc / Sim / Oth / BG / FN, and
 * per-image AP with the worst images. All three read the same inputs as
 * `cocoEvaluate` (a COCO instances file and a results list), loaded once by
 * {@linkcode loadErrorAnalysis} with `lib/coco_eval.ts`' loaders (so a
 * detection on an unknown image or category is its `DetectionError`), and
 * return plain data for plots.
 *
 * Ported from open-mmlab/mmdetection (3.x):
 *
 * - {@linkcode confusionMatrix}: `tools/analysis_tools/confusion_matrix.py`
 *   (`calculate_confusion_matrix`, `analyze_per_img_dets`). Rows are ground
 *   truth, columns predictions, the last row and column "background". Each
 *   detection with `score >= scoreThr` adds one to `[gt class, det class]`
 *   for EVERY ground truth, of any class, it overlaps with IoU >= `tpIouThr`
 *   (so one detection can count several times, and duplicates all count), or
 *   one to `[background, det class]` when it overlaps none; a ground truth
 *   that no detection of its own class overlapped adds one to
 *   `[gt class, background]`. mmdetection's `--nms-iou-thr` re-NMS is not
 *   ported (results files are already NMSed). Scores are compared as the
 *   results file gives them (mmdetection's are float32 tensors, which its
 *   results files print exactly).
 * - Ground truth for the confusion matrix and per-image AP is what
 *   `mmdet/datasets/coco.py` `CocoDataset.parse_data_info` keeps: an
 *   annotation is dropped when it has a truthy `ignore`, when its box does not
 *   intersect the image (`width`/`height` of the image entry; skipped when
 *   absent), or when `area <= 0`, `w < 1` or `h < 1`. Crowd annotations are
 *   kept as ordinary ground truth, as mmdetection 3.x does (its instances keep
 *   `ignore_flag` but neither tool reads it); `crowd: "skip"` drops them as
 *   mmdetection 2.x did (`_parse_ann_info` put them in `bboxes_ignore`).
 * - IoU there is `mmdet/evaluation/functional/bbox_overlaps.py` in float32
 *   (boxes `[x, y, x + w, y + h]` cast to float32, union floored at 1e-6),
 *   compared with the float64 threshold as numpy 1.x compares a float32 with a
 *   Python float.
 * - {@linkcode prBreakdown}: `tools/analysis_tools/coco_error_analysis.py`
 *   (`analyze_results`, `analyze_individual_category`), itself Detectron's
 *   port of the COCO API's MATLAB `CocoEval.analyze`. Every curve is pycocotools
 *   COCOeval precision at 101 recall points, maxDets 100, area ranges
 *   all/small/medium/large from `--areas` (default 1024, 9216, 1e10), run by
 *   this project's port (`evaluate`, `accumulate` of `lib/coco_eval.ts`):
 *   C75 and C50 at IoU .75 and .5; Loc at IoU .1; Sim at IoU .1 after every
 *   ground truth of another category in the same supercategory is turned into
 *   a crowd region of the category (so a detection on it is ignored, and crowd
 *   IoU is intersection over the detection's area); Oth the same with every
 *   other category; BG is 1 wherever Oth's precision is above 0, else 0; FN is
 *   1 everywhere. Like mmdetection, -1 (no ground truth) becomes 0 before
 *   averaging, so a category without ground truth in an area range counts as
 *   AP 0 there (and as 1 for FN). mmdetection's tree holds two versions of
 *   `analyze_individual_category`: the one with `child_catIds` (followed
 *   here) relabels the supercategory for Sim, the other relabels nothing, so
 *   its Sim equals Loc; a category without `supercategory` (on which the first
 *   raises KeyError) gets that too. mmdetection runs two COCOevals per
 *   category; here the relabelled ground truth of every category goes into
 *   one index (cell `(k, i)` gets the extra regions), so each is one run.
 * - {@linkcode perImageAp}: `tools/analysis_tools/analyze_results.py`
 *   (`bbox_map_eval`, `ResultVisualizer.detection_evaluate`) over
 *   `mmdet/evaluation/functional/mean_ap.py` (`eval_map`, `tpfp_default`,
 *   `average_precision` mode "area"): an image's AP is the mean, over IoU
 *   .50:.05:.95, of the mean over the classes with ground truth in that image
 *   of VOC-style area AP (by descending score, a detection is a TP when its
 *   best-overlapping ground truth of its class, the first of equals, has IoU
 *   >= the threshold and is not yet taken; else an FP). Detections of classes
 *   absent from the image do not lower it. The float32 steps (IoU, precision,
 *   per-class AP, the class mean) are reproduced; equal scores keep file order
 *   (numpy's quicksort leaves them unspecified). Images are sorted by AP, ties
 *   in file order, as `detection_evaluate` sorts its dataset order; images
 *   without ground truth are left out (mmdetection ranks them at 0).
 *
 * @module
 */
import {
  accumulate,
  type CocoDetections,
  type CocoEvalAccumulated,
  type CocoEvalParams,
  type CocoGroundTruth,
  type CocoId,
  defaultParams,
  evaluate,
  linspace,
  loadDetections,
  loadGroundTruth,
} from "./coco_eval.ts";

/** Float32 rounding, to replay numpy's float32 arithmetic step by step. */
const f32 = Math.fround;
/** `bbox_overlaps`' `eps=1e-6` as numpy casts it next to a float32 array. */
const UNION_EPS = f32(1e-6);
/** `np.finfo(np.float32).eps` in `eval_map`. */
const F32_EPS = 1.1920928955078125e-7;

// ---------------------------------------------------------------------------
// Loading

/** Ground truth and detections indexed once for every analysis of this module. */
export interface ErrorAnalysisData {
  /** The COCOeval index of the ground truth (sorted image and category ids). */
  gt: CocoGroundTruth;
  /** The COCOeval index of the detections: cell `k * I + i` by descending score, ties in file order. */
  dt: CocoDetections;
  /** Supercategory of each category in `gt.catIds` order, `undefined` when the file gives none, [K]. */
  supercategory: (string | undefined)[];
  /** Image indices (into `gt.imgIds`) in the order the file first lists them, mmdetection's dataset order, [I]. */
  fileOrder: Int32Array;
  /** Annotations of image `i`, in file order, are `annStart[i] .. annStart[i + 1]`, [I+1]. */
  annStart: Int32Array;
  /** Category index of each annotation, -1 when the file does not list its category, [Q]. */
  annCat: Int32Array;
  /** Boxes `[x, y, w, h]`, [Q, 4]. */
  annBox: Float64Array;
  /** The `area` field, [Q]. */
  annArea: Float64Array;
  /** 1 for crowd regions, [Q]. */
  annCrowd: Uint8Array;
  /** 1 when the annotation id is nonzero (see `CocoGroundTruth.idNonzero`), [Q]. */
  annIdNonzero: Uint8Array;
  /** 1 when mmdetection's `CocoDataset.parse_data_info` keeps the annotation as an instance, [Q]. */
  annMm: Uint8Array;
  /** Boxes as float32 `[x1, y1, x2, y2] = [x, y, x + w, y + h]`, [Q, 4]. */
  annXyxy: Float32Array;
  /** Detection boxes as float32 `[x1, y1, x2, y2]`, in `dt` order, [N, 4]. */
  dtXyxy: Float32Array;
}

/** Writes `[x, y, x + w, y + h]` of `xywh[j]` as float32 into `out[j]`. */
function toXyxy32(xywh: ArrayLike<number>, out: Float32Array, j: number): void {
  const x = xywh[j * 4], y = xywh[j * 4 + 1];
  out[j * 4] = x;
  out[j * 4 + 1] = y;
  out[j * 4 + 2] = x + xywh[j * 4 + 2];
  out[j * 4 + 3] = y + xywh[j * 4 + 3];
}

/** A finite number field of an image entry, or undefined. */
function numField(o: unknown, key: string): number | undefined {
  const v = (o as Record<string, unknown>)[key];
  return typeof v === "number" && Number.isFinite(v) ? v : undefined;
}

/**
 * Validates and indexes a COCO instances file and a COCO results list for
 * the analyses of this module, with `lib/coco_eval.ts`' loaders (same
 * errors: an `InputError` for the ground truth, a `DetectionError` naming
 * the entry for a detection on an unknown image or category).
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals, throws as assertThrows } from "node:assert";
 * const gt = { images: [{ id: 7 }], categories: [{ id: 1, name: "cat", supercategory: "animal" }],
 *   annotations: [{ id: 1, image_id: 7, category_id: 1, bbox: [0, 0, 10, 10], area: 100, iscrowd: 0 }] };
 * const data = loadErrorAnalysis(gt, [{ image_id: 7, category_id: 1, bbox: [1, 1, 10, 10], score: 0.9 }]);
 * assertEquals([data.supercategory, [...data.dtXyxy]], [["animal"], [1, 1, 11, 11]]);
 * assertThrows(() => loadErrorAnalysis(gt, [{ image_id: 8, category_id: 1, bbox: [0, 0, 1, 1], score: 1 }]));
 * ```
 */
export function loadErrorAnalysis(
  gtJson: unknown,
  dtJson: unknown,
  options: { gtFile?: string; dtFile?: string } = {},
): ErrorAnalysisData {
  const gt = loadGroundTruth(gtJson, { file: options.gtFile });
  const dt = loadDetections(gt, dtJson, { file: options.dtFile });
  // Both loaders validated every field read below.
  const ds = gtJson as {
    images: Record<string, unknown>[];
    categories: Record<string, unknown>[];
    annotations?: Record<string, unknown>[];
  };
  const I = gt.imgIds.length;

  const supercategory: (string | undefined)[] = gt.catIds.map(() => undefined);
  for (const c of ds.categories) { // later entries win, as in COCO.createIndex
    const s = c.supercategory;
    supercategory[gt.catIndex.get(c.id as CocoId)!] = typeof s === "string" ? s : undefined;
  }

  // COCO.createIndex: imgs[id] = img keeps the first position and the last entry.
  const fileOrder = new Int32Array(I);
  const seen = new Uint8Array(I);
  const width = new Float64Array(I).fill(NaN), height = new Float64Array(I).fill(NaN);
  let nOrder = 0;
  for (const im of ds.images) {
    const i = gt.imgIndex.get(im.id as CocoId)!;
    if (!seen[i]) {
      seen[i] = 1;
      fileOrder[nOrder++] = i;
    }
    width[i] = numField(im, "width") ?? NaN;
    height[i] = numField(im, "height") ?? NaN;
  }

  // Annotations per image in file order (imgToAnns), including unlisted categories (-1).
  const anns = ds.annotations ?? [];
  const annStart = new Int32Array(I + 1);
  for (const a of anns) {
    const i = gt.imgIndex.get(a.image_id as CocoId);
    if (i !== undefined) annStart[i + 1]++;
  }
  for (let i = 0; i < I; i++) annStart[i + 1] += annStart[i];
  const Q = annStart[I];
  const fill = annStart.slice(0, I);
  const annCat = new Int32Array(Q), annBox = new Float64Array(Q * 4), annArea = new Float64Array(Q);
  const annCrowd = new Uint8Array(Q), annIdNonzero = new Uint8Array(Q), annMm = new Uint8Array(Q);
  const annXyxy = new Float32Array(Q * 4);
  for (const a of anns) {
    const i = gt.imgIndex.get(a.image_id as CocoId);
    if (i === undefined) continue; // getAnnIds(imgIds=...) never returns it
    const q = fill[i]++;
    const k = gt.catIndex.get(a.category_id as CocoId) ?? -1;
    const [x, y, w, h] = a.bbox as number[];
    annCat[q] = k;
    annBox.set([x, y, w, h], q * 4);
    annArea[q] = a.area as number;
    annCrowd[q] = a.iscrowd ? 1 : 0;
    annIdNonzero[q] = a.id === 0 ? 0 : 1;
    toXyxy32(annBox, annXyxy, q);
    // CocoDataset.parse_data_info (mmdet 3.x): which annotations become instances.
    const interW = Math.max(0, Math.min(x + w, width[i]) - Math.max(x, 0));
    const interH = Math.max(0, Math.min(y + h, height[i]) - Math.max(y, 0));
    const outside = interW * interH === 0; // NaN (no width or height given) keeps it
    annMm[q] = !a.ignore && !outside && (a.area as number) > 0 && w >= 1 && h >= 1 && k >= 0 ? 1 : 0;
  }

  const N = dt.scores.length;
  const dtXyxy = new Float32Array(N * 4);
  for (let j = 0; j < N; j++) toXyxy32(dt.boxes, dtXyxy, j);
  return {
    gt,
    dt,
    supercategory,
    fileOrder,
    annStart,
    annCat,
    annBox,
    annArea,
    annCrowd,
    annIdNonzero,
    annMm,
    annXyxy,
    dtXyxy,
  };
}

// ---------------------------------------------------------------------------
// IoU

/**
 * IoU of two float32 `[x1, y1, x2, y2]` boxes exactly as mmdetection's numpy
 * `bbox_overlaps` computes it in float32 (`use_legacy_coordinate=False`):
 * every product, sum and quotient rounded to float32, the union floored at
 * `float32(1e-6)`.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const a = new Float32Array([0, 0, 10, 10]), b = new Float32Array([5, 0, 15, 10]);
 * assertEquals(mmBoxIou(a, 0, b, 0), Math.fround(50 / 150));
 * ```
 */
export function mmBoxIou(a: Float32Array, ai: number, b: Float32Array, bi: number): number {
  const ax1 = a[ai * 4], ay1 = a[ai * 4 + 1], ax2 = a[ai * 4 + 2], ay2 = a[ai * 4 + 3];
  const bx1 = b[bi * 4], by1 = b[bi * 4 + 1], bx2 = b[bi * 4 + 2], by2 = b[bi * 4 + 3];
  const w = Math.max(f32(Math.min(ax2, bx2) - Math.max(ax1, bx1)), 0);
  const h = Math.max(f32(Math.min(ay2, by2) - Math.max(ay1, by1)), 0);
  const overlap = f32(w * h);
  const areaA = f32(f32(ax2 - ax1) * f32(ay2 - ay1));
  const areaB = f32(f32(bx2 - bx1) * f32(by2 - by1));
  const union = Math.max(f32(f32(areaA + areaB) - overlap), UNION_EPS);
  return f32(overlap / union);
}

/** Which ground truths take part: mmdetection 3.x keeps crowd regions as ordinary instances, 2.x dropped them. */
export type CrowdMode = "gt" | "skip";

/** Annotation indices of image `i` that mmdetection uses as ground truth, into `out`; returns how many. */
function mmGts(data: ErrorAnalysisData, i: number, crowd: CrowdMode, out: Int32Array): number {
  let n = 0;
  for (let q = data.annStart[i]; q < data.annStart[i + 1]; q++) {
    if (data.annMm[q] && (crowd === "gt" || !data.annCrowd[q])) out[n++] = q;
  }
  return n;
}

/** The largest number of annotations on one image. */
function maxPerImage(data: ErrorAnalysisData): number {
  let m = 0;
  for (let i = 0; i + 1 < data.annStart.length; i++) m = Math.max(m, data.annStart[i + 1] - data.annStart[i]);
  return m;
}

// ---------------------------------------------------------------------------
// Confusion matrix

/** Options of {@linkcode confusionMatrix} (mmdetection's command-line defaults). */
export interface ConfusionMatrixOptions {
  /** Detections scoring below this are skipped (`--score-thr`, 0.3). */
  scoreThr?: number;
  /** IoU at or above which a detection and a ground truth overlap (`--tp-iou-thr`, 0.5). */
  tpIouThr?: number;
  /** Crowd annotations as ground truth ("gt", mmdetection 3.x) or dropped ("skip", 2.x). */
  crowd?: CrowdMode;
}

/** A confusion matrix: `counts[gt][pred]` over `classes`, the last being "background". */
export interface ConfusionMatrix {
  /** Category names in `gt.catIds` order, then "background", [K+1]. */
  classes: string[];
  /** Rows are ground-truth classes, columns predicted classes, [K+1][K+1]. */
  counts: number[][];
}

/**
 * mmdetection's detection confusion matrix (`confusion_matrix.py`,
 * `analyze_per_img_dets`): rows ground truth, columns prediction, the last
 * row and column "background" (see the module notes for every rule).
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const gt = { images: [{ id: 1 }], categories: [{ id: 1, name: "cat" }, { id: 2, name: "dog" }],
 *   annotations: [{ id: 1, image_id: 1, category_id: 1, bbox: [0, 0, 10, 10], area: 100 },
 *                 { id: 2, image_id: 1, category_id: 2, bbox: [50, 50, 10, 10], area: 100 }] };
 * const dets = [
 *   { image_id: 1, category_id: 1, bbox: [0, 0, 10, 10], score: 0.9 },   // cat on the cat: TP
 *   { image_id: 1, category_id: 1, bbox: [50, 50, 10, 10], score: 0.8 }, // cat on the dog: confusion
 *   { image_id: 1, category_id: 2, bbox: [90, 90, 5, 5], score: 0.7 },   // dog on nothing: background
 * ];
 * const cm = confusionMatrix(loadErrorAnalysis(gt, dets));
 * assertEquals(cm.classes, ["cat", "dog", "background"]);
 * assertEquals(cm.counts, [[1, 0, 0], [1, 0, 1], [0, 1, 0]]); // the dog was missed: [dog][background]
 * ```
 */
export function confusionMatrix(data: ErrorAnalysisData, options: ConfusionMatrixOptions = {}): ConfusionMatrix {
  const scoreThr = options.scoreThr ?? 0.3, iouThr = options.tpIouThr ?? 0.5;
  const crowd = options.crowd ?? "gt";
  const { gt, dt } = data;
  const I = gt.imgIds.length, K = gt.catIds.length, W = K + 1;
  const counts = new Float64Array(W * W); // [K+1, K+1], row = gt class, column = det class
  const gIdx = new Int32Array(maxPerImage(data));
  const tp = new Int32Array(gIdx.length);
  const { annCat, annXyxy, dtXyxy } = data;
  for (let i = 0; i < I; i++) {
    const G = mmGts(data, i, crowd, gIdx);
    tp.fill(0, 0, G);
    for (let k = 0; k < K; k++) {
      const c = k * I + i;
      for (let d = dt.cellStart[c]; d < dt.cellStart[c + 1]; d++) {
        if (!(dt.scores[d] >= scoreThr)) continue;
        let match = 0;
        for (let g = 0; g < G; g++) {
          if (mmBoxIou(dtXyxy, d, annXyxy, gIdx[g]) >= iouThr) {
            match++;
            const gk = annCat[gIdx[g]];
            if (gk === k) tp[g]++;
            counts[gk * W + k]++;
          }
        }
        if (match === 0) counts[K * W + k]++; // background false positive
      }
    }
    for (let g = 0; g < G; g++) if (tp[g] === 0) counts[annCat[gIdx[g]] * W + K]++; // false negative
  }
  const rows: number[][] = [];
  for (let r = 0; r < W; r++) rows.push(Array.from(counts.subarray(r * W, (r + 1) * W)));
  return { classes: [...gt.catNames, "background"], counts: rows };
}

// ---------------------------------------------------------------------------
// PR breakdown

/** The curves of the breakdown, in mmdetection's (and Detectron's) order. */
export const ERROR_TYPES = ["C75", "C50", "Loc", "Sim", "Oth", "BG", "FN"] as const;

/** One curve of the breakdown. */
export type ErrorType = typeof ERROR_TYPES[number];

/** The breakdown for one area range: AP of each curve and its precision at each recall threshold. */
export interface PrCurves {
  /** "all", "small", "medium" or "large". */
  area: string;
  /** Inclusive range of ground-truth `area`. */
  range: [number, number];
  /** Mean precision of each curve over recall thresholds (and categories), as mmdetection's legend prints it. */
  ap: Record<ErrorType, number>;
  /** Precision of each curve at each recall threshold (averaged over categories for `overall`), [R] each. */
  precision: Record<ErrorType, Float64Array>;
}

/** What {@linkcode prBreakdown} returns. */
export interface PrBreakdown {
  /** Recall thresholds, the x axis of every curve, [R] (101 points). */
  recThrs: Float64Array;
  /** All categories together, one entry per area range: all, small, medium, large, [A]. */
  overall: PrCurves[];
  /** Each category, in `gt.catIds` order, [K]. */
  perCategory: { id: CocoId; name: string; areas: PrCurves[] }[];
}

/** Options of {@linkcode prBreakdown}. */
export interface PrBreakdownOptions {
  /** mmdetection's `--areas`: small below `areas[0]`, medium to `areas[1]`, large to `areas[2]` (1024, 9216, 1e10). */
  areas?: [number, number, number];
}

/**
 * The ground truth COCOeval sees in mmdetection's `analyze_individual_category`
 * for every category at once: cell `(k, i)` holds the annotations of image `i`
 * of category `k`, plus, as crowd regions, those of categories `relabel(k, k2)`
 * (in file order, as `imgToAnns` lists them). The extra regions are only added
 * where category `k` has detections on the image: elsewhere they are ignored and
 * match nothing, so leaving them out changes no number.
 */
function relabelledGroundTruth(
  data: ErrorAnalysisData,
  relabel: (k: number, other: number) => boolean,
): CocoGroundTruth {
  const { gt, dt, annStart, annCat } = data;
  const I = gt.imgIds.length, K = gt.catIds.length;
  const take = (k: number, q: number, withOthers: boolean) => annCat[q] === k || (withOthers && relabel(k, annCat[q]));
  const cellStart = new Int32Array(K * I + 1);
  for (let k = 0; k < K; k++) {
    for (let i = 0; i < I; i++) {
      const c = k * I + i, withOthers = dt.cellStart[c + 1] > dt.cellStart[c];
      let n = 0;
      for (let q = annStart[i]; q < annStart[i + 1]; q++) if (take(k, q, withOthers)) n++;
      cellStart[c + 1] = cellStart[c] + n;
    }
  }
  const G = cellStart[K * I];
  const boxes = new Float64Array(G * 4), area = new Float64Array(G);
  const iscrowd = new Uint8Array(G), idNonzero = new Uint8Array(G);
  let j = 0;
  for (let k = 0; k < K; k++) {
    for (let i = 0; i < I; i++) {
      const c = k * I + i, withOthers = dt.cellStart[c + 1] > dt.cellStart[c];
      for (let q = annStart[i]; q < annStart[i + 1]; q++) {
        if (!take(k, q, withOthers)) continue;
        boxes.set(data.annBox.subarray(q * 4, q * 4 + 4), j * 4);
        area[j] = data.annArea[q];
        // gt['ignore'] = 1; gt['iscrowd'] = 1; gt['category_id'] = catId
        iscrowd[j] = annCat[q] === k ? data.annCrowd[q] : 1;
        idNonzero[j] = data.annIdNonzero[q];
        j++;
      }
    }
  }
  return { ...gt, cellStart, boxes, area, iscrowd, idNonzero, skipped: 0 };
}

/**
 * The PR-curve breakdown of Detectron / mmdetection's `coco_error_analysis.py`
 * (C75, C50, Loc, Sim, Oth, BG, FN; see the module notes), overall and per
 * category, for the area ranges all, small, medium and large. Curves are
 * cumulative: each lies on or above the one before, and the gap between two
 * neighbours is the AP lost to that kind of error (mmdetection fills it).
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const gt = { images: [{ id: 1 }], categories: [{ id: 1, name: "cat" }],
 *   annotations: [{ id: 1, image_id: 1, category_id: 1, bbox: [0, 0, 40, 40], area: 1600, iscrowd: 0 }] };
 * // IoU 0.6: a hit at .5, a miss at .75.
 * const br = prBreakdown(loadErrorAnalysis(gt, [{ image_id: 1, category_id: 1, bbox: [0, 0, 40, 24], score: 1 }]));
 * const all = br.overall[0];
 * assertEquals([all.ap.C75, Math.round(all.ap.C50 * 1e6) / 1e6, all.ap.FN], [0, 1, 1]);
 * assertEquals([br.recThrs.length, all.precision.C50.length], [101, 101]);
 * ```
 */
export function prBreakdown(data: ErrorAnalysisData, options: PrBreakdownOptions = {}): PrBreakdown {
  const { gt, dt, supercategory: sup } = data;
  const [a0, a1, a2] = options.areas ?? [1024, 9216, 1e10];
  const base = defaultParams();
  const params = (iouThrs: number[]): CocoEvalParams => ({
    iouThrs: Float64Array.from(iouThrs),
    recThrs: base.recThrs,
    maxDets: [100],
    areaRng: [[0, a2], [0, a0], [a0, a1], [a1, a2]],
    areaRngLbl: base.areaRngLbl,
  });
  const K = gt.catIds.length, R = base.recThrs.length, A = 4, Y = ERROR_TYPES.length;

  // analyze_results: cocoEval.params.iouThrs = [0.75, 0.5, 0.1]; maxDets = [100].
  const main = accumulate(evaluate(gt, dt, { params: params([0.75, 0.5, 0.1]) }));
  // analyze_individual_category, for every category at once.
  const sameSuper = (k: number, o: number) => o !== k && o >= 0 && sup[k] !== undefined && sup[o] === sup[k];
  const sim = accumulate(evaluate(relabelledGroundTruth(data, sameSuper), dt, { params: params([0.1]) }));
  const anyOther = (k: number, o: number) => o !== k; // includes categories the file does not list
  const oth = accumulate(evaluate(relabelledGroundTruth(data, anyOther), dt, { params: params([0.1]) }));

  // ps[type, r, k, a] (maxDets has one entry); ps[ps == -1] = 0; BG = Oth > 0; FN = 1.
  const ps = new Float64Array(Y * R * K * A);
  const at = (y: number, r: number, k: number, a: number) => ((y * R + r) * K + k) * A + a;
  const from = (acc: CocoEvalAccumulated, t: number, r: number, k: number, a: number) =>
    Math.max(0, acc.precision[((t * R + r) * K + k) * A + a]);
  for (let r = 0; r < R; r++) {
    for (let k = 0; k < K; k++) {
      for (let a = 0; a < A; a++) {
        for (let t = 0; t < 3; t++) ps[at(t, r, k, a)] = from(main, t, r, k, a);
        ps[at(3, r, k, a)] = from(sim, 0, r, k, a);
        const o = from(oth, 0, r, k, a);
        ps[at(4, r, k, a)] = o;
        ps[at(5, r, k, a)] = o > 0 ? 1 : 0;
        ps[at(6, r, k, a)] = 1;
      }
    }
  }

  const curves = (a: number, ks: number[]): PrCurves => {
    const ap = {} as Record<ErrorType, number>, precision = {} as Record<ErrorType, Float64Array>;
    ERROR_TYPES.forEach((type, y) => {
      const curve = new Float64Array(R);
      let total = 0;
      for (let r = 0; r < R; r++) {
        let s = 0;
        for (const k of ks) s += ps[at(y, r, k, a)];
        curve[r] = s / ks.length; // ps_.mean(axis=1) over categories
        total += s;
      }
      precision[type] = curve;
      ap[type] = total / (R * ks.length); // ps_.mean()
    });
    const range = [[0, a2], [0, a0], [a0, a1], [a1, a2]][a] as [number, number];
    return { area: base.areaRngLbl[a], range, ap, precision };
  };
  const allK = [...Array(K).keys()];
  return {
    recThrs: base.recThrs,
    overall: [0, 1, 2, 3].map((a) => curves(a, allK)),
    perCategory: gt.catIds.map((id, k) => ({
      id,
      name: gt.catNames[k],
      areas: [0, 1, 2, 3].map((a) => curves(a, [k])),
    })),
  };
}

// ---------------------------------------------------------------------------
// Per-image AP

/** numpy's pairwise summation (`pairwise_sum`, blocks of 128, 8 accumulators), in float64 or float32. */
function pairwiseSum(a: Float64Array, off: number, n: number, single: boolean): number {
  const r = single ? f32 : (x: number) => x;
  if (n < 8) {
    let res = 0;
    for (let j = 0; j < n; j++) res = r(res + a[off + j]);
    return res;
  }
  if (n <= 128) {
    const acc = Array.from(a.subarray(off, off + 8));
    let j = 8;
    for (; j < n - (n % 8); j += 8) for (let q = 0; q < 8; q++) acc[q] = r(acc[q] + a[off + j + q]);
    let res = r(r(r(acc[0] + acc[1]) + r(acc[2] + acc[3])) + r(r(acc[4] + acc[5]) + r(acc[6] + acc[7])));
    for (; j < n; j++) res = r(res + a[off + j]);
    return res;
  }
  let n2 = Math.floor(n / 2);
  n2 -= n2 % 8;
  return r(pairwiseSum(a, off, n2, single) + pairwiseSum(a, off + n2, n - n2, single));
}

/**
 * `average_precision(recalls, precisions, mode='area')` of mmdetection for one
 * class: the area under the precision envelope, summed as numpy sums, stored
 * in float32. `scratch` holds at least `2 * n + 3` values.
 */
function areaAp(rec: Float64Array, prec: Float64Array, n: number, scratch: Float64Array): number {
  // mrec = [0, rec..., 1], mpre = [0, prec..., 0]; mpre[i-1] = max(mpre[i-1], mpre[i]) from the right.
  const mpre = scratch.subarray(0, n + 2), terms = scratch.subarray(n + 2);
  mpre[0] = 0;
  mpre.set(prec.subarray(0, n), 1);
  mpre[n + 1] = 0;
  for (let j = n + 1; j > 0; j--) if (mpre[j] > mpre[j - 1]) mpre[j - 1] = mpre[j];
  const mrec = (j: number) => (j === 0 ? 0 : j === n + 1 ? 1 : rec[j - 1]);
  let m = 0;
  for (let j = 0; j <= n; j++) {
    const lo = mrec(j), hi = mrec(j + 1);
    if (hi !== lo) terms[m++] = (hi - lo) * mpre[j + 1];
  }
  return f32(pairwiseSum(terms, 0, m, false));
}

/** Options of {@linkcode perImageAp}. */
export interface PerImageApOptions {
  /** IoU thresholds averaged over (`np.linspace(.5, .95, 10)`); `[0.5]` gives AP50. */
  iouThrs?: ArrayLike<number>;
  /** Crowd annotations as ground truth ("gt", mmdetection 3.x) or dropped ("skip", 2.x). */
  crowd?: CrowdMode;
}

/** One image's AP. */
export interface ImageAp {
  /** The image's id in the ground truth. */
  imageId: CocoId;
  /** mmdetection's per-image mAP (see {@linkcode perImageAp}). */
  ap: number;
  /** Ground truths taken into account. */
  numGts: number;
  /** Detections on the image, of every class. */
  numDets: number;
}

/**
 * AP of every image with ground truth, as mmdetection's `analyze_results.py`
 * ranks images (`bbox_map_eval`): for each IoU threshold (.50:.05:.95),
 * `eval_map` on that image alone, the mean over the classes with ground truth
 * there of the VOC area AP (`tpfp_default`: by descending score, a detection
 * whose best-overlap ground truth has IoU >= the threshold is a TP if that
 * ground truth is not yet taken, else an FP); then the mean over thresholds.
 * Sorted ascending, ties in file order. Images without ground truth are left
 * out (mmdetection gives them 0).
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const gt = { images: [{ id: 1 }, { id: 2 }], categories: [{ id: 1, name: "cat" }],
 *   annotations: [{ id: 1, image_id: 1, category_id: 1, bbox: [0, 0, 10, 10], area: 100 },
 *                 { id: 2, image_id: 2, category_id: 1, bbox: [0, 0, 10, 10], area: 100 }] };
 * const dets = [{ image_id: 1, category_id: 1, bbox: [0, 0, 10, 10], score: 0.9 },
 *               { image_id: 2, category_id: 1, bbox: [0, 0, 10, 6.25], score: 0.9 }]; // IoU .625
 * const ranked = perImageAp(loadErrorAnalysis(gt, dets));
 * // Image 2: a hit at IoU .50, .55 and .60 only, so AP 1 at 3 of the 10 thresholds.
 * assertEquals(ranked.map((r) => [r.imageId, r.ap]), [[2, 0.3], [1, 1]]);
 * ```
 */
export function perImageAp(data: ErrorAnalysisData, options: PerImageApOptions = {}): ImageAp[] {
  const thrs = Float64Array.from(options.iouThrs ?? linspace(0.5, 0.95, 10));
  const crowd = options.crowd ?? "gt";
  const { gt, dt, annCat, annXyxy, dtXyxy, fileOrder } = data;
  const I = gt.imgIds.length, K = gt.catIds.length, T = thrs.length;

  let maxDet = 0;
  for (let c = 0; c < K * I; c++) maxDet = Math.max(maxDet, dt.cellStart[c + 1] - dt.cellStart[c]);
  const gIdx = new Int32Array(maxPerImage(data)), gOfK = new Int32Array(gIdx.length);
  const covered = new Uint8Array(gIdx.length);
  const iouMax = new Float64Array(maxDet), iouArg = new Int32Array(maxDet);
  const rec = new Float64Array(maxDet), prec = new Float64Array(maxDet);
  const scratch = new Float64Array(2 * maxDet + 3);
  const apByThr = new Float64Array(T * K); // [T, classes with ground truth]
  const seen = new Uint8Array(K);

  const out: ImageAp[] = [];
  for (const i of fileOrder) {
    const G = mmGts(data, i, crowd, gIdx);
    if (G === 0) continue;
    let numDets = 0;
    for (let k = 0; k < K; k++) numDets += dt.cellStart[k * I + i + 1] - dt.cellStart[k * I + i];
    seen.fill(0);
    for (let g = 0; g < G; g++) seen[annCat[gIdx[g]]] = 1;
    let nc = 0; // classes with ground truth, in class order
    for (let k = 0; k < K; k++) {
      if (!seen[k]) continue;
      let nk = 0; // ground truths of class k, in file order
      for (let g = 0; g < G; g++) if (annCat[gIdx[g]] === k) gOfK[nk++] = gIdx[g];
      const c = k * I + i, d0 = dt.cellStart[c], D = dt.cellStart[c + 1] - d0;
      // Detections are already sorted by descending score (ties in file order).
      for (let d = 0; d < D; d++) {
        let best = -1, arg = 0;
        for (let g = 0; g < nk; g++) {
          const v = mmBoxIou(dtXyxy, d0 + d, annXyxy, gOfK[g]);
          if (v > best) [best, arg] = [v, g]; // np.argmax: the first maximum
        }
        iouMax[d] = best;
        iouArg[d] = arg;
      }
      for (let t = 0; t < T; t++) {
        covered.fill(0, 0, nk);
        let tp = 0, fp = 0;
        for (let d = 0; d < D; d++) {
          if (iouMax[d] >= thrs[t] && !covered[iouArg[d]]) {
            covered[iouArg[d]] = 1;
            tp++;
          } else fp++;
          rec[d] = tp / nk; // tp / np.maximum(num_gts, eps), float64
          prec[d] = f32(tp / Math.max(tp + fp, F32_EPS)); // float32 / float32
        }
        apByThr[t * K + nc] = areaAp(rec, prec, D, scratch);
      }
      nc++;
    }
    // mean_ap = np.array(aps).mean() (float32) per threshold; then sum(mean_aps) / len(mean_aps).
    let sum = 0;
    for (let t = 0; t < T; t++) sum += f32(pairwiseSum(apByThr, t * K, nc, true) / nc);
    out.push({ imageId: gt.imgIds[i], ap: sum / T, numGts: G, numDets });
  }
  return out.sort((a, b) => a.ap - b.ap); // sorted(..., key=mAP): stable, so ties keep file order
}

/**
 * The `k` images with the lowest AP from {@linkcode perImageAp}'s ranking
 * (mmdetection's "bad" samples, `_mAPs[:topk]`).
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const ranked = [{ imageId: 4, ap: 0, numGts: 1, numDets: 0 }, { imageId: 2, ap: 0.5, numGts: 1, numDets: 3 }];
 * assertEquals(worstImages(ranked, 1).map((r) => [r.imageId, r.ap]), [[4, 0]]);
 * ```
 */
export function worstImages(ranked: ImageAp[], k: number): ImageAp[] {
  return ranked.slice(0, Math.max(0, k));
}
