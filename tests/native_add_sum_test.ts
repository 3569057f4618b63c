// lib/engine/native_add_sum.ts: Add and the channel Sum as native code, against the shipped wasm kernels.
import * as tf from "@tensorflow/tfjs-core";
import assert from "node:assert/strict";
import { setBackend } from "../lib/engine/mod.ts";
import { batchNormOnDnnl } from "../lib/engine/batch_norm_kernel.ts";
import { nativeKernels, nativeKernelsUnavailable } from "../lib/engine/native_kernels.ts";
import { canonicalBits } from "./asserts.ts";

Deno.test("native Add and channel Sum compute the shipped wasm kernels' bits; other calls go to the shipped ones", async () => {
  await setBackend("wasm", { threads: 2 });
  const k = nativeKernels()!;
  assert.ok(k, `the native kernels did not build: ${nativeKernelsUnavailable()}`);
  const before = tf.memory().numTensors;
  // A head's bias gradient (486 channels: the threads split at 16-channel lines, one part left over), a few
  // channels over many rows, keepDims, an axis given as negatives, and sums the native code leaves alone:
  // over everything (no axis), over the last axis, and too small to be worth a call.
  const x = tf.randomNormal([4, 19, 19, 486], 0, 1, "float32", 31), y = tf.randomNormal(x.shape, 0, 1, "float32", 32);
  const narrow = tf.randomNormal([4, 150, 150, 3], 0, 1, "float32", 33);
  const cases: [string, () => tf.Tensor, boolean][] = [
    ["sum over N, H, W", () => tf.sum(x, [0, 1, 2]), true],
    ["sum of 3 channels", () => tf.sum(narrow, [0, 1, 2]), true],
    // The shipped kernel adds in the order the axes are given: another order is not ours.
    ["sum over N, H, W given out of order", () => tf.sum(narrow, [2, 0, 1]), false],
    ["sum, keepDims", () => tf.sum(x, [0, 1, 2], true), true],
    ["sum, negative axes", () => tf.sum(tf.reshape(x, [-1, 486]), -2), true],
    ["sum of everything", () => tf.sum(x), false],
    ["sum over the last axis", () => tf.sum(x, 3), false],
    ["small sum", () => tf.sum(tf.ones([3, 5]), 0), false],
    ["add", () => tf.add(x, y), true],
    ["broadcast add", () => tf.add(x, tf.ones([486])), false],
  ];
  for (const [what, f, native] of cases) {
    const shipped = tf.tidy(f);
    batchNormOnDnnl(true);
    const calls = k.calls;
    const ours = tf.tidy(f);
    batchNormOnDnnl(false);
    assert.equal(k.calls - calls, native ? 1 : 0, `${what}: ${native ? "native" : "shipped"}`);
    assert.deepEqual(ours.shape, shipped.shape, what);
    const want = canonicalBits(shipped);
    assert.equal(canonicalBits(ours).findIndex((b, i) => b !== want[i]), -1, what);
    tf.dispose([shipped, ours]);
  }
  tf.dispose([x, y, narrow]);
  assert.equal(tf.memory().numTensors, before);
});
