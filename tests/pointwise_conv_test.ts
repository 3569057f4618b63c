// lib/engine/pointwise_conv.ts: which convs the SIMD 1x1 kernel takes, by hand; its outputs on wasm with two kernel threads
// against a plain matmul loop (odd row counts, 16-output blocks and 4-output tails, one and 32 input channels, a
// call large enough to split); the convs it leaves to XNNPACK, against the cpu backend.
import * as tf from "@tensorflow/tfjs-core";
import assert from "node:assert";
import { setBackend } from "../lib/engine/backend.ts";
import { POINTWISE_MAX_K, servesPointwise } from "../lib/engine/pointwise_conv.ts";
import { simdKernels } from "../lib/engine/simd_kernels.ts";
import { randn } from "./conv_cases.ts";

Deno.test("servesPointwise(): 1x1 at stride 1, no padding, few input channels, outputs a multiple of 4", () => {
  const x = [2, 8, 8, 24];
  assert(servesPointwise(x, [1, 1, 24, 144], { strides: 1, pad: "valid" }));
  assert(servesPointwise(x, [1, 1, 24, 144], { strides: [1, 1], pad: "same", dataFormat: "NHWC" }));
  assert(servesPointwise(x, [1, 1, 24, 4], { strides: 1, pad: [[0, 0], [0, 0], [0, 0], [0, 0]] }));
  assert(!servesPointwise(x, [1, 1, 24, 6], { strides: 1, pad: "valid" }), "6 outputs");
  assert(!servesPointwise(x, [1, 1, 24, 8], { strides: 2, pad: "valid" }), "stride 2");
  assert(!servesPointwise(x, [1, 1, 24, 8], { strides: 1, pad: 1 }), "padding 1");
  assert(!servesPointwise(x, [3, 3, 24, 8], { strides: 1, pad: "same" }), "3x3");
  assert(!servesPointwise(x, [1, 1, 24, 8], { strides: 1, pad: "valid", dataFormat: "NCHW" }), "NCHW");
  const wide = [2, 8, 8, POINTWISE_MAX_K + 1];
  assert(!servesPointwise(wide, [1, 1, POINTWISE_MAX_K + 1, 8], { strides: 1, pad: "valid" }), "too many inputs");
});

/** y[r, o] = sum over k of x[r, k] * w[k, o]. */
function matmul(x: Float32Array, w: Float32Array, rows: number, k: number, co: number): Float32Array {
  const y = new Float32Array(rows * co);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < co; o++) {
      let s = 0;
      for (let i = 0; i < k; i++) s += x[r * k + i] * w[i * co + o];
      y[r * co + o] = s;
    }
  }
  return y;
}

function relErr(a: Float32Array, b: Float32Array): number {
  assert.strictEqual(a.length, b.length);
  let scale = 1e-12, err = 0;
  b.forEach((v, i) => {
    scale = Math.max(scale, Math.abs(v));
    err = Math.max(err, Math.abs(a[i] - v));
  });
  return err / scale;
}

/** [x shape, output channels, parts expected]: 63 rows (odd), 1 and 32 inputs, 4/20/36 outputs, 8,192 rows split. */
const CASES: [number[], number, number][] = [
  [[1, 7, 9, 16], 20, 1],
  [[3, 5, 5, 1], 4, 1],
  [[1, 9, 7, 32], 36, 1],
  [[2, 64, 64, 24], 48, 2],
];

for (const [shape, co, parts] of CASES) {
  Deno.test(`pointwise conv on two threads: ${shape.join("x")} -> ${co}, against a matmul`, async () => {
    await setBackend("wasm", { threads: 2 });
    const k = simdKernels(tf.backend())!;
    const calls: number[] = [];
    const parallel = k.parallel;
    k.parallel = (fn, c) => {
      if (fn === "pointwise") calls.push(c.length);
      parallel.call(k, fn, c);
    };
    try {
      const rows = shape[0] * shape[1] * shape[2], ci = shape[3];
      const xs = randn(rows * ci, 1), ws = randn(ci * co, 2);
      const before = tf.memory().numTensors;
      const y = tf.tidy(() =>
        tf.conv2d(
          tf.tensor4d(xs, shape as [number, number, number, number]),
          tf.tensor4d(ws, [1, 1, ci, co]),
          1,
          "valid",
        )
          .dataSync() as Float32Array
      );
      assert.strictEqual(tf.memory().numTensors, before, "no tensor leaks");
      assert.deepStrictEqual(calls, [parts], `pointwise calls (parts): ${calls}`);
      const e = relErr(y, matmul(xs, ws, rows, ci, co));
      assert(e < 1e-5, `max relative error ${e}`);
    } finally {
      k.parallel = parallel;
    }
  });
}

Deno.test("pointwise conv: other convs go to the shipped kernel and still match the cpu backend", async () => {
  await setBackend("wasm", { threads: 2 });
  const k = simdKernels(tf.backend())!;
  let served = 0;
  const parallel = k.parallel;
  k.parallel = (fn, c) => {
    if (fn === "pointwise") served++;
    parallel.call(k, fn, c);
  };
  const run = () =>
    tf.tidy(() => {
      const x = tf.tensor4d(randn(2 * 6 * 6 * 40, 3), [2, 6, 6, 40]);
      const conv = (ci: number, co: number, kk: number, s: 1 | 2, pad: "valid" | "same") =>
        tf.conv2d(
          tf.slice(x, [0, 0, 0, 0], [2, 6, 6, ci]),
          tf.tensor4d(randn(kk * kk * ci * co, ci + co), [kk, kk, ci, co]),
          s,
          pad,
        ).dataSync() as Float32Array;
      return [
        conv(40, 8, 1, 1, "valid"),
        conv(8, 6, 1, 1, "valid"),
        conv(8, 8, 1, 2, "same"),
        conv(8, 8, 3, 1, "same"),
      ];
    });
  try {
    const got = run();
    assert.strictEqual(served, 0, "40 inputs, 6 outputs, stride 2 and 3x3 are not served");
    await setBackend("cpu");
    const ref = run();
    got.forEach((g, i) => assert(relErr(g, ref[i]) < 1e-5, `conv ${i}: ${relErr(g, ref[i])}`));
  } finally {
    k.parallel = parallel;
    await setBackend("wasm", { threads: 2 });
  }
});
