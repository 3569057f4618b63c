/**
 * One SSD training step at batch 4 for every model config, on the wasm
 * backend, next to torchvision's step time (ssd300_vgg16 for VGG16,
 * ssdlite320 for MobileNetV2).
 */
import * as tf from "@tensorflow/tfjs-core";
import { spawnSync } from "node:child_process";
import { explainOutOfMemory, setBackend } from "../lib/backend.ts";
import { initParams, runGraph } from "../lib/graph.ts";
import { ssdLoss } from "../lib/loss.ts";
import { createMomentumState, momentumStep } from "../lib/optimizer.ts";
import { createRng } from "../lib/rng.ts";
import { anchorsOf, buildModel, loadSsdConfig } from "../lib/ssd_config.ts";
import { torchFigures } from "./peers.ts";
import type { BenchRow } from "./report.ts";

const MODELS: { config: string; peer?: "ssd300_vgg16" | "ssdlite320"; batch: number }[] = [
  { config: "configs/demo.yaml", batch: 4 },
  { config: "configs/ssd300_mobilenetv2.yaml", peer: "ssdlite320", batch: 4 },
  { config: "configs/ssd300_vgg16.yaml", peer: "ssd300_vgg16", batch: 4 },
  { config: "configs/ssd_mobilenetv1_fpn.yaml", batch: 4 },
  { config: "configs/ssd_resnet50_fpn.yaml", batch: 4 },
];

function sizeOverrides(configFile: string, size: number): Record<string, string> {
  const base = loadSsdConfig(configFile);
  return {
    "model.input_size": String(size),
    "anchors.img_shape": `[${size}, ${size}]`,
    "anchors.feature_size": JSON.stringify((base.anchors.steps ?? []).map((st) => size / st)),
    "anchors.num_boxes": "null",
  };
}

/** Seconds per training step (forward, loss, backward, Momentum) of one config at `batch`. */
export async function trainStepSeconds(
  configFile: string,
  batch: number,
  steps: number,
  size?: number,
): Promise<number> {
  // A smaller input for the grid-anchor (FPN) models: feature sizes follow from the steps.
  const cfg = loadSsdConfig(configFile, size ? sizeOverrides(configFile, size) : {});
  await setBackend("wasm");
  const anchors = anchorsOf(cfg);
  const graph = buildModel(cfg, anchors);
  const params = initParams(graph, createRng(1), { scheme: cfg.model.init, sigma: cfg.model.init_sigma });
  const state = createMomentumState(params);
  const s = cfg.model.input_size, a = anchors.count;
  const x = tf.randomNormal([batch, s, s, 3], 0, 1, "float32", 1) as tf.Tensor4D;
  const locT = tf.randomNormal([batch, a, 4], 0, 1, "float32", 2) as tf.Tensor3D;
  const labels = tf.tensor2d(Int32Array.from({ length: batch * a }, (_, i) => (i % 97 === 0 ? 1 + (i % 3) : 0)), [
    batch,
    a,
  ], "int32");
  const vars = [...params.values()].filter((v) => v.trainable);
  const step = async () => {
    const { value, grads } = tf.variableGrads(() => {
      const o = runGraph(graph, params, x, { training: true });
      return ssdLoss(o.loc as tf.Tensor3D, o.cls as tf.Tensor3D, locT, labels as tf.Tensor2D, cfg.loss).total;
    }, vars);
    momentumStep(params, grads, state, 0.001, { momentum: 0.9, weightDecay: 0 });
    await value.data();
    tf.dispose([value, ...Object.values(grads)]);
  };
  try {
    await step(); // warmup: XNNPACK operator setup
    const t0 = performance.now();
    for (let i = 0; i < steps; i++) await step();
    return (performance.now() - t0) / 1000 / steps;
  } catch (e) {
    throw explainOutOfMemory(e, { batchSize: batch, what: `${configFile} training` });
  } finally {
    tf.dispose([x, locT, labels, ...params.values(), ...state.values()]);
  }
}

/** Runs {@linkcode trainStepSeconds} in a child process (an out-of-memory abort cannot take the bench down). */
function stepInChild(
  config: string,
  batch: number,
  steps: number,
  size: number | null,
): { seconds: number } | { error: string } {
  const args = [config, String(batch), String(steps), ...(size ? [String(size)] : [])];
  const r = spawnSync(Deno.execPath(), ["run", "-A", import.meta.filename!, ...args], {
    encoding: "utf8",
    env: { ...Deno.env.toObject(), NO_COLOR: "1" },
  });
  const line = (r.stdout ?? "").trim().split("\n").at(-1) ?? "";
  try {
    return JSON.parse(line);
  } catch {
    return {
      error: (r.stderr || line || `exit ${r.status}`).trim().split("\n").filter((l) => !/^\s+at /.test(l)).at(-1)!,
    };
  }
}

/** The train-step section of `deno task bench`. */
export function benchTrain(o: { quick?: boolean } = {}): Promise<BenchRow[]> {
  const torch = torchFigures(o);
  const rows: BenchRow[] = [];
  for (const m of MODELS) {
    const name = m.config.replace(/^configs\/|\.yaml$/g, "");
    // The 640 px FPN models are slow on one wasm thread: one timed step keeps the run bounded.
    const big = name.includes("fpn") || name.includes("vgg");
    if (o.quick && big) {
      rows.push({ section: "train", name: `${name}, batch ${m.batch}`, ms: null, note: "skipped with --quick" });
      continue;
    }
    // Past the wasm heap the module aborts and stays broken, so each attempt runs in its own process;
    // on failure the batch is halved and the note says why.
    // Past batch 1 the 640 px FPN models still exceed the heap: then the input shrinks (their anchors follow).
    let batch = m.batch, sec = NaN, note = "", size: number | null = null;
    for (;;) {
      const r = stepInChild(m.config, batch, big ? 1 : o.quick ? 2 : 3, size);
      if ("seconds" in r) {
        sec = r.seconds;
        break;
      }
      note += `${size ? `${size} px, ` : ""}batch ${batch}: ${
        /heap/.test(r.error) ? "out of heap" : r.error.slice(0, 80)
      }; `;
      if (batch > 1) batch = Math.floor(batch / 2);
      else if (name.includes("fpn") && (size ?? 640) > 256) size = (size ?? 640) - 128;
      else break;
    }
    try {
      if (!Number.isFinite(sec)) throw new Error(note);
      const row: BenchRow = {
        section: "train",
        name: `${name}, batch ${batch}${size ? `, ${size} px input` : ""} (wasm)`,
        ms: sec * 1000,
        note: `${note}${(batch / sec).toFixed(2)} img/s`,
      };
      if (m.peer) {
        const t = torch[m.peer].train;
        row.speedup = (batch / sec) / (4 / t); // images/s ratio (torchvision at batch 4)
        row.against = `img/s vs torchvision ${m.peer} ${t.toFixed(2)} s/step at batch 4 (${torch.source})`;
      }
      rows.push(row);
    } catch (e) {
      rows.push({
        section: "train",
        name: `${name}, batch ${m.batch}`,
        ms: null,
        note: `failed: ${(e as Error).message.slice(0, 120)}`,
      });
    }
  }
  return Promise.resolve(rows);
}

if (import.meta.main) {
  // Child mode: CONFIG BATCH STEPS -> one JSON line.
  const [config, batch, steps, size] = Deno.args;
  try {
    const seconds = await trainStepSeconds(config, Number(batch), Number(steps), size ? Number(size) : undefined);
    console.log(JSON.stringify({ seconds }));
  } catch (e) {
    console.log(JSON.stringify({ error: (e as Error).message }));
  }
}

/** The demo's batch-16 step on one thread against the same batch split with a gradient worker (both cores). */
export async function benchReplicas(o: { quick?: boolean } = {}): Promise<BenchRow[]> {
  const { gradStep, trainableParams } = await import("../lib/grad_step.ts");
  const { GradReplica, splitBatch } = await import("../lib/replicas.ts");
  const cfg = loadSsdConfig("configs/demo.yaml");
  await setBackend("wasm");
  const anchors = anchorsOf(cfg);
  const graph = buildModel(cfg, anchors);
  const params = initParams(graph, createRng(1), { scheme: cfg.model.init });
  const pairs = trainableParams(params, []);
  const vars = pairs.map(([, v]) => v);
  const b = 16, s = cfg.model.input_size, a = anchors.count;
  const rng = createRng(2);
  const batch = {
    images: Float32Array.from({ length: b * s * s * 3 }, () => rng() - 0.5),
    loc: new Float32Array(b * a * 4),
    labels: Int32Array.from({ length: b * a }, (_, i) => (i % 97 === 0 ? 1 : 0)),
    size: b,
  };
  const opts = { inputSize: s, numAnchors: a, loss: cfg.loss };
  const single = async () => {
    const r = gradStep(graph, params, vars, batch, opts);
    await r.loss.data();
    tf.dispose([r.loss, r.loc, r.cls, ...Object.values(r.grads)]);
    for (const u of r.bn) tf.dispose([u.mean, u.variance]);
  };
  const worker = await GradReplica.start(cfg);
  const normalizer = 100;
  const double = async () => {
    const [p0, p1] = splitBatch(batch, 2, s, a);
    const values: Record<string, Float32Array> = {};
    for (const [name, v] of pairs) values[name] = await v.data() as Float32Array;
    const remote = worker.compute(values, p1, normalizer);
    const r = gradStep(graph, params, vars, p0, { ...opts, normalizer });
    await Promise.all([remote, r.loss.data()]);
    tf.dispose([r.loss, r.loc, r.cls, ...Object.values(r.grads)]);
    for (const u of r.bn) tf.dispose([u.mean, u.variance]);
  };
  const reps = o.quick ? 3 : 6;
  const time = async (f: () => Promise<void>) => {
    await f();
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) await f();
    return (performance.now() - t0) / reps;
  };
  const t1 = await time(single), t2 = await time(double);
  worker.close();
  tf.dispose([...params.values()]);
  return [
    {
      section: "train",
      name: "demo step, batch 16, one replica (this thread)",
      ms: t1,
      note: `${(b / t1 * 1000).toFixed(1)} img/s`,
    },
    {
      section: "train",
      name: "demo step, batch 16, two replicas (this thread + a gradient worker)",
      ms: t2,
      speedup: t1 / t2,
      against: "vs one replica",
      note: `${(b / t2 * 1000).toFixed(1)} img/s`,
    },
  ];
}
