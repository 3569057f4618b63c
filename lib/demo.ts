/**
 * The demo: every stage of the workbench on the embedded synthetic dataset,
 * each through the same lib function its own task calls, then a report.
 *
 * @module
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { augmentPreview } from "./augment_preview.ts";
import { evalStatsJson, formatPerClassTable, formatSummary } from "./coco_eval.ts";
import { loadConfig } from "./config.ts";
import { convert } from "./convert.ts";
import { loadSplit } from "./dataset.ts";
import { drawBoxes, imageGrid } from "./draw.ts";
import { evaluateCheckpoint } from "./eval_stage.ts";
import { analyzeDetections } from "./analysis_stage.ts";
import { exportCheckpoint } from "./export_stage.ts";
import { inferImages } from "./infer.ts";
import type { NamedDetection } from "./evaluate.ts";
import { writeFileAtomic, writeJsonAtomic } from "./fs_atomic.ts";
import { loadSsdConfig } from "./ssd_config.ts";
import { previewScenes, type SynthConfig, synthSpec, writeSynthDataset } from "./synth.ts";
import { train } from "./train.ts";

/** Options of {@linkcode runDemo}. */
export interface DemoOptions {
  out: string;
  seed: number;
  /** Training config (configs/demo.yaml). */
  config: string;
  /** `--key=value` overrides of the training config. */
  overrides?: Record<string, string>;
  /** Synthetic dataset config (configs/synth.yaml), with overrides (tests shrink it). */
  synthConfig?: string;
  synthOverrides?: Record<string, string>;
  quiet?: boolean;
}

/** What the demo produced. */
export interface DemoResult {
  stats: number[];
  checkpoint: string;
  report: string;
  seconds: Record<string, number>;
}

const since = (t0: number) => (performance.now() - t0) / 1000;

/** Draws detections (above `minScore`) over their images: a grid PNG for the report. */
export async function detectionGrid(
  detections: NamedDetection[],
  imageDir: string,
  classNames: Map<number, string>,
  o: { count?: number; minScore?: number } = {},
): Promise<Uint8Array> {
  const files = [...new Set(detections.map((d) => d.file_name))].sort().slice(0, o.count ?? 8);
  const pics: Uint8Array[] = [];
  for (const f of files) {
    const dets = detections.filter((d) => d.file_name === f && d.score >= (o.minScore ?? 0.5));
    const boxes = dets.map((d) => ({
      box: [d.bbox[0], d.bbox[1], d.bbox[0] + d.bbox[2], d.bbox[1] + d.bbox[3]],
      label: `${classNames.get(Number(d.category_id)) ?? d.category_id} ${d.score.toFixed(2)}`,
      colour: Number(d.category_id),
    }));
    pics.push(await drawBoxes(fs.readFileSync(path.join(imageDir, f)), boxes, { upscaleTo: 320 }));
  }
  return imageGrid(pics, { cols: 4, cell: 320 });
}

/** Runs the demo. */
export async function runDemo(o: DemoOptions): Promise<DemoResult> {
  const out = o.out;
  const log = (s: string) => o.quiet || console.log(s);
  const seconds: Record<string, number> = {};
  const tAll = performance.now();

  // 1) synth
  let t0 = performance.now();
  const dataDir = path.join(out, "data");
  log(`[1/6] synth: the synthetic dataset -> ${dataDir}`);
  const synthCfg = loadConfig<SynthConfig>(o.synthConfig ?? "configs/synth.yaml", synthSpec, o.synthOverrides ?? {});
  const synth = await writeSynthDataset(dataDir, synthCfg, { seed: o.seed, quiet: o.quiet });
  await writeFileAtomic(path.join(out, "synth_preview.png"), await previewScenes(synthCfg, { seed: o.seed, count: 8 }));
  seconds.synth = since(t0);
  log(`      ${synth.images} images, ${synth.objects} objects (${seconds.synth.toFixed(0)} s)`);

  // 2) convert to MindRecord (the tutorial trains from MindRecord)
  t0 = performance.now();
  const mrDir = path.join(out, "mindrecord");
  log(`[2/6] convert: COCO -> MindRecord (SSD schema, 8 shards) -> ${mrDir}`);
  const conv = await convert({
    from: "coco",
    to: "mindrecord",
    input: path.join(dataDir, "annotations", "instances_train.json"),
    images: path.join(dataDir, "images", "train"),
    out: mrDir,
    shards: 8,
    quiet: o.quiet,
  });
  seconds.convert = since(t0);
  log(
    `      ${conv.images} images, ${conv.boxes} boxes in ${conv.files.filter((f) => !f.endsWith(".db")).length} shards`,
  );

  // 3) train
  t0 = performance.now();
  const trainDir = path.join(out, "train");
  const cfg = loadSsdConfig(o.config, {
    seed: String(o.seed),
    "data.root": out,
    ...o.overrides,
  });
  log(
    `[3/6] train: ${cfg.model.arch}, ${cfg.train.epochs} epochs of batch ${cfg.train.batch_size} on ${cfg.backend} -> ${trainDir}`,
  );
  await writeFileAtomic(
    path.join(out, "augment_preview.png"),
    await augmentPreview(
      loadSplit(cfg.data, "val", { classNames: cfg.model.class_names }).records.slice(0, 8),
      cfg.model.class_names ?? [],
      cfg.model.input_size,
      cfg.augment,
      { seed: o.seed, count: 8 },
    ),
  );
  const run = await train(cfg, { outDir: trainDir, quiet: o.quiet });
  seconds.train = since(t0);
  const losses = run.losses;
  const first = losses.slice(0, 20), last = losses.slice(-20);
  const mean = (xs: { loss: number }[]) => xs.reduce((a, x) => a + x.loss, 0) / Math.max(1, xs.length);
  log(
    `      loss ${mean(first).toFixed(3)} -> ${mean(last).toFixed(3)} (mean of first/last 20 steps), ${
      seconds.train.toFixed(0)
    } s`,
  );

  // 4) eval
  t0 = performance.now();
  log(`[4/6] eval: ${run.checkpoint} on ${path.join(cfg.data.root, cfg.data.val.path ?? "")}`);
  const ev = await evaluateCheckpoint(run.checkpoint!, { quiet: o.quiet });
  const doc = evalStatsJson(ev.result.stats, ev.result.perClass);
  await writeJsonAtomic(path.join(out, "eval_stats.json"), doc);
  await writeJsonAtomic(path.join(out, "eval", "eval_stats.json"), doc);
  await writeJsonAtomic(path.join(out, "eval", "detections.json"), ev.detections);
  const summary = formatSummary(ev.result.stats);
  log(summary);
  // Which errors remain: TIDE, the confusion matrix, PR breakdown and worst images (deno task analyze).
  const analysis = await analyzeDetections(
    ev.groundTruth,
    ev.detections.map(({ image_id, category_id, bbox, score }) => ({ image_id, category_id, bbox, score })),
    { out: path.join(out, "analysis"), imageDir: path.join(dataDir, "images", "val") },
  );
  log(analysis.summary);
  seconds.eval = since(t0);

  // 5) export to ONNX
  t0 = performance.now();
  const exportDir = path.join(out, "export");
  log(`[5/6] export: ONNX model and its config -> ${exportDir}`);
  const exported = await exportCheckpoint(run.checkpoint!, { out: exportDir });
  seconds.export = since(t0);
  log(`      ${exported.model} (${(exported.bytes / 1024).toFixed(0)} KiB), ${exported.config}`);

  // 6) infer with onnxruntime on val images: detections.json and annotated pictures
  t0 = performance.now();
  const inferDir = path.join(out, "infer");
  log(`[6/6] infer: onnxruntime on the val images -> ${inferDir}`);
  const inferred = await inferImages({
    model: exported.model,
    input: path.join(dataDir, "images", "val"),
    out: inferDir,
    gt: path.join(dataDir, "annotations", "instances_val.json"),
    minScore: 0.5,
    quiet: o.quiet,
  });
  seconds.infer = since(t0);
  log(`      ${inferred.images} images, ${inferred.detections.length} detections with score >= 0.5`);
  const grid = await detectionGrid(inferred.detections, path.join(dataDir, "images", "val"), ev.categoryNames, {
    count: 8,
    minScore: 0.5,
  });
  await writeFileAtomic(path.join(out, "detections.png"), grid);

  // Report
  const reportFile = path.join(out, "report.md");
  await writeFileAtomic(
    reportFile,
    renderReport({
      cfg,
      seconds,
      summary,
      perClass: formatPerClassTable(ev.result.perClass),
      analysis: analysis.summary,
      losses: { first: mean(first), last: mean(last), steps: losses.length },
      synth,
      total: since(tAll),
    }),
  );
  seconds.total = since(tAll);
  log("");
  log(`demo finished in ${seconds.total.toFixed(0)} s`);
  log(
    `  mAP@[.5:.95] ${ev.result.stats[0].toFixed(3)}   mAP@0.5 ${ev.result.stats[1].toFixed(3)}   mAP@0.75 ${
      ev.result.stats[2].toFixed(3)
    }`,
  );
  log(
    `  report: ${reportFile}   pictures: ${path.join(out, "detections.png")}, ${path.join(trainDir, "loss_curve.png")}`,
  );
  log(
    `  go further: deno task train --config configs/demo.yaml --train.epochs=${2 * cfg.train.epochs}; ` +
      "notebooks/ walk through each stage",
  );
  return { stats: ev.result.stats, checkpoint: run.checkpoint!, report: reportFile, seconds };
}

function renderReport(r: {
  cfg: ReturnType<typeof loadSsdConfig>;
  seconds: Record<string, number>;
  summary: string;
  perClass: string;
  analysis: string;
  losses: { first: number; last: number; steps: number };
  synth: { images: number; objects: number };
  total: number;
}): string {
  const s = r.seconds;
  return [
    "# ssd-workbench demo report",
    "",
    `Model \`${r.cfg.model.arch}\` (${r.cfg.model.input_size} px input) trained for ${r.cfg.train.epochs} epochs ` +
    `(${r.losses.steps} steps of batch ${r.cfg.train.batch_size}) on the \`${r.cfg.backend}\` backend, on ` +
    `${r.synth.images} synthetic images with ${r.synth.objects} objects. Wall time ${r.total.toFixed(0)} s ` +
    `(synth ${s.synth.toFixed(0)} s, convert ${s.convert.toFixed(0)} s, train ${s.train.toFixed(0)} s, ` +
    `eval ${s.eval.toFixed(0)} s, export ${s.export.toFixed(0)} s, infer ${s.infer.toFixed(0)} s).`,
    "",
    "## Loss",
    "",
    `Mean loss over the first 20 steps ${r.losses.first.toFixed(3)}, over the last 20 steps ${
      r.losses.last.toFixed(3)
    }.`,
    "",
    "![loss curve](train/loss_curve.png)",
    "",
    "## COCO evaluation (held-out synthetic val)",
    "",
    "```",
    r.summary,
    "```",
    "",
    "```",
    r.perClass,
    "```",
    "",
    "## Error analysis",
    "",
    "What the remaining errors are: TIDE's breakdown (the AP50 each error type costs, in percentage points, as tidecv",
    "computes it) and the confusion matrix at score 0.3 (mmdetection's). `analysis/` also has the PR breakdown per",
    "object size (`pr_curves.png`), the worst images with every error labelled (`worst_images.png`) and",
    "`analysis.json`; `deno task analyze` writes the same for any model.",
    "",
    "```",
    r.analysis,
    "```",
    "",
    "![TIDE summary](analysis/tide_summary.png)",
    "",
    "![confusion matrix](analysis/confusion_matrix.png)",
    "",
    "## Detections (score >= 0.5) on val images, from the exported ONNX model in onnxruntime",
    "",
    "![detections](detections.png)",
    "",
    "Every val image, annotated, is in `infer/`; `infer/detections.json` holds the COCO results.",
    "",
    "## What the network was trained on",
    "",
    "![augmented samples](augment_preview.png)",
    "",
  ].join("\n");
}
