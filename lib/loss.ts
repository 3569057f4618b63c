/**
 * SSD training losses. The default is the tutorial's: a sigmoid focal loss
 * over every class column (background included, as its `class_loss` one-hots
 * all 81 columns) plus SmoothL1 on the matched default boxes, both summed and
 * divided by the number of matched boxes in the batch. The alternative is the
 * SSD paper's softmax cross-entropy with 3:1 hard negative mining.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import type { Spec } from "./config.ts";
import { focalLossKernel, hasFocalKernel } from "./custom_ops.ts";

/** The `loss` section of a model config. */
export interface LossConfig {
  /** `focal` (tutorial, ModelZoo) or `softmax_hnm` (the SSD paper). */
  kind: "focal" | "softmax_hnm";
  /** Focal loss focusing exponent (tutorial 2). */
  gamma: number;
  /** Focal loss weight of the positive class (tutorial 0.75). */
  alpha: number;
  /** Negatives kept per positive in hard negative mining (paper 3). */
  neg_pos_ratio: number;
  /** Weight of the localisation loss (paper's alpha, 1). */
  loc_weight: number;
}

/** Spec fragment of the `loss` section. */
export const lossSpec: Spec = {
  type: "object",
  fields: {
    kind: { type: "string", enum: ["focal", "softmax_hnm"], default: "focal" },
    gamma: { type: "number", min: 0, default: 2 },
    alpha: { type: "number", min: 0, max: 1, default: 0.75 },
    neg_pos_ratio: { type: "number", min: 0, default: 3 },
    loc_weight: { type: "number", min: 0, default: 1 },
  },
};

/**
 * Element-wise SmoothL1 with beta 1 (MindSpore `nn.SmoothL1Loss` default):
 * 0.5 d^2 where |d| < 1, else |d| - 0.5.
 */
export function smoothL1(pred: tf.Tensor, target: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const d = tf.abs(tf.sub(pred, target));
    // min(|d|, 1) splits the two pieces without a comparison on the gradient path.
    const small = tf.minimum(d, 1);
    return tf.add(tf.mul(0.5, tf.square(small)), tf.sub(d, small));
  });
}

/**
 * Sigmoid focal loss per element (the tutorial's `class_loss`):
 * `(1 - p_t)^gamma * alpha_t * BCE(logits, onehot)`.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs-core";
 * import { setBackend } from "./engine/mod.ts";
 * await setBackend("cpu");
 * // A logit of 0 for a positive: p_t = 0.5, BCE = ln 2, weight 0.5^2 * 0.75.
 * const v = focalLoss(tf.tensor2d([[0]]), tf.tensor2d([[1]]), { gamma: 2, alpha: 0.75 }).dataSync()[0];
 * if (Math.abs(v - 0.25 * 0.75 * Math.LN2) > 1e-6) throw new Error(`got ${v}`);
 * ```
 */
export function focalLoss(logits: tf.Tensor, onehot: tf.Tensor, o: { gamma: number; alpha: number }): tf.Tensor {
  return tf.tidy(() => {
    // Stable BCE with logits: max(x, 0) - x z + log(1 + exp(-|x|)).
    const bce = tf.add(tf.sub(tf.relu(logits), tf.mul(logits, onehot)), tf.log1p(tf.exp(tf.neg(tf.abs(logits)))));
    const p = tf.sigmoid(logits);
    const pt = tf.add(tf.mul(onehot, p), tf.mul(tf.sub(1, onehot), tf.sub(1, p)));
    const modulating = o.gamma === 2 ? tf.square(tf.sub(1, pt)) : tf.pow(tf.sub(1, pt), o.gamma);
    const alphaT = tf.add(tf.mul(onehot, o.alpha), tf.mul(tf.sub(1, onehot), 1 - o.alpha));
    return tf.mul(tf.mul(modulating, alphaT), bce);
  });
}

/**
 * Sum of {@linkcode focalLoss} over all elements and its gradient with respect
 * to the logits, in one pass over plain arrays (sums in float64):
 * dL/dx = alpha_t (2z - 1) (1 - p_t)^gamma (gamma p_t log p_t - (1 - p_t)).
 * `z` is the one-hot target (0 or 1 per element).
 *
 * @example
 * ```ts
 * // A logit of 0 for a positive: p_t = 1/2, loss 0.75 * 1/4 * ln 2, dL/dx = 0.75 * 1/4 * (2 * 1/2 * ln 1/2 - 1/2).
 * const { sum, grad } = focalLossAndGrad(Float32Array.of(0), Float32Array.of(1), { gamma: 2, alpha: 0.75 });
 * if (Math.abs(sum - 0.1875 * Math.LN2) > 1e-9) throw new Error(`got ${sum}`);
 * if (Math.abs(grad[0] - 0.1875 * (Math.log(0.5) - 0.5)) > 1e-7) throw new Error(`got ${grad[0]}`);
 * ```
 */
export function focalLossAndGrad(
  x: ArrayLike<number>,
  z: ArrayLike<number>,
  o: { gamma: number; alpha: number },
): { sum: number; grad: Float32Array } {
  const grad = new Float32Array(x.length);
  const negAlpha = 1 - o.alpha, square = o.gamma === 2;
  let sum = 0;
  for (let i = 0; i < x.length; i++) {
    const xi = x[i], zi = z[i];
    const e = Math.exp(-Math.abs(xi));
    // Stable BCE with logits (= -log p_t): max(x, 0) - x z + log(1 + exp(-|x|)).
    const bce = Math.max(xi, 0) - xi * zi + Math.log1p(e);
    const p = xi >= 0 ? 1 / (1 + e) : e / (1 + e);
    const q = zi * (1 - p) + (1 - zi) * p; // 1 - p_t
    const modulating = square ? q * q : Math.pow(q, o.gamma);
    sum += modulating * (zi * o.alpha + (1 - zi) * negAlpha) * bce;
    // alpha_t (2z - 1) = alpha z - (1 - alpha)(1 - z) = z - (1 - alpha)
    grad[i] = (zi - negAlpha) * modulating * (-o.gamma * (1 - q) * bce - q);
  }
  return { sum, grad };
}

/**
 * Sum of {@linkcode focalLoss} over all elements, with its analytic gradient.
 * One pass of {@linkcode focalLossAndGrad} computes both: composed from tfjs
 * ops, the loss and its gradient took a dozen passes over the logits (on
 * SSD300-MobileNetV2 at batch 4, [4, 1917, 81]: ~45 ms of a 630 ms step), and
 * autodiff kept as many logit-sized tensors alive until the backward pass
 * (51150 x 81 floats each per 640 px image). This keeps only the gradient.
 * On wasm and cpu the pass is a kernel (engine/focal_kernel.ts: SIMD on wasm).
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs-core";
 * import { setBackend } from "./engine/mod.ts";
 * await setBackend("cpu");
 * // A logit of 0 for a positive: p_t = 1/2, dL/dx = 0.75 * 1/4 * (2 * 1/2 * ln 1/2 - 1/2).
 * const g = tf.grad((x: tf.Tensor) => focalLossSum(x, tf.tensor2d([[1]]), { gamma: 2, alpha: 0.75 }))(tf.tensor2d([[0]]));
 * const want = 0.75 * 0.25 * (Math.log(0.5) - 0.5);
 * if (Math.abs(g.dataSync()[0] - want) > 1e-6) throw new Error(`got ${g.dataSync()[0]}`);
 * ```
 */
export function focalLossSum(logits: tf.Tensor, onehot: tf.Tensor, o: { gamma: number; alpha: number }): tf.Scalar {
  const f = tf.customGrad((...args) => {
    const [x, z] = args as tf.Tensor[];
    const save = args[2] as (t: tf.Tensor[]) => void;
    let value: tf.Scalar, g: tf.Tensor; // g: [..., C] dL/dx
    if (hasFocalKernel()) [value, g] = focalLossKernel(x, z, o);
    else if (HOST_BACKENDS.has(tf.getBackend())) {
      const { sum, grad } = focalLossAndGrad(x.dataSync(), z.dataSync(), o);
      [value, g] = [tf.scalar(sum), tf.tensor(grad, x.shape)];
    } else [value, g] = focalLossAndGradOps(x, z, o);
    save([g]);
    return {
      value,
      gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => [
        tf.mul(saved[0], dy as tf.Tensor),
        tf.zerosLike(z),
      ],
    };
  });
  return tf.tidy(() => f(logits, onehot) as tf.Scalar);
}

/**
 * Backends whose tensors live in host memory, where one pass over plain arrays
 * is cheapest. Elsewhere (webgpu) reading the logits back would stall the
 * device every step, so {@linkcode focalLossAndGradOps} computes the same on it.
 */
const HOST_BACKENDS = new Set(["wasm", "cpu", "tensorflow"]);

/**
 * {@linkcode focalLossAndGrad} composed from tfjs ops, for backends that keep
 * tensors on a device: the sum (in float32) and dL/dx, same shape as `x`.
 */
export function focalLossAndGradOps(
  x: tf.Tensor,
  z: tf.Tensor,
  o: { gamma: number; alpha: number },
): [tf.Scalar, tf.Tensor] {
  return tf.tidy(() => {
    const bce = tf.add(tf.sub(tf.relu(x), tf.mul(x, z)), tf.log1p(tf.exp(tf.neg(tf.abs(x)))));
    const p = tf.sigmoid(x);
    const q = tf.add(tf.mul(z, tf.sub(1, p)), tf.mul(tf.sub(1, z), p)); // 1 - p_t
    const modulating = o.gamma === 2 ? tf.square(q) : tf.pow(q, o.gamma);
    const alphaT = tf.add(tf.mul(z, o.alpha), tf.mul(tf.sub(1, z), 1 - o.alpha));
    const sum = tf.sum(tf.mul(tf.mul(modulating, alphaT), bce)) as tf.Scalar;
    // alpha_t (2z - 1) = z - (1 - alpha); p_t = 1 - q
    const inner = tf.sub(tf.mul(tf.mul(tf.sub(1, q), bce), -o.gamma), q);
    const grad = tf.mul(tf.mul(tf.sub(z, 1 - o.alpha), modulating), inner);
    return [sum, grad];
  });
}

/** The loss parts of one batch. */
export interface LossParts {
  total: tf.Scalar;
  loc: tf.Scalar;
  cls: tf.Scalar;
}

/**
 * The SSD loss of a batch.
 *
 * - `locPred` [N, A, 4], `clsLogits` [N, A, C] from the network;
 * - `locTarget` [N, A, 4] and `labels` [N, A] (int, 0 background) from the matcher.
 *
 * Both parts are divided by the number of matched boxes in the whole batch
 * (at least 1), as the tutorial's `forward_fn` does. `normalizer` overrides
 * that count: a replica computing part of a batch passes the whole batch's
 * count, so the parts' losses and gradients add up to the whole batch's.
 */
export function ssdLoss(
  locPred: tf.Tensor3D,
  clsLogits: tf.Tensor3D,
  locTarget: tf.Tensor3D,
  labels: tf.Tensor2D,
  cfg: LossConfig,
  normalizer?: number,
): LossParts {
  return tf.tidy(() => {
    const numClasses = clsLogits.shape[2];
    const pos = tf.cast(tf.greater(labels, 0), "float32"); // [N, A]
    const numMatched = normalizer === undefined ? tf.maximum(tf.sum(pos), 1) : tf.scalar(Math.max(1, normalizer));
    const locElem = tf.sum(smoothL1(locPred, locTarget), -1); // [N, A]
    const loc = tf.div(tf.sum(tf.mul(locElem, pos)), numMatched);
    let cls: tf.Tensor;
    if (cfg.kind === "focal") {
      const onehot = tf.cast(tf.oneHot(tf.cast(labels, "int32"), numClasses), "float32");
      cls = tf.div(focalLossSum(clsLogits, onehot, cfg), numMatched);
    } else {
      const onehot = tf.cast(tf.oneHot(tf.cast(labels, "int32"), numClasses), "float32");
      const ce = tf.neg(tf.sum(tf.mul(tf.logSoftmax(clsLogits), onehot), -1)); // [N, A]
      const keep = hardNegativeMask(ce, pos, cfg.neg_pos_ratio);
      cls = tf.div(tf.sum(tf.mul(ce, keep)), numMatched);
    }
    const total = tf.add(cls, tf.mul(loc, cfg.loc_weight));
    return { total: total as tf.Scalar, loc: loc as tf.Scalar, cls: cls as tf.Scalar };
  });
}

/**
 * Positives plus the `ratio` x positives hardest negatives per image (largest
 * background loss), as a 0/1 mask [N, A]. The selection carries no gradient.
 * On host backends it is one sort per image in JavaScript
 * ({@linkcode hardNegativeMaskOf}); tfjs's sort and broadcast comparison on
 * wasm took 4 ms of the demo's step.
 */
export function hardNegativeMask(ce: tf.Tensor, pos: tf.Tensor, ratio: number): tf.Tensor {
  // customGrad stops the gradient: the mask is a choice, not a function to differentiate.
  const select = tf.customGrad((...inputs) => {
    const [ceIn, posIn] = inputs as tf.Tensor[];
    const [n, a] = ceIn.shape as [number, number];
    const onHost = () =>
      hardNegativeMaskOf(ceIn.dataSync() as Float32Array, posIn.dataSync() as Float32Array, a, ratio);
    const value = HOST_BACKENDS.has(tf.getBackend())
      ? tf.tensor2d(onHost(), [n, a])
      : hardNegativeMaskOps(ceIn, posIn, ratio);
    return { value, gradFunc: () => [tf.zerosLike(ceIn), tf.zerosLike(posIn)] };
  });
  return select(ce, pos);
}

/** {@linkcode hardNegativeMask} composed from tfjs ops, for backends that keep tensors on a device (webgpu). */
export function hardNegativeMaskOps(ce: tf.Tensor, pos: tf.Tensor, ratio: number): tf.Tensor {
  return tf.tidy(() => {
    const [n, a] = ce.shape as [number, number];
    const negLoss = tf.mul(ce, tf.sub(1, pos)); // positives score 0, so they rank last among negatives
    const numNeg = tf.minimum(tf.mul(tf.sum(pos, 1), ratio), a - 1); // [N]
    // Rank by sorting: the k-th largest negative loss is the per-image threshold.
    const sorted = tf.topk(negLoss, a).values; // [N, A] descending
    const idx = tf.cast(tf.maximum(tf.sub(numNeg, 1), 0), "int32");
    const kth = tf.sum(tf.mul(sorted, tf.oneHot(idx, a)), 1, true); // [N, 1]
    const negMask = tf.mul(
      tf.cast(tf.greaterEqual(negLoss, kth), "float32"),
      tf.reshape(tf.cast(tf.greater(numNeg, 0), "float32"), [n, 1]),
    );
    return tf.minimum(tf.add(pos, tf.mul(negMask, tf.sub(1, pos))), 1);
  });
}

/**
 * {@linkcode hardNegativeMask} on arrays: `ce` and `pos` (0/1) are [N, A] row
 * by row. Each image keeps its positives and every negative whose loss is at
 * least its `min(ratio * positives, A - 1)`-th largest (ties included), as the
 * tensor version does; an image without positives keeps nothing.
 *
 * @example
 * ```ts
 * import { deepStrictEqual } from "node:assert";
 * // One positive (anchor 0) and ratio 2: the two largest negative losses stay.
 * const mask = hardNegativeMaskOf(Float32Array.of(9, 1, 5, 3, 4), Float32Array.of(1, 0, 0, 0, 0), 5, 2);
 * deepStrictEqual(Array.from(mask), [1, 0, 1, 0, 1]);
 * ```
 */
export function hardNegativeMaskOf(ce: Float32Array, pos: Float32Array, a: number, ratio: number): Float32Array {
  const f = Math.fround;
  const mask = new Float32Array(ce.length);
  const neg = new Float32Array(a);
  for (let r = 0; r < ce.length; r += a) {
    let positives = 0;
    for (let j = 0; j < a; j++) {
      positives += pos[r + j];
      neg[j] = f(ce[r + j] * f(1 - pos[r + j])); // positives score 0, so they rank last among negatives
    }
    const numNeg = Math.min(f(positives * ratio), a - 1);
    // The threshold is the k-th largest: element A - 1 - k of the ascending sort, k = trunc(max(numNeg - 1, 0)).
    const anyNeg = numNeg > 0;
    const kth = anyNeg ? selectAscending(neg.slice(), a - 1 - Math.trunc(Math.max(numNeg - 1, 0))) : 0;
    for (let j = 0; j < a; j++) {
      const p = pos[r + j];
      mask[r + j] = Math.min(p + (anyNeg && neg[j] >= kth ? 1 : 0) * f(1 - p), 1);
    }
  }
  return mask;
}

/**
 * The element that would sit at index `k` of `xs` sorted ascending (Hoare's
 * selection, in place, O(n) on average): a full sort per image cost the demo's
 * step 1 ms more. A NaN makes the choice arbitrary (the loss is NaN then anyway).
 */
function selectAscending(xs: Float32Array, k: number): number {
  let lo = 0, hi = xs.length - 1;
  while (lo < hi) {
    const pivot = xs[(lo + hi) >> 1];
    let i = lo, j = hi;
    while (i <= j) {
      while (xs[i] < pivot) i++;
      while (xs[j] > pivot) j--;
      if (i <= j) {
        const t = xs[i];
        xs[i++] = xs[j];
        xs[j--] = t;
      }
    }
    if (k <= j) hi = j;
    else if (k >= i) lo = i;
    else return xs[k];
  }
  return xs[k];
}
