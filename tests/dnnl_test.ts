// oneDNN convs (lib/engine/dnnl.ts) against the cpu backend, their routing inside the onnxruntime backend, and
// training without the library. `deno task test` installs Debian's libdnnl2 when it is missing.
import * as tf from "@tensorflow/tfjs-core";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { deviceDescription, deviceWarning, setBackend } from "../lib/engine/mod.ts";
import {
  type ConvPass,
  dnnlAvailable,
  dnnlBatchNormBackward,
  dnnlConv,
  dnnlConvImpl,
  dnnlInnerProductGradient,
  dnnlMatmul,
  dnnlWinograd,
  winogradFits,
} from "../lib/engine/dnnl.ts";
import {
  batchNormBackward,
  batchNormForward,
  batchNormOnDnnl,
  batchNormStats,
} from "../lib/engine/batch_norm_kernel.ts";
import { batchNormTrainKernel } from "../lib/custom_ops.ts";
import {
  DEFAULT_ORT_KERNELS,
  ORT_KERNELS,
  ortStats,
  registerOrtKernels,
  resetOrtStats,
} from "../lib/engine/ort_kernels.ts";
import type { ConvGeometry } from "../lib/engine/ort_graphs.ts";
import { loadSsdConfig } from "../lib/ssd_config.ts";
import { checkSummary, train } from "../lib/train.ts";
import { relL2 } from "./conv_cases.ts";
import { dataOverrides, synthData } from "./tiny_run.ts";

Deno.test("oneDNN is installed here (deno task test installs libdnnl2)", () => {
  assert.ok(dnnlAvailable(), "libdnnl.so.2 did not load: sudo apt-get install -y libdnnl2");
});

/** The conv's geometry as the onnxruntime kernels hand it to oneDNN (tfjs's padding for `pad`). */
function geometryOf(
  x: tf.Tensor4D,
  w: tf.Tensor4D,
  y: tf.Tensor,
  s: number,
  dil: number,
  pad: "same" | "valid",
  depthwise: boolean,
): ConvGeometry {
  const p = tf.backend_util.computeConv2DInfo(x.shape, w.shape, s, dil, pad, undefined, depthwise).padInfo;
  return {
    x: x.shape,
    w: w.shape,
    y: y.shape,
    strides: [s, s],
    dilations: [dil, dil],
    pads: [p.top, p.left, p.bottom, p.right],
    depthwise,
  };
}

// n, side, ci, co, kernel, stride, dilation, padding: strided, dilated (VGG16's fc6), valid, a 1x1 at stride 2,
// three input channels (a stem), odd sides.
const CASES = [
  [2, 12, 8, 6, 3, 1, 1, "same"],
  [2, 13, 8, 6, 3, 2, 1, "same"],
  [1, 19, 16, 8, 3, 1, 6, "same"],
  [2, 10, 5, 7, 3, 1, 1, "valid"],
  [2, 9, 6, 4, 1, 2, 1, "valid"],
  [2, 15, 3, 16, 3, 2, 1, "same"],
] as const;

Deno.test("oneDNN convs match the cpu backend: forward (with and without bias), dX, dW", async () => {
  await setBackend("cpu");
  for (const [n, h, ci, co, k, s, dil, pad] of CASES) {
    const x = tf.randomNormal([n, h, h, ci], 0, 1, "float32", 1) as tf.Tensor4D;
    const w = tf.randomNormal([k, k, ci, co], 0, 1, "float32", 2) as tf.Tensor4D;
    const bias = tf.randomNormal([co], 0, 1, "float32", 4) as tf.Tensor1D;
    const conv = (a: tf.Tensor, b: tf.Tensor) => tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, s, pad, "NHWC", dil);
    const y = conv(x, w);
    const dy = tf.randomNormal(y.shape, 0, 1, "float32", 3);
    const [dx, dw] = tf.grads(conv)([x, w], dy);
    const yb = tf.add(y, bias);
    const g = geometryOf(x, w, y, s, dil, pad, false);
    const [X, W, B, DY] = await Promise.all([x.data(), w.data(), bias.data(), dy.data()]) as Float32Array[];
    const out = (t: tf.Tensor) => new Float32Array(t.size).fill(NaN); // every element must be written
    const got: Record<string, Float32Array> = { y: out(y), yb: out(y), dx: out(x), dw: out(w) };
    const run = (pass: ConvPass, bufs: Record<string, Float32Array>) => dnnlConv(pass, g, bufs);
    run("fwd", { x: X, w: W, y: got.y });
    run("fwd", { x: X, w: W, b: B, y: got.yb });
    run("dx", { dy: DY, w: W, dx: got.dx });
    run("dw", { x: X, dy: DY, dw: got.dw });
    const want: Record<string, tf.Tensor> = { y, yb, dx, dw };
    for (const key of Object.keys(want)) {
      const e = relL2(await want[key].data(), got[key]);
      assert.ok(e < 1e-6, `${n}x${h}x${h} ${ci}->${co} k${k} s${s} d${dil} ${pad} ${key}: ${e}`);
    }
    tf.dispose([x, w, bias, y, dy, dx, dw, yb]);
  }
  // Views into a shared buffer at an offset, as the wasm heap hands them over.
  const sab = new SharedArrayBuffer(400);
  const xs = new Float32Array(sab, 16, 4), ys = new Float32Array(sab, 64, 2);
  xs.set([1, 2, 3, 4]);
  dnnlConv("fwd", {
    x: [1, 1, 2, 2],
    w: [1, 1, 2, 1],
    y: [1, 1, 2, 1],
    strides: [1, 1],
    dilations: [1, 1],
    pads: [0, 0, 0, 0],
    depthwise: false,
  }, { x: xs, w: Float32Array.of(10, 100), y: ys });
  assert.deepEqual([...ys], [210, 430]);
  await setBackend("wasm");
});

// Winograd: dense 3x3 convs at stride 1 with 64+ channels over 19x19+ maps (VGG16's, here below the least work
// per image that the default asks for), channel counts that are and are not multiples of 16.
const WINOGRAD = [[1, 19, 64, 64], [1, 20, 72, 80]] as const;

Deno.test("oneDNN's Winograd convs (the 3x3s that fit) match the cpu backend: forward with bias, dX, dW; off, they run direct", async () => {
  await setBackend("cpu");
  for (const [n, h, ci, co] of WINOGRAD) {
    const x = tf.randomNormal([n, h, h, ci], 0, 1, "float32", 1) as tf.Tensor4D;
    const w = tf.randomNormal([3, 3, ci, co], 0, 0.1, "float32", 2) as tf.Tensor4D;
    const bias = tf.randomNormal([co], 0, 1, "float32", 4) as tf.Tensor1D;
    const conv = (a: tf.Tensor, b: tf.Tensor) => tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, 1, "same");
    const y = conv(x, w);
    const dy = tf.randomNormal(y.shape, 0, 1, "float32", 3);
    const [dx, dw] = tf.grads(conv)([x, w], dy);
    const yb = tf.add(y, bias);
    const g = geometryOf(x, w, y, 1, 1, "same", false);
    assert.ok(winogradFits(g, 0) && !winogradFits(g));
    const [X, W, B, DY] = await Promise.all([x.data(), w.data(), bias.data(), dy.data()]) as Float32Array[];
    const want: Record<string, Float32Array> = {
      yb: await yb.data() as Float32Array,
      dx: await dx.data() as Float32Array,
      dw: await dw.data() as Float32Array,
    };
    for (const on of [true, false]) {
      dnnlWinograd(on, 0);
      const got = {
        yb: new Float32Array(y.size).fill(NaN),
        dx: new Float32Array(x.size).fill(NaN),
        dw: new Float32Array(w.size).fill(NaN),
      };
      dnnlConv("fwd", g, { x: X, w: W, b: B, y: got.yb });
      dnnlConv("dx", g, { dy: DY, w: W, dx: got.dx });
      dnnlConv("dw", g, { x: X, dy: DY, dw: got.dw });
      const impls = (["fwd", "dx", "dw"] as const).map((p) => dnnlConvImpl(p, g, p === "fwd"));
      // Winograd where this CPU has its kernels (oneDNN 2.6: AVX-512); direct without it, and always when off.
      const wino = impls.map((i) => i.includes("wino"));
      if (!on) assert.deepEqual(wino, [false, false, false], `off: ${impls}`);
      // Winograd rounds ~2-3.5x more than the direct kernels (dnnl.ts; 8e-7 against 4e-7 here): bound 3e-6, 1e-6.
      for (const [i, key] of (["yb", "dx", "dw"] as const).entries()) {
        const e = relL2(want[key], got[key]);
        assert.ok(e < (wino[i] ? 3e-6 : 1e-6), `${n}x${h}x${h} ${ci}->${co} ${key} (${impls[i]}): ${e}`);
      }
    }
    dnnlWinograd(true);
    tf.dispose([x, w, bias, y, dy, dx, dw, yb]);
  }
  // Strided, dilated, 1x1, depthwise, few channels, a small map or little work: direct.
  const same = { strides: [1, 1], dilations: [1, 1], pads: [1, 1, 1, 1], depthwise: false };
  const base = { x: [4, 38, 38, 256], w: [3, 3, 256, 256], y: [4, 38, 38, 256], ...same } as ConvGeometry;
  assert.ok(winogradFits(base));
  for (
    const g of [
      { ...base, strides: [2, 2] },
      { ...base, dilations: [6, 6] },
      { ...base, w: [1, 1, 256, 256] },
      { ...base, w: [3, 3, 256, 1], depthwise: true },
      { ...base, x: [4, 38, 38, 32] },
      { ...base, y: [4, 38, 38, 16] },
      { ...base, x: [4, 10, 10, 256], y: [4, 10, 10, 256] },
      // The demo's 64 -> 64 at 20x20: 15M multiply-adds per image.
      { ...base, x: [16, 20, 20, 64], w: [3, 3, 64, 64], y: [16, 20, 20, 64] },
    ] as ConvGeometry[]
  ) assert.ok(!winogradFits(g), JSON.stringify(g));
  await setBackend("wasm");
});

// Depthwise: side, channels, multiplier, stride, dilation, padding (MobileNetV2's 3x3s at stride 1 and 2, a
// multiplier of 2, a dilated one, valid padding and a channel count that is not a multiple of 4 or 16).
const DEPTHWISE = [
  [12, 16, 1, 1, 1, "same"],
  [13, 24, 1, 2, 1, "same"],
  [11, 6, 2, 1, 1, "same"],
  [14, 8, 1, 1, 2, "same"],
  [10, 5, 1, 2, 1, "valid"],
] as const;

Deno.test("oneDNN depthwise convs match the cpu backend: forward, dX, dW (multiplier, stride, dilation)", async () => {
  await setBackend("cpu");
  for (const [h, c, m, s, dil, pad] of DEPTHWISE) {
    const x = tf.randomNormal([2, h, h, c], 0, 1, "float32", 1) as tf.Tensor4D;
    const w = tf.randomNormal([3, 3, c, m], 0, 1, "float32", 2) as tf.Tensor4D;
    const conv = (a: tf.Tensor, b: tf.Tensor) =>
      tf.depthwiseConv2d(a as tf.Tensor4D, b as tf.Tensor4D, s, pad, "NHWC", dil);
    const y = conv(x, w);
    const dy = tf.randomNormal(y.shape, 0, 1, "float32", 3);
    // tfjs has no depthwise gradient with dilation (so training never asks): the forward only there.
    const [dx, dw] = dil === 1 ? tf.grads(conv)([x, w], dy) : [x.clone(), w.clone()];
    const g = geometryOf(x, w, y, s, dil, pad, true);
    const [X, W, DY] = await Promise.all([x.data(), w.data(), dy.data()]) as Float32Array[];
    const out = (t: tf.Tensor) => new Float32Array(t.size).fill(NaN);
    const got: Record<string, Float32Array> = { y: out(y), dx: out(x), dw: out(w) };
    dnnlConv("fwd", g, { x: X, w: W, y: got.y });
    dnnlConv("dx", g, { dy: DY, w: W, dx: got.dx });
    dnnlConv("dw", g, { x: X, dy: DY, dw: got.dw });
    // The implementation is named (the onnxruntime kernels keep a depthwise pass off oneDNN when it is "ref...").
    for (const pass of ["fwd", "dx", "dw"] as const) assert.match(dnnlConvImpl(pass, g), /^[a-z_]+:/);
    const want: Record<string, tf.Tensor> = dil === 1 ? { y, dx, dw } : { y };
    for (const key of Object.keys(want)) {
      const e = relL2(await want[key].data(), got[key]);
      assert.ok(e < 1e-6, `${h}x${h}x${c} m${m} s${s} d${dil} ${pad} ${key}: ${e}`);
    }
    tf.dispose([x, w, y, dy, dx, dw]);
  }
  await setBackend("wasm");
});

Deno.test("oneDNN's batch-norm gradient matches batchNormBackward given the same statistics (ReLU6, ReLU, none)", () => {
  // [2, 5, 7, 12] and [2, 3, 3, 6] as images, [10, 3] as rows; gamma and beta per channel.
  for (const [shape, act] of [[[2, 5, 7, 12], "relu6"], [[2, 3, 3, 6], "relu"], [[10, 3], "linear"]] as const) {
    const n = shape.reduce((a: number, b: number) => a * b, 1), c = shape[shape.length - 1];
    const x = Float32Array.from({ length: n }, (_, i) => Math.sin(i * 1.7) * 4 + (i % c) * 0.3);
    const dy = Float32Array.from({ length: n }, (_, i) => Math.cos(i * 0.37));
    const gamma = Float32Array.from({ length: c }, (_, j) => 1.5 + 0.1 * j);
    const beta = Float32Array.from({ length: c }, (_, j) => 0.5 - 0.2 * j);
    const s = batchNormStats(x, gamma, 1e-3);
    const y = new Float32Array(n);
    batchNormForward(x, s.mean, s.scale, beta, act, y);
    const want = { dx: new Float32Array(n), dgamma: new Float32Array(c), dbeta: new Float32Array(c) };
    batchNormBackward(dy, x, act, s, gamma, beta, want);
    const got = { dx: new Float32Array(n).fill(NaN), dgamma: new Float32Array(c), dbeta: new Float32Array(c) };
    const stats = { mean: s.mean, variance: s.variance };
    dnnlBatchNormBackward([...shape], 1e-3, act, { x, y, dy, ...stats, gamma, beta, ...got });
    for (const key of ["dx", "dgamma", "dbeta"] as const) {
      const e = relL2(want[key], got[key]);
      assert.ok(e < 1e-5, `${shape} ${act} ${key}: ${e}`);
    }
  }
});

Deno.test("the wasm batch-norm kernel's gradient on oneDNN (batchNormOnDnnl, native: false) matches the SIMD one; the onnxruntime backend turns it on", async () => {
  await setBackend("wasm");
  const x = tf.randomNormal([2, 6, 6, 20], 1, 2, "float32", 5);
  const gamma = tf.randomNormal([20], 1, 0.2, "float32", 6), beta = tf.randomNormal([20], 0, 1, "float32", 7);
  const dy = tf.randomNormal(x.shape, 0, 1, "float32", 8);
  const f = (a: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => batchNormTrainKernel(a, g, b, 1e-3, "relu6")[0];
  const grads = async (on: boolean) => {
    batchNormOnDnnl(on, { native: false });
    const gs = tf.grads(f)([x, gamma, beta], dy);
    const out = await Promise.all(gs.map((g) => g.data())) as Float32Array[];
    tf.dispose(gs);
    return out;
  };
  const before = tf.memory().numTensors;
  const simd = await grads(false), dnnl = await grads(true);
  batchNormOnDnnl(false);
  assert.equal(tf.memory().numTensors, before);
  for (const i of [0, 1, 2]) {
    assert.ok(relL2(simd[i], dnnl[i]) < 1e-5, `input ${i}: ${relL2(simd[i], dnnl[i])}`);
  }
  assert.notDeepEqual([...simd[1]], [...dnnl[1]], "a different path rounds differently");
  await setBackend("onnxruntime");
  registerOrtKernels({ nativeBatchNorm: false });
  const gs = tf.grads(f)([x, gamma, beta], dy);
  const ortDgamma = await gs[1].data();
  tf.dispose(gs);
  registerOrtKernels({ nativeBatchNorm: true });
  assert.deepEqual([...ortDgamma], [...dnnl[1]], "the onnxruntime backend's gradient is oneDNN's");
  await setBackend("wasm");
  const back = tf.grads(f)([x, gamma, beta], dy);
  assert.deepEqual([...await back[1].data()], [...simd[1]], "and the wasm backend's the SIMD kernels' again");
  tf.dispose(back);
  tf.dispose([x, gamma, beta, dy]);
});

Deno.test("oneDNN's matmul (the bench's peak): row-major [M, K] x [K, N]", () => {
  const c = new Float32Array(8);
  dnnlMatmul(Float32Array.of(1, 2, 3, 4, 5, 6), Float32Array.of(1, 0, 2, 1, 0, 3, 0, 1, 1, 0, 1, 1), c, 2, 3, 4);
  // [[1,2,3],[4,5,6]] x [[1,0,2,1],[0,3,0,1],[1,0,1,1]]
  assert.deepEqual([...c], [4, 6, 5, 6, 10, 15, 14, 15]);
});

Deno.test("oneDNN's inner-product gradients: dw = xT dy and dx = dy wT, with the filter stored [K, N]", () => {
  // x [3, 2], dy [3, 2]: dw[k][n] = sum over rows of x[r][k] dy[r][n]
  const dw = new Float32Array(4);
  dnnlInnerProductGradient("dw", Float32Array.of(1, 2, 3, 4, 5, 6), Float32Array.of(1, 0, 0, 1, 2, 1), dw, 3, 2, 2);
  assert.deepEqual([...dw], [1 + 10, 3 + 5, 2 + 12, 4 + 6]);
  // dy [2, 3] (N = 3), w [K = 2, N = 3]: dx[r][k] = sum over n of dy[r][n] w[k][n]
  const dx = new Float32Array(4);
  dnnlInnerProductGradient("dx", Float32Array.of(1, 0, 2, 0, 1, 1), Float32Array.of(1, 2, 3, 4, 5, 6), dx, 2, 2, 3);
  assert.deepEqual([...dx], [1 + 6, 4 + 12, 2 + 3, 5 + 6]);
  // MobileNetV2's largest 1x1 (4x150x150 rows, 16 -> 96) against the matmuls.
  const m = 90000, k = 16, n = 96;
  const x = Float32Array.from({ length: m * k }, (_, i) => Math.sin(i));
  const dy = Float32Array.from({ length: m * n }, (_, i) => Math.cos(i));
  const w = Float32Array.from({ length: k * n }, (_, i) => Math.sin(3 * i));
  const worst = (a: Float32Array, b: Float32Array) =>
    a.reduce((acc, v, i) => Math.max(acc, Math.abs(v - b[i]) / (Math.abs(b[i]) + 1)), 0);
  const [ipW, mmW] = [new Float32Array(k * n), new Float32Array(k * n)];
  dnnlInnerProductGradient("dw", x, dy, ipW, m, k, n);
  dnnlMatmul(x, dy, mmW, k, m, n, { transA: true });
  assert.ok(worst(ipW, mmW) < 1e-4, `dw: inner product vs matmul ${worst(ipW, mmW)}`);
  const [ipX, mmX] = [new Float32Array(m * k), new Float32Array(m * k)];
  dnnlInnerProductGradient("dx", dy, w, ipX, m, k, n);
  dnnlMatmul(dy, w, mmX, m, n, k, { transB: true });
  assert.ok(worst(ipX, mmX) < 1e-5, `dx: inner product vs matmul ${worst(ipX, mmX)}`);
});

Deno.test("the onnxruntime backend runs its convs on oneDNN (1x1s as matmuls); depthwise too; biased 1x1s stay; onednn: false turns it off", async () => {
  await setBackend("onnxruntime");
  const x = tf.randomNormal([2, 16, 16, 32]) as tf.Tensor4D;
  const step = (w: tf.Tensor4D, stride: number) =>
    tf.dispose(
      tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, stride, "same").sum())([
        x,
        w,
      ]),
    );
  const w3 = tf.randomNormal([3, 3, 32, 8]) as tf.Tensor4D, w1 = tf.randomNormal([1, 1, 32, 64]) as tf.Tensor4D;
  registerOrtKernels({ onednn: true, pointwiseMaxK: 0 });
  assert.match(deviceDescription("onnxruntime"), /^onnxruntime on .*, convs on oneDNN$/);
  assert.equal(deviceWarning("onnxruntime"), null);
  resetOrtStats();
  step(w3, 1);
  step(w1, 2); // a 1x1 at stride 2 skips pixels: a conv, not a matmul over rows
  assert.deepEqual(Object.keys(ortStats().byKind).sort(), ["OneDnnConv", "OneDnnConvDw", "OneDnnConvDx"]);
  assert.equal(ortStats().byKind.OneDnnConv.runs, 2);
  resetOrtStats();
  step(w1, 1); // a matmul over the NHWC rows
  assert.deepEqual(Object.keys(ortStats().byKind).sort(), ["OneDnnConv", "OneDnnConvDw", "OneDnnConvDx"]);
  // A few-channel 1x1 forward too, which without oneDNN stays on wasm's SIMD kernel (pointwiseMaxK).
  registerOrtKernels({ pointwiseMaxK: 32 });
  resetOrtStats();
  tf.dispose(tf.conv2d(tf.ones([1, 4, 4, 8]) as tf.Tensor4D, tf.ones([1, 1, 8, 4]) as tf.Tensor4D, 1, "valid"));
  assert.deepEqual(Object.keys(ortStats().byKind), ["OneDnnConv"]);
  registerOrtKernels({ pointwiseMaxK: 0 });
  resetOrtStats();
  tf.dispose(tf.fused.conv2d({ x, filter: w1, strides: 1, pad: "valid", bias: tf.ones([64]) }));
  assert.deepEqual(Object.keys(ortStats().byKind), ["Conv"], "a biased 1x1 stays on onnxruntime");
  // Depthwise convs go to oneDNN whatever `kernels` lists; without it, to onnxruntime only where listed.
  const dwStep = () =>
    tf.dispose(
      tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.depthwiseConv2d(a as tf.Tensor4D, b as tf.Tensor4D, 1, "same").sum())(
        [x, tf.ones([3, 3, 32, 1])],
      ),
    );
  resetOrtStats();
  dwStep();
  assert.deepEqual(Object.keys(ortStats().byKind).sort(), ["OneDnnConv", "OneDnnConvDw", "OneDnnConvDx"]);
  registerOrtKernels({ kernels: ORT_KERNELS, onednnDepthwise: false });
  resetOrtStats();
  tf.dispose(tf.depthwiseConv2d(x, tf.ones([3, 3, 32, 1]) as tf.Tensor4D, 1, "same"));
  assert.deepEqual(Object.keys(ortStats().byKind), ["DepthwiseConv"]);
  registerOrtKernels({ kernels: DEFAULT_ORT_KERNELS, onednn: false, onednnDepthwise: true });
  resetOrtStats();
  step(w3, 1);
  dwStep();
  assert.deepEqual(Object.keys(ortStats().byKind).sort(), ["Conv", "ConvDw", "ConvDx"]);
  registerOrtKernels({ onednn: true });
  tf.dispose([x, w3, w1]);
  await setBackend("wasm");
});

Deno.test("without the library the onnxruntime backend's convs stay on onnxruntime, with the same results", () => {
  const code = [
    'import * as tf from "@tensorflow/tfjs-core";',
    'import { deviceWarning, setBackend } from "./lib/engine/mod.ts";',
    'import { ortStats } from "./lib/engine/ort_kernels.ts";',
    'await setBackend("onnxruntime");',
    "const y = tf.conv2d(tf.ones([1, 4, 4, 2]), tf.ones([3, 3, 2, 1]), 1, 'same');",
    "const warning = deviceWarning('onnxruntime');",
    "console.log(JSON.stringify({ y: Array.from(await y.data()), kinds: Object.keys(ortStats().byKind), warning }));",
  ].join("\n");
  const r = spawnSync(Deno.execPath(), ["eval", code], {
    encoding: "utf8",
    env: { ...Deno.env.toObject(), SSD_ONEDNN_LIB: "/nonexistent/libdnnl.so.2", NO_COLOR: "1" },
  });
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split("\n").at(-1)!);
  assert.deepEqual(out.kinds, ["Conv"]);
  assert.deepEqual(out.y.slice(0, 4), [8, 12, 12, 8]);
  // The train task prints this at start.
  assert.match(out.warning, /oneDNN did not load .*apt-get install -y libdnnl2/);
});

Deno.test("training on onnxruntime with oneDNN convs in lockstep with wasm (demo config, 3 steps)", async () => {
  const data = await synthData(16, 8, 3);
  const cfg = loadSsdConfig("configs/demo.yaml", {
    ...dataOverrides(data),
    backend: "onnxruntime",
    "train.batch_size": "4",
    "train.replicas": "1",
  });
  resetOrtStats();
  const r = await train(cfg, { outDir: Deno.makeTempDirSync(), quiet: true, maxSteps: 3, checkBackend: "wasm" });
  assert.ok((ortStats().byKind.OneDnnConvDw?.runs ?? 0) > 0, JSON.stringify(Object.keys(ortStats().byKind)));
  const s = checkSummary(r.losses)!;
  assert.ok(s.loss <= 1e-5 && s.grads <= 1e-4 && s.grads > 0, JSON.stringify(s));
  await setBackend("wasm");
});
