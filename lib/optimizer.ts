/**
 * Momentum SGD with weight decay, as MindSpore's `nn.Momentum`:
 * `g = (sens * grad + wd * w) / loss_scale` (decay skipped for BN gamma and beta, its
 * default filter), `v = momentum * v + g`, `w = w - lr * v`. The order is
 * MindSpore's: `Optimizer.construct` applies `decay_weight` before `scale_grad`
 * (mindspore/nn/optim/optimizer.py), so with the tutorial's `loss_scale=1024`
 * and an unscaled loss the decay shrinks 1024-fold too.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { type ParamMap, variableOf } from "./graph.ts";
import { hasMomentumKernel, momentumUpdates, momentumUpdatesInPlace } from "./custom_ops.ts";

/** Optimiser settings. */
export interface MomentumOptions {
  momentum: number;
  weightDecay: number;
  /**
   * Gradients are divided by this (MindSpore's `loss_scale` argument). The
   * tutorial passes 1024 without scaling its loss, which shrinks every step
   * 1024-fold; the workbench's configs say which they use.
   */
  lossScale?: number;
  /**
   * Gradients are multiplied by this first: the ModelZoo's `TrainingWrapper(sens=1024)` scales the loss
   * in the backward pass, and Momentum's `loss_scale=1024` divides it back out after adding the decay,
   * so its decay is 1024-fold weaker than the config's `weight_decay` says (default 1).
   */
  sens?: number;
}

/** Momentum buffers, one per trainable parameter. */
export type MomentumState = Map<string, tf.Variable>;

/** Whether weight decay applies to a parameter (MindSpore's default filter: not beta, not gamma). */
export function decays(name: string): boolean {
  return !name.endsWith(".beta") && !name.endsWith(".gamma");
}

/** Creates zeroed momentum buffers for the trainable parameters. */
export function createMomentumState(params: ParamMap): MomentumState {
  const state: MomentumState = new Map();
  for (const [name, v] of params) {
    if (v.trainable) state.set(name, variableOf(tf.zerosLike(v), false));
  }
  return state;
}

/**
 * Applies one step. `grads` maps tfjs variable names to gradients, as
 * `tf.variableGrads` returns them; they are not disposed here. Frozen
 * parameters simply have no gradient.
 */
export function momentumStep(
  params: ParamMap,
  grads: Record<string, tf.Tensor>,
  state: MomentumState,
  lr: number,
  o: MomentumOptions,
): void {
  const scale = 1 / (o.lossScale ?? 1);
  // wasm and cpu run every parameter's update in one kernel, rounded as the ops below (over the old values
  // where the backend can).
  const fused = hasMomentumKernel();
  tf.tidy(() => {
    if (fused) {
      const items = [...params].filter(([name, w]) => grads[w.name] && state.has(name)).map(([name, w]) => ({
        w,
        v: state.get(name)!,
        g: grads[w.name],
        u: {
          momentum: o.momentum,
          weightDecay: o.weightDecay > 0 && decays(name) ? o.weightDecay : 0,
          scale,
          lr,
          sens: o.sens ?? 1,
        },
      }));
      if (momentumUpdatesInPlace(items)) return;
      momentumUpdates(items).forEach(([nw, nv], i) => {
        items[i].v.assign(nv);
        items[i].w.assign(nw);
      });
      return;
    }
    for (const [name, w] of params) {
      const g = grads[w.name], v = state.get(name);
      if (!g || !v) continue;
      let step = (o.sens ?? 1) === 1 ? g : tf.mul(g, o.sens!);
      if (o.weightDecay > 0 && decays(name)) step = tf.add(step, tf.mul(w, o.weightDecay));
      if (scale !== 1) step = tf.mul(step, scale);
      const nv = tf.add(tf.mul(v, o.momentum), step);
      v.assign(nv);
      w.assign(tf.sub(w, tf.mul(nv, lr)));
    }
  });
}
