// lib/engine/batch_norm_kernel.ts: the fused training batch norm (SIMD on wasm, JavaScript elsewhere) against
// tfjs autodiff of the plain formula on the cpu backend, and its pieces against hand-checked values.
import * as tf from "@tensorflow/tfjs-core";
import assert from "node:assert";
import { setBackend } from "../lib/engine/backend.ts";
import {
  batchNormBackward,
  batchNormForward,
  batchNormStats,
  channelMoments,
} from "../lib/engine/batch_norm_kernel.ts";
import { batchNormTrainKernel, type BnActivation } from "../lib/custom_ops.ts";
import { randn } from "./conv_cases.ts";

interface Result {
  y: Float32Array;
  mean: Float32Array;
  variance: Float32Array;
  grads: Float32Array[];
}

/** Value, statistics and gradients of sum(act(bn(x)) * w) with the kernel on `backend`. */
async function kernelRun(backend: string, shape: number[], act: BnActivation, offset: number): Promise<Result> {
  await setBackend(backend);
  return tf.tidy(() => {
    const [x, g, b, w] = inputs(shape, offset);
    let stats: Float32Array[] = [];
    const f = (x: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => {
      const [y, mean, variance] = batchNormTrainKernel(x, g, b, 1e-3, act);
      stats = [y, mean, variance].map((t) => t.dataSync() as Float32Array);
      return tf.sum(tf.mul(y, w));
    };
    const grads = tf.grads(f)([x, g, b]).map((t) => t.dataSync() as Float32Array);
    return { y: stats[0], mean: stats[1], variance: stats[2], grads };
  });
}

/** The same from tfjs's own ops and autodiff, on cpu. */
async function referenceRun(shape: number[], act: BnActivation, offset: number): Promise<Result> {
  await setBackend("cpu");
  return tf.tidy(() => {
    const [x, g, b, w] = inputs(shape, offset);
    const axes = shape.slice(0, -1).map((_, i) => i);
    const fwd = (x: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => {
      const m = tf.moments(x, axes);
      const y = tf.batchNorm(x, m.mean, m.variance, b, g, 1e-3);
      return act === "relu6" ? tf.relu6(y) : act === "relu" ? tf.relu(y) : y;
    };
    const grads = tf.grads((x: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(fwd(x, g, b), w)))([x, g, b])
      .map((t) => t.dataSync() as Float32Array);
    const m = tf.moments(x, axes);
    return {
      y: fwd(x, g, b).dataSync() as Float32Array,
      mean: m.mean.dataSync() as Float32Array,
      variance: m.variance.dataSync() as Float32Array,
      grads,
    };
  });
}

function inputs(shape: number[], offset: number): tf.Tensor[] {
  const n = shape.reduce((a, b) => a * b, 1), c = shape[shape.length - 1];
  // Scaled so that a good share of ReLU6 outputs clip at both ends.
  const x = tf.add(tf.mul(tf.tensor(randn(n, 1), shape), 2), offset);
  const g = tf.add(tf.tensor1d(randn(c, 2)), 2), b = tf.add(tf.tensor1d(randn(c, 3)), 2);
  return [x, g, b, tf.tensor(randn(n, 4), shape)];
}

function relErr(a: Float32Array, b: Float32Array): number {
  const scale = Math.max(1e-12, ...b.map(Math.abs));
  return Math.max(...a.map((v, i) => Math.abs(v - b[i]))) / scale;
}

// [2, 5, 7, C]: 70 rows, not a multiple of the SIMD kernels' 16-row blocks. C = 8 and 24 (a 16-channel chunk and two groups of 4) take the SIMD path
// on wasm, C = 6 the JavaScript one; cpu always runs JavaScript.
for (const backend of ["wasm", "cpu"]) {
  for (const c of [8, 24, 6]) {
    for (const act of ["linear", "relu", "relu6"] as const) {
      for (const offset of [0, 1000]) {
        const name = `${backend}, ${c} channels, ${act}, inputs around ${offset}`;
        Deno.test(`the batch-norm kernel matches tfjs autodiff: ${name}`, async () => {
          const shape = [2, 5, 7, c];
          const ref = await referenceRun(shape, act, offset);
          const got = await kernelRun(backend, shape, act, offset);
          // Inputs around 1000 with unit spread: float32 holds them to ~6e-5, so the normalised
          // values themselves are that coarse and the reference's own error dominates.
          const tol = offset ? 2e-3 : 1e-5;
          assert(relErr(got.mean, ref.mean) < 1e-6, `mean ${relErr(got.mean, ref.mean)}`);
          assert(
            relErr(got.variance, ref.variance) < (offset ? 1e-3 : 1e-5),
            `variance ${relErr(got.variance, ref.variance)}`,
          );
          assert(relErr(got.y, ref.y) < tol, `y ${relErr(got.y, ref.y)}`);
          ["dx", "dgamma", "dbeta"].forEach((k, i) => {
            assert(relErr(got.grads[i], ref.grads[i]) < tol, `${k}: ${relErr(got.grads[i], ref.grads[i])}`);
          });
          if (act === "relu6") {
            const clipped = got.y.filter((v) => v === 6).length, zero = got.y.filter((v) => v === 0).length;
            assert(clipped > 0 && zero > 0, `the test inputs reach both clips (${zero} at 0, ${clipped} at 6)`);
          }
        });
      }
    }
  }
}

Deno.test("channelMoments(): per-channel mean and biased variance, exact for a large offset", () => {
  // Channel 0: 1, 3 -> mean 2, variance 1. Channel 1: 1e6 + 1, 1e6 + 3: the same spread far from 0.
  const { mean, variance } = channelMoments(Float32Array.of(1, 1e6 + 1, 3, 1e6 + 3), 2);
  assert.deepStrictEqual(Array.from(mean), [2, 1e6 + 2]);
  assert.deepStrictEqual(Array.from(variance), [1, 1]);
});

Deno.test("batchNormStats(), batchNormForward() and batchNormBackward() on a hand-checked single channel", () => {
  // x = 1, 3, 5, 7: mean 4, variance 5; eps 0 makes xhat = (x - 4) / sqrt(5).
  const x = Float32Array.of(1, 3, 5, 7), y = new Float32Array(4);
  const s = batchNormStats(x, Float32Array.of(1), 0);
  assert.deepStrictEqual([s.mean[0], s.variance[0]], [4, 5]);
  batchNormForward(x, s.mean, s.scale, Float32Array.of(0), "linear", y);
  const r5 = Math.sqrt(5);
  y.forEach((v, i) => assert(Math.abs(v - (x[i] - 4) / r5) < 1e-7));
  // With dy = 1 everywhere: dbeta = 4, dgamma = sum(xhat) = 0, dx = 0 (a shift of all inputs changes nothing).
  const out = { dx: new Float32Array(4), dgamma: new Float32Array(1), dbeta: new Float32Array(1) };
  const ones = new Float32Array(4).fill(1);
  batchNormBackward(ones, x, "linear", s, Float32Array.of(1), Float32Array.of(0), out);
  assert.strictEqual(out.dbeta[0], 4);
  assert(Math.abs(out.dgamma[0]) < 1e-6);
  out.dx.forEach((v) => assert(Math.abs(v) < 1e-7));
  // ReLU6 with beta 3: outputs 3 + (x - 4) / sqrt(5) all lie in (0, 6), so dy passes everywhere;
  // with beta -0.5 the pre-activations are -1.84, -0.95, -0.05 and 0.84: only x = 7 passes.
  batchNormBackward(ones, x, "relu6", s, Float32Array.of(1), Float32Array.of(-0.5), out);
  assert.strictEqual(out.dbeta[0], 1);
});

for (const backend of ["wasm", "cpu"]) {
  Deno.test(`a NaN input stays NaN through the fused ReLU6 on ${backend}, and nothing leaks`, async () => {
    await setBackend(backend);
    const before = tf.memory().numTensors;
    const x = tf.tensor4d([1, 2, NaN, 4, 5, 6, 7, 8], [2, 1, 1, 4]);
    const g = tf.ones([4]), b = tf.zeros([4]);
    const [y, mean, variance, invstd] = batchNormTrainKernel(x, g, b, 1e-3, "relu6");
    const v = y.dataSync();
    assert(Number.isNaN(v[2]) && Number.isNaN(v[6]), `channel 2 is NaN: ${Array.from(v)}`);
    assert(!Number.isNaN(v[0]) && !Number.isNaN(v[3]), "other channels are not");
    tf.dispose([x, g, b, y, mean, variance, invstd]);
    assert.strictEqual(tf.memory().numTensors, before);
  });
}
