/**
 * One SSD training step at batch 4 for every model config, on the wasm
 * backend, next to torchvision's step time (ssd300_vgg16 for VGG16,
 * ssdlite320 for MobileNetV2).
 */
import * as tf from "@tensorflow/tfjs-core";
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

/** Seconds per training step (forward, loss, backward, Momentum) of one config at `batch`. */
export async function trainStepSeconds(configFile: string, batch: number, steps: number): Promise<number> {
  const cfg = loadSsdConfig(configFile);
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

/** The train-step section of `deno task bench`. */
export async function benchTrain(o: { quick?: boolean } = {}): Promise<BenchRow[]> {
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
    // Past the wasm heap (4 GiB) the step fails with a clear message; halve the batch and say so.
    let batch = m.batch, sec = NaN, note = "";
    while (batch >= 1) {
      try {
        sec = await trainStepSeconds(m.config, batch, big ? 1 : o.quick ? 2 : 3);
        break;
      } catch (e) {
        note = `batch ${batch}: ${(e as Error).message.split(".")[0]}; `;
        batch = Math.floor(batch / 2);
      }
    }
    try {
      if (!Number.isFinite(sec)) throw new Error(note);
      const row: BenchRow = {
        section: "train",
        name: `${name}, batch ${batch} (wasm)`,
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
  return rows;
}
