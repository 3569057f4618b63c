/**
 * One Momentum update of a parameter as one kernel, `SsdMomentum` (called as
 * `momentumUpdate` from ../custom_ops.ts): from w, its velocity v and gradient
 * g, the new w and v, with the float32 roundings of the same update composed
 * from ops (lib/optimizer.ts). Composed, each parameter takes six ops; the
 * demo's 80 parameters took 4.5 ms a step that way. On `wasm` it is one SIMD
 * pass (`momentum` in simd_kernels.wat), on `cpu` a loop.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs-core";
 * import { momentumUpdate } from "../custom_ops.ts";
 * import { setBackend } from "./backend.ts";
 * await setBackend("cpu");
 * // v = 0.9 * 1 + 2 = 2.9; w = 1 - 0.5 * 2.9 = -0.45
 * const [w, v] = momentumUpdate(tf.ones([4]), tf.ones([4]), tf.fill([4], 2), {
 *   momentum: 0.9, weightDecay: 0, scale: 1, lr: 0.5, sens: 1,
 * });
 * if (Math.abs(w.dataSync()[0] + 0.45) > 1e-6 || Math.abs(v.dataSync()[0] - 2.9) > 1e-6) throw new Error("wrong step");
 * ```
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { MOMENTUM, type MomentumUpdate } from "../custom_ops.ts";
import { checkFloat32, ioOf } from "./kernel_io.ts";
import { simdKernels } from "./simd_kernels.ts";

const kernelFunc: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const { w, v, g } = inputs as { w: tf.TensorInfo; v: tf.TensorInfo; g: tf.TensorInfo };
  checkFloat32([w, v, g], MOMENTUM);
  const u = attrs as unknown as MomentumUpdate;
  const f = Math.fround;
  const [m, wd, scale, lr, sens] = [f(u.momentum), f(u.weightDecay), f(u.scale), f(u.lr), f(u.sens)];
  const flags = (sens !== 1 ? 1 : 0) | (wd !== 0 ? 2 : 0) | (scale !== 1 ? 4 : 0);
  const size = w.shape.reduce((a, b) => a * b, 1);
  const io = ioOf(backend).run([w, v, g], [w.shape, w.shape]);
  const [wi, vi, gi] = io.ins, [wo, vo] = io.outs;
  const simd = simdKernels(backend);
  // SIMD over whole groups of four; the rest (and everything on cpu) in the loop below.
  let start = 0;
  if (simd) {
    const infos = io.infos();
    const [wp, vp, gp] = [w, v, g].map((t) => simd.offset(t)), [wop, vop] = infos.map((t) => simd.offset(t));
    const parts = simd.split(size >> 2, 4);
    simd.parallel(
      "momentum",
      parts.map((
        [i, n],
      ) => [wp + 16 * i, vp + 16 * i, gp + 16 * i, wop + 16 * i, vop + 16 * i, 4 * n, m, wd, scale, lr, sens, flags]),
    );
    start = size & ~3;
  }
  for (let i = start; i < size; i++) {
    let s = gi[i];
    if (flags & 1) s = f(s * sens);
    if (flags & 2) s = f(s + f(wi[i] * wd));
    if (flags & 4) s = f(s * scale);
    const nv = f(f(vi[i] * m) + s);
    vo[i] = nv;
    wo[i] = f(wi[i] - f(nv * lr));
  }
  return io.infos();
};

/** Registers the kernel on wasm (the onnxruntime backend too) and cpu (idempotent). */
export function registerMomentumKernel(): void {
  for (const backendName of ["wasm", "cpu"]) {
    if (!tf.getKernel(MOMENTUM, backendName)) tf.registerKernel({ kernelName: MOMENTUM, backendName, kernelFunc });
  }
}
