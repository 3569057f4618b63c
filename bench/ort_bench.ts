/**
 * The onnxruntime kernels (lib/engine/ort_kernels.ts) against the wasm backend's
 * composed kernels: per-kernel times of 3x3 convs (forward, dX, dW; every
 * filter-gradient variant; shared heap vs copies; oneDNN's convs against
 * onnxruntime's), and training steps with the share spent outside the native
 * kernels, against wasm, onnxruntime's own convs and torchvision.
 *
 * Kernel calls are timed without reading results back: both backends run
 * them synchronously, and a readback would add the same cost to both.
 *
 * `deno run -A bench/ort_bench.ts [--quick]` prints the table alone.
 */
import * as tf from "@tensorflow/tfjs-core";
import * as fs from "node:fs";
import { setBackend, useUntapedBackward } from "../lib/engine/mod.ts";
import type { FilterGradVariant, InputGradVariant } from "../lib/engine/ort_graphs.ts";
import {
  convGeometry,
  type OrtKernelOptions,
  ortStats,
  registerOrtKernels,
  resetOrtStats,
  unregisterOrtKernels,
} from "../lib/engine/ort_kernels.ts";
import { loadSsdConfig } from "../lib/ssd_config.ts";
import { DNNL_INSTALL_HINT, dnnlAvailable, winogradFits } from "../lib/engine/dnnl.ts";
import { type ConvShape, flops, label } from "./conv_bench.ts";
import { torchFigures, torchTrainStep } from "./peers.ts";
import { jsonFromChild, type StepJob, type StepTiming, timeTrainStep } from "./step_timer.ts";
import { type BenchRow, formatTable, timeMedian } from "./report.ts";
import { cpuPeak, gflopsOfPeak, type Peak, peakRow } from "./peak.ts";

const mb = (bytes: number) => `${(bytes / 1e6).toFixed(1)} MB`;

type Pass = "fwd" | "dx" | "dw";

/** Times one pass of one conv on the current kernels, in ms (median of `reps` after one warm-up). */
async function passMs(s: ConvShape, pass: Pass, reps: number): Promise<number> {
  const x = tf.randomNormal([s.n, s.hw, s.hw, s.ci], 0, 1, "float32", 1) as tf.Tensor4D;
  const w = tf.randomNormal([3, 3, s.ci, s.co], 0, 1, "float32", 2) as tf.Tensor4D;
  const dy = tf.randomNormal([s.n, s.hw, s.hw, s.co], 0, 1, "float32", 3) as tf.Tensor4D;
  const attrs = { strides: 1, pad: "same", dataFormat: "NHWC", dilations: 1 };
  const run = () => {
    const out = pass === "fwd"
      ? tf.conv2d(x, w, 1, "same")
      : pass === "dx"
      ? tf.engine().runKernel("Conv2DBackpropInput", { dy, filter: w }, { ...attrs, inputShape: x.shape })
      : tf.engine().runKernel("Conv2DBackpropFilter", { x, dy }, { ...attrs, filterShape: w.shape });
    (out as tf.Tensor).dispose();
  };
  const ms = await timeMedian(run, reps);
  tf.dispose([x, w, dy]);
  return ms;
}

async function convRows(
  s: ConvShape,
  reps: number,
  variants: FilterGradVariant[],
  peak: Peak,
): Promise<BenchRow[]> {
  const gf = (f: number, ms: number) => gflopsOfPeak(f, ms, peak);
  const rows: BenchRow[] = [];
  const f = flops(s);
  registerOrtKernels({ onednn: false }); // onnxruntime's own convs here; oneDNN's get a row of their own
  unregisterOrtKernels();
  const wasm: Record<Pass, number> = { fwd: 0, dx: 0, dw: 0 };
  for (const p of ["fwd", "dx", "dw"] as const) wasm[p] = await passMs(s, p, reps);
  registerOrtKernels({ copy: false });
  const ort: Record<Pass, number> = { fwd: 0, dx: 0, dw: 0 };
  resetOrtStats();
  ort.fwd = await passMs(s, "fwd", reps);
  const dxs: [InputGradVariant, number][] = [];
  for (const v of ["auto", "convtranspose"] as const) {
    registerOrtKernels({ inputGrad: v });
    dxs.push([v, await passMs(s, "dx", reps)]);
  }
  registerOrtKernels({ inputGrad: "auto" });
  ort.dx = dxs[0][1];
  const dws: [FilterGradVariant, number][] = [];
  for (const v of variants) {
    registerOrtKernels({ filterGrad: v });
    dws.push([v, await passMs(s, "dw", reps)]);
  }
  dws.sort((a, b) => a[1] - b[1]);
  ort.dw = dws[0][1];
  registerOrtKernels({ filterGrad: "shifted" });
  for (const p of ["fwd", "dx", "dw"] as const) {
    rows.push({
      section: "ort",
      name: `${p} ${label(s)}: onnxruntime vs wasm`,
      ms: ort[p],
      speedup: wasm[p] / ort[p],
      against: "vs wasm composed",
      note: `wasm ${wasm[p].toFixed(1)} ms (${gf(f, wasm[p])}), onnxruntime ${gf(f, ort[p])}` +
        (p === "dx"
          ? `; dX as Conv (auto) ${dxs[0][1].toFixed(1)} ms, as ConvTranspose ${dxs[1][1].toFixed(1)} ms`
          : "") +
        (p === "dw" ? `; dW variants ${dws.map(([v, ms]) => `${v} ${ms.toFixed(1)} ms`).join(", ")}` : ""),
    });
  }
  const ortTotal = ort.fwd + ort.dx + ort.dw, wasmTotal = wasm.fwd + wasm.dx + wasm.dw;
  rows.push({
    section: "ort",
    name: `fwd + dX + dW ${label(s)}: onnxruntime vs wasm`,
    ms: ortTotal,
    speedup: wasmTotal / ortTotal,
    against: "vs wasm composed",
    note: `wasm ${wasmTotal.toFixed(0)} ms (${gf(3 * f, wasmTotal)}), onnxruntime ${gf(3 * f, ortTotal)} (dW: ${
      dws[0][0]
    })`,
  });
  // onnxruntime's blocked NCHWc convs come with graph optimisation "all" (the default); "extended" leaves them out.
  registerOrtKernels({ optimization: "extended", filterGrad: dws[0][0] });
  let flat = 0;
  for (const p of ["fwd", "dx", "dw"] as const) flat += await passMs(s, p, reps);
  registerOrtKernels({ optimization: "all" });
  rows.push({
    section: "ort",
    name: `fwd + dX + dW ${label(s)}: onnxruntime's NCHWc layouts vs none`,
    ms: ortTotal,
    speedup: flat / ortTotal,
    against: `vs graph optimisation "extended" (no NCHWc) ${flat.toFixed(1)} ms`,
  });
  // The same three passes with inputs copied out of the wasm heap and results copied back in.
  registerOrtKernels({ copy: true, filterGrad: dws[0][0] });
  resetOrtStats();
  let copied = 0;
  for (const p of ["fwd", "dx", "dw"] as const) copied += await passMs(s, p, reps);
  const st = ortStats();
  const perCall = (v: number) => v / st.runs;
  rows.push({
    section: "ort",
    name: `fwd + dX + dW ${label(s)}: copying vs sharing the wasm heap`,
    ms: copied,
    speedup: copied / ortTotal,
    against: "shared heap speed-up",
    note: `copies ${mb(perCall(st.bytesCopied) * 3)} and ${(perCall(st.copyMs) * 3).toFixed(1)} ms per fwd+dX+dW; ` +
      `shared: 0 bytes copied`,
  });
  registerOrtKernels({ copy: false, filterGrad: "shifted" });
  if (dnnlAvailable()) {
    // oneDNN's direct algorithm, whose FLOPs are the conv's: its figures against the peak are real rates.
    const dnnlPasses = async (winograd: boolean) => {
      registerOrtKernels({ onednn: true, winograd });
      const t: Record<Pass, number> = { fwd: 0, dx: 0, dw: 0 };
      for (const p of ["fwd", "dx", "dw"] as const) t[p] = await passMs(s, p, reps);
      return t;
    };
    const dnnl = await dnnlPasses(false);
    const total = dnnl.fwd + dnnl.dx + dnnl.dw;
    rows.push({
      section: "ort",
      name: `fwd + dX + dW ${label(s)}: oneDNN (direct) vs onnxruntime`,
      ms: total,
      speedup: ortTotal / total,
      against: "vs onnxruntime's own convs",
      note: `${gf(3 * f, total)} (fwd ${gf(f, dnnl.fwd)}, dX ${gf(f, dnnl.dx)}, dW ${gf(f, dnnl.dw)})`,
    });
    const attrs = { strides: 1, pad: "same", dilations: 1 };
    if (winogradFits(convGeometry([s.n, s.hw, s.hw, s.ci], [3, 3, s.ci, s.co], attrs, false))) {
      // Winograd does a fraction of the multiplies: its rate over the direct FLOPs may pass the peak.
      const wino = await dnnlPasses(true);
      const t = wino.fwd + wino.dx + wino.dw;
      rows.push({
        section: "ort",
        name: `fwd + dX + dW ${label(s)}: oneDNN's Winograd vs its direct convs`,
        ms: t,
        speedup: total / t,
        against: `vs direct ${total.toFixed(1)} ms`,
        note: `effective ${(3 * f / t / 1e6).toFixed(0)} GFLOP/s over the direct algorithm's FLOPs (fwd ` +
          `${wino.fwd.toFixed(1)}, dX ${wino.dx.toFixed(1)}, dW ${wino.dw.toFixed(1)} ms)`,
      });
    }
  } else {
    rows.push({ section: "ort", name: `fwd + dX + dW ${label(s)}: oneDNN`, ms: null, note: DNNL_INSTALL_HINT });
  }
  registerOrtKernels({ onednn: true, winograd: Deno.env.get("SSD_WINOGRAD") !== "0" }); // back to the default
  return rows;
}

/** A step timing with the share of it inside onnxruntime and its runs per step. */
type OrtStepTiming = StepTiming & { ortShare: number; runs: number };

/** A step job with kernel options set before the step is built (they persist through `setBackend`). */
type OrtJob = StepJob & {
  ortOptions?: Pick<OrtKernelOptions, "onednnDepthwise" | "onednnBatchNorm" | "nativeBatchNorm" | "winograd">;
  /** The backward pass on tfjs's tape instead of lib/engine/graph_backward.ts. */
  tape?: boolean;
};

/**
 * {@linkcode timeTrainStep} with the onnxruntime counters, in this process: the default options, as training
 * runs them (the default kernel set on onnxruntime).
 */
async function ortStepTiming(job: OrtJob): Promise<OrtStepTiming> {
  if (job.ortOptions) registerOrtKernels(job.ortOptions);
  if (job.tape) useUntapedBackward(false);
  const t = await timeTrainStep(job, resetOrtStats);
  const st = ortStats(), ms = 1000 * t.times.reduce((a, b) => a + b, 0);
  return { ...t, ortShare: st.runMs / ms, runs: st.runs / job.steps };
}

/** {@linkcode ortStepTiming} in a fresh process, each backend in its own (see step_timer.ts). */
export function ortStepInChild(job: OrtJob): OrtStepTiming {
  try {
    return jsonFromChild<OrtStepTiming>(import.meta.filename!, ["--step", JSON.stringify(job)]);
  } catch (e) {
    throw new Error(`${job.config} on ${job.backend}: ${(e as Error).message}`);
  }
}

/** `f()` with the environment variable `name` set to `value` (children inherit it), then restored. */
function withEnv<T>(name: string, value: string, f: () => T): T {
  const before = Deno.env.get(name);
  Deno.env.set(name, value);
  try {
    return f();
  } finally {
    if (before === undefined) Deno.env.delete(name);
    else Deno.env.set(name, before);
  }
}

function trainRows(o: { quick?: boolean }): BenchRow[] {
  const rows: BenchRow[] = [];
  const torch = torchFigures(o);
  const models: { config: string; batch: number; peer?: "ssd300_vgg16" | "ssdlite320" }[] = [
    { config: "configs/demo.yaml", batch: 16 },
    { config: "configs/demo.yaml", batch: 4 },
  ];
  if (!o.quick) {
    models.push({ config: "configs/ssd300_mobilenetv2.yaml", batch: 4, peer: "ssdlite320" });
    models.push({ config: "configs/ssd300_vgg16.yaml", batch: 4, peer: "ssd300_vgg16" });
  }
  for (const m of models) {
    const name = `${m.config.replace(/^configs\/|\.yaml$/g, "")}, batch ${m.batch}`;
    // The median of 9 steps after a warm-up (torchvision's too): this machine's speed drifts within a run, and
    // our first timed step still pays first touches of the heap's pages (~7.5k page faults on MobileNetV2).
    const steps = o.quick ? 2 : m.config.includes("vgg") ? 1 : 9;
    // wasm needs the config's recomputed segments where batch 4 passes its heap (VGG16); onnxruntime's
    // kernels keep their workspace outside the heap and run the plain step, as torchvision does.
    const segments = loadSsdConfig(m.config).train.segments;
    try {
      // This machine's speed drifts over minutes, so the two backends run in interleaved rounds (order
      // alternating), each round's ratio taken back to back; the row shows the medians. VGG16 on wasm takes
      // a minute a step: one round.
      const rounds = o.quick || m.config.includes("vgg") ? 1 : 3;
      const pairs: { wasm: number; ort: OrtStepTiming }[] = [];
      const wasmStep = () =>
        ortStepInChild({ config: m.config, backend: "wasm", batch: m.batch, steps, segments }).seconds;
      const ortSteps = m.config.includes("vgg") ? 3 : steps;
      const ortStep = () =>
        ortStepInChild({ config: m.config, backend: "onnxruntime", batch: m.batch, steps: ortSteps, segments: 1 });
      // The same, with onnxruntime's own convs instead of oneDNN's (the child reads SSD_ONEDNN).
      const plainStep = () => withEnv("SSD_ONEDNN", "0", ortStep).seconds;
      const plain: number[] = [];
      // torchvision's step too, right after ours in each round (5 steps; VGG16 3), when the peer runs here.
      const peer = (): number | null => m.peer ? torchTrainStep(m.peer, m.config.includes("vgg") ? 3 : steps) : null;
      const peers: (number | null)[] = [];
      for (let r = 0; r < rounds; r++) {
        if (r % 2 === 0) {
          const wasm = wasmStep();
          pairs.push({ wasm, ort: ortStep() });
          peers.push(peer());
          if (dnnlAvailable()) plain.push(plainStep());
        } else {
          if (dnnlAvailable()) plain.push(plainStep());
          const ort = ortStep();
          peers.push(peer());
          pairs.push({ wasm: wasmStep(), ort });
        }
      }
      const mid = <T>(xs: T[], key: (x: T) => number) => xs.slice().sort((a, b) => key(a) - key(b))[xs.length >> 1];
      const ratios = pairs.map((p) => p.wasm / p.ort.seconds);
      const ort = mid(pairs, (p) => p.ort.seconds).ort, wasmS = mid(pairs, (p) => p.wasm).wasm;
      const spread = rounds > 1
        ? `; median of ${rounds} interleaved rounds (ratios ${Math.min(...ratios).toFixed(2)}-${
          Math.max(...ratios).toFixed(2)
        })`
        : "";
      const row: BenchRow = {
        section: "ort",
        name: `train step ${name}: onnxruntime kernels${dnnlAvailable() ? " with oneDNN convs" : ""}`,
        ms: ort.seconds * 1000,
        note: `${(m.batch / ort.seconds).toFixed(1)} img/s; ${(100 * (1 - ort.ortShare)).toFixed(0)}% of the step ` +
          `outside onnxruntime and oneDNN (${ort.runs.toFixed(0)} runs/step)${spread}`,
        speedup: mid(ratios, (x) => x),
        against: `img/s vs wasm ${(wasmS * 1000).toFixed(0)} ms${
          segments > 1 ? ` (${segments} recomputed segments)` : ""
        } in the same run`,
      };
      rows.push(row);
      if (plain.length) {
        const p = mid(plain, (x) => x), withDnnl = mid(pairs, (q) => q.ort.seconds).ort.seconds;
        rows.push({
          section: "ort",
          name: `train step ${name}: oneDNN convs vs onnxruntime's`,
          ms: withDnnl * 1000,
          speedup: p / withDnnl,
          against: `img/s vs onnxruntime's convs ${(p * 1000).toFixed(0)} ms (SSD_ONEDNN=0) in the same run`,
        });
      }
      if (m.peer && peers.every((t) => t !== null)) {
        // Interleaved: each round's ratio against the torchvision step timed right after ours.
        const r = pairs.map((p, i) => (m.batch / p.ort.seconds) / (4 / peers[i]!));
        const t = mid(peers as number[], (x) => x);
        rows.push({
          section: "ort",
          name: `train step ${name}: onnxruntime kernels vs torchvision`,
          ms: ort.seconds * 1000,
          speedup: mid(r, (x) => x),
          against: `img/s vs torchvision ${m.peer} ${t.toFixed(2)} s/step at batch 4 (the median of ` +
            `${m.config.includes("vgg") ? 3 : steps} steps after a warm-up), timed right after ours in ` +
            `each of ${rounds} round${rounds > 1 ? "s" : ""}${
              rounds > 1 ? ` (ratios ${Math.min(...r).toFixed(2)}-${Math.max(...r).toFixed(2)})` : ""
            } (torch ${torch.versions ?? "?"})`,
        });
      } else if (m.peer) {
        const t = torch[m.peer].train;
        rows.push({
          section: "ort",
          name: `train step ${name}: onnxruntime kernels vs torchvision`,
          ms: ort.seconds * 1000,
          speedup: (m.batch / ort.seconds) / (4 / t),
          against: `img/s vs torchvision ${m.peer} ${t.toFixed(2)} s/step at batch 4 (${torch.label})`,
        });
      }
    } catch (e) {
      rows.push({
        section: "ort",
        name: `train step ${name}`,
        ms: null,
        note: `failed: ${(e as Error).message.slice(0, 120)}`,
      });
    }
  }
  return rows;
}

/**
 * Losses of the first 10 demo steps from the same seed: onnxruntime against wasm, and, as the yardstick of
 * float rounding, wasm against itself with every update scaled by 1 - 1e-6 (`train.loss_scale`). Early training
 * at lr 0.05 amplifies any rounding difference by ~3x a step, so the yardstick shows how far two exact
 * implementations that sum in a different order drift apart. In lockstep (`checkBackend`), each wasm step is
 * rerun on onnxruntime from the same weights and batch: that compares the backends without the amplification.
 */
export async function trajectoryRows(): Promise<BenchRow[]> {
  const { writeSynthDataset, synthSpec } = await import("../lib/synth.ts");
  const { loadConfig } = await import("../lib/config.ts");
  const { checkSummary, train } = await import("../lib/train.ts");
  const dir = await Deno.makeTempDir({ prefix: "ort-trajectory-" });
  const synth = loadConfig<import("../lib/synth.ts").SynthConfig>("configs/synth.yaml", synthSpec, {
    image_size: "128",
    "splits.train": "160",
    "splits.val": "8",
  });
  await writeSynthDataset(dir, synth, { seed: 3, quiet: true });
  const run = async (overrides: Record<string, string>, checkBackend?: string) => {
    const cfg = loadSsdConfig("configs/demo.yaml", {
      "data.train.format": "coco",
      "data.train.path": `${dir}/annotations/instances_train.json`,
      "data.train.images": `${dir}/images/train`,
      "data.val.path": `${dir}/annotations/instances_val.json`,
      "data.val.images": `${dir}/images/val`,
      "train.replicas": "1",
      ...overrides,
    });
    resetOrtStats();
    const r = await train(cfg, { outDir: await Deno.makeTempDir({ dir }), quiet: true, maxSteps: 10, checkBackend });
    const runs = ortStats().runs;
    if ((cfg.backend === "onnxruntime" || checkBackend === "onnxruntime") !== (runs > 0)) {
      throw new Error(`${cfg.backend} run made ${runs} onnxruntime calls`);
    }
    // The median step's gradient difference beside the worst: a step where rounding flips a ReLU (or a mined
    // negative) stands out by two orders of magnitude, with either loss.
    const diffs = r.losses.map((l) => l.check_grad_diff).filter((d) => d !== undefined).sort((a, b) => a! - b!);
    const median = diffs.length ? diffs[diffs.length >> 1]! : NaN;
    return { losses: r.losses.map((l) => l.loss), check: checkSummary(r.losses), median };
  };
  const rel = (a: number[], b: number[]) => Math.max(...a.map((v, i) => Math.abs(v - b[i]) / Math.abs(v)));
  const firstOver = (a: number[], b: number[]) => a.findIndex((v, i) => Math.abs(v - b[i]) / Math.abs(v) > 1e-3) + 1;
  const rows: BenchRow[] = [];
  try {
    for (const kind of ["softmax_hnm", "focal"]) {
      const { losses: wasm, check, median } = await run({ backend: "wasm", "loss.kind": kind }, "onnxruntime");
      const nudged = (await run({ backend: "wasm", "loss.kind": kind, "train.loss_scale": "1.000001" })).losses;
      const ort = (await run({ backend: "onnxruntime", "loss.kind": kind })).losses;
      const ort2 = (await run({ backend: "onnxruntime", "loss.kind": kind })).losses;
      const describe = (a: number[], b: number[]) => {
        const k = firstOver(a, b);
        return `max rel. diff ${rel(a, b).toExponential(1)}${k ? `, over 1e-3 from step ${k}` : ""}`;
      };
      rows.push({
        section: "ort",
        name: `demo losses, 10 steps from one seed (${kind}): onnxruntime vs wasm`,
        ms: null,
        untimed: true,
        note: `${describe(wasm, ort)}; wasm vs wasm with updates x (1 - 1e-6): ${describe(wasm, nudged)}; ` +
          `onnxruntime run twice: ${describe(ort, ort2)}`,
      });
      rows.push({
        section: "ort",
        name: `demo, 10 steps in lockstep (${kind}): each step on onnxruntime from wasm's weights and batch`,
        ms: null,
        untimed: true,
        note: `worst step: loss ${check!.loss.toExponential(1)} relative, gradients ${
          check!.grads.toExponential(1)
        } (|g - g'| / |g|); median step: gradients ${median.toExponential(1)}`,
      });
    }
  } finally {
    await setBackend("wasm");
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}

/** The onnxruntime section of `deno task bench`. Leaves the onnxruntime kernels registered as they were. */
/**
 * SSD300-MobileNetV2's step at batch 4 with oneDNN's depthwise convs and batch-norm gradient, against the same
 * step with either back on the SIMD kernels (and XNNPACK): fresh processes in interleaved rounds, as the other
 * step rows. Per-kernel timings leave out what a step shares: between oneDNN's calls its OpenMP threads spin,
 * and a SIMD kernel that runs then competes with them for the two cores. (Switching the options back and forth
 * within one process hid the difference: every variant ran at the slow speed there.)
 */
function mobileNetKernelRows(o: { quick?: boolean }): BenchRow[] {
  return variantRows(
    "configs/ssd300_mobilenetv2.yaml",
    "train step ssd300_mobilenetv2, batch 4: oneDNN's depthwise convs, batch norm native on its threads",
    [
      { what: "the backward pass on tfjs's tape", options: {}, tape: true },
      { what: "depthwise convs on the SIMD kernels and XNNPACK", options: { onednnDepthwise: false } },
      { what: "batch norm on the SIMD kernels", options: { onednnBatchNorm: false } },
      {
        what: "no native code (the batch-norm gradient on oneDNN, its forward on the SIMD kernels)",
        options: { nativeBatchNorm: false },
      },
    ],
    { steps: o.quick ? 2 : 9, rounds: o.quick ? 1 : 3 },
  );
}

/**
 * SSD300-VGG16's step at batch 4 with oneDNN's Winograd convs against its direct ones (dnnl.ts's
 * `winogradFits`), in fresh processes over interleaved rounds.
 */
function vggWinogradRows(o: { quick?: boolean }): BenchRow[] {
  return variantRows(
    "configs/ssd300_vgg16.yaml",
    "train step ssd300_vgg16, batch 4: oneDNN's Winograd convs",
    [{ what: "its direct convs (SSD_WINOGRAD=0)", options: { winograd: false } }],
    { steps: o.quick ? 1 : 3, rounds: o.quick ? 1 : 3 },
  );
}

/**
 * One row per variant: the config's onnxruntime step at batch 4 with the default options against the step with
 * the variant's, each in a fresh process, in interleaved rounds (order alternating).
 */
function variantRows(
  config: string,
  name: string,
  others: { what: string; options: OrtJob["ortOptions"]; tape?: boolean }[],
  o: { steps: number; rounds: number },
): BenchRow[] {
  const job = (ortOptions: OrtJob["ortOptions"], tape?: boolean): OrtJob => ({
    config,
    backend: "onnxruntime",
    batch: 4,
    steps: o.steps,
    segments: 1,
    ortOptions,
    tape,
  });
  const variants: typeof others = [{ what: "", options: {} }, ...others];
  const rounds = o.rounds;
  const times: number[][] = variants.map(() => []);
  try {
    for (let r = 0; r < rounds; r++) {
      const order = variants.map((_, i) => i);
      if (r % 2 === 1) order.reverse();
      for (const i of order) times[i].push(ortStepInChild(job(variants[i].options, variants[i].tape)).seconds);
    }
  } catch (e) {
    return [{ section: "ort", name, ms: null, note: `failed: ${(e as Error).message.slice(0, 120)}` }];
  }
  const med = (xs: number[]) => xs.slice().sort((a, b) => a - b)[xs.length >> 1];
  return variants.slice(1).map((_, k) => {
    const i = k + 1, ratios = times[i].map((t, r) => t / times[0][r]);
    return {
      section: "ort",
      name: `${name} vs ${variants[i].what}`,
      ms: med(times[0]) * 1000,
      speedup: med(ratios),
      against: `vs ${(med(times[i]) * 1000).toFixed(0)} ms, ${rounds} interleaved round${rounds > 1 ? "s" : ""}` +
        (rounds > 1 ? ` (ratios ${Math.min(...ratios).toFixed(2)}-${Math.max(...ratios).toFixed(2)})` : ""),
    };
  });
}

export async function benchOrt(o: { quick?: boolean } = {}): Promise<BenchRow[]> {
  await setBackend("wasm");
  const wasActive = (await import("../lib/engine/ort_kernels.ts")).ortKernelsActive();
  const peak = await cpuPeak(o);
  registerOrtKernels({ minMacs: 0, autoSelect: false });
  const rows: BenchRow[] = [peakRow("ort", peak)];
  try {
    const reps = o.quick ? 1 : 3;
    const shapes: ConvShape[] = [{ n: 4, hw: 75, ci: 32, co: 64 }, { n: 4, hw: 75, ci: 256, co: 256 }];
    if (!o.quick) shapes.push({ n: 4, hw: 38, ci: 512, co: 512 }, { n: 4, hw: 150, ci: 128, co: 128 });
    for (const s of shapes) rows.push(...await convRows(s, reps, ["conv", "im2col", "taps", "shifted"], peak));
    rows.push(...trainRows(o));
    if (dnnlAvailable()) rows.push(...mobileNetKernelRows(o), ...vggWinogradRows(o));
    rows.push(...await trajectoryRows());
  } finally {
    if (!wasActive) unregisterOrtKernels();
  }
  return rows;
}

if (import.meta.main) {
  if (Deno.args[0] === "--step") {
    // Child mode: --step JOB -> one JSON line.
    try {
      console.log(JSON.stringify(await ortStepTiming(JSON.parse(Deno.args[1]))));
    } catch (e) {
      console.log(JSON.stringify({ error: (e as Error).message }));
    }
  } else {
    const rows = await benchOrt({ quick: Deno.args.includes("--quick") });
    console.log(formatTable(rows));
  }
}
