/**
 * Typed-array access to the tensors of a kernel call, the same way on the
 * `wasm` backend (views of its heap, outputs allocated there) and the `cpu`
 * backend (its arrays, outputs made from new arrays). Kernels written once in
 * JavaScript run on both through it.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs-core";
 * import { setBackend } from "./backend.ts";
 * await setBackend("cpu");
 * const x = tf.tensor1d([1, 2, 3]);
 * const io = ioOf(tf.backend()).run([x], [[3]]);
 * io.outs[0].set(io.ins[0].map((v) => 2 * v));
 * const y = tf.engine().makeTensorFromTensorInfo(io.infos()[0]);
 * if (y.dataSync().join() !== "2,4,6") throw new Error("doubled wrongly");
 * tf.dispose([x, y]);
 * ```
 *
 * @module
 */
import type * as tf from "@tensorflow/tfjs-core";

type Info = tf.TensorInfo;

/** Reads and allocates float32 tensors of one backend as typed arrays. */
export interface Io {
  /** Allocates outputs of these shapes, then returns views of `inputs` and of the outputs. */
  run(inputs: Info[], shapes: number[][]): { ins: Float32Array[]; outs: Float32Array[]; infos: () => Info[] };
}

/** The parts of the tfjs wasm backend the kernels use. */
export interface WasmLike {
  makeOutput(shape: number[], dtype: tf.DataType): Info;
  typedArrayFromHeap(info: Info): Float32Array;
}

interface CpuLike {
  readSync(dataId: unknown): unknown;
  makeTensorInfo(shape: number[], dtype: tf.DataType, values: Float32Array): Info;
}

/** Typed-array access for `backendArg` (a wasm or cpu backend). */
export function ioOf(backendArg: unknown): Io {
  const wasm = backendArg as WasmLike, backend = backendArg as CpuLike;
  if (typeof wasm.typedArrayFromHeap === "function") {
    return {
      run(inputs, shapes) {
        const infos = shapes.map((s) => wasm.makeOutput(s, "float32"));
        // Views only after every allocation: growing the heap detaches older views.
        return {
          ins: inputs.map((i) => wasm.typedArrayFromHeap(i)),
          outs: infos.map((i) => wasm.typedArrayFromHeap(i)),
          infos: () => infos,
        };
      },
    };
  }
  return {
    run(inputs, shapes) {
      const outs = shapes.map((s) => new Float32Array(s.reduce((a, b) => a * b, 1)));
      return {
        ins: inputs.map((i) => backend.readSync(i.dataId) as Float32Array),
        outs,
        infos: () => outs.map((o, i) => backend.makeTensorInfo(shapes[i], "float32", o)),
      };
    },
  };
}

/** Throws unless every tensor is float32 (the kernels' only dtype). */
export function checkFloat32(infos: Info[], kernel: string): void {
  for (const i of infos) {
    if (i.dtype !== "float32") throw new Error(`${kernel}: float32 tensors only, got ${i.dtype}`);
  }
}
