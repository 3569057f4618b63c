// lib/engine/simd_threads.ts and the kernels that split over it: splitRange by hand; batch norm (forward and gradient),
// ReLU6, max-pool and depthwise gradients on wasm with two threads against the cpu backend and against one thread,
// on shapes large enough to split (every split kernel is seen running in two parts); a failing worker call.
import * as tf from "@tensorflow/tfjs-core";
import assert from "node:assert";
import { setBackend } from "../lib/engine/backend.ts";
import { batchNormTrainKernel } from "../lib/custom_ops.ts";
import { setSimdThreads, type SimdExports, simdKernels } from "../lib/engine/simd_kernels.ts";
import { splitRange } from "../lib/engine/simd_threads.ts";
import { randn } from "./conv_cases.ts";

Deno.test("splitRange(): near-equal parts on multiples of the alignment, the rest in the last", () => {
  assert.deepStrictEqual(splitRange(100, 2, 16), [[0, 48], [48, 52]]);
  assert.deepStrictEqual(splitRange(4, 2), [[0, 2], [2, 2]]);
  assert.deepStrictEqual(splitRange(5, 2), [[0, 2], [2, 3]]);
  assert.deepStrictEqual(splitRange(10, 3), [[0, 3], [3, 3], [6, 4]]);
  // Too few units for every part: fewer parts.
  assert.deepStrictEqual(splitRange(20, 4, 16), [[0, 16], [16, 4]]);
  assert.deepStrictEqual(splitRange(1, 2), [[0, 1]]);
  assert.deepStrictEqual(splitRange(7, 1, 16), [[0, 7]]);
});

// [2, 40, 40, 24]: 76,800 floats, over the kernels' one-thread limit; 3,200 rows, a multiple of 16, and 24 channels
// (a 16-channel chunk and two groups of 4 in the batch-norm sums).
const SHAPE = [2, 40, 40, 24] as const;

/** Every split kernel's outputs on the current backend. */
function outputs(): Float32Array[] {
  return tf.tidy(() => {
    const n = SHAPE.reduce((a, b) => a * b, 1), c = SHAPE[3];
    const x = tf.add(tf.mul(tf.tensor(randn(n, 1), [...SHAPE]), 2), 0.5) as tf.Tensor4D;
    const w = tf.tensor(randn(n, 2), [...SHAPE]);
    const gamma = tf.add(tf.tensor1d(randn(c, 3)), 2), beta = tf.add(tf.tensor1d(randn(c, 4)), 2);
    const out: tf.Tensor[] = [];
    out.push(...batchNormTrainKernel(x, gamma, beta, 1e-3, "relu6").slice(0, 3));
    const bn = (x: tf.Tensor, g: tf.Tensor, b: tf.Tensor) =>
      tf.sum(tf.mul(batchNormTrainKernel(x, g, b, 1e-3, "relu6")[0], w));
    out.push(...tf.grads(bn)([x, gamma, beta]));
    out.push(tf.grad((t: tf.Tensor) => tf.sum(tf.mul(tf.relu6(t), w)))(x));
    for (const [k, s, pad] of [[2, 2, "valid"], [3, 2, "same"]] as const) {
      const y = tf.maxPool(x, k, s, pad);
      const gy = tf.tensor(randn(y.size, 5), y.shape);
      out.push(tf.grad((t: tf.Tensor) => tf.sum(tf.mul(tf.maxPool(t as tf.Tensor4D, k, s, pad), gy)))(x));
    }
    const f = tf.tensor4d(randn(9 * c, 6), [3, 3, c, 1]);
    for (const stride of [1, 2] as const) {
      const y = tf.depthwiseConv2d(x, f, stride, "same");
      const gy = tf.tensor(randn(y.size, 7), y.shape);
      const loss = (t: tf.Tensor, k: tf.Tensor) =>
        tf.sum(tf.mul(tf.depthwiseConv2d(t as tf.Tensor4D, k as tf.Tensor4D, stride, "same"), gy));
      out.push(...tf.grads(loss)([x, f]));
    }
    return out.map((t) => t.dataSync() as Float32Array);
  });
}

function relErr(a: Float32Array, b: Float32Array): number {
  const scale = Math.max(1e-12, ...b.map(Math.abs));
  return Math.max(...a.map((v, i) => Math.abs(v - b[i]))) / scale;
}

const NAMES = [
  "bn y",
  "bn mean",
  "bn variance",
  "bn dx",
  "bn dgamma",
  "bn dbeta",
  "relu6 dx",
  "max-pool 2/2 dx",
  "max-pool 3/2 dx",
  "depthwise s1 dx",
  "depthwise s1 dw",
  "depthwise s2 dx",
  "depthwise s2 dw",
];

Deno.test("kernels split over two threads equal the cpu backend and one thread, and nothing leaks", async () => {
  await setBackend("cpu");
  const ref = outputs();
  await setBackend("wasm", { threads: 2 });
  const k = simdKernels(tf.backend())!;
  assert.strictEqual(k.threads, 2, "two threads on the shared heap");
  // Count the parts each kernel ran in.
  const parts: Record<string, number> = {};
  const parallel = k.parallel;
  k.parallel = (name, calls) => {
    parts[name] = Math.max(parts[name] ?? 0, calls.length);
    parallel.call(k, name, calls);
  };
  try {
    const before = tf.memory().numTensors;
    const two = outputs();
    assert.strictEqual(tf.memory().numTensors, before);
    const split: (keyof SimdExports)[] = [
      "moments",
      "bn_apply",
      "bn_grad_sums",
      "bn_grad_dx",
      "relu_grad",
      "max_pool_grad",
      "dw_filter_grad",
      "dw_gather",
    ];
    for (const name of split) assert.strictEqual(parts[name], 2, `${name} ran in ${parts[name]} parts`);
    await setSimdThreads(tf.backend(), 1);
    assert.strictEqual(k.threads, 1);
    const one = outputs();
    NAMES.forEach((name, i) => {
      assert.strictEqual(two[i].length, ref[i].length, name);
      assert(relErr(two[i], ref[i]) < 1e-4, `${name} vs cpu: ${relErr(two[i], ref[i])}`);
      // Sums differ from one thread's only in the order their float64 parts are added.
      assert(relErr(two[i], one[i]) < 1e-6, `${name} vs one thread: ${relErr(two[i], one[i])}`);
    });
  } finally {
    k.parallel = parallel;
    await setSimdThreads(tf.backend(), 2);
  }
});

Deno.test("a worker's failing call throws on the caller, after the other parts finish; the pool still works", async () => {
  await setBackend("wasm", { threads: 2 });
  const k = simdKernels(tf.backend())!;
  const x = tf.tensor1d(randn(64, 8)), dy = tf.ones([64]);
  const dx = tf.zeros([64]);
  try {
    const ok = (at: number) => [k.offset(dy) + at, k.offset(x) + at, k.offset(dx) + at, 32, 6];
    // Past the end of the 4 GB address space: the worker's call traps.
    const bad = [0xfffffff0, 0xfffffff0, 0xfffffff0, 32, 6];
    assert.throws(() => k.parallel("relu_grad", [ok(0), bad]), /kernel thread failed in relu_grad: .*out of bounds/);
    k.parallel("relu_grad", [ok(0), ok(128)]);
    const got = dx.dataSync(), v = x.dataSync();
    v.forEach((xi, i) => assert.strictEqual(got[i], xi > 0 && xi < 6 ? 1 : 0, `dx[${i}]`));
  } finally {
    tf.dispose([x, dy, dx]);
  }
});
