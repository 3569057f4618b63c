/**
 * One Momentum update of a parameter as one kernel, `SsdMomentum` (called as
 * `momentumUpdate` from ../custom_ops.ts): from w, its velocity v and gradient
 * g, the new w and v, with the float32 roundings of the same update composed
 * from ops (lib/optimizer.ts). Composed, each parameter takes six ops; the
 * demo's 80 parameters took 4.5 ms a step that way. On `wasm` it is one SIMD
 * pass (`momentum` in simd_kernels.wat), on `cpu` a loop. `SsdMomentumMany`
 * updates every parameter in one call, and `SsdMomentumInPlace` writes over
 * the old values, both as native code where batch norm runs natively.
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
import { MOMENTUM, MOMENTUM_IN_PLACE, MOMENTUM_MANY, type MomentumUpdate } from "../custom_ops.ts";
import { nativeFor } from "./batch_norm_kernel.ts";
import { checkFloat32, ioOf, type WasmLike } from "./kernel_io.ts";
import { simdKernels } from "./simd_kernels.ts";

/** The update's constants in float32, and the flags of the steps that are not the identity. */
function constantsOf(u: MomentumUpdate) {
  const f = Math.fround;
  const [m, wd, scale, lr, sens] = [f(u.momentum), f(u.weightDecay), f(u.scale), f(u.lr), f(u.sens)];
  return { m, wd, scale, lr, sens, flags: (sens !== 1 ? 1 : 0) | (wd !== 0 ? 2 : 0) | (scale !== 1 ? 4 : 0) };
}

const kernelFunc: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const { w, v, g } = inputs as { w: tf.TensorInfo; v: tf.TensorInfo; g: tf.TensorInfo };
  checkFloat32([w, v, g], MOMENTUM);
  const f = Math.fround;
  const { m, wd, scale, lr, sens, flags } = constantsOf(attrs as unknown as MomentumUpdate);
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

/**
 * `SsdMomentumMany`: every tensor's update in one call. Where batch norm runs as native code on oneDNN's
 * threads (batch_norm_kernel.ts), that is one native pass over all of them (native_kernels.c), split
 * evenly between the threads; elsewhere each tensor runs as `SsdMomentum`. The same bits either way.
 */
const manyFunc: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const updates = (attrs as unknown as { updates: MomentumUpdate[] }).updates;
  const ins = inputs as Record<string, tf.TensorInfo>;
  const item = (i: number) => ({ w: ins[`w${i}`], v: ins[`v${i}`], g: ins[`g${i}`] });
  const simd = simdKernels(backend), nat = simd && nativeFor(simd);
  if (!simd || !nat) {
    return updates.flatMap((u, i) => kernelFunc({ inputs: item(i), backend, attrs: { ...u } }) as tf.TensorInfo[]);
  }
  const n = updates.length;
  const at = new Uint32Array(5 * n), sizes = new Int32Array(n), consts = new Float32Array(5 * n);
  const flags = new Int32Array(n);
  const outs: tf.TensorInfo[] = [];
  updates.forEach((u, i) => {
    const { w, v, g } = item(i);
    checkFloat32([w, v, g], MOMENTUM_MANY);
    const wo = (backend as unknown as WasmLike).makeOutput(w.shape, "float32");
    const vo = (backend as unknown as WasmLike).makeOutput(w.shape, "float32");
    outs.push(wo, vo);
    [w, v, g, wo, vo].forEach((t, k) => (at[5 * i + k] = simd.offset(t) / 4));
    sizes[i] = w.shape.reduce((a, b) => a * b, 1);
    const c = constantsOf(u);
    consts.set([c.m, c.wd, c.scale, c.lr, c.sens], 5 * i);
    flags[i] = c.flags;
  });
  nat.k.momentumMany(nat.at(0), at, sizes, consts, flags);
  return outs;
};

/**
 * `SsdMomentumInPlace`: the same native pass, writing w' and v' over w and v. It runs only where the
 * native pass does, and only when no w or v shares its data (the backend's reference count is 1, and
 * no two items hold the same data); else it outputs 0 and changes nothing.
 */
const inPlaceFunc: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const updates = (attrs as unknown as { updates: MomentumUpdate[] }).updates;
  const ins = inputs as Record<string, tf.TensorInfo | undefined>;
  const wasm = backend as unknown as WasmLike & { refCount(dataId: unknown): number };
  const flag = wasm.makeOutput([], "float32");
  const simd = simdKernels(backend), nat = simd && nativeFor(simd);
  const written = updates.flatMap((_, i) => [ins[`w${i}`], ins[`v${i}`]]).filter((t) => t !== undefined);
  const ids = new Set(written.map((t) => t.dataId));
  if (!simd || !nat || ids.size !== written.length || written.some((t) => wasm.refCount(t.dataId) !== 1)) {
    wasm.typedArrayFromHeap(flag)[0] = 0;
    return flag;
  }
  const n = updates.length;
  const at = new Uint32Array(5 * n), sizes = new Int32Array(n), consts = new Float32Array(5 * n);
  const flags = new Int32Array(n);
  updates.forEach((u, i) => {
    const w = ins[`w${i}`], v = ins[`v${i}`]!, g = ins[`g${i}`]!;
    checkFloat32([v, g, ...(w ? [w] : [])], MOMENTUM_IN_PLACE);
    const c = constantsOf(u);
    // Without w there is no decay term (it reads w) and no w' (flag 8).
    if (!w && c.flags & 2) throw new Error(`${MOMENTUM_IN_PLACE}: item ${i} has a weight decay but no w`);
    at.set([w ? simd.offset(w) / 4 : 0, simd.offset(v) / 4, simd.offset(g) / 4], 5 * i);
    sizes[i] = v.shape.reduce((a, b) => a * b, 1);
    consts.set([c.m, c.wd, c.scale, c.lr, c.sens], 5 * i);
    flags[i] = c.flags | 16 | (w ? 0 : 8);
  });
  nat.k.momentumMany(nat.at(0), at, sizes, consts, flags);
  wasm.typedArrayFromHeap(flag)[0] = 1;
  return flag;
};

/** Registers the kernels on wasm (the onnxruntime backend too) and cpu (idempotent). */
export function registerMomentumKernel(): void {
  for (const backendName of ["wasm", "cpu"]) {
    if (!tf.getKernel(MOMENTUM, backendName)) tf.registerKernel({ kernelName: MOMENTUM, backendName, kernelFunc });
    if (!tf.getKernel(MOMENTUM_MANY, backendName)) {
      tf.registerKernel({ kernelName: MOMENTUM_MANY, backendName, kernelFunc: manyFunc });
    }
  }
  // In place only where the native pass runs (oneDNN's threads): wasm and the onnxruntime backend.
  if (!tf.getKernel(MOMENTUM_IN_PLACE, "wasm")) {
    tf.registerKernel({ kernelName: MOMENTUM_IN_PLACE, backendName: "wasm", kernelFunc: inPlaceFunc });
  }
}
