/**
 * Default boxes (priors, anchors) for SSD heads.
 *
 * Three generators, all returning the same {@linkcode DefaultBoxes}:
 *
 * - `ssd`: the tutorial's `GeneratDefaultBoxes` (also ModelZoo `src/box_utils.py`
 *   for `ssd300` MobileNetV2 and `ssd_vgg16`), paper section 2.2 "Choosing
 *   scales and aspect ratios for default boxes".
 * - `grid`: the ModelZoo `GridAnchorGenerator` (`src/anchor_generator.py`) used
 *   by `ssd_mobilenet_v1_fpn` and `ssd_resnet50_fpn`: per level, `anchor_scale *
 *   step` sized boxes at `scales_per_octave` octave scales and a few aspect
 *   ratios, centred at `(i + 0.5) * step` pixels.
 * - `stored`: an explicit list of anchors, e.g. the ones shipped with a
 *   pretrained TF Object Detection API model.
 *
 * Conventions (the tutorial's): y first, normalised to the input image.
 * `centers` is the tutorial's `default_boxes` ([A, 4] as cy, cx, h, w) and
 * `corners` its `default_boxes_tlbr` ([A, 4] as y1, x1, y2, x2). Boxes are
 * ordered level by level, then row i (y), column j (x), then box k within the
 * cell, which is the order of a head's NHWC output flattened per level (the
 * tutorial's `FlattenConcat`). Boxes are not clipped to the image: the tutorial
 * does not clip them.
 *
 * Every number (feature sizes, steps, scales, ratios) comes from the options;
 * the configs/anchors/*.yaml files hold the values for each model and say where
 * they come from.
 *
 * @module
 */
import type { Spec } from "./config.ts";
import { ConfigError, InputError } from "./errors.ts";

/** A set of default boxes in both layouts. */
export interface DefaultBoxes {
  /** Number of boxes A. */
  count: number;
  /** [A, 4] as cy, cx, h, w, normalised (tutorial `default_boxes`). */
  centers: Float32Array;
  /** [A, 4] as y1, x1, y2, x2, normalised (tutorial `default_boxes_tlbr`). */
  corners: Float32Array;
  /** Boxes contributed by each feature map, in order; sums to `count`. One entry for stored anchors. */
  perLayer: number[];
}

/** Options of the tutorial's SSD generator (`GeneratDefaultBoxes`). */
export interface SsdDefaultBoxesOptions {
  /** Input side in pixels; `fk = imageSize / step` cells per side (the tutorial uses `img_shape[0]`). */
  imageSize: number;
  /** Feature map side per level (square maps), e.g. 38, 19, 10, 5, 3, 1. */
  featureSizes: readonly number[];
  /** Pixel stride per level, e.g. 8, 16, 32, 64, 100, 300. */
  steps: readonly number[];
  /** Scale of the first level (tutorial 0.1). */
  minScale: number;
  /** Scale of the last level (tutorial 0.95); a final 1.0 is appended for the extra box of the last level. */
  maxScale: number;
  /** Aspect ratios per level besides 1; each r adds (r, 1/r). An empty first list selects the reduced lowest layer. */
  aspectRatios: readonly (readonly number[])[];
  /** Boxes per cell per level; checked when given (the tutorial asserts it). */
  numDefault?: readonly number[];
  /** Reduced lowest layer (first level with no aspect ratios): the scale of its square box (ModelZoo 0.1). */
  lowestLayerScale?: number;
  /** Reduced lowest layer: the one aspect ratio r whose (r, 1/r) pair is added at the level's scale (ModelZoo 2). */
  lowestLayerRatio?: number;
}

/**
 * The per-level scales of the SSD generator: `minScale + (maxScale - minScale) /
 * (L - 1) * k` for k = 0..L-1, then 1.0. Computed as the tutorial does (a
 * rate, then a product), so the values are the same doubles.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const s = ssdScales(0.1, 0.95, 6).map((v) => +v.toFixed(6));
 * assertEquals(s, [0.1, 0.27, 0.44, 0.61, 0.78, 0.95, 1]);
 * ```
 */
export function ssdScales(minScale: number, maxScale: number, levels: number): number[] {
  // One level has no ramp (the tutorial would divide by zero): it gets minScale.
  const rate = levels > 1 ? (maxScale - minScale) / (levels - 1) : 0;
  const scales: number[] = [];
  for (let k = 0; k < levels; k++) scales.push(minScale + rate * k);
  scales.push(1.0);
  return scales;
}

/**
 * Box sizes of one cell of level `level`, as [w, h] pairs in the tutorial's
 * order: (s, s), then (s√r, s/√r) and (s/√r, s√r) for each ratio r, then
 * (√(s s'), √(s s')) with s' the next level's scale.
 */
function cellSizes(level: number, scales: number[], options: SsdDefaultBoxesOptions): [number, number][] {
  const sk1 = scales[level], sk2 = scales[level + 1];
  const ratios = options.aspectRatios[level];
  if (level === 0 && ratios.length === 0) {
    // ModelZoo ssd300 / ssd_vgg16: three boxes in the lowest layer, as TF OD API's
    // `reduce_boxes_in_lowest_layer`: a small square and one (r, 1/r) pair.
    const small = options.lowestLayerScale, r = options.lowestLayerRatio;
    if (small === undefined || r === undefined) {
      throw new RangeError("aspectRatios[0] is empty: lowestLayerScale and lowestLayerRatio are required");
    }
    const w = sk1 * Math.sqrt(r), h = sk1 / Math.sqrt(r);
    return [[small, small], [w, h], [h, w]];
  }
  const sizes: [number, number][] = [[sk1, sk1]];
  for (const r of ratios) {
    const w = sk1 * Math.sqrt(r), h = sk1 / Math.sqrt(r);
    sizes.push([w, h], [h, w]);
  }
  const sk3 = Math.sqrt(sk1 * sk2);
  sizes.push([sk3, sk3]);
  return sizes;
}

/**
 * The tutorial's default boxes (`GeneratDefaultBoxes`). Computed in float64 and
 * stored as float32, as the tutorial's numpy code does, so values match it bit
 * for bit.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * // One 1x1 level on a 300 image with step 300: centred at 0.5.
 * const b = ssdDefaultBoxes({
 *   imageSize: 300, featureSizes: [1], steps: [300], minScale: 0.5, maxScale: 0.5, aspectRatios: [[]],
 *   lowestLayerScale: 0.1, lowestLayerRatio: 2,
 * });
 * assertEquals(b.count, 3);
 * assertEquals(Array.from(b.centers.slice(0, 4)), [0.5, 0.5, Math.fround(0.1), Math.fround(0.1)]);
 * ```
 */
export function ssdDefaultBoxes(options: SsdDefaultBoxesOptions): DefaultBoxes {
  const { imageSize, featureSizes, steps, aspectRatios, numDefault } = options;
  const levels = featureSizes.length;
  if (steps.length !== levels || aspectRatios.length !== levels || (numDefault && numDefault.length !== levels)) {
    throw new RangeError(
      `featureSizes, steps, aspectRatios${numDefault ? ", numDefault" : ""} must have one entry per level (${levels})`,
    );
  }
  // The tutorial sizes the scale ramp by the number of levels (`len(num_default)`).
  const scales = ssdScales(options.minScale, options.maxScale, levels);
  const perLevel = featureSizes.map((_, l) => cellSizes(l, scales, options));
  perLevel.forEach((sizes, l) => {
    if (numDefault && sizes.length !== numDefault[l]) {
      throw new RangeError(`level ${l}: ${sizes.length} boxes per cell, numDefault says ${numDefault[l]}`);
    }
  });
  const perLayer = featureSizes.map((f, l) => f * f * perLevel[l].length);
  const count = perLayer.reduce((a, b) => a + b, 0);
  const centers = new Float32Array(count * 4), corners = new Float32Array(count * 4);
  let p = 0;
  for (let l = 0; l < levels; l++) {
    // fk: cells per unit of the normalised image; a centre is (j + 0.5) / fk, i.e. (j + 0.5) * step / imageSize.
    const fk = imageSize / steps[l];
    for (let i = 0; i < featureSizes[l]; i++) {
      for (let j = 0; j < featureSizes[l]; j++) {
        for (const [w, h] of perLevel[l]) {
          const cx = (j + 0.5) / fk, cy = (i + 0.5) / fk;
          centers[p] = cy, centers[p + 1] = cx, centers[p + 2] = h, centers[p + 3] = w;
          corners[p] = cy - h / 2,
            corners[p + 1] = cx - w / 2,
            corners[p + 2] = cy + h / 2,
            corners[p + 3] = cx + w / 2;
          p += 4;
        }
      }
    }
  }
  return { count, centers, corners, perLayer };
}

/** Options of the ModelZoo grid generator (`GridAnchorGenerator`). */
export interface GridAnchorsOptions {
  /** Input [height, width] in pixels; each must be a multiple of every step. */
  imageShape: readonly [number, number] | readonly number[];
  /** Pixel stride per level, e.g. 8, 16, 32, 64, 128; the grid is (H / step) x (W / step). */
  steps: readonly number[];
  /** Base anchor side in strides (ModelZoo 4): the side is `anchorScale * step` pixels. */
  anchorScale: number;
  /** Scales per octave (ModelZoo 2): scales 2^(k / n) for k = 0..n-1. */
  scalesPerOctave: number;
  /** Aspect ratios h:w as w/h (ModelZoo [1, 2, 0.5]): w = s·√r, h = s/√r. */
  aspectRatios: readonly number[];
}

/**
 * The ModelZoo FPN anchors (`GridAnchorGenerator.generate_multi_levels`). Within a
 * cell the boxes run ratio-major, scale-minor (ratio r0 at each scale, then r1,
 * ...). The arithmetic is float32 step by step (`Math.fround`), as the numpy
 * original, so values match it bit for bit.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * // 64x64 image, one level of step 64: one cell, one box of side 4 * 64 = 256 px, centred.
 * const b = gridAnchors({ imageShape: [64, 64], steps: [64], anchorScale: 4, scalesPerOctave: 1, aspectRatios: [1] });
 * assertEquals(Array.from(b.centers), [0.5, 0.5, 4, 4]);
 * assertEquals(Array.from(b.corners), [-1.5, -1.5, 2.5, 2.5]);
 * ```
 */
export function gridAnchors(options: GridAnchorsOptions): DefaultBoxes {
  const f = Math.fround;
  const [imgH, imgW] = options.imageShape;
  const spo = options.scalesPerOctave;
  const scales: number[] = [];
  for (let k = 0; k < spo; k++) scales.push(f(2 ** (k / spo)));
  // numpy meshgrid(scales, aspects) flattened: ratio-major, scale-minor.
  const cellRatios: number[] = [], cellScales: number[] = [];
  for (const r of options.aspectRatios) for (const s of scales) cellRatios.push(f(r)), cellScales.push(s);
  const k = cellScales.length;
  const perLayer: number[] = [];
  for (const step of options.steps) {
    if (imgH % step !== 0 || imgW % step !== 0) {
      throw new RangeError(`image ${imgH}x${imgW} is not a multiple of step ${step}`);
    }
    perLayer.push((imgH / step) * (imgW / step) * k);
  }
  const count = perLayer.reduce((a, b) => a + b, 0);
  const centers = new Float32Array(count * 4), corners = new Float32Array(count * 4);
  let p = 0;
  for (const step of options.steps) {
    const base = f(options.anchorScale * step);
    const heights = cellScales.map((s, q) => f(f(s / f(Math.sqrt(cellRatios[q]))) * base));
    const widths = cellScales.map((s, q) => f(f(s * f(Math.sqrt(cellRatios[q]))) * base));
    const offset = step / 2;
    const gh = imgH / step, gw = imgW / step;
    for (let i = 0; i < gh; i++) {
      const cy = f(f(i * step) + offset);
      for (let j = 0; j < gw; j++) {
        const cx = f(f(j * step) + offset);
        for (let q = 0; q < k; q++) {
          const h = heights[q], w = widths[q];
          centers[p] = f(cy / imgH), centers[p + 1] = f(cx / imgW);
          centers[p + 2] = f(h / imgH), centers[p + 3] = f(w / imgW);
          corners[p] = f(f(cy - f(0.5 * h)) / imgH), corners[p + 1] = f(f(cx - f(0.5 * w)) / imgW);
          corners[p + 2] = f(f(cy + f(0.5 * h)) / imgH), corners[p + 3] = f(f(cx + f(0.5 * w)) / imgW);
          p += 4;
        }
      }
    }
  }
  return { count, centers, corners, perLayer };
}

/** Layouts accepted for stored anchors. */
export const ANCHOR_FORMATS = ["cy_cx_h_w", "y1_x1_y2_x2", "cx_cy_w_h"] as const;
/** A layout of stored anchors: the workbench's own, TF OD API box lists, or MediaPipe-style x-first centres. */
export type AnchorFormat = (typeof ANCHOR_FORMATS)[number];

/**
 * Default boxes from an explicit list, e.g. the anchors stored in a pretrained
 * TF Object Detection API graph. `data` is [A, 4] in `format`, normalised.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const b = storedAnchors(new Float32Array([0.25, 0.5, 0.75, 1]), { format: "y1_x1_y2_x2" });
 * assertEquals(Array.from(b.centers), [0.5, 0.75, 0.5, 0.5]);
 * ```
 */
export function storedAnchors(data: ArrayLike<number>, options: { format: AnchorFormat }): DefaultBoxes {
  if (data.length % 4 !== 0) throw new InputError(`stored anchors: length ${data.length} is not a multiple of 4`);
  const count = data.length / 4;
  const centers = new Float32Array(count * 4), corners = new Float32Array(count * 4);
  for (let p = 0; p < data.length; p += 4) {
    let cy: number, cx: number, h: number, w: number;
    const a = data[p], b = data[p + 1], c = data[p + 2], d = data[p + 3];
    switch (options.format) {
      case "cy_cx_h_w":
        [cy, cx, h, w] = [a, b, c, d];
        break;
      case "cx_cy_w_h":
        [cx, cy, w, h] = [a, b, c, d];
        break;
      case "y1_x1_y2_x2":
        [cy, cx, h, w] = [(a + c) / 2, (b + d) / 2, c - a, d - b];
        break;
      default:
        throw new InputError(`stored anchors: unknown format ${JSON.stringify(options.format)}`);
    }
    if (!(h > 0 && w > 0)) throw new InputError(`stored anchors: box ${p / 4} has no area (h ${h}, w ${w})`);
    centers[p] = cy, centers[p + 1] = cx, centers[p + 2] = h, centers[p + 3] = w;
    corners[p] = cy - h / 2, corners[p + 1] = cx - w / 2, corners[p + 2] = cy + h / 2, corners[p + 3] = cx + w / 2;
  }
  return { count, centers, corners, perLayer: [count] };
}

const positiveNumber = { type: "number", min: 0 } as const;
const positiveInt = { type: "number", int: true, min: 1 } as const;

/**
 * Cells per side of each level of an anchors section: `feature_size`, or the
 * image side over each level's step (the grid generator's sizes).
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * assertEquals(featureSizesOf({ feature_size: null, steps: [8, 16, 32], img_shape: [320, 320] }), [40, 20, 10]);
 * assertEquals(featureSizesOf({ feature_size: [19, 10], steps: [16, 32], img_shape: [300, 300] }), [19, 10]);
 * ```
 */
export function featureSizesOf(cfg: Pick<DefaultBoxesConfig, "feature_size" | "steps" | "img_shape">): number[] {
  if (cfg.feature_size) return cfg.feature_size;
  if (!cfg.steps) throw new RangeError("the anchors section has neither feature_size nor steps");
  return cfg.steps.map((s) => Math.round(cfg.img_shape[0] / s));
}

/** The `anchors` section of a model config (keys named as in the ModelZoo yaml where it has them). */
export interface DefaultBoxesConfig {
  /** Which generator: the tutorial's `ssd`, the ModelZoo FPN `grid`, or `stored` anchors. */
  generator: "ssd" | "grid" | "stored";
  /** Network input [height, width] in pixels (ModelZoo `img_shape`). */
  img_shape: number[];
  /** ssd: feature map side per level; grid: optional, checked against img_shape / steps. */
  feature_size: number[] | null;
  /** ssd, grid: pixel stride per level. */
  steps: number[] | null;
  /** ssd: scale of the first level. */
  min_scale: number | null;
  /** ssd: scale of the last level. */
  max_scale: number | null;
  /** ssd: aspect ratios per level besides 1. */
  aspect_ratios: number[][] | null;
  /** ssd, grid: boxes per cell per level, checked. */
  num_default: number[] | null;
  /** ssd: square box scale of a reduced lowest layer (empty aspect_ratios[0]). */
  lowest_layer_scale: number | null;
  /** ssd: aspect ratio pair of a reduced lowest layer. */
  lowest_layer_ratio: number | null;
  /** grid: anchor side in strides. */
  anchor_scale: number | null;
  /** grid: scales per octave. */
  scales_per_octave: number | null;
  /** grid: aspect ratios of every cell. */
  grid_aspect_ratios: number[] | null;
  /** stored: layout of the stored anchors. */
  stored_format: AnchorFormat | null;
  /**
   * stored: the anchors themselves, [A * 4] flat in `stored_format` (e.g. the 5118 anchors of face-api's
   * SSD, written here by its importer), so they travel with the config into checkpoints and exports.
   */
  stored: number[] | null;
  /** Expected number of boxes (ModelZoo `num_ssd_boxes`); checked when not null. */
  num_boxes: number | null;
}

/** Spec fragment of the `anchors` section; compose it into a model config spec. */
export const defaultBoxesSpec: Spec = {
  type: "object",
  doc: "Default boxes (anchors): generator and its numbers",
  fields: {
    generator: { type: "string", enum: ["ssd", "grid", "stored"], doc: "ssd (tutorial), grid (ModelZoo FPN), stored" },
    img_shape: { type: "array", items: positiveInt, minLength: 2, doc: "input [height, width] in pixels" },
    feature_size: { type: "array", items: positiveInt, nullable: true, doc: "feature map side per level" },
    steps: { type: "array", items: positiveNumber, nullable: true, doc: "pixel stride per level" },
    min_scale: { type: "number", min: 0, nullable: true, doc: "ssd: first level scale" },
    max_scale: { type: "number", min: 0, nullable: true, doc: "ssd: last level scale" },
    aspect_ratios: {
      type: "array",
      items: { type: "array", items: positiveNumber },
      nullable: true,
      doc: "ssd: aspect ratios per level besides 1",
    },
    num_default: { type: "array", items: positiveInt, nullable: true, doc: "boxes per cell per level (checked)" },
    lowest_layer_scale: { type: "number", min: 0, nullable: true, doc: "ssd: reduced lowest layer square scale" },
    lowest_layer_ratio: { type: "number", min: 0, nullable: true, doc: "ssd: reduced lowest layer aspect ratio" },
    anchor_scale: { type: "number", min: 0, nullable: true, doc: "grid: anchor side in strides" },
    scales_per_octave: { type: "number", int: true, min: 1, nullable: true, doc: "grid: scales per octave" },
    grid_aspect_ratios: { type: "array", items: positiveNumber, nullable: true, doc: "grid: aspect ratios" },
    stored_format: { type: "string", enum: ANCHOR_FORMATS, nullable: true, doc: "stored: anchor layout" },
    stored: { type: "array", items: { type: "number" }, nullable: true, doc: "stored: the anchors, flat" },
    num_boxes: { type: "number", int: true, min: 1, nullable: true, doc: "expected box count (checked)" },
  },
};

/**
 * Builds the default boxes a validated `anchors` section describes. Missing
 * numbers for the chosen generator and a wrong `num_boxes` or `num_default`
 * are {@linkcode ConfigError}s naming the key. `stored` needs `options.stored` or the
 * section's own `stored` list.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * import { validate } from "./config.ts";
 * const cfg = validate({
 *   generator: "ssd", img_shape: [300, 300], feature_size: [1], steps: [300], min_scale: 0.2, max_scale: 0.2,
 *   aspect_ratios: [[2]], num_default: [4], num_boxes: 4,
 * }, defaultBoxesSpec) as DefaultBoxesConfig;
 * assertEquals(defaultBoxesFromConfig(cfg).count, 4);
 * ```
 */
export function defaultBoxesFromConfig(
  cfg: DefaultBoxesConfig,
  options: { stored?: ArrayLike<number>; key?: string; file?: string } = {},
): DefaultBoxes {
  const key = options.key ?? "anchors";
  const need = <T>(name: keyof DefaultBoxesConfig): T => {
    const v = cfg[name];
    if (v === null || v === undefined) {
      throw new ConfigError(`is required for generator "${cfg.generator}"`, {
        key: `${key}.${name}`,
        file: options.file,
      });
    }
    return v as T;
  };
  const wrap = (fn: () => DefaultBoxes, blame: string): DefaultBoxes => {
    try {
      return fn();
    } catch (e) {
      if (!(e instanceof RangeError)) throw e;
      const m = e.message;
      const k = /numDefault says/.test(m) ? "num_default" : /lowestLayer/.test(m) ? "lowest_layer_scale" : blame;
      throw new ConfigError(m, { key: `${key}.${k}`, file: options.file });
    }
  };
  let boxes: DefaultBoxes;
  if (cfg.generator === "ssd") {
    boxes = wrap(() =>
      ssdDefaultBoxes({
        imageSize: cfg.img_shape[0],
        featureSizes: need<number[]>("feature_size"),
        steps: need<number[]>("steps"),
        minScale: need<number>("min_scale"),
        maxScale: need<number>("max_scale"),
        aspectRatios: need<number[][]>("aspect_ratios"),
        numDefault: cfg.num_default ?? undefined,
        lowestLayerScale: cfg.lowest_layer_scale ?? undefined,
        lowestLayerRatio: cfg.lowest_layer_ratio ?? undefined,
      }), "feature_size");
  } else if (cfg.generator === "grid") {
    const steps = need<number[]>("steps");
    boxes = wrap(() =>
      gridAnchors({
        imageShape: cfg.img_shape,
        steps,
        anchorScale: need<number>("anchor_scale"),
        scalesPerOctave: need<number>("scales_per_octave"),
        aspectRatios: need<number[]>("grid_aspect_ratios"),
      }), "steps");
    const perCell = boxes.perLayer[0] / ((cfg.img_shape[0] / steps[0]) * (cfg.img_shape[1] / steps[0]));
    if (cfg.feature_size) {
      steps.forEach((s, l) => {
        if (cfg.feature_size![l] !== cfg.img_shape[0] / s) {
          throw new ConfigError(
            `level ${l}: ${cfg.feature_size![l]} but img_shape / steps gives ${cfg.img_shape[0] / s}`,
            {
              key: `${key}.feature_size`,
              file: options.file,
            },
          );
        }
      });
    }
    cfg.num_default?.forEach((n, l) => {
      if (n !== perCell) {
        throw new ConfigError(`level ${l}: ${n} but the grid has ${perCell} boxes per cell`, {
          key: `${key}.num_default`,
          file: options.file,
        });
      }
    });
  } else {
    const stored = options.stored ?? cfg.stored;
    if (!stored) {
      throw new ConfigError('generator "stored" needs the anchors themselves', { key: `${key}.generator` });
    }
    boxes = storedAnchors(stored, { format: need<AnchorFormat>("stored_format") });
  }
  if (cfg.num_boxes !== null && cfg.num_boxes !== undefined && cfg.num_boxes !== boxes.count) {
    throw new ConfigError(`expected ${cfg.num_boxes} boxes, the ${cfg.generator} generator gives ${boxes.count}`, {
      key: `${key}.num_boxes`,
      file: options.file,
    });
  }
  return boxes;
}
