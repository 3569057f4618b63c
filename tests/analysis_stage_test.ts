// lib/analysis_stage.ts and `deno task analyze`: the analysis of a results file, its JSON and pictures, the text
// summary, and the errors bad input gets.
import assert from "node:assert";
import * as fs from "node:fs";
import * as path from "node:path";
import sharp from "sharp";
import { analyzeDetections } from "../lib/analysis_stage.ts";
import { confusionMatrix, loadErrorAnalysis } from "../lib/error_analysis.ts";
import { tideEvaluate } from "../lib/tide.ts";

// Two images, two classes. Image 1: a cat found (TP), a dog called a cat (Cls). Image 2: a dog found far off (IoU
// 0.24, between TIDE's 0.1 and 0.5: Loc), a detection on nothing (Bkg), and a cat nobody found (Miss).
const GT = {
  images: [{ id: 1, file_name: "a.png", width: 100, height: 100 }, {
    id: 2,
    file_name: "b.png",
    width: 100,
    height: 100,
  }],
  categories: [{ id: 1, name: "cat", supercategory: "animal" }, { id: 2, name: "dog", supercategory: "animal" }],
  annotations: [
    { id: 1, image_id: 1, category_id: 1, bbox: [10, 10, 30, 30], area: 900, iscrowd: 0 },
    { id: 2, image_id: 1, category_id: 2, bbox: [50, 50, 40, 40], area: 1600, iscrowd: 0 },
    { id: 3, image_id: 2, category_id: 2, bbox: [10, 10, 40, 40], area: 1600, iscrowd: 0 },
    { id: 4, image_id: 2, category_id: 1, bbox: [60, 60, 30, 30], area: 900, iscrowd: 0 },
  ],
};
const DETS = [
  { image_id: 1, category_id: 1, bbox: [10, 10, 30, 30], score: 0.9 }, // TP
  { image_id: 1, category_id: 1, bbox: [50, 50, 40, 40], score: 0.8 }, // the dog called a cat: Cls
  { image_id: 2, category_id: 2, bbox: [25, 25, 40, 40], score: 0.7 }, // IoU 625/2575 = 0.24 with the dog: Loc
  { image_id: 2, category_id: 2, bbox: [0, 70, 20, 20], score: 0.6 }, // on nothing: Bkg
];

Deno.test("analyzeDetections() writes analysis.json and the pictures, with tidecv's and mmdetection's numbers", async () => {
  const out = Deno.makeTempDirSync({ prefix: "analysis_" });
  const images = path.join(out, "images");
  fs.mkdirSync(images);
  for (const f of ["a.png", "b.png"]) {
    await sharp({ create: { width: 100, height: 100, channels: 3, background: "#808080" } }).png().toFile(
      path.join(images, f),
    );
  }
  const r = await analyzeDetections(GT, DETS, { out, imageDir: images, worst: 2 });
  const json = JSON.parse(fs.readFileSync(path.join(out, "analysis.json"), "utf8"));
  assert.deepStrictEqual(Object.keys(json).sort(), [
    "confusion_matrix",
    "per_class",
    "pr_breakdown",
    "tide",
    "worst_images",
  ]);
  // The JSON carries the ported functions' numbers unchanged (each is tested against its reference on its own).
  const tide = tideEvaluate(GT, DETS);
  assert.deepStrictEqual(json.tide, { ap50: tide.ap50, main: tide.main, special: tide.special, counts: tide.counts });
  assert.deepStrictEqual(json.tide.counts, { Cls: 1, Loc: 1, Both: 0, Dupe: 0, Bkg: 1, Miss: 1 });
  // Rows ground truth (cat, dog, background), columns prediction: the cat found, the dog called a cat, the dog
  // detection at IoU 0.24 and the one on nothing both background rows, the cat of image 2 and the dog of image 2
  // missed (no detection of their class at IoU >= 0.5).
  assert.deepStrictEqual(json.confusion_matrix.classes, ["cat", "dog", "background"]);
  assert.deepStrictEqual(json.confusion_matrix.counts, [[1, 0, 1], [1, 0, 2], [0, 2, 0]]);
  assert.deepStrictEqual(json.confusion_matrix.counts, confusionMatrix(loadErrorAnalysis(GT, DETS)).counts);
  assert.deepStrictEqual(Object.keys(json.pr_breakdown), ["all", "small", "medium", "large"]);
  assert.deepStrictEqual(Object.keys(json.per_class), ["cat", "dog"]);
  // Image 2 has nothing right: AP 0, first; image 1 finds one of two (AP 0.5 at every IoU).
  assert.deepStrictEqual(json.worst_images.map((w: { file_name: string; ap: number }) => [w.file_name, w.ap]), [
    ["b.png", 0],
    ["a.png", 0.5],
  ]);
  for (const f of ["tide_summary.png", "confusion_matrix.png", "pr_curves.png", "worst_images.png"]) {
    const meta = await sharp(path.join(out, f)).metadata();
    assert.ok(meta.width! > 300 && meta.height! > 200, f);
  }
  assert.match(r.summary, /^TIDE \(AP50 [\d.]+\): dAP /);
  assert.match(r.summary, /dog as cat: 1/);
  assert.match(r.summary, /worst images: b\.png \(AP 0\.000\), a\.png \(AP 0\.500\)/);
  fs.rmSync(out, { recursive: true });
});

async function analyze(args: string[]): Promise<{ ok: boolean; text: string }> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "tasks/analyze.ts", ...args],
    env: { NO_COLOR: "1" },
  }).output();
  return { ok: r.success, text: new TextDecoder().decode(r.stdout) + new TextDecoder().decode(r.stderr) };
}

Deno.test("deno task analyze: files in, summary out; a detection on an unknown category is named", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "analyze_task_" });
  const gt = path.join(dir, "gt.json"), dt = path.join(dir, "dt.json"), bad = path.join(dir, "bad.json");
  fs.writeFileSync(gt, JSON.stringify(GT));
  fs.writeFileSync(dt, JSON.stringify(DETS));
  fs.writeFileSync(bad, JSON.stringify([...DETS, { image_id: 2, category_id: 9, bbox: [1, 1, 5, 5], score: 0.5 }]));
  const ok = await analyze(["--gt", gt, "--detections", dt, "--out", path.join(dir, "out")]);
  assert.ok(ok.ok, ok.text);
  assert.match(ok.text, /TIDE \(AP50/);
  assert.ok(fs.existsSync(path.join(dir, "out", "analysis.json")));
  assert.ok(!fs.existsSync(path.join(dir, "out", "worst_images.png")), "no images given: no gallery");
  const e = await analyze(["--gt", gt, "--detections", bad, "--out", path.join(dir, "out2")]);
  assert.ok(!e.ok);
  assert.match(e.text, /bad\.json/);
  assert.match(e.text, /category.*9|9.*category/);
  const m = await analyze(["--detections", dt]);
  assert.ok(!m.ok && /--gt FILE and --detections FILE are required/.test(m.text), m.text);
  fs.rmSync(dir, { recursive: true });
});
