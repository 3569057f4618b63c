/**
 * One SSD training step at batch 4 for every model config, on the wasm
 * backend, next to torchvision's step time (ssd300_vgg16 for VGG16,
 * ssdlite320 for MobileNetV2).
 */
import * as tf from "@tensorflow/tfjs-core";
import { spawnSync } from "node:child_process";
import { explainOutOfMemory, setBackend } from "../lib/engine/backend.ts";
import { type GradInputs, gradStep } from "../lib/engine/grad_step.ts";
import { applyBnUpdates, initParams } from "../lib/graph.ts";
import { createMomentumState, momentumStep } from "../lib/optimizer.ts";
import { createRng } from "../lib/rng.ts";
import { anchorsOf, buildModel, kernelThreads, loadSsdConfig } from "../lib/ssd_config.ts";
import { torchFigures } from "./peers.ts";
import type { BenchRow } from "./report.ts";

/**
 * `segments` overrides the config's gradient checkpointing where batch 4 needs more of it than the config's
 * own batch size does. Measured wasm heap peaks: MobileNetV1-FPN batch 4 at 32 segments 3.9 GB; ResNet50-FPN
 * batch 2 at 16 segments 3.4 GB already, so it runs at batch 2 rather than fail at 4 first.
 */
const MODELS: { config: string; peer?: "ssd300_vgg16" | "ssdlite320"; batch: number; segments?: number }[] = [
  { config: "configs/demo.yaml", batch: 4 },
  { config: "configs/ssd300_mobilenetv2.yaml", peer: "ssdlite320", batch: 4 },
  { config: "configs/ssd300_vgg16.yaml", peer: "ssd300_vgg16", batch: 4 },
  { config: "configs/ssd_mobilenetv1_fpn.yaml", batch: 4, segments: 32 },
  { config: "configs/ssd_resnet50_fpn.yaml", batch: 2 },
];

/**
 * A random batch for timing a training step: images in [-0.5, 0.5), every 97th anchor matched to class 1.
 * `s` is the input side, `a` the anchor count.
 */
export function syntheticBatch(b: number, s: number, a: number): GradInputs {
  const rng = createRng(2);
  return {
    images: Float32Array.from({ length: b * s * s * 3 }, () => rng() - 0.5),
    loc: new Float32Array(b * a * 4),
    labels: Int32Array.from({ length: b * a }, (_, i) => (i % 97 === 0 ? 1 : 0)),
    size: b,
  };
}

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
  overrides: Record<string, string> = {},
): Promise<number> {
  // A smaller input for the grid-anchor (FPN) models: feature sizes follow from the steps.
  const cfg = loadSsdConfig(configFile, { ...(size ? sizeOverrides(configFile, size) : {}), ...overrides });
  await setBackend("wasm");
  const anchors = anchorsOf(cfg);
  const graph = buildModel(cfg, anchors);
  const params = initParams(graph, createRng(1), { scheme: cfg.model.init, sigma: cfg.model.init_sigma });
  const state = createMomentumState(params);
  const s = cfg.model.input_size, a = anchors.count;
  const part = syntheticBatch(batch, s, a);
  const vars = [...params.values()].filter((v) => v.trainable);
  const opts = { inputSize: s, numAnchors: a, loss: cfg.loss, segments: cfg.train.segments };
  const step = async () => {
    const r = gradStep(graph, params, vars, part, opts);
    momentumStep(params, r.grads, state, 0.001, { momentum: 0.9, weightDecay: 0 });
    applyBnUpdates(params, r.bn);
    await r.loss.data();
    tf.dispose([r.loss, r.loc, r.cls, ...Object.values(r.grads)]);
  };
  try {
    // The median of `steps` steps after one warm-up (XNNPACK operator setup, heap growth); a single step
    // (the big models', tens of seconds each) is timed cold, as a warm-up would double the bench's longest part.
    if (steps > 1) await step();
    const times: number[] = [];
    for (let i = 0; i < steps; i++) {
      const t0 = performance.now();
      await step();
      times.push(performance.now() - t0);
    }
    return times.sort((a, b) => a - b)[Math.floor(steps / 2)] / 1000;
  } catch (e) {
    throw explainOutOfMemory(e, { batchSize: batch, what: `${configFile} training` });
  } finally {
    tf.dispose([...params.values(), ...state.values()]);
  }
}

/** Runs {@linkcode trainStepSeconds} in a child process (an out-of-memory abort cannot take the bench down). */
function stepInChild(
  config: string,
  batch: number,
  steps: number,
  size: number | null,
  segments: number,
): { seconds: number; heapGb: number | null } | { error: string } {
  const args = [config, String(batch), String(steps), String(segments), ...(size ? [String(size)] : [])];
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
    // on failure the batch is halved and the note says why. Should even batch 1 not fit, an FPN model's
    // input shrinks (its anchors follow).
    const segments = m.segments ?? loadSsdConfig(m.config).train.segments;
    let batch = m.batch, sec = NaN, note = "", size: number | null = null, heap: number | null = null;
    for (;;) {
      const r = stepInChild(m.config, batch, big ? 1 : o.quick ? 3 : 5, size, segments);
      if ("seconds" in r) {
        sec = r.seconds;
        heap = r.heapGb;
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
        name: `${name}, batch ${batch}${size ? `, ${size} px input` : ""}${
          segments > 1 ? `, ${segments} recomputed segments` : ""
        } (wasm)`,
        ms: sec * 1000,
        note: `${note}${(batch / sec).toFixed(2)} img/s, ${
          big ? "one cold step" : `median of ${o.quick ? 3 : 5} steps`
        }${heap === null ? "" : `, wasm heap peak ${heap.toFixed(1)} GB`}`,
      };
      if (m.peer) {
        const t = torch[m.peer].train;
        row.speedup = (batch / sec) / (4 / t); // images/s ratio (torchvision at batch 4)
        row.against = `img/s vs torchvision ${m.peer} ${t.toFixed(2)} s/step at batch 4 (${torch.label})`;
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
  // Child mode: CONFIG BATCH STEPS SEGMENTS [SIZE] -> one JSON line.
  const [config, batch, steps, segments, size] = Deno.args;
  try {
    const seconds = await trainStepSeconds(config, Number(batch), Number(steps), size ? Number(size) : undefined, {
      "train.segments": segments,
    });
    // The wasm heap only grows, so its size after the steps is their peak.
    const heap = (tf.backend() as unknown as { wasm?: { HEAPU8?: Uint8Array } }).wasm?.HEAPU8?.buffer;
    console.log(JSON.stringify({ seconds, heapGb: heap ? heap.byteLength / 2 ** 30 : null }));
  } catch (e) {
    console.log(JSON.stringify({ error: (e as Error).message }));
  }
}

/** The demo's batch-16 step on one thread against the same batch split with a gradient worker (both cores). */
export async function benchReplicas(o: { quick?: boolean } = {}): Promise<BenchRow[]> {
  const { trainableParams } = await import("../lib/engine/grad_step.ts");
  const { GradReplica, splitBatch } = await import("../lib/engine/replicas.ts");
  const cfg = loadSsdConfig("configs/demo.yaml");
  // One replica gets every core's kernel threads; with two, each gets its share, as `train` sets them.
  await setBackend(cfg.backend, { threads: navigator.hardwareConcurrency });
  const anchors = anchorsOf(cfg);
  const graph = buildModel(cfg, anchors);
  const params = initParams(graph, createRng(1), { scheme: cfg.model.init });
  const pairs = trainableParams(params, []);
  const vars = pairs.map(([, v]) => v);
  const b = 16, s = cfg.model.input_size, a = anchors.count;
  const batch = syntheticBatch(b, s, a);
  const opts = { inputSize: s, numAnchors: a, loss: cfg.loss };
  const single = async () => {
    const r = gradStep(graph, params, vars, batch, opts);
    await r.loss.data();
    tf.dispose([r.loss, r.loc, r.cls, ...Object.values(r.grads)]);
    for (const u of r.bn) tf.dispose([u.mean, u.variance]);
  };
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
  // The single step is timed before the worker exists, so nothing else runs beside it.
  const t1 = await time(single);
  await setBackend(cfg.backend, { threads: kernelThreads(cfg) });
  const worker = await GradReplica.start(cfg);
  const t2 = await time(double);
  worker.close();
  tf.dispose([...params.values()]);
  return [
    {
      section: "train",
      name: `demo step, batch 16, one replica (this thread, ${cfg.backend})`,
      ms: t1,
      note: `${(b / t1 * 1000).toFixed(1)} img/s`,
    },
    {
      section: "train",
      name: `demo step, batch 16, two replicas (this thread + a gradient worker, ${cfg.backend})`,
      ms: t2,
      speedup: t1 / t2,
      against: "vs one replica",
      note: `${(b / t2 * 1000).toFixed(1)} img/s`,
    },
  ];
}
