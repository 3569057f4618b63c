/**
 * The analysis stage: which errors a detector makes, not only its mAP. From a
 * COCO instances file and a COCO results list it computes the TIDE breakdown
 * (`tide.ts`, exactly as tidecv), mmdetection's confusion matrix, the
 * coco_error_analysis PR curves per object size and the images with the lowest
 * AP (`error_analysis.ts`), and writes them as `analysis.json` with pictures.
 * `deno task analyze` and the demo call {@linkcode analyzeDetections}.
 *
 * @module
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { confusionPng, panelGrid, tideSummaryPng } from "./analysis_plots.ts";
import { accumulate, evalStatsJson, evaluate, perClassAp, summarize } from "./coco_eval.ts";
import { type DrawBox, drawBoxes, imageGrid } from "./draw.ts";
import {
  confusionMatrix,
  type ConfusionMatrixOptions,
  ERROR_TYPES,
  loadErrorAnalysis,
  perImageAp,
  prBreakdown,
  worstImages,
} from "./error_analysis.ts";
import { writeFileAtomic, writeJsonAtomic } from "./fs_atomic.ts";
import { linePlotPng } from "./plot.ts";
import { TIDE_DETECTION_TYPES, tideEvaluate, type TideOptions, type TideResult } from "./tide.ts";

/** `DIR/analysis.json`. */
export interface AnalysisJson {
  /** tidecv's numbers, in percentage points. */
  tide: {
    ap50: number;
    main: TideResult["main"];
    special: TideResult["special"];
    counts: TideResult["counts"];
  };
  /** Rows ground truth, columns prediction; the last of each is background (mmdetection's layout). */
  confusion_matrix: { classes: string[]; counts: number[][]; score_thr: number; tp_iou_thr: number };
  /** COCO AP, AP50 and AP75 of each class (pycocotools' numbers). */
  per_class: Record<string, { ap: number; ap50: number; ap75: number }>;
  /** The coco_error_analysis curves' AP (C75, C50, Loc, Sim, Oth, BG, FN) by area: all, small, medium, large. */
  pr_breakdown: Record<string, Record<string, number>>;
  /** The `k` images with the lowest per-image AP (mmdetection's analyze_results), lowest first. */
  worst_images: { image_id: number | string; file_name: string | null; ap: number; gts: number; detections: number }[];
}

/** Options of {@linkcode analyzeDetections}. */
export interface AnalyzeOptions {
  /** Output folder: analysis.json and the pictures. */
  out: string;
  /** Folder of the ground truth's `file_name`s: with it, the worst images are drawn. */
  imageDir?: string;
  /** How many worst images to list and draw (default 8). */
  worst?: number;
  /** Confusion matrix thresholds (mmdetection's defaults: score 0.3, IoU 0.5). */
  confusion?: ConfusionMatrixOptions;
  tide?: TideOptions;
  /** Detections drawn in the gallery from this score up (default: the confusion matrix's threshold). */
  drawScore?: number;
  /** File names for error messages. */
  gtFile?: string;
  dtFile?: string;
}

/** What {@linkcode analyzeDetections} wrote. */
export interface AnalysisRun {
  json: AnalysisJson;
  /** Files written, analysis.json first. */
  files: string[];
  /** A short text summary. */
  summary: string;
}

type Det = { image_id: number | string; category_id: number | string; bbox: number[]; score: number };
type Gt = {
  images: { id: number | string; file_name?: string }[];
  annotations: { image_id: number | string; category_id: number | string; bbox: number[] }[];
  categories: { id: number | string; name?: string }[];
};

/**
 * Analyses `dtJson` (a COCO results list) against `gtJson` (COCO instances)
 * and writes `OUT/analysis.json`, `tide_summary.png`, `confusion_matrix.png`,
 * `pr_curves.png` and, with `imageDir`, `worst_images.png`. Bad input gets the
 * eval task's errors: a detection on an unknown image or category names it.
 */
export async function analyzeDetections(gtJson: unknown, dtJson: unknown, o: AnalyzeOptions): Promise<AnalysisRun> {
  const files = { gtFile: o.gtFile, dtFile: o.dtFile };
  const data = loadErrorAnalysis(gtJson, dtJson, files);
  const tide = tideEvaluate(gtJson, dtJson, { ...files, ...o.tide });
  // COCOeval on the index already built (the same numbers as cocoEvaluate, without loading the files again).
  const accumulated = accumulate(evaluate(data.gt, data.dt));
  const coco = { stats: summarize(accumulated), perClass: perClassAp(accumulated, data.gt) };
  const cm = confusionMatrix(data, o.confusion);
  const pr = prBreakdown(data);
  const k = o.worst ?? 8;
  const worst = worstImages(perImageAp(data), k);
  const gt = gtJson as Gt, dets = dtJson as Det[];
  const fileOf = new Map(gt.images.map((im) => [String(im.id), im.file_name ?? null]));
  const countBy = (items: { image_id: number | string }[]) => {
    const m = new Map<string, number>();
    for (const it of items) m.set(String(it.image_id), (m.get(String(it.image_id)) ?? 0) + 1);
    return m;
  };
  const gtCount = countBy(gt.annotations), dtCount = countBy(dets);
  const json: AnalysisJson = {
    tide: { ap50: tide.ap50, main: tide.main, special: tide.special, counts: tide.counts },
    confusion_matrix: {
      classes: cm.classes,
      counts: cm.counts,
      score_thr: o.confusion?.scoreThr ?? 0.3,
      tp_iou_thr: o.confusion?.tpIouThr ?? 0.5,
    },
    per_class: evalStatsJson(coco.stats, coco.perClass).per_class,
    pr_breakdown: Object.fromEntries(pr.overall.map((c) => [c.area, { ...c.ap }])),
    worst_images: worst.map((w) => ({
      image_id: w.imageId,
      file_name: fileOf.get(String(w.imageId)) ?? null,
      ap: w.ap,
      gts: gtCount.get(String(w.imageId)) ?? 0,
      detections: dtCount.get(String(w.imageId)) ?? 0,
    })),
  };
  fs.mkdirSync(o.out, { recursive: true });
  const written = [path.join(o.out, "analysis.json")];
  await writeJsonAtomic(written[0], json);
  const put = async (name: string, png: Uint8Array) => {
    await writeFileAtomic(path.join(o.out, name), png);
    written.push(path.join(o.out, name));
  };
  await put("tide_summary.png", await tideSummaryPng(json.tide));
  await put("confusion_matrix.png", await confusionPng(cm.classes, cm.counts));
  const panels = await Promise.all(pr.overall.map((c) =>
    linePlotPng(
      ERROR_TYPES.map((t) => ({
        name: `${t} [${c.ap[t].toFixed(3)}]`,
        x: Array.from(pr.recThrs),
        y: Array.from(c.precision[t]),
      })),
      {
        title: `PR breakdown, ${c.area} objects`,
        xLabel: "recall",
        yLabel: "precision",
        xRange: [0, 1],
        yRange: [0, 1],
      },
    )
  ));
  await put("pr_curves.png", await panelGrid(panels, 2));
  if (o.imageDir) {
    const gallery = await worstGallery(
      gt,
      dets,
      tide,
      json.worst_images,
      o.imageDir,
      o.drawScore ?? json.confusion_matrix.score_thr,
    );
    if (gallery) await put("worst_images.png", gallery);
  }
  return { json, files: written, summary: formatAnalysis(json) };
}

/** Palette entries (lib/draw.ts) of the gallery: ground truth green, true positives blue, errors red. */
const GT_COLOUR = 4, TP_COLOUR = 0, ERROR_COLOUR = 2;

/**
 * The worst images with their ground truth (green, "gt <class>") and their
 * detections from `minScore` up, each labelled with its TIDE type (blue TP,
 * red Cls, Loc, Both, Dupe, Bkg). Images not found under `imageDir` are
 * skipped; null when none is found.
 */
async function worstGallery(
  gt: Gt,
  dets: Det[],
  tide: TideResult,
  worst: AnalysisJson["worst_images"],
  imageDir: string,
  minScore: number,
): Promise<Uint8Array | null> {
  const name = new Map(gt.categories.map((c) => [String(c.id), c.name ?? String(c.id)]));
  const tiles: Uint8Array[] = [];
  for (const w of worst) {
    const file = w.file_name ? path.join(imageDir, w.file_name) : null;
    if (!file || !fs.existsSync(file)) continue;
    const id = String(w.image_id);
    const boxes: DrawBox[] = [];
    for (const a of gt.annotations) {
      if (String(a.image_id) !== id) continue;
      const [x, y, bw, bh] = a.bbox;
      boxes.push({ box: [x, y, x + bw, y + bh], label: `gt ${name.get(String(a.category_id))}`, colour: GT_COLOUR });
    }
    dets.forEach((d, i) => {
      const type = TIDE_DETECTION_TYPES[tide.detections.type[i]];
      if (String(d.image_id) !== id || d.score < minScore || type === "Cut") return;
      const [x, y, bw, bh] = d.bbox;
      boxes.push({
        box: [x, y, x + bw, y + bh],
        label: `${name.get(String(d.category_id))} ${d.score.toFixed(2)} ${type}`,
        colour: type === "TP" ? TP_COLOUR : ERROR_COLOUR,
      });
    });
    tiles.push(await drawBoxes(new Uint8Array(fs.readFileSync(file)), boxes, { format: "png", upscaleTo: 480 }));
  }
  return tiles.length ? await imageGrid(tiles, { cols: Math.min(4, tiles.length), cell: 480 }) : null;
}

/**
 * A short text summary of an analysis: the TIDE errors by size, the most
 * frequent confusions, the PR breakdown of all objects and the worst images.
 *
 * @example
 * ```ts
 * const json = {
 *   tide: { ap50: 60, main: { Cls: 1, Loc: 7, Both: 0.5, Dupe: 0, Bkg: 3, Miss: 2 }, special: { FalsePos: 9, FalseNeg: 12 },
 *     counts: { Cls: 4, Loc: 20, Both: 1, Dupe: 0, Bkg: 30, Miss: 9 } },
 *   confusion_matrix: { classes: ["cat", "dog", "background"], counts: [[5, 2, 1], [0, 6, 0], [3, 1, 0]], score_thr: 0.3, tp_iou_thr: 0.5 },
 *   per_class: {}, pr_breakdown: {}, worst_images: [],
 * };
 * const text = formatAnalysis(json);
 * if (!text.includes("Loc 7.00") || !text.includes("cat as dog: 2")) throw new Error(text);
 * ```
 */
export function formatAnalysis(json: AnalysisJson): string {
  const t = json.tide;
  const main = Object.entries(t.main).sort((a, b) => b[1] - a[1]);
  const lines = [
    `TIDE (AP50 ${t.ap50.toFixed(2)}): dAP ${main.map(([k, v]) => `${k} ${v.toFixed(2)}`).join(", ")}; ` +
    `FalsePos ${t.special.FalsePos.toFixed(2)}, FalseNeg ${t.special.FalseNeg.toFixed(2)}`,
  ];
  const { classes, counts } = json.confusion_matrix;
  const n = classes.length - 1;
  const confusions: [string, number][] = [];
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      if (i !== j && counts[i][j] > 0) confusions.push([`${classes[i]} as ${classes[j]}`, counts[i][j]]);
    }
  }
  confusions.sort((a, b) => b[1] - a[1]);
  const missed = classes.slice(0, n).reduce((a, _, i) => a + counts[i][n], 0);
  const background = counts[n]?.slice(0, n).reduce((a, b) => a + b, 0) ?? 0;
  lines.push(
    `confusions (score >= ${json.confusion_matrix.score_thr}): ` +
      (confusions.length ? confusions.slice(0, 5).map(([k, v]) => `${k}: ${v}`).join(", ") : "none") +
      `; ${missed} ground truths missed, ${background} detections on background`,
  );
  const all = json.pr_breakdown.all;
  if (all) {
    lines.push(`PR breakdown, all objects: ${Object.entries(all).map(([k, v]) => `${k} ${v.toFixed(3)}`).join(", ")}`);
  }
  if (json.worst_images.length) {
    lines.push(
      `worst images: ${
        json.worst_images.map((w) => `${w.file_name ?? w.image_id} (AP ${w.ap.toFixed(3)})`).join(", ")
      }`,
    );
  }
  return lines.join("\n");
}
