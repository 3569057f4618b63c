/**
 * The depthwise conv (multiplier 1) and its input gradient as one SIMD gather
 * (`dw_gather` of simd_kernels.wat): each destination pixel sums, over the
 * kernel taps, a source pixel times the tap's weights, in registers 16
 * channels at a time (two neighbouring pixels share each load of the
 * weights), and is written once. Index tables say which source row
 * and column each tap reads (stride, dilation, padding and the gradient's flip
 * live in them), so the forward pass and the input gradient share the kernel.
 *
 * It replaces the wasm backend's XNNPACK depthwise forward, which runs on one
 * thread, when there are kernel threads (simd_kernels.ts) to split the images
 * (or, for one image, the rows) over. Other cases (one thread, a channel
 * multiplier, channels not a multiple of 4, NCHW, int32) go to the shipped kernel.
 *
 * @example
 * ```ts
 * // A 3-tap filter at stride 1, padding 1, over 4 columns: output column 0's
 * // taps read columns -1 (none), 0 and 1.
 * const cols = forwardTable(4, 3, 1, 1, 1, 4);
 * if (cols.slice(0, 3).join() !== "-1,0,1") throw new Error(`got ${cols}`);
 * ```
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { baseKernel, replaceKernel } from "./kernel_registry.ts";
import type { SimdKernels } from "./simd_kernels.ts";
import { simdKernels } from "./simd_kernels.ts";

type Info = tf.TensorInfo;

/**
 * For each output row (or column) and tap of a forward conv: the input row it
 * reads, or -1 in the padding. `out` outputs, `k` taps, stride `s`, dilation
 * `d`, `pad` leading padding, `size` input rows.
 */
export function forwardTable(out: number, k: number, s: number, d: number, pad: number, size: number): Int32Array {
  // [out, k]
  return Int32Array.from({ length: out * k }, (_, i) => {
    const r = Math.floor(i / k) * s - pad + (i % k) * d;
    return r >= 0 && r < size ? r : -1;
  });
}

/**
 * For each input row (or column) and tap of a forward conv: the output row
 * whose gradient reaches it through that tap, or -1. `size` input rows, `k`
 * taps, stride `s`, dilation `d`, `pad` leading padding, `out` output rows.
 */
export function inputGradTable(size: number, k: number, s: number, d: number, pad: number, out: number): Int32Array {
  // [size, k]
  return Int32Array.from({ length: size * k }, (_, i) => {
    const t = Math.floor(i / k) + pad - (i % k) * d;
    return t >= 0 && t % s === 0 && t / s < out ? t / s : -1;
  });
}

/**
 * Runs the gather: `dst` [N, H, W, C] (a new tensor of `dstShape`) from `src`
 * [N, SH, SW, C] and `filter` [KH, KW, C, 1] through `rows` [H, KH] and `cols`
 * [W, KW] (tables of {@linkcode forwardTable} or {@linkcode inputGradTable}).
 */
export function depthwiseGather(
  simd: SimdKernels,
  backend: unknown,
  src: Info,
  filter: Info,
  dstShape: number[],
  rows: Int32Array,
  cols: Int32Array,
): Info {
  const [n, h, w, c] = dstShape;
  const [, sh, sw] = src.shape;
  const [kh, kw] = filter.shape;
  const dst = (backend as { makeOutput(s: number[], d: string): Info }).makeOutput(dstShape, "float32");
  const scratch = simd.alloc(4 * (rows.length + cols.length) + 16);
  try {
    new Int32Array(simd.heap(), scratch, rows.length).set(rows);
    new Int32Array(simd.heap(), scratch + 4 * rows.length, cols.length).set(cols);
    const sp = simd.offset(src), wp = simd.offset(filter), dp = simd.offset(dst), ct = scratch + 4 * rows.length;
    const image = h * w * c, srcImage = sh * sw * c;
    // By images, each writing only its own; one image by its rows.
    const calls = n > 1
      ? simd.split(n, image).map(([b, nb]) => [sp + 4 * b * srcImage, wp, dp + 4 * b * image, scratch, ct, nb, h])
      : simd.split(h, w * c).map(([y, ny]) => [sp, wp, dp + 4 * y * w * c, scratch + 4 * y * kh, ct, 1, ny]);
    simd.parallel("dw_gather", calls.map((a) => [...a, w, c, sh, sw, kh, kw]));
  } finally {
    simd.free(scratch);
  }
  return dst;
}

/** Whether the gather serves this depthwise conv: float32, multiplier 1, channels a multiple of 4, NHWC. */
function gathers(x: Info, filter: Info, attrs: tf.NamedAttrMap | undefined): boolean {
  const format = attrs?.dataFormat as string | undefined;
  return x.dtype === "float32" && filter.dtype === "float32" && filter.shape[3] === 1 && x.shape[3] % 4 === 0 &&
    (format === undefined || format === "NHWC");
}

/** DepthwiseConv2dNative on the wasm backend: inputs {x, filter}, attrs {strides, pad, dilations, ...}. */
const depthwiseConvKernel: tf.KernelFunc = (args) => {
  const { inputs, backend, attrs } = args;
  const { x, filter } = inputs as { x: Info; filter: Info };
  const simd = gathers(x, filter, attrs) ? simdKernels(backend) : null;
  // On one thread XNNPACK is up to 1.15x faster (batch 4, 150x150x32: 6.3 vs 7.4 ms); on two the gather is 1.6-2.0x
  // faster on MobileNetV2's big layers.
  if (!simd || simd.threads < 2) return baseKernel("wasm", "DepthwiseConv2dNative")!.kernelFunc(args);
  const a = attrs as { strides: number | number[]; pad: number | "same" | "valid"; dilations?: number | number[] };
  const pair = (v: number | number[] | undefined) => v === undefined ? [1, 1] : typeof v === "number" ? [v, v] : v;
  const info = tf.backend_util.computeConv2DInfo(
    x.shape as [number, number, number, number],
    filter.shape as [number, number, number, number],
    pair(a.strides) as [number, number],
    pair(a.dilations) as [number, number],
    a.pad,
    attrs!.dimRoundingMode as "floor" | "round" | "ceil" | undefined,
    true,
  );
  const [n, h, w, c] = x.shape, [kh, kw] = filter.shape;
  const { outHeight: oh, outWidth: ow } = info;
  const rows = forwardTable(oh, kh, info.strideHeight, info.dilationHeight, info.padInfo.top, h);
  const cols = forwardTable(ow, kw, info.strideWidth, info.dilationWidth, info.padInfo.left, w);
  return depthwiseGather(simd, backend, x, filter, [n, oh, ow, c], rows, cols);
};

/** Replaces the wasm backend's DepthwiseConv2dNative with the gather (idempotent; the shipped one stays). */
export function registerDepthwiseConvKernel(): void {
  replaceKernel("wasm", "DepthwiseConv2dNative", depthwiseConvKernel);
}
