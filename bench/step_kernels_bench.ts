/**
 * The pieces of the demo's training step that tfjs's wasm backend composed
 * slowly, each against what it replaced, on the demo's own shapes (batch 16,
 * its anchors and 80 parameters): the heads' SplitV, the hard-negative mask
 * and the Momentum update.
 */
import * as tf from "@tensorflow/tfjs-core";
import { MOMENTUM } from "../lib/custom_ops.ts";
import { setBackend } from "../lib/engine/mod.ts";
import { withShippedKernel } from "../lib/engine/kernel_registry.ts";
import { registerMomentumKernel } from "../lib/engine/momentum_kernel.ts";
import { initParams } from "../lib/graph.ts";
import { hardNegativeMask, hardNegativeMaskOps } from "../lib/loss.ts";
import { createMomentumState, momentumStep } from "../lib/optimizer.ts";
import { createRng } from "../lib/rng.ts";
import { anchorsOf, buildModel, loadSsdConfig } from "../lib/ssd_config.ts";
import { type BenchRow, timeMedian } from "./report.ts";

/** Rows of the conv section for the demo step's small kernels, on the wasm backend. */
export async function benchStepKernels(o: { quick?: boolean } = {}): Promise<BenchRow[]> {
  const reps = o.quick ? 5 : 21;
  await setBackend("wasm");
  const cfg = loadSsdConfig("configs/demo.yaml");
  const anchors = anchorsOf(cfg), b = 16, a = anchors.count;
  const row = (name: string, ours: number, before: number, what: string): BenchRow => ({
    section: "conv",
    name: `demo step, ${name}`,
    ms: ours,
    speedup: before / ours,
    against: `vs ${what} ${before.toFixed(2)} ms`,
  });
  const rows: BenchRow[] = [];

  // The gradient of the heads' concat: [16, A, 4] split back into the five levels.
  const levels = cfg.anchors.feature_size!.map((f, i) => f * f * cfg.anchors.num_default![i]);
  const x = tf.randomNormal([b, a, 4], 0, 1, "float32", 1);
  const split = () => tf.dispose(tf.split(x, levels, 1));
  const splitOurs = await timeMedian(split, reps);
  const splitShipped = await withShippedKernel("wasm", "SplitV", () => timeMedian(split, reps));
  rows.push(row(`SplitV [16, ${a}, 4] on axis 1: block copies`, splitOurs, splitShipped, "wasm's SplitV (Slice)"));

  // The hard-negative mask over [16, A] background losses, 3:1.
  const rng = createRng(2);
  const ce = tf.tensor2d(Float32Array.from({ length: b * a }, () => rng() * 4), [b, a]);
  const pos = tf.tensor2d(Float32Array.from({ length: b * a }, (_, i) => (i % 97 === 0 ? 1 : 0)), [b, a]);
  const maskHost = await timeMedian(() => tf.dispose(hardNegativeMask(ce, pos, 3)), reps);
  const maskOps = await timeMedian(() => tf.dispose(hardNegativeMaskOps(ce, pos, 3)), reps);
  rows.push(row(`hard-negative mask [16, ${a}]: a selection per image on the host`, maskHost, maskOps, "tfjs ops"));

  // Momentum over the demo's parameters, the kernel against the same update composed from ops.
  const params = initParams(buildModel(cfg, anchors), createRng(1), { scheme: cfg.model.init });
  const state = createMomentumState(params);
  const grads = Object.fromEntries(
    [...params.values()].filter((v) => v.trainable).map((v) => [v.name, tf.onesLike(v)]),
  );
  const update = () => momentumStep(params, grads, state, 0.01, { momentum: 0.9, weightDecay: 1.5e-4 });
  const momentumOurs = await timeMedian(update, reps);
  // Without the kernel, momentumStep composes the update from ops.
  tf.unregisterKernel(MOMENTUM, "wasm");
  let momentumOps: number;
  try {
    momentumOps = await timeMedian(update, reps);
  } finally {
    registerMomentumKernel();
  }
  rows.push(row(`Momentum over ${state.size} parameters: one kernel each`, momentumOurs, momentumOps, "six ops each"));

  tf.dispose([x, ce, pos, ...Object.values(grads), ...params.values(), ...state.values()]);
  return rows;
}
