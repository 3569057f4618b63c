// lib/engine/simd_kernels.ts: the built module matches its source, and the depthwise filter gradient (through the wasm
// backend's DepthwiseConv2dNativeBackpropFilter) matches a direct sum written out below.
import * as tf from "@tensorflow/tfjs-core";
import assert from "node:assert";
import * as fs from "node:fs";
import { setBackend } from "../lib/engine/backend.ts";
import { compileSimdKernels, SIMD_KERNELS_TS, simdKernelsModuleText } from "../lib/engine/simd_kernels_build.ts";
import { simdKernels } from "../lib/engine/simd_kernels.ts";
import { randn } from "./conv_cases.ts";

Deno.test("lib/engine/simd_kernels_wasm.ts is the build of lib/engine/simd_kernels.wat (run `deno task build-wasm`)", async () => {
  const built = simdKernelsModuleText(await compileSimdKernels());
  assert.strictEqual(fs.readFileSync(SIMD_KERNELS_TS, "utf8"), built);
});

Deno.test("the SIMD kernels load into the wasm backend's heap, not into other backends", async () => {
  await setBackend("wasm");
  assert(simdKernels(tf.backend()) !== null);
  await setBackend("cpu");
  assert.strictEqual(simdKernels(tf.backend()), null);
});

/**
 * Calls `f(xAt, dyAt, wAt)` for every (input pixel, output pixel, tap) that a depthwise conv of `k`x`k` taps at
 * stride `s` and dilation `d` connects, with the flat offsets of channel 0 in x [n, h, w, c], dy [n, oh, ow, c]
 * and w [k, k, c]: the direct sums the tests compare the SIMD kernels with.
 */
function forEachTap(
  [n, h, wd, c]: number[],
  [oh, ow]: number[],
  k: number,
  s: number,
  d: number,
  [top, left]: number[],
  f: (xAt: number, dyAt: number, wAt: number) => void,
): void {
  for (let b = 0; b < n; b++) {
    for (let oy = 0; oy < oh; oy++) {
      for (let ox = 0; ox < ow; ox++) {
        for (let ky = 0; ky < k; ky++) {
          for (let kx = 0; kx < k; kx++) {
            const iy = oy * s + ky * d - top, ix = ox * s + kx * d - left;
            if (iy < 0 || iy >= h || ix < 0 || ix >= wd) continue;
            f(((b * h + iy) * wd + ix) * c, ((b * oh + oy) * ow + ox) * c, (ky * k + kx) * c);
          }
        }
      }
    }
  }
}

const cases = [
  { k: 3, s: 1, d: 1, pad: "same" as const },
  { k: 3, s: 2, d: 1, pad: "same" as const },
  { k: 3, s: 2, d: 2, pad: "same" as const },
  { k: 5, s: 1, d: 1, pad: "valid" as const },
];
// 8 channels take the 4-channel loop only; 24 a 16-channel block, then the 4-channel loop.
for (const [{ k, s, d, pad }, ch] of cases.flatMap((c) => [[c, 8], [c, 24]] as const)) {
  Deno.test(`the SIMD depthwise filter gradient matches the direct sum: k${k} s${s} d${d} ${pad}, ${ch} channels`, async () => {
    await setBackend("wasm");
    const shape = [2, 13, 11, ch];
    const xs = randn(shape.reduce((a, b) => a * b, 1), 1);
    const before = tf.memory().numTensors;
    const x = tf.tensor4d(xs, shape as [number, number, number, number]);
    const info = tf.backend_util.computeConv2DInfo(
      shape as [number, number, number, number],
      [k, k, ch, 1],
      s,
      d,
      pad,
      undefined,
      true,
    );
    const dyShape = [2, info.outHeight, info.outWidth, ch];
    const dys = randn(dyShape.reduce((a, b) => a * b, 1), 2);
    const dy = tf.tensor4d(dys, dyShape as [number, number, number, number]);
    const out = tf.engine().runKernel("DepthwiseConv2dNativeBackpropFilter", { x, dy }, {
      strides: s,
      pad,
      dilations: d,
      filterShape: [k, k, ch, 1],
    }) as tf.Tensor;
    const got = out.dataSync();
    // dW[ky, kx, c] = sum of x[tap] * dy over batch and output pixels.
    const want = new Float64Array(k * k * ch);
    const pads = [info.padInfo.top, info.padInfo.left];
    forEachTap(shape, [info.outHeight, info.outWidth], k, s, d, pads, (xi, dyi, wi) => {
      for (let j = 0; j < ch; j++) want[wi + j] += xs[xi + j] * dys[dyi + j];
    });
    const scale = Math.max(...want.map(Math.abs));
    const err = Math.max(...Array.from(got, (v, i) => Math.abs(v - want[i])));
    assert(err / scale < 1e-6, `max relative error ${err / scale}`);
    tf.dispose([x, dy, out]);
    assert.strictEqual(tf.memory().numTensors, before);
  });
}

for (const { k, d, pad } of [{ k: 3, d: 1, pad: "same" }, { k: 3, d: 2, pad: "same" }, { k: 5, d: 1, pad: "valid" }]) {
  Deno.test(`the SIMD strided depthwise input gradient matches the direct sum: k${k} s2 d${d} ${pad}`, async () => {
    await setBackend("wasm");
    const shape = [2, 13, 12, 8] as [number, number, number, number];
    const info = tf.backend_util.computeConv2DInfo(shape, [k, k, 8, 1], 2, d, pad as "same", undefined, true);
    const dyShape = [2, info.outHeight, info.outWidth, 8] as [number, number, number, number];
    const dys = randn(dyShape.reduce((a, b) => a * b, 1), 3), ws = randn(k * k * 8, 4);
    const before = tf.memory().numTensors;
    const dy = tf.tensor4d(dys, dyShape), w = tf.tensor4d(ws, [k, k, 8, 1]);
    const out = tf.engine().runKernel("DepthwiseConv2dNativeBackpropInput", { dy, filter: w }, {
      strides: 2,
      pad,
      dilations: d,
      inputShape: shape,
    }) as tf.Tensor;
    const got = out.dataSync();
    // dX[tap] = sum of dy * w[tap] over the output pixels and taps that read it.
    const want = new Float64Array(shape.reduce((a, b) => a * b, 1));
    forEachTap(shape, dyShape.slice(1, 3), k, 2, d, [info.padInfo.top, info.padInfo.left], (xi, dyi, wi) => {
      for (let ch = 0; ch < 8; ch++) want[xi + ch] += dys[dyi + ch] * ws[wi + ch];
    });
    const scale = Math.max(...want.map(Math.abs));
    const err = Math.max(...Array.from(got, (v, i) => Math.abs(v - want[i])));
    assert(err / scale < 1e-6, `max relative error ${err / scale}`);
    tf.dispose([dy, w, out]);
    assert.strictEqual(tf.memory().numTensors, before);
  });
}
