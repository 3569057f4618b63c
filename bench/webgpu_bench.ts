/**
 * The webgpu section of `deno task bench`, on whatever adapter Deno's WebGPU
 * finds, every row labelled with it:
 * - the adapter's peak, measured as the best float32 matmul rate;
 * - SSD300-VGG16's 3x3 conv layers at batch 1 (two small ones on a software
 *   adapter), forward + dX + dW, as GFLOP/s,
 *   as a share of that peak, and against the onnxruntime backend on the CPU
 *   in the same run;
 * - training steps against onnxruntime (demo batch 4; SSD300-MobileNetV2
 *   batch 1 unless `--quick`).
 *
 * On a software adapter (Mesa's lavapipe) this is a correctness run, not GPU
 * speed, and the rows say so. WebGPU work is queued, so each timing queues its
 * passes and then reads one element back, which waits for all of them.
 *
 * It runs in a child process: loading tfjs-backend-webgpu registers a backend
 * that the rest of the bench should not see, and a machine without an adapter
 * gets one skipped row instead of an error.
 *
 * `deno run -A bench/webgpu_bench.ts [--quick]` prints the table alone.
 */
import * as tf from "@tensorflow/tfjs-core";
import { describeAdapter, findAdapter, setBackend } from "../lib/engine/mod.ts";
import { registerWebGpuBatchNorm, unregisterWebGpuBatchNorm } from "../lib/engine/webgpu_batch_norm.ts";
import { batchNormTrain } from "../lib/graph.ts";
import { type ConvShape, flops, label } from "./conv_bench.ts";
import { type BenchRow, formatTable, timeMedian } from "./report.ts";
import { jsonFromChild, stepInChild } from "./step_timer.ts";
import { cpuPeak, gflopsOfPeak, matmulPeak, peakRow, settle } from "./peak.ts";

/** SSD300-VGG16's 3x3 convs at batch 1: one per resolution, from conv1_2 (300 px) to conv5_3 (19 px). */
export const VGG16_LAYERS: ConvShape[] = [
  { n: 1, hw: 300, ci: 64, co: 64 },
  { n: 1, hw: 150, ci: 128, co: 128 },
  { n: 1, hw: 75, ci: 256, co: 256 },
  { n: 1, hw: 38, ci: 512, co: 512 },
  { n: 1, hw: 19, ci: 512, co: 512 },
];

/**
 * On a software adapter (1-5 GFLOP/s on lavapipe here, where conv1_2 alone would take minutes): VGG16's conv5_3
 * and the 4x38x38 64->64 conv the issue first measured on lavapipe.
 */
export const SOFTWARE_LAYERS: ConvShape[] = [{ n: 4, hw: 38, ci: 64, co: 64 }, VGG16_LAYERS[4]];

/** Median ms of forward + dX + dW of one 3x3 conv on the current backend, each pass awaited. */
export async function convPassesMs(s: ConvShape, reps: number): Promise<number> {
  const x = tf.randomNormal([s.n, s.hw, s.hw, s.ci], 0, 1, "float32", 1) as tf.Tensor4D;
  const w = tf.randomNormal([3, 3, s.ci, s.co], 0, 0.05, "float32", 2) as tf.Tensor4D;
  const dy = tf.randomNormal([s.n, s.hw, s.hw, s.co], 0, 1, "float32", 3) as tf.Tensor4D;
  const attrs = { strides: 1, pad: "same", dataFormat: "NHWC", dilations: 1 };
  const ms = await timeMedian(async () => {
    await settle(tf.conv2d(x, w, 1, "same"));
    await settle(
      tf.engine().runKernel("Conv2DBackpropInput", { dy, filter: w }, { ...attrs, inputShape: x.shape }) as tf.Tensor,
    );
    await settle(
      tf.engine().runKernel("Conv2DBackpropFilter", { x, dy }, { ...attrs, filterShape: w.shape }) as tf.Tensor,
    );
  }, reps);
  tf.dispose([x, w, dy]);
  return ms;
}

/** Batch-norm shapes [N, H, W, C] of SSD300-MobileNetV2 at batch 4: an early expansion and the 19 px one. */
export const BN_SHAPES = [[4, 75, 75, 144], [4, 19, 19, 576]];

/**
 * Median ms of one training-mode batch norm with ReLU6, forward and backward, on the current backend's kernels
 * (the fused ones where registered, else the op-composed form of graph.ts).
 */
export async function batchNormPassMs(shape: number[], reps: number): Promise<number> {
  const c = shape[3];
  const x = tf.randomNormal(shape, 1, 2, "float32", 1), dy = tf.randomNormal(shape, 0, 1, "float32", 2);
  const g = tf.ones([c]), b = tf.zeros([c]);
  const grads = tf.grads((xi: tf.Tensor, gi: tf.Tensor, bi: tf.Tensor) => {
    const stats: { mean?: tf.Tensor1D; variance?: tf.Tensor1D } = {};
    const y = batchNormTrain(xi, gi, bi, 1e-3, stats, "relu6");
    tf.dispose([stats.mean!, stats.variance!]);
    return y;
  });
  const ms = await timeMedian(async () => {
    const [dx, dg, db] = grads([x, g, b], dy);
    tf.dispose([dx, dg]);
    await settle(db);
  }, reps);
  tf.dispose([x, dy, g, b]);
  return ms;
}

/** What the child measured, and how its rows name the adapter (null: none found). */
interface ChildResult {
  rows: BenchRow[];
  label: { on: string; caveat: string } | null;
}

/** The rows, measured in this process (the child). */
async function measure(quick: boolean): Promise<ChildResult> {
  let adapter;
  try {
    adapter = await findAdapter();
  } catch (e) {
    const why = (e as Error).message.split("\n")[0];
    return {
      rows: [{ section: "webgpu", name: "no WebGPU adapter", ms: null, note: `${why} (README, "GPU (WebGPU)")` }],
      label: null,
    };
  }
  const on = adapter.software ? `${adapter.software} (software)` : adapter.name;
  const caveat = adapter.software ? "; a software adapter: a correctness run, not GPU speed" : "";
  const rows: BenchRow[] = [{
    section: "webgpu",
    name: `adapter: ${describeAdapter(adapter)}`,
    ms: null,
    untimed: true,
  }];
  const reps = quick || adapter.software ? 1 : 3;

  await setBackend("webgpu");
  const peak = await matmulPeak(4, reps, `best float32 matmul on ${on}`);
  rows.push(peakRow("webgpu", peak, caveat));
  for (const shape of BN_SHAPES) {
    unregisterWebGpuBatchNorm();
    const composed = await batchNormPassMs(shape, 5); // cheap: more repetitions than the convs get
    registerWebGpuBatchNorm();
    const fused = await batchNormPassMs(shape, 5);
    rows.push({
      section: "webgpu",
      name: `batch norm + ReLU6, forward + backward, ${shape.join("x")} on ${on}: WGSL kernels vs composed ops`,
      ms: fused,
      speedup: composed / fused,
      against: "vs composed tfjs ops",
      note: `composed ${composed.toFixed(1)} ms${caveat}`,
    });
  }
  const layers = adapter.software ? SOFTWARE_LAYERS : quick ? [VGG16_LAYERS[2], VGG16_LAYERS[4]] : VGG16_LAYERS;
  const gpu: number[] = [];
  for (const s of layers) gpu.push(await convPassesMs(s, reps));
  const host = await cpuPeak({ quick });
  rows.push(peakRow("webgpu", host));
  await setBackend("onnxruntime");
  const cpu: number[] = [];
  for (const s of layers) cpu.push(await convPassesMs(s, reps));
  layers.forEach((s, k) => {
    const f = 3 * flops(s);
    rows.push({
      section: "webgpu",
      name: `fwd + dX + dW ${label(s)} on ${on}`,
      ms: gpu[k],
      speedup: cpu[k] / gpu[k],
      against: "vs onnxruntime (CPU), same run",
      note: `${gflopsOfPeak(f, gpu[k], peak)} (the adapter's); onnxruntime ${gflopsOfPeak(f, cpu[k], host)} ` +
        `(the CPU's)${caveat}`,
    });
  });
  return { rows, label: { on, caveat } };
}

/** Training steps on webgpu and onnxruntime, each in a fresh process (as the other step benches). */
function stepRows(on: string, caveat: string, quick: boolean): BenchRow[] {
  const jobs = [
    { what: "demo step, batch 4", config: "configs/demo.yaml", batch: 4, steps: quick ? 2 : 3 },
    ...(quick
      ? []
      : [{ what: "SSD300-MobileNetV2 step, batch 1", config: "configs/ssd300_mobilenetv2.yaml", batch: 1, steps: 2 }]),
  ];
  return jobs.map((j) => {
    const job = { config: j.config, batch: j.batch, steps: j.steps, segments: 1 };
    const gpu = stepInChild({ ...job, backend: "webgpu" });
    const cpu = stepInChild({ ...job, backend: "onnxruntime" });
    return {
      section: "webgpu",
      name: `${j.what} on ${on}`,
      ms: gpu.seconds * 1000,
      speedup: cpu.seconds / gpu.seconds,
      against: "vs onnxruntime (CPU), same run",
      note: `${(j.batch / gpu.seconds).toFixed(2)} img/s; onnxruntime ${(cpu.seconds * 1000).toFixed(0)} ms${caveat}`,
    };
  });
}

/** The webgpu section of `deno task bench`. */
export function benchWebgpu(o: { quick?: boolean } = {}): Promise<BenchRow[]> {
  const { rows, label } = jsonFromChild<ChildResult>(import.meta.filename!, ["--child", o.quick ? "quick" : "full"]);
  if (!label) return Promise.resolve(rows);
  return Promise.resolve([...rows, ...stepRows(label.on, label.caveat, Boolean(o.quick))]);
}

if (import.meta.main) {
  if (Deno.args[0] === "--child") {
    try {
      console.log(JSON.stringify(await measure(Deno.args[1] === "quick")));
    } catch (e) {
      console.log(JSON.stringify({ error: (e as Error).message }));
    }
  } else console.log(formatTable(await benchWebgpu({ quick: Deno.args.includes("--quick") })));
}
