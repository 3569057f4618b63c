import assert, { deepStrictEqual as assertEquals } from "node:assert";
import { cocoEvaluate, DetectionError } from "../lib/coco_eval.ts";
import { InputError } from "../lib/errors.ts";
import {
  TIDE_GT_TYPES,
  tideAp,
  tideDetectionTypes,
  tideEvaluate,
  type TideMainErrors,
  type TideResult,
  type TideSpecialErrors,
} from "../lib/tide.ts";
import { assertThrowsError } from "./asserts.ts";

const FIXTURES = new URL("./fixtures/tide/", import.meta.url);

function readJson(name: string): unknown {
  return JSON.parse(Deno.readTextFileSync(new URL(name, FIXTURES)));
}

/** One case of golden.json: inputs, options and what tidecv 1.0.1 computed (see SOURCE.md). */
interface GoldenCase {
  name: string;
  gt: string;
  dt: string;
  options: { posThreshold?: number; backgroundThreshold?: number; maxDets?: number };
  ap50: number;
  main: TideMainErrors;
  special: TideSpecialErrors;
  counts: TideMainErrors;
  /** Per detection, in results order: "TP", an error name, or "Cut" past max_dets. */
  detections: string[];
  /** Per detection: the ground-truth annotation index involved, -1 if none. */
  detGt: number[];
  /** Detections swallowed by crowd regions (pred['used'] is None). */
  ignored: number[];
  /** Annotation indices of tidecv's MissedErrors. */
  missed: number[];
  /** Cls/Loc errors whose fix makes a true positive. */
  fixable: number[];
}

const golden = readJson("golden.json") as { tidecv: string; cases: GoldenCase[] };

const WHAT: Record<string, string> = {
  hand: "the worked example",
  edges: "IoU exactly at the thresholds, score ties, identical ground truths, crowd regions",
  mixed: "every error type, images with and without detections or ground truth",
  many_classes: "12 classes, a class with detections only and a listed class never used",
  ties: "8-pixel grid boxes and 0.1-step scores (ties everywhere)",
  crowd: "many crowd regions and string image ids",
  max_dets: "images with more than 100 detections",
  mixed_thresholds: "posThreshold 0.75, backgroundThreshold 0.2, maxDets 5",
};

function indicesWhere(a: ArrayLike<number>, pred: (v: number) => boolean): number[] {
  const out: number[] = [];
  for (let i = 0; i < a.length; i++) if (pred(a[i])) out.push(i);
  return out;
}

/** Largest |ours - tidecv| over ap50, the six main and the two special dAPs. */
function maxDiff(res: TideResult, ref: GoldenCase): number {
  let d = Math.abs(res.ap50 - ref.ap50);
  for (const k of Object.keys(ref.main) as (keyof TideMainErrors)[]) {
    d = Math.max(d, Math.abs(res.main[k] - ref.main[k]));
  }
  for (const k of Object.keys(ref.special) as (keyof TideSpecialErrors)[]) {
    d = Math.max(d, Math.abs(res.special[k] - ref.special[k]));
  }
  return d;
}

Deno.test("golden fixtures come from tidecv 1.0.1 and cover every case", () => {
  assertEquals(golden.tidecv, "1.0.1");
  assertEquals(golden.cases.map((c) => c.name).sort(), Object.keys(WHAT).sort());
});

for (const ref of golden.cases) {
  Deno.test(`tideEvaluate() matches tidecv on ${WHAT[ref.name]} (${ref.name})`, () => {
    const res = tideEvaluate(readJson(ref.gt), readJson(ref.dt), ref.options);
    const d = maxDiff(res, ref);
    assert(d <= 1e-4, `${ref.name}: max |ours - tidecv| = ${d}`);
    assertEquals(res.counts, ref.counts);
    assertEquals(tideDetectionTypes(res), ref.detections);
    assertEquals([...res.detections.gt], ref.detGt);
    assertEquals(indicesWhere(res.detections.ignored, (v) => v === 1), ref.ignored);
    assertEquals(indicesWhere(res.groundTruth.type, (v) => TIDE_GT_TYPES[v] === "Miss"), ref.missed);
    assertEquals(indicesWhere(res.detections.fixable, (v) => v === 1), ref.fixable);
  });
}

Deno.test("the fixtures agree with tidecv to the last bit", () => {
  // Not required (the bar is 1e-4), but the port sums in tidecv's order, so any drift would mean a changed rule.
  for (const ref of golden.cases) {
    assertEquals(maxDiff(tideEvaluate(readJson(ref.gt), readJson(ref.dt), ref.options), ref), 0, ref.name);
  }
});

// The worked example (the "hand" fixture, whose tidecv numbers golden.json holds too). One image, classes A and B:
//   ground truth g0 A [0,0,10,10], g1 A [20,0,10,10], g2 B [40,0,10,10], g3 B [60,0,10,10]
//   d0 A [0,0,10,10]     0.9  IoU 1 with g0            -> TP
//   d1 A [0,0,10,10]     0.8  g0 already taken         -> Dupe
//   d2 A [40,0,10,10]    0.7  IoU 1 with g2 of class B -> Cls (g2 becomes "usable", so not missed)
//   d3 A [25,0,10,10]    0.6  IoU 50/150 = 1/3 with g1 -> Loc (0.1 <= 1/3 <= 0.5; g1 usable)
//   d4 A [100,100,10,10] 0.5  IoU 0 with everything    -> Bkg
//   g3: no detection points at it                      -> Miss
// tidecv's AP: precision at the 101 recall points 0, .01, ..., 1 (0 past the last recall reached).
//   A: T F F F F with 2 gt: precision 1 up to recall .5 -> 51 points -> 51/101*100; B: 2 gt, nothing -> 0.
//   AP50 = (51/101*100 + 0) / 2.
//   Cls fix: d2 becomes a TP of B -> B = 51/101*100 too; A loses an FP below its TP, still 51/101*100.
//   Loc fix: d3 becomes a TP -> A: T F F T F -> precision 1 to recall .5, then max(2/4, 2/5) = .5 to recall 1
//            -> (51 + 50 * .5)/101*100 = 76/101*100.
//   Dupe, Bkg fixes drop an FP after A's last TP: no change. Miss fix: B has 1 gt, still nothing: 0.
//   FalseNeg: A keeps 1 gt (g0), B none and no data -> B leaves the mean: AP = 100.
Deno.test("tideEvaluate() on a hand-worked case", () => {
  const A = 1, B = 2;
  const gtBoxes: [number, number[]][] = [[A, [0, 0, 10, 10]], [A, [20, 0, 10, 10]], [B, [40, 0, 10, 10]], [
    B,
    [60, 0, 10, 10],
  ]];
  const gt = {
    images: [{ id: 1 }],
    categories: [{ id: A, name: "A" }, { id: B, name: "B" }],
    annotations: gtBoxes.map(([c, b], n) => ({ id: n + 1, image_id: 1, category_id: c, bbox: b, area: 100 })),
  };
  const dt = ([[0, 0, 0.9], [0, 0, 0.8], [40, 0, 0.7], [25, 0, 0.6], [100, 100, 0.5]] as const).map((
    [x, y, score],
  ) => ({ image_id: 1, category_id: A, bbox: [x, y, 10, 10], score }));
  const res = tideEvaluate(gt, dt);
  const half = 51 / 101 * 100;
  assertEquals(tideDetectionTypes(res), ["TP", "Dupe", "Cls", "Loc", "Bkg"]);
  assertEquals([...res.detections.gt], [0, 0, 2, 1, -1]);
  assertEquals([...res.groundTruth.type].map((t) => TIDE_GT_TYPES[t]), ["TP", "FN", "FN", "Miss"]);
  assertEquals([...res.groundTruth.match], [0, -1, -1, -1]);
  const close = (a: number, b: number) => assert(Math.abs(a - b) < 1e-12, `${a} vs ${b}`);
  close(res.ap50, half / 2);
  close(res.main.Cls, half - half / 2);
  close(res.main.Loc, 76 / 101 * 100 / 2 - half / 2);
  assertEquals([res.main.Both, res.main.Dupe, res.main.Bkg, res.main.Miss], [0, 0, 0, 0]);
  close(res.special.FalsePos, 0);
  close(res.special.FalseNeg, 100 - half / 2);
  assertEquals(res.counts, { Cls: 1, Loc: 1, Both: 0, Dupe: 1, Bkg: 1, Miss: 1 });
  // And tidecv said the same.
  const ref = golden.cases.find((c) => c.name === "hand")!;
  assertEquals(maxDiff(res, ref), 0);
});

Deno.test("tideAp() is tidecv's 101-point AP", () => {
  assertEquals(tideAp(new Uint8Array([1, 0]), 2, 2), 51 / 101 * 100);
  assertEquals(tideAp(new Uint8Array([1, 1]), 2, 2), 100);
  assertEquals(tideAp(new Uint8Array([0, 1]), 2, 1), 50); // no epsilon: precision 1/2 exactly
  assertEquals(tideAp(new Uint8Array([0, 0]), 2, 0), 0); // no ground truth: 0, and still counted in the mean
  assertEquals(tideAp(new Uint8Array(0), 0, 3), 0);
});

const tinyGt = {
  images: [{ id: 1 }, { id: 2 }],
  categories: [{ id: 1, name: "cat" }, { id: 2, name: "dog" }],
  annotations: [{ id: 1, image_id: 1, category_id: 1, bbox: [0, 0, 10, 10], area: 100, iscrowd: 0 }],
};

Deno.test("a class with detections but no ground truth scores AP 0 and stays in the mean (tidecv, not pycocotools)", () => {
  const res = tideEvaluate(tinyGt, [
    { image_id: 1, category_id: 1, bbox: [0, 0, 10, 10], score: 0.9 },
    { image_id: 2, category_id: 2, bbox: [0, 0, 10, 10], score: 0.9 },
  ]);
  assertEquals(res.ap50, 50); // (100 + 0) / 2
  assertEquals(res.main.Bkg, 50); // fixing the background error empties "dog": it leaves the mean
  assertEquals(tideDetectionTypes(res), ["TP", "Bkg"]);
});

Deno.test("detections past maxDets per image are cut across classes, by score", () => {
  const dt = [0.1, 0.9, 0.5].map((score, n) => ({
    image_id: 1,
    category_id: 1 + (n % 2),
    bbox: [0, 0, 10, 10],
    score,
  }));
  const res = tideEvaluate(tinyGt, dt, { maxDets: 2 });
  assertEquals(tideDetectionTypes(res), ["Cut", "Cls", "TP"]);
});

Deno.test("no detections at all: every ground truth is missed and nothing divides by zero", () => {
  const res = tideEvaluate(tinyGt, []);
  assertEquals([res.ap50, res.main.Miss, res.special.FalseNeg], [0, 0, 0]); // tidecv raises ZeroDivisionError
  assertEquals([...res.groundTruth.type].map((t) => TIDE_GT_TYPES[t]), ["Miss"]);
  assertEquals(res.counts.Miss, 1);
});

Deno.test("a category only annotations name is a class (tidecv's Data._make_default_class)", () => {
  const gt = {
    ...tinyGt,
    annotations: [...tinyGt.annotations, { id: 2, image_id: 2, category_id: 7, bbox: [0, 0, 10, 10], area: 100 }],
  };
  const res = tideEvaluate(gt, [{ image_id: 2, category_id: 7, bbox: [0, 0, 10, 10], score: 0.5 }]);
  assertEquals(tideDetectionTypes(res), ["TP"]);
  assertEquals(res.ap50, 50); // cat: 1 gt, no detection (0); class 7: 100
});

Deno.test("bad detections raise the same DetectionError as cocoEvaluate()", () => {
  const cases: [unknown, string, string][] = [
    [{ image_id: 9, category_id: 1, bbox: [0, 0, 1, 1], score: 1 }, "unknown-image", "image_id 9"],
    [{ image_id: 1, category_id: 5, bbox: [0, 0, 1, 1], score: 1 }, "unknown-category", "category_id 5"],
    [{ image_id: 1, category_id: 1, bbox: [0, 0, 1], score: 1 }, "malformed", "bbox"],
    [{ image_id: 1, category_id: 1, bbox: [0, 0, 1, 1], score: NaN }, "malformed", "score"],
  ];
  for (const [bad, kind, text] of cases) {
    const dt = [{ image_id: 1, category_id: 1, bbox: [0, 0, 10, 10], score: 0.5 }, bad];
    const ours = assertThrowsError(() => tideEvaluate(tinyGt, dt, { dtFile: "dets.json" }), DetectionError, text);
    const theirs = assertThrowsError(() => cocoEvaluate(tinyGt, dt, { dtFile: "dets.json" }), DetectionError);
    assertEquals([ours.kind, ours.index, ours.message], [kind, 1, theirs.message]);
  }
  assertThrowsError(() => tideEvaluate(tinyGt, { not: "a list" }), InputError, "JSON array");
});

Deno.test("bad ground truth raises InputError naming the entry", () => {
  const bad = (ann: Record<string, unknown>) => ({ ...tinyGt, annotations: [ann] });
  const ann = { id: 1, image_id: 1, category_id: 1, bbox: [0, 0, 10, 10], area: 100 };
  assertThrowsError(() => tideEvaluate(bad({ ...ann, image_id: 3 }), []), InputError, "annotations[0]", "image_id 3");
  assertThrowsError(() => tideEvaluate(bad({ ...ann, bbox: [0, 0] }), []), InputError, "annotations[0]", "bbox");
  assertThrowsError(() => tideEvaluate(bad({ ...ann, iscrowd: "yes" }), []), InputError, "iscrowd");
  assertThrowsError(() => tideEvaluate({ images: [] }, []), InputError, "categories");
  assertThrowsError(() => tideEvaluate(tinyGt, [], { maxDets: 0 }), InputError, "maxDets");
  assertThrowsError(() => tideEvaluate(tinyGt, [], { posThreshold: NaN }), InputError, "thresholds");
});

Deno.test("the fixtures stay small", () => {
  let total = 0;
  for (const e of Deno.readDirSync(FIXTURES)) total += Deno.statSync(new URL(e.name, FIXTURES)).size;
  assert(total < 200_000, `tests/fixtures/tide is ${total} bytes`);
});
