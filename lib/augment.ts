/**
 * Training augmentation and eval preprocessing, as the tutorial's
 * `preprocess_fn` and `create_ssd_dataset`: random IoU crop, resize to the
 * input size, horizontal flip, colour jitter, then ImageNet mean/std
 * normalisation. Eval resizes and normalises only.
 *
 * Crop, resize and flip run in sharp (libvips, off the main thread); the
 * colour jitter runs on the small resized buffer in JS so that it is exactly
 * the PIL-style blend MindSpore's `RandomColorAdjust` applies.
 *
 * @module
 */
import * as fsp from "node:fs/promises";
import sharp from "sharp";
import type { Spec } from "./config.ts";
import type { DetectionRecord } from "./detection_record.ts";
import { InputError } from "./errors.ts";
import { type ImageCache, mirrorRgb } from "./image_cache.ts";
import type { Rng } from "./rng.ts";
import { shuffled, uniform } from "./rng.ts";

/** The `augment` section of a training config. */
export interface AugmentConfig {
  /** Minimum IoUs the crop draws from; null means "keep the whole image" (tutorial [null, .1, .3, .5, .7, .9]). */
  crop_min_ious: (number | null)[];
  /** Attempts before giving up and keeping the whole image (tutorial 50). */
  crop_tries: number;
  /** Crop side range as a fraction of the image side (tutorial [0.3, 1]). */
  crop_scale: number[];
  /** Allowed crop height / width range (tutorial [0.5, 2]). */
  crop_aspect: number[];
  /** Horizontal flip probability (tutorial 0.5). */
  flip_prob: number;
  /** Colour jitter strengths: factors are drawn from [1 - v, 1 + v] (tutorial 0.4 each). */
  brightness: number;
  contrast: number;
  saturation: number;
  /** Per-channel mean and std in 0-255 pixel units (ImageNet, as the tutorial). */
  mean: number[];
  std: number[];
  /** Resampling kernel for the resize. */
  resize_kernel: "nearest" | "linear" | "cubic" | "lanczos3";
}

/** Spec fragment of the `augment` section. */
export const augmentSpec: Spec = {
  type: "object",
  fields: {
    crop_min_ious: {
      type: "array",
      items: { type: "number", min: 0, max: 1, nullable: true },
      default: [null, 0.1, 0.3, 0.5, 0.7, 0.9],
    },
    crop_tries: { type: "number", int: true, min: 0, default: 50 },
    crop_scale: { type: "array", items: { type: "number", min: 0, max: 1 }, minLength: 2, default: [0.3, 1] },
    crop_aspect: { type: "array", items: { type: "number", min: 0 }, minLength: 2, default: [0.5, 2] },
    flip_prob: { type: "number", min: 0, max: 1, default: 0.5 },
    brightness: { type: "number", min: 0, default: 0.4 },
    contrast: { type: "number", min: 0, default: 0.4 },
    saturation: { type: "number", min: 0, default: 0.4 },
    mean: { type: "array", items: { type: "number" }, minLength: 3, default: [123.675, 116.28, 103.53] },
    std: { type: "array", items: { type: "number", min: 0 }, minLength: 3, default: [58.395, 57.12, 57.375] },
    resize_kernel: { type: "string", enum: ["nearest", "linear", "cubic", "lanczos3"], default: "linear" },
  },
};

/** A crop rectangle in integer pixels. */
export interface CropRect {
  x: number;
  y: number;
  w: number;
  h: number;
}

/** Result of {@linkcode randomSampleCrop}: the crop and the boxes that survive it. */
export interface CropResult {
  rect: CropRect;
  /** [M, 4] pixel x1, y1, x2, y2 relative to the crop. */
  boxes: Float64Array;
  /** [M] labels of the surviving boxes. */
  labels: Int32Array;
  /** Index of each surviving box in the input. */
  kept: number[];
}

function iouWithRect(b: ArrayLike<number>, i: number, r: number[]): number {
  const ix = Math.max(0, Math.min(b[4 * i + 2], r[2]) - Math.max(b[4 * i], r[0]));
  const iy = Math.max(0, Math.min(b[4 * i + 3], r[3]) - Math.max(b[4 * i + 1], r[1]));
  const inter = ix * iy;
  const areaA = (b[4 * i + 2] - b[4 * i]) * (b[4 * i + 3] - b[4 * i + 1]);
  const areaB = (r[2] - r[0]) * (r[3] - r[1]);
  return inter / (areaA + areaB - inter);
}

/**
 * The tutorial's `random_sample_crop`, on boxes only: draws a minimum IoU, then
 * up to `crop_tries` crops of side [0.3, 1] and aspect [1/2, 2]; a crop is
 * taken when the boxes it touches satisfy the IoU rule and at least one box
 * centre falls strictly inside. Kept boxes are clipped to the crop.
 *
 * @example
 * ```ts
 * import { createRng } from "./rng.ts";
 * const cfg = { crop_min_ious: [null], crop_tries: 50, crop_scale: [0.3, 1], crop_aspect: [0.5, 2] };
 * const r = randomSampleCrop(new Float64Array([10, 10, 50, 50]), new Int32Array([1]), 100, 100, createRng(1), cfg);
 * if (r.rect.w !== 100 || r.boxes.length !== 4) throw new Error("null min IoU must keep the image");
 * ```
 */
export function randomSampleCrop(
  boxes: ArrayLike<number>,
  labels: ArrayLike<number>,
  width: number,
  height: number,
  rng: Rng,
  cfg: Pick<AugmentConfig, "crop_min_ious" | "crop_tries" | "crop_scale" | "crop_aspect">,
): CropResult {
  const n = labels.length;
  const whole = (): CropResult => ({
    rect: { x: 0, y: 0, w: width, h: height },
    boxes: Float64Array.from(boxes),
    labels: Int32Array.from(labels),
    kept: Array.from({ length: n }, (_, i) => i),
  });
  const minIou = cfg.crop_min_ious[Math.floor(rng() * cfg.crop_min_ious.length)];
  if (minIou === null || minIou === undefined || n === 0) return whole();
  for (let t = 0; t < cfg.crop_tries; t++) {
    const w = uniform(rng, cfg.crop_scale[0], cfg.crop_scale[1]) * width;
    const h = uniform(rng, cfg.crop_scale[0], cfg.crop_scale[1]) * height;
    if (h / w < cfg.crop_aspect[0] || h / w > cfg.crop_aspect[1]) continue;
    const left = rng() * (width - w), top = rng() * (height - h);
    // int() truncation of the tutorial; rect as x1, y1, x2, y2.
    const r = [Math.trunc(left), Math.trunc(top), Math.trunc(left + w), Math.trunc(top + h)];
    if (r[2] <= r[0] || r[3] <= r[1]) continue;
    let anyTouch = false, minO = Infinity, maxO = -Infinity;
    const overlap = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      overlap[i] = iouWithRect(boxes, i, r);
      if (overlap[i] > 0) {
        anyTouch = true;
        minO = Math.min(minO, overlap[i]);
        maxO = Math.max(maxO, overlap[i]);
      }
    }
    if (!anyTouch) continue;
    // The tutorial's rule, kept as written: reject when some touched box is under the
    // minimum IoU while another is well above it.
    if (minO < minIou && maxO > minIou + 0.2) continue;
    const kept: number[] = [];
    for (let i = 0; i < n; i++) {
      const cx = (boxes[4 * i] + boxes[4 * i + 2]) / 2, cy = (boxes[4 * i + 1] + boxes[4 * i + 3]) / 2;
      if (overlap[i] > 0 && r[0] < cx && r[1] < cy && r[2] > cx && r[3] > cy) kept.push(i);
    }
    if (kept.length === 0) continue;
    const out = new Float64Array(kept.length * 4);
    kept.forEach((i, k) => {
      out[4 * k] = Math.max(boxes[4 * i], r[0]) - r[0];
      out[4 * k + 1] = Math.max(boxes[4 * i + 1], r[1]) - r[1];
      out[4 * k + 2] = Math.min(boxes[4 * i + 2], r[2]) - r[0];
      out[4 * k + 3] = Math.min(boxes[4 * i + 3], r[3]) - r[1];
    });
    return {
      rect: { x: r[0], y: r[1], w: r[2] - r[0], h: r[3] - r[1] },
      boxes: out,
      labels: Int32Array.from(kept.map((i) => labels[i])),
      kept,
    };
  }
  return whole();
}

/** Colour jitter factors (1 = unchanged). */
export interface JitterFactors {
  brightness: number;
  contrast: number;
  saturation: number;
  /**
   * The order the three adjustments run in, as indices (0 brightness, 1 contrast, 2 saturation); default
   * [0, 1, 2]. MindSpore's `RandomColorAdjust` shuffles the order for every image.
   */
  order?: readonly number[];
}

/**
 * Brightness, contrast and saturation as PIL's ImageEnhance blends (MindSpore
 * `RandomColorAdjust`), in `f.order`: brightness scales, contrast blends with
 * the mean grey level, saturation blends with each pixel's grey. In place on
 * interleaved RGB floats in 0..255; each step clamps to 0..255.
 *
 * @example
 * ```ts
 * // Saturation 0 (to grey) then brightness 2, against brightness 2 (clipping at 255) then grey.
 * const a = Float32Array.of(200, 100, 0), b = a.slice();
 * colourJitter(a, { brightness: 2, contrast: 1, saturation: 0, order: [2, 0, 1] });
 * colourJitter(b, { brightness: 2, contrast: 1, saturation: 0, order: [0, 1, 2] });
 * if (Math.abs(a[0] - 2 * (0.299 * 200 + 0.587 * 100)) > 1e-3 || a[0] === b[0]) throw new Error("order");
 * ```
 */
export function colourJitter(rgb: Float32Array, f: JitterFactors): void {
  const n = rgb.length / 3;
  const clamp = (v: number) => v < 0 ? 0 : v > 255 ? 255 : v;
  const steps = [
    () => {
      if (f.brightness !== 1) { for (let i = 0; i < rgb.length; i++) rgb[i] = clamp(rgb[i] * f.brightness); }
    },
    () => {
      if (f.contrast === 1) return;
      let mean = 0;
      for (let p = 0; p < n; p++) mean += 0.299 * rgb[3 * p] + 0.587 * rgb[3 * p + 1] + 0.114 * rgb[3 * p + 2];
      mean /= n;
      for (let i = 0; i < rgb.length; i++) rgb[i] = clamp(mean + f.contrast * (rgb[i] - mean));
    },
    () => {
      if (f.saturation === 1) return;
      for (let p = 0; p < n; p++) {
        const g = 0.299 * rgb[3 * p] + 0.587 * rgb[3 * p + 1] + 0.114 * rgb[3 * p + 2];
        for (let c = 0; c < 3; c++) rgb[3 * p + c] = clamp(g + f.saturation * (rgb[3 * p + c] - g));
      }
    },
  ];
  for (const k of f.order ?? [0, 1, 2]) steps[k]();
}

/** A preprocessed sample. */
export interface Sample {
  /** [S, S, 3] normalised pixels, HWC. */
  image: Float32Array;
  /** [M, 4] as y1, x1, y2, x2, normalised to the network input (the matcher's convention). */
  boxes: Float32Array;
  /** [M] labels. */
  labels: Int32Array;
  /** Original image size. */
  width: number;
  height: number;
}

/** Whether `rect` covers the whole image of `record` (no crop). */
function isWholeImage(rect: CropRect, record: DetectionRecord): boolean {
  return rect.x === 0 && rect.y === 0 && rect.w === record.width && rect.h === record.height;
}

async function decodeCropResize(
  record: DetectionRecord,
  bytes: Uint8Array,
  rect: CropRect | null,
  size: number,
  flip: boolean,
  kernel: AugmentConfig["resize_kernel"],
): Promise<Uint8Array> {
  try {
    let img = sharp(bytes, { failOn: "error" });
    if (rect && !isWholeImage(rect, record)) {
      img = img.extract({ left: rect.x, top: rect.y, width: rect.w, height: rect.h });
    }
    img = img.resize(size, size, { fit: "fill", kernel: kernel === "linear" ? "linear" : kernel });
    if (flip) img = img.flop();
    const { data, info } = await img.removeAlpha().toColourspace("srgb").raw().toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new Error(`expected 3 channels, got ${info.channels}`);
    return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  } catch (e) {
    throw new InputError(`cannot decode image: ${(e as Error).message}`, {
      file: record.file,
      where: `image id ${record.imgId}`,
    });
  }
}

function normalise(rgb: Float32Array | Uint8Array, cfg: Pick<AugmentConfig, "mean" | "std">): Float32Array {
  const out = new Float32Array(rgb.length);
  const m = cfg.mean, inv = cfg.std.map((s) => 1 / s);
  for (let i = 0; i < rgb.length; i += 3) {
    out[i] = (rgb[i] - m[0]) * inv[0];
    out[i + 1] = (rgb[i + 1] - m[1]) * inv[1];
    out[i + 2] = (rgb[i + 2] - m[2]) * inv[2];
  }
  return out;
}

/** Reads the encoded image of a record: its bytes when it carries them, its place in a record file, else its file. */
export async function imageBytes(record: DetectionRecord): Promise<Uint8Array> {
  if (record.image) return record.image;
  const at = record.imageAt;
  if (at) {
    let h: fsp.FileHandle | undefined;
    try {
      h = await fsp.open(at.file, "r");
      const b = new Uint8Array(at.length);
      const { bytesRead } = await h.read(b, 0, at.length, at.offset);
      if (bytesRead !== at.length) throw new Error(`truncated: ${at.length} bytes at offset ${at.offset} expected`);
      return b;
    } catch (e) {
      throw new InputError(`cannot read image: ${(e as Error).message}`, {
        file: at.file,
        where: `image id ${record.imgId}`,
      });
    } finally {
      await h?.close();
    }
  }
  try {
    return await Deno.readFile(record.file);
  } catch (e) {
    throw new InputError(`cannot read image: ${(e as Error).message}`, {
      file: record.file,
      where: `image id ${record.imgId}`,
    });
  }
}

/**
 * One training sample: crop, resize to `size`, flip, jitter, normalise, with
 * boxes carried along (normalised y1, x1, y2, x2). Deterministic for a given
 * generator state. With a `cache`, an uncropped image is decoded once and then
 * taken from it, with the same pixels.
 */
export async function augmentSample(
  record: DetectionRecord,
  size: number,
  rng: Rng,
  cfg: AugmentConfig,
  cache?: ImageCache,
): Promise<Sample> {
  // Draw every random number before any await, so concurrency cannot reorder draws.
  const crop = randomSampleCrop(record.boxes, record.labels, record.width, record.height, rng, cfg);
  const flip = rng() < cfg.flip_prob;
  const f: JitterFactors = {
    brightness: uniform(rng, Math.max(0, 1 - cfg.brightness), 1 + cfg.brightness),
    contrast: uniform(rng, Math.max(0, 1 - cfg.contrast), 1 + cfg.contrast),
    saturation: uniform(rng, Math.max(0, 1 - cfg.saturation), 1 + cfg.saturation),
    // RandomColorAdjust shuffles the order of its adjustments per image (random_color_adjust_op.cc).
    order: shuffled([0, 1, 2], rng),
  };
  const raw = cache && isWholeImage(crop.rect, record)
    ? await wholeImage(record, size, flip, cfg.resize_kernel, cache)
    : await decodeCropResize(record, await imageBytes(record), crop.rect, size, flip, cfg.resize_kernel);
  const m = crop.labels.length;
  const boxes = new Float32Array(4 * m);
  for (let k = 0; k < m; k++) {
    const x1 = crop.boxes[4 * k] / crop.rect.w, y1 = crop.boxes[4 * k + 1] / crop.rect.h;
    const x2 = crop.boxes[4 * k + 2] / crop.rect.w, y2 = crop.boxes[4 * k + 3] / crop.rect.h;
    boxes[4 * k] = y1;
    boxes[4 * k + 1] = flip ? 1 - x2 : x1;
    boxes[4 * k + 2] = y2;
    boxes[4 * k + 3] = flip ? 1 - x1 : x2;
  }
  const rgb = Float32Array.from(raw);
  colourJitter(rgb, f);
  return { image: normalise(rgb, cfg), boxes, labels: crop.labels, width: record.width, height: record.height };
}

/** The uncropped image resized to `size`, kept in `cache` unflipped; a flip mirrors the kept copy. */
async function wholeImage(
  record: DetectionRecord,
  size: number,
  flip: boolean,
  kernel: AugmentConfig["resize_kernel"],
  cache: ImageCache,
): Promise<Uint8Array> {
  const rgb = await cache.get(
    record,
    `${size} ${kernel}`,
    async () => decodeCropResize(record, await imageBytes(record), null, size, false, kernel),
  );
  return flip ? mirrorRgb(rgb, size, size) : rgb;
}

/** Eval preprocessing: resize to `size` and normalise; boxes (if any) normalised y-first. */
export async function evalSample(record: DetectionRecord, size: number, cfg: AugmentConfig): Promise<Sample> {
  const raw = await decodeCropResize(record, await imageBytes(record), null, size, false, cfg.resize_kernel);
  const m = record.labels.length;
  const boxes = new Float32Array(4 * m);
  for (let k = 0; k < m; k++) {
    boxes[4 * k] = record.boxes[4 * k + 1] / record.height;
    boxes[4 * k + 1] = record.boxes[4 * k] / record.width;
    boxes[4 * k + 2] = record.boxes[4 * k + 3] / record.height;
    boxes[4 * k + 3] = record.boxes[4 * k + 2] / record.width;
  }
  return {
    image: normalise(raw, cfg),
    boxes,
    labels: Int32Array.from(record.labels),
    width: record.width,
    height: record.height,
  };
}

/** Undoes normalisation into RGB bytes, for pictures of what the network saw. */
export function denormalise(image: Float32Array, cfg: Pick<AugmentConfig, "mean" | "std">): Uint8Array {
  const out = new Uint8Array(image.length);
  for (let i = 0; i < image.length; i++) {
    const c = i % 3;
    out[i] = Math.max(0, Math.min(255, Math.round(image[i] * cfg.std[c] + cfg.mean[c])));
  }
  return out;
}
