/**
 * face-api's input pipeline for its SSD-MobileNetV1 (`NetInput.toBatchTensor(512, false)`
 * and `SsdMobilenetv1.forwardInput`), and its mapping of boxes back to pixels
 * (`SsdMobilenetv1.locateFaces`), so that a model imported from face-api sees
 * the same numbers and reports the same boxes:
 *
 * 1. zero-pad the image at the bottom or the right to a square of side max(H, W)
 *    (`padToSquare(img, false)`);
 * 2. resize bilinearly to 512x512 with tfjs's `resizeBilinear(x, size, false, false)`:
 *    source = destination * in / out, no half-pixel offset, clamped at the edge
 *    (ONNX `Resize` linear with `coordinate_transformation_mode` "asymmetric"); this
 *    is not what sharp or PIL compute;
 * 3. scale to [-1, 1] with `x / 127.5 - 1`.
 *
 * Boxes come out normalised to the padded square. face-api maps them to pixels
 * through `computeReshapedDimensions`, which rounds the resized image's sides:
 * x is scaled by `512 / round(W * 512 / S) * W` rather than by S, so a 400x500
 * image maps x by 499.51 instead of 500. {@linkcode faceapiBoxScale} gives those
 * factors, to pass as the post-processing's `imageSize`.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import sharp from "sharp";
import { setBackend } from "./engine/mod.ts";
import { InputError } from "./errors.ts";

/** face-api's SSD input side. */
export const FACEAPI_INPUT_SIZE = 512;

/**
 * The network input of one RGB image [H, W, 3] (bytes 0-255), as face-api builds it.
 * Runs on the active tfjs backend; face-api's own numbers are those of the same backend.
 *
 * @returns [1, size, size, 3] float32 in [-1, 1].
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * import { setBackend } from "./engine/mod.ts";
 * await setBackend("cpu");
 * // A 1x2 image [0, 255]: padded to 2x2 with a zero row below, resized 2 -> 4 (asymmetric: source = dst / 2).
 * const x = faceapiInput(new Uint8Array([0, 0, 0, 255, 255, 255]), 1, 2, 4);
 * const red = Array.from(x.dataSync()).filter((_, i) => i % 3 === 0);
 * assertEquals(red.slice(0, 4), [-1, 0, 1, 1]); // row 0: 0, 127.5, 255, 255 (clamped)
 * assertEquals(red.slice(4, 8), [-1, -0.5, 0, 0]); // row 1: halfway to the zero padding
 * x.dispose();
 * ```
 */
export function faceapiInput(rgb: Uint8Array, height: number, width: number, size = FACEAPI_INPUT_SIZE): tf.Tensor4D {
  if (rgb.length !== height * width * 3) {
    throw new RangeError(`expected ${height}x${width}x3 = ${height * width * 3} bytes, got ${rgb.length}`);
  }
  return tf.tidy(() => {
    const side = Math.max(height, width);
    // [1, H, W, 3] -> [1, S, S, 3]: zeros below or to the right (face-api concatenates zeros; same values).
    let x: tf.Tensor4D = tf.tensor4d(Float32Array.from(rgb), [1, height, width, 3]);
    if (height !== width) x = tf.pad(x, [[0, 0], [0, side - height], [0, side - width], [0, 0]]);
    if (side !== size) x = tf.image.resizeBilinear(x, [size, size], false, false);
    return tf.sub(tf.div(x, 127.5), 1) as tf.Tensor4D;
  });
}

/**
 * Pixel factors face-api applies to boxes normalised to the padded square: pass
 * them as `imageSize` to the post-processing, with clipping after NMS.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * // 400 wide, 500 high: round(400 * 512 / 500) = 410, so x maps by 512 / 410 * 400.
 * assertEquals(faceapiBoxScale(500, 400), { height: 500, width: 512 / 410 * 400 });
 * ```
 */
export function faceapiBoxScale(
  height: number,
  width: number,
  size = FACEAPI_INPUT_SIZE,
): { height: number; width: number } {
  // computeReshapedDimensions: scale = size / max(h, w), sides rounded.
  const scale = size / Math.max(height, width);
  return {
    height: size / Math.round(height * scale) * height,
    width: size / Math.round(width * scale) * width,
  };
}

/** An image decoded to RGB bytes. */
export interface RgbImage {
  /** [H, W, 3] bytes. */
  data: Uint8Array;
  height: number;
  width: number;
}

/**
 * Decodes an image file's bytes to RGB with sharp (libvips), without applying
 * EXIF orientation, as face-api's node examples decode (tfjs-node `decodeImage`
 * does not rotate either). Alpha is dropped; grey becomes RGB.
 */
export async function decodeRgb(bytes: Uint8Array, file?: string): Promise<RgbImage> {
  try {
    const { data, info } = await sharp(bytes, { failOn: "error" }).removeAlpha().toColourspace("srgb").raw()
      .toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new Error(`expected 3 channels, got ${info.channels}`);
    return {
      data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
      height: info.height,
      width: info.width,
    };
  } catch (e) {
    throw new InputError(`cannot decode image: ${(e as Error).message}`, { file });
  }
}

let backendReady: Promise<unknown> | null = null;

/**
 * The whole input side for one encoded image: decoded, preprocessed as face-api
 * does, with the box factors. `input` is [size * size * 3] float32 (NHWC, batch 1).
 */
export async function faceapiPreprocessImage(
  bytes: Uint8Array,
  options: { size?: number; file?: string } = {},
): Promise<{ input: Float32Array; height: number; width: number; boxScale: { height: number; width: number } }> {
  const size = options.size ?? FACEAPI_INPUT_SIZE;
  // The resize runs on tfjs. A caller that never chose a backend (ONNX inference) gets wasm, face-api's
  // reference backend here; one that did keeps its own. Concurrent calls share the one initialisation.
  backendReady ??= tf.engine().backendName ? Promise.resolve() : setBackend("wasm");
  await backendReady;
  const img = await decodeRgb(bytes, options.file);
  const x = faceapiInput(img.data, img.height, img.width, size);
  const input = await x.data() as Float32Array;
  x.dispose();
  return { input, height: img.height, width: img.width, boxScale: faceapiBoxScale(img.height, img.width, size) };
}
