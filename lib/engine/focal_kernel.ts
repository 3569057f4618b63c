/**
 * The sigmoid focal loss's sum and its gradient as one kernel, `SsdFocalLoss`
 * (called as `focalLossKernel` from ../custom_ops.ts; lib/loss.ts's
 * `focalLossSum` uses it). On `cpu`, and on `wasm` for a gamma other than 2,
 * it is the float64 loop `focalLossAndGrad`; on `wasm` with gamma 2 (the
 * tutorial's) it is one SIMD pass split over the kernel threads (`focal` in
 * simd_kernels.wat), its exp and log Cephes' float32 polynomials. The loop took
 * 19.5 ms of an SSD300-MobileNetV2 step at batch 4 ([4, 1917, 81] logits).
 * The SIMD pass's gradient is within a few float32 ulps of the loop's, and its
 * sum adds float32 terms in float64 per block of 64. Where batch norm runs as
 * native code on oneDNN's threads (batch_norm_kernel.ts), so does this pass
 * (native_kernels.c), bit for bit.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs-core";
 * import { focalLossKernel } from "../custom_ops.ts";
 * import { setBackend } from "./backend.ts";
 * await setBackend("wasm");
 * // A logit of 0 for a positive: p_t = 1/2, loss 0.75 * 1/4 * ln 2 (four times over).
 * const [sum, grad] = focalLossKernel(tf.zeros([4]), tf.ones([4]), { gamma: 2, alpha: 0.75 });
 * if (Math.abs(sum.dataSync()[0] - 4 * 0.1875 * Math.LN2) > 1e-6) throw new Error(`got ${sum.dataSync()}`);
 * tf.dispose([sum, grad]);
 * ```
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { FOCAL } from "../custom_ops.ts";
import { focalLossAndGrad } from "../loss.ts";
import { checkFloat32, ioOf, type WasmLike } from "./kernel_io.ts";
import { type SimdKernels, simdKernels } from "./simd_kernels.ts";
import { nativeFor } from "./batch_norm_kernel.ts";

type Info = tf.TensorInfo;

/** The SIMD pass over whole groups of four, then the loop over the rest; returns [sum, grad]. */
function focalSimd(k: SimdKernels, backend: WasmLike, x: Info, z: Info, alpha: number): Info[] {
  const n = x.shape.reduce((a, b) => a * b, 1), whole = n & ~3;
  const [sumI, gI] = [[], x.shape].map((s) => backend.makeOutput(s, "float32"));
  // Parts of whole 64-float blocks, so each part's blocks are the one-thread ones.
  const parts = k.split(whole >> 2, 4, 16);
  const acc = k.alloc(32 * parts.length);
  let sum = 0;
  try {
    new Float64Array(k.heap(), acc, 4 * parts.length).fill(0);
    const [xp, zp, gp] = [x, z, gI].map((i) => k.offset(i));
    const nat = nativeFor(k);
    if (nat) nat.k.focal(nat.at(xp), nat.at(zp), nat.at(gp), alpha, nat.at(acc), parts);
    else {
      k.parallel(
        "focal",
        parts.map(([r0, rows], i) => [xp + 16 * r0, zp + 16 * r0, gp + 16 * r0, 4 * rows, alpha, acc + 32 * i]),
      );
    }
    for (const v of new Float64Array(k.heap(), acc, 4 * parts.length)) sum += v;
  } finally {
    k.free(acc);
  }
  if (whole < n) {
    const [xv, zv, gv] = [x, z, gI].map((i) => backend.typedArrayFromHeap(i));
    const tail = focalLossAndGrad(xv.subarray(whole), zv.subarray(whole), { gamma: 2, alpha });
    gv.set(tail.grad, whole);
    sum += tail.sum;
  }
  backend.typedArrayFromHeap(sumI)[0] = sum;
  return [sumI, gI];
}

const kernelFunc: tf.KernelFunc = ({ inputs, backend, attrs = {} }) => {
  const { x, z } = inputs as { x: Info; z: Info };
  checkFloat32([x, z], FOCAL);
  const o = { gamma: attrs.gamma as number, alpha: attrs.alpha as number };
  const simd = o.gamma === 2 ? simdKernels(backend) : null;
  if (simd) return focalSimd(simd, backend as unknown as WasmLike, x, z, o.alpha);
  const io = ioOf(backend).run([x, z], [[], x.shape]);
  const { sum, grad } = focalLossAndGrad(io.ins[0], io.ins[1], o);
  io.outs[0][0] = sum;
  io.outs[1].set(grad);
  return io.infos();
};

/** Registers the kernel on wasm (the onnxruntime backend too) and cpu (idempotent). */
export function registerFocalKernel(): void {
  for (const backendName of ["wasm", "cpu"]) {
    if (!tf.getKernel(FOCAL, backendName)) tf.registerKernel({ kernelName: FOCAL, backendName, kernelFunc });
  }
}
