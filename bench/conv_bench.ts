/**
 * One 3x3 conv layer, forward + input gradient (dX) + filter gradient (dW),
 * on each available backend, with the wasm kernels of lib/engine/conv_grad_kernels.ts
 * against wasm's shipped dX and against the cpu backend; and the memory-bound
 * kernels that SSD300-VGG16's largest activation (4x300x300x64) passes through:
 * the max-pool and ReLU gradients, ours against the shipped ones.
 */
import * as tf from "@tensorflow/tfjs-core";
import { setBackend } from "../lib/engine/mod.ts";
import { withShippedKernel } from "../lib/engine/kernel_registry.ts";
import { DEFAULT_ORT_KERNELS, ORT_KERNELS, registerOrtKernels } from "../lib/engine/ort_kernels.ts";
import { type BenchRow, timeMedian } from "./report.ts";
import { cpuPeak, gflopsOfPeak, peakRow } from "./peak.ts";

/** A square 3x3 conv layer. */
export interface ConvShape {
  n: number;
  hw: number;
  ci: number;
  co: number;
}

/** "3x3 32->64 @ 75x75, batch 4". */
export const label = (s: ConvShape) => `3x3 ${s.ci}->${s.co} @ ${s.hw}x${s.hw}, batch ${s.n}`;
/** Multiply-adds x 2 of one pass. */
export const flops = (s: ConvShape) => 2 * s.n * s.hw * s.hw * s.ci * s.co * 9;

/** Times forward + dX + dW of one conv on the current backend, in ms (median). */
async function convStep(s: ConvShape, reps: number): Promise<{ total: number; fwd: number; dx: number; dw: number }> {
  const x = tf.randomNormal([s.n, s.hw, s.hw, s.ci], 0, 1, "float32", 1) as tf.Tensor4D;
  const w = tf.randomNormal([3, 3, s.ci, s.co], 0, 1, "float32", 2) as tf.Tensor4D;
  const dy = tf.randomNormal([s.n, s.hw, s.hw, s.co], 0, 1, "float32", 3) as tf.Tensor4D;
  const attrs = { strides: 1, pad: "same", dataFormat: "NHWC", dilations: 1 };
  const run = async (which: "fwd" | "dx" | "dw") => {
    const out = which === "fwd"
      ? tf.conv2d(x, w, 1, "same")
      : which === "dx"
      ? tf.engine().runKernel("Conv2DBackpropInput", { dy, filter: w }, { ...attrs, inputShape: x.shape })
      : tf.engine().runKernel("Conv2DBackpropFilter", { x, dy }, { ...attrs, filterShape: w.shape });
    await (out as tf.Tensor).data();
    (out as tf.Tensor).dispose();
  };
  const fwd = await timeMedian(() => run("fwd"), reps);
  const dx = await timeMedian(() => run("dx"), reps);
  const dw = await timeMedian(() => run("dw"), reps);
  tf.dispose([x, w, dy]);
  return { total: fwd + dx + dw, fwd, dx, dw };
}

/** The conv section of `deno task bench`. */
export async function benchConv(options: { quick?: boolean } = {}): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  const big: ConvShape = { n: 4, hw: 75, ci: 32, co: 64 };
  const small: ConvShape = { n: 1, hw: 19, ci: 32, co: 64 };
  const reps = options.quick ? 3 : 5;
  const peak = await cpuPeak(options);
  rows.push(peakRow("conv", peak));
  const gf = (s: ConvShape, ms: number) => gflopsOfPeak(3 * flops(s), ms, peak);

  await setBackend("wasm");
  const ours = await convStep(big, reps);
  const shipped = await withShippedKernel("wasm", "Conv2DBackpropInput", () => convStep(big, reps));
  rows.push({
    section: "conv",
    name: `wasm, shipped dX + our dW: ${label(big)}`,
    ms: shipped.total,
    note: `fwd ${shipped.fwd.toFixed(0)} + dX ${shipped.dx.toFixed(0)} + dW ${shipped.dw.toFixed(0)} ms`,
  });
  rows.push({
    section: "conv",
    name: `wasm, our dX + dW: ${label(big)}`,
    ms: ours.total,
    speedup: shipped.total / ours.total,
    against: "vs shipped dX",
    note: `fwd ${ours.fwd.toFixed(0)} + dX ${ours.dx.toFixed(0)} + dW ${ours.dw.toFixed(0)} ms, ${gf(big, ours.total)}`,
  });
  const oursSmall = await convStep(small, reps);
  await setBackend("cpu");
  const cpuSmall = await convStep(small, options.quick ? 1 : 3);
  rows.push({ section: "conv", name: `cpu: ${label(small)}`, ms: cpuSmall.total, note: gf(small, cpuSmall.total) });
  rows.push({
    section: "conv",
    name: `wasm, our kernels: ${label(small)}`,
    ms: oursSmall.total,
    speedup: cpuSmall.total / oursSmall.total,
    against: "vs cpu",
    note: gf(small, oursSmall.total),
  });
  try {
    await setBackend("tensorflow");
    const t = await convStep(big, reps);
    rows.push({
      section: "conv",
      name: `tensorflow: ${label(big)}`,
      ms: t.total,
      speedup: ours.total / t.total,
      against: "vs wasm ours",
      note: gf(big, t.total),
    });
  } catch (e) {
    // Missing packages are a skip; anything else failed, and says how.
    const missing = e instanceof Error && /are not installed/.test(e.message);
    rows.push({
      section: "conv",
      name: `tensorflow: ${label(big)}`,
      ms: null,
      note: missing
        ? "skipped: @tensorflow/tfjs-node(-gpu) not installed"
        : `failed: ${(e instanceof Error ? e.message : String(e)).split("\n")[0].slice(0, 120)}`,
    });
  }
  await setBackend("wasm");
  return rows;
}

/** Time of one call of `kernel`, median of `reps`, on the current (wasm-based) backend. */
function kernelMs(kernel: string, inputs: tf.NamedTensorMap, attrs: tf.NamedAttrMap, reps: number): Promise<number> {
  return timeMedian(() => {
    // Synchronous on wasm and onnxruntime: no read-back, which would copy the output out of the heap.
    (tf.engine().runKernel(kernel, inputs, attrs) as tf.Tensor).dispose();
  }, reps);
}

/** SSD300-VGG16's pool1 and ReLU gradients at batch 4: ours against the shipped and onnxruntime kernels. */
export async function benchMemoryKernels(options: { quick?: boolean } = {}): Promise<BenchRow[]> {
  const reps = options.quick ? 3 : 5;
  const shape: [number, number, number, number] = [4, 300, 300, 64];
  const gb = (bytes: number, ms: number) => `${(bytes / ms / 1e6).toFixed(1)} GB/s`;
  await setBackend("wasm");
  const x = tf.randomNormal(shape, 0, 1, "float32", 1) as tf.Tensor4D;
  const y = tf.maxPool(x, 2, 2, "valid");
  const dyPool = tf.randomNormal(y.shape, 0, 1, "float32", 2);
  const dy = tf.randomNormal(shape, 0, 1, "float32", 3);
  const poolArgs = [{ dy: dyPool, input: x, output: y }, { filterSize: 2, strides: 2, pad: "valid" }] as const;
  const ours = await kernelMs("MaxPoolGrad", ...poolArgs, reps);
  const shipped = await withShippedKernel("wasm", "MaxPoolGrad", () => kernelMs("MaxPoolGrad", ...poolArgs, reps));
  registerOrtKernels({ kernels: ORT_KERNELS });
  await setBackend("onnxruntime");
  const ort = await kernelMs("MaxPoolGrad", ...poolArgs, reps);
  registerOrtKernels({ kernels: DEFAULT_ORT_KERNELS });
  await setBackend("wasm");
  const poolBytes = 4 * (2 * x.size + dyPool.size); // read x and dy, write dx
  // tfjs's own ReLU gradient, from ops: dy * cast(step(x)).
  const opsRelu = await timeMedian(() => tf.tidy(() => void tf.mul(dy, tf.cast(tf.step(x), "float32"))), reps);
  const kernelRelu = await kernelMs("SsdReluGrad", { dy, x }, { upper: Infinity }, reps);
  tf.dispose([x, y, dyPool, dy]);
  return [
    {
      section: "conv",
      name: "MaxPoolGrad 2x2/2 on 4x300x300x64 (SSD300-VGG16 pool1): SIMD kernel",
      ms: ours,
      speedup: shipped / ours,
      against: `vs wasm shipped ${shipped.toFixed(0)} ms`,
      note: `${(ort / ours).toFixed(1)}x vs onnxruntime's MaxPool + ScatterElements graph ${ort.toFixed(0)} ms; ${
        gb(poolBytes, ours)
      }`,
    },
    {
      section: "conv",
      name: "ReLU gradient on 4x300x300x64: one-pass kernel",
      ms: kernelRelu,
      speedup: opsRelu / kernelRelu,
      against: `vs tfjs ops ${opsRelu.toFixed(0)} ms`,
      note: gb(4 * 3 * dy.size, kernelRelu),
    },
  ];
}
