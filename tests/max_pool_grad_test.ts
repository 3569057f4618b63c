// lib/engine/max_pool_grad.ts: the SIMD kernel (wasm, channels a multiple of 4) and the JavaScript loop (other channel
// counts) against the cpu backend's own MaxPoolGrad, with tiling, overlapping and padded windows, ties and NaN.
import * as tf from "@tensorflow/tfjs-core";
import assert from "node:assert";
import { setBackend } from "../lib/engine/backend.ts";
import { maxPoolGradInto } from "../lib/engine/max_pool_grad.ts";
import { randn } from "./conv_cases.ts";

Deno.test("maxPoolGradInto by hand: the first maximum of each window takes dy, overlapping windows add up", () => {
  // 1x3x3x1 input, 2x2 windows at stride 1: four windows, each max shown; the 9 is in all four.
  const x = Float32Array.of(1, 2, 3, 4, 9, 6, 7, 8, 5);
  const dx = new Float32Array(9);
  maxPoolGradInto(x, Float32Array.of(1, 10, 100, 1000), dx, {
    n: 1,
    h: 3,
    w: 3,
    c: 1,
    oh: 2,
    ow: 2,
    kh: 2,
    kw: 2,
    sh: 1,
    sw: 1,
    top: 0,
    left: 0,
  });
  assert.deepStrictEqual(Array.from(dx), [0, 0, 0, 0, 1111, 0, 0, 0, 0]);
  // Ties: the first in row-major order; a window of NaN only passes nothing. One 2x2 window at stride 2.
  const one = { n: 1, h: 2, w: 2, c: 1, oh: 1, ow: 1, kh: 2, kw: 2, sh: 2, sw: 2, top: 0, left: 0 };
  const t = new Float32Array(4);
  maxPoolGradInto(Float32Array.of(2, 2, 2, 2), Float32Array.of(3), t, one);
  assert.deepStrictEqual(Array.from(t), [3, 0, 0, 0]);
  const nan = new Float32Array(4);
  maxPoolGradInto(new Float32Array(4).fill(NaN), Float32Array.of(3), nan, one);
  assert.deepStrictEqual(Array.from(nan), [0, 0, 0, 0]);
});

const cases = [
  { k: 2, s: 2, pad: "valid", h: 12, w: 10 }, // tiles the input: the store-only path
  { k: 2, s: 2, pad: "valid", h: 11, w: 9 }, // an uncovered last row and column
  { k: 3, s: 1, pad: "same", h: 9, w: 10 }, // SSD's pool5: overlapping, padded
  { k: 3, s: 2, pad: "same", h: 11, w: 10 },
  { k: 2, s: 1, pad: "valid", h: 7, w: 8 },
] as const;

for (const c of [8, 3]) {
  Deno.test(`MaxPoolGrad on wasm (${c} channels: ${c % 4 ? "JavaScript" : "SIMD"}) equals the cpu backend's`, async () => {
    const run = async (backend: string, ties: boolean) => {
      await setBackend(backend);
      const before = tf.memory().numTensors;
      const outs: Float32Array[] = [];
      for (const { k, s, pad, h, w } of cases) {
        const n = 2 * h * w * c;
        // With ties: values rounded to a coarse grid and ReLU'd, so many windows hold equal maxima (zeros too).
        const v = randn(n, 3 + h).map((r) => ties ? Math.max(0, Math.round(r * 2)) : r);
        const x = tf.tensor4d(v, [2, h, w, c]);
        const g = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(tf.maxPool(t as tf.Tensor4D, k, s, pad), 1.5)))(x);
        const gy = tf.grad((t: tf.Tensor) => {
          const y = tf.maxPool(t as tf.Tensor4D, k, s, pad);
          return tf.sum(tf.mul(y, tf.tensor(randn(y.size, 11), y.shape)));
        })(x);
        outs.push(await g.data() as Float32Array, await gy.data() as Float32Array);
        tf.dispose([x, g, gy]);
      }
      assert.strictEqual(tf.memory().numTensors, before);
      return outs;
    };
    for (const ties of [false, true]) {
      const ref = await run("cpu", ties);
      const got = await run("wasm", ties);
      for (let i = 0; i < ref.length; i++) {
        for (let j = 0; j < ref[i].length; j++) {
          assert(
            Math.abs(got[i][j] - ref[i][j]) <= 1e-6 * Math.max(1, Math.abs(ref[i][j])),
            `case ${cases[i >> 1].k}/${cases[i >> 1].s}/${cases[i >> 1].pad} ties ${ties} at ${j}: ${got[i][j]} vs ${
              ref[i][j]
            }`,
          );
        }
      }
    }
  });
}
