// lib/engine/depthwise_gather.ts: the index tables by hand; the depthwise forward and input gradient on wasm with two kernel
// threads against plain loops over the definition (stride, padding, dilation, 3x3 and 5x5, 16-channel blocks and
// 4-channel tails, one image split by rows and several by images); the cases it leaves to the shipped kernel.
import * as tf from "@tensorflow/tfjs-core";
import assert from "node:assert";
import { setBackend } from "../lib/engine/backend.ts";
import { forwardTable, inputGradTable } from "../lib/engine/depthwise_gather.ts";
import { setSimdThreads, simdKernels } from "../lib/engine/simd_kernels.ts";
import { randn } from "./conv_cases.ts";

Deno.test("forwardTable() and inputGradTable(): the rows each tap reads, by hand", () => {
  // 5 inputs, 3 taps, stride 2, padding 1: outputs 0..2 read rows (-1, 0, 1), (1, 2, 3), (3, 4, -1).
  assert.deepStrictEqual([...forwardTable(3, 3, 2, 1, 1, 5)], [-1, 0, 1, 1, 2, 3, 3, 4, -1]);
  // Dilation 2, no padding, 6 inputs, 2 outputs: taps at +0, +2, +4.
  assert.deepStrictEqual([...forwardTable(2, 3, 1, 2, 0, 6)], [0, 2, 4, 1, 3, 5]);
  // The same stride-2 conv backwards: input row i gets output o's gradient through tap t where 2o - 1 + t = i.
  assert.deepStrictEqual([...inputGradTable(5, 3, 2, 1, 1, 3)], [-1, 0, -1, 1, -1, 0, -1, 1, -1, 2, -1, 1, -1, 2, -1]);
});

interface Case {
  n: number;
  h: number;
  w: number;
  c: number;
  k: number;
  stride: number;
  dilation: number;
  pad: "same" | "valid";
}

/** Geometry as tfjs computes it (padding "same" puts the odd extra row at the end). */
function geometry(g: Case) {
  const span = (g.k - 1) * g.dilation + 1;
  const out = (size: number) =>
    g.pad === "valid" ? Math.ceil((size - span + 1) / g.stride) : Math.ceil(size / g.stride);
  const oh = out(g.h), ow = out(g.w);
  const total = (size: number, o: number) => Math.max(0, (o - 1) * g.stride + span - size);
  const top = g.pad === "valid" ? 0 : Math.floor(total(g.h, oh) / 2);
  const left = g.pad === "valid" ? 0 : Math.floor(total(g.w, ow) / 2);
  return { oh, ow, top, left };
}

/** y[b, oy, ox, c] = sum over taps of x[b, oy*s - top + ky*d, ox*s - left + kx*d, c] * w[ky, kx, c]. */
function forwardLoops(x: Float32Array, w: Float32Array, g: Case): Float32Array {
  const { oh, ow, top, left } = geometry(g);
  const y = new Float32Array(g.n * oh * ow * g.c);
  for (let b = 0; b < g.n; b++) {
    for (let oy = 0; oy < oh; oy++) {
      for (let ox = 0; ox < ow; ox++) {
        for (let ch = 0; ch < g.c; ch++) {
          let s = 0;
          for (let ky = 0; ky < g.k; ky++) {
            for (let kx = 0; kx < g.k; kx++) {
              const iy = oy * g.stride - top + ky * g.dilation, ix = ox * g.stride - left + kx * g.dilation;
              if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w) continue;
              s += x[((b * g.h + iy) * g.w + ix) * g.c + ch] * w[(ky * g.k + kx) * g.c + ch];
            }
          }
          y[((b * oh + oy) * ow + ox) * g.c + ch] = s;
        }
      }
    }
  }
  return y;
}

/** The forward's transpose: each dy[b, oy, ox, c] * w[ky, kx, c] added into the dx pixel that tap read. */
function inputGradLoops(dy: Float32Array, w: Float32Array, g: Case): Float32Array {
  const { oh, ow, top, left } = geometry(g);
  const dx = new Float32Array(g.n * g.h * g.w * g.c);
  for (let b = 0; b < g.n; b++) {
    for (let oy = 0; oy < oh; oy++) {
      for (let ox = 0; ox < ow; ox++) {
        for (let ky = 0; ky < g.k; ky++) {
          for (let kx = 0; kx < g.k; kx++) {
            const iy = oy * g.stride - top + ky * g.dilation, ix = ox * g.stride - left + kx * g.dilation;
            if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w) continue;
            for (let ch = 0; ch < g.c; ch++) {
              dx[((b * g.h + iy) * g.w + ix) * g.c + ch] += dy[((b * oh + oy) * ow + ox) * g.c + ch] *
                w[(ky * g.k + kx) * g.c + ch];
            }
          }
        }
      }
    }
  }
  return dx;
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

const CASES: Case[] = [
  // One image of 64x64x16 (65,536 floats, enough to split): by rows.
  { n: 1, h: 64, w: 64, c: 16, k: 3, stride: 1, dilation: 1, pad: "same" },
  // Four images: by images. 20 channels: a 16-channel block and a 4-channel tail.
  { n: 4, h: 64, w: 63, c: 20, k: 3, stride: 2, dilation: 1, pad: "same" },
  { n: 2, h: 30, w: 27, c: 36, k: 3, stride: 2, dilation: 1, pad: "valid" },
  { n: 2, h: 19, w: 19, c: 8, k: 5, stride: 1, dilation: 1, pad: "same" },
  { n: 2, h: 21, w: 18, c: 4, k: 3, stride: 1, dilation: 2, pad: "same" },
  { n: 1, h: 12, w: 15, c: 12, k: 3, stride: 1, dilation: 3, pad: "valid" },
];

const name = (g: Case) => `${g.n}x${g.h}x${g.w}x${g.c} k${g.k} s${g.stride} d${g.dilation} ${g.pad}`;

for (const g of CASES) {
  Deno.test(`depthwise gather on two threads: forward and input gradient ${name(g)}`, async () => {
    await setBackend("wasm", { threads: 2 });
    const k = simdKernels(tf.backend())!;
    const parts: number[] = [];
    const parallel = k.parallel;
    k.parallel = (fn, calls) => {
      if (fn === "dw_gather") parts.push(calls.length);
      parallel.call(k, fn, calls);
    };
    try {
      const xs = randn(g.n * g.h * g.w * g.c, 1), ws = randn(g.k * g.k * g.c, 2);
      const { oh, ow } = geometry(g);
      const dys = randn(g.n * oh * ow * g.c, 3);
      const before = tf.memory().numTensors;
      const [y, dx] = tf.tidy(() => {
        const x = tf.tensor4d(xs, [g.n, g.h, g.w, g.c]), w = tf.tensor4d(ws, [g.k, g.k, g.c, 1]);
        const y = tf.depthwiseConv2d(x, w, g.stride, g.pad, "NHWC", g.dilation);
        assert.deepStrictEqual(y.shape, [g.n, oh, ow, g.c]);
        const dx = tf.engine().runKernel("DepthwiseConv2dNativeBackpropInput", {
          dy: tf.tensor4d(dys, [g.n, oh, ow, g.c]),
          filter: w,
        }, {
          strides: [g.stride, g.stride],
          pad: g.pad,
          dilations: [g.dilation, g.dilation],
          inputShape: [g.n, g.h, g.w, g.c],
        }) as tf.Tensor;
        return [y.dataSync() as Float32Array, dx.dataSync() as Float32Array];
      });
      assert.strictEqual(tf.memory().numTensors, before, "no tensor leaks");
      // Both passes went through the gather, each output of 64K floats or more in two parts.
      const split = (floats: number) => floats >= 65536 ? 2 : 1;
      assert.deepStrictEqual(parts, [split(y.length), split(dx.length)]);
      const ey = relErr(y, forwardLoops(xs, ws, g)), edx = relErr(dx, inputGradLoops(dys, ws, g));
      assert(ey < 1e-5, `forward: max relative error ${ey}`);
      assert(edx < 1e-5, `input gradient: max relative error ${edx}`);
    } finally {
      k.parallel = parallel;
    }
  });
}

Deno.test("depthwise forward: a multiplier, odd channels and one thread go to the shipped kernel, still exact", async () => {
  await setBackend("wasm", { threads: 2 });
  const k = simdKernels(tf.backend())!;
  let gathered = 0;
  const parallel = k.parallel;
  k.parallel = (fn, calls) => {
    if (fn === "dw_gather") gathered++;
    parallel.call(k, fn, calls);
  };
  const run = (c: number, m: number) =>
    tf.tidy(() => {
      const x = tf.tensor4d(randn(2 * 9 * 9 * c, 4), [2, 9, 9, c]);
      const w = tf.tensor4d(randn(9 * c * m, 5), [3, 3, c, m]);
      return tf.depthwiseConv2d(x, w, 1, "same").dataSync() as Float32Array;
    });
  try {
    const got = [run(4, 2), run(3, 1)];
    assert.strictEqual(gathered, 0, "a multiplier of 2 and 3 channels are not gathered");
    await setSimdThreads(tf.backend(), 1);
    const one = run(8, 1);
    assert.strictEqual(gathered, 0, "one thread keeps XNNPACK");
    await setSimdThreads(tf.backend(), 2);
    const two = run(8, 1);
    assert.strictEqual(gathered, 1);
    await setBackend("cpu");
    const ref = [run(4, 2), run(3, 1), run(8, 1)];
    assert(relErr(got[0], ref[0]) < 1e-5 && relErr(got[1], ref[1]) < 1e-5, "shipped kernel vs cpu");
    assert(relErr(one, ref[2]) < 1e-5 && relErr(two, ref[2]) < 1e-5, "XNNPACK and the gather vs cpu");
  } finally {
    k.parallel = parallel;
    await setBackend("wasm", { threads: 2 });
    await setSimdThreads(tf.backend(), 2);
  }
});
