import * as tf from "@tensorflow/tfjs-core";
import assert from "node:assert";
import { setBackend } from "../lib/engine/backend.ts";
import { createMomentumState, decays, momentumStep } from "../lib/optimizer.ts";
import { variableOf } from "../lib/graph.ts";

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

Deno.test("momentumStep() on onnxruntime updates in place, with wasm's bits; a shared weight is updated into a new tensor", async () => {
  const run = async (backend: string, share: boolean) => {
    await setBackend(backend);
    const params = new Map([
      ["conv.weight", variableOf(tf.randomNormal([3, 3, 8, 16], 0, 1, "float32", 1), true)],
      ["conv.bias", variableOf(tf.randomNormal([16], 0, 1, "float32", 2), true)],
      ["bn.gamma", variableOf(tf.randomNormal([37], 1, 0.1, "float32", 3), true)],
    ]);
    const state = createMomentumState(params);
    const w = params.get("conv.weight")!;
    const clone = share ? tf.clone(w) : null; // shares w's memory: updating w in place would change it too
    const before = (w as unknown as { dataId: object }).dataId;
    const cloneBits = clone ? Array.from(clone.dataSync()) : [];
    for (let step = 0; step < 3; step++) {
      const grads = Object.fromEntries(
        [...params.values()].map((v, i) => [v.name, tf.randomNormal(v.shape, 0, 1, "float32", 100 + 10 * step + i)]),
      );
      momentumStep(params, grads, state, 0.05, { momentum: 0.9, weightDecay: 1.5e-4, lossScale: 1024, sens: 1024 });
      tf.dispose(Object.values(grads));
    }
    const inPlace = (w as unknown as { dataId: object }).dataId === before;
    if (clone) assert.deepStrictEqual(Array.from(clone.dataSync()), cloneBits, "the clone keeps its values");
    const bits = [...params.values(), ...state.values()].map((v) =>
      Array.from(new Uint32Array(v.dataSync().slice().buffer))
    );
    tf.dispose([...params.values(), ...state.values(), ...(clone ? [clone] : [])]);
    return { bits, inPlace };
  };
  const wasm = await run("wasm", false), ort = await run("onnxruntime", false), shared = await run("onnxruntime", true);
  assert.strictEqual(wasm.inPlace, false, "wasm writes new tensors");
  assert.strictEqual(ort.inPlace, true, "onnxruntime (native code) writes over the old values");
  assert.strictEqual(shared.inPlace, false, "not while another tensor shares the memory");
  assert.deepStrictEqual(ort.bits, wasm.bits);
  assert.deepStrictEqual(shared.bits, wasm.bits);
  await setBackend("cpu");
});
