/**
 * 1x1 convolutions with few input channels as one SIMD pass (`pointwise` of
 * simd_kernels.wat): each pair of NHWC rows is multiplied by the [K, Co] filter
 * in registers, 16 outputs at a time, and written once. With so few channels
 * to sum the output write bounds the conv, where onnxruntime's Gemm is slowest
 * (MobileNetV2's expansions, batch 4: 16 to 96 channels at 150x150 in 45 ms on
 * onnxruntime, 19-22 ms on XNNPACK, 14-18 ms here; 24 to 144 at 75x75 in 11.5,
 * 6-9 and 6-10 ms). The rows split over the kernel threads of simd_kernels.ts.
 *
 * It serves `Conv2D` on the wasm backend for a [1, 1, K, Co] filter at stride 1
 * without padding, K at most {@linkcode POINTWISE_MAX_K} and Co a multiple of 4,
 * float32 NHWC; other convs go to the shipped kernel (XNNPACK).
 *
 * @example
 * ```ts
 * // A 1x1 conv is a matmul over pixels: [rows, K] x [K, Co].
 * const ok = servesPointwise([4, 75, 75, 24], [1, 1, 24, 144], { strides: 1, pad: "valid" });
 * if (!ok) throw new Error("the expansion conv should be served");
 * ```
 *
 * @module
 */
import type * as tf from "@tensorflow/tfjs-core";
import { baseKernel, replaceKernel } from "./kernel_registry.ts";
import { simdKernels } from "./simd_kernels.ts";

type Info = tf.TensorInfo;

/**
 * Input channels up to which the SIMD kernel takes 1x1 convs. Above it the
 * filter's reuse lets XNNPACK's and onnxruntime's GEMMs win (96 to 576 at 19x19:
 * 8.3 ms XNNPACK, 1.9-5.3 onnxruntime, 8.8 here).
 */
export const POINTWISE_MAX_K = 32;

/** Whether the SIMD kernel serves this conv: 1x1, stride 1, no padding, K <= maxK, Co a multiple of 4, NHWC. */
export function servesPointwise(
  xShape: number[],
  filterShape: number[],
  attrs: { strides?: number | number[]; pad?: unknown; dataFormat?: string },
  maxK = POINTWISE_MAX_K,
): boolean {
  const [kh, kw, k, co] = filterShape;
  const strides = attrs.strides === undefined ? [1, 1] : [attrs.strides].flat();
  const pad = attrs.pad;
  const noPad = pad === "valid" || pad === "same" || pad === 0 ||
    (Array.isArray(pad) && pad.flat().every((p) => p === 0));
  return kh === 1 && kw === 1 && strides.every((s) => s === 1) && noPad && xShape[3] === k && k <= maxK &&
    co % 4 === 0 && (attrs.dataFormat === undefined || attrs.dataFormat === "NHWC");
}

/** Conv2D on the wasm backend: inputs {x, filter}, attrs {strides, pad, dataFormat, dilations}. */
const pointwiseKernel: tf.KernelFunc = (args) => {
  const { inputs, backend, attrs } = args;
  const { x, filter } = inputs as { x: Info; filter: Info };
  const simd = x.dtype === "float32" && filter.dtype === "float32" &&
      servesPointwise(x.shape, filter.shape, attrs as Parameters<typeof servesPointwise>[2])
    ? simdKernels(backend)
    : null;
  if (!simd) return baseKernel("wasm", "Conv2D")!.kernelFunc(args);
  const [n, h, w, k] = x.shape, co = filter.shape[3];
  const y = (backend as { makeOutput(s: number[], d: string): Info }).makeOutput([n, h, w, co], "float32");
  const xp = simd.offset(x), wp = simd.offset(filter), yp = simd.offset(y);
  // By rows, in pairs (the kernel's unit); each part writes only its own rows.
  simd.parallel(
    "pointwise",
    simd.split(n * h * w, co, 2).map(([r, rows]) => [xp + 4 * r * k, wp, yp + 4 * r * co, rows, k, co]),
  );
  return y;
};

/** Replaces the wasm backend's Conv2D with one that takes few-channel 1x1 convs (idempotent; the shipped one stays). */
export function registerPointwiseConvKernel(): void {
  replaceKernel("wasm", "Conv2D", pointwiseKernel);
}
