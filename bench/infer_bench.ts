/**
 * Inference speed of exported models on onnxruntime-node, per model config:
 * network-only latency (session.run on random input) at batch 1 and 8, the
 * same network on tfjs wasm for a ratio, end-to-end images/s of `inferImages`
 * over a folder (decode, preprocess, network, post-processing, drawing), and a
 * comparison of session options. Torchvision figures are the ones recorded on
 * this machine (full model call, batch 1, random weights), not re-measured.
 *
 * Run alone: `deno run -A bench/infer_bench.ts [--quick]`.
 *
 * @module
 */
import { torchFigures } from "./peers.ts";
import * as fs from "node:fs";
import * as tf from "@tensorflow/tfjs-core";
import * as ort from "onnxruntime-node";
import { setBackend } from "../lib/engine/mod.ts";
import { predict } from "../lib/evaluate.ts";
import { type Graph, initParams } from "../lib/graph.ts";
import { inferImages } from "../lib/infer.ts";
import { encodeOnnx, exportModel, graphToOnnx, paramValuesOf } from "../lib/onnx_export.ts";
import { loadOnnxModel } from "../lib/onnx_infer.ts";
import { createRng } from "../lib/rng.ts";
import { anchorsOf, buildModel, loadSsdConfig, scaleFactorsOf, type SsdConfig } from "../lib/ssd_config.ts";
import { loadConfig } from "../lib/config.ts";
import { makeScene, renderScene, type SynthConfig, synthSpec } from "../lib/synth.ts";
import { type BenchRow, formatTable, timeMedian } from "./report.ts";

/** Torchvision full-call latencies recorded on this machine (ms per image, batch 1, CPU). */
export const RECORDED_TORCHVISION_MS = { ssd300_vgg16: 440, ssdlite320_mobilenet_v3_large: 77 } as const;

/** The recorded peer each of our configs is set against. */
const PEER: Record<string, { name: keyof typeof RECORDED_TORCHVISION_MS; note: string }> = {
  ssd300_vgg16: { name: "ssd300_vgg16", note: "same architecture" },
  ssd300_mobilenetv2: { name: "ssdlite320_mobilenet_v3_large", note: "closest mobile peer, other backbone" },
};

/** Options of {@linkcode benchInfer}. */
export interface InferBenchOptions {
  /** Fewer repetitions, no batch 8 or end-to-end runs for the 640 px models: under two minutes. */
  quick?: boolean;
  /** Config files to measure (default: demo, VGG16, MobileNetV2 and both FPNs). */
  configs?: string[];
  /** Images in the end-to-end folder (default 32, quick 16). */
  images?: number;
}

const DEFAULT_CONFIGS = [
  "configs/demo.yaml",
  "configs/ssd300_mobilenetv2.yaml",
  "configs/ssd300_vgg16.yaml",
  "configs/ssd_mobilenetv1_fpn.yaml",
  "configs/ssd_resnet50_fpn.yaml",
];

/**
 * Convs whose output reaches the `cls` head output through flattening and concatenation only
 * (the class predictors).
 */
function classPredictors(graph: Graph): string[] {
  const byId = new Map(graph.nodes.map((n) => [n.id, n]));
  const out: string[] = [];
  const walk = (id: number) => {
    const n = byId.get(id)!;
    if (n.op === "concat_anchors") n.inputs.forEach(walk);
    else if (n.op === "flatten_head") walk(n.input);
    else if (n.op === "conv") out.push(n.shareWith ?? n.name);
  };
  walk(graph.outputs.cls);
  return [...new Set(out)];
}

/**
 * Random weights whose class predictors start at RetinaNet's prior (bias -log((1 - p) / p), p = 0.01,
 * small weights), so a random model detects a handful of boxes per image like a trained one,
 * instead of thousands that would turn the end-to-end figure into a benchmark of NMS and drawing.
 */
function randomModel(cfg: SsdConfig): { graph: Graph; bytes: Uint8Array; params: ReturnType<typeof initParams> } {
  const graph = buildModel(cfg, anchorsOf(cfg));
  const params = initParams(graph, createRng(1));
  const scale = 0.4, prior = -4.6;
  for (const name of classPredictors(graph)) {
    const w = params.get(`${name}.weight`)!, b = params.get(`${name}.bias`);
    w.assign(tf.tidy(() => tf.mul(w, scale)));
    b?.assign(tf.fill(b.shape, prior));
  }
  const bytes = encodeOnnx(graphToOnnx(graph, paramValuesOf(params), { scoreActivation: cfg.model.score_activation }));
  return { graph, bytes, params };
}

async function session(bytes: Uint8Array, o: ort.InferenceSession.SessionOptions): Promise<ort.InferenceSession> {
  return await ort.InferenceSession.create(bytes, o);
}

async function runMs(s: ort.InferenceSession, size: number, batch: number, reps: number): Promise<number> {
  const x = new ort.Tensor(
    "float32",
    Float32Array.from({ length: batch * size * size * 3 }, () => Math.random() - 0.5),
    [
      batch,
      size,
      size,
      3,
    ],
  );
  return await timeMedian(
    async () => {
      await s.run({ images: x });
    },
    reps,
    1,
  );
}

/** Session options compared on one model at batch 1. */
const VARIANTS: { name: string; o: ort.InferenceSession.SessionOptions }[] = [
  {
    name: "all, 2 threads, sequential",
    o: { graphOptimizationLevel: "all", intraOpNumThreads: 2, executionMode: "sequential" },
  },
  {
    name: "extended, 2 threads, sequential",
    o: { graphOptimizationLevel: "extended", intraOpNumThreads: 2, executionMode: "sequential" },
  },
  {
    name: "all, 1 thread, sequential",
    o: { graphOptimizationLevel: "all", intraOpNumThreads: 1, executionMode: "sequential" },
  },
  {
    name: "all, 2 threads, parallel",
    o: { graphOptimizationLevel: "all", intraOpNumThreads: 2, interOpNumThreads: 2, executionMode: "parallel" },
  },
  {
    name: "basic, 2 threads, sequential",
    o: { graphOptimizationLevel: "basic", intraOpNumThreads: 2, executionMode: "sequential" },
  },
];

/**
 * Measures every config; returns one row per figure (section "infer").
 */
export async function benchInfer(opts: InferBenchOptions = {}): Promise<BenchRow[]> {
  const quick = opts.quick ?? false;
  const reps = quick ? 3 : 5;
  // torchvision's full call (transform + network + post-processing), measured here when PyTorch is installed.
  const torch = torchFigures({ quick });
  // The recorded figures are the same as peers.ts's (RECORDED_TORCH); either way the label says which.
  const peerMs = (name: keyof typeof RECORDED_TORCHVISION_MS) =>
    torch.source === "measured"
      ? (name === "ssd300_vgg16" ? torch.ssd300_vgg16.infer : torch.ssdlite320.infer) * 1000
      : RECORDED_TORCHVISION_MS[name];
  const peerLabel = (name: string) => `vs torchvision ${name} (${torch.label})`;
  await setBackend("wasm");
  const rows: BenchRow[] = [];
  let best = VARIANTS[0];
  // Session options first, on the MobileNetV2 model at batch 1; the fastest is used for every model below.
  const optCfg = loadSsdConfig(
    fs.existsSync("configs/ssd300_mobilenetv2.yaml") ? "configs/ssd300_mobilenetv2.yaml" : "configs/demo.yaml",
  );
  const { bytes, params } = randomModel(optCfg);
  for (const v of params.values()) v.dispose();
  let base = 0, bestMs = Infinity;
  for (const [i, v] of VARIANTS.entries()) {
    const sess = await session(bytes, v.o);
    const ms = await runMs(sess, optCfg.model.input_size, 1, reps + 2);
    await sess.release();
    if (i === 0) base = ms;
    if (ms < bestMs) bestMs = ms, best = v;
    rows.push({
      section: "infer options",
      name: `${optCfg.model.arch} b1: ${v.name}`,
      ms,
      ...(i === 0 ? {} : { against: "vs all, 2 threads, sequential", speedup: base / ms }),
    });
  }
  rows.push({ section: "infer options", name: `used below: ${best.name}`, ms: bestMs, note: "fastest of the above" });

  const tmp = Deno.makeTempDirSync({ prefix: "infer_bench_" });
  // The end-to-end folder: synthetic scenes, 320 px JPEGs.
  const nImages = opts.images ?? (quick ? 16 : 32);
  const rng = createRng(3);
  // The synthetic dataset's scenes (configs/synth.yaml) at 320 px.
  const sceneConfig = { ...loadConfig<SynthConfig>("configs/synth.yaml", synthSpec), image_size: 320 };
  fs.mkdirSync(`${tmp}/images`);
  for (let i = 0; i < nImages; i++) {
    const scene = makeScene(rng, sceneConfig);
    fs.writeFileSync(`${tmp}/images/${String(i).padStart(3, "0")}.jpg`, await renderScene(scene));
  }
  // The 640 px models run end to end on the first four only.
  fs.mkdirSync(`${tmp}/few`);
  for (const f of fs.readdirSync(`${tmp}/images`).sort().slice(0, 4)) {
    fs.copyFileSync(`${tmp}/images/${f}`, `${tmp}/few/${f}`);
  }

  for (const file of opts.configs ?? DEFAULT_CONFIGS) {
    if (!fs.existsSync(file)) {
      rows.push({ section: "infer", name: file, ms: null, note: "config missing" });
      continue;
    }
    const cfg = loadSsdConfig(file);
    const arch = cfg.model.arch, s = cfg.model.input_size;
    const big = s >= 512;
    const label = `${arch}@${s}`;
    const { graph, bytes, params } = randomModel(cfg);
    const sess = await session(bytes, best.o);
    const b1 = await runMs(sess, s, 1, big && quick ? 2 : reps);
    const peer = PEER[arch];
    rows.push({
      section: "infer",
      name: `${label} ORT network b1`,
      ms: b1,
      ...(peer ? { against: peerLabel(peer.name), speedup: peerMs(peer.name) / b1 } : {}),
      note: `${(bytes.length / 2 ** 20).toFixed(0)} MiB onnx${peer ? `; peer: ${peer.note}` : ""}`,
    });
    if (!(big && quick)) {
      const b8 = await runMs(sess, s, 8, big ? 1 : reps);
      rows.push({
        section: "infer",
        name: `${label} ORT network b8`,
        ms: b8 / 8,
        note: `per image (batch of 8: ${(b8 / 1000).toFixed(2)} s); ${(8000 / b8).toFixed(1)} img/s`,
      });
    }
    await sess.release();
    // The same network on tfjs wasm, for the ratio (skipped for the 640 px models when quick).
    if (!(big && quick)) {
      const x = tf.randomUniform([1, s, s, 3], -0.5, 0.5) as tf.Tensor4D;
      const tfMs = await timeMedian(
        async () => {
          const r = predict(graph, params, x, cfg.model.score_activation);
          await r.scores.data();
          tf.dispose([r.loc, r.scores]);
        },
        big ? 1 : Math.min(reps, 3),
        1,
      );
      x.dispose();
      rows.push({
        section: "infer",
        name: `${label} tfjs wasm network b1`,
        ms: tfMs,
        against: "ORT vs tfjs wasm",
        speedup: tfMs / b1,
      });
    }
    // End to end over the folder: decode, preprocess, network, post-processing, drawing.
    if (!(big && quick)) {
      const dir = `${tmp}/${arch}`;
      const anchors = anchorsOf(cfg);
      const exported = await exportModel(graph, paramValuesOf(params), cfg, {
        classNames: cfg.model.class_names ?? Array.from({ length: cfg.model.num_classes }, (_, i) => `c${i}`),
        anchors,
        scaleFactors: scaleFactorsOf(cfg),
      }, { out: `${dir}/export` });
      const model = await loadOnnxModel(exported.model, {
        threads: best.o.intraOpNumThreads,
        optimization: best.o.graphOptimizationLevel,
        executionMode: best.o.executionMode,
      });
      const n = big ? Math.min(nImages, 4) : nImages;
      // Warm-up (first text rendering loads fonts; first runs allocate), then the timed pass.
      if (!big) await inferImages({ model, input: `${tmp}/few`, out: `${dir}/warm`, batchSize: 8, quiet: true });
      const t0 = performance.now();
      const r = await inferImages({
        model,
        input: n < nImages ? `${tmp}/few` : `${tmp}/images`,
        out: `${dir}/out`,
        batchSize: 8,
        quiet: true,
      });
      const ms = (performance.now() - t0) / n;
      const peerRow = peer ? { against: peerLabel(peer.name), speedup: peerMs(peer.name) / ms } : {};
      rows.push({
        section: "infer",
        name: `${label} end-to-end`,
        ms,
        ...peerRow,
        note: `${(1000 / ms).toFixed(1)} img/s over ${n} 320 px JPEGs, batch 8, drawing included; ` +
          `${(r.detections.length / n).toFixed(0)} det/img`,
      });
      await model.session.release();
    }
    for (const v of params.values()) v.dispose();
  }

  fs.rmSync(tmp, { recursive: true, force: true });
  return rows;
}

if (import.meta.main) {
  const quick = Deno.args.includes("--quick");
  const configs = Deno.args.filter((a) => a.endsWith(".yaml"));
  const t0 = performance.now();
  const rows = await benchInfer({ quick, configs: configs.length ? configs : undefined });
  console.log(formatTable(rows));
  console.log(`\n${((performance.now() - t0) / 1000).toFixed(0)} s`);
}
