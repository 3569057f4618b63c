/**
 * One SSD training step at batch 4 for every model config, on the wasm
 * backend, next to torchvision's step time (ssd300_vgg16 for VGG16,
 * ssdlite320 for MobileNetV2).
 */
import * as tf from "@tensorflow/tfjs-core";
import { gradStep, setBackend } from "../lib/engine/mod.ts";
import { initParams } from "../lib/graph.ts";
import { createRng } from "../lib/rng.ts";
import { anchorsOf, buildModel, kernelThreads, loadSsdConfig } from "../lib/ssd_config.ts";
import { torchFigures } from "./peers.ts";
import { stepInChild, syntheticBatch } from "./step_timer.ts";
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
      const steps = big ? 1 : o.quick ? 3 : 5;
      try {
        const r = stepInChild({ config: m.config, backend: "wasm", batch, steps, segments, size: size ?? undefined });
        sec = r.seconds;
        heap = r.heapGb;
        break;
      } catch (e) {
        const error = (e as Error).message;
        note += `${size ? `${size} px, ` : ""}batch ${batch}: ${
          /heap/.test(error) ? "out of heap" : error.slice(0, 80)
        }; `;
      }
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

/** The demo's batch-16 step on one thread against the same batch split with a gradient worker (both cores). */
export async function benchReplicas(o: { quick?: boolean } = {}): Promise<BenchRow[]> {
  const { GradReplica, splitBatch, trainableParams } = await import("../lib/engine/mod.ts");
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
  const worker = await GradReplica.start(cfg, kernelThreads(cfg));
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
