// The native passes (lib/engine/native_kernels.c) against the SIMD kernels they stand in for: the same bits
// for batch norm forward and backward, the focal loss and the optimizer's updates, on the shapes
// SSD300-MobileNetV2 uses and on awkward ones.
import * as tf from "@tensorflow/tfjs-core";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { setBackend } from "../lib/engine/mod.ts";
import { batchNormOnDnnl } from "../lib/engine/batch_norm_kernel.ts";
import { dnnlAvailable } from "../lib/engine/dnnl.ts";
import { nativeKernels, nativeKernelsUnavailable } from "../lib/engine/native_kernels.ts";
import { registerOrtKernels } from "../lib/engine/ort_kernels.ts";
import { BN_TRAIN, BN_TRAIN_GRAD, focalLossKernel, momentumUpdate, momentumUpdates } from "../lib/custom_ops.ts";
import { canonicalBits } from "./asserts.ts";

Deno.test("the native kernels build and load here (deno task test installs gcc)", () => {
  assert.ok(dnnlAvailable(), "oneDNN first: it sets the OpenMP environment both share");
  assert.ok(nativeKernels(), `did not build: ${nativeKernelsUnavailable()}`);
});

/** Forward and gradient of the batch-norm kernel, every output's bits. */
function bitsOf(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, dy: tf.Tensor, activation: string): Uint32Array[] {
  const attrs = { eps: 1e-3, activation };
  const fwd = tf.engine().runKernel(BN_TRAIN, { x, gamma, beta }, attrs) as tf.Tensor[];
  const [y, mean, variance, invstd] = fwd;
  const back = tf.engine().runKernel(
    BN_TRAIN_GRAD,
    { dy, x, y, mean, variance, invstd, gamma, beta },
    attrs,
  ) as tf.Tensor[];
  const out = [...fwd, ...back].map((t) => new Uint32Array(t.dataSync().slice().buffer));
  tf.dispose([...fwd, ...back]);
  return out;
}

Deno.test("native batch norm computes the SIMD kernels' bits: statistics, output, dx, dgamma, dbeta", async () => {
  await setBackend("wasm", { threads: 2 });
  const k = nativeKernels()!;
  const names = ["y", "mean", "variance", "invstd", "dx", "dgamma", "dbeta"];
  // MobileNetV2's largest, a channel count that leaves a group of 4, rows not a multiple of 16, one row, and a
  // large mean against the spread (the shifted sums' case).
  // MobileNetV2's 24 channels: one chunk of 16 channels and 8 more (native_kernels.c sums by chunks of 16).
  const shapes = [
    [4, 150, 150, 96],
    [2, 7, 5, 12],
    [3, 17, 1, 8],
    [1, 1, 1, 4],
    [4, 19, 19, 576],
    [5, 36],
    [4, 75, 75, 24],
  ];
  let seed = 1;
  for (const activation of ["linear", "relu", "relu6"]) {
    for (const shape of shapes) {
      const c = shape.at(-1)!;
      const before = tf.memory().numTensors;
      const x = tf.randomNormal(shape, shape.length === 2 ? 1000 : 2, 3, "float32", seed++);
      const dy = tf.randomNormal(shape, 0, 1, "float32", seed++);
      const gamma = tf.randomNormal([c], 1, 0.5, "float32", seed++),
        beta = tf.randomNormal([c], 1, 2, "float32", seed++);
      batchNormOnDnnl(false);
      const simd = bitsOf(x, gamma, beta, dy, activation);
      batchNormOnDnnl(true);
      const calls = k.calls;
      const native = bitsOf(x, gamma, beta, dy, activation);
      batchNormOnDnnl(false);
      assert.equal(k.calls - calls, 4, "moments, apply, gradient sums and dx ran natively");
      simd.forEach((bits, i) => {
        const differ = bits.findIndex((b, j) => b !== native[i][j]);
        assert.equal(differ, -1, `${activation} ${shape} ${names[i]}[${differ}]`);
      });
      tf.dispose([x, dy, gamma, beta]);
      assert.equal(tf.memory().numTensors, before);
    }
  }
});

Deno.test("told dy is consumed, the native gradient writes dx over dy's data, unless another tensor shares it", async () => {
  await setBackend("wasm", { threads: 2 });
  batchNormOnDnnl(true);
  const shape = [4, 19, 19, 96], attrs = { eps: 1e-3, activation: "relu6" };
  const x = tf.randomNormal(shape, 1, 2, "float32", 1), gamma = tf.randomNormal([96], 1, 0.5, "float32", 2);
  const beta = tf.randomNormal([96], 1, 2, "float32", 3);
  const before = tf.memory().numTensors;
  const fwd = tf.engine().runKernel(BN_TRAIN, { x, gamma, beta }, attrs) as tf.Tensor[];
  const [y, mean, variance, invstd] = fwd;
  const grad = (dy: tf.Tensor, dyConsumed: boolean) =>
    tf.engine().runKernel(
      BN_TRAIN_GRAD,
      { dy, x, y, mean, variance, invstd, gamma, beta },
      { ...attrs, dyConsumed },
    ) as tf.Tensor[];
  const bitsOf = (t: tf.Tensor) => new Uint32Array(t.dataSync().slice().buffer);
  const dy = tf.randomNormal(shape, 0, 1, "float32", 4);
  const want = grad(dy, false);
  const wantBits = want.map(bitsOf);
  // Alone: dx is dy's data, and the same bits.
  const dy1 = tf.add(dy, 0);
  const got = grad(dy1, true);
  assert.ok(got[0].dataId === dy1.dataId, "written over dy");
  got.forEach((t, i) => assert.deepEqual(bitsOf(t), wantBits[i], `output ${i}`));
  // Shared (a clone shares the data): a fresh dx, dy untouched.
  const dy2 = tf.add(dy, 0), twin = dy2.clone();
  const dyBits = bitsOf(dy2);
  const shared = grad(dy2, true);
  assert.ok(shared[0].dataId !== dy2.dataId, "a fresh buffer");
  assert.deepEqual(bitsOf(twin), dyBits, "dy unchanged");
  assert.deepEqual(bitsOf(shared[0]), wantBits[0]);
  tf.dispose([...fwd, dy, ...want, dy1, ...got, dy2, twin, ...shared]);
  assert.equal(tf.memory().numTensors, before, "no tensor left behind");
  batchNormOnDnnl(false);
  tf.dispose([x, gamma, beta]);
});

Deno.test({
  name: "without AVX-512 the kernels' portable C computes the same bits (a child built with -mno-avx512f)",
  // The child runs the bit-for-bit batch-norm test only; it must not run this one again.
  ignore: Deno.env.get("SSD_NATIVE_PORTABLE_CHILD") === "1",
  fn() {
    const dir = Deno.makeTempDirSync();
    const cc = `${dir}/cc`;
    Deno.writeTextFileSync(cc, `#!/bin/sh\nexec cc "$@" -mno-avx512f\n`);
    Deno.chmodSync(cc, 0o755);
    const test = new URL(import.meta.url).pathname;
    const r = spawnSync(Deno.execPath(), [
      "test",
      "-A",
      "--filter",
      "computes the SIMD kernels' bits: statistics",
      test,
    ], {
      encoding: "utf8",
      env: { ...Deno.env.toObject(), CC: cc, SSD_NATIVE_CACHE: dir, SSD_NATIVE_PORTABLE_CHILD: "1", NO_COLOR: "1" },
    });
    const built = [...Deno.readDirSync(dir)].some((e) => e.name.endsWith(".so"));
    Deno.removeSync(dir, { recursive: true });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.ok(built, "the child built its own library");
    assert.match(r.stdout, /1 passed/);
  },
});

Deno.test("the native focal loss computes the SIMD kernel's bits: the sum and every gradient", async () => {
  await setBackend("wasm", { threads: 2 });
  const k = nativeKernels()!;
  // SSD300-MobileNetV2's logits at batch 4 plus a tail of 3 (the loop's), with zeros of both signs, logits
  // past exp's clamp, a tiny one and a NaN.
  const n = 4 * 1917 * 81 + 3;
  const x = tf.tidy(() => {
    const r = tf.randomNormal([n], 0, 6, "float32", 21).dataSync() as Float32Array;
    r.set([0, -0, 88, -100, 1e-30, NaN, 17, -17], 1000);
    return tf.tensor1d(r);
  });
  const z = tf.tidy(() => tf.cast(tf.less(tf.randomUniform([n], 0, 1, "float32", 22), 0.05), "float32"));
  const run = (native: boolean) => {
    batchNormOnDnnl(native);
    const [sum, grad] = focalLossKernel(x, z, { gamma: 2, alpha: 0.25 });
    batchNormOnDnnl(false);
    const out = { sum: canonicalBits(sum), grad: canonicalBits(grad) };
    tf.dispose([sum, grad]);
    return out;
  };
  const simd = run(false), calls = k.calls, native = run(true);
  assert.equal(k.calls - calls, 1, "the pass ran natively");
  assert.deepEqual(native.sum, simd.sum);
  assert.equal(native.grad.findIndex((b, i) => b !== simd.grad[i]), -1);
  assert.equal(native.sum[0], 0x7fc00000, "a NaN logit makes the sum NaN");
  // Without the NaN the sum is a number, and still the same.
  const clean = tf.where(tf.isNaN(x), tf.zerosLike(x), x);
  batchNormOnDnnl(true);
  const [a] = focalLossKernel(clean, z, { gamma: 2, alpha: 0.25 });
  batchNormOnDnnl(false);
  const [b] = focalLossKernel(clean, z, { gamma: 2, alpha: 0.25 });
  assert.ok(Number.isFinite(a.dataSync()[0]));
  assert.deepEqual(canonicalBits(a), canonicalBits(b));
  tf.dispose([x, z, clean, a, b]);
});

Deno.test("the native optimizer step updates many tensors in one call, with the SIMD kernel's bits", async () => {
  await setBackend("wasm", { threads: 2 });
  const k = nativeKernels()!;
  const before = tf.memory().numTensors;
  const sizes = [3, 1, 4, 17, 1000, 288, 65536, 7, 0, 123457];
  const items = sizes.map((size, i) => ({
    w: tf.randomNormal([size], 0, 1, "float32", 3 * i + 1),
    v: tf.randomNormal([size], 0, 1, "float32", 3 * i + 2),
    g: tf.randomNormal([size], 0, 1, "float32", 3 * i + 3),
    // Each step of the update on and off: the decay, the loss scale's division, the sens product.
    u: {
      momentum: 0.9,
      weightDecay: i % 2 ? 0 : 1.5e-4,
      scale: i % 3 ? 1 : 1 / 1024,
      lr: 0.05,
      sens: i % 4 ? 1 : 1024,
    },
  }));
  // A batch-norm moving average: the average is both w and v.
  items.push({
    w: items[5].w,
    v: items[5].w,
    g: items[5].g,
    u: { momentum: 0.97, weightDecay: 0, scale: 1, lr: 0, sens: 0.03 },
  });
  const one = items.map(({ w, v, g, u }) => momentumUpdate(w, v, g, u));
  batchNormOnDnnl(true);
  const calls = k.calls;
  const many = momentumUpdates(items);
  batchNormOnDnnl(false);
  assert.equal(k.calls - calls, 1, "one native call for all tensors");
  items.forEach((_, i) => {
    for (const j of [0, 1]) {
      assert.deepEqual(canonicalBits(many[i][j]), canonicalBits(one[i][j]), `tensor ${i} output ${j}`);
    }
  });
  tf.dispose([...one.flat(), ...many.flat(), ...items.slice(0, -1).flatMap(({ w, v, g }) => [w, v, g])]);
  assert.equal(tf.memory().numTensors, before);
});

Deno.test("native batch norm keeps a NaN input NaN, as the SIMD kernels do", async () => {
  await setBackend("wasm");
  const x = tf.tensor4d([1, NaN, 3, 4, 5, 6, 7, 8], [2, 1, 1, 4]);
  const ones = tf.ones([4]), zeros = tf.zeros([4]), dy = tf.onesLike(x);
  batchNormOnDnnl(true);
  const native = bitsOf(x, ones, zeros, dy, "relu6");
  batchNormOnDnnl(false);
  const simd = bitsOf(x, ones, zeros, dy, "relu6");
  // NaN's sign bit may differ (x86 makes negative NaNs): compare NaN as NaN, the rest bit for bit.
  const values = (bits: Uint32Array[]) =>
    bits.map((b) => [...new Float32Array(b.buffer)].map((v) => isNaN(v) ? "NaN" : v));
  assert.deepEqual(values(native), values(simd));
  // Channel 1 holds the NaN: both its outputs, its statistics, its dx and dgamma are NaN; dbeta sums dy where
  // the pre-activation is inside (0, 6), which a NaN never is.
  assert.deepEqual(values(native).map((v) => v.filter((e) => e === "NaN").length), [2, 1, 1, 1, 2, 1, 0]);
  assert.ok(Number.isNaN(new Float32Array(native[0].buffer)[1]), "y keeps the NaN");
  tf.dispose([x, ones, zeros, dy]);
});

Deno.test("the onnxruntime backend runs batch norm natively; nativeBatchNorm: false gives the gradient to oneDNN", async () => {
  await setBackend("onnxruntime");
  const k = nativeKernels()!;
  const x = tf.randomNormal([2, 6, 6, 20], 1, 2, "float32", 5), dy = tf.randomNormal(x.shape, 0, 1, "float32", 6);
  const gamma = tf.ones([20]), beta = tf.zeros([20]);
  let calls = k.calls;
  bitsOf(x, gamma, beta, dy, "relu6");
  assert.equal(k.calls - calls, 4);
  registerOrtKernels({ nativeBatchNorm: false });
  calls = k.calls;
  bitsOf(x, gamma, beta, dy, "relu6");
  assert.equal(k.calls, calls, "nothing native");
  registerOrtKernels({ nativeBatchNorm: true });
  tf.dispose([x, dy, gamma, beta]);
  await setBackend("wasm");
});

Deno.test("without a C compiler the onnxruntime backend still trains, on the SIMD kernels and oneDNN, and says why", () => {
  const dir = Deno.makeTempDirSync();
  const code = `
    import * as tf from "@tensorflow/tfjs-core";
    import { setBackend } from "./lib/engine/mod.ts";
    import { batchNormTrainKernel } from "./lib/custom_ops.ts";
    import { nativeKernels, nativeKernelsUnavailable } from "./lib/engine/native_kernels.ts";
    await setBackend("onnxruntime");
    const x = tf.randomNormal([2, 4, 4, 8]);
    const g = tf.grads((a, b, c) => batchNormTrainKernel(a, b, c, 1e-3, "relu6")[0].sum())([x, tf.ones([8]), tf.zeros([8])]);
    console.log(JSON.stringify({ native: nativeKernels() !== null, why: nativeKernelsUnavailable(), dgamma: g[1].shape }));
  `;
  const r = spawnSync(Deno.execPath(), ["eval", "--ext=ts", code], {
    encoding: "utf8",
    env: { ...Deno.env.toObject(), CC: "/nonexistent/cc", SSD_NATIVE_CACHE: dir, NO_COLOR: "1" },
  });
  Deno.removeSync(dir, { recursive: true });
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split("\n").at(-1)!);
  assert.equal(out.native, false);
  assert.match(out.why, /nonexistent|No such file|not found/i);
  assert.deepEqual(out.dgamma, [8]);
  assert.match(r.stderr, /native batch-norm kernels did not build .*apt-get install -y --no-install-recommends gcc/);
});
