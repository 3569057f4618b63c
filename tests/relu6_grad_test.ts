import * as tf from "@tensorflow/tfjs-core";
import assert from "node:assert";
import { setBackend } from "../lib/backend.ts";

// By hand: the gradient passes strictly inside (0, 6), as PyTorch's hardtanh backward.
const xs = [-3, -0, 0, 1e-7, 0.5, 3, 5.999, 6, 6.0001, 9];
const want = [0, 0, 0, 1, 1, 1, 1, 0, 0, 0];

for (const backend of ["cpu", "wasm", "onnxruntime"]) {
  Deno.test(`tf.relu6's gradient passes dy strictly inside (0, 6) on ${backend}`, async () => {
    await setBackend(backend);
    const n = 2 * 5 * 5 * 4;
    const x = tf.tensor4d(Float32Array.from({ length: n }, (_, i) => xs[i % xs.length]), [2, 5, 5, 4]);
    const dy = tf.tensor4d(Float32Array.from({ length: n }, (_, i) => 1 + (i % 3)), [2, 5, 5, 4]);
    const before = tf.memory().numTensors;
    const g = tf.grad((t: tf.Tensor) => tf.relu6(t))(x, dy);
    const got = await g.data();
    for (let i = 0; i < n; i++) {
      assert.strictEqual(got[i], want[i % xs.length] * (1 + (i % 3)), `x = ${xs[i % xs.length]}`);
    }
    g.dispose();
    assert.strictEqual(tf.memory().numTensors, before);
    tf.dispose([x, dy]);
  });
}
