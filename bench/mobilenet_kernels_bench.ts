/**
 * SSD300-MobileNetV2's kernels outside the dense convs, each against what it
 * replaced, in the same run on its own shapes (batch 4): the depthwise convs on
 * oneDNN against the SIMD kernels and XNNPACK, batch norm + ReLU6 and its
 * gradient as native code on oneDNN's threads (native_kernels.ts) and the
 * gradient on oneDNN, each against the two SIMD passes, and the focal loss's SIMD kernel
 * against the float64 loop. Rows of the conv section; oneDNN's rows need
 * Debian's libdnnl2 and say so when it is missing. Alone, a kernel runs on
 * cores nothing else wants; the ort section times the oneDNN kernels' share of
 * whole steps too (ort_bench.ts's `mobileNetKernelRows`).
 */
import * as tf from "@tensorflow/tfjs-core";
import { BN_TRAIN, BN_TRAIN_GRAD, focalLossKernel } from "../lib/custom_ops.ts";
import { setBackend } from "../lib/engine/mod.ts";
import { batchNormOnDnnl } from "../lib/engine/batch_norm_kernel.ts";
import { DNNL_INSTALL_HINT } from "../lib/engine/dnnl.ts";
import { nativeKernels, nativeKernelsUnavailable } from "../lib/engine/native_kernels.ts";
import { ortConvsOnDnnl, registerOrtKernels } from "../lib/engine/ort_kernels.ts";
import { focalLossAndGrad } from "../lib/loss.ts";
import { createRng } from "../lib/rng.ts";
import { type BenchRow, timeMedian } from "./report.ts";

/** MobileNetV2's depthwise 3x3s at 300 px: side, channels, stride. */
const DEPTHWISE: [number, number, number][] = [
  [150, 32, 1],
  [150, 96, 2],
  [75, 144, 1],
  [75, 144, 2],
  [38, 192, 1],
  [38, 192, 2],
  [19, 384, 1],
  [19, 576, 1],
  [19, 576, 2],
  [10, 960, 1],
];

/** Rows of the conv section for SSD300-MobileNetV2's depthwise convs, batch norm and focal loss. */
export async function benchMobileNetKernels(o: { quick?: boolean } = {}): Promise<BenchRow[]> {
  const reps = o.quick ? 3 : 9;
  const row = (name: string, ours: number | null, before: number, what: string, note?: string): BenchRow => ({
    section: "conv",
    name: `SSD300-MobileNetV2 b4, ${name}`,
    ms: ours,
    speedup: ours === null ? undefined : before / ours,
    against: `vs ${what} ${before.toFixed(2)} ms`,
    note,
  });
  const rows: BenchRow[] = [];
  await setBackend("onnxruntime");
  const dnnl = ortConvsOnDnnl();

  // The ten depthwise convs: forward, dX and dW each, on oneDNN and on what runs without it.
  const convs = DEPTHWISE.map(([s, c, stride]) => {
    const x = tf.randomNormal([4, s, s, c], 0, 1, "float32", 1) as tf.Tensor4D;
    const w = tf.randomNormal([3, 3, c, 1], 0, 1, "float32", 2) as tf.Tensor4D;
    const dy = tf.randomNormal([4, Math.ceil(s / stride), Math.ceil(s / stride), c], 0, 1, "float32", 3) as tf.Tensor4D;
    return { x, w, dy, stride };
  });
  // The wasm backend's kernels finish before they return, so nothing is read back: a read copies the
  // output out of the heap, which took longer than some of these convs.
  const depthwise = () =>
    tf.tidy(() => {
      for (const { x, w, dy, stride } of convs) {
        const attrs = { strides: stride, pad: "same", dilations: 1 };
        tf.depthwiseConv2d(x, w, stride, "same");
        const run = (k: string, ins: tf.NamedTensorMap, a: object) =>
          tf.engine().runKernel(k, ins, a as tf.NamedAttrMap);
        run("DepthwiseConv2dNativeBackpropInput", { dy, filter: w }, { ...attrs, inputShape: x.shape });
        run("DepthwiseConv2dNativeBackpropFilter", { x, dy }, { ...attrs, filterShape: w.shape });
      }
    });
  registerOrtKernels({ onednnDepthwise: false });
  const dwBefore = await timeMedian(depthwise, reps);
  registerOrtKernels({ onednnDepthwise: true });
  const dwOurs = dnnl ? await timeMedian(depthwise, reps) : null;
  rows.push(row(
    "ten depthwise 3x3 convs, fwd + dX + dW: oneDNN (NHWC)",
    dwOurs,
    dwBefore,
    "SIMD kernels + XNNPACK",
    dnnl ? undefined : DNNL_INSTALL_HINT,
  ));
  tf.dispose(convs.flatMap(({ x, w, dy }) => [x, w, dy]));

  // The batch-norm + ReLU6 gradient on MobileNetV2's largest activation.
  const x = tf.randomNormal([4, 150, 150, 96], 0, 1, "float32", 4);
  const gamma = tf.randomNormal([96], 1, 0.1, "float32", 5), beta = tf.randomNormal([96], 0, 1, "float32", 6);
  const dy = tf.randomNormal(x.shape, 0, 1, "float32", 7);
  const [y, mean, variance, invstd] = tf.engine().runKernel(
    BN_TRAIN,
    { x, gamma, beta },
    { eps: 1e-5, activation: "relu6" },
  ) as tf.Tensor[];
  const attrs = { eps: 1e-5, activation: "relu6" };
  const bnFwd = () => tf.tidy(() => void tf.engine().runKernel(BN_TRAIN, { x, gamma, beta }, attrs));
  const bnGrad = () =>
    tf.tidy(() => {
      const ins = { dy, x, y, mean, variance, invstd, gamma, beta };
      tf.engine().runKernel(BN_TRAIN_GRAD, ins, attrs);
    });
  // On the SIMD kernels' threads; natively on oneDNN's threads; the gradient on oneDNN itself.
  batchNormOnDnnl(false);
  const fwdBefore = await timeMedian(bnFwd, reps), bnBefore = await timeMedian(bnGrad, reps);
  const native = dnnl ? nativeKernels() : null;
  batchNormOnDnnl(dnnl);
  const fwdNative = native ? await timeMedian(bnFwd, reps) : null;
  const gradNative = native ? await timeMedian(bnGrad, reps) : null;
  batchNormOnDnnl(dnnl, { native: false });
  const bnOurs = dnnl ? await timeMedian(bnGrad, reps) : null;
  batchNormOnDnnl(dnnl);
  const why = dnnl ? `native kernels unavailable: ${nativeKernelsUnavailable()}` : DNNL_INSTALL_HINT;
  const shape = "4x150x150x96";
  rows.push(
    row(
      `batch norm + ReLU6 ${shape}: native, on oneDNN's threads`,
      fwdNative,
      fwdBefore,
      "two SIMD passes",
      native ? undefined : why,
    ),
    row(
      `batch-norm + ReLU6 gradient ${shape}: native, on oneDNN's threads`,
      gradNative,
      bnBefore,
      "two SIMD passes",
      native ? undefined : why,
    ),
    row(
      `batch-norm + ReLU6 gradient ${shape}: oneDNN`,
      bnOurs,
      bnBefore,
      "two SIMD passes",
      dnnl ? undefined : DNNL_INSTALL_HINT,
    ),
  );
  tf.dispose([x, gamma, beta, dy, y, mean, variance, invstd]);

  // The focal loss and its gradient over [4, 1917, 81] logits.
  const rng = createRng(8), n = 4 * 1917 * 81;
  const logits = Float32Array.from({ length: n }, () => (rng() - 0.6) * 16);
  const onehot = Float32Array.from({ length: n }, (_, i) => (i % 81 === Math.floor(i / 81) % 81 ? 1 : 0));
  const lt = tf.tensor3d(logits, [4, 1917, 81]), zt = tf.tensor3d(onehot, [4, 1917, 81]);
  const o2 = { gamma: 2, alpha: 0.75 };
  const focalOurs = await timeMedian(() => tf.dispose(focalLossKernel(lt, zt, o2)), reps);
  const focalLoop = await timeMedian(() => void focalLossAndGrad(logits, onehot, o2), reps);
  rows.push(row("focal loss + gradient [4, 1917, 81]: SIMD kernel", focalOurs, focalLoop, "the float64 loop"));
  tf.dispose([lt, zt]);
  await setBackend("wasm");
  return rows;
}
