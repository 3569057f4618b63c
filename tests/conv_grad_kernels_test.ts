// Gradient kernels for wasm checked against the cpu backend's own gradients.
import * as tf from "@tensorflow/tfjs-core";
import assert from "node:assert";
import { setBackend } from "../lib/backend.ts";
import { createRng, normal } from "../lib/rng.ts";

await setBackend("wasm");

function randn(n: number, seed: number): Float32Array {
  const rng = createRng(seed);
  return Float32Array.from({ length: n }, () => normal(rng));
}

interface Case {
  n: number;
  h: number;
  w: number;
  ci: number;
  k: number;
  co: number; // output channels (conv) or multiplier (depthwise)
  stride: number;
  pad: "same" | "valid";
  dilation: number;
  depthwise: boolean;
}

/** Spreads a [K, K, ...] filter to its dilated [(K-1)d+1, ...] form, differentiably. */
function dilateFilter(w: tf.Tensor4D, d: number): tf.Tensor4D {
  if (d === 1) return w;
  const [kh, kw, a, b] = w.shape;
  const r = w.reshape([kh, 1, kw, 1, a, b]).pad([[0, 0], [0, d - 1], [0, 0], [0, d - 1], [0, 0], [0, 0]]);
  return tf.slice(r.reshape([kh * d, kw * d, a, b]), [0, 0, 0, 0], [
    (kh - 1) * d + 1,
    (kw - 1) * d + 1,
    a,
    b,
  ]) as tf.Tensor4D;
}

/** Forward + gradients of sum(conv(x, w) * g) for a fixed random g. */
async function grads(c: Case, backend: string, reference: boolean) {
  await setBackend(backend);
  const xShape: [number, number, number, number] = [c.n, c.h, c.w, c.ci];
  const wShape: [number, number, number, number] = [c.k, c.k, c.ci, c.co];
  const x = tf.tensor4d(randn(xShape.reduce((a, b) => a * b), 1), xShape);
  const w = tf.tensor4d(randn(wShape.reduce((a, b) => a * b), 2), wShape);
  const conv = (x: tf.Tensor4D, w: tf.Tensor4D) => {
    if (c.depthwise) return tf.depthwiseConv2d(x, w, c.stride, c.pad, "NHWC", c.dilation);
    // The cpu reference computes dilation with a spread filter, since its own backprop kernels ignore dilations.
    if (reference && c.dilation > 1) return tf.conv2d(x, dilateFilter(w, c.dilation), c.stride, c.pad);
    return tf.conv2d(x, w, c.stride, c.pad, "NHWC", c.dilation);
  };
  const y = conv(x, w);
  const g = tf.tensor(randn(y.size, 3), y.shape);
  const f = (x: tf.Tensor, w: tf.Tensor) => tf.sum(tf.mul(conv(x as tf.Tensor4D, w as tf.Tensor4D), g));
  const [dx, dw] = tf.grads(f)([x, w]);
  const out = { y: await y.data(), dx: await dx.data(), dw: await dw.data() };
  tf.dispose([x, w, y, g, dx, dw]);
  return out;
}

function maxRelErr(a: Float32Array | Int32Array | Uint8Array, b: Float32Array | Int32Array | Uint8Array): number {
  let scale = 0, err = 0;
  for (let i = 0; i < b.length; i++) scale = Math.max(scale, Math.abs(b[i]));
  for (let i = 0; i < b.length; i++) err = Math.max(err, Math.abs(a[i] - b[i]));
  return err / Math.max(scale, 1e-12);
}

const cases: Case[] = [];
for (const stride of [1, 2]) {
  for (const pad of ["same", "valid"] as const) {
    cases.push({ n: 2, h: 11, w: 9, ci: 3, k: 3, co: 5, stride, pad, dilation: 1, depthwise: false });
    cases.push({ n: 2, h: 10, w: 12, ci: 4, k: 3, co: 1, stride, pad, dilation: 1, depthwise: true });
    cases.push({ n: 1, h: 9, w: 9, ci: 3, k: 3, co: 2, stride, pad, dilation: 1, depthwise: true });
    cases.push({ n: 2, h: 8, w: 7, ci: 2, k: 1, co: 4, stride, pad, dilation: 1, depthwise: false });
  }
  cases.push({
    n: 1,
    h: 16,
    w: 15,
    ci: 3,
    k: 3,
    co: 4,
    stride: 1,
    pad: stride === 1 ? "same" : "valid",
    dilation: 6,
    depthwise: false,
  });
}
cases.push({ n: 2, h: 13, w: 13, ci: 3, k: 5, co: 2, stride: 2, pad: "same", dilation: 1, depthwise: false });

for (const c of cases) {
  const name = `${c.depthwise ? "depthwise" : "conv2d"} k${c.k} s${c.stride} ${c.pad} d${c.dilation} ` +
    `${c.depthwise ? `multiplier ${c.co}` : `${c.ci}->${c.co}`}`;
  Deno.test(`wasm gradients match the cpu backend for ${name}`, async () => {
    const ref = await grads(c, "cpu", true);
    const got = await grads(c, "wasm", false);
    for (const k of ["y", "dx", "dw"] as const) {
      const e = maxRelErr(got[k], ref[k]);
      assert(e <= 1e-4, `${k}: max relative error ${e}`);
    }
  });
}

Deno.test("the composed gradient kernels leak no tensors", async () => {
  await setBackend("wasm");
  const x = tf.randomNormal([1, 8, 8, 3]) as tf.Tensor4D;
  const w = tf.randomNormal([3, 3, 3, 4]) as tf.Tensor4D;
  const dw = tf.randomNormal([3, 3, 3, 2]) as tf.Tensor4D;
  const step = () => {
    const [a, b] = tf.grads((x: tf.Tensor, w: tf.Tensor) =>
      tf.conv2d(x as tf.Tensor4D, w as tf.Tensor4D, 2, "same").sum()
    )([x, w]);
    const [c, d] = tf.grads((x: tf.Tensor, w: tf.Tensor) =>
      tf.depthwiseConv2d(x as tf.Tensor4D, w as tf.Tensor4D, 2, "same").sum()
    )([x, dw]);
    tf.dispose([a, b, c, d]);
  };
  step();
  const before = tf.memory().numTensors;
  const bytesBefore = tf.memory().numBytes;
  for (let i = 0; i < 5; i++) step();
  assert.equal(tf.memory().numTensors, before);
  assert.equal(tf.memory().numBytes, bytesBefore);
  tf.dispose([x, w, dw]);
});
