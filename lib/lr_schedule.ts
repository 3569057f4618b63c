/**
 * The tutorial's learning-rate schedule (`get_lr`, also ModelZoo
 * `src/lr_schedule.py`): per step, a linear warmup from `lrInit` to `lrMax`
 * over `warmupEpochs`, then a cosine decay from `lrMax` to `lrEnd` at the last
 * step, floored at 0, stored as float32.
 *
 * For step i of T = stepsPerEpoch · totalEpochs, W = stepsPerEpoch · warmupEpochs:
 *
 *   i < W:  lrInit + (lrMax - lrInit) · i / W
 *   else:   lrEnd + (lrMax - lrEnd) · (1 + cos(π (i - W) / (T - W))) / 2
 *
 * The cosine never reaches `lrEnd` exactly: the last step is T - 1.
 *
 * @module
 */
import type { Spec } from "./config.ts";

/** Options of the warmup + cosine schedule (names as the tutorial's `get_lr` arguments). */
export interface WarmupCosineOptions {
  /** Learning rate at step 0 (tutorial 0.001). */
  lrInit: number;
  /** Learning rate the cosine decays towards (tutorial 0.001 · 0.05). */
  lrEnd: number;
  /** Peak learning rate, reached at the end of warmup (tutorial 0.05). */
  lrMax: number;
  /** Warmup length in epochs; may be fractional (tutorial 2). */
  warmupEpochs: number;
  /** Training length in epochs (tutorial 60). */
  totalEpochs: number;
  /** Optimiser steps per epoch (dataset size / batch size). */
  stepsPerEpoch: number;
}

/**
 * The learning rate at step `step` (0-based), rounded to float32 like the
 * tutorial's array.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const o = { lrInit: 0.001, lrEnd: 0.00005, lrMax: 0.05, warmupEpochs: 2, totalEpochs: 60, stepsPerEpoch: 10 };
 * assertEquals(lrAtStep(0, o), Math.fround(0.001));
 * assertEquals(lrAtStep(10, o), Math.fround(0.001 + 0.049 * 10 / 20)); // half way through warmup
 * assertEquals(lrAtStep(20, o), Math.fround(0.05)); // warmup done: cos(0) = 1
 * ```
 */
export function lrAtStep(step: number, options: WarmupCosineOptions): number {
  const { lrInit, lrEnd, lrMax, warmupEpochs, totalEpochs, stepsPerEpoch } = options;
  const totalSteps = stepsPerEpoch * totalEpochs;
  const warmupSteps = stepsPerEpoch * warmupEpochs;
  let lr: number;
  if (step < warmupSteps) {
    lr = lrInit + (lrMax - lrInit) * step / warmupSteps;
  } else {
    lr = lrEnd + (lrMax - lrEnd) * (1 + Math.cos(Math.PI * (step - warmupSteps) / (totalSteps - warmupSteps))) / 2;
  }
  return Math.fround(lr < 0 ? 0 : lr);
}

/**
 * The tutorial's `get_lr`: the float32 learning rates of steps `globalStep` ..
 * T - 1 (training resumed at `globalStep` continues the same schedule).
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const o = { lrInit: 0, lrEnd: 0, lrMax: 1, warmupEpochs: 1, totalEpochs: 3, stepsPerEpoch: 2 };
 * // warmup 0, 0.5; cosine over 4 steps: 1, (1 + cos(π/4)) / 2, 0.5, (1 + cos(3π/4)) / 2
 * assertEquals(Array.from(getLr(0, o)).map((v) => +v.toFixed(4)), [0, 0.5, 1, 0.8536, 0.5, 0.1464]);
 * assertEquals(getLr(4, o).length, 2);
 * ```
 */
export function getLr(globalStep: number, options: WarmupCosineOptions): Float32Array {
  const totalSteps = options.stepsPerEpoch * options.totalEpochs;
  const out = new Float32Array(Math.max(0, totalSteps - globalStep));
  for (let i = 0; i < out.length; i++) out[i] = lrAtStep(globalStep + i, options);
  return out;
}

/** The learning-rate numbers of a training config (ModelZoo key names). */
export interface LrScheduleConfig {
  /** Peak learning rate (ModelZoo `lr`, tutorial `lr_max`). */
  lr: number;
  /** Learning rate at step 0. */
  lr_init: number;
  /** End learning rate as a fraction of `lr`: lr_end = lr_end_rate · lr. */
  lr_end_rate: number;
  /** Warmup epochs. */
  warmup_epochs: number;
}

/** Spec fragment of the learning-rate keys (no defaults: each training config states them). */
export const lrScheduleSpec: Spec = {
  type: "object",
  doc: "Warmup + cosine learning-rate schedule",
  fields: {
    lr: { type: "number", min: 0, doc: "peak learning rate (lr_max)" },
    lr_init: { type: "number", min: 0, doc: "learning rate at step 0" },
    lr_end_rate: { type: "number", min: 0, doc: "end learning rate as a fraction of lr" },
    warmup_epochs: { type: "number", min: 0, doc: "warmup epochs" },
  },
};

/**
 * Schedule options from a validated config section and the run's length.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const o = lrOptionsFromConfig({ lr: 0.05, lr_init: 0.001, lr_end_rate: 0.001, warmup_epochs: 2 }, {
 *   totalEpochs: 60, stepsPerEpoch: 9,
 * });
 * assertEquals(o.lrEnd, 0.05 * 0.001);
 * ```
 */
export function lrOptionsFromConfig(
  cfg: LrScheduleConfig,
  run: { totalEpochs: number; stepsPerEpoch: number },
): WarmupCosineOptions {
  return {
    lrInit: cfg.lr_init,
    lrEnd: cfg.lr_end_rate * cfg.lr,
    lrMax: cfg.lr,
    warmupEpochs: cfg.warmup_epochs,
    totalEpochs: run.totalEpochs,
    stepsPerEpoch: run.stepsPerEpoch,
  };
}
