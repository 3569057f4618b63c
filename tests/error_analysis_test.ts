import assert, { deepStrictEqual as assertEquals } from "node:assert";
import { DetectionError } from "../lib/coco_eval.ts";
import {
  confusionMatrix,
  ERROR_TYPES,
  type ErrorType,
  loadErrorAnalysis,
  perImageAp,
  prBreakdown,
  worstImages,
} from "../lib/error_analysis.ts";
import { InputError } from "../lib/errors.ts";
import { assertThrowsError } from "./asserts.ts";

const FIXTURES = new URL("./fixtures/error_analysis/", import.meta.url);

function readJson(name: string): unknown {
  return JSON.parse(Deno.readTextFileSync(new URL(name, FIXTURES)));
}

/** A ground-truth annotation with `area = w * h` unless given. */
function ann(id: number, image_id: number, category_id: number, bbox: number[], extra: Record<string, unknown> = {}) {
  return { id, image_id, category_id, bbox, area: bbox[2] * bbox[3], iscrowd: 0, ...extra };
}

function det(image_id: number, category_id: number, bbox: number[], score: number) {
  return { image_id, category_id, bbox, score };
}

function assertClose(actual: number, expected: number, tol: number, what: string) {
  assert(Math.abs(actual - expected) <= tol, `${what}: ${actual} vs ${expected}`);
}

// ---------------------------------------------------------------------------
// Confusion matrix, by hand

const CATS = [{ id: 1, name: "cat" }, { id: 2, name: "dog" }, { id: 3, name: "bird" }];

/**
 * Image 1: a cat A, a dog B, a bird C. Image 2: two dogs D and E, each at IoU 0.6 with one dog detection.
 */
const HAND_GT = {
  images: [{ id: 1, width: 100, height: 100 }, { id: 2, width: 200, height: 200 }],
  categories: CATS,
  annotations: [
    ann(1, 1, 1, [0, 0, 20, 20]), // A cat
    ann(2, 1, 2, [50, 50, 20, 20]), // B dog
    ann(3, 1, 3, [0, 60, 20, 20]), // C bird
    ann(4, 2, 2, [0, 0, 40, 40]), // D dog
    ann(5, 2, 2, [20, 0, 40, 40]), // E dog
  ],
};
const HAND_DT = [
  det(1, 1, [0, 0, 20, 20], 0.9), // cat on A: TP
  det(1, 1, [1, 0, 20, 20], 0.8), // cat on A again: a duplicate counts as a second TP
  det(1, 2, [0, 0, 20, 20], 0.7), // dog on A: [cat][dog]
  det(1, 3, [50, 50, 20, 20], 0.6), // bird on B: [dog][bird]
  det(1, 1, [80, 0, 10, 10], 0.5), // cat on nothing: [background][cat]
  det(1, 2, [50, 50, 20, 20], 0.2), // dog on B, below the 0.3 score threshold: B stays a miss
  det(2, 2, [10, 0, 40, 40], 0.9), // dog at IoU 0.6 with both D and E: counts once per ground truth
  det(2, 3, [100, 100, 10, 10], 0.4), // bird on nothing: [background][bird]
];

Deno.test("confusionMatrix() counts TPs, duplicates, confusions, background and misses as mmdetection does", () => {
  const cm = confusionMatrix(loadErrorAnalysis(HAND_GT, HAND_DT));
  assertEquals(cm.classes, ["cat", "dog", "bird", "background"]);
  assertEquals(cm.counts, [
    // cat dog bird bg   <- predicted
    [2, 1, 0, 0], // cat:  2 cat detections on A (TP + duplicate), 1 dog on A
    [0, 2, 1, 1], // dog:  the dog detection on D and E twice, a bird on B, B missed
    [0, 0, 0, 1], // bird: C missed
    [1, 0, 1, 0], // background: a cat and a bird on nothing
  ]);
});

Deno.test("confusionMatrix() takes its score and IoU thresholds as options", () => {
  const data = loadErrorAnalysis(HAND_GT, HAND_DT);
  // Score 0.1 lets the 0.2 dog on B in: [dog][dog] + 1 and B is no longer missed.
  assertEquals(confusionMatrix(data, { scoreThr: 0.1 }).counts[1], [0, 3, 1, 0]);
  // IoU 0.65: the dog detection on D and E (IoU 0.6) overlaps neither, so it is background and both are missed.
  const strict = confusionMatrix(data, { tpIouThr: 0.65 }).counts;
  assertEquals([strict[1], strict[3]], [[0, 0, 1, 3], [1, 1, 1, 0]]);
});

Deno.test("confusionMatrix() uses mmdetection's ground truth: crowd kept (3.x) or skipped (2.x), bad boxes dropped", () => {
  const gt = {
    images: [{ id: 1, width: 100, height: 100 }, { id: 2 }],
    categories: CATS,
    annotations: [
      ann(1, 1, 1, [0, 0, 30, 30], { iscrowd: 1 }), // crowd region
      ann(2, 1, 2, [40, 0, 0.5, 30]), // w < 1
      ann(3, 1, 2, [40, 40, 20, 20], { area: 0 }), // area 0
      ann(4, 1, 3, [120, 0, 20, 20]), // outside the 100 x 100 image
      ann(5, 1, 3, [0, 60, 20, 20], { ignore: 1 }), // ignore flag
      ann(6, 2, 3, [500, 500, 20, 20]), // image 2 has no size: kept
    ],
  };
  const dets = [
    det(1, 1, [0, 0, 30, 30], 0.9),
    det(1, 2, [40, 0, 0.5, 30], 0.9),
    det(1, 2, [40, 40, 20, 20], 0.9),
    det(1, 3, [120, 0, 20, 20], 0.9),
    det(1, 3, [0, 60, 20, 20], 0.9),
    det(2, 3, [500, 500, 20, 20], 0.9),
  ];
  const data = loadErrorAnalysis(gt, dets);
  // 3.x: the crowd region is a cat like any other; the four dropped annotations are background.
  assertEquals(confusionMatrix(data).counts, [[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0], [0, 2, 2, 0]]);
  // "skip": the cat detection on the crowd region is background too.
  assertEquals(confusionMatrix(data, { crowd: "skip" }).counts, [
    [0, 0, 0, 0],
    [0, 0, 0, 0],
    [0, 0, 1, 0],
    [1, 2, 2, 0],
  ]);
});

Deno.test("confusionMatrix() computes IoU in float32 like mmdetection's bbox_overlaps", () => {
  // 49.9999999 is 50 in float32, so the IoU is exactly 0.5, a match; in float64 it would be 0.499999999.
  const gt = { images: [{ id: 1 }], categories: CATS, annotations: [ann(1, 1, 1, [0, 0, 100, 100])] };
  const cm = confusionMatrix(loadErrorAnalysis(gt, [det(1, 1, [0, 0, 100, 49.9999999], 0.9)]));
  assertEquals(cm.counts[0], [1, 0, 0, 0]);
});

// ---------------------------------------------------------------------------
// Per-image AP, by hand

Deno.test("perImageAp() averages VOC area AP over classes with ground truth and IoU .50:.95; worstImages() ranks", () => {
  const gt = {
    images: [{ id: 1 }, { id: 2 }, { id: 3 }, { id: 4 }, { id: 5 }],
    categories: [...CATS, { id: 4, name: "horse" }],
    annotations: [
      ann(1, 1, 1, [0, 0, 20, 20]), // image 1: a cat
      ann(2, 1, 2, [50, 50, 20, 20]), // and a dog
      ann(3, 2, 2, [0, 0, 10, 10]), // image 2: a dog
      ann(4, 3, 1, [0, 0, 10, 10]), // image 3: a cat nobody finds; image 4: nothing
      ann(5, 5, 4, [20, 20, 40, 40]), // image 5: two horses side by side
      ann(6, 5, 4, [40, 20, 40, 40]),
    ],
  };
  const dets = [
    // Image 1: cat AP 1; dog: an FP then the TP, precision [0, 1/2], AP 0.5; the bird has no ground truth
    // there and does not count. Mean 0.75 at every threshold.
    det(1, 1, [0, 0, 20, 20], 0.9),
    det(1, 2, [0, 80, 10, 10], 0.8),
    det(1, 2, [50, 50, 20, 20], 0.7),
    det(1, 3, [0, 0, 20, 20], 0.95),
    // Image 2: IoU .625, a hit at .50, .55 and .60: (3 * 1 + 7 * 0) / 10.
    det(2, 2, [0, 0, 10, 6.25], 0.9),
    // Image 4 has no ground truth: left out even with a detection.
    det(4, 1, [0, 0, 10, 10], 0.9),
    // Image 5: IoU 0.6 with both horses, so np.argmax takes the first; the next detection, exactly on the first
    // horse, finds it taken: FP. At .50-.60: TP, FP, AP 0.5. From .65: FP, TP, AP 0.5 * 0.5. (3 * .5 + 7 * .25) / 10.
    det(5, 4, [30, 20, 40, 40], 0.875),
    det(5, 4, [20, 20, 40, 40], 0.75),
  ];
  const ranked = perImageAp(loadErrorAnalysis(gt, dets));
  assertEquals(ranked.map((r) => [r.imageId, r.ap, r.numGts, r.numDets]), [
    [3, 0, 1, 0],
    [2, 0.3, 1, 1],
    [5, 0.325, 2, 2],
    [1, 0.75, 2, 4],
  ]);
  assertEquals(worstImages(ranked, 2).map((r) => r.imageId), [3, 2]);
  assertEquals(worstImages(ranked, 10).length, 4);
  // AP50 instead: image 2 is a hit, image 5 TP then FP.
  const ap50 = perImageAp(loadErrorAnalysis(gt, dets), { iouThrs: [0.5] });
  assertEquals(ap50.map((r) => [r.imageId, r.ap]), [[3, 0], [5, 0.5], [1, 0.75], [2, 1]]);
});

Deno.test("perImageAp() keeps file order among equal APs, as mmdetection's stable sort of its dataset order", () => {
  const gt = {
    images: [{ id: 30 }, { id: 10 }, { id: 20 }],
    categories: CATS,
    annotations: [ann(1, 10, 1, [0, 0, 10, 10]), ann(2, 20, 1, [0, 0, 10, 10]), ann(3, 30, 1, [0, 0, 10, 10])],
  };
  assertEquals(perImageAp(loadErrorAnalysis(gt, [])).map((r) => r.imageId), [30, 10, 20]);
});

// ---------------------------------------------------------------------------
// PR breakdown, by hand

Deno.test("prBreakdown() separates localisation, supercategory, class and background errors (hand-computed)", () => {
  const gt = {
    images: [{ id: 1 }],
    categories: [
      { id: 1, name: "cat", supercategory: "animal" },
      { id: 2, name: "dog", supercategory: "animal" },
      { id: 3, name: "car", supercategory: "vehicle" },
    ],
    annotations: [
      ann(1, 1, 1, [0, 0, 40, 40]), // C1
      ann(2, 1, 1, [0, 50, 40, 40]), // C2
      ann(3, 1, 1, [50, 150, 40, 40]), // C3
      ann(4, 1, 2, [100, 0, 40, 40]), // a dog
      ann(5, 1, 3, [100, 100, 40, 40]), // a car
    ],
  };
  const dets = [
    det(1, 1, [0, 0, 40, 40], 0.9), // a: on C1, IoU 1
    det(1, 1, [100, 0, 40, 40], 0.8), // b: on the dog (same supercategory)
    det(1, 1, [100, 100, 40, 40], 0.7), // c: on the car (other supercategory)
    det(1, 1, [150, 50, 40, 40], 0.6), // d: on nothing
    det(1, 1, [0, 50, 40, 24], 0.5), // e: on C2, IoU 0.6
    det(1, 1, [50, 150, 40, 12], 0.4), // f: on C3, IoU 0.3
  ];
  const br = prBreakdown(loadErrorAnalysis(gt, dets));
  // Recall thresholds 0 .. 0.33 (34 points) reach recall 1/3, 0.34 .. 0.66 (33) recall 2/3, 0.67 .. 1 (34) all.
  // C75: a only: precision 1 up to recall 1/3.                        34 / 101
  // C50: a, e: precision 1, then 2/5 (a b c d e).                     (34 + 33 * 0.4) / 101
  // Loc: a, e, f: 1, then 3/6 for the rest.                           (34 + 67 * 0.5) / 101
  // Sim: b ignored: a c d e f, 1 then 3/5.                            (34 + 67 * 0.6) / 101
  // Oth: b, c ignored: a d e f, 1 then 3/4.                           (34 + 67 * 0.75) / 101
  // BG: 1 wherever Oth > 0; FN: 1.
  const cat: Record<ErrorType, number> = {
    C75: 34 / 101,
    C50: (34 + 33 * 0.4) / 101,
    Loc: (34 + 67 * 0.5) / 101,
    Sim: (34 + 67 * 0.6) / 101,
    Oth: (34 + 67 * 0.75) / 101,
    BG: 1,
    FN: 1,
  };
  const [catAll, dogAll] = [br.perCategory[0].areas[0], br.perCategory[1].areas[0]];
  for (const t of ERROR_TYPES) {
    assertClose(catAll.ap[t], cat[t], 1e-12, `cat ${t}`);
    // Dog and car have ground truth but no detections: 0, except FN; the overall mean is a third of the cat's.
    assertEquals(dogAll.ap[t], t === "FN" ? 1 : 0);
    assertClose(br.overall[0].ap[t], t === "FN" ? 1 : cat[t] / 3, 1e-12, `overall ${t}`);
  }
  assertEquals(Array.from(catAll.precision.Oth.subarray(32, 36)).map((p) => Math.round(p * 1e9) / 1e9), [
    1,
    1,
    0.75,
    0.75,
  ]);
  // No small or large ground truth: mmdetection turns -1 into 0, so every curve is 0 there but FN.
  for (const a of [1, 3]) {
    assertEquals(ERROR_TYPES.map((t) => br.overall[a].ap[t]), [0, 0, 0, 0, 0, 0, 1]);
  }
  assertEquals(br.overall.map((a) => [a.area, a.range]), [
    ["all", [0, 1e10]],
    ["small", [0, 1024]],
    ["medium", [1024, 9216]],
    ["large", [9216, 1e10]],
  ]);
});

Deno.test("prBreakdown(): without a supercategory Sim equals Loc; custom area ranges", () => {
  const gt = {
    images: [{ id: 1 }],
    categories: [{ id: 1, name: "cat" }, { id: 2, name: "dog" }],
    annotations: [ann(1, 1, 1, [0, 0, 40, 40]), ann(2, 1, 2, [100, 0, 40, 40])],
  };
  const dets = [det(1, 1, [100, 0, 40, 40], 0.9), det(1, 1, [0, 0, 40, 40], 0.8)];
  const br = prBreakdown(loadErrorAnalysis(gt, dets), { areas: [100, 2000, 1e6] });
  const cat = br.perCategory[0].areas[0];
  assertEquals(cat.precision.Sim, cat.precision.Loc);
  assert(cat.ap.Oth > cat.ap.Sim, "the dog confusion is only forgiven by Oth");
  assertEquals(br.overall.map((a) => a.range), [[0, 1e6], [0, 100], [100, 2000], [2000, 1e6]]);
  assertClose(br.overall[2].ap.C50, br.overall[0].ap.C50, 1e-15, "every box is medium here");
});

// ---------------------------------------------------------------------------
// Input errors

Deno.test("loadErrorAnalysis() rejects detections on unknown images or categories with coco_eval's errors", () => {
  const gt = { images: [{ id: 1 }], categories: CATS, annotations: [] };
  const e1 = assertThrowsError(() => loadErrorAnalysis(gt, [det(9, 1, [0, 0, 1, 1], 1)]), DetectionError, "image_id 9");
  assertEquals([e1.kind, e1.index], ["unknown-image", 0]);
  const e2 = assertThrowsError(
    () => loadErrorAnalysis(gt, [det(1, 1, [0, 0, 1, 1], 1), det(1, 7, [0, 0, 1, 1], 1)], { dtFile: "dt.json" }),
    DetectionError,
    "dt.json",
    "category_id 7",
  );
  assertEquals([e2.kind, e2.index], ["unknown-category", 1]);
  assertThrowsError(() => loadErrorAnalysis({ images: [] }, []), InputError, "categories");
});

// ---------------------------------------------------------------------------
// Golden numbers from mmdetection's code (tests/fixtures/error_analysis/SOURCE.md)

const randData = () => loadErrorAnalysis(readJson("rand_gt.json"), readJson("rand_dt.json"));

Deno.test("confusionMatrix() equals mmdetection's calculate_confusion_matrix on the random fixture", () => {
  const data = randData();
  const ref = readJson("rand_confusion.json") as Record<
    string,
    { score_thr: number; tp_iou_thr: number; crowd: "gt" | "skip"; classes: string[]; counts: number[][] }
  >;
  assertEquals(Object.keys(ref), ["default", "loose", "crowd_skip"]);
  for (const [name, r] of Object.entries(ref)) {
    const got = confusionMatrix(data, { scoreThr: r.score_thr, tpIouThr: r.tp_iou_thr, crowd: r.crowd });
    assertEquals(got, { classes: r.classes, counts: r.counts }, name);
  }
});

Deno.test("perImageAp() equals mmdetection's bbox_map_eval ranking bit for bit on the random fixture", () => {
  const data = randData();
  const ref = readJson("rand_image_ap.json") as Record<string, { image_id: number; ap: number; num_gts: number }[]>;
  const runs: [string, Parameters<typeof perImageAp>[1]][] = [
    ["map", {}],
    ["ap50", { iouThrs: [0.5] }],
    ["map_crowd_skip", { crowd: "skip" }],
  ];
  for (const [name, options] of runs) {
    const got = perImageAp(data, options);
    // mmdetection also ranks images without ground truth (at 0.0); the workbench leaves them out.
    const want = ref[name].filter((r) => r.num_gts > 0);
    assertEquals(
      got.map((r) => [r.imageId, r.ap, r.numGts]),
      want.map((r) => [r.image_id, r.ap, r.num_gts]),
      name,
    );
  }
});

Deno.test("prBreakdown() equals mmdetection's coco_error_analysis curves on the random fixture", () => {
  type Curves = { area: string; ap: Record<ErrorType, number>; precision?: Record<ErrorType, number[]> };
  const ref = readJson("rand_pr.json") as {
    recThrs: number[];
    overall: Curves[];
    perCategory: { id: number; name: string; areas: Curves[] }[];
  };
  const br = prBreakdown(randData());
  assertEquals(Array.from(br.recThrs), ref.recThrs);
  // Means differ from numpy's in the last bits only (summation order).
  const tol = 1e-12;
  br.overall.forEach((a, ai) => {
    const r = ref.overall[ai];
    assertEquals(a.area, r.area);
    for (const t of ERROR_TYPES) {
      assertClose(a.ap[t], r.ap[t], tol, `${r.area} ${t}`);
      a.precision[t].forEach((p, j) => assertClose(p, r.precision![t][j], tol, `${r.area} ${t} [${j}]`));
    }
  });
  assertEquals(br.perCategory.map((c) => [c.id, c.name]), ref.perCategory.map((c) => [c.id, c.name]));
  br.perCategory.forEach((c, k) =>
    c.areas.forEach((a, ai) => {
      for (const t of ERROR_TYPES) assertClose(a.ap[t], ref.perCategory[k].areas[ai].ap[t], tol, `${c.name} ${t}`);
    })
  );
  // The curves stack: each one on or above the previous.
  for (const a of br.overall) {
    for (let y = 1; y < ERROR_TYPES.length; y++) {
      assert(a.ap[ERROR_TYPES[y]] >= a.ap[ERROR_TYPES[y - 1]] - 1e-12, `${a.area}: ${ERROR_TYPES[y]}`);
    }
  }
});
