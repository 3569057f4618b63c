// The onnxruntime kernels checked against the cpu backend's outputs and gradients.
import * as tf from "@tensorflow/tfjs-core";
import assert from "node:assert";
import { setBackend } from "../lib/engine/backend.ts";
import {
  DEFAULT_ORT_KERNELS,
  ORT_KERNELS,
  registerOrtKernels,
  resetOrtStats,
  unregisterOrtKernels,
} from "../lib/engine/ort_kernels.ts";
import { ortKernelOptions, ortStats } from "../lib/engine/ort_kernels.ts";
import { kernelThreads, loadSsdConfig } from "../lib/ssd_config.ts";
import { type FilterGradVariant, shiftedLayout } from "../lib/engine/ort_graphs.ts";
import { caseName, type ConvCase, convCases, convGrads, maxRelErr, randn } from "./conv_cases.ts";
import { convGradStep } from "./model_checks.ts";

// setBackend("onnxruntime") registers the kernels with the options set last. These tests take every
// kernel onnxruntime can run, the depthwise ones too (training leaves those on wasm by default), and
// onnxruntime's own convs, not oneDNN's (tests/dnnl_test.ts has those).
await setBackend("onnxruntime");
registerOrtKernels({
  onednn: false,
  threads: 2,
  minMacs: 0,
  copy: false,
  autoSelect: false,
  kernels: ORT_KERNELS,
  pointwiseMaxK: 0,
});

const cases: ConvCase[] = [
  ...convCases(),
  { n: 2, h: 12, w: 12, ci: 3, k: 3, co: 4, stride: 2, pad: "valid", dilation: 1, depthwise: false },
];

const VARIANTS: FilterGradVariant[] = ["conv", "im2col", "taps", "shifted"];

for (const c of cases) {
  const name = caseName(c);
  Deno.test(`onnxruntime outputs and gradients match the cpu backend for ${name}`, async () => {
    const ref = await convGrads(c, "cpu", true);
    const errs: string[] = [];
    for (const variant of c.depthwise ? ["conv" as const, "taps" as const] : VARIANTS) {
      // The input gradient alternates between its two graphs along with the filter-gradient variants.
      registerOrtKernels({ filterGrad: variant, inputGrad: variant === "im2col" ? "convtranspose" : "auto" });
      resetOrtStats();
      const got = await convGrads(c, "onnxruntime", false);
      assert.equal(ortStats().fallbacks, 0);
      const kinds = Object.keys(ortStats().byKind);
      assert(kinds.some((k) => k.endsWith("Dx")) && kinds.some((k) => k.endsWith("Dw")), `ran only ${kinds}`);
      for (const k of ["y", "dx", "dw"] as const) {
        const e = maxRelErr(got[k], ref[k]);
        errs.push(`${variant} ${k} ${e.toExponential(1)}`);
        assert(e <= 1e-4, `${variant} ${k}: max relative error ${e}`);
      }
    }
    registerOrtKernels({ filterGrad: "shifted", inputGrad: "auto" });
    if (Deno.env.get("ORT_TEST_VERBOSE")) console.log(`${name}: ${errs.join(", ")}`);
  });
}

// The matrix's maps are too small for the shifted filter gradient (padding would add over 15% rows): these take it.
const shiftedCases: ConvCase[] = [
  { n: 2, h: 40, w: 36, ci: 3, k: 3, co: 5, stride: 1, pad: "same", dilation: 1, depthwise: false },
  { n: 2, h: 40, w: 36, ci: 3, k: 3, co: 5, stride: 1, pad: "valid", dilation: 1, depthwise: false },
  { n: 1, h: 64, w: 60, ci: 2, k: 3, co: 3, stride: 1, pad: "same", dilation: 2, depthwise: false },
];
for (const c of shiftedCases) {
  Deno.test(`onnxruntime's shifted filter gradient matches the cpu backend for ${caseName(c)}`, async () => {
    const info = tf.backend_util.computeConv2DInfo([c.n, c.h, c.w, c.ci], [c.k, c.k, c.ci, c.co], 1, c.dilation, c.pad);
    const p = info.padInfo;
    const layout = shiftedLayout({
      x: [c.n, c.h, c.w, c.ci],
      w: [c.k, c.k, c.ci, c.co],
      y: [c.n, info.outHeight, info.outWidth, c.co],
      strides: [1, 1],
      dilations: [c.dilation, c.dilation],
      pads: [p.top, p.left, p.bottom, p.right],
      depthwise: false,
    });
    assert(layout !== null, "the case should take the shifted layout");
    const ref = await convGrads(c, "cpu", true);
    registerOrtKernels({ filterGrad: "shifted" });
    const got = await convGrads(c, "onnxruntime", false);
    const e = maxRelErr(got.dw, ref.dw);
    assert(e <= 1e-4, `dw: max relative error ${e}`);
  });
}

Deno.test("onnxruntime fused convs (3x3, depthwise, 1x1) with bias and activation match the cpu backend", async () => {
  const run = async (backend: string) => {
    await setBackend(backend);
    const x = tf.tensor4d(randn(2 * 9 * 9 * 3, 4), [2, 9, 9, 3]);
    const w = tf.tensor4d(randn(3 * 3 * 3 * 6, 5), [3, 3, 3, 6]);
    const b = tf.tensor1d(randn(6, 6));
    const y = tf.fused.conv2d({ x, filter: w, strides: 2, pad: "same", bias: b, activation: "relu6" });
    const dw = tf.tensor4d(randn(3 * 3 * 3 * 2, 7), [3, 3, 3, 2]);
    const yd = tf.fused.depthwiseConv2d({ x, filter: dw, strides: 1, pad: "valid", activation: "relu" });
    // A 1x1 conv at stride 1 runs as one Gemm over the NHWC rows.
    const pw = tf.tensor4d(randn(3 * 6, 8), [1, 1, 3, 6]);
    const yp = tf.fused.conv2d({ x, filter: pw, strides: 1, pad: "valid", bias: b, activation: "relu6" });
    const out = { y: await y.data(), yd: await yd.data(), yp: await yp.data() };
    tf.dispose([x, w, b, y, dw, yd, pw, yp]);
    return out;
  };
  const ref = await run("cpu");
  resetOrtStats();
  const got = await run("onnxruntime");
  assert.equal(ortStats().fallbacks, 0);
  assert.equal(ortStats().runs, 3);
  assert(maxRelErr(got.y, ref.y) <= 1e-5, `fused conv2d ${maxRelErr(got.y, ref.y)}`);
  assert(maxRelErr(got.yp, ref.yp) <= 1e-5, `fused 1x1 conv2d ${maxRelErr(got.yp, ref.yp)}`);
  assert(maxRelErr(got.yd, ref.yd) <= 1e-5, `fused depthwise ${maxRelErr(got.yd, ref.yd)}`);
});

Deno.test("onnxruntime max-pool gradients match the cpu backend, with overlapping and padded windows", async () => {
  const run = async (backend: string) => {
    await setBackend(backend);
    // Distinct values: with ties the two backends may pick different (equally valid) maxima.
    const x = tf.tensor4d(randn(2 * 11 * 10 * 3, 10), [2, 11, 10, 3]);
    const outs: Float32Array[] = [];
    for (const [k, s, pad] of [[2, 2, "valid"], [3, 1, "same"], [3, 2, "same"]] as const) {
      const g = tf.grad((x: tf.Tensor) => tf.sum(tf.mul(tf.maxPool(x as tf.Tensor4D, k, s, pad), 1.5)))(x);
      outs.push(await g.data() as Float32Array);
      g.dispose();
    }
    x.dispose();
    return outs;
  };
  const ref = await run("cpu");
  resetOrtStats();
  const got = await run("onnxruntime");
  assert.equal(ortStats().byKind.MaxPoolGrad?.runs, 3);
  for (let i = 0; i < ref.length; i++) assert(maxRelErr(got[i], ref[i]) <= 1e-6, `maxpool case ${i}`);
});

Deno.test("onnxruntime batched matmul matches the cpu backend, transposed or not", async () => {
  const run = async (backend: string) => {
    await setBackend(backend);
    const a = tf.tensor3d(randn(2 * 5 * 7, 8), [2, 5, 7]);
    const b = tf.tensor3d(randn(2 * 7 * 3, 9), [2, 7, 3]);
    const outs = [tf.matMul(a, b), tf.matMul(b, a, true, true), tf.matMul(a.reshape([10, 7]), b.gather(0), false)];
    const data = await Promise.all(outs.map((t) => t.data()));
    tf.dispose([a, b, ...outs]);
    return data;
  };
  const ref = await run("cpu");
  resetOrtStats();
  const got = await run("onnxruntime");
  assert.equal(ortStats().runs, 3, JSON.stringify(ortStats()));
  for (let i = 0; i < ref.length; i++) assert(maxRelErr(got[i], ref[i]) <= 1e-5, `matmul ${i}`);
});

Deno.test("the onnxruntime backend runs on wasm, and choosing wasm again restores its own kernels", async () => {
  assert.equal(await setBackend("onnxruntime"), "onnxruntime");
  assert.equal(tf.getBackend(), "wasm");
  const x = tf.ones([1, 6, 6, 2]) as tf.Tensor4D, w = tf.ones([3, 3, 2, 2]) as tf.Tensor4D;
  resetOrtStats();
  tf.conv2d(x, w, 1, "same").dispose();
  assert.equal(ortStats().runs, 1);
  await setBackend("wasm");
  tf.conv2d(x, w, 1, "same").dispose();
  assert.equal(ortStats().runs, 1);
  await setBackend("onnxruntime");
  tf.conv2d(x, w, 1, "same").dispose();
  assert.equal(ortStats().runs, 2);
  tf.dispose([x, w]);
});

Deno.test("auto-selection keeps each call signature on the faster kernel and still matches", async () => {
  await setBackend("onnxruntime");
  registerOrtKernels({ autoSelect: true });
  resetOrtStats();
  const x = tf.randomNormal([2, 12, 12, 8], 0, 1, "float32", 11) as tf.Tensor4D;
  const w = tf.randomNormal([3, 3, 8, 8], 0, 1, "float32", 12) as tf.Tensor4D;
  const a = await tf.conv2d(x, w, 1, "same").data();
  assert.equal(ortStats().trials.length, 1);
  const b = await tf.conv2d(x, w, 1, "same").data();
  assert.equal(ortStats().trials.length, 1, "one trial per signature");
  assert(maxRelErr(a, b) <= 1e-5);
  registerOrtKernels({ autoSelect: false });
  tf.dispose([x, w]);
});

Deno.test("the onnxruntime kernels share the wasm heap, leak no tensors and count their work", async () => {
  await setBackend("onnxruntime");
  const x = tf.randomNormal([2, 16, 16, 8]) as tf.Tensor4D;
  const w = tf.randomNormal([3, 3, 8, 8]) as tf.Tensor4D;
  const dw = tf.randomNormal([3, 3, 8, 2]) as tf.Tensor4D;
  const step = () => convGradStep(x, w, dw, 1);
  step();
  const before = tf.memory().numTensors;
  const bytesBefore = tf.memory().numBytes;
  resetOrtStats();
  for (let i = 0; i < 5; i++) step();
  assert.equal(tf.memory().numTensors, before);
  assert.equal(tf.memory().numBytes, bytesBefore);
  const s = ortStats();
  assert.equal(s.runs, 30);
  assert.equal(s.sessions, 0, "sessions are cached per shape");
  assert.equal(s.bytesCopied, 0);
  assert(s.bytesIn > 0 && s.bytesOut > 0);

  registerOrtKernels({ copy: true });
  resetOrtStats();
  step();
  assert.equal(ortStats().bytesCopied, ortStats().bytesIn + ortStats().bytesOut);
  registerOrtKernels({ copy: false });

  unregisterOrtKernels();
  resetOrtStats();
  step();
  assert.equal(ortStats().runs, 0, "unregistered kernels are not called");
  registerOrtKernels();

  // Training's default set leaves the depthwise kernels to wasm: XNNPACK and the SIMD filter gradient.
  registerOrtKernels({ kernels: DEFAULT_ORT_KERNELS });
  resetOrtStats();
  step();
  assert.deepStrictEqual(Object.keys(ortStats().byKind).sort(), ["Conv", "ConvDw", "ConvDx"]);
  assert.equal(ortStats().runs, 3);
  registerOrtKernels({ kernels: ORT_KERNELS });

  // A 1x1 forward conv over at most 16 channels stays on the wasm kernel; its gradients do not.
  registerOrtKernels({ pointwiseMaxK: 16 });
  resetOrtStats();
  const pw = tf.randomNormal([1, 1, 8, 32]) as tf.Tensor4D;
  tf.dispose(
    tf.grads((x: tf.Tensor, w: tf.Tensor) => tf.conv2d(x as tf.Tensor4D, w as tf.Tensor4D, 1, "valid").sum())([x, pw]),
  );
  assert.deepStrictEqual(Object.keys(ortStats().byKind).sort(), ["ConvDw", "ConvDx"]);
  registerOrtKernels({ pointwiseMaxK: 0 });
  pw.dispose();
  tf.dispose([x, w, dw]);
});

Deno.test("the kernels' thread count comes from the config: threads, or the cores shared by the replicas", async () => {
  const demo = loadSsdConfig("configs/demo.yaml", { backend: "onnxruntime", "train.replicas": "2" });
  assert.equal(kernelThreads(demo, 2), 1, "two replicas on two cores: one thread each");
  assert.equal(kernelThreads({ ...demo, train: { ...demo.train, replicas: 1 } }, 2), 2);
  assert.equal(kernelThreads(loadSsdConfig("configs/demo.yaml", { threads: "3" }), 2), 3);
  await setBackend("onnxruntime", { threads: 3 });
  assert.equal(ortKernelOptions().threads, 3);
  await setBackend("onnxruntime", { threads: kernelThreads(demo, 2) });
  assert.equal(ortKernelOptions().threads, 1);
  registerOrtKernels({ threads: 2 });
});
