import { deepStrictEqual as assertEquals, ok as assert, rejects as assertRejects } from "node:assert";
import * as fs from "node:fs";
import sharp from "sharp";
import { setBackend } from "../lib/engine/backend.ts";
import type { DetectionRecord } from "../lib/detection_record.ts";
import { detectRecords, type NamedDetection } from "../lib/evaluate.ts";
import { initParams, type ParamSpec } from "../lib/graph.ts";
import { inferImages, listImages } from "../lib/infer.ts";
import { encodeOnnx, exportModel, graphToOnnx, paramValuesOf } from "../lib/onnx_export.ts";
import { detectWithOnnx, loadOnnxModel } from "../lib/onnx_infer.ts";
import { createRng } from "../lib/rng.ts";
import { anchorsOf, buildModel, loadSsdConfig, scaleFactorsOf } from "../lib/ssd_config.ts";
import { makeScene, renderScene, type SynthConfig } from "../lib/synth.ts";

await setBackend("wasm");

// The demo model with seeded random weights (plumbing, not accuracy), exported once for every test.
const cfg = loadSsdConfig("configs/demo.yaml");
// A threshold random weights pass now and then, so the pictures and detections.json have content.
cfg.postprocess.min_score = 0.3;
const anchors = anchorsOf(cfg);
const graph = buildModel(cfg, anchors);
const rng = createRng(21);
const uniform = (lo: number, hi: number) => (p: ParamSpec) =>
  Float32Array.from({ length: p.shape[0] }, () => lo + (hi - lo) * rng());
const params = initParams(graph, rng, {
  scheme: "he_normal",
  overrides: { ".gamma": uniform(0.5, 1), ".moving_mean": uniform(-0.2, 0.2), ".moving_variance": uniform(0.5, 1.5) },
});
const tmp = Deno.makeTempDirSync({ prefix: "onnx_infer_test_" });
const exported = await exportModel(graph, paramValuesOf(params), cfg, {
  classNames: cfg.model.class_names!,
  anchors,
  scaleFactors: scaleFactorsOf(cfg),
}, { out: `${tmp}/export` });

// Four synthetic scenes of different sizes (160 and 200 px), as JPEG and PNG.
const synth: SynthConfig = {
  image_size: 160,
  splits: { train: 1, val: 1 },
  classes: ["rectangle", "ellipse", "triangle"],
  objects_per_image: [1, 4],
  object_side: [0.15, 0.6],
  aspect_ratio: [0.5, 2],
  min_visible: 0.5,
  max_covered: 0.5,
  jpeg_quality: 90,
};
const images = `${tmp}/images`;
fs.mkdirSync(images);
const sceneRng = createRng(4);
for (const [i, name] of ["c.jpg", "a.jpg", "b.png", "d.jpg"].entries()) {
  const jpg = await renderScene(makeScene(sceneRng, { ...synth, image_size: i % 2 ? 200 : 160 }));
  const bytes = name.endsWith(".png") ? new Uint8Array(await sharp(jpg).png().toBuffer()) : jpg;
  fs.writeFileSync(`${images}/${name}`, bytes);
}
fs.writeFileSync(`${images}/readme.txt`, "not an image, and not named like one\n");
const quiet = { quiet: true, log: () => {} };

Deno.test("infer writes COCO detections with file names and one annotated picture per image", async () => {
  const out = `${tmp}/out1`;
  const r = await inferImages({ model: exported.model, input: images, out, batchSize: 3, threads: 1, ...quiet });
  assertEquals(r.images, 4);
  assertEquals(fs.readdirSync(out).sort(), ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "detections.json"]);
  const dets = JSON.parse(fs.readFileSync(`${out}/detections.json`, "utf8")) as NamedDetection[];
  assertEquals(dets, r.detections);
  assert(dets.length > 0, "random weights at min_score 0.3 still detect something");
  const idOf: Record<string, number> = { "a.jpg": 1, "b.png": 2, "c.jpg": 3, "d.jpg": 4 }; // sorted order, 1-based
  for (const d of dets) {
    assertEquals(Object.keys(d).sort(), ["bbox", "category_id", "file_name", "image_id", "score"]);
    assertEquals(d.image_id, idOf[d.file_name]);
    assert([1, 2, 3].includes(Number(d.category_id)), `label ${d.category_id}`);
    assert(d.score > 0.3 && d.score <= 1);
    const side = d.file_name === "a.jpg" || d.file_name === "d.jpg" ? 200 : 160;
    const [x, y, w, h] = d.bbox;
    assert(
      x >= 0 && y >= 0 && w >= 0 && h >= 0 && x + w <= side + 0.01 && y + h <= side + 0.01,
      `${d.bbox} in ${side}`,
    );
  }
  // Small images are drawn enlarged to 480 px so labels stay readable.
  const meta = await sharp(`${out}/a.jpg`).metadata();
  assertEquals([meta.format, meta.width, meta.height], ["jpeg", 480, 480]);
});

Deno.test("infer takes image and category ids from --gt by file name and class name", async () => {
  const gt = `${tmp}/gt.json`;
  fs.writeFileSync(
    gt,
    JSON.stringify({
      images: ["a.jpg", "b.png", "c.jpg", "d.jpg"].map((f, i) => ({ id: 100 + i, file_name: `val/${f}` })),
      categories: [{ id: 7, name: "triangle" }, { id: 8, name: "ellipse" }, { id: 9, name: "rectangle" }],
      annotations: [],
    }),
  );
  const r = await inferImages({
    model: exported.model,
    input: `${images}/*.jpg`,
    out: `${tmp}/out2`,
    gt,
    draw: false,
    ...quiet,
  });
  assertEquals(r.images, 3);
  const plain = JSON.parse(fs.readFileSync(`${tmp}/out1/detections.json`, "utf8")) as { file_name: string }[];
  const want = plain.filter((d) => d.file_name.endsWith(".jpg"));
  const cat: Record<number, number> = { 1: 9, 2: 8, 3: 7 };
  const ids: Record<string, number> = { "a.jpg": 100, "c.jpg": 102, "d.jpg": 103 };
  assertEquals(
    r.detections,
    want.map((d) => ({
      ...d,
      image_id: ids[d.file_name],
      category_id: cat[(d as unknown as { category_id: number }).category_id],
    })),
  );
  assertEquals(fs.readdirSync(`${tmp}/out2`), ["detections.json"]);
});

Deno.test("a corrupt image stops infer with its name; --skip-bad reports it and processes the rest", async () => {
  const dir = `${tmp}/bad`;
  fs.mkdirSync(dir);
  for (const f of ["a.jpg", "b.png"]) fs.copyFileSync(`${images}/${f}`, `${dir}/${f}`);
  fs.copyFileSync("tests/fixtures/infer/truncated.jpg", `${dir}/b2_truncated.jpg`);
  fs.copyFileSync("tests/fixtures/infer/not_an_image.jpg", `${dir}/c_not_an_image.jpg`);
  await assertRejects(
    () => inferImages({ model: exported.model, input: dir, out: `${tmp}/out3`, ...quiet }),
    (e: Error) => e.message.includes(`${dir}/b2_truncated.jpg`) && /premature end|decode/.test(e.message),
  );
  assert(!fs.existsSync(`${tmp}/out3/detections.json`));
  const skipped: string[] = [];
  const r = await inferImages({
    model: exported.model,
    input: dir,
    out: `${tmp}/out4`,
    skipBad: true,
    batchSize: 2,
    quiet: true,
    log: (s) => skipped.push(s),
  });
  assertEquals(r.images, 2);
  assertEquals(r.skipped.map((s) => s.file), [`${dir}/b2_truncated.jpg`, `${dir}/c_not_an_image.jpg`]);
  assert(skipped.length === 2 && skipped[1].includes("c_not_an_image.jpg"), skipped.join("\n"));
  assertEquals(fs.readdirSync(`${tmp}/out4`).sort(), ["a.jpg", "b.jpg", "detections.json"]);
  // Positions count every image, skipped ones too, so ids do not shift when a file goes bad.
  const ids = new Set(
    JSON.parse(fs.readFileSync(`${tmp}/out4/detections.json`, "utf8")).map((d: { image_id: number }) => d.image_id),
  );
  assert([...ids].every((id) => id === 1 || id === 2));
});

Deno.test("a config whose input size does not fit the model is refused with a clear message", async () => {
  const text = fs.readFileSync(exported.config, "utf8").replace("input_size: 160", "input_size: 96");
  fs.writeFileSync(`${tmp}/wrong.yaml`, text);
  await assertRejects(
    () => loadOnnxModel(exported.model, { config: `${tmp}/wrong.yaml` }),
    (e: Error) =>
      /input "images" has shape \[N, 160, 160, 3\] but the config .* expects \[N, 96, 96, 3\]/.test(e.message),
  );
});

Deno.test("a model without config metadata needs --config, and says so", async () => {
  const bare = encodeOnnx(graphToOnnx(graph, paramValuesOf(params), { scoreActivation: cfg.model.score_activation }));
  fs.writeFileSync(`${tmp}/bare.onnx`, bare);
  await assertRejects(
    () => loadOnnxModel(`${tmp}/bare.onnx`),
    (e: Error) =>
      e.message.startsWith(`${tmp}/bare.onnx`) && /no "ssd_workbench_config" metadata.*--config/.test(e.message),
  );
  // With the config beside it, the same model loads.
  const m = await loadOnnxModel(`${tmp}/bare.onnx`, { config: exported.config, threads: 1 });
  assertEquals(m.anchors.count, 2152);
  await m.session.release();
});

Deno.test("detectWithOnnx gives what detectRecords gives for the checkpoint", async () => {
  const records: DetectionRecord[] = [];
  for (const [i, f] of listImages(images).entries()) {
    const meta = await sharp(f).metadata();
    records.push({
      imgId: 10 + i,
      file: f,
      width: meta.width!,
      height: meta.height!,
      boxes: new Float64Array(0),
      labels: new Int32Array(0),
      iscrowd: new Uint8Array(0),
    });
  }
  const o = { batchSize: 3, labelToCategory: (l: number) => l + 100 };
  const mine = await detectWithOnnx(exported.model, records, { ...o, threads: 1 });
  const ref = await detectRecords(graph, params, records, {
    ...o,
    inputSize: 160,
    anchors,
    scaleFactors: scaleFactorsOf(cfg),
    augment: cfg.augment,
    postprocess: cfg.postprocess,
    activation: cfg.model.score_activation,
  });
  assert(ref.length > 0);
  assertEquals(mine.length, ref.length);
  // One to one, in any order among near-equal scores (the two runtimes round them differently, so ties may swap).
  const unused = new Set(ref.keys());
  for (const d of mine) {
    const i = [...unused].find((j) => {
      const r = ref[j];
      return r.image_id === d.image_id && r.category_id === d.category_id && r.file_name === d.file_name &&
        Math.abs(d.score - r.score) <= 2e-5 && d.bbox.every((v, k) => Math.abs(v - r.bbox[k]) <= 0.02);
    });
    assert(i !== undefined, `no reference detection for ${JSON.stringify(d)}`);
    unused.delete(i);
  }
});

Deno.test("deno task infer runs from the command line and fails in one line on a bad image", async () => {
  const run = (args: string[]) =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "tasks/infer.ts", ...args],
      stdout: "piped",
      stderr: "piped",
    })
      .output();
  const ok = await run([
    "--model",
    exported.model,
    "--input",
    `${images}/a.jpg`,
    "--out",
    `${tmp}/cli`,
    "--min-score",
    "0.4",
  ]);
  assertEquals(ok.code, 0, new TextDecoder().decode(ok.stderr));
  const dets = JSON.parse(fs.readFileSync(`${tmp}/cli/detections.json`, "utf8")) as { score: number }[];
  assert(dets.every((d) => d.score > 0.4));
  const bad = await run([
    "--model",
    exported.model,
    "--input",
    "tests/fixtures/infer/not_an_image.jpg",
    "--out",
    `${tmp}/cli2`,
  ]);
  assertEquals(bad.code, 1);
  const err = new TextDecoder().decode(bad.stderr).trim();
  assert(/^error: tests\/fixtures\/infer\/not_an_image\.jpg: cannot decode image/.test(err), err);
  assert(!err.includes("    at "), "no stack trace");
});
