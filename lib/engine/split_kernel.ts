/**
 * `SplitV` on the wasm backend as block copies. SSD concatenates its heads'
 * outputs along the anchor axis ([B, A, 4] and [B, A, C]), so every training
 * step runs the concat's gradient, a split on axis 1. wasm splits through its
 * Slice kernel, which copies a non-contiguous slice one element at a time in
 * JavaScript: 2.4 ms for the 128 px demo's [16, 1364, 4] (about 4% of its step).
 * Each part is `outer` contiguous runs of the input, so `copyWithin` on the
 * heap moves it a run at a time.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs-core";
 * import { setBackend } from "./backend.ts";
 * await setBackend("wasm");
 * const [a, b] = tf.split(tf.tensor2d([[1, 2, 3], [4, 5, 6]]), [1, 2], 1);
 * if (a.dataSync().join() !== "1,4" || b.dataSync().join() !== "2,3,5,6") throw new Error("split wrongly");
 * tf.dispose([a, b]);
 * ```
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { baseKernel, replaceKernel } from "./kernel_registry.ts";

interface WasmHeap {
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  dataIdMap: { get(id: unknown): { memoryOffset: number } };
  wasm: { HEAPU8: Uint8Array };
}

const BYTES: Partial<Record<tf.DataType, number>> = { float32: 4, int32: 4, bool: 1 };

/** Splits `x` along `axis` into parts of `sizes` (they sum to the axis length) as block copies. */
function splitCopies(backend: WasmHeap, x: tf.TensorInfo, sizes: number[], axis: number): tf.TensorInfo[] {
  const bytes = BYTES[x.dtype]!;
  const outer = x.shape.slice(0, axis).reduce((a, b) => a * b, 1);
  const inner = x.shape.slice(axis + 1).reduce((a, b) => a * b, 1) * bytes; // bytes per step along the axis
  const row = x.shape[axis] * inner;
  const outs = sizes.map((s) =>
    backend.makeOutput([...x.shape.slice(0, axis), s, ...x.shape.slice(axis + 1)], x.dtype)
  );
  // Offsets only after every allocation: growing the heap may move nothing, but it replaces HEAPU8.
  const src = backend.dataIdMap.get(x.dataId).memoryOffset, heap = backend.wasm.HEAPU8;
  let at = 0;
  outs.forEach((out, k) => {
    const run = sizes[k] * inner, dst = backend.dataIdMap.get(out.dataId).memoryOffset;
    for (let o = 0; o < outer; o++) heap.copyWithin(dst + o * run, src + o * row + at, src + o * row + at + run);
    at += run;
  });
  return outs;
}

/** Registers the block-copy `SplitV` on wasm (the onnxruntime backend too); other dtypes keep wasm's own. */
export function registerSplitKernel(): void {
  const kernelFunc: tf.KernelFunc = (args) => {
    const x = args.inputs.x as tf.TensorInfo;
    const { numOrSizeSplits, axis } = args.attrs as unknown as { numOrSizeSplits: number | number[]; axis: number };
    const ax = tf.util.parseAxisParam(axis, x.shape)[0];
    if (BYTES[x.dtype] === undefined) return baseKernel("wasm", "SplitV")!.kernelFunc(args);
    const sizes = tf.backend_util.prepareSplitSize(x as tf.Tensor, numOrSizeSplits, ax);
    return splitCopies(args.backend as unknown as WasmHeap, x, sizes, ax);
  };
  replaceKernel("wasm", "SplitV", kernelFunc);
}
