import assert, { deepStrictEqual as assertEquals } from "node:assert";
import {
  accumulate,
  bboxIou,
  cocoEvaluate,
  defaultParams,
  DetectionError,
  evalStatsJson,
  evaluate,
  formatPerClassTable,
  formatSummary,
  loadDetections,
  loadGroundTruth,
  meanAboveMinusOne,
  pyFixed,
} from "../lib/coco_eval.ts";
import { InputError } from "../lib/errors.ts";
import { assertThrowsError } from "./asserts.ts";

const FIXTURES = new URL("./fixtures/cocoeval/", import.meta.url);

function readJson(name: string): unknown {
  return JSON.parse(Deno.readTextFileSync(new URL(name, FIXTURES)));
}

/** A fixture: ground truth, detections and what pycocotools computed for them (see SOURCES.md). */
function fixture(name: string) {
  const raw = readJson(`${name}_stats.json`) as
    | number[]
    | { stats: number[]; per_class: Record<string, { ap: number; ap50: number; ap75: number }>; summary: string };
  const ref = Array.isArray(raw) ? { stats: raw, per_class: undefined, summary: undefined } : raw;
  return { gt: readJson(`${name}_gt.json`), dt: readJson(`${name}_dt.json`), ref };
}

function assertClose(actual: number[], expected: number[], tol: number, what: string) {
  assertEquals(actual.length, expected.length, `${what}: length`);
  actual.forEach((a, j) =>
    assert(Math.abs(a - expected[j]) <= tol, `${what}[${j}]: ${a} vs pycocotools ${expected[j]}`)
  );
}

const CASES: [string, string][] = [
  ["tiny", "a two-image hand-made case"],
  ["rand", "random boxes"],
  ["crowd", "crowd regions matching several detections"],
  ["area_field", "area fields that differ from box areas"],
  ["many_dets", "more than 100 detections per image"],
  ["ties", "score ties and equal-IoU ground truths"],
  ["missing", "categories and images without ground truth"],
  ["mixed", "a small/medium/large mixture with annotation id 0"],
];

for (const [name, what] of CASES) {
  Deno.test(`cocoEvaluate() matches pycocotools' 12 stats on ${what} (${name})`, () => {
    const { gt, dt, ref } = fixture(name);
    const res = cocoEvaluate(gt, dt);
    assertClose(res.stats, ref.stats, 1e-9, name);
  });
}

Deno.test("cocoEvaluate() reproduces pycocotools' stats bit for bit on every fixture", () => {
  for (const [name] of CASES) {
    const { gt, dt, ref } = fixture(name);
    assertEquals(cocoEvaluate(gt, dt).stats, ref.stats, name);
  }
});

Deno.test("perClassAp() matches AP, AP50 and AP75 from pycocotools' precision array", () => {
  for (const [name] of CASES) {
    const { gt, dt, ref } = fixture(name);
    if (!ref.per_class) continue;
    const got = evalStatsJson([], cocoEvaluate(gt, dt).perClass).per_class;
    assertEquals(Object.keys(got), Object.keys(ref.per_class), name);
    for (const [cls, v] of Object.entries(ref.per_class)) {
      assertClose([got[cls].ap, got[cls].ap50, got[cls].ap75], [v.ap, v.ap50, v.ap75], 1e-9, `${name}/${cls}`);
    }
  }
});

Deno.test("formatSummary() prints the 12 lines exactly as pycocotools' summarize()", () => {
  let checked = 0;
  for (const [name] of CASES) {
    const { gt, dt, ref } = fixture(name);
    if (!ref.summary) continue;
    assertEquals(formatSummary(cocoEvaluate(gt, dt).stats) + "\n", ref.summary, name);
    checked++;
  }
  assert(checked >= 5);
});

Deno.test("defaultParams() reproduces numpy's linspace values of pycocotools' Params", () => {
  const ref = readJson("params.json") as {
    iouThrs: number[];
    recThrs: number[];
    maxDets: number[];
    areaRng: number[][];
    areaRngLbl: string[];
  };
  const p = defaultParams();
  assertEquals([...p.iouThrs], ref.iouThrs);
  assertEquals([...p.recThrs], ref.recThrs);
  assertEquals(p.maxDets, ref.maxDets);
  assertEquals(p.areaRng, ref.areaRng);
  assertEquals(p.areaRngLbl, ref.areaRngLbl);
});

Deno.test("pyFixed() rounds exact ties half to even like Python's format()", () => {
  const ref = (readJson("params.json") as { format_3f: Record<string, string> }).format_3f;
  for (const [x, s] of Object.entries(ref)) assertEquals(pyFixed(Number(x), 3), s, x);
});

Deno.test("an empty detection list scores 0 where pycocotools scores a detection-free category 0, and -1 elsewhere", () => {
  // pycocotools raises on []: its reference is one detection in a category without ground truth, which
  // leaves every category with ground truth undetected.
  const { gt, ref } = fixture("nodet");
  const res = cocoEvaluate(gt, []);
  assertEquals(res.stats, ref.stats);
  assertEquals(res.numDetections, 0);
});

Deno.test("loadDetections() names the entry of an unknown image id", () => {
  const { gt } = fixture("tiny");
  const g = loadGroundTruth(gt);
  const dt = [
    { image_id: 1, category_id: 1, bbox: [0, 0, 5, 5], score: 0.5 },
    { image_id: 99, category_id: 1, bbox: [0, 0, 5, 5], score: 0.5 },
  ];
  const e = assertThrowsError(() => loadDetections(g, dt, { file: "r.json" }), DetectionError);
  assertEquals([e.index, e.kind], [1, "unknown-image"]);
  assert(e.message.includes("entry 1") && e.message.includes("99") && e.message.startsWith("r.json"), e.message);
});

Deno.test("loadDetections() names the entry of an unknown category id", () => {
  const g = loadGroundTruth(fixture("tiny").gt);
  const dt = [{ image_id: 1, category_id: 7, bbox: [0, 0, 5, 5], score: 0.5 }];
  const e = assertThrowsError(() => loadDetections(g, dt), DetectionError);
  assertEquals([e.index, e.kind], [0, "unknown-category"]);
  assert(e instanceof InputError);
});

Deno.test("loadDetections() rejects malformed entries by index", () => {
  const g = loadGroundTruth(fixture("tiny").gt);
  const good = { image_id: 1, category_id: 1, bbox: [0, 0, 5, 5], score: 0.5 };
  const bad: unknown[] = [
    { ...good, bbox: [0, 0, 5] },
    { ...good, bbox: [0, 0, "5", 5] },
    { ...good, score: "high" },
    { image_id: 1, bbox: [0, 0, 5, 5], score: 1 },
    null,
  ];
  for (const b of bad) {
    const e = assertThrowsError(() => loadDetections(g, [good, good, b]), DetectionError);
    assertEquals([e.index, e.kind], [2, "malformed"], JSON.stringify(b));
  }
  assertThrowsError(() => loadDetections(g, { detections: [] }), InputError);
});

Deno.test("loadGroundTruth() rejects annotations without area or with duplicate ids, naming them", () => {
  const base = { images: [{ id: 1 }], categories: [{ id: 1 }] };
  const ann = { id: 1, image_id: 1, category_id: 1, bbox: [0, 0, 5, 5], area: 25, iscrowd: 0 };
  const e1 = assertThrowsError(
    () => loadGroundTruth({ ...base, annotations: [{ ...ann, area: undefined }] }),
    InputError,
  );
  assert(e1.message.includes("annotations[0]"));
  const e2 = assertThrowsError(() => loadGroundTruth({ ...base, annotations: [ann, ann] }), InputError);
  assert(e2.message.includes("annotations[1]"));
});

Deno.test("bboxIou() divides by the detection's area for crowd regions", () => {
  const dt = new Float64Array([0, 0, 10, 10, 50, 50, 10, 10]); // [2, 4]
  const gt = new Float64Array([0, 0, 20, 20, 0, 0, 20, 20]); // [2, 4]: the second is a crowd region
  const iou = bboxIou(dt, gt, new Uint8Array([0, 1]));
  assertEquals([...iou], [100 / 400, 100 / 100, 0, 0]);
});

Deno.test("a crowd region matches several detections, which are then ignored", () => {
  const gt = loadGroundTruth({
    images: [{ id: 1 }],
    categories: [{ id: 1 }],
    annotations: [{ id: 1, image_id: 1, category_id: 1, bbox: [0, 0, 100, 100], area: 10000, iscrowd: 1 }],
  });
  const dts = [0, 20, 40].map((x) => ({ image_id: 1, category_id: 1, bbox: [x, x, 30, 30], score: 0.9 }));
  const ev = evaluate(gt, loadDetections(gt, dts));
  const T = ev.params.iouThrs.length, A = ev.params.areaRng.length;
  for (let d = 0; d < 3; d++) assertEquals(ev.outcome[(d * A + 0) * T + 0], 2, `detection ${d}`);
  assertEquals(ev.npig[0], 0);
});

Deno.test("evaluate() keeps at most maxDets[-1] detections per image and category", () => {
  const { gt, dt } = fixture("many_dets");
  const g = loadGroundTruth(gt);
  const ev = evaluate(g, loadDetections(g, dt));
  let cut = false;
  for (let c = 0; c + 1 < ev.keptStart.length; c++) {
    const n = ev.keptStart[c + 1] - ev.keptStart[c];
    assert(n <= 100);
    if (n === 100) cut = true;
  }
  assert(cut, "the fixture must exceed maxDets somewhere");
});

Deno.test("meanAboveMinusOne() equals np.mean bit for bit, pairwise in 8192-element chunks", () => {
  const ref = (readJson("params.json") as {
    np_mean_of_x_j: { by_n: Record<string, { np_mean: number; naive: number }> };
  }).np_mean_of_x_j.by_n;
  let differsFromNaive = 0;
  for (const [n, v] of Object.entries(ref)) {
    const xs = Array.from({ length: Number(n) }, (_, j) => ((j * 7919) % 1000) / 1000 + 1 / 3);
    assertEquals(meanAboveMinusOne([-1, ...xs, -1]), v.np_mean, `n=${n}`);
    if (v.np_mean !== v.naive) differsFromNaive++;
  }
  assert(differsFromNaive >= 3, "the reference must tell pairwise from naive summation");
});

Deno.test("accumulate() leaves -1 for categories without ground truth and formatPerClassTable() shows them", () => {
  const { gt, dt } = fixture("missing");
  const res = cocoEvaluate(gt, dt);
  const names = res.perClass.filter((r) => r.ap === -1).map((r) => r.name);
  assertEquals(names, ["bird", "fish"]);
  const table = formatPerClassTable(res.perClass);
  assert(table.includes("-1.000") && table.includes("no ground truth"), table);
  assert(accumulate(evaluate(res.gt, loadDetections(res.gt, dt))).recall.some((r) => r === -1));
});

Deno.test("deno task eval prints pycocotools' summary and writes eval_stats.json", async () => {
  const { ref } = fixture("crowd");
  const dir = await Deno.makeTempDir();
  try {
    const cmd = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL("../tasks/eval.ts", import.meta.url).pathname,
        "--gt",
        new URL("crowd_gt.json", FIXTURES).pathname,
        "--detections",
        new URL("crowd_dt.json", FIXTURES).pathname,
        "--stats-json",
        `${dir}/s.json`,
        "--out",
        `${dir}/out`,
      ],
      stdout: "piped",
      stderr: "piped",
    });
    const out = await cmd.output();
    const stdout = new TextDecoder().decode(out.stdout);
    assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
    assert(stdout.startsWith(ref.summary!), stdout);
    assert(stdout.includes("person") && stdout.includes("AP50"), stdout);
    const a = JSON.parse(await Deno.readTextFile(`${dir}/s.json`));
    const b = JSON.parse(await Deno.readTextFile(`${dir}/out/eval_stats.json`));
    assertEquals(a, b);
    assertEquals(a.stats, ref.stats);
    assertClose([a.per_class.person.ap], [ref.per_class!.person.ap], 1e-9, "person");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("deno task eval names the offending entry of a bad results file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(
      `${dir}/dt.json`,
      JSON.stringify([{ image_id: 12345, category_id: 1, bbox: [0, 0, 1, 1], score: 1 }]),
    );
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL("../tasks/eval.ts", import.meta.url).pathname,
        "--gt",
        new URL("tiny_gt.json", FIXTURES).pathname,
        "--detections",
        `${dir}/dt.json`,
        "--out",
        `${dir}/out`,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assertEquals(out.code, 1);
    assert(stderr.includes("entry 0") && stderr.includes("12345") && !stderr.includes("    at "), stderr);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
