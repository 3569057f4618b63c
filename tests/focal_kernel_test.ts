import * as tf from "@tensorflow/tfjs-core";
import assert from "node:assert";
import { setBackend } from "../lib/engine/backend.ts";
import { focalLossKernel, hasFocalKernel } from "../lib/custom_ops.ts";
import { simdKernels } from "../lib/engine/simd_kernels.ts";
import { focalLossAndGrad, focalLossSum } from "../lib/loss.ts";
import { createRng } from "../lib/rng.ts";

const TUTORIAL = { gamma: 2, alpha: 0.75 };

/**
 * Logits over the range training sees and past it (every 97th element one of the extremes: +-100, where exp
 * underflows; +-20, where 1 + e rounds to 1 in float32; 0; +-1e-9), one-hot targets of `c` columns.
 */
function logits(n: number, c: number, seed: number): { x: Float32Array; z: Float32Array } {
  const rng = createRng(seed), edges = [-100, 100, -20, 20, 0, 1e-9, -1e-9];
  const x = Float32Array.from(
    { length: n },
    (_, i) => i % 97 === 0 ? edges[(i / 97) % edges.length] : (rng() - 0.6) * 24,
  );
  const z = Float32Array.from({ length: n }, (_, i) => (i % c === Math.floor(i / c) % c ? 1 : 0));
  return { x, z };
}

Deno.test("SsdFocalLoss on wasm (SIMD, one and two threads, with a tail) is the float64 loop to a few float32 ulps", async () => {
  // Sizes: below a SIMD group, a tail of 3, and SSD300's [4, 1917, 81] plus a tail (split over two threads).
  for (const n of [3, 4099, 4 * 1917 * 81 + 1]) {
    const { x, z } = logits(n, 81, n);
    const want = focalLossAndGrad(x, z, TUTORIAL);
    for (const threads of [1, 2]) {
      await setBackend("wasm", { threads });
      assert.ok(hasFocalKernel());
      assert.strictEqual(simdKernels(tf.backend())?.threads, threads);
      const before = tf.memory().numTensors;
      const xs = tf.tensor1d(x), zs = tf.tensor1d(z);
      const [sum, grad] = focalLossKernel(xs, zs, TUTORIAL);
      assert.deepStrictEqual(sum.shape, []);
      const s = sum.dataSync()[0], g = grad.dataSync();
      assert.ok(
        Math.abs(s - want.sum) <= 1e-6 * Math.abs(want.sum),
        `n ${n}, ${threads} threads: sum ${s} against ${want.sum}`,
      );
      for (let i = 0; i < n; i++) {
        const err = Math.abs(g[i] - want.grad[i]);
        assert.ok(
          err <= 2e-6 * Math.abs(want.grad[i]) + 1e-37,
          `n ${n}, x ${x[i]}, z ${z[i]}: ${g[i]} against ${want.grad[i]}`,
        );
      }
      tf.dispose([xs, zs, sum, grad]);
      assert.strictEqual(tf.memory().numTensors, before);
    }
  }
});

Deno.test("SsdFocalLoss is the float64 loop exactly on cpu, and on wasm for a gamma other than 2", async () => {
  const { x, z } = logits(1001, 7, 3);
  for (const [backend, o] of [["cpu", TUTORIAL], ["wasm", { gamma: 1.5, alpha: 0.25 }]] as const) {
    await setBackend(backend);
    const want = focalLossAndGrad(x, z, o);
    const [sum, grad] = focalLossKernel(tf.tensor1d(x), tf.tensor1d(z), o);
    assert.strictEqual(sum.dataSync()[0], Math.fround(want.sum), backend);
    assert.deepStrictEqual(grad.dataSync(), want.grad, backend);
  }
  await setBackend("wasm");
});

Deno.test("a NaN logit makes the SIMD focal sum NaN (the train loop's NaN check sees it)", async () => {
  await setBackend("wasm");
  const x = new Float32Array(64).fill(0.5);
  x[17] = NaN;
  const [sum, grad] = focalLossKernel(tf.tensor1d(x), tf.zeros([64]), TUTORIAL);
  assert.ok(Number.isNaN(sum.dataSync()[0]));
  assert.ok(Number.isNaN(grad.dataSync()[17]) && !Number.isNaN(grad.dataSync()[16]));
});

Deno.test("focalLossSum's gradient on wasm is the kernel's", async () => {
  await setBackend("wasm");
  const { x, z } = logits(2 * 30 * 9, 9, 5);
  const xs = tf.tensor3d(x, [2, 30, 9]), zs = tf.tensor3d(z, [2, 30, 9]);
  const g = tf.grad((a: tf.Tensor) => focalLossSum(a, zs, TUTORIAL))(xs);
  const [, want] = focalLossKernel(xs, zs, TUTORIAL);
  assert.deepStrictEqual(g.dataSync(), want.dataSync());
  tf.dispose([xs, zs, g, want]);
});
