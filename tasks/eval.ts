/**
 * `deno task eval`: COCO bbox evaluation of a results file against a COCO
 * instances file, with pycocotools' numbers and printout.
 *
 * @module
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { intFlag, parseTaskArgs, runTask, type TaskSpec } from "./cli.ts";
import { InputError } from "../lib/errors.ts";
import { readJsonFile } from "../lib/json_text.ts";
import { writeJsonAtomic } from "../lib/fs_atomic.ts";
import { Progress } from "../lib/progress.ts";
import {
  type CocoEvalResult,
  cocoEvaluate,
  evalStatsJson,
  formatPerClassTable,
  formatSummary,
} from "../lib/coco_eval.ts";
import { evaluateCheckpoint, evaluateOnnx } from "../lib/eval_stage.ts";
import { type BackendName, BACKENDS } from "../lib/engine/mod.ts";
import { onnxProviderOf } from "./cli.ts";

const spec: TaskSpec = {
  name: "eval",
  summary: "Scores detections with COCO bbox metrics (a faithful port of pycocotools' COCOeval): prints the " +
    "12-line summary and a per-class AP table, and writes eval_stats.json.",
  usage: "--gt instances.json --detections results.json | --checkpoint CKPT [--config CFG] " +
    "| --model DIR/model.onnx  [--data FILE [--images DIR]] [--data.KEY=VALUE ...] [--stats-json FILE] [--out DIR]",
  overrides: true,
  flags: {
    gt: { type: "string", arg: "FILE", help: "COCO instances JSON (images, annotations, categories)" },
    detections: {
      type: "string",
      arg: "FILE",
      help: "COCO results JSON: [{image_id, category_id, bbox: [x, y, w, h], score}, ...]",
    },
    "stats-json": { type: "string", arg: "FILE", help: "also write the stats JSON here" },
    out: { type: "string", arg: "DIR", default: "runs/eval", help: "output folder; receives eval_stats.json" },
    checkpoint: {
      type: "string",
      arg: "FILE",
      help: "evaluate a trained checkpoint (checkpoint mode): the workbench's, or MindSpore's with --config",
    },
    config: {
      type: "string",
      arg: "FILE",
      help: "run config (default: the one stored in a workbench checkpoint, required for a MindSpore one; with " +
        "--model, the config.yaml beside it)",
    },
    model: { type: "string", arg: "FILE", help: "evaluate an exported ONNX model (model mode)" },
    data: {
      type: "string",
      arg: "FILE",
      help: "eval split: COCO json or MindRecord shard (default: the val split of the run's config)",
    },
    images: { type: "string", arg: "DIR", help: "image folder of a COCO --data file" },
    "batch-size": { type: "string", arg: "N", default: "8", help: "images per forward pass" },
    backend: {
      type: "string",
      arg: "NAME",
      help: "with --checkpoint: wasm, onnxruntime, webgpu, cpu or tensorflow (default: the config's); with --model: " +
        "onnxruntime (CPU, default) or webgpu (onnxruntime's WebGPU provider)",
    },
  },
  epilog: [
    "With --checkpoint or --model, the eval data is the val split of the run's config (the checkpoint's, or the",
    "config.yaml stored with the exported model), changed by --data.KEY=VALUE overrides: --data.root=DIR relocates",
    "every relative path; --data.val.annotations=FILE scores a MindRecord split against a COCO json (by image id).",
    "They write OUT/detections.json (COCO results with the json's image and category ids) and OUT/eval_stats.json.",
    "",
    "The printed summary and the 12 stats match pycocotools (COCO().loadRes + COCOeval(..., 'bbox')).",
    'eval_stats.json: {"stats": [12 numbers], "per_class": {"<name>": {"ap", "ap50", "ap75"}}};',
    "-1 marks settings without ground truth, as in pycocotools.",
    "",
    "Example:",
    "  deno task eval --gt data/coco/annotations/instances_val2017.json --detections runs/infer/results.json",
  ].join("\n"),
};

/** Prints the summary and per-class table and writes the stats JSON. */
async function report(res: CocoEvalResult, out: string, statsJson: string | undefined): Promise<void> {
  if (res.gt.skipped > 0) {
    console.error(
      `note: ${res.gt.skipped} annotations name an image or category missing from the ground truth; skipped`,
    );
  }
  if (res.numDetections === 0) {
    console.error(
      "note: there are no detections; pycocotools itself would raise on an empty list. " +
        "Reporting 0 for settings with ground truth and -1 where there is none.",
    );
  }
  console.log(formatSummary(res.stats));
  console.log("");
  console.log("Per-category AP (area=all, maxDets=100):");
  console.log(formatPerClassTable(res.perClass));
  const doc = evalStatsJson(res.stats, res.perClass);
  await writeJsonAtomic(`${out}/eval_stats.json`, doc);
  if (statsJson) await writeJsonAtomic(statsJson, doc);
  console.error(`wrote ${out}/eval_stats.json${statsJson ? ` and ${statsJson}` : ""}`);
}

/** Results-file mode: score `detections` against `gt`. */
async function evalResultsFile(gtFile: string, dtFile: string, statsJson: string | undefined, out: string) {
  const gtJson = await readJsonFile(gtFile, "ground truth");
  const dtJson = await readJsonFile(dtFile, "detections");
  const bar = new Progress("evaluate", 0, { unit: "cat" });
  const res = cocoEvaluate(gtJson, dtJson, {
    gtFile,
    dtFile,
    onProgress: (done, total) => {
      bar.setTotal(total);
      bar.update(done);
    },
  });
  bar.done();
  await report(res, out, statsJson);
}

if (import.meta.main) {
  await runTask(async () => {
    const { values, overrides } = parseTaskArgs(spec);
    const out = values.out as string, statsJson = values["stats-json"] as string | undefined;
    const batchSize = intFlag(values, "batch-size")!;
    if (batchSize < 1) throw new InputError(`option --batch-size must be at least 1, got ${batchSize}`);
    const dataOpts = {
      file: values.data as string | undefined,
      images: values.images as string | undefined,
      overrides,
    };
    if (values.model !== undefined) {
      const model = values.model as string;
      // The config.yaml that `deno task export` wrote beside the model (else the copy in its metadata).
      const beside = path.join(path.dirname(model), "config.yaml");
      const configFile = (values.config as string | undefined) ?? (fs.existsSync(beside) ? beside : undefined);
      const provider = onnxProviderOf(values.backend as string | undefined);
      const run = await evaluateOnnx(model, { configFile, dataOptions: dataOpts, batchSize, provider });
      await writeJsonAtomic(`${out}/detections.json`, run.detections);
      console.error(`${run.images} images, ${run.detections.length} detections -> ${out}/detections.json`);
      await report(run.result, out, statsJson);
      return;
    }
    if (values.checkpoint !== undefined) {
      const backend = values.backend as string | undefined;
      if (backend !== undefined && !(BACKENDS as readonly string[]).includes(backend)) {
        throw new InputError(`unknown --backend "${backend}"; choose one of ${BACKENDS.join(", ")}`);
      }
      const run = await evaluateCheckpoint(values.checkpoint as string, {
        configFile: values.config as string | undefined,
        overrides,
        dataOptions: dataOpts,
        batchSize,
        backend: backend as BackendName | undefined,
      });
      await writeJsonAtomic(`${out}/detections.json`, run.detections);
      console.error(`${run.images} images, ${run.detections.length} detections -> ${out}/detections.json`);
      await report(run.result, out, statsJson);
      return;
    }
    const gt = values.gt, detections = values.detections;
    if (typeof gt !== "string" || typeof detections !== "string") {
      throw new InputError("give --gt FILE --detections FILE, or --checkpoint CKPT; see --help");
    }
    await evalResultsFile(gt, detections, statsJson, out);
  });
}
