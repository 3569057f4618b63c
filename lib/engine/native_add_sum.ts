/**
 * tfjs's `Add` of two float32 tensors of one shape and `Sum` over every axis
 * but the last (a conv bias's gradient) as native code on oneDNN's threads,
 * where batch norm runs there (batch_norm_kernel.ts). Each computes the
 * shipped wasm kernel's bits: an add is exact, and the sums add each
 * channel's values in the shipped kernel's order. The shipped `Sum` first
 * transposes the channels to the front, a copy of the whole tensor: on
 * SSD300-MobileNetV2's heads and VGG16's biased convs, a pass for nothing.
 * Every other call goes to the shipped kernels.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs-core";
 * import { setBackend } from "./backend.ts";
 * await setBackend("onnxruntime"); // native where oneDNN and a C compiler are here
 * const s = tf.sum(tf.tensor4d([1, 2, 3, 4, 5, 6], [1, 1, 3, 2]), [0, 1, 2]);
 * if (s.dataSync().join() !== "9,12") throw new Error(`${s.dataSync()}`);
 * await setBackend("wasm");
 * ```
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { nativeFor } from "./batch_norm_kernel.ts";
import { baseKernel, replaceKernel } from "./kernel_registry.ts";
import { simdKernels } from "./simd_kernels.ts";
import type { WasmLike } from "./kernel_io.ts";

type Info = tf.TensorInfo;

/** Below this many values the shipped kernels' single thread is as quick as a call here. */
const MIN_SIZE = 4096;

const sizeOf = (t: Info) => t.shape.reduce((a, b) => a * b, 1);

function shipped(name: string, args: Parameters<tf.KernelFunc>[0]) {
  const base = baseKernel("wasm", name);
  if (!base) throw new Error(`no shipped ${name} kernel for wasm`);
  return base.kernelFunc(args);
}

const add: tf.KernelFunc = (args) => {
  const { a, b } = args.inputs as { a: Info; b: Info };
  const simd = simdKernels(args.backend), nat = simd && nativeFor(simd);
  const same = a.dtype === "float32" && b.dtype === "float32" && a.shape.join() === b.shape.join();
  if (!nat || !same || sizeOf(a) < MIN_SIZE) return shipped("Add", args);
  const out = (args.backend as unknown as WasmLike).makeOutput(a.shape, "float32");
  nat.k.add(nat.at(simd.offset(a)), nat.at(simd.offset(b)), nat.at(simd.offset(out)), sizeOf(a));
  return out;
};

const sum: tf.KernelFunc = (args) => {
  const { x } = args.inputs as { x: Info };
  const { axis, keepDims } = args.attrs as unknown as { axis?: number | number[] | null; keepDims: boolean };
  const simd = simdKernels(args.backend), nat = simd && nativeFor(simd);
  const rank = x.shape.length;
  // No axis: over all of them (tf.sum(x)). The shipped kernel adds in the order the axes are given, so
  // only [0, 1, ..., rank - 2] in that order is ours.
  const given = axis === null || axis === undefined ? [...x.shape.keys()] : Array.isArray(axis) ? axis : [axis];
  const axes = given.map((a) => (a + rank) % rank);
  const leading = rank >= 2 && axes.length === rank - 1 && axes.every((a, i) => a === i);
  if (!nat || x.dtype !== "float32" || !leading || sizeOf(x) < MIN_SIZE) return shipped("Sum", args);
  const c = x.shape[rank - 1];
  const outShape = keepDims ? [...x.shape.slice(0, -1).map(() => 1), c] : [c];
  const out = (args.backend as unknown as WasmLike).makeOutput(outShape, "float32");
  nat.k.channelSums(nat.at(simd.offset(x)), sizeOf(x) / c, c, nat.at(simd.offset(out)));
  return out;
};

/** Registers both on wasm (the onnxruntime backend too), over the shipped kernels (idempotent). */
export function registerNativeAddSum(): void {
  replaceKernel("wasm", "Add", add);
  replaceKernel("wasm", "Sum", sum);
}
