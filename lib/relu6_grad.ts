/**
 * A faster ReLU6 gradient. tfjs computes it as `dy * cast((x <= 6) * step(x))`:
 * a comparison with a broadcast scalar, a step, a bool-to-float cast and two
 * products, which on wasm took 15% of an SSD300-MobileNetV2 training step.
 * `dy * step(x) * step(6 - x)` stays in float32 and runs 2x faster (4x150x150x32:
 * 13 vs 27 ms). It passes the gradient on the open interval 0 < x < 6, as
 * PyTorch's hardtanh backward does; tfjs also passes it at exactly x = 6.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";

/**
 * ReLU6's gradient: `dy` where `0 < x < 6`, else 0.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs-core";
 * import { setBackend } from "./backend.ts";
 * await setBackend("cpu");
 * const dx = Array.from(relu6Grad(tf.ones([5]), tf.tensor1d([-1, 0, 3, 6, 7])).dataSync());
 * if (dx.join() !== "0,0,1,0,0") throw new Error(`got ${dx}`);
 * ```
 */
export function relu6Grad(dy: tf.Tensor, x: tf.Tensor): tf.Tensor {
  return tf.tidy(() => tf.mul(dy, tf.mul(tf.step(x), tf.step(tf.sub(6, x)))));
}

/** Makes {@linkcode relu6Grad} the gradient of tfjs's Relu6 kernel (idempotent). */
export function registerRelu6Gradient(): void {
  tf.registerGradient({
    kernelName: "Relu6",
    inputsToSave: ["x"],
    gradFunc: (dy, saved) => ({ x: () => relu6Grad(dy as tf.Tensor, saved[0]) }),
  });
}
