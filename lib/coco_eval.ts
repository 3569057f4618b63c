/**
 * COCO bounding-box evaluation: a faithful TypeScript port of pycocotools'
 * `COCOeval` (iouType "bbox") — `evaluate`, `accumulate` and `summarize` —
 * built on flat typed arrays so a COCO-val-sized run takes seconds.
 *
 * Every rule follows pycocotools (cocodataset/cocoapi, PythonAPI/pycocotools):
 *
 * - images are the sorted ground-truth image ids, categories the sorted
 *   ground-truth category ids (`COCOeval.__init__`);
 * - detections get `area = w * h`, `id = 1..N` and `iscrowd = 0` (`COCO.loadRes`);
 * - a ground truth is ignored when `iscrowd` is set (`COCOeval._prepare`), and
 *   area ranges test the ground truth's `area` field, not its box;
 * - per image and category, detections are sorted by score with a stable sort
 *   and cut to `maxDets[-1]`; ground truths are stably sorted ignored-last;
 * - IoU is `maskUtils.iou` on boxes: over the union, or over the detection's
 *   area for crowd regions, which may match any number of detections;
 * - precision is taken at 101 recall points from the right-to-left envelope,
 *   and means skip the `-1` of settings without ground truth.
 *
 * Stats agree with pycocotools to the last bit on the reference fixtures,
 * including the summation order of `np.mean`.
 *
 * @module
 */
import { InputError } from "./errors.ts";

/** An image, category or annotation id as COCO JSON spells it. */
export type CocoId = number | string;

/** One ground-truth annotation of a COCO instances file. */
export interface CocoAnnotation {
  id: CocoId;
  image_id: CocoId;
  category_id: CocoId;
  /** `[x, y, w, h]` in pixels, top-left corner. */
  bbox: number[];
  /** Object area (segmentation area in COCO); it decides the small/medium/large bucket. */
  area: number;
  /** 1 marks a crowd region, which is ignored and may match several detections. */
  iscrowd?: number | boolean;
}

/** A COCO instances file (only the fields evaluation reads). */
export interface CocoGroundTruthJson {
  images: { id: CocoId }[];
  annotations: CocoAnnotation[];
  categories: { id: CocoId; name?: string }[];
}

/** One entry of a COCO results file for bounding boxes. */
export interface CocoDetection {
  image_id: CocoId;
  category_id: CocoId;
  /** `[x, y, w, h]` in pixels, top-left corner. */
  bbox: number[];
  score: number;
}

/** Evaluation parameters (pycocotools `Params.setDetParams`). */
export interface CocoEvalParams {
  /** IoU thresholds, [T]. */
  iouThrs: Float64Array;
  /** Recall thresholds, [R]. */
  recThrs: Float64Array;
  /** Detections kept per image and category, ascending, [M]. */
  maxDets: number[];
  /** Inclusive `[lo, hi]` ranges of ground-truth area, [A]. */
  areaRng: [number, number][];
  /** Names of the area ranges, [A]. */
  areaRngLbl: string[];
}

/** Ground truth indexed for evaluation. */
export interface CocoGroundTruth {
  /** Sorted unique image ids, [I]. */
  imgIds: CocoId[];
  /** Sorted unique category ids, [K]. */
  catIds: CocoId[];
  /** Category names in `catIds` order, [K]. */
  catNames: string[];
  /** Image id to its index in `imgIds`. */
  imgIndex: Map<CocoId, number>;
  /** Category id to its index in `catIds`. */
  catIndex: Map<CocoId, number>;
  /** Annotations of cell `k * I + i` are `cellStart[c] .. cellStart[c + 1]`, [K*I+1]. */
  cellStart: Int32Array;
  /** Boxes `[x, y, w, h]` in cell order (file order within a cell), [G, 4]. */
  boxes: Float64Array;
  /** The `area` field, [G]. */
  area: Float64Array;
  /** 1 for crowd regions, [G]. */
  iscrowd: Uint8Array;
  /** 1 when the annotation id is nonzero: pycocotools stores the id in `dtMatches`, so id 0 reads as "unmatched", [G]. */
  idNonzero: Uint8Array;
  /** Annotations skipped because their image or category is not listed (pycocotools skips them too). */
  skipped: number;
}

/** Detections indexed for evaluation (after `COCO.loadRes`). */
export interface CocoDetections {
  /** Detections of cell `k * I + i` are `cellStart[c] .. cellStart[c + 1]`, sorted by score, stably, [K*I+1]. */
  cellStart: Int32Array;
  /** Boxes in cell order, [N, 4]. */
  boxes: Float64Array;
  /** Scores in cell order, [N]. */
  scores: Float64Array;
  /** `w * h` as loadRes computes it, [N]. */
  area: Float64Array;
  /** Number of entries in the results file. */
  count: number;
}

/** The per-image matches of {@linkcode evaluate}. */
export interface CocoEvalImages {
  params: CocoEvalParams;
  gt: CocoGroundTruth;
  /** Detections kept per cell (at most `maxDets[-1]`), start offsets, [K*I+1]. */
  keptStart: Int32Array;
  /** Scores of the kept detections, [N]. */
  keptScore: Float64Array;
  /** Outcome per kept detection, area range and IoU threshold: 0 false positive, 1 true positive, 2 ignored, [N, A, T]. */
  outcome: Uint8Array;
  /** Ground truths not ignored, per category and area range (`npig`), [K, A]. */
  npig: Int32Array;
}

/** Accumulated precision and recall (pycocotools `COCOeval.eval`). */
export interface CocoEvalAccumulated {
  params: CocoEvalParams;
  /** `[T, R, K, A, M]`. */
  counts: [number, number, number, number, number];
  /** Interpolated precision, -1 where a category has no ground truth, [T, R, K, A, M]. */
  precision: Float64Array;
  /** Final recall, -1 where a category has no ground truth, [T, K, A, M]. */
  recall: Float64Array;
}

/** AP of one category at IoU .50:.95, .50 and .75 (area all, 100 detections); -1 without ground truth. */
export interface PerClassAp {
  id: CocoId;
  name: string;
  ap: number;
  ap50: number;
  ap75: number;
}

/** Everything {@linkcode cocoEvaluate} computes. */
export interface CocoEvalResult {
  /** The 12 summary stats of pycocotools, in its order. */
  stats: number[];
  perClass: PerClassAp[];
  accumulated: CocoEvalAccumulated;
  gt: CocoGroundTruth;
  /** Number of detections in the results file. */
  numDetections: number;
}

/** The `eval_stats.json` document. */
export interface EvalStatsJson {
  stats: number[];
  per_class: Record<string, { ap: number; ap50: number; ap75: number }>;
}

/** Why a results entry was rejected. */
export type DetectionErrorKind = "malformed" | "unknown-image" | "unknown-category";

/** A results-file entry that cannot be evaluated; `index` is its 0-based position in the file. */
export class DetectionError extends InputError {
  index: number;
  kind: DetectionErrorKind;
  constructor(message: string, index: number, kind: DetectionErrorKind, file?: string) {
    super(file ? message : `entry ${index}: ${message}`, { file, where: `entry ${index}` });
    this.name = "DetectionError";
    this.index = index;
    this.kind = kind;
  }
}

/** `np.spacing(1)`: the gap between 1 and the next double, added to precision's denominator. */
const EPS = 2.220446049250313e-16;

/**
 * `np.linspace(start, stop, num, endpoint=True)` with numpy's exact float
 * values: `i * step + start` with `step = (stop - start) / (num - 1)`, and the
 * last element set to `stop`.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const t = linspace(0.5, 0.95, 10);
 * assertEquals([t[0], t[5], t[9]], [0.5, 0.75, 0.95]);
 * ```
 */
export function linspace(start: number, stop: number, num: number): Float64Array {
  const y = new Float64Array(num);
  const div = num - 1;
  const step = (stop - start) / div;
  for (let i = 0; i < num; i++) y[i] = step === 0 ? (i / div) * (stop - start) + start : i * step + start;
  if (num > 1) y[num - 1] = stop;
  return y;
}

/**
 * The default bbox parameters of pycocotools: IoU .50:.05:.95, 101 recall
 * points, maxDets [1, 10, 100], areas all/small/medium/large.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const p = defaultParams();
 * assertEquals([p.iouThrs.length, p.recThrs.length, p.recThrs[100]], [10, 101, 1]);
 * ```
 */
export function defaultParams(): CocoEvalParams {
  // Params.setDetParams: np.linspace(.5, 0.95, int(np.round((0.95 - .5) / .05)) + 1)
  // and np.linspace(.0, 1.00, int(np.round((1.00 - .0) / .01)) + 1).
  return {
    iouThrs: linspace(0.5, 0.95, Math.round((0.95 - 0.5) / 0.05) + 1),
    recThrs: linspace(0.0, 1.0, Math.round((1.0 - 0.0) / 0.01) + 1),
    maxDets: [1, 10, 100],
    areaRng: [[0 ** 2, 1e5 ** 2], [0 ** 2, 32 ** 2], [32 ** 2, 96 ** 2], [96 ** 2, 1e5 ** 2]],
    areaRngLbl: ["all", "small", "medium", "large"],
  };
}

// ---------------------------------------------------------------------------
// Loading

/** An {@linkcode InputError} whose message names `where` even when no file is known. */
function gtError(message: string, file: string | undefined, where: string): InputError {
  return new InputError(file ? message : `${where}: ${message}`, { file, where });
}

function isId(v: unknown): v is CocoId {
  return (typeof v === "number" && Number.isFinite(v)) || typeof v === "string";
}

function isBox(v: unknown): v is number[] {
  return Array.isArray(v) && v.length === 4 && v.every((x) => typeof x === "number" && Number.isFinite(x));
}

/** Sorted unique ids, as `sorted()` then `np.unique` order them (numbers numerically, strings by code unit). */
function sortedUnique(ids: CocoId[], file: string | undefined, what: string): CocoId[] {
  const uniq = [...new Set(ids)];
  const nums = uniq.filter((v) => typeof v === "number").length;
  if (nums !== 0 && nums !== uniq.length) {
    throw new InputError(`${what} ids mix numbers and strings, which cannot be sorted`, { file });
  }
  return nums ? (uniq as number[]).sort((a, b) => a - b) : (uniq as string[]).sort();
}

/**
 * Validates and indexes a COCO instances file for evaluation. Annotations
 * whose image or category is not listed are skipped, as pycocotools does.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const gt = loadGroundTruth({
 *   images: [{ id: 2 }, { id: 1 }],
 *   categories: [{ id: 1, name: "cat" }],
 *   annotations: [{ id: 1, image_id: 1, category_id: 1, bbox: [0, 0, 10, 10], area: 100, iscrowd: 0 }],
 * });
 * assertEquals([gt.imgIds, gt.catNames], [[1, 2], ["cat"]]);
 * ```
 */
export function loadGroundTruth(json: unknown, options: { file?: string } = {}): CocoGroundTruth {
  const file = options.file;
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new InputError("ground truth must be a COCO instances object with images, annotations and categories", {
      file,
    });
  }
  const ds = json as Record<string, unknown>;
  for (const key of ["images", "categories"]) {
    if (!Array.isArray(ds[key])) throw new InputError(`ground truth has no "${key}" array`, { file });
  }
  if (ds.annotations !== undefined && !Array.isArray(ds.annotations)) {
    throw new InputError(`ground truth "annotations" must be an array`, { file });
  }
  const images = ds.images as unknown[];
  const categories = ds.categories as unknown[];
  const annotations = (ds.annotations ?? []) as unknown[];

  const rawImg: CocoId[] = [];
  images.forEach((im, n) => {
    const id = (im as { id?: unknown } | null)?.id;
    if (!isId(id)) throw gtError("image needs a numeric or string id", file, `images[${n}]`);
    rawImg.push(id);
  });
  const names = new Map<CocoId, string>(); // later entries win, as in COCO.createIndex
  categories.forEach((c, n) => {
    const cat = c as { id?: unknown; name?: unknown } | null;
    if (!isId(cat?.id)) {
      throw gtError("category needs a numeric or string id", file, `categories[${n}]`);
    }
    names.set(cat.id, typeof cat.name === "string" ? cat.name : String(cat.id));
  });
  const imgIds = sortedUnique(rawImg, file, "image");
  const catIds = sortedUnique([...names.keys()], file, "category");
  const imgIndex = new Map(imgIds.map((id, i) => [id, i]));
  const catIndex = new Map(catIds.map((id, k) => [id, k]));
  const I = imgIds.length, K = catIds.length;

  // Validate, then place annotations into cells with a stable counting sort.
  const cellOf = new Int32Array(annotations.length).fill(-1);
  const counts = new Int32Array(K * I + 1);
  const seen = new Set<CocoId>();
  let skipped = 0;
  annotations.forEach((a, n) => {
    const where = `annotations[${n}]`;
    const ann = a as Record<string, unknown> | null;
    if (typeof ann !== "object" || ann === null) throw gtError("annotation must be an object", file, where);
    if (!isId(ann.id)) throw gtError("annotation needs a numeric or string id", file, where);
    // COCO.createIndex keys annotations by id, so a duplicate silently replaces the earlier one; refuse it instead.
    if (seen.has(ann.id)) throw gtError(`duplicate annotation id ${JSON.stringify(ann.id)}`, file, where);
    seen.add(ann.id);
    if (!isId(ann.image_id)) throw gtError("annotation needs an image_id", file, where);
    if (!isId(ann.category_id)) throw gtError("annotation needs a category_id", file, where);
    if (!isBox(ann.bbox)) throw gtError("bbox must be [x, y, w, h], four finite numbers", file, where);
    if (typeof ann.area !== "number" || !Number.isFinite(ann.area)) {
      throw gtError("annotation needs a numeric area (it decides the small/medium/large bucket)", file, where);
    }
    const ic = ann.iscrowd;
    if (ic !== undefined && typeof ic !== "number" && typeof ic !== "boolean") {
      throw gtError("iscrowd must be 0 or 1", file, where);
    }
    const i = imgIndex.get(ann.image_id), k = catIndex.get(ann.category_id);
    if (i === undefined || k === undefined) {
      skipped++; // COCO.getAnnIds(imgIds=p.imgIds, catIds=p.catIds) never returns it
      return;
    }
    cellOf[n] = k * I + i;
    counts[k * I + i + 1]++;
  });
  const cellStart = counts;
  for (let c = 0; c < K * I; c++) cellStart[c + 1] += cellStart[c];
  const G = cellStart[K * I];
  const boxes = new Float64Array(G * 4), area = new Float64Array(G);
  const iscrowd = new Uint8Array(G), idNonzero = new Uint8Array(G);
  const fill = cellStart.slice(0, K * I);
  annotations.forEach((a, n) => {
    const c = cellOf[n];
    if (c < 0) return;
    const ann = a as CocoAnnotation;
    const j = fill[c]++;
    boxes.set(ann.bbox, j * 4);
    area[j] = ann.area;
    // _prepare: gt['ignore'] = 'iscrowd' in gt and gt['iscrowd']; computeIoU: int(o['iscrowd']).
    iscrowd[j] = ann.iscrowd ? 1 : 0;
    idNonzero[j] = ann.id === 0 ? 0 : 1;
  });
  return {
    imgIds,
    catIds,
    catNames: catIds.map((id) => names.get(id)!),
    imgIndex,
    catIndex,
    cellStart,
    boxes,
    area,
    iscrowd,
    idNonzero,
    skipped,
  };
}

/**
 * Validates and indexes a COCO results file against `gt`, as `COCO.loadRes`
 * does for bbox results (area = w * h). Within each image and category,
 * detections are sorted by descending score, ties in file order.
 *
 * Unlike pycocotools, an unknown image or category id raises a
 * {@linkcode DetectionError} naming the entry (pycocotools asserts on unknown
 * images and silently drops unknown categories), and an empty list is
 * accepted (pycocotools raises IndexError on `anns[0]`).
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals, throws as assertThrows } from "node:assert";
 * const gt = loadGroundTruth({ images: [{ id: 1 }], categories: [{ id: 1 }], annotations: [] });
 * const dt = loadDetections(gt, [{ image_id: 1, category_id: 1, bbox: [0, 0, 4, 5], score: 0.5 }]);
 * assertEquals([dt.count, dt.area[0]], [1, 20]);
 * assertThrows(() => loadDetections(gt, [{ image_id: 9, category_id: 1, bbox: [0, 0, 1, 1], score: 1 }]));
 * ```
 */
export function loadDetections(gt: CocoGroundTruth, json: unknown, options: { file?: string } = {}): CocoDetections {
  const file = options.file;
  // loadRes: assert type(anns) == list, 'results in not an array of objects'
  if (!Array.isArray(json)) throw new InputError("results must be a JSON array of detections", { file });
  const I = gt.imgIds.length, K = gt.catIds.length;
  const n = json.length;
  const cellOf = new Int32Array(n);
  const counts = new Int32Array(K * I + 1);
  for (let e = 0; e < n; e++) {
    const d = json[e] as Record<string, unknown> | null;
    if (typeof d !== "object" || d === null || Array.isArray(d)) {
      throw new DetectionError("detection must be an object", e, "malformed", file);
    }
    if (!isId(d.image_id)) throw new DetectionError("detection needs an image_id", e, "malformed", file);
    if (!isId(d.category_id)) throw new DetectionError("detection needs a category_id", e, "malformed", file);
    if (!isBox(d.bbox)) {
      throw new DetectionError("bbox must be [x, y, w, h], four finite numbers", e, "malformed", file);
    }
    if (typeof d.score !== "number" || !Number.isFinite(d.score)) {
      throw new DetectionError("score must be a finite number", e, "malformed", file);
    }
    const i = gt.imgIndex.get(d.image_id);
    if (i === undefined) {
      throw new DetectionError(
        `image_id ${JSON.stringify(d.image_id)} is not an image of the ground truth`,
        e,
        "unknown-image",
        file,
      );
    }
    const k = gt.catIndex.get(d.category_id);
    if (k === undefined) {
      throw new DetectionError(
        `category_id ${JSON.stringify(d.category_id)} is not a category of the ground truth`,
        e,
        "unknown-category",
        file,
      );
    }
    cellOf[e] = k * I + i;
    counts[k * I + i + 1]++;
  }
  const cellStart = counts;
  for (let c = 0; c < K * I; c++) cellStart[c + 1] += cellStart[c];
  const fill = cellStart.slice(0, K * I);
  const order = new Int32Array(n); // file indices in cell order, file order within a cell
  for (let e = 0; e < n; e++) order[fill[cellOf[e]]++] = e;
  const score = new Float64Array(n);
  for (let e = 0; e < n; e++) score[e] = (json[e] as CocoDetection).score;
  // computeIoU / evaluateImg: np.argsort([-d['score'] ...], kind='mergesort'): descending score, stable.
  for (let c = 0; c < K * I; c++) sortByScoreStable(order, cellStart[c], cellStart[c + 1], score);
  const boxes = new Float64Array(n * 4), scores = new Float64Array(n), area = new Float64Array(n);
  for (let j = 0; j < n; j++) {
    const d = json[order[j]] as CocoDetection;
    const b = d.bbox;
    boxes[j * 4] = b[0];
    boxes[j * 4 + 1] = b[1];
    boxes[j * 4 + 2] = b[2];
    boxes[j * 4 + 3] = b[3];
    scores[j] = d.score;
    area[j] = b[2] * b[3]; // loadRes: ann['area'] = bb[2]*bb[3]
  }
  return { cellStart, boxes, scores, area, count: n };
}

/**
 * Sorts `idx[lo..hi)` by descending `key[idx]`, ties by ascending index (a stable sort of file order, as
 * numpy's `argsort(-scores, kind="mergesort")` and Python's `sorted`). Insertion sort on short runs.
 */
export function sortByScoreStable(idx: Int32Array, lo: number, hi: number, key: Float64Array): void {
  if (hi - lo < 2) return;
  if (hi - lo <= 32) {
    for (let a = lo + 1; a < hi; a++) {
      const v = idx[a], s = key[v];
      let b = a - 1;
      while (b >= lo && (key[idx[b]] < s || (key[idx[b]] === s && idx[b] > v))) {
        idx[b + 1] = idx[b];
        b--;
      }
      idx[b + 1] = v;
    }
    return;
  }
  idx.subarray(lo, hi).sort((a, b) => (key[a] > key[b] ? -1 : key[a] < key[b] ? 1 : a - b));
}

// ---------------------------------------------------------------------------
// IoU

/**
 * Box IoU exactly as pycocotools' `maskUtils.iou` (C `bbIou`): for a crowd
 * ground truth the union is the detection's area alone.
 *
 * @param dt Detection boxes `[x, y, w, h]`, [D, 4].
 * @param gt Ground-truth boxes `[x, y, w, h]`, [G, 4].
 * @param iscrowd 1 for crowd ground truths, [G].
 * @returns IoU, [D, G] (row-major).
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const dt = new Float64Array([0, 0, 10, 10]), gt = new Float64Array([5, 0, 10, 10, 0, 0, 20, 20]);
 * // Second gt is a crowd region: 100 / area(dt) = 1.
 * assertEquals([...bboxIou(dt, gt, new Uint8Array([0, 1]))], [50 / 150, 1]);
 * ```
 */
export function bboxIou(
  dt: Float64Array,
  gt: Float64Array,
  iscrowd: Uint8Array,
  out: Float64Array = new Float64Array((dt.length / 4) * (gt.length / 4)),
): Float64Array {
  const D = dt.length / 4, G = gt.length / 4;
  for (let g = 0; g < G; g++) {
    const gx = gt[g * 4], gy = gt[g * 4 + 1], gw = gt[g * 4 + 2], gh = gt[g * 4 + 3];
    const ga = gw * gh, crowd = iscrowd[g] !== 0;
    for (let d = 0; d < D; d++) {
      const dx = dt[d * 4], dy = dt[d * 4 + 1], dw = dt[d * 4 + 2], dh = dt[d * 4 + 3];
      const da = dw * dh;
      out[d * G + g] = 0;
      const w = Math.min(dw + dx, gw + gx) - Math.max(dx, gx);
      if (w <= 0) continue;
      const h = Math.min(dh + dy, gh + gy) - Math.max(dy, gy);
      if (h <= 0) continue;
      const i = w * h;
      const u = crowd ? da : da + ga - i;
      out[d * G + g] = i / u;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// evaluate

/**
 * Per-image, per-category matching (pycocotools `COCOeval.evaluate` with
 * `computeIoU` and `evaluateImg`) for every area range and IoU threshold.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const gt = loadGroundTruth({ images: [{ id: 1 }], categories: [{ id: 1 }],
 *   annotations: [{ id: 1, image_id: 1, category_id: 1, bbox: [0, 0, 10, 10], area: 100, iscrowd: 0 }] });
 * const ev = evaluate(gt, loadDetections(gt, [{ image_id: 1, category_id: 1, bbox: [0, 0, 10, 10], score: 1 }]));
 * assertEquals(ev.outcome[0], 1); // a true positive at IoU .50, area "all"
 * ```
 */
export function evaluate(
  gt: CocoGroundTruth,
  dt: CocoDetections,
  options: { params?: CocoEvalParams; onProgress?: (done: number, total: number) => void } = {},
): CocoEvalImages {
  const p = options.params ?? defaultParams();
  const I = gt.imgIds.length, K = gt.catIds.length;
  const T = p.iouThrs.length, A = p.areaRng.length;
  const maxDet = Math.max(...p.maxDets); // p.maxDets = sorted(p.maxDets); maxDet = p.maxDets[-1]
  const C = K * I;

  // Detections kept per cell: the first maxDet by score.
  const keptStart = new Int32Array(C + 1);
  for (let c = 0; c < C; c++) {
    keptStart[c + 1] = keptStart[c] + Math.min(maxDet, dt.cellStart[c + 1] - dt.cellStart[c]);
  }
  const N = keptStart[C];
  const keptScore = new Float64Array(N);
  const outcome = new Uint8Array(N * A * T);
  const npig = new Int32Array(K * A);

  // Scratch buffers, grown on demand.
  let iou = new Float64Array(0);
  let gOrder = new Int32Array(0), gIg = new Uint8Array(0), gCrowd = new Uint8Array(0), gtm = new Uint8Array(0);
  const iouCap = p.iouThrs.map((t) => Math.min(t, 1 - 1e-10)); // iou = min([t, 1-1e-10])

  for (let k = 0; k < K; k++) {
    for (let i = 0; i < I; i++) {
      const c = k * I + i;
      const g0 = gt.cellStart[c], G = gt.cellStart[c + 1] - g0;
      const d0 = dt.cellStart[c], k0 = keptStart[c], D = keptStart[c + 1] - k0;
      if (G === 0 && D === 0) continue; // evaluateImg returns None
      keptScore.set(dt.scores.subarray(d0, d0 + D), k0);
      if (G > gOrder.length) {
        gOrder = new Int32Array(G * 2);
        gIg = new Uint8Array(G * 2);
        gCrowd = new Uint8Array(G * 2);
        gtm = new Uint8Array(G * 2);
      }
      // maskUtils.iou returns [] when either side is empty, and then nothing is matched.
      const haveIou = D > 0 && G > 0;
      if (haveIou) {
        if (D * G > iou.length) iou = new Float64Array(D * G * 2);
        bboxIou(
          dt.boxes.subarray(d0 * 4, (d0 + D) * 4),
          gt.boxes.subarray(g0 * 4, (g0 + G) * 4),
          gt.iscrowd.subarray(g0, g0 + G),
          iou,
        );
      }
      for (let a = 0; a < A; a++) {
        const lo = p.areaRng[a][0], hi = p.areaRng[a][1];
        // gt['_ignore'] = ignore or area outside [lo, hi]; then a stable argsort puts ignored last.
        let n = 0, kept = 0;
        for (let g = 0; g < G; g++) {
          const ar = gt.area[g0 + g];
          if (!(gt.iscrowd[g0 + g] || ar < lo || ar > hi)) gOrder[n++] = g;
        }
        kept = n;
        for (let g = 0; g < G; g++) {
          const ar = gt.area[g0 + g];
          if (gt.iscrowd[g0 + g] || ar < lo || ar > hi) gOrder[n++] = g;
        }
        for (let s = 0; s < G; s++) {
          gIg[s] = s < kept ? 0 : 1;
          gCrowd[s] = gt.iscrowd[g0 + gOrder[s]];
        }
        npig[k * A + a] += kept;
        for (let t = 0; t < T; t++) {
          gtm.fill(0, 0, G);
          for (let d = 0; d < D; d++) {
            let m = -1;
            if (haveIou) {
              let best = iouCap[t];
              const row = d * G;
              for (let s = 0; s < G; s++) {
                // if this gt already matched, and not a crowd, continue
                if (gtm[s] && !gCrowd[s]) continue;
                // if dt matched to reg gt, and on ignore gt, stop
                if (m > -1 && gIg[m] === 0 && gIg[s] === 1) break;
                // continue to next gt unless better match made (ties go to the later gt)
                const v = iou[row + gOrder[s]];
                if (v < best) continue;
                best = v;
                m = s;
              }
            }
            // dtm holds the gt id (0 reads as unmatched); gtm holds the dt id (always >= 1).
            const matched = m > -1 && gt.idNonzero[g0 + gOrder[m]] === 1;
            if (m > -1) gtm[m] = 1;
            const darea = dt.area[d0 + d];
            const ignored = (m > -1 && gIg[m] === 1) || (!matched && (darea < lo || darea > hi));
            outcome[((k0 + d) * A + a) * T + t] = ignored ? 2 : matched ? 1 : 0;
          }
        }
      }
    }
    options.onProgress?.(k + 1, K);
  }
  return { params: p, gt, keptStart, keptScore, outcome, npig };
}

// ---------------------------------------------------------------------------
// accumulate

/**
 * Precision at each recall threshold and final recall per IoU, category,
 * area range and maxDets (pycocotools `COCOeval.accumulate`).
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const gt = loadGroundTruth({ images: [{ id: 1 }], categories: [{ id: 1 }, { id: 2 }],
 *   annotations: [{ id: 1, image_id: 1, category_id: 1, bbox: [0, 0, 10, 10], area: 100, iscrowd: 0 }] });
 * const dt = loadDetections(gt, [{ image_id: 1, category_id: 1, bbox: [0, 0, 10, 10], score: 1 }]);
 * const acc = accumulate(evaluate(gt, dt));
 * assertEquals([acc.recall[0], acc.recall[12]], [1, -1]); // category 2 has no ground truth
 * ```
 */
export function accumulate(ev: CocoEvalImages): CocoEvalAccumulated {
  const p = ev.params;
  const I = ev.gt.imgIds.length, K = ev.gt.catIds.length;
  const T = p.iouThrs.length, R = p.recThrs.length, A = p.areaRng.length, M = p.maxDets.length;
  const precision = new Float64Array(T * R * K * A * M).fill(-1); // [T, R, K, A, M]
  const recall = new Float64Array(T * K * A * M).fill(-1); // [T, K, A, M]
  const recThrs = p.recThrs;
  let pr = new Float64Array(0), rc = new Float64Array(0);

  for (let k = 0; k < K; k++) {
    const start = ev.keptStart[k * I], n = ev.keptStart[(k + 1) * I] - start;
    // Rank of each detection within its image (its index in e['dtScores']).
    const rank = new Int32Array(n);
    for (let i = 0; i < I; i++) {
      const c = k * I + i;
      for (let j = ev.keptStart[c]; j < ev.keptStart[c + 1]; j++) rank[j - start] = j - ev.keptStart[c];
    }
    // np.argsort(-dtScores, kind='mergesort') over detections concatenated in image order. A stable sort of
    // all kept detections, filtered by rank, equals the stable sort of each maxDet's subset.
    const order = new Int32Array(n);
    for (let j = 0; j < n; j++) order[j] = j;
    sortByScoreStable(order, 0, n, ev.keptScore.subarray(start, start + n));
    const sel = new Int32Array(n);
    if (n > pr.length) {
      pr = new Float64Array(n);
      rc = new Float64Array(n);
    }
    for (let m = 0; m < M; m++) {
      const maxDet = p.maxDets[m];
      let nd = 0;
      for (let j = 0; j < n; j++) if (rank[order[j]] < maxDet) sel[nd++] = start + order[j];
      for (let a = 0; a < A; a++) {
        const npig = ev.npig[k * A + a];
        if (npig === 0) continue; // precision and recall stay -1
        for (let t = 0; t < T; t++) {
          // tp_sum / fp_sum: np.cumsum of booleans cast to float64 (exact integers).
          let tp = 0, fp = 0;
          for (let j = 0; j < nd; j++) {
            const o = ev.outcome[(sel[j] * A + a) * T + t];
            if (o === 1) tp++;
            else if (o === 0) fp++;
            rc[j] = tp / npig;
            pr[j] = tp / (fp + tp + EPS);
          }
          recall[((t * K + k) * A + a) * M + m] = nd ? rc[nd - 1] : 0;
          // Right-to-left envelope: pr[i-1] = max(pr[i-1], pr[i]).
          for (let j = nd - 1; j > 0; j--) if (pr[j] > pr[j - 1]) pr[j - 1] = pr[j];
          // inds = np.searchsorted(rc, recThrs, side='left'); q[ri] = pr[inds[ri]] until an index runs past
          // the end (pycocotools' try/except leaves the rest at 0).
          let pi = 0;
          for (let r = 0; r < R; r++) {
            const thr = recThrs[r];
            while (pi < nd && rc[pi] < thr) pi++;
            precision[(((t * R + r) * K + k) * A + a) * M + m] = pi < nd ? pr[pi] : 0;
          }
        }
      }
    }
  }
  return { params: p, counts: [T, R, K, A, M], precision, recall };
}

// ---------------------------------------------------------------------------
// summarize

/**
 * `np.mean` of the values above -1, bit for bit: numpy sums float64 in chunks
 * of 8192 (its iterator buffer), each chunk by pairwise summation.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * assertEquals(meanAboveMinusOne([0.5, -1, 0.25]), 0.375);
 * assertEquals(meanAboveMinusOne([-1, -1]), -1);
 * ```
 */
export function meanAboveMinusOne(values: ArrayLike<number>): number {
  const kept: number[] = [];
  for (let j = 0; j < values.length; j++) if (values[j] > -1) kept.push(values[j]);
  if (kept.length === 0) return -1;
  let sum = 0;
  for (let s = 0; s < kept.length; s += 8192) sum += pairwiseSum(kept, s, Math.min(8192, kept.length - s));
  return sum / kept.length;
}

/** numpy's `pairwise_sum` (umath loops): blocks of 128 with 8 accumulators. */
function pairwiseSum(a: number[], off: number, n: number): number {
  if (n < 8) {
    let res = 0;
    for (let j = 0; j < n; j++) res += a[off + j];
    return res;
  }
  if (n <= 128) {
    const r = a.slice(off, off + 8);
    let j = 8;
    for (; j < n - (n % 8); j += 8) for (let q = 0; q < 8; q++) r[q] += a[off + j + q];
    let res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; j < n; j++) res += a[off + j];
    return res;
  }
  let n2 = Math.floor(n / 2);
  n2 -= n2 % 8;
  return pairwiseSum(a, off, n2) + pairwiseSum(a, off + n2, n - n2);
}

/** One summary line's setting. */
interface SummarySpec {
  ap: boolean;
  iouThr?: number;
  areaRng: string;
  maxDets: number;
}

function summarySpecs(p: CocoEvalParams): SummarySpec[] {
  const [m0, m1, m2] = p.maxDets;
  // _summarizeDets, in order.
  return [
    { ap: true, areaRng: "all", maxDets: 100 },
    { ap: true, iouThr: 0.5, areaRng: "all", maxDets: m2 },
    { ap: true, iouThr: 0.75, areaRng: "all", maxDets: m2 },
    { ap: true, areaRng: "small", maxDets: m2 },
    { ap: true, areaRng: "medium", maxDets: m2 },
    { ap: true, areaRng: "large", maxDets: m2 },
    { ap: false, areaRng: "all", maxDets: m0 },
    { ap: false, areaRng: "all", maxDets: m1 },
    { ap: false, areaRng: "all", maxDets: m2 },
    { ap: false, areaRng: "small", maxDets: m2 },
    { ap: false, areaRng: "medium", maxDets: m2 },
    { ap: false, areaRng: "large", maxDets: m2 },
  ];
}

/** Values of precision (or recall) selected as `_summarize` indexes them, in numpy's C order. */
function select(acc: CocoEvalAccumulated, spec: SummarySpec, k?: number): number[] {
  const p = acc.params;
  const [, R, K, A, M] = acc.counts;
  const ts = spec.iouThr === undefined
    ? [...p.iouThrs.keys()]
    : [...p.iouThrs.keys()].filter((t) => p.iouThrs[t] === spec.iouThr);
  const as = p.areaRngLbl.flatMap((l, a) => (l === spec.areaRng ? [a] : []));
  const ms = p.maxDets.flatMap((d, m) => (d === spec.maxDets ? [m] : []));
  const ks = k === undefined ? [...Array(K).keys()] : [k];
  const out: number[] = [];
  // s[:, :, :, aind, mind] with aind, mind of equal length (1 here): the pair indexes jointly.
  const pairs = as.length === ms.length ? as.map((a, j) => [a, ms[j]]) : [];
  for (const t of ts) {
    if (spec.ap) {
      for (let r = 0; r < R; r++) {
        for (const kk of ks) {
          for (const [a, m] of pairs) out.push(acc.precision[(((t * R + r) * K + kk) * A + a) * M + m]);
        }
      }
    } else {
      for (const kk of ks) for (const [a, m] of pairs) out.push(acc.recall[((t * K + kk) * A + a) * M + m]);
    }
  }
  return out;
}

/**
 * The 12 summary stats of pycocotools' `summarize()` for bbox, in its order:
 * AP, AP50, AP75, AP small/medium/large, AR@1, AR@10, AR@100, AR small/medium/large.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const gt = loadGroundTruth({ images: [{ id: 1 }], categories: [{ id: 1 }],
 *   annotations: [{ id: 1, image_id: 1, category_id: 1, bbox: [0, 0, 50, 50], area: 2500, iscrowd: 0 }] });
 * const dt = loadDetections(gt, [{ image_id: 1, category_id: 1, bbox: [0, 0, 50, 50], score: 1 }]);
 * // precision is tp / (tp + fp + eps), so a perfect AP prints as 1.000 but is 0.9999999999999998.
 * const stats = summarize(accumulate(evaluate(gt, dt))).map((s) => Math.round(s * 1e6) / 1e6);
 * assertEquals(stats, [1, 1, 1, -1, 1, -1, 1, 1, 1, -1, 1, -1]);
 * ```
 */
export function summarize(acc: CocoEvalAccumulated): number[] {
  return summarySpecs(acc.params).map((spec) => meanAboveMinusOne(select(acc, spec)));
}

/**
 * Formats like Python's `'{:0.Nf}'.format(x)`: correctly rounded, with exact
 * ties rounded half to even (JavaScript's `toFixed` rounds ties away from zero).
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * assertEquals([pyFixed(0.0625, 3), pyFixed(0.1875, 3), pyFixed(-1, 3)], ["0.062", "0.188", "-1.000"]);
 * ```
 */
export function pyFixed(x: number, digits: number): string {
  if (!Number.isFinite(x)) return Number.isNaN(x) ? "nan" : x > 0 ? "inf" : "-inf";
  const neg = x < 0 || Object.is(x, -0);
  const ax = Math.abs(x);
  if (ax >= 1e21) return (neg ? "-" : "") + ax.toFixed(0);
  let s = ax.toFixed(digits);
  const exact = ax.toFixed(100); // exact decimal expansion (to 100 places)
  const dot = exact.indexOf(".");
  const tail = exact.slice(dot + 1 + digits);
  if (/^50*$/.test(tail)) {
    // An exact tie: toFixed rounded up; Python rounds to the even neighbour.
    const down = exact.slice(0, dot + 1 + digits).replace(/\.$/, "");
    const lastDigit = Number(down[down.length - 1]);
    if (lastDigit % 2 === 0) s = down;
  }
  return (neg ? "-" : "") + s;
}

/**
 * The 12 summary lines exactly as pycocotools prints them.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const lines = formatSummary([0.5, 0.75, 0.25, -1, 0.5, 0.5, 0.1, 0.2, 0.3, -1, 0.3, 0.3]).split("\n");
 * assertEquals(lines[0], " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.500");
 * assertEquals(lines[9], " Average Recall     (AR) @[ IoU=0.50:0.95 | area= small | maxDets=100 ] = -1.000");
 * ```
 */
export function formatSummary(stats: ArrayLike<number>, params: CocoEvalParams = defaultParams()): string {
  const p = params;
  return summarySpecs(p).map((spec, j) => {
    // iStr = ' {:<18} {} @[ IoU={:<9} | area={:>6s} | maxDets={:>3d} ] = {:0.3f}'
    const title = spec.ap ? "Average Precision" : "Average Recall";
    const type = spec.ap ? "(AP)" : "(AR)";
    const iouStr = spec.iouThr === undefined
      ? `${pyFixed(p.iouThrs[0], 2)}:${pyFixed(p.iouThrs[p.iouThrs.length - 1], 2)}`
      : pyFixed(spec.iouThr, 2);
    return ` ${title.padEnd(18)} ${type} @[ IoU=${iouStr.padEnd(9)} | area=${spec.areaRng.padStart(6)} | maxDets=${
      String(spec.maxDets).padStart(3)
    } ] = ${pyFixed(stats[j], 3)}`;
  }).join("\n");
}

/**
 * AP, AP50 and AP75 of each category (area all, 100 detections), averaged
 * like `summarize()` but over one category; -1 where it has no ground truth.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const gt = loadGroundTruth({ images: [{ id: 1 }], categories: [{ id: 1, name: "cat" }, { id: 2, name: "dog" }],
 *   annotations: [{ id: 1, image_id: 1, category_id: 1, bbox: [0, 0, 50, 50], area: 2500, iscrowd: 0 }] });
 * const dt = loadDetections(gt, [{ image_id: 1, category_id: 1, bbox: [0, 0, 50, 50], score: 1 }]);
 * const rows = perClassAp(accumulate(evaluate(gt, dt)), gt);
 * assertEquals(rows.map((r) => [r.name, Math.round(r.ap * 1e6) / 1e6]), [["cat", 1], ["dog", -1]]);
 * ```
 */
export function perClassAp(acc: CocoEvalAccumulated, gt: CocoGroundTruth): PerClassAp[] {
  const maxDets = acc.params.maxDets[acc.params.maxDets.length - 1];
  return gt.catIds.map((id, k) => ({
    id,
    name: gt.catNames[k],
    ap: meanAboveMinusOne(select(acc, { ap: true, areaRng: "all", maxDets }, k)),
    ap50: meanAboveMinusOne(select(acc, { ap: true, iouThr: 0.5, areaRng: "all", maxDets }, k)),
    ap75: meanAboveMinusOne(select(acc, { ap: true, iouThr: 0.75, areaRng: "all", maxDets }, k)),
  }));
}

/**
 * A per-category table of AP, AP50 and AP75; `-1.000` marks categories
 * without ground truth.
 *
 * @example
 * ```ts
 * const text = formatPerClassTable([{ id: 1, name: "cat", ap: 0.5, ap50: 0.75, ap75: 0.5 }]);
 * if (!text.includes("cat") || !text.includes("0.750")) throw new Error(text);
 * ```
 */
export function formatPerClassTable(rows: PerClassAp[]): string {
  const idW = Math.max(2, ...rows.map((r) => String(r.id).length));
  const nameW = Math.max(8, ...rows.map((r) => r.name.length));
  const head = `${"id".padStart(idW)}  ${"category".padEnd(nameW)}  ${"AP".padStart(6)}  ${"AP50".padStart(6)}  ${
    "AP75".padStart(6)
  }`;
  const lines = [head, "-".repeat(head.length)];
  for (const r of rows) {
    const v = (x: number) => pyFixed(x, 3).padStart(6);
    lines.push(`${String(r.id).padStart(idW)}  ${r.name.padEnd(nameW)}  ${v(r.ap)}  ${v(r.ap50)}  ${v(r.ap75)}`);
  }
  if (rows.some((r) => r.ap === -1)) lines.push("(-1.000: no ground truth for this category)");
  return lines.join("\n");
}

/**
 * The `eval_stats.json` document: `{"stats": [12 numbers], "per_class":
 * {"<name>": {"ap", "ap50", "ap75"}}}`, -1 where pycocotools gives -1.
 * A category name used twice gets its id appended (`"name#id"`).
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const j = evalStatsJson([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], [{ id: 3, name: "cat", ap: 0, ap50: 0, ap75: -1 }]);
 * assertEquals(j.per_class.cat, { ap: 0, ap50: 0, ap75: -1 });
 * ```
 */
export function evalStatsJson(stats: ArrayLike<number>, perClass: PerClassAp[]): EvalStatsJson {
  const per_class: EvalStatsJson["per_class"] = {};
  const count = new Map<string, number>();
  for (const r of perClass) count.set(r.name, (count.get(r.name) ?? 0) + 1);
  for (const r of perClass) {
    const key = count.get(r.name)! > 1 ? `${r.name}#${r.id}` : r.name;
    per_class[key] = { ap: r.ap, ap50: r.ap50, ap75: r.ap75 };
  }
  return { stats: Array.from(stats), per_class };
}

/**
 * Evaluates a results file against ground truth in one call: load, evaluate,
 * accumulate, summarize, and the per-category table.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const gt = { images: [{ id: 1 }], categories: [{ id: 1, name: "cat" }],
 *   annotations: [{ id: 1, image_id: 1, category_id: 1, bbox: [10, 10, 50, 50], area: 2500, iscrowd: 0 }] };
 * const res = cocoEvaluate(gt, [{ image_id: 1, category_id: 1, bbox: [10, 10, 50, 50], score: 0.9 }]);
 * assertEquals([res.stats[0], res.perClass[0].ap50].map((s) => s.toFixed(3)), ["1.000", "1.000"]);
 * ```
 */
export function cocoEvaluate(
  gtJson: unknown,
  dtJson: unknown,
  options: {
    gtFile?: string;
    dtFile?: string;
    params?: CocoEvalParams;
    onProgress?: (done: number, total: number) => void;
  } = {},
): CocoEvalResult {
  const gt = loadGroundTruth(gtJson, { file: options.gtFile });
  const dt = loadDetections(gt, dtJson, { file: options.dtFile });
  const accumulated = accumulate(evaluate(gt, dt, { params: options.params, onProgress: options.onProgress }));
  return {
    stats: summarize(accumulated),
    perClass: perClassAp(accumulated, gt),
    accumulated,
    gt,
    numDetections: dt.count,
  };
}
