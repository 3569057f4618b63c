import * as tf from "@tensorflow/tfjs-core";
import assert from "node:assert";
import { setBackend } from "../lib/engine/backend.ts";
import { createMomentumState, decays, momentumStep } from "../lib/optimizer.ts";

await setBackend("cpu");

Deno.test("momentumStep() follows MindSpore's Momentum by hand", () => {
  const params = new Map([
    ["conv.weight", tf.variable(tf.tensor1d([1, 2]))],
    ["bn.gamma", tf.variable(tf.tensor1d([1]))],
  ]);
  const state = createMomentumState(params);
  const grads = {
    [params.get("conv.weight")!.name]: tf.tensor1d([0.5, -1]),
    [params.get("bn.gamma")!.name]: tf.tensor1d([2]),
  };
  const o = { momentum: 0.9, weightDecay: 0.1, lossScale: 2 };
  momentumStep(params, grads, state, 0.1, o);
  // weight: decay first, then the loss scale (MindSpore: decay_weight, then scale_grad):
  // g = (grad + 0.1 w) / 2 = ([0.5, -1] + [0.1, 0.2]) / 2 = [0.3, -0.4]; v = g; w -= 0.1 v
  assert.deepStrictEqual(Array.from(params.get("conv.weight")!.dataSync()).map((v) => +v.toFixed(6)), [0.97, 2.04]);
  // gamma: no decay; g = 2 / 2 = 1; w = 1 - 0.1
  assert.deepStrictEqual(+params.get("bn.gamma")!.dataSync()[0].toFixed(6), 0.9);
  momentumStep(params, grads, state, 0.1, o);
  // second step: g = ([0.5, -1] + 0.1 [0.97, 2.04]) / 2 = [0.2985, -0.398]; v = 0.9 v + g
  const v = [0.9 * 0.3 + 0.2985, 0.9 * -0.4 - 0.398];
  const w = [0.97 - 0.1 * v[0], 2.04 - 0.1 * v[1]];
  Array.from(params.get("conv.weight")!.dataSync()).forEach((x, i) => assert.ok(Math.abs(x - w[i]) < 1e-6));
  assert.strictEqual(decays("a.beta"), false);
  assert.strictEqual(decays("a.bias"), true);
});
