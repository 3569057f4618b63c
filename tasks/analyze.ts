/**
 * `deno task analyze`: error analysis of a detector: TIDE (exactly as tidecv),
 * the confusion matrix, the PR breakdown per object size and the worst images.
 *
 * @module
 */
import * as path from "node:path";
import { intFlag, parseTaskArgs, runTask, type TaskSpec } from "./cli.ts";
import { analyzeDetections } from "../lib/analysis_stage.ts";
import { InputError } from "../lib/errors.ts";
import { evaluateCheckpoint, evaluateOnnx } from "../lib/eval_stage.ts";
import { readJsonFile } from "../lib/json_text.ts";

const spec: TaskSpec = {
  name: "analyze",
  summary: "Error analysis of detections: TIDE (tidecv's numbers), confusion matrix, PR breakdown by object size and " +
    "the worst images, as DIR/analysis.json and pictures.",
  usage: "--gt instances.json --detections results.json --out DIR [--images DIR] | --checkpoint CKPT [--config CFG] " +
    "| --model DIR/model.onnx  [--data FILE [--images DIR]] [--data.KEY=VALUE ...] [--worst K]",
  overrides: true,
  flags: {
    gt: { type: "string", arg: "FILE", help: "COCO instances JSON (images, annotations, categories)" },
    detections: { type: "string", arg: "FILE", help: "COCO results JSON: [{image_id, category_id, bbox, score}, ...]" },
    checkpoint: { type: "string", arg: "FILE", help: "run this checkpoint on the eval data first (as deno task eval)" },
    model: { type: "string", arg: "FILE", help: "run this exported ONNX model on the eval data first" },
    config: { type: "string", arg: "FILE", help: "run config of --checkpoint (required for a MindSpore .ckpt)" },
    data: {
      type: "string",
      arg: "FILE",
      help: "eval split: COCO json or MindRecord shard (default: the run's val split)",
    },
    images: {
      type: "string",
      arg: "DIR",
      help: "image folder of the ground truth; the worst images are drawn from it",
    },
    out: { type: "string", arg: "DIR", default: "runs/analyze", help: "output folder" },
    worst: { type: "string", arg: "K", default: "8", help: "how many worst images to list and draw" },
    "score-thr": { type: "string", arg: "S", default: "0.3", help: "confusion matrix score threshold (mmdetection's)" },
    "iou-thr": { type: "string", arg: "T", default: "0.5", help: "confusion matrix true-positive IoU (mmdetection's)" },
    "batch-size": {
      type: "string",
      arg: "N",
      default: "8",
      help: "images per forward pass (with --checkpoint/--model)",
    },
  },
  epilog: [
    "Writes DIR/analysis.json:",
    '  {"tide": {"ap50", "main": {"Cls", "Loc", "Both", "Dupe", "Bkg", "Miss"}, "special": {"FalsePos", "FalseNeg"},',
    '   "counts"}, "confusion_matrix": {"classes": [..., "background"], "counts"}, "per_class": {name: {ap, ap50, ap75}},',
    '   "pr_breakdown": {area: {C75, C50, Loc, Sim, Oth, BG, FN}}, "worst_images": [{image_id, file_name, ap, ...}]}',
    "and DIR/tide_summary.png, confusion_matrix.png, pr_curves.png, worst_images.png (with images).",
    "TIDE uses tidecv's defaults (IoU 0.5 for a match, 0.1 for background, 100 detections per image) and its units",
    "(percentage points). Confusion matrix rows are ground truth, columns predictions (mmdetection's layout).",
    "",
    "Example:",
    "  deno task analyze --gt runs/demo/data/annotations/instances_val.json --detections runs/demo/eval/detections.json \\",
    "    --images runs/demo/data/images/val --out runs/demo/analysis",
  ].join("\n"),
};

function numberFlag(v: unknown, name: string, lo: number, hi: number): number {
  const n = Number(v);
  if (typeof v !== "string" || !Number.isFinite(n) || n < lo || n > hi) {
    throw new InputError(`option --${name} expects a number in [${lo}, ${hi}], got ${JSON.stringify(v)}`);
  }
  return n;
}

runTask(async () => {
  const { values, overrides } = parseTaskArgs(spec);
  const out = values.out as string;
  const worst = intFlag(values, "worst")!;
  if (worst < 0) throw new InputError("option --worst expects K >= 0");
  const confusion = {
    scoreThr: numberFlag(values["score-thr"], "score-thr", 0, 1),
    tpIouThr: numberFlag(values["iou-thr"], "iou-thr", 0, 1),
  };
  let gtJson: unknown, dtJson: unknown, gtFile: string | undefined, dtFile: string | undefined;
  let imageDir = values.images as string | undefined;
  const modelRun = values.checkpoint ?? values.model;
  if (modelRun !== undefined) {
    if (values.gt !== undefined || values.detections !== undefined) {
      throw new InputError("give either --gt and --detections, or --checkpoint / --model; see --help");
    }
    const batchSize = intFlag(values, "batch-size")!;
    if (batchSize < 1) throw new InputError("option --batch-size expects N >= 1");
    const data = { file: values.data as string | undefined, images: values.images as string | undefined, overrides };
    const run = values.checkpoint !== undefined
      ? await evaluateCheckpoint(values.checkpoint as string, {
        configFile: values.config as string | undefined,
        overrides,
        dataOptions: data,
        batchSize,
      })
      : await evaluateOnnx(values.model as string, {
        configFile: values.config as string | undefined,
        dataOptions: data,
        batchSize,
      });
    gtJson = run.groundTruth;
    dtJson = run.detections.map(({ image_id, category_id, bbox, score }) => ({ image_id, category_id, bbox, score }));
    imageDir ??= run.imageDir ?? undefined;
  } else {
    if (values.gt === undefined || values.detections === undefined) {
      throw new InputError("--gt FILE and --detections FILE are required (or --checkpoint / --model); see --help");
    }
    gtFile = values.gt as string;
    dtFile = values.detections as string;
    [gtJson, dtJson] = await Promise.all([readJsonFile(gtFile, "ground truth"), readJsonFile(dtFile, "detections")]);
  }
  const r = await analyzeDetections(gtJson, dtJson, { out, imageDir, worst, confusion, gtFile, dtFile });
  console.log(r.summary);
  console.log(`wrote ${r.files.map((f) => path.relative(".", f)).join(", ")}`);
});
