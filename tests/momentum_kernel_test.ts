import * as tf from "@tensorflow/tfjs-core";
import assert from "node:assert";
import { setBackend } from "../lib/engine/backend.ts";
import { hasMomentumKernel, type MomentumUpdate, momentumUpdate } from "../lib/custom_ops.ts";
import { simdKernels } from "../lib/engine/simd_kernels.ts";
import { applyBnUpdates, variableOf } from "../lib/graph.ts";
import { createRng } from "../lib/rng.ts";

/** The update from tfjs ops, in lib/optimizer.ts's order. */
function composed(w: tf.Tensor, v: tf.Tensor, g: tf.Tensor, u: MomentumUpdate): [tf.Tensor, tf.Tensor] {
  return tf.tidy(() => {
    let s = u.sens === 1 ? g : tf.mul(g, u.sens);
    if (u.weightDecay > 0) s = tf.add(s, tf.mul(w, u.weightDecay));
    if (u.scale !== 1) s = tf.mul(s, u.scale);
    const nv = tf.add(tf.mul(v, u.momentum), s);
    return [tf.sub(w, tf.mul(nv, u.lr)), nv];
  });
}

const UPDATES: MomentumUpdate[] = [
  { momentum: 0.9, weightDecay: 0.00015, scale: 1, lr: 0.05, sens: 1 }, // the demo
  { momentum: 0.9, weightDecay: 0.00015, scale: 1 / 1024, lr: 0.0123, sens: 1024 }, // the ModelZoo's wrapper
  { momentum: 0.8, weightDecay: 0, scale: 1 / 3, lr: 0.1, sens: 1 },
];

Deno.test("SsdMomentum equals the composed ops bit for bit: SIMD on one and two threads, its tail, and cpu", async () => {
  const rng = createRng(4);
  // Sizes: below a SIMD group, with a tail, and past the size that splits over threads.
  for (const size of [3, 4099, 70001]) {
    const data = [0, 1, 2].map(() => Float32Array.from({ length: size }, () => (rng() - 0.5) * 4));
    for (const [backend, threads] of [["wasm", 1], ["wasm", 2], ["cpu", 1]] as const) {
      await setBackend(backend, { threads });
      assert.ok(hasMomentumKernel(), `no kernel on ${backend}`);
      if (backend === "wasm") assert.strictEqual(simdKernels(tf.backend())?.threads, threads);
      const [w, v, g] = data.map((d) => tf.tensor1d(d));
      for (const u of UPDATES) {
        const before = tf.memory().numTensors;
        const got = momentumUpdate(w, v, g, u), want = composed(w, v, g, u);
        for (let k = 0; k < 2; k++) {
          const a = got[k].dataSync(), b = want[k].dataSync();
          const bad = a.findIndex((x, i) => !Object.is(x, b[i]));
          assert.strictEqual(
            bad,
            -1,
            `${backend}/${threads} size ${size} ${JSON.stringify(u)}: ${k ? "v" : "w"}[${bad}]`,
          );
        }
        tf.dispose([...got, ...want]);
        assert.strictEqual(tf.memory().numTensors, before);
      }
      tf.dispose([w, v, g]);
    }
  }
});

Deno.test("applyBnUpdates() through the kernel equals the composed moving average bit for bit", async () => {
  const rng = createRng(8);
  const c = 37; // a SIMD tail too
  const vals = [0, 1, 2, 3].map(() => Float32Array.from({ length: c }, () => rng() * 3));
  const unbias = 40 / 39; // 40 values per channel
  // onnxruntime: in place, as native code on oneDNN's threads where it builds.
  for (const backend of ["wasm", "cpu", "onnxruntime"] as const) {
    await setBackend(backend);
    for (const momentum of [0.9, 0.997, 0]) {
      const params = new Map([
        ["bn.moving_mean", variableOf(tf.tensor1d(vals[0]), false)],
        ["bn.moving_variance", variableOf(tf.tensor1d(vals[1]), false)],
      ]);
      const [mean, variance] = [tf.tensor1d(vals[2]), tf.tensor1d(vals[3])];
      const want = [[vals[0], vals[2], 1], [vals[1], vals[3], unbias]].map(([a, s, k]) =>
        tf.tidy(() =>
          tf.add(tf.mul(tf.tensor1d(a as Float32Array), momentum), tf.mul(tf.mul(s as Float32Array, k), 1 - momentum))
        ).dataSync()
      );
      const before = tf.memory().numTensors;
      applyBnUpdates(params, [{ name: "bn", mean, variance, unbias, momentum }]);
      assert.strictEqual(tf.memory().numTensors, before - 2, "the statistics are disposed, nothing else is left");
      const got = [params.get("bn.moving_mean")!.dataSync(), params.get("bn.moving_variance")!.dataSync()];
      for (let k = 0; k < 2; k++) {
        const bad = got[k].findIndex((x, i) => !Object.is(x, want[k][i]));
        assert.strictEqual(bad, -1, `${backend}, momentum ${momentum}: ${k ? "variance" : "mean"}[${bad}]`);
      }
      tf.dispose([...params.values()]);
    }
  }
});
