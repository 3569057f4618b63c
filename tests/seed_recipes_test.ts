/**
 * The seeds' own path, end to end, for every model config, as a newcomer runs
 * it: `deno task download ssd_datasets` (from a loopback mirror serving an
 * archive with the tutorial's exact layout), `train` 2 steps from MindRecord,
 * `eval` of the checkpoint, `export`, `eval` of the ONNX model. Every command
 * runs as its own process from a fresh working folder, with the configs' own
 * paths (`runs/data/...`).
 *
 * The archive is built here: `datasets/MindRecord_COCO/ssd.mindrecord{0,1}` and
 * `ssd_eval.mindrecord{0,1}` (with their `.db` indexes) and
 * `datasets/annotations/instances_val2017.json`, from COCO-format data with
 * COCO's real, non-contiguous category ids (all 80 listed) and a crowd box.
 */
import assert from "node:assert";
import * as fs from "node:fs";
import * as path from "node:path";
import sharp from "sharp";
import { createZip } from "../lib/archive.ts";
import { cocoClassMap } from "../lib/class_maps.ts";
import { readCheckpoint } from "../lib/checkpoint.ts";
import { convert } from "../lib/convert.ts";
import { evalDataConfig, evaluateCheckpoint, evaluateOnnx } from "../lib/eval_stage.ts";
import { storedConfig } from "../lib/ssd_config.ts";

const REPO = path.resolve(".");

/** One image: size and boxes (x, y, w, h, COCO category id, iscrowd). */
type Shape = [number, number, number, number, number, number];
const TRAIN: [number, number, Shape[]][] = [
  [96, 72, [[10, 8, 40, 30, 1, 0], [60, 30, 25, 30, 3, 0]]],
  [80, 80, [[5, 5, 60, 50, 18, 0]]],
  [72, 96, [[20, 30, 30, 40, 90, 0], [0, 0, 20, 20, 1, 1]]],
  [96, 64, [[30, 10, 50, 40, 3, 0]]],
  [64, 64, [[8, 8, 40, 40, 1, 0]]],
  [90, 70, [[12, 12, 30, 30, 62, 0], [50, 20, 30, 40, 18, 0]]],
];
const VAL: [number, number, Shape[]][] = [
  [96, 72, [[12, 10, 40, 30, 1, 0], [55, 25, 30, 30, 3, 0], [0, 40, 30, 30, 1, 1]]],
  [80, 64, [[10, 5, 50, 50, 18, 0]]],
  // In the json but not in ssd_eval: the real instances_val2017.json has 5000 images, the archive's eval set 9.
  [64, 64, [[4, 4, 30, 30, 90, 0]]],
];

async function jpeg(w: number, h: number, shapes: Shape[], seed: number): Promise<Uint8Array> {
  const px = new Uint8Array(w * h * 3);
  for (let i = 0; i < px.length; i++) px[i] = (i * 37 + seed * 91) % 97 + 60;
  shapes.forEach(([x, y, bw, bh], k) => {
    for (let yy = y; yy < Math.min(h, y + bh); yy++) {
      for (let xx = x; xx < Math.min(w, x + bw); xx++) {
        px.set([200 * (k % 2), 80 + 40 * k, 220 - 60 * k], (yy * w + xx) * 3);
      }
    }
  });
  return new Uint8Array(await sharp(px, { raw: { width: w, height: h, channels: 3 } }).jpeg().toBuffer());
}

/** A COCO instances json (all 80 categories, real ids) and its images, written into `dir`. */
async function cocoSplit(dir: string, name: string, images: [number, number, Shape[]][], firstId: number) {
  const imgDir = path.join(dir, name);
  fs.mkdirSync(imgDir, { recursive: true });
  const map = cocoClassMap();
  const json = {
    info: { description: "seed recipes fixture" },
    images: [] as Record<string, unknown>[],
    annotations: [] as Record<string, unknown>[],
    categories: map.names.slice(1).map((n, i) => ({ id: map.categoryIds[i + 1], name: n, supercategory: "x" })),
  };
  let annId = firstId * 100;
  for (const [k, [w, h, shapes]] of images.entries()) {
    // COCO-style sparse image ids.
    const id = firstId + 7 * k;
    const file = `${String(id).padStart(12, "0")}.jpg`;
    fs.writeFileSync(path.join(imgDir, file), await jpeg(w, h, shapes, id));
    json.images.push({ id, file_name: file, width: w, height: h });
    for (const [x, y, bw, bh, cat, crowd] of shapes) {
      json.annotations.push({
        id: annId++,
        image_id: id,
        category_id: cat,
        bbox: [x, y, bw, bh],
        area: bw * bh,
        iscrowd: crowd,
        segmentation: crowd ? { counts: [0, bw * bh], size: [h, w] } : [[x, y, x + bw, y, x + bw, y + bh]],
      });
    }
  }
  const jsonFile = path.join(dir, `instances_${name}.json`);
  fs.writeFileSync(jsonFile, JSON.stringify(json));
  return { jsonFile, imgDir, json };
}

/** ssd_datasets.zip with the tutorial's layout; returns its bytes and the eval set's image ids. */
async function tutorialArchive(work: string): Promise<{ zip: Uint8Array; evalIds: number[] }> {
  const src = path.join(work, "src");
  const train = await cocoSplit(src, "train2017", TRAIN, 9);
  const val = await cocoSplit(src, "val2017", VAL, 139);
  // The eval MindRecord holds the first two val images only.
  const evalJson = { ...val.json, images: val.json.images.slice(0, 2) };
  evalJson.annotations = val.json.annotations.filter((a) => evalJson.images.some((im) => im.id === a.image_id));
  const evalFile = path.join(src, "eval_subset.json");
  fs.writeFileSync(evalFile, JSON.stringify(evalJson));
  const mr = path.join(src, "MindRecord_COCO");
  const small = { shards: 2, pageSize: 1 << 16, headerSize: 1 << 14, quiet: true } as const;
  await convert({ from: "coco", to: "mindrecord", input: train.jsonFile, images: train.imgDir, out: mr, ...small });
  await convert({
    from: "coco",
    to: "mindrecord",
    input: evalFile,
    images: val.imgDir,
    out: mr,
    prefix: "ssd_eval.mindrecord",
    ...small,
  });
  const entries = [
    { name: "datasets/", type: "dir" as const },
    { name: "datasets/annotations/", type: "dir" as const },
    { name: "datasets/annotations/instances_val2017.json", data: fs.readFileSync(val.jsonFile) },
    { name: "datasets/MindRecord_COCO/", type: "dir" as const },
    ...fs.readdirSync(mr).sort().map((f) => ({
      name: `datasets/MindRecord_COCO/${f}`,
      data: new Uint8Array(fs.readFileSync(path.join(mr, f))),
    })),
  ];
  return { zip: createZip(entries), evalIds: evalJson.images.map((im) => im.id as number) };
}

/** Runs a task script as its own process in `cwd`; returns its output, throws with stderr on failure. */
async function task(cwd: string, script: string, args: string[]): Promise<string> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--config", path.join(REPO, "deno.json"), path.join(REPO, "tasks", script), ...args],
    cwd,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output(); // not outputSync: the loopback server answers from this process's event loop
  const out = new TextDecoder().decode(r.stdout), err = new TextDecoder().decode(r.stderr);
  if (!r.success) throw new Error(`${script} ${args.join(" ")} failed (exit ${r.code}):\n${err.slice(-3000)}`);
  return out + err;
}

const stats = (file: string): number[] => JSON.parse(fs.readFileSync(file, "utf8")).stats;

/** The model configs, with what a machine this size needs to change (batch sizes of 8-device recipes). */
const CONFIGS: [string, string[]][] = [
  ["ssd300_vgg16", []], // the tutorial, exactly as shipped
  ["ssd_vgg16", ["--train.batch_size=2"]],
  ["ssd300_mobilenetv2", ["--train.batch_size=2"]],
  ["ssd_mobilenetv1_300", ["--train.batch_size=2"]],
  ["ssd_mobilenetv1_fpn", ["--train.batch_size=1"]],
  ["ssd_resnet50_fpn", ["--train.batch_size=1"]],
];

Deno.test("every model config runs the seeds' path: download ssd_datasets -> train -> eval -> export -> eval ONNX", async (t) => {
  const work = Deno.makeTempDirSync({ prefix: "seed_recipes_" });
  const { zip, evalIds } = await tutorialArchive(work);
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    (req) =>
      new URL(req.url).pathname === "/mirror/ssd_datasets.zip"
        ? new Response(zip as Uint8Array<ArrayBuffer>, { headers: { "content-type": "application/zip" } })
        : new Response("not found", { status: 404 }),
  );
  const cwd = path.join(work, "user");
  fs.mkdirSync(cwd);
  try {
    const url = `http://127.0.0.1:${server.addr.port}/mirror/ssd_datasets.zip`;
    const log = await task(cwd, "download.ts", ["ssd_datasets", "--url", url]);
    assert.match(log, /extracted to runs\/data\/ssd_datasets/);
    const data = path.join(cwd, "runs/data/ssd_datasets/datasets");
    assert.ok(fs.existsSync(path.join(data, "MindRecord_COCO/ssd.mindrecord0")));
    const cocoIds = new Set(cocoClassMap().categoryIds.slice(1));

    for (const [name, extra] of CONFIGS) {
      await t.step(name, async () => {
        const run = path.join("runs", name);
        // The ModelZoo configs read the layout `deno task convert` writes; point them at the archive's.
        const zoo = name === "ssd300_vgg16" ? [] : [
          "--data.root=runs/data/ssd_datasets/datasets",
          "--data.val.annotations=annotations/instances_val2017.json",
        ];
        const cfg = path.join(REPO, "configs", `${name}.yaml`);
        // An untrained model's scores must be spread for the checkpoint-vs-ONNX comparison to measure the
        // export rather than tie-breaking: TruncatedNormal(0.02) leaves every score within 1e-4 of 0.5, where
        // the two runtimes' rounding reorders the near-ties COCOeval's top 100 per image picks from. He init
        // spreads them; a small lr keeps 2 steps from saturating them; one box per class and image leaves
        // COCOeval all of them, well apart.
        const init = [
          "--model.init=he_normal",
          "--train.lr=0.0001",
          "--train.lr_init=0.0001",
          "--postprocess.max_boxes=1",
        ];
        // The run also saves its weights as MindSpore's .ckpt (OUT/mindspore/), checked below.
        const train = ["--config", cfg, "--out", run, "--max-steps", "2", "--train.save_mindspore=true"];
        await task(cwd, "train.ts", [...train, ...init, ...zoo, ...extra]);
        const ckpt = path.join(run, "checkpoints", "step-2.ckpt");
        assert.ok(fs.existsSync(path.join(cwd, ckpt)), `${name}: ${ckpt}`);
        // No --data: the val split of the run's own config (MindRecord scored against the json by image id).
        await task(cwd, "eval.ts", ["--checkpoint", ckpt, "--out", path.join(run, "eval")]);
        await task(cwd, "export.ts", ["--checkpoint", ckpt, "--out", path.join(run, "export")]);
        await task(cwd, "eval.ts", [
          "--model",
          path.join(run, "export", "model.onnx"),
          "--out",
          path.join(run, "eval_onnx"),
        ]);

        const a = stats(path.join(cwd, run, "eval", "eval_stats.json"));
        const b = stats(path.join(cwd, run, "eval_onnx", "eval_stats.json"));
        assert.strictEqual(a.length, 12);
        a.forEach((v, i) => assert.ok(Math.abs(v - b[i]) <= 1e-3, `${name}: stat ${i}: checkpoint ${v}, ONNX ${b[i]}`));
        const dets = JSON.parse(fs.readFileSync(path.join(cwd, run, "eval", "detections.json"), "utf8")) as {
          image_id: number;
          category_id: number;
          bbox: number[];
        }[];
        assert.ok(dets.length > 0, `${name}: no detections`);
        // Detections carry the json's ids: COCO category ids (not labels 1..80), the eval set's image ids.
        assert.ok(dets.every((d) => cocoIds.has(d.category_id)), `${name}: a category id is not COCO's`);
        assert.ok(dets.some((d) => d.category_id > 80), `${name}: no category id above 80 (labels used as ids?)`);
        assert.deepStrictEqual([...new Set(dets.map((d) => d.image_id))].sort((x, y) => x - y), evalIds);

        // An untrained model scores ~0 against the real boxes, which compares nothing. Score both runtimes
        // against ground truth made from every third checkpoint detection as well: stats well above 0, which a
        // shifted box, class or image in the export would change.
        const gt = JSON.parse(fs.readFileSync(path.join(data, "annotations", "instances_val2017.json"), "utf8"));
        gt.annotations = dets.filter((_, i) => i % 3 === 0).map((d, i) => ({
          id: i + 1,
          image_id: d.image_id,
          category_id: d.category_id,
          bbox: d.bbox,
          area: d.bbox[2] * d.bbox[3],
          iscrowd: 0,
        }));
        const own = path.join(cwd, run, "own_gt.json");
        fs.writeFileSync(own, JSON.stringify(gt));
        const stored = storedConfig(readCheckpoint(path.join(cwd, ckpt)).header.config).data;
        const data2 = evalDataConfig(stored, {
          overrides: { "data.root": path.resolve(cwd, stored.root), "data.val.annotations": own },
        });
        const c = (await evaluateCheckpoint(path.join(cwd, ckpt), { data: data2, quiet: true })).result.stats;
        const o = (await evaluateOnnx(path.join(cwd, run, "export", "model.onnx"), { data: data2, quiet: true }))
          .result.stats;
        assert.ok(c[1] > 0.2, `${name}: AP50 ${c[1]} against its own detections`);
        c.forEach((v, i) =>
          assert.ok(Math.abs(v - o[i]) <= 1e-3, `${name}: own-GT stat ${i}: ckpt ${v}, ONNX ${o[i]}`)
        );

        // The same weights through MindSpore's format: names, layouts and the Momentum state go out and come back
        // exactly, so the eval is the same to the last digit. The MindSpore file names no model: the run's config.
        const msCkpt = path.join(cwd, run, "mindspore", "step-2.ckpt");
        const runConfig = path.join(cwd, run, "config.yaml");
        // In a child process, as a user runs it (and so this process's wasm heap, which only grows, holds one
        // model's eval per config).
        const dataFlags = [`--data.root=${path.resolve(cwd, stored.root)}`, `--data.val.annotations=${own}`];
        const msEval = path.join(run, "eval_mindspore");
        await task(cwd, "eval.ts", ["--checkpoint", msCkpt, "--config", runConfig, ...dataFlags, "--out", msEval]);
        const m = stats(path.join(cwd, msEval, "eval_stats.json"));
        assert.deepStrictEqual(m, c, `${name}: the MindSpore checkpoint evaluates differently`);
        // Exported from the MindSpore file, the ONNX model scores as the one exported from the workbench's.
        const msExport = path.join(cwd, run, "export_mindspore");
        await task(cwd, "export.ts", ["--checkpoint", msCkpt, "--config", runConfig, "--out", msExport]);
        const msOnnxEval = path.join(run, "eval_onnx_mindspore");
        await task(cwd, "eval.ts", ["--model", path.join(msExport, "model.onnx"), ...dataFlags, "--out", msOnnxEval]);
        const mo = stats(path.join(cwd, msOnnxEval, "eval_stats.json"));
        assert.deepStrictEqual(mo, o, `${name}: the ONNX model exported from the MindSpore checkpoint differs`);
      });
    }
  } finally {
    await server.shutdown();
  }
});
