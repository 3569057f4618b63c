/**
 * Centre/size box coding against default boxes (SSD paper eq. 2; tutorial
 * `ssd_bboxes_encode` and `SsdInferWithDecoder`; ModelZoo `ssd_bboxes_decode`).
 *
 * For a box with centre (cy, cx) and size (h, w) and a default box (acy, acx,
 * ah, aw), the regression target is
 *
 *   ty = (cy - acy) / ah · sy      tx = (cx - acx) / aw · sx
 *   th = log(h / ah) · sh          tw = log(w / aw) · sw
 *
 * with scale factors (sy, sx, sh, sw). The tutorial writes them as "prior
 * scaling" variances 0.1 (centre) and 0.2 (size), dividing by them; that is
 * scale factors 10, 10, 5, 5, which is also how TF Object Detection API's
 * `FasterRcnnBoxCoder` states them. One function serves both.
 *
 * Layouts: targets and predictions are [A, 4] as ty, tx, th, tw (y first, like
 * the tutorial's `pred_loc`); default boxes are [A, 4] as cy, cx, h, w; boxes
 * are [A, 4] as y1, x1, y2, x2; all normalised.
 *
 * @module
 */
import type { Spec } from "./config.ts";
import { ConfigError } from "./errors.ts";

/** Scale factors (sy, sx, sh, sw) of the coder. */
export type ScaleFactors = readonly [number, number, number, number] | readonly number[];

/** Options of the box coder. */
export interface BoxCoderOptions {
  /** (sy, sx, sh, sw); the tutorial's prior scaling 0.1/0.2 is [10, 10, 5, 5]. */
  scaleFactors: ScaleFactors;
}

/**
 * The tutorial's encoder floors h / ah (and w / aw) at 1e-6 before the log so a
 * degenerate box gives a large negative target rather than -Infinity.
 */
const MIN_SIZE_RATIO = 0.000001;

/**
 * Encodes one box (y1, x1, y2, x2) against default box `a` of `anchors`
 * (cy, cx, h, w) into `out` at offset `o`. Used per matched prior by the
 * matcher.
 */
export function encodeInto(
  box: ArrayLike<number>,
  b: number,
  anchors: ArrayLike<number>,
  a: number,
  out: Float32Array,
  o: number,
  scaleFactors: ScaleFactors,
): void {
  const y1 = box[4 * b], x1 = box[4 * b + 1], y2 = box[4 * b + 2], x2 = box[4 * b + 3];
  const acy = anchors[4 * a], acx = anchors[4 * a + 1], ah = anchors[4 * a + 2], aw = anchors[4 * a + 3];
  const cy = (y1 + y2) / 2, cx = (x1 + x2) / 2, h = y2 - y1, w = x2 - x1;
  out[o] = ((cy - acy) / ah) * scaleFactors[0];
  out[o + 1] = ((cx - acx) / aw) * scaleFactors[1];
  out[o + 2] = Math.log(Math.max(h / ah, MIN_SIZE_RATIO)) * scaleFactors[2];
  out[o + 3] = Math.log(Math.max(w / aw, MIN_SIZE_RATIO)) * scaleFactors[3];
}

/**
 * Encodes boxes [N, 4] (y1, x1, y2, x2) against default boxes [N, 4] (cy, cx,
 * h, w), one to one.
 *
 * @returns [N, 4] as ty, tx, th, tw.
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * // A box twice the prior's size with the same centre: (0, 0, log 2 · 5, log 2 · 5).
 * const t = encodeBoxes(new Float32Array([0.3, 0.3, 0.7, 0.7]), new Float32Array([0.5, 0.5, 0.2, 0.2]), {
 *   scaleFactors: [10, 10, 5, 5],
 * });
 * assertEquals(Array.from(t).map((v) => +v.toFixed(5)), [0, 0, 3.46574, 3.46574]);
 * ```
 */
export function encodeBoxes(
  boxes: ArrayLike<number>,
  anchors: ArrayLike<number>,
  options: BoxCoderOptions,
): Float32Array {
  if (boxes.length !== anchors.length) {
    throw new RangeError(`${boxes.length / 4} boxes but ${anchors.length / 4} anchors`);
  }
  const out = new Float32Array(boxes.length);
  for (let i = 0; i < boxes.length / 4; i++) encodeInto(boxes, i, anchors, i, out, 4 * i, options.scaleFactors);
  return out;
}

/**
 * Decodes predictions [A, 4] (ty, tx, th, tw) against default boxes [A, 4] (cy,
 * cx, h, w) into boxes, the exact inverse of {@linkcode encodeBoxes}. With
 * `clip` the corners are clamped to [0, 1], as the tutorial's
 * `SsdInferWithDecoder` does.
 *
 * @returns [A, 4] as y1, x1, y2, x2, normalised (written to `options.out` when given).
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const anchors = new Float32Array([0.5, 0.5, 0.2, 0.2]);
 * const boxes = decodeBoxes(new Float32Array([1, 0, 0, 0]), anchors, { scaleFactors: [10, 10, 5, 5] });
 * // Centre moves by 1 / 10 of the prior's height: 0.5 + 0.02.
 * assertEquals(Array.from(boxes).map((v) => +v.toFixed(6)), [0.42, 0.4, 0.62, 0.6]);
 * ```
 */
export function decodeBoxes(
  loc: ArrayLike<number>,
  anchors: ArrayLike<number>,
  options: BoxCoderOptions & { clip?: boolean; out?: Float32Array },
): Float32Array {
  if (loc.length !== anchors.length) {
    throw new RangeError(`${loc.length / 4} predictions but ${anchors.length / 4} anchors`);
  }
  const [sy, sx, sh, sw] = options.scaleFactors;
  const out = options.out ?? new Float32Array(loc.length);
  const clip = options.clip ?? false;
  for (let p = 0; p < loc.length; p += 4) {
    const acy = anchors[p], acx = anchors[p + 1], ah = anchors[p + 2], aw = anchors[p + 3];
    const cy = (loc[p] / sy) * ah + acy, cx = (loc[p + 1] / sx) * aw + acx;
    const h = Math.exp(loc[p + 2] / sh) * ah, w = Math.exp(loc[p + 3] / sw) * aw;
    let y1 = cy - h / 2, x1 = cx - w / 2, y2 = cy + h / 2, x2 = cx + w / 2;
    if (clip) {
      y1 = Math.min(Math.max(y1, 0), 1), x1 = Math.min(Math.max(x1, 0), 1);
      y2 = Math.min(Math.max(y2, 0), 1), x2 = Math.min(Math.max(x2, 0), 1);
    }
    out[p] = y1, out[p + 1] = x1, out[p + 2] = y2, out[p + 3] = x2;
  }
  return out;
}

/** The `box_coder` section of a model config. */
export interface BoxCoderConfig {
  /** Tutorial/ModelZoo `prior_scaling`: [centre variance, size variance]; used when `scale_factors` is null. */
  prior_scaling: number[] | null;
  /** TF OD API form: [sy, sx, sh, sw]; overrides `prior_scaling`. */
  scale_factors: number[] | null;
}

/** Spec fragment of the `box_coder` section. */
export const boxCoderSpec: Spec = {
  type: "object",
  doc: "Box coder: centre/size encoding of regression targets",
  fields: {
    prior_scaling: {
      type: "array",
      items: { type: "number", min: 0 },
      nullable: true,
      doc: "[centre, size] variances (tutorial 0.1, 0.2)",
    },
    scale_factors: {
      type: "array",
      items: { type: "number", min: 0 },
      nullable: true,
      doc: "[sy, sx, sh, sw] (TF OD API 10, 10, 5, 5); overrides prior_scaling",
    },
  },
};

/**
 * Scale factors from a validated `box_coder` section: `scale_factors` as
 * given, or `1 / prior_scaling` as (1/v0, 1/v0, 1/v1, 1/v1).
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * assertEquals(scaleFactorsFromConfig({ prior_scaling: [0.1, 0.2], scale_factors: null }), [10, 10, 5, 5]);
 * ```
 */
export function scaleFactorsFromConfig(cfg: BoxCoderConfig, options: { key?: string; file?: string } = {}): number[] {
  const key = options.key ?? "box_coder";
  const positive = (v: number[]) => v.every((x) => x > 0);
  if (cfg.scale_factors) {
    if (cfg.scale_factors.length !== 4 || !positive(cfg.scale_factors)) {
      throw new ConfigError("expected 4 positive numbers [sy, sx, sh, sw]", {
        key: `${key}.scale_factors`,
        file: options.file,
      });
    }
    return [...cfg.scale_factors];
  }
  const v = cfg.prior_scaling;
  if (!v || v.length !== 2 || !positive(v)) {
    throw new ConfigError("expected 2 positive numbers [centre, size] (or set scale_factors)", {
      key: `${key}.prior_scaling`,
      file: options.file,
    });
  }
  return [1 / v[0], 1 / v[0], 1 / v[1], 1 / v[1]];
}
