// Shared by the gradient-kernel tests (wasm and onnxruntime): the shape matrix, and forward + gradients of a conv
// on a backend, with the cpu backend as the reference.
import * as tf from "@tensorflow/tfjs-core";
import { setBackend } from "../lib/engine/backend.ts";
import { createRng, normal } from "../lib/rng.ts";

/** Seeded standard normal values. */
export function randn(n: number, seed: number): Float32Array {
  const rng = createRng(seed);
  return Float32Array.from({ length: n }, () => normal(rng));
}

/** One conv layer to check. */
export interface ConvCase {
  n: number;
  h: number;
  w: number;
  ci: number;
  k: number;
  /** Output channels (conv) or channel multiplier (depthwise). */
  co: number;
  stride: number;
  pad: "same" | "valid";
  dilation: number;
  depthwise: boolean;
}

/** The matrix: stride 1 and 2, same and valid padding, dilation 1 and 6, depthwise multiplier 1 and 2. */
export function convCases(): ConvCase[] {
  const cases: ConvCase[] = [];
  for (const stride of [1, 2]) {
    for (const pad of ["same", "valid"] as const) {
      cases.push({ n: 2, h: 11, w: 9, ci: 3, k: 3, co: 5, stride, pad, dilation: 1, depthwise: false });
      cases.push({ n: 2, h: 10, w: 12, ci: 4, k: 3, co: 1, stride, pad, dilation: 1, depthwise: true });
      cases.push({ n: 1, h: 9, w: 9, ci: 3, k: 3, co: 2, stride, pad, dilation: 1, depthwise: true });
      cases.push({ n: 2, h: 8, w: 7, ci: 2, k: 1, co: 4, stride, pad, dilation: 1, depthwise: false });
    }
    const pad = stride === 1 ? "same" : "valid";
    cases.push({ n: 1, h: 16, w: 15, ci: 3, k: 3, co: 4, stride: 1, pad, dilation: 6, depthwise: false });
  }
  cases.push({ n: 2, h: 13, w: 13, ci: 3, k: 5, co: 2, stride: 2, pad: "same", dilation: 1, depthwise: false });
  return cases;
}

/** A readable name for a case. */
export function caseName(c: ConvCase): string {
  return `${c.depthwise ? "depthwise" : "conv2d"} k${c.k} s${c.stride} ${c.pad} d${c.dilation} ` +
    `${c.depthwise ? `multiplier ${c.co}` : `${c.ci}->${c.co}`} ${c.h}x${c.w}`;
}

/** Spreads a [K, K, ...] filter to its dilated [(K-1)d+1, ...] form, differentiably. */
function dilateFilter(w: tf.Tensor4D, d: number): tf.Tensor4D {
  if (d === 1) return w;
  const [kh, kw, a, b] = w.shape;
  const r = tf.pad(tf.reshape(w, [kh, 1, kw, 1, a, b]), [[0, 0], [0, d - 1], [0, 0], [0, d - 1], [0, 0], [0, 0]]);
  const spread = tf.reshape(r, [kh * d, kw * d, a, b]);
  return tf.slice(spread, [0, 0, 0, 0], [(kh - 1) * d + 1, (kw - 1) * d + 1, a, b]) as tf.Tensor4D;
}

/**
 * Forward + gradients of sum(conv(x, w) * g) for a fixed random g on `backend`. As the reference, the cpu
 * backend computes dilation with a spread filter, since its own backprop kernels ignore dilations.
 */
export async function convGrads(c: ConvCase, backend: string, reference: boolean) {
  await setBackend(backend);
  const xShape: [number, number, number, number] = [c.n, c.h, c.w, c.ci];
  const wShape: [number, number, number, number] = [c.k, c.k, c.ci, c.co];
  const x = tf.tensor4d(randn(xShape.reduce((a, b) => a * b), 1), xShape);
  const w = tf.tensor4d(randn(wShape.reduce((a, b) => a * b), 2), wShape);
  const conv = (x: tf.Tensor4D, w: tf.Tensor4D) => {
    if (c.depthwise) return tf.depthwiseConv2d(x, w, c.stride, c.pad, "NHWC", c.dilation);
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

type Data = Float32Array | Int32Array | Uint8Array;

/** Largest absolute difference over the reference's largest magnitude. */
export function maxRelErr(a: Data, b: Data): number {
  if (a.length !== b.length) throw new Error(`lengths differ: ${a.length} vs ${b.length}`);
  let scale = 0, err = 0;
  for (let i = 0; i < b.length; i++) scale = Math.max(scale, Math.abs(b[i]));
  for (let i = 0; i < b.length; i++) err = Math.max(err, Math.abs(a[i] - b[i]));
  return err / Math.max(scale, 1e-12);
}

/** |want - got| / |want| in the L2 norm over all elements (NaN when both are all zeros). */
export function relL2(want: ArrayLike<number>, got: ArrayLike<number>): number {
  let n = 0, d = 0;
  for (let i = 0; i < want.length; i++) n += (want[i] - got[i]) ** 2, d += want[i] ** 2;
  return Math.sqrt(n / d);
}
