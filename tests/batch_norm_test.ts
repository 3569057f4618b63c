// lib/graph.ts batchNormTrain(): its analytic gradient against tfjs's own batchNorm gradient.
import * as tf from "@tensorflow/tfjs-core";
import assert from "node:assert";
import { setBackend } from "../lib/engine/backend.ts";
import { batchNormTrain, channelMean } from "../lib/graph.ts";

for (const backend of ["cpu", "wasm"]) {
  Deno.test(`batchNormTrain() matches tfjs's batchNorm value and gradients on ${backend}`, async () => {
    await setBackend(backend);
    const before = tf.memory().numTensors;
    tf.tidy(() => {
      const x = tf.randomNormal([2, 5, 7, 4], 0, 1, "float32", 1);
      const g = tf.randomNormal([4], 1, 0.5, "float32", 2), b = tf.randomNormal([4], 0, 1, "float32", 3);
      const w = tf.randomNormal([2, 5, 7, 4], 0, 1, "float32", 4);
      const ref = (x: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => {
        const m = tf.moments(x, [0, 1, 2]);
        return tf.sum(tf.mul(tf.batchNorm(x, m.mean, m.variance, b, g, 1e-3), w));
      };
      const stats: { mean?: tf.Tensor1D; variance?: tf.Tensor1D } = {};
      const mine = (x: tf.Tensor, g: tf.Tensor, b: tf.Tensor) =>
        tf.sum(tf.mul(batchNormTrain(x, g, b, 1e-3, stats), w));
      const r = tf.grads(ref)([x, g, b]).map((t) => t.dataSync());
      const m = tf.grads(mine)([x, g, b]).map((t) => t.dataSync());
      for (let i = 0; i < 3; i++) {
        const scale = Math.max(...r[i].map(Math.abs));
        const err = Math.max(...r[i].map((v, k) => Math.abs(v - m[i][k])));
        assert.ok(err / scale < 1e-5, `gradient ${i}: relative error ${err / scale}`);
      }
      const mom = tf.moments(x, [0, 1, 2]);
      assert.ok(tf.max(tf.abs(tf.sub(stats.mean!, mom.mean))).dataSync()[0] < 1e-6);
      assert.ok(tf.max(tf.abs(tf.sub(stats.variance!, mom.variance))).dataSync()[0] < 1e-5);
      tf.dispose([stats.mean!, stats.variance!]);
    });
    assert.strictEqual(tf.memory().numTensors, before);
  });
}

Deno.test("channelMean() is the per-channel mean over batch and space", async () => {
  await setBackend("wasm");
  const x = tf.tensor4d([1, 2, 3, 4, 5, 6, 7, 8], [2, 2, 1, 2]);
  assert.deepStrictEqual(Array.from(channelMean(x).dataSync()), [4, 5]);
});
