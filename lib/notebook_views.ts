/**
 * Small views for the teaching notebooks (notebooks/01-06): tables as
 * markdown, the default boxes of one cell per feature map drawn over an image,
 * which default boxes a ground-truth object matches, random crops, model
 * summaries, loss and precision-recall series for lib/plot.ts, and a
 * "train once, reuse after" helper for notebooks that need a small model.
 *
 * Everything here only reshapes what other lib parts compute, so that
 * notebooks hold calls and display and nothing else.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { Buffer } from "node:buffer";
import * as fs from "node:fs";
import * as path from "node:path";
import sharp from "sharp";
import { type AugmentConfig, type CropResult, imageBytes, randomSampleCrop } from "./augment.ts";
import { decodeBoxes } from "./box_coder.ts";
import { readCheckpoint } from "./checkpoint.ts";
import type { CocoEvalAccumulated } from "./coco_eval.ts";
import { type DefaultBoxes, type DefaultBoxesConfig, featureSizesOf, ssdScales } from "./default_boxes.ts";
import type { DetectionRecord } from "./detection_record.ts";
import { boxesSvg, type DrawBox, drawBoxes, imageGrid } from "./draw.ts";
import { countParams, type Graph, layerTable } from "./graph.ts";
import { focalLoss, smoothL1 } from "./loss.ts";
import type { MatchResult } from "./matcher.ts";
import { movingAverage, type Series } from "./plot.ts";
import { InputError } from "./errors.ts";
import { createRng } from "./rng.ts";
import { anchorsOf, buildModel, type SsdConfig } from "./ssd_config.ts";
import { latestCheckpoint, train, type TrainResult } from "./train.ts";

// ---------------------------------------------------------------------------------------------------------------------
// Tables

/**
 * A GitHub-style markdown table of `rows` (columns: the keys of the first row,
 * or `columns`). Numbers are right-aligned and shown with at most 4 decimals,
 * arrays as comma-separated lists (null items as "null", a null cell empty);
 * `|` in cells is escaped.
 *
 * @example
 * ```ts
 * const md = markdownTable([{ level: 0, boxes: 5776 }, { level: 1, boxes: 2166.123456 }]);
 * if (md.split("\n")[1] !== "| ---: | ---: |") throw new Error(md);
 * if (!md.includes("| 1 | 2166.1235 |")) throw new Error(md);
 * if (!markdownTable([{ box: [1.5, 2] }]).includes("| 1.5, 2 |")) throw new Error("arrays");
 * if (!markdownTable([{ ious: [null, 0.1], x: null }]).includes("| null, 0.1 |  |")) throw new Error("nulls");
 * ```
 */
export function markdownTable(rows: readonly object[], columns?: string[]): string {
  const get = (r: object, c: string) => (r as Record<string, unknown>)[c];
  const cols = columns ?? Object.keys(rows[0] ?? {});
  const fmt = (v: unknown): string =>
    v === null || v === undefined
      ? ""
      : typeof v === "number"
      ? String(Number.isInteger(v) ? v : +v.toFixed(4))
      : Array.isArray(v) || ArrayBuffer.isView(v)
      ? Array.from(v as ArrayLike<unknown>, (x) => (x === null ? "null" : fmt(x))).join(", ")
      : String(v);
  const cell = (v: unknown) => fmt(v).replaceAll("|", "\\|");
  const numeric = cols.map((c) => rows.length > 0 && rows.every((r) => typeof get(r, c) === "number"));
  return [
    `| ${cols.map(cell).join(" | ")} |`,
    `| ${numeric.map((n) => (n ? "---:" : "---")).join(" | ")} |`,
    ...rows.map((r) => `| ${cols.map((c) => cell(get(r, c))).join(" | ")} |`),
  ].join("\n");
}

/**
 * An object the Deno Jupyter kernel shows as markdown (it also prints as the
 * plain text). Use it as the last expression of a cell.
 *
 * @example
 * ```ts
 * const m = markdown("**bold**");
 * const bundle = (m as unknown as Record<symbol, () => Record<string, string>>)[Symbol.for("Jupyter.display")]();
 * if (bundle["text/markdown"] !== "**bold**") throw new Error("wrong bundle");
 * ```
 */
export function markdown(text: string): { text: string } {
  return {
    text,
    [Symbol.for("Jupyter.display")]: () => ({ "text/markdown": text, "text/plain": text }),
  } as { text: string };
}

// ---------------------------------------------------------------------------------------------------------------------
// Default boxes

/** One feature map of an anchors section. */
export interface AnchorLevel {
  level: number;
  /** Cells per side. */
  feature: number;
  /** Stride in input pixels. */
  step: number;
  /** Scale of the level's square box (ssd generator), as a fraction of the input side; null otherwise. */
  scale: number | null;
  /** Default boxes per cell. */
  perCell: number;
  /** Default boxes of the level. */
  boxes: number;
  /** Default boxes of this and all earlier levels. */
  cumulative: number;
}

/**
 * The levels of an anchors section with their box counts, for a table.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * import { ssdDefaultBoxes } from "./default_boxes.ts";
 * const cfg = { img_shape: [300, 300], feature_size: [2, 1], steps: [150, 300], min_scale: 0.2, max_scale: 0.9,
 *   generator: "ssd" as const };
 * const anchors = ssdDefaultBoxes({ imageSize: 300, featureSizes: [2, 1], steps: [150, 300], minScale: 0.2,
 *   maxScale: 0.9, aspectRatios: [[2], [2]] });
 * assertEquals(anchorLevels(cfg, anchors).map((l) => [l.perCell, l.boxes, l.cumulative]), [[4, 16, 16], [4, 4, 20]]);
 * ```
 */
export function anchorLevels(
  cfg: Pick<DefaultBoxesConfig, "feature_size" | "steps" | "img_shape" | "min_scale" | "max_scale" | "generator">,
  anchors: DefaultBoxes,
): AnchorLevel[] {
  const sizes = featureSizesOf(cfg);
  const scales = cfg.generator === "ssd" && cfg.min_scale !== null && cfg.max_scale !== null
    ? ssdScales(cfg.min_scale, cfg.max_scale, sizes.length)
    : null;
  let cumulative = 0;
  return anchors.perLayer.map((boxes, l) => {
    cumulative += boxes;
    return {
      level: l,
      feature: sizes[l],
      step: cfg.steps?.[l] ?? cfg.img_shape[0] / sizes[l],
      scale: scales ? +scales[l].toFixed(4) : null,
      perCell: boxes / (sizes[l] * sizes[l]),
      boxes,
      cumulative,
    };
  });
}

/** Index of the first default box of cell (row, col) of `level`, and the boxes per cell. */
function cellIndex(anchors: DefaultBoxes, sizes: number[], level: number, row: number, col: number) {
  let offset = 0;
  for (let l = 0; l < level; l++) offset += anchors.perLayer[l];
  const f = sizes[level], k = anchors.perLayer[level] / (f * f);
  return { first: offset + (row * f + col) * k, k };
}

/**
 * The default boxes of one cell (row, col) of feature map `level`, in pixels of
 * a `size`-px square image, coloured by their index within the cell.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * import { ssdDefaultBoxes } from "./default_boxes.ts";
 * const anchors = ssdDefaultBoxes({ imageSize: 100, featureSizes: [2], steps: [50], minScale: 0.5, maxScale: 0.5,
 *   aspectRatios: [[2]] });
 * const boxes = cellDefaultBoxes(anchors, { img_shape: [100, 100], feature_size: [2], steps: [50] }, 0, 0, 0, 100);
 * assertEquals(boxes.length, 4);
 * assertEquals(boxes[0].box, [0, 0, 50, 50]); // the square box of scale 0.5 centred at (25, 25)
 * ```
 */
export function cellDefaultBoxes(
  anchors: DefaultBoxes,
  cfg: Pick<DefaultBoxesConfig, "feature_size" | "steps" | "img_shape">,
  level: number,
  row: number,
  col: number,
  size: number,
): DrawBox[] {
  const { first, k } = cellIndex(anchors, featureSizesOf(cfg), level, row, col);
  const out: DrawBox[] = [];
  for (let b = 0; b < k; b++) {
    const [y1, x1, y2, x2] = anchors.corners.subarray(4 * (first + b), 4 * (first + b) + 4);
    out.push({ box: [x1, y1, x2, y2].map((v) => +(v * size).toFixed(3)), colour: b });
  }
  return out;
}

/**
 * One picture per feature map: the image (stretched to `tile` px, with a grey
 * margin so boxes that reach past the image stay visible), the level's cell
 * grid, the cell holding `point` (normalised x, y; default the centre)
 * shaded, and that cell's default boxes. Returns a PNG grid.
 */
export async function defaultBoxesGrid(
  image: Uint8Array,
  anchors: DefaultBoxes,
  cfg: Pick<DefaultBoxesConfig, "feature_size" | "steps" | "img_shape">,
  o: { point?: [number, number]; tile?: number; cols?: number } = {},
): Promise<Uint8Array> {
  const T = o.tile ?? 240, m = Math.round(T * 0.3), W = T + 2 * m;
  const sizes = featureSizesOf(cfg), img = cfg.img_shape[0];
  const [px, py] = o.point ?? [0.5, 0.5];
  const base = await sharp(image).resize(T, T, { fit: "fill" })
    .extend({ top: m, bottom: m, left: m, right: m, background: "#3a3a3a" }).png().toBuffer();
  const tiles: Uint8Array[] = [];
  for (let l = 0; l < sizes.length; l++) {
    const f = sizes[l], step = cfg.steps?.[l] ?? img / f;
    const fk = img / step, cellPx = (step / img) * T;
    const col = Math.min(f - 1, Math.floor(px * fk)), row = Math.min(f - 1, Math.floor(py * fk));
    const grid: string[] = [];
    for (let j = 1; j < f; j++) {
      const v = m + j * cellPx;
      if (v >= m + T) break;
      grid.push(
        `<line x1="${v}" y1="${m}" x2="${v}" y2="${m + T}"/>`,
        `<line x1="${m}" y1="${v}" x2="${m + T}" y2="${v}"/>`,
      );
    }
    const boxes = cellDefaultBoxes(anchors, cfg, l, row, col, T).map((b) => ({ ...b, box: b.box.map((v) => v + m) }));
    const k = boxes.length;
    const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${W}">` +
      `<g stroke="#ffffff" stroke-opacity="0.45" stroke-width="0.6">${grid.join("")}</g>` +
      `<rect x="${m + col * cellPx}" y="${m + row * cellPx}" width="${cellPx}" height="${cellPx}" fill="#ffffff" ` +
      `fill-opacity="0.55" stroke="#000000" stroke-width="1"/>` +
      `<text x="6" y="18" font-family="DejaVu Sans, sans-serif" font-size="14" fill="#ffffff">level ${l}: ` +
      `${f}x${f} cells, ${k} boxes/cell, ${anchors.perLayer[l]} boxes</text></svg>`;
    const out = await sharp(base).composite([
      { input: Buffer.from(svg), top: 0, left: 0 },
      { input: Buffer.from(boxesSvg(W, W, boxes)), top: 0, left: 0 },
    ]).png().toBuffer();
    tiles.push(new Uint8Array(out));
  }
  return imageGrid(tiles, { cols: o.cols ?? 3, cell: W });
}

// ---------------------------------------------------------------------------------------------------------------------
// Ground truth and matching

/**
 * The boxes of a record as {@linkcode DrawBox}es, labelled with class names
 * and scaled by `scale` (e.g. to an enlarged picture).
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const rec = { imgId: 1, file: "a.jpg", width: 10, height: 10, boxes: new Float64Array([1, 2, 3, 4]),
 *   labels: new Int32Array([2]), iscrowd: new Uint8Array(1) };
 * assertEquals(recordBoxes(rec, ["bg", "a", "b"]), [{ box: [1, 2, 3, 4], label: "b", colour: 2 }]);
 * ```
 */
export function recordBoxes(record: DetectionRecord, classNames: string[], scale = 1): DrawBox[] {
  return Array.from(record.labels, (label, k) => ({
    box: Array.from(record.boxes.subarray(4 * k, 4 * k + 4), (v) => v * scale),
    label: classNames[label] ?? String(label),
    colour: label,
  }));
}

/** How many default boxes each ground-truth object took, per level. */
export interface MatchRow {
  /** Index of the object in the image's ground truth. */
  object: number;
  class: string;
  /** Default boxes matched to it. */
  matched: number;
  /** "level: count" for each level with matches. */
  byLevel: string;
}

/** Level of each default box, from `perLayer`. */
function levelsOf(anchors: DefaultBoxes): Int32Array {
  const out = new Int32Array(anchors.count);
  let a = 0;
  anchors.perLayer.forEach((n, l) => out.fill(l, a, a += n));
  return out;
}

/**
 * Per object: the number of default boxes it matched and on which levels.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * import { storedAnchors } from "./default_boxes.ts";
 * import { matchAndEncode } from "./matcher.ts";
 * const anchors = storedAnchors([0.25, 0.25, 0.5, 0.5, 0.75, 0.75, 0.5, 0.5], { format: "cy_cx_h_w" });
 * const m = matchAndEncode({ boxes: [0.5, 0.5, 1, 1], labels: [1] }, anchors, { matchThreshold: 0.5, scaleFactors: [10, 10, 5, 5] });
 * assertEquals(matchSummary(m, anchors, [1], ["bg", "cat"]), [{ object: 0, class: "cat", matched: 1, byLevel: "0: 1" }]);
 * ```
 */
export function matchSummary(
  match: MatchResult,
  anchors: DefaultBoxes,
  labels: ArrayLike<number>,
  classNames: string[],
): MatchRow[] {
  const levels = levelsOf(anchors), L = anchors.perLayer.length;
  const counts = Array.from({ length: labels.length }, () => new Array<number>(L).fill(0));
  match.matchedGt.forEach((g, a) => {
    if (g >= 0) counts[g][levels[a]]++;
  });
  return counts.map((c, g) => ({
    object: g,
    class: classNames[labels[g]] ?? String(labels[g]),
    matched: c.reduce((s, v) => s + v, 0),
    byLevel: c.map((v, l) => (v ? `${l}: ${v}` : "")).filter(Boolean).join(", "),
  }));
}

/**
 * The default boxes matched to object `object` (default: all objects), in
 * pixels of a `size`-px square image, coloured by level (palette index =
 * level) and unlabelled.
 */
export function matchedDefaultBoxes(
  match: MatchResult,
  anchors: DefaultBoxes,
  size: number,
  o: { object?: number } = {},
): DrawBox[] {
  const levels = levelsOf(anchors);
  const out: DrawBox[] = [];
  match.matchedGt.forEach((g, a) => {
    if (g < 0 || (o.object !== undefined && g !== o.object)) return;
    const [y1, x1, y2, x2] = anchors.corners.subarray(4 * a, 4 * a + 4);
    out.push({ box: [x1, y1, x2, y2].map((v) => v * size), colour: levels[a] });
  });
  return out;
}

/**
 * One picture per object of `record` (whose image is the network input, `size`
 * px square): the object (palette colour 6, labelled "object i: class") and
 * the default boxes it matched, coloured by level (palette index = level).
 * Returns a PNG grid.
 */
export async function matchGrid(
  record: DetectionRecord,
  match: MatchResult,
  anchors: DefaultBoxes,
  classNames: string[],
  o: { tile?: number; cols?: number } = {},
): Promise<Uint8Array> {
  const image = await imageBytes(record);
  const tiles: Uint8Array[] = [];
  for (let g = 0; g < record.labels.length; g++) {
    const b = record.boxes.subarray(4 * g, 4 * g + 4);
    const gt: DrawBox = {
      box: Array.from(b),
      label: `object ${g}: ${classNames[record.labels[g]] ?? record.labels[g]}`,
      colour: 6,
    };
    const boxes = matchedDefaultBoxes(match, anchors, 1, { object: g })
      .map((d) => ({
        ...d,
        box: [d.box[0] * record.width, d.box[1] * record.height, d.box[2] * record.width, d.box[3] * record.height],
      }));
    tiles.push(await drawBoxes(image, [...boxes, gt], { upscaleTo: o.tile ?? 300, format: "png" }));
  }
  return imageGrid(tiles, { cols: o.cols ?? 3, cell: o.tile ?? 300 });
}

/** One matched default box and its regression target. */
export interface TargetRow {
  /** Index of the default box. */
  anchor: number;
  level: number;
  /** Index of the object it matched. */
  object: number;
  /** The default box: cy, cx, h, w (normalised). */
  prior: number[];
  /** The encoded target: ty, tx, th, tw. */
  target: number[];
  /** The target decoded again against the prior: y1, x1, y2, x2, which is the object's box. */
  decoded: number[];
}

/**
 * The first `limit` default boxes matched to `object` (default: any object),
 * with their encoded targets and the targets decoded again (lib/box_coder.ts
 * `decodeBoxes`), which gives back the ground-truth box.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * import { storedAnchors } from "./default_boxes.ts";
 * import { matchAndEncode } from "./matcher.ts";
 * const anchors = storedAnchors([0.25, 0.25, 0.5, 0.5, 0.75, 0.75, 0.5, 0.5], { format: "cy_cx_h_w" });
 * const m = matchAndEncode({ boxes: [0.4, 0.5, 1, 1], labels: [1] }, anchors, { matchThreshold: 0.5, scaleFactors: [10, 10, 5, 5] });
 * const [row] = matchTargets(m, anchors, [10, 10, 5, 5]);
 * assertEquals([row.anchor, row.decoded.map((v) => +v.toFixed(5))], [1, [0.4, 0.5, 1, 1]]);
 * ```
 */
export function matchTargets(
  match: MatchResult,
  anchors: DefaultBoxes,
  scaleFactors: number[],
  o: { object?: number; limit?: number } = {},
): TargetRow[] {
  const levels = levelsOf(anchors);
  const rows: TargetRow[] = [];
  for (let a = 0; a < anchors.count && rows.length < (o.limit ?? 8); a++) {
    const g = match.matchedGt[a];
    if (g < 0 || (o.object !== undefined && g !== o.object)) continue;
    const prior = anchors.centers.subarray(4 * a, 4 * a + 4), target = match.loc.subarray(4 * a, 4 * a + 4);
    const decoded = decodeBoxes(target, prior, { scaleFactors });
    const r4 = (v: ArrayLike<number>) => Array.from(v, (x) => +x.toFixed(4));
    rows.push({ anchor: a, level: levels[a], object: g, prior: r4(prior), target: r4(target), decoded: r4(decoded) });
  }
  return rows;
}

// ---------------------------------------------------------------------------------------------------------------------
// Random crops

/**
 * A crop as boxes over its source image: the crop rectangle (colour 5, labelled
 * "crop WxH", or "whole image" when nothing was cut), the boxes it keeps
 * (clipped, with class names) and, labelled "dropped", the boxes whose centre
 * falls outside it. Pixels of the source.
 */
export function cropBoxes(record: DetectionRecord, crop: CropResult, classNames: string[]): DrawBox[] {
  const { x, y, w, h } = crop.rect;
  const kept = new Set(crop.kept);
  const whole = x === 0 && y === 0 && w === record.width && h === record.height;
  const out: DrawBox[] = [{ box: [x, y, x + w, y + h], label: whole ? "whole image" : `crop ${w}x${h}`, colour: 5 }];
  crop.kept.forEach((_, k) => {
    const b = crop.boxes.subarray(4 * k, 4 * k + 4);
    out.push({
      box: [b[0] + x, b[1] + y, b[2] + x, b[3] + y],
      label: classNames[crop.labels[k]],
      colour: crop.labels[k],
    });
  });
  for (let i = 0; i < record.labels.length; i++) {
    if (!kept.has(i)) {
      out.push({ box: Array.from(record.boxes.subarray(4 * i, 4 * i + 4)), label: "dropped", colour: 7 });
    }
  }
  return out;
}

/**
 * A picture of one crop: the source image darkened outside the crop, with
 * {@linkcode cropBoxes} drawn over it (enlarged to at least `upscaleTo` px).
 */
export async function drawCrop(
  record: DetectionRecord,
  crop: CropResult,
  classNames: string[],
  o: { upscaleTo?: number } = {},
): Promise<Uint8Array> {
  const { x, y, w, h } = crop.rect, W = record.width, H = record.height;
  const shade = `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}">` +
    `<path fill-rule="evenodd" fill="#000000" fill-opacity="0.55" ` +
    `d="M0,0H${W}V${H}H0Z M${x},${y}V${y + h}H${x + w}V${y}Z"/></svg>`;
  const shaded = await sharp(await imageBytes(record)).composite([{ input: Buffer.from(shade), top: 0, left: 0 }])
    .png().toBuffer();
  return drawBoxes(new Uint8Array(shaded), cropBoxes(record, crop, classNames), { upscaleTo: o.upscaleTo ?? 256 });
}

/**
 * A PNG grid of `count` random crops (the tutorial's `random_sample_crop`,
 * lib/augment.ts `randomSampleCrop`) drawn over their source images with
 * {@linkcode drawCrop}, records cycled.
 */
export async function cropPreview(
  records: DetectionRecord[],
  classNames: string[],
  cfg: Pick<AugmentConfig, "crop_min_ious" | "crop_tries" | "crop_scale" | "crop_aspect">,
  o: { seed?: number; count?: number; cols?: number } = {},
): Promise<Uint8Array> {
  const rng = createRng(o.seed ?? 0);
  const pics: Uint8Array[] = [];
  for (let i = 0; i < (o.count ?? 8); i++) {
    const r = records[i % records.length];
    const crop = randomSampleCrop(r.boxes, r.labels, r.width, r.height, rng, cfg);
    pics.push(await drawCrop(r, crop, classNames));
  }
  return imageGrid(pics, { cols: o.cols ?? 4, cell: 256 });
}

// ---------------------------------------------------------------------------------------------------------------------
// Models

/** One line of a model overview. */
export interface ModelSummary {
  arch: string;
  input: number;
  /** Cells per side of each feature map the heads read. */
  featureMaps: string;
  anchors: number;
  classes: number;
  /** Layers (convolutions, batch norms, pools) in the graph. */
  layers: number;
  /** Trainable parameter values. */
  params: number;
  /** All stored values, including batch-norm statistics. */
  total: number;
}

/** Builds a config's network (cheap: no weights) and summarises it. */
export function modelSummary(cfg: SsdConfig): ModelSummary {
  const anchors = anchorsOf(cfg);
  const graph = buildModel(cfg, anchors);
  const { trainable, total } = countParams(graph);
  return {
    arch: cfg.model.arch,
    input: cfg.model.input_size,
    featureMaps: featureSizesOf(cfg.anchors).join(", "),
    anchors: anchors.count,
    classes: cfg.model.num_classes,
    layers: layerTable(graph).length - 1,
    params: trainable,
    total,
  };
}

/**
 * Trainable parameters grouped by the first part of their layer names
 * (`backbone`, `b6`, ..., `multibox`), in graph order, with each group's share.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * import { GraphBuilder } from "./graph.ts";
 * const g = new GraphBuilder([8, 8, 3]);
 * const f = g.conv("backbone.c1", g.input, 4);
 * const graph = g.build({ loc: g.flattenHead(g.conv("multibox.loc", f, 8), 4), cls: g.flattenHead(g.conv("multibox.cls", f, 6), 3) });
 * assertEquals(paramsByPart(graph).map((r) => r.part), ["backbone", "multibox"]);
 * ```
 */
export function paramsByPart(graph: Graph): { part: string; params: number; share: string }[] {
  const sums = new Map<string, number>();
  let total = 0;
  for (const p of graph.params) {
    if (p.kind === "moving_mean" || p.kind === "moving_variance") continue;
    const n = p.shape.reduce((a, b) => a * b, 1), part = p.node.split(".")[0];
    sums.set(part, (sums.get(part) ?? 0) + n);
    total += n;
  }
  return [...sums].map(([part, params]) => ({ part, params, share: `${(100 * params / total).toFixed(1)} %` }));
}

// ---------------------------------------------------------------------------------------------------------------------
// Series for lib/plot.ts

/**
 * A series of `values` at x = 0, 1, 2 ... (or `x0 + i`).
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * assertEquals(seriesOf("lr", new Float32Array([0.5, 1])), { name: "lr", x: [0, 1], y: [0.5, 1] });
 * ```
 */
export function seriesOf(name: string, values: ArrayLike<number>, x0 = 0): Series {
  return { name, x: Array.from(values, (_, i) => x0 + i), y: Array.from(values) };
}

/**
 * Total, class and location loss per step (lib/train.ts `StepLog`s), smoothed
 * by a moving average of `window` steps (1: raw).
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const s = lossSeries([{ global_step: 1, loss: 3, cls: 2, loc: 1 }, { global_step: 2, loss: 1, cls: 1, loc: 0 }], 2);
 * assertEquals(s.map((x) => [x.name, x.y]), [["total", [3, 2]], ["cls", [2, 1.5]], ["loc", [1, 0.5]]]);
 * ```
 */
export function lossSeries(
  losses: { global_step: number; loss: number; cls: number; loc: number }[],
  window = 1,
): Series[] {
  const x = losses.map((l) => l.global_step);
  return [
    { name: "total", x, y: movingAverage(losses.map((l) => l.loss), window) },
    { name: "cls", x, y: movingAverage(losses.map((l) => l.cls), window) },
    { name: "loc", x, y: movingAverage(losses.map((l) => l.loc), window) },
  ];
}

/**
 * The two loss functions as curves, computed with lib/loss.ts itself:
 * `cls` plots, against p (the probability the network gives the right answer),
 * plain cross-entropy and the sigmoid focal loss for a positive and a negative
 * column; `loc` plots SmoothL1 against the prediction error, with L1 and half
 * L2 for comparison.
 */
export async function lossCurves(
  o: { gamma?: number; alpha?: number } = {},
): Promise<{ cls: Series[]; loc: Series[] }> {
  const gamma = o.gamma ?? 2, alpha = o.alpha ?? 0.75;
  const p = Array.from({ length: 99 }, (_, i) => (i + 1) / 100);
  const logit = (q: number) => Math.log(q / (1 - q));
  const run = async (logits: number[], target: number, g: number, a: number) => {
    const t = focalLoss(tf.tensor1d(logits), tf.fill([logits.length], target), { gamma: g, alpha: a });
    const v = Array.from(await t.data());
    t.dispose();
    return v;
  };
  const d = Array.from({ length: 121 }, (_, i) => -3 + i * 0.05);
  const sl1 = smoothL1(tf.tensor1d(d), tf.zeros([d.length]));
  const sl1v = Array.from(await sl1.data());
  sl1.dispose();
  return {
    cls: [
      { name: "cross-entropy", x: p, y: await run(p.map(logit), 1, 0, 1) },
      { name: "focal, positive", x: p, y: await run(p.map(logit), 1, gamma, alpha) },
      {
        name: `focal, negative (a=${+(1 - alpha).toFixed(2)})`,
        x: p,
        y: await run(p.map((q) => -logit(q)), 0, gamma, alpha),
      },
    ],
    loc: [
      { name: "SmoothL1", x: d, y: sl1v },
      { name: "L1", x: d, y: d.map(Math.abs) },
      { name: "L2 / 2", x: d, y: d.map((v) => v * v / 2) },
    ],
  };
}

/**
 * Precision-recall curves, one per category, from COCOeval's accumulated
 * precision ([T, R, K, A, M]) at IoU threshold `iouThr` (default 0.5), area
 * "all" and the largest maxDets. Categories without ground truth are left out.
 * x is recall (the 101 recall thresholds), y the interpolated precision.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * import { accumulate, evaluate, loadDetections, loadGroundTruth } from "./coco_eval.ts";
 * const gt = loadGroundTruth({ images: [{ id: 1 }], categories: [{ id: 1, name: "cat" }],
 *   annotations: [{ id: 1, image_id: 1, category_id: 1, bbox: [0, 0, 10, 10], area: 100, iscrowd: 0 }] });
 * const acc = accumulate(evaluate(gt, loadDetections(gt, [{ image_id: 1, category_id: 1, bbox: [0, 0, 10, 10], score: 1 }])));
 * const [s] = prCurveSeries(acc, gt.catNames);
 * assertEquals([s.name, s.x.length, s.y[100].toFixed(6)], ["cat", 101, "1.000000"]);
 * ```
 */
export function prCurveSeries(acc: CocoEvalAccumulated, names: string[], o: { iouThr?: number } = {}): Series[] {
  const [T, R, K, A, M] = acc.counts;
  const p = acc.params;
  const want = o.iouThr ?? 0.5;
  let t = 0;
  for (let i = 1; i < T; i++) if (Math.abs(p.iouThrs[i] - want) < Math.abs(p.iouThrs[t] - want)) t = i;
  const a = Math.max(0, p.areaRngLbl.indexOf("all")), m = M - 1;
  const out: Series[] = [];
  for (let k = 0; k < K; k++) {
    const y = Array.from({ length: R }, (_, r) => acc.precision[(((t * R + r) * K + k) * A + a) * M + m]);
    if (y.every((v) => v < 0)) continue;
    out.push({ name: names[k] ?? `class ${k}`, x: Array.from(p.recThrs), y });
  }
  return out;
}

/**
 * The largest absolute difference between two equally long arrays.
 *
 * @example
 * ```ts
 * if (maxAbsDiff([1, 2, 3], new Float32Array([1, 2.5, 3])) !== 0.5) throw new Error("wrong");
 * ```
 */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new RangeError(`lengths differ: ${a.length} vs ${b.length}`);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}

// ---------------------------------------------------------------------------------------------------------------------
// A small model, trained once

/**
 * The latest checkpoint in `outDir` when it was trained with exactly `cfg`
 * and finished all its epochs; otherwise trains `cfg` into `outDir` and
 * returns the new checkpoint. Lets several notebooks share one small model
 * without depending on each other's order.
 */
export async function trainOrReuse(
  cfg: SsdConfig,
  outDir: string,
  o: { quiet?: boolean } = {},
): Promise<{ checkpoint: string; reused: boolean; run: TrainResult | null }> {
  const last = latestCheckpoint(outDir);
  if (last) {
    try {
      const h = readCheckpoint(last).header;
      const same = JSON.stringify(h.config) === JSON.stringify(JSON.parse(JSON.stringify(cfg)));
      if (same && h.epoch === cfg.train.epochs && h.step_in_epoch === 0) {
        return { checkpoint: last, reused: true, run: null };
      }
    } catch { /* unreadable: train afresh */ }
  }
  fs.rmSync(path.join(outDir, "checkpoints"), { recursive: true, force: true });
  const run = await train(cfg, { outDir, quiet: o.quiet ?? true });
  if (!run.checkpoint) throw new InputError(`training wrote no checkpoint in ${outDir}`);
  return { checkpoint: run.checkpoint, reused: false, run };
}

/**
 * The backend the notebooks run on: `SSD_BACKEND` (which `deno task notebooks
 * --backend NAME` sets), else `fallback`.
 *
 * @example
 * ```ts
 * if (!Deno.env.get("SSD_BACKEND") && notebookBackend("wasm") !== "wasm") throw new Error("fallback");
 * ```
 */
export function notebookBackend(fallback = "wasm"): string {
  return Deno.env.get("SSD_BACKEND") || fallback;
}

/** `{ backend }` for `loadSsdConfig` overrides when `SSD_BACKEND` is set, else nothing (the config's own). */
export function backendOverride(): Record<string, string> {
  const b = Deno.env.get("SSD_BACKEND");
  return b ? { backend: b } : {};
}
