// lib/simd_kernels.ts: the built module matches its source, and the depthwise filter gradient (through the wasm
// backend's DepthwiseConv2dNativeBackpropFilter) matches a direct sum written out below.
import * as tf from "@tensorflow/tfjs-core";
import assert from "node:assert";
import * as fs from "node:fs";
import { setBackend } from "../lib/backend.ts";
import { compileSimdKernels, SIMD_KERNELS_TS, simdKernelsModuleText } from "../lib/simd_kernels_build.ts";
import { simdKernels } from "../lib/simd_kernels.ts";
import { randn } from "./conv_cases.ts";

Deno.test("lib/simd_kernels_wasm.ts is the build of lib/simd_kernels.wat (run `deno task build-wasm`)", async () => {
  const built = simdKernelsModuleText(await compileSimdKernels());
  assert.strictEqual(fs.readFileSync(SIMD_KERNELS_TS, "utf8"), built);
});

Deno.test("the SIMD kernels load into the wasm backend's heap, not into other backends", async () => {
  await setBackend("wasm");
  assert(simdKernels(tf.backend()) !== null);
  await setBackend("cpu");
  assert.strictEqual(simdKernels(tf.backend()), null);
});

/** dW[ky, kx, c] = sum over n, oy, ox of x[n, oy*s + ky*d - top, ox*s + kx*d - left, c] * dy[n, oy, ox, c]. */
function directFilterGrad(
  x: Float32Array,
  dy: Float32Array,
  [n, h, w, c]: number[],
  [oh, ow]: number[],
  k: number,
  s: number,
  d: number,
  top: number,
  left: number,
): Float64Array {
  const dw = new Float64Array(k * k * c);
  for (let b = 0; b < n; b++) {
    for (let oy = 0; oy < oh; oy++) {
      for (let ox = 0; ox < ow; ox++) {
        for (let ky = 0; ky < k; ky++) {
          for (let kx = 0; kx < k; kx++) {
            const iy = oy * s + ky * d - top, ix = ox * s + kx * d - left;
            if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
            for (let ch = 0; ch < c; ch++) {
              dw[(ky * k + kx) * c + ch] += x[((b * h + iy) * w + ix) * c + ch] *
                dy[((b * oh + oy) * ow + ox) * c + ch];
            }
          }
        }
      }
    }
  }
  return dw;
}

const cases = [
  { k: 3, s: 1, d: 1, pad: "same" as const },
  { k: 3, s: 2, d: 1, pad: "same" as const },
  { k: 3, s: 2, d: 2, pad: "same" as const },
  { k: 5, s: 1, d: 1, pad: "valid" as const },
];
for (const { k, s, d, pad } of cases) {
  Deno.test(`the SIMD depthwise filter gradient matches the direct sum: k${k} s${s} d${d} ${pad}`, async () => {
    await setBackend("wasm");
    const shape = [2, 13, 11, 8];
    const xs = randn(shape.reduce((a, b) => a * b, 1), 1);
    const before = tf.memory().numTensors;
    const x = tf.tensor4d(xs, shape as [number, number, number, number]);
    const info = tf.backend_util.computeConv2DInfo(
      shape as [number, number, number, number],
      [k, k, 8, 1],
      s,
      d,
      pad,
      undefined,
      true,
    );
    const dyShape = [2, info.outHeight, info.outWidth, 8];
    const dys = randn(dyShape.reduce((a, b) => a * b, 1), 2);
    const dy = tf.tensor4d(dys, dyShape as [number, number, number, number]);
    const out = tf.engine().runKernel("DepthwiseConv2dNativeBackpropFilter", { x, dy }, {
      strides: s,
      pad,
      dilations: d,
      filterShape: [k, k, 8, 1],
    }) as tf.Tensor;
    const got = out.dataSync();
    const want = directFilterGrad(
      xs,
      dys,
      shape,
      [info.outHeight, info.outWidth],
      k,
      s,
      d,
      info.padInfo.top,
      info.padInfo.left,
    );
    const scale = Math.max(...want.map(Math.abs));
    const err = Math.max(...Array.from(got, (v, i) => Math.abs(v - want[i])));
    assert(err / scale < 1e-6, `max relative error ${err / scale}`);
    tf.dispose([x, dy, out]);
    assert.strictEqual(tf.memory().numTensors, before);
  });
}

/** dX[n, iy, ix, c] = sum over taps and output pixels reading (iy, ix) of dy * w[ky, kx, c]. */
function directInputGrad(
  dy: Float32Array,
  w: Float32Array,
  [n, h, wd, c]: number[],
  [oh, ow]: number[],
  k: number,
  s: number,
  d: number,
  top: number,
  left: number,
): Float64Array {
  const dx = new Float64Array(n * h * wd * c);
  for (let b = 0; b < n; b++) {
    for (let oy = 0; oy < oh; oy++) {
      for (let ox = 0; ox < ow; ox++) {
        for (let ky = 0; ky < k; ky++) {
          for (let kx = 0; kx < k; kx++) {
            const iy = oy * s + ky * d - top, ix = ox * s + kx * d - left;
            if (iy < 0 || iy >= h || ix < 0 || ix >= wd) continue;
            for (let ch = 0; ch < c; ch++) {
              dx[((b * h + iy) * wd + ix) * c + ch] += dy[((b * oh + oy) * ow + ox) * c + ch] *
                w[(ky * k + kx) * c + ch];
            }
          }
        }
      }
    }
  }
  return dx;
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
    const want = directInputGrad(dys, ws, shape, dyShape.slice(1, 3), k, 2, d, info.padInfo.top, info.padInfo.left);
    const scale = Math.max(...want.map(Math.abs));
    const err = Math.max(...Array.from(got, (v, i) => Math.abs(v - want[i])));
    assert(err / scale < 1e-6, `max relative error ${err / scale}`);
    tf.dispose([dy, w, out]);
    assert.strictEqual(tf.memory().numTensors, before);
  });
}
