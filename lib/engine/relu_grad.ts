/**
 * ReLU and ReLU6 gradients as one kernel, `SsdReluGrad`: `dx = dy` where
 * `0 < x < upper`, else 0 (`upper` is Infinity for ReLU, 6 for ReLU6). tfjs
 * composes them from ops (`dy * cast(step(x))` for ReLU, a comparison, a step,
 * a cast and two products for ReLU6), each a pass over the activation: on an
 * SSD300-VGG16 step at batch 4 the ReLU gradients took ~250 ms on wasm.
 * The kernel is one SIMD pass on the `wasm` backend (a JavaScript loop for
 * sizes not a multiple of 4, and on `cpu`). At exactly 6 the ReLU6 gradient
 * is 0, as in PyTorch's hardtanh backward (tfjs passes it there). A NaN input
 * gives a NaN gradient, as tfjs's step does, so a diverging run still shows.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs-core";
 * import { setBackend } from "./backend.ts";
 * await setBackend("cpu");
 * const dx = Array.from(reluGrad(tf.ones([5]), tf.tensor1d([-1, 0, 3, 6, 7]), 6).dataSync());
 * if (dx.join() !== "0,0,1,0,0") throw new Error(`got ${dx}`);
 * ```
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { checkFloat32, ioOf, type WasmLike } from "./kernel_io.ts";
import { simdKernels } from "./simd_kernels.ts";

/** Name of the kernel (registered for wasm and cpu). */
export const RELU_GRAD = "SsdReluGrad";

/** The gradient through ReLU (`upper` Infinity) or ReLU6 (`upper` 6) at `x`. */
export function reluGrad(dy: tf.Tensor, x: tf.Tensor, upper: number): tf.Tensor {
  if (!tf.getKernel(RELU_GRAD, tf.getBackend())) {
    // Other backends: the same rule from ops.
    return tf.tidy(() => {
      const pass = upper === Infinity ? tf.step(x) : tf.mul(tf.step(x), tf.step(tf.sub(upper, x)));
      return tf.mul(dy, pass);
    });
  }
  return tf.engine().runKernel(RELU_GRAD, { dy, x }, { upper }) as tf.Tensor;
}

const kernelFunc: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const { dy, x } = inputs as { dy: tf.TensorInfo; x: tf.TensorInfo };
  checkFloat32([dy, x], RELU_GRAD);
  const upper = attrs?.upper as number;
  const size = x.shape.reduce((a, b) => a * b, 1);
  const simd = size % 4 === 0 ? simdKernels(backend) : null;
  if (simd) {
    const dx = (backend as unknown as WasmLike).makeOutput(x.shape, "float32");
    const g = simd.offset(dy), v = simd.offset(x), out = simd.offset(dx);
    // Parts of whole 16-float (64-byte) groups.
    const parts = simd.split(size / 4, 4, 4);
    simd.parallel("relu_grad", parts.map(([i, len]) => [g + 16 * i, v + 16 * i, out + 16 * i, 4 * len, upper]));
    return dx;
  }
  const io = ioOf(backend).run([dy, x], [x.shape]);
  const [g, v] = io.ins, out = io.outs[0];
  const open = upper === Infinity; // ReLU passes +Infinity too
  for (let i = 0; i < size; i++) out[i] = v[i] !== v[i] ? NaN : v[i] > 0 && (open || v[i] < upper) ? g[i] : 0;
  return io.infos()[0];
};

/** Registers the kernel and makes it the gradient of tfjs's Relu and Relu6 (idempotent). */
export function registerReluGradients(): void {
  for (const backendName of ["wasm", "cpu"]) {
    if (!tf.getKernel(RELU_GRAD, backendName)) tf.registerKernel({ kernelName: RELU_GRAD, backendName, kernelFunc });
  }
  for (const [kernelName, upper] of [["Relu", Infinity], ["Relu6", 6]] as const) {
    tf.registerGradient({
      kernelName,
      inputsToSave: ["x"],
      gradFunc: (dy, saved) => ({ x: () => reluGrad(dy as tf.Tensor, saved[0], upper) }),
    });
  }
}
