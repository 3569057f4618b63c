/**
 * The workbench's own tfjs ops, seen from the model: their kernel names,
 * attributes and a call for each. The model graph (`graph.ts`) calls them; the
 * engine (`engine/`) registers the kernels that run them. Keeping the names
 * here, as tfjs-core keeps its own in `kernel_names.ts`, lets the model use an
 * op without importing the engine: where no kernel is registered (the
 * `tensorflow` backend), the graph composes the op from tfjs ops instead.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs-core";
 * import { setBackend } from "./engine/mod.ts";
 * await setBackend("cpu");
 * const x = tf.tensor4d([1, 3, 5, 7], [4, 1, 1, 1]); // mean 4, variance 5
 * const [y, mean, variance] = batchNormTrainKernel(x, tf.ones([1]), tf.zeros([1]), 0, "relu");
 * const r = Array.from(y.dataSync()).map((v) => v.toFixed(3));
 * if (r.join() !== "0.000,0.000,0.447,1.342" || mean.dataSync()[0] !== 4 || variance.dataSync()[0] !== 5) {
 *   throw new Error(`got ${r}`);
 * }
 * ```
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";

/** Training-mode batch norm with a fused activation: outputs `[y, mean, variance, invstd]`. */
export const BN_TRAIN = "SsdBatchNormTrain";
/** Its gradient: outputs `[dx, dgamma, dbeta]`. */
export const BN_TRAIN_GRAD = "SsdBatchNormTrainGrad";

/** Activations fused after the normalisation. */
export type BnActivation = "linear" | "relu" | "relu6";

/** Whether the current backend has the fused batch-norm kernels. */
export function hasBatchNormKernels(): boolean {
  return tf.getKernel(BN_TRAIN, tf.getBackend()) !== undefined;
}

/**
 * Training-mode batch norm of `x` [..., C] with `gamma`, `beta` [C] and a fused
 * activation: returns `[y, mean, variance, invstd]` (biased variance, [C] each).
 */
export function batchNormTrainKernel(
  x: tf.Tensor,
  gamma: tf.Tensor,
  beta: tf.Tensor,
  eps: number,
  activation: BnActivation = "linear",
): [tf.Tensor, tf.Tensor1D, tf.Tensor1D, tf.Tensor1D] {
  return tf.engine().runKernel(BN_TRAIN, { x, gamma, beta }, { eps, activation }) as unknown as [
    tf.Tensor,
    tf.Tensor1D,
    tf.Tensor1D,
    tf.Tensor1D,
  ];
}

/** One Momentum update of a parameter: outputs `[w', v']` (see {@linkcode momentumUpdate}). */
export const MOMENTUM = "SsdMomentum";

/** The update's constants; a `weightDecay` of 0 adds no decay term, `sens` and `scale` of 1 no product. */
export interface MomentumUpdate {
  momentum: number;
  weightDecay: number;
  /** The gradient (with decay) is multiplied by this: 1 / loss_scale. */
  scale: number;
  lr: number;
  /** The gradient is multiplied by this first. */
  sens: number;
}

/** Whether the current backend runs {@linkcode momentumUpdate} as one kernel. */
export function hasMomentumKernel(): boolean {
  return tf.getKernel(MOMENTUM, tf.getBackend()) !== undefined;
}

/**
 * `s = g * sens; s += w * weightDecay; s *= scale; v' = v * momentum + s; w' = w - v' * lr`, each step a
 * float32 op (skipped where it is the identity), as `[w', v']`. Needs {@linkcode hasMomentumKernel}.
 */
export function momentumUpdate(w: tf.Tensor, v: tf.Tensor, g: tf.Tensor, u: MomentumUpdate): [tf.Tensor, tf.Tensor] {
  return tf.engine().runKernel(MOMENTUM, { w, v, g }, { ...u }) as unknown as [tf.Tensor, tf.Tensor];
}

/** Many {@linkcode momentumUpdate}s as one kernel: inputs `w0, v0, g0, w1 ...`, outputs `[w'0, v'0, w'1 ...]`. */
export const MOMENTUM_MANY = "SsdMomentumMany";

/**
 * {@linkcode momentumUpdate} of each item, `[w', v']` per item, computed alike: in one kernel call where
 * the backend has {@linkcode MOMENTUM_MANY} (a step updates hundreds of tensors), else one call each.
 * Needs {@linkcode hasMomentumKernel}.
 */
export function momentumUpdates(
  items: { w: tf.Tensor; v: tf.Tensor; g: tf.Tensor; u: MomentumUpdate }[],
): [tf.Tensor, tf.Tensor][] {
  if (!tf.getKernel(MOMENTUM_MANY, tf.getBackend())) return items.map(({ w, v, g, u }) => momentumUpdate(w, v, g, u));
  const inputs: Record<string, tf.Tensor> = {};
  items.forEach(({ w, v, g }, i) => {
    inputs[`w${i}`] = w;
    inputs[`v${i}`] = v;
    inputs[`g${i}`] = g;
  });
  const attrs = { updates: items.map(({ u }) => ({ ...u })) } as unknown as tf.NamedAttrMap;
  const outs = tf.engine().runKernel(MOMENTUM_MANY, inputs, attrs) as unknown as tf.Tensor[];
  return items.map((_, i) => [outs[2 * i], outs[2 * i + 1]]);
}

/** {@linkcode momentumUpdates} into the tensors themselves; outputs a flag: 1 when done, else 0. */
export const MOMENTUM_IN_PLACE = "SsdMomentumInPlace";

/**
 * {@linkcode momentumUpdates} written over the tensors themselves: v' over each v, and w' over w where
 * an item has a `w` (without, v' alone: a moving average, `v m + g sens`). Saves allocating, and
 * freeing, a copy of every weight and velocity each step. Returns false, having changed nothing, where
 * the backend has no such kernel or a w or v shares its data with another tensor (a clone, the value a
 * variable was made from): callers then take {@linkcode momentumUpdates}.
 */
export function momentumUpdatesInPlace(
  items: { w?: tf.Tensor; v: tf.Tensor; g: tf.Tensor; u: MomentumUpdate }[],
): boolean {
  if (!tf.getKernel(MOMENTUM_IN_PLACE, tf.getBackend())) return false;
  const inputs: Record<string, tf.Tensor> = {};
  items.forEach(({ w, v, g }, i) => {
    inputs[`v${i}`] = v;
    inputs[`g${i}`] = g;
    if (w) inputs[`w${i}`] = w;
  });
  const attrs = { updates: items.map(({ u }) => ({ ...u })) } as unknown as tf.NamedAttrMap;
  const done = tf.engine().runKernel(MOMENTUM_IN_PLACE, inputs, attrs) as tf.Tensor;
  const ok = done.dataSync()[0] === 1;
  done.dispose();
  return ok;
}

/** The sigmoid focal loss's sum and gradient as one kernel: outputs `[sum, dL/dx]` (see {@linkcode focalLossKernel}). */
export const FOCAL = "SsdFocalLoss";

/** Whether the current backend runs {@linkcode focalLossKernel}. */
export function hasFocalKernel(): boolean {
  return tf.getKernel(FOCAL, tf.getBackend()) !== undefined;
}

/**
 * The sum over all elements of the sigmoid focal loss of logits `x` against 0/1 targets `z` (same shape),
 * and its gradient with respect to `x`, as `[sum, grad]`. Needs {@linkcode hasFocalKernel}.
 */
export function focalLossKernel(
  x: tf.Tensor,
  z: tf.Tensor,
  o: { gamma: number; alpha: number },
): [tf.Scalar, tf.Tensor] {
  return tf.engine().runKernel(FOCAL, { x, z }, { ...o }) as unknown as [tf.Scalar, tf.Tensor];
}
