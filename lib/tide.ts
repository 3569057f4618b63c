/**
 * TIDE error analysis for box detections: a faithful TypeScript port of
 * tidecv 1.0.1 (dbolya/tide, "TIDE: A General Toolbox for Identifying Object
 * Detection Errors", ECCV 2020) in box mode, on flat typed arrays.
 *
 * TIDE matches detections to ground truth at one IoU threshold (0.5), files
 * every false positive under one error type and every unrecovered ground truth
 * as missed, then asks, per type, how much the mAP would rise if an oracle
 * fixed only the errors of that type (dAP, in AP points). The error types:
 * Cls (right box, wrong class), Loc (right class, IoU between the background
 * and positive thresholds), Both (wrong class and poor box), Dupe (a second
 * detection of a ground truth already taken), Bkg (background, IoU at most 0.1
 * with everything) and Miss. Two special dAPs bound precision and recall:
 * FalsePos (every false positive scored 0) and FalseNeg (every missed ground
 * truth forgiven).
 *
 * Ported from tidecv (`tidecv/` of the package, v1.0.1):
 *
 * - `quantify.py` `TIDEExample._run`: per image, detections sorted by score
 *   (stable) and cut to `max_dets` across all classes; greedy matching in that
 *   order to the highest same-class IoU (first ground truth on ties) at
 *   `IoU >= pos_thresh`; then crowd regions (`iscrowd`, tidecv's ignore
 *   regions) swallow still-unmatched detections of their class whose
 *   intersection over the detection's area is `> pos_thresh`;
 * - `quantify.py` `TIDERun._eval_image`: the classification order of an
 *   unmatched (or crowd-ignored) detection, and which ground truths are missed;
 * - `errors/main_errors.py` and `errors/error.py` (`BestGTMatch`): how each
 *   oracle fixes its type;
 * - `quantify.py` `TIDERun.fix_errors`, `fix_main_errors` and
 *   `fix_special_errors`: the rebuilt AP data and its push order (which decides
 *   score ties);
 * - `ap.py` `APDataObject.get_ap` and `ClassedAPDataObject.get_mAP`: tidecv's
 *   own AP (101-point, precision without pycocotools' epsilon, a class with
 *   detections but no ground truth counts as AP 0), averaged over the classes
 *   that have any detection or ground truth in that run, summed in tidecv's
 *   class order, left to right (Python 3.11's `sum`; 3.12+ compensates, a
 *   change far below 1e-10);
 * - `datasets.py` `COCO` and `COCOResult`: images in file order, `iscrowd`
 *   annotations as ignore regions of their class, 100 detections per image.
 *
 * Where this port departs from tidecv on purpose: a detection on an image or
 * category the ground truth does not know raises {@linkcode DetectionError}
 * (as {@linkcode cocoEvaluate} does; tidecv drops unknown images and counts
 * unknown categories as extra classes), and an mAP over no class at all is 0
 * (tidecv divides by zero).
 *
 * @module
 */
import {
  bboxIou,
  type CocoDetection,
  type CocoGroundTruthJson,
  type CocoId,
  DetectionError,
  sortByScoreStable,
} from "./coco_eval.ts";
import { InputError } from "./errors.ts";

export type { CocoDetection, CocoGroundTruthJson };

/** Options of {@linkcode tideEvaluate}; the defaults are tidecv's. */
export interface TideOptions {
  /** IoU for a true positive (tidecv `pos_threshold`, 0.5). */
  posThreshold?: number;
  /** IoU at or below which a false positive is background (tidecv `background_threshold`, 0.1). */
  backgroundThreshold?: number;
  /** Detections kept per image, over all classes, by score (tidecv `Data.max_dets`, 100 for COCO). */
  maxDets?: number;
  /** Ground-truth file name, for error messages. */
  gtFile?: string;
  /** Results file name, for error messages. */
  dtFile?: string;
}

/** One value per main error type, in tidecv's order. */
export interface TideMainErrors {
  Cls: number;
  Loc: number;
  Both: number;
  Dupe: number;
  Bkg: number;
  Miss: number;
}

/** The two special errors of tidecv. */
export interface TideSpecialErrors {
  FalsePos: number;
  FalseNeg: number;
}

/** What a detection turned out to be; `type` codes of {@linkcode TideDetections} index this list. */
export const TIDE_DETECTION_TYPES = ["TP", "Cls", "Loc", "Both", "Dupe", "Bkg", "Cut"] as const;
/** A name of {@linkcode TIDE_DETECTION_TYPES}: "Cut" is a detection past `maxDets` in its image, never evaluated. */
export type TideDetectionType = typeof TIDE_DETECTION_TYPES[number];

/**
 * What a ground truth turned out to be; `type` codes of {@linkcode TideGroundTruth} index this list.
 * "FN" is unmatched but not missed: a Cls or Loc error points at it, so that oracle would recover it.
 * "Crowd" is an `iscrowd` region (tidecv's ignore region), never a positive.
 */
export const TIDE_GT_TYPES = ["TP", "Miss", "FN", "Crowd"] as const;
/** A name of {@linkcode TIDE_GT_TYPES}. */
export type TideGtType = typeof TIDE_GT_TYPES[number];

/** Per-detection outcome, indexed like the results list. */
export interface TideDetections {
  /** Index into {@linkcode TIDE_DETECTION_TYPES}, [N]. */
  type: Uint8Array;
  /**
   * The ground truth involved, as an index into the ground truth's `annotations`, -1 if none, [N]:
   * TP its match; Cls and Loc the one its fix would match; Dupe the one already taken (its taker is
   * `groundTruth.match[gt]`).
   */
  gt: Int32Array;
  /** Highest IoU with a non-crowd ground truth of the same class (tidecv `pred['iou']`); 0 when cut, [N]. */
  iou: Float64Array;
  /** 1 when a crowd region of its class swallowed it: left out of AP, yet tidecv still files an error type, [N]. */
  ignored: Uint8Array;
  /** 1 for the one Cls or Loc error per ground truth that its oracle turns into a true positive, [N]. */
  fixable: Uint8Array;
}

/** Per-ground-truth outcome, indexed like the ground truth's `annotations`. */
export interface TideGroundTruth {
  /** Index into {@linkcode TIDE_GT_TYPES}, [G]. */
  type: Uint8Array;
  /** Index of the detection (in the results list) that matched it, -1 if none, [G]. */
  match: Int32Array;
}

/** Everything {@linkcode tideEvaluate} computes; AP values are in tidecv's units, percentage points. */
export interface TideResult {
  /** tidecv's mAP at `posThreshold` (`TIDERun.ap`): AP50 with the defaults. */
  ap50: number;
  /** dAP of each main error type, each fixed alone, never negative (`TIDE.get_main_errors`). */
  main: TideMainErrors;
  /** dAP of perfect precision and of perfect recall (`TIDE.get_special_errors`). */
  special: TideSpecialErrors;
  /** Number of errors of each type (`TIDERun.count_errors`); crowd-ignored detections count too. */
  counts: TideMainErrors;
  detections: TideDetections;
  groundTruth: TideGroundTruth;
  /** The thresholds used. */
  options: { posThreshold: number; backgroundThreshold: number; maxDets: number };
}

// Detection type codes (TIDE_DETECTION_TYPES) and ground-truth type codes (TIDE_GT_TYPES).
const TP = 0, CLS = 1, LOC = 2, BOTH = 3, DUPE = 4, BKG = 5, CUT = 6;
const G_MISS = 1, G_FN = 2, G_CROWD = 3; // G_TP = 0: the initial value

// ---------------------------------------------------------------------------
// Loading

function isId(v: unknown): v is CocoId {
  return (typeof v === "number" && Number.isFinite(v)) || typeof v === "string";
}

function isBox(v: unknown): v is number[] {
  return Array.isArray(v) && v.length === 4 && v.every((x) => typeof x === "number" && Number.isFinite(x));
}

/** An {@linkcode InputError} whose message names `where` even when no file is known (as coco_eval's). */
function gtError(message: string, file: string | undefined, where: string): InputError {
  return new InputError(file ? message : `${where}: ${message}`, { file, where });
}

/** Ground truth and detections grouped by image, in tidecv's order. */
interface TideInput {
  /** Images, in file order (duplicates once). */
  numImages: number;
  /** Class count; classes are indices into the listed categories, then categories only annotations name. */
  numClasses: number;
  /** Annotations of image `i` are `gtOrder[gtStart[i] .. gtStart[i + 1])`, file order, [I+1]. */
  gtStart: Int32Array;
  /** Annotation indices grouped by image, [G]. */
  gtOrder: Int32Array;
  /** Boxes `[x, y, w, h]`, file order, [G, 4]. */
  gtBox: Float64Array;
  /** Class index, [G]. */
  gtCls: Int32Array;
  /** 1 for `iscrowd` regions, [G]. */
  gtCrowd: Uint8Array;
  /** 1 for a crowd region of category id -1, which tidecv lets cover every class, [G]. */
  gtAnyClass: Uint8Array;
  /** Detections of image `i` are `dtOrder[dtStart[i] .. dtStart[i + 1])`, by score, ties in file order, [I+1]. */
  dtStart: Int32Array;
  /** Detection indices grouped by image, [N]. */
  dtOrder: Int32Array;
  /** Boxes, file order, [N, 4]. */
  dtBox: Float64Array;
  /** Scores, file order, [N]. */
  dtScore: Float64Array;
  /** Class index, file order, [N]. */
  dtCls: Int32Array;
}

function loadTideInput(gtJson: unknown, dtJson: unknown, gtFile?: string, dtFile?: string): TideInput {
  // --- ground truth (datasets.COCO): images and categories as listed, annotations in file order.
  if (typeof gtJson !== "object" || gtJson === null || Array.isArray(gtJson)) {
    throw new InputError("ground truth must be a COCO instances object with images, annotations and categories", {
      file: gtFile,
    });
  }
  const ds = gtJson as Record<string, unknown>;
  for (const key of ["images", "categories"]) {
    if (!Array.isArray(ds[key])) throw new InputError(`ground truth has no "${key}" array`, { file: gtFile });
  }
  if (ds.annotations !== undefined && !Array.isArray(ds.annotations)) {
    throw new InputError(`ground truth "annotations" must be an array`, { file: gtFile });
  }
  const images = ds.images as unknown[], categories = ds.categories as unknown[];
  const anns = (ds.annotations ?? []) as unknown[];
  const imgIndex = new Map<CocoId, number>();
  images.forEach((im, n) => {
    const id = (im as { id?: unknown } | null)?.id;
    if (!isId(id)) throw gtError("image needs a numeric or string id", gtFile, `images[${n}]`);
    if (!imgIndex.has(id)) imgIndex.set(id, imgIndex.size); // Data.images: a dict in insertion order
  });
  const clsIndex = new Map<CocoId, number>();
  categories.forEach((c, n) => {
    const id = (c as { id?: unknown } | null)?.id;
    if (!isId(id)) throw gtError("category needs a numeric or string id", gtFile, `categories[${n}]`);
    if (!clsIndex.has(id)) clsIndex.set(id, clsIndex.size);
  });
  const I = imgIndex.size, G = anns.length;
  const gtBox = new Float64Array(G * 4), gtCls = new Int32Array(G), gtImg = new Int32Array(G);
  const gtCrowd = new Uint8Array(G), gtAnyClass = new Uint8Array(G);
  const gtStart = new Int32Array(I + 1);
  for (let n = 0; n < G; n++) {
    const where = `annotations[${n}]`;
    const a = anns[n] as Record<string, unknown> | null;
    if (typeof a !== "object" || a === null) throw gtError("annotation must be an object", gtFile, where);
    if (!isId(a.image_id)) throw gtError("annotation needs an image_id", gtFile, where);
    if (!isId(a.category_id)) throw gtError("annotation needs a category_id", gtFile, where);
    if (!isBox(a.bbox)) throw gtError("bbox must be [x, y, w, h], four finite numbers", gtFile, where);
    const ic = a.iscrowd;
    if (ic !== undefined && typeof ic !== "number" && typeof ic !== "boolean") {
      throw gtError("iscrowd must be 0 or 1", gtFile, where);
    }
    const i = imgIndex.get(a.image_id);
    // datasets.COCO looks the image up to size its mask and fails on an unlisted one.
    if (i === undefined) {
      throw gtError(`image_id ${JSON.stringify(a.image_id)} is not in the ground truth's images`, gtFile, where);
    }
    // Data._make_default_class: a category only annotations name is a class all the same.
    let k = clsIndex.get(a.category_id);
    if (k === undefined) clsIndex.set(a.category_id, k = clsIndex.size);
    gtImg[n] = i;
    gtCls[n] = k;
    gtBox.set(a.bbox, n * 4);
    gtCrowd[n] = a.iscrowd ? 1 : 0; // `if ann['iscrowd']`: add_ignore_region, else add_ground_truth
    gtAnyClass[n] = gtCrowd[n] && a.category_id === -1 ? 1 : 0; // ignore_region['class'] == -1
    gtStart[i + 1]++;
  }
  for (let i = 0; i < I; i++) gtStart[i + 1] += gtStart[i];
  const gtOrder = new Int32Array(G);
  const gFill = gtStart.slice(0, I);
  for (let n = 0; n < G; n++) gtOrder[gFill[gtImg[n]]++] = n;

  // --- detections (datasets.COCOResult), validated as coco_eval.loadDetections does.
  if (!Array.isArray(dtJson)) throw new InputError("results must be a JSON array of detections", { file: dtFile });
  const N = dtJson.length;
  const dtBox = new Float64Array(N * 4), dtScore = new Float64Array(N);
  const dtCls = new Int32Array(N), dtImg = new Int32Array(N);
  const dtStart = new Int32Array(I + 1);
  for (let e = 0; e < N; e++) {
    const d = dtJson[e] as Record<string, unknown> | null;
    if (typeof d !== "object" || d === null || Array.isArray(d)) {
      throw new DetectionError("detection must be an object", e, "malformed", dtFile);
    }
    if (!isId(d.image_id)) throw new DetectionError("detection needs an image_id", e, "malformed", dtFile);
    if (!isId(d.category_id)) throw new DetectionError("detection needs a category_id", e, "malformed", dtFile);
    const b = d.bbox as number[];
    if (!isBox(b)) throw new DetectionError("bbox must be [x, y, w, h], four finite numbers", e, "malformed", dtFile);
    if (typeof d.score !== "number" || !Number.isFinite(d.score)) {
      throw new DetectionError("score must be a finite number", e, "malformed", dtFile);
    }
    const i = imgIndex.get(d.image_id);
    if (i === undefined) {
      throw new DetectionError(
        `image_id ${JSON.stringify(d.image_id)} is not an image of the ground truth`,
        e,
        "unknown-image",
        dtFile,
      );
    }
    const k = clsIndex.get(d.category_id);
    if (k === undefined) {
      throw new DetectionError(
        `category_id ${JSON.stringify(d.category_id)} is not a category of the ground truth`,
        e,
        "unknown-category",
        dtFile,
      );
    }
    dtImg[e] = i;
    dtCls[e] = k;
    dtScore[e] = d.score;
    dtBox[e * 4] = b[0];
    dtBox[e * 4 + 1] = b[1];
    dtBox[e * 4 + 2] = b[2];
    dtBox[e * 4 + 3] = b[3];
    dtStart[i + 1]++;
  }
  for (let i = 0; i < I; i++) dtStart[i + 1] += dtStart[i];
  const dtOrder = new Int32Array(N);
  const dFill = dtStart.slice(0, I);
  for (let e = 0; e < N; e++) dtOrder[dFill[dtImg[e]]++] = e;
  // TIDEExample._run: preds.sort(key=lambda pred: -pred['score']), a stable sort of file order.
  for (let i = 0; i < I; i++) sortByScoreStable(dtOrder, dtStart[i], dtStart[i + 1], dtScore);
  return {
    numImages: I,
    numClasses: clsIndex.size,
    gtStart,
    gtOrder,
    gtBox,
    gtCls,
    gtCrowd,
    gtAnyClass,
    dtStart,
    dtOrder,
    dtBox,
    dtScore,
    dtCls,
  };
}

// ---------------------------------------------------------------------------
// AP (ap.py)

/**
 * tidecv's `APDataObject.get_ap` on data points already in its sorted order:
 * precision `tp / (tp + fp)`, recall `tp / numGt`, the right-to-left envelope,
 * then precision at recall `0, 0.01, ..., 1` by `np.searchsorted(side='left')`
 * (0 past the last point), summed left to right and scaled to 0..100. A class
 * without ground truth scores 0.
 *
 * @param isTrue 1 for a true positive, per data point in score order, [n].
 * @param n Number of data points.
 * @param numGt Ground-truth positives of the class.
 * @param scratch Precision and recall buffers of length at least `n`, reused between calls.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * // TP, FP with 2 ground truths: precision 1 up to recall 0.5 (51 of 101 points), 0 after.
 * assertEquals(tideAp(new Uint8Array([1, 0]), 2, 2), 51 / 101 * 100);
 * assertEquals(tideAp(new Uint8Array([0, 1]), 2, 1), 50);
 * ```
 */
export function tideAp(
  isTrue: ArrayLike<number>,
  n: number,
  numGt: number,
  scratch: { prec: Float64Array; rec: Float64Array } = { prec: new Float64Array(n), rec: new Float64Array(n) },
): number {
  if (numGt === 0) return 0;
  const { prec, rec } = scratch;
  let t = 0, f = 0;
  for (let j = 0; j < n; j++) {
    if (isTrue[j]) t++;
    else f++;
    prec[j] = t / (t + f);
    rec[j] = t / numGt;
  }
  for (let j = n - 1; j > 0; j--) if (prec[j] > prec[j - 1]) prec[j - 1] = prec[j];
  // x_range = [x / 100 for x in range(101)]; y = precisions[searchsorted(recalls, x, 'left')] or 0.
  let sum = 0, p = 0;
  for (let b = 0; b <= 100; b++) {
    const x = b / 100;
    while (p < n && rec[p] < x) p++;
    sum += p < n ? prec[p] : 0; // sum(y_range): left to right from 0
  }
  return sum / 101 * 100;
}

// ---------------------------------------------------------------------------
// evaluate (quantify.py)

/**
 * TIDE error analysis of COCO box detections (tidecv's `TIDE().evaluate(gt,
 * preds, mode=TIDE.BOX)` followed by `get_all_errors()` and
 * `count_errors()`), plus each detection's and ground truth's outcome.
 *
 * Takes the same inputs as {@linkcode cocoEvaluate}: a COCO instances object
 * (only `images[].id`, `categories[].id` and the annotations' `image_id`,
 * `category_id`, `bbox` and `iscrowd` are read) and a results list.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * import { TIDE_DETECTION_TYPES, tideEvaluate } from "./tide.ts";
 * const gt = {
 *   images: [{ id: 1 }],
 *   categories: [{ id: 1, name: "cat" }],
 *   annotations: [
 *     { id: 1, image_id: 1, category_id: 1, bbox: [0, 0, 10, 10], area: 100, iscrowd: 0 },
 *     { id: 2, image_id: 1, category_id: 1, bbox: [20, 0, 10, 10], area: 100, iscrowd: 0 },
 *   ],
 * };
 * const res = tideEvaluate(gt, [
 *   { image_id: 1, category_id: 1, bbox: [0, 0, 10, 10], score: 0.9 }, // hits the first cat
 *   { image_id: 1, category_id: 1, bbox: [25, 0, 10, 10], score: 0.8 }, // IoU 1/3 with the second: Loc
 * ]);
 * assertEquals([...res.detections.type].map((t) => TIDE_DETECTION_TYPES[t]), ["TP", "Loc"]);
 * // Precision 1 up to recall 0.5: 51 of tidecv's 101 recall points. Fixing Loc reaches recall 1: AP 100.
 * assertEquals(res.ap50, 51 / 101 * 100);
 * assertEquals(res.main.Loc, 100 - 51 / 101 * 100);
 * assertEquals([res.main.Cls, res.main.Miss, res.counts.Loc], [0, 0, 1]);
 * ```
 */
export function tideEvaluate(gtJson: unknown, dtJson: unknown, options: TideOptions = {}): TideResult {
  const pos = options.posThreshold ?? 0.5;
  const bg = options.backgroundThreshold ?? 0.1;
  const maxDets = options.maxDets ?? 100;
  if (!Number.isFinite(pos) || !Number.isFinite(bg)) throw new InputError("TIDE thresholds must be finite numbers");
  if (!Number.isInteger(maxDets) || maxDets < 1) throw new InputError("TIDE maxDets must be a positive integer");
  const inp = loadTideInput(gtJson, dtJson, options.gtFile, options.dtFile);
  const { numImages: I, numClasses: C, gtStart, gtOrder, gtBox, gtCls, gtCrowd, gtAnyClass } = inp;
  const { dtStart, dtOrder, dtBox, dtScore, dtCls } = inp;
  const N = dtScore.length, G = gtCls.length;

  // Per detection (file order) and per ground truth (annotation order): the outcome reported back.
  const detType = new Uint8Array(N).fill(CUT), detGt = new Int32Array(N).fill(-1);
  const detIou = new Float64Array(N), detIgnored = new Uint8Array(N), detFixable = new Uint8Array(N);
  const gtType = new Uint8Array(G), gtMatch = new Int32Array(G).fill(-1); // type: TP until found otherwise
  const gtUsable = new Uint8Array(G); // 'usable': a Cls/Loc error points at this unused ground truth
  const gtBestScore = new Float64Array(G).fill(-1), gtBest = new Int32Array(G).fill(-1); // BestGTMatch

  // Kept detections in visit order (images in file order, then score order): the order tidecv pushes AP data
  // points and errors, which decides score ties. j below indexes these, [K].
  const { kept: K, maxKept } = keptCount(dtStart, I, maxDets);
  const kDet = new Int32Array(K), kCls = new Int32Array(K), kScore = new Float64Array(K);
  const kTrue = new Uint8Array(K), kIgn = new Uint8Array(K), kType = new Uint8Array(K);
  const kFixCls = new Int32Array(K).fill(-1); // class of the true positive a Cls/Loc fix makes, -1: fix drops it

  // Per class: ground-truth positives, unmatched ones (FalseNeg) and missed ones (MissedError).
  const numGt = new Int32Array(C), numFn = new Int32Array(C), numMissed = new Int32Array(C);
  // ClassedAPDataObject.objs order: the order classes are first touched (add_gt_positives or push).
  const baseOrder: number[] = [];
  const touched = new Uint8Array(C);
  const touch = (c: number) => {
    if (!touched[c]) {
      touched[c] = 1;
      baseOrder.push(c);
    }
  };
  const counts: TideMainErrors = { Cls: 0, Loc: 0, Both: 0, Dupe: 0, Bkg: 0, Miss: 0 };

  // Per-image scratch: IoU [D, Gi] with the non-crowd ground truths, crowd IoU [D].
  let iou = new Float64Array(0), gB = new Float64Array(0), noCrowd = new Uint8Array(0);
  const dB = new Float64Array(maxKept * 4), crowdIou = new Float64Array(maxKept);
  const used = new Uint8Array(maxKept), ign = new Uint8Array(maxKept);
  const crowdFlag = new Uint8Array([1]);
  const nc: number[] = [], cr: number[] = [];
  let taken = new Uint8Array(0), gUsed = new Uint8Array(0);
  let j = 0;

  for (let i = 0; i < I; i++) {
    // TIDEExample: gt = annotations without 'ignore' (file order), ignore_regions = the crowd ones.
    nc.length = 0;
    cr.length = 0;
    for (let q = gtStart[i]; q < gtStart[i + 1]; q++) {
      const a = gtOrder[q];
      if (gtCrowd[a]) {
        cr.push(a);
        gtType[a] = G_CROWD;
      } else nc.push(a);
    }
    const Gi = nc.length;
    for (const a of nc) {
      numGt[gtCls[a]]++; // ap_data.add_gt_positives(truth['class'], 1)
      touch(gtCls[a]);
    }
    const nAll = dtStart[i + 1] - dtStart[i];
    if (nAll === 0) {
      // No predictions: every ground truth is a false negative and a MissedError.
      for (const a of nc) {
        numFn[gtCls[a]]++;
        numMissed[gtCls[a]]++;
        gtType[a] = G_MISS;
        counts.Miss++;
      }
      continue;
    }
    const D = Math.min(nAll, maxDets); // preds = preds[:max_dets]
    const d0 = dtStart[i];
    if (gB.length < Gi * 4) {
      gB = new Float64Array(Gi * 8);
      noCrowd = new Uint8Array(Gi * 2);
      taken = new Uint8Array(Gi * 2);
      gUsed = new Uint8Array(Gi * 2);
    }
    if (iou.length < D * Gi) iou = new Float64Array(Math.max(D * Gi, iou.length * 2));
    for (let d = 0; d < D; d++) dB.set(dtBox.subarray(dtOrder[d0 + d] * 4, dtOrder[d0 + d] * 4 + 4), d * 4);
    for (let g = 0; g < Gi; g++) gB.set(gtBox.subarray(nc[g] * 4, nc[g] * 4 + 4), g * 4);
    // gt_iou = mask_utils.iou(detections, gt boxes, [False] * len(gt)), [D, Gi].
    if (Gi > 0) bboxIou(dB.subarray(0, D * 4), gB.subarray(0, Gi * 4), noCrowd.subarray(0, Gi), iou);
    taken.fill(0, 0, Gi);
    gUsed.fill(0, 0, Gi);
    used.fill(0, 0, D);
    ign.fill(0, 0, D);

    // Greedy matching in score order: argmax of the class-masked IoU over ground truths not yet taken
    // (iou_buffer, whose taken columns are zeroed), matched when >= pos_thresh.
    for (let d = 0; d < D; d++) {
      const e = dtOrder[d0 + d], c = dtCls[e], row = d * Gi;
      let best = -1, bestV = -Infinity, maxCls = 0;
      for (let g = 0; g < Gi; g++) {
        const sameCls = gtCls[nc[g]] === c;
        const v = sameCls && !taken[g] ? iou[row + g] : 0;
        if (v > bestV) {
          bestV = v;
          best = g;
        }
        if (sameCls && iou[row + g] > maxCls) maxCls = iou[row + g];
      }
      detIou[e] = maxCls; // pred['iou'] = np.max(gt_cls_iou[pred_idx, :])
      if (Gi > 0 && bestV >= pos) {
        used[d] = 1;
        taken[best] = 1;
        gUsed[best] = 1;
        gtMatch[nc[best]] = e;
        detGt[e] = nc[best];
      }
    }
    // Ignore regions: an unmatched detection of the region's class whose crowd IoU (intersection over the
    // detection's area) is > pos_thresh is ignored (pred['used'] = None).
    for (const a of cr) {
      bboxIou(dB.subarray(0, D * 4), gtBox.subarray(a * 4, a * 4 + 4), crowdFlag, crowdIou);
      for (let d = 0; d < D; d++) {
        const e = dtOrder[d0 + d];
        if (!used[d] && crowdIou[d] > pos && (gtCls[a] === dtCls[e] || gtAnyClass[a])) ign[d] = 1;
      }
    }

    // Push AP data and classify every unmatched or ignored detection, in score order (_eval_image).
    for (let d = 0; d < D; d++, j++) {
      const e = dtOrder[d0 + d], c = dtCls[e], s = dtScore[e], row = d * Gi;
      kDet[j] = e;
      kCls[j] = c;
      kScore[j] = s;
      kTrue[j] = used[d];
      kIgn[j] = ign[d];
      detIgnored[e] = ign[d];
      if (!ign[d]) touch(c); // ap_data.push unless pred['used'] is None
      if (used[d]) {
        detType[e] = TP;
        continue;
      }
      let type: number;
      let ref = -1; // the ground truth (position in nc) the error points at
      if (Gi === 0) {
        type = BKG; // no ground truth in the image: background
      } else {
        // BoxError: bg_thresh <= max same-class IoU <= pos_thresh.
        let bi = 0, bv = -Infinity;
        for (let g = 0; g < Gi; g++) {
          const v = gtCls[nc[g]] === c ? iou[row + g] : 0;
          if (v > bv) {
            bv = v;
            bi = g;
          }
        }
        if (bg <= bv && bv <= pos) {
          type = LOC;
          ref = bi;
        } else {
          // ClassError: max IoU with other classes >= pos_thresh.
          bi = 0;
          bv = -Infinity;
          for (let g = 0; g < Gi; g++) {
            const v = gtCls[nc[g]] !== c ? iou[row + g] : 0;
            if (v > bv) {
              bv = v;
              bi = g;
            }
          }
          if (bv >= pos) {
            type = CLS;
            ref = bi;
          } else {
            // DuplicateError: max IoU with used same-class ground truths >= pos_thresh.
            bi = 0;
            bv = -Infinity;
            for (let g = 0; g < Gi; g++) {
              const v = gUsed[g] && gtCls[nc[g]] === c ? iou[row + g] : 0;
              if (v > bv) {
                bv = v;
                bi = g;
              }
            }
            if (bv >= pos) {
              type = DUPE;
              ref = bi;
            } else {
              // BackgroundError: max IoU with anything <= bg_thresh; else OtherError ("Both").
              let mv = -Infinity;
              for (let g = 0; g < Gi; g++) if (iou[row + g] > mv) mv = iou[row + g];
              type = mv <= bg ? BKG : BOTH;
            }
          }
        }
      }
      detType[e] = type;
      kType[j] = type;
      if (ref >= 0) detGt[e] = nc[ref];
      if ((type === CLS || type === LOC) && !gUsed[ref]) {
        // BestGTMatch: the unused ground truth becomes usable; the highest score (first on ties) may fix it.
        const a = nc[ref];
        gtUsable[a] = 1;
        if (gtBestScore[a] < s) {
          gtBestScore[a] = s;
          gtBest[a] = j;
        }
        kFixCls[j] = type === CLS ? gtCls[a] : c; // ClassError.fix: gt['class']; BoxError.fix: pred['class']
      }
      if (type === CLS) counts.Cls++;
      else if (type === LOC) counts.Loc++;
      else if (type === BOTH) counts.Both++;
      else if (type === DUPE) counts.Dupe++;
      else counts.Bkg++;
    }
    // Unused ground truths are false negatives; missed unless some error can recover them.
    for (let g = 0; g < Gi; g++) {
      const a = nc[g];
      if (gUsed[g]) continue;
      numFn[gtCls[a]]++;
      if (gtUsable[a]) gtType[a] = G_FN;
      else {
        gtType[a] = G_MISS;
        numMissed[gtCls[a]]++;
        counts.Miss++;
      }
    }
  }
  // Only the best-scoring error per ground truth is fixed; the others are dropped (BestGTMatch.fix).
  for (let q = 0; q < K; q++) {
    if (kFixCls[q] < 0) continue;
    const a = detGt[kDet[q]];
    if (gtBest[a] === q) detFixable[kDet[q]] = 1;
    else kFixCls[q] = -1;
  }

  // ---- AP of the run and of each oracle (TIDERun.fix_errors).
  const map = new RunMap(kScore, baseOrder, C);
  const baseCls = kCls.map((c, q) => (kIgn[q] ? -1 : c)); // ap_data.push skips ignored detections
  const ap = map.run(baseCls, kTrue, null, numGt);
  const entCls = new Int32Array(K), entTrue = new Uint8Array(K), entErr = new Uint8Array(K);
  /** AP data after fixing the errors of `fixType` (-1: none); unfixed errors keep their original data point. */
  const fixedRun = (fixType: number, gts: Int32Array) => {
    for (let q = 0; q < K; q++) {
      if (kTrue[q]) { // re-added after the errors ("add back all the correct ones")
        entCls[q] = kCls[q];
        entTrue[q] = 1;
        entErr[q] = 0;
        continue;
      }
      entErr[q] = 1;
      if (kType[q] === fixType) {
        // Cls/Loc: the best error per unused ground truth becomes a true positive, the rest vanish;
        // Both/Dupe/Bkg fixes return None: the detection vanishes.
        entCls[q] = fixType === CLS || fixType === LOC ? kFixCls[q] : -1;
        entTrue[q] = 1;
      } else {
        entCls[q] = kIgn[q] ? -1 : kCls[q]; // an ignored detection has no original data point
        entTrue[q] = 0;
      }
    }
    return map.run(entCls, entTrue, entErr, gts);
  };
  const gtsMiss = numGt.slice(), gtsFn = numGt.slice();
  for (let c = 0; c < C; c++) {
    gtsMiss[c] -= numMissed[c]; // MissedError.fix: (gt class, -1) added to the ground-truth count
    gtsFn[c] -= numFn[c]; // false_neg_dict: all unmatched ground truths forgiven
  }
  const main: TideMainErrors = {
    Cls: Math.max(fixedRun(CLS, numGt) - ap, 0),
    Loc: Math.max(fixedRun(LOC, numGt) - ap, 0),
    Both: Math.max(fixedRun(BOTH, numGt) - ap, 0),
    Dupe: Math.max(fixedRun(DUPE, numGt) - ap, 0),
    Bkg: Math.max(fixedRun(BKG, numGt) - ap, 0),
    Miss: Math.max(fixedRun(-1, gtsMiss) - ap, 0),
  };
  const special: TideSpecialErrors = {
    FalsePos: map.runFalsePos(kCls, kTrue, kIgn, numGt) - ap,
    FalseNeg: fixedRun(-1, gtsFn) - ap,
  };
  return {
    ap50: ap,
    main,
    special,
    counts,
    detections: { type: detType, gt: detGt, iou: detIou, ignored: detIgnored, fixable: detFixable },
    groundTruth: { type: gtType, match: gtMatch },
    options: { posThreshold: pos, backgroundThreshold: bg, maxDets },
  };
}

/** Detections kept over all images (at most `maxDets` each), and the most kept in one image. */
function keptCount(dtStart: Int32Array, I: number, maxDets: number): { kept: number; maxKept: number } {
  let kept = 0, maxKept = 0;
  for (let i = 0; i < I; i++) {
    const k = Math.min(maxDets, dtStart[i + 1] - dtStart[i]);
    kept += k;
    if (k > maxKept) maxKept = k;
  }
  return { kept, maxKept };
}

/**
 * mAP of a set of AP data points drawn from the kept detections (`ClassedAPDataObject.get_mAP`).
 *
 * tidecv sorts each class's points by score with a stable sort of their push order. The run's own data is
 * pushed in visit order; `fix_errors` pushes the errors' points first (visit order) and the true positives
 * after, so within a score tie error points come first. One sort of all kept detections by (score desc, visit
 * order) serves every run: a stable counting sort by class keeps it, and ties are regrouped errors-first.
 */
class RunMap {
  /** Kept detections by descending score, ties in visit order, [K]. */
  private order: Int32Array;
  private bucket: Int32Array;
  private start: Int32Array;
  private seq: Uint8Array;
  private scratch: { prec: Float64Array; rec: Float64Array };
  private touched: Uint8Array;

  constructor(private score: Float64Array, private baseOrder: number[], private C: number) {
    const K = score.length;
    this.order = new Int32Array(K);
    for (let q = 0; q < K; q++) this.order[q] = q;
    sortByScoreStable(this.order, 0, K, score);
    this.bucket = new Int32Array(K);
    this.start = new Int32Array(C + 1);
    this.seq = new Uint8Array(K);
    this.scratch = { prec: new Float64Array(K), rec: new Float64Array(K) };
    this.touched = new Uint8Array(C);
  }

  /**
   * mAP when kept detection `q` is a data point of class `cls[q]` (none when -1), true when `isTrue[q]`.
   * `isErr` marks points pushed in `fix_errors`' error loop (null: the run's own data, pushed in visit order).
   */
  run(cls: Int32Array, isTrue: Uint8Array, isErr: Uint8Array | null, numGt: Int32Array): number {
    const { order, bucket, start, seq, C } = this;
    const K = order.length;
    start.fill(0);
    for (let q = 0; q < K; q++) if (cls[q] >= 0) start[cls[q] + 1]++;
    for (let c = 0; c < C; c++) start[c + 1] += start[c];
    const fill = start.slice(0, C);
    for (let r = 0; r < K; r++) {
      const q = order[r];
      if (cls[q] >= 0) bucket[fill[cls[q]]++] = q;
    }
    const ap = (c: number) => {
      const lo = start[c], n = start[c + 1] - lo;
      if (isErr === null) {
        for (let r = 0; r < n; r++) seq[r] = isTrue[bucket[lo + r]];
      } else {
        // Within a run of equal scores, error points (pushed first) precede the re-added true positives.
        let w = 0;
        for (let a = lo; a < lo + n;) {
          let b = a + 1;
          while (b < lo + n && this.score[bucket[b]] === this.score[bucket[a]]) b++;
          for (let r = a; r < b; r++) if (isErr[bucket[r]]) seq[w++] = isTrue[bucket[r]];
          for (let r = a; r < b; r++) if (!isErr[bucket[r]]) seq[w++] = isTrue[bucket[r]];
          a = b;
        }
      }
      return tideAp(seq, n, numGt[c], this.scratch);
    };
    const counts = (c: number) => start[c + 1] - start[c];
    return this.mean(cls, isErr, numGt, counts, ap);
  }

  /**
   * FalsePositiveError: every true positive scored 1 and every false positive 0, so per class the true
   * positives come first, then the false positives.
   */
  runFalsePos(cls: Int32Array, isTrue: Uint8Array, ign: Uint8Array, numGt: Int32Array): number {
    const { seq, C } = this;
    const K = cls.length;
    const nTrue = new Int32Array(C), nFalse = new Int32Array(C);
    const entCls = new Int32Array(K), isErr = new Uint8Array(K);
    for (let q = 0; q < K; q++) {
      entCls[q] = !isTrue[q] && ign[q] ? -1 : cls[q];
      isErr[q] = isTrue[q] ? 0 : 1;
      if (entCls[q] < 0) continue;
      if (isTrue[q]) nTrue[cls[q]]++;
      else nFalse[cls[q]]++;
    }
    const ap = (c: number) => {
      const n = nTrue[c] + nFalse[c];
      seq.fill(1, 0, nTrue[c]);
      seq.fill(0, nTrue[c], n);
      return tideAp(seq, n, numGt[c], this.scratch);
    };
    return this.mean(entCls, isErr, numGt, (c) => nTrue[c] + nFalse[c], ap);
  }

  /**
   * Mean AP over non-empty classes (any data point or ground truth), summed in the order tidecv's dict holds
   * them: the run's own order, or for `fix_errors` the classes its error loop touches first, then the rest
   * in the run's order.
   */
  private mean(
    cls: Int32Array,
    isErr: Uint8Array | null,
    numGt: Int32Array,
    count: (c: number) => number,
    ap: (c: number) => number,
  ): number {
    let sum = 0, n = 0;
    const add = (c: number) => {
      if (count(c) === 0 && numGt[c] === 0) return; // is_empty()
      sum += ap(c);
      n++;
    };
    if (isErr === null) {
      for (const c of this.baseOrder) add(c);
    } else {
      const touched = this.touched.fill(0);
      for (let q = 0; q < cls.length; q++) {
        const c = cls[q];
        if (c >= 0 && isErr[q] && !touched[c]) {
          touched[c] = 1;
          add(c);
        }
      }
      for (const c of this.baseOrder) if (!touched[c]) add(c);
    }
    return n === 0 ? 0 : sum / n; // tidecv: ZeroDivisionError
  }
}

/**
 * The outcome of each detection by name, in results order (e.g. to label a picture):
 * "TP", "Cls", "Loc", "Both", "Dupe", "Bkg", or "Cut" past `maxDets` in its image.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * import { tideDetectionTypes, tideEvaluate } from "./tide.ts";
 * const gt = { images: [{ id: 1 }], categories: [{ id: 1 }, { id: 2 }],
 *   annotations: [{ id: 1, image_id: 1, category_id: 1, bbox: [0, 0, 10, 10], area: 100, iscrowd: 0 }] };
 * const res = tideEvaluate(gt, [
 *   { image_id: 1, category_id: 2, bbox: [0, 0, 10, 10], score: 0.9 }, // right box, wrong class
 *   { image_id: 1, category_id: 1, bbox: [50, 50, 10, 10], score: 0.8 }, // nowhere near anything
 * ]);
 * assertEquals(tideDetectionTypes(res), ["Cls", "Bkg"]);
 * ```
 */
export function tideDetectionTypes(result: TideResult): TideDetectionType[] {
  return Array.from(result.detections.type, (t) => TIDE_DETECTION_TYPES[t]);
}
