// lib/engine/relu_grad.ts: the ReLU and ReLU6 gradients by hand, through tf.grad, on every backend, on sizes that take
// the SIMD kernel (a multiple of 4) and the JavaScript loop (not).
import * as tf from "@tensorflow/tfjs-core";
import assert from "node:assert";
import { setBackend } from "../lib/engine/backend.ts";

// By hand: ReLU passes dy where x > 0; ReLU6 strictly inside (0, 6), as PyTorch's hardtanh backward. NaN stays NaN.
const xs = [-3, -0, 0, 1e-7, 0.5, 3, 5.999, 6, 6.0001, 9, -Infinity, Infinity, NaN];
const want = {
  relu: [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, NaN],
  relu6: [0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0, NaN],
};

for (const backend of ["cpu", "wasm", "onnxruntime"]) {
  for (const fn of ["relu", "relu6"] as const) {
    Deno.test(`tf.${fn}'s gradient on ${backend}: dy where ${fn === "relu" ? "x > 0" : "0 < x < 6"}`, async () => {
      await setBackend(backend);
      for (const shape of [[2, 5, 5, 4], [3, 7, 5]]) { // 200 elements (SIMD on wasm), 105 (the loop)
        const n = shape.reduce((a, b) => a * b, 1);
        const x = tf.tensor(Float32Array.from({ length: n }, (_, i) => xs[i % xs.length]), shape);
        const dy = tf.tensor(Float32Array.from({ length: n }, (_, i) => 1 + (i % 3)), shape);
        const before = tf.memory().numTensors;
        const g = tf.grad((t: tf.Tensor) => fn === "relu" ? tf.relu(t) : tf.relu6(t))(x, dy);
        const got = await g.data();
        for (let i = 0; i < n; i++) {
          assert(Object.is(got[i], want[fn][i % xs.length] * (1 + (i % 3))), `x = ${xs[i % xs.length]}: ${got[i]}`);
        }
        g.dispose();
        assert.strictEqual(tf.memory().numTensors, before);
        tf.dispose([x, dy]);
      }
    });
  }
}
