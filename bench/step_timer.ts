/**
 * The one training-step timer of the benches (train, ort, loader): a model
 * from its config, a synthetic batch, and the median time of forward, loss,
 * backward, the Momentum update and the batch-norm averages, as
 * bench/peers/torch_ssd_bench.py times torchvision's step (which also matches
 * anchors inside the step; the workbench's loader does that before). Each
 * timing runs in a child process ({@linkcode stepInChild}): past the wasm heap
 * the module aborts and stays broken, and a fresh process per backend keeps
 * one run's heap from slowing the next (up to 1.4x measured).
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { spawnSync } from "node:child_process";
import {
  type BackendName,
  explainOutOfMemory,
  type GradInputs,
  gradStep,
  setBackend,
  trainableParams,
} from "../lib/engine/mod.ts";
import { featureSizesOf } from "../lib/default_boxes.ts";
import { applyBnUpdates, initParams } from "../lib/graph.ts";
import { createMomentumState, momentumStep } from "../lib/optimizer.ts";
import { createRng } from "../lib/rng.ts";
import { anchorsOf, buildModel, loadSsdConfig } from "../lib/ssd_config.ts";

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

/** Config overrides for another input side: grid anchors follow from their steps. */
export function sizeOverrides(configFile: string, size: number): Record<string, string> {
  const base = loadSsdConfig(configFile);
  return {
    "model.input_size": String(size),
    "anchors.img_shape": `[${size}, ${size}]`,
    "anchors.feature_size": JSON.stringify(
      featureSizesOf({ ...base.anchors, feature_size: null, img_shape: [size, size] }),
    ),
    "anchors.num_boxes": "null",
  };
}

/** What to time. */
export interface StepJob {
  config: string;
  backend: BackendName;
  batch: number;
  /** Timed steps; their median is reported. */
  steps: number;
  /** Recomputed segments (`train.segments`). */
  segments: number;
  /** Another input side (FPN models, when the configured one does not fit). */
  size?: number;
}

/** A step timing. */
export interface StepTiming {
  /** Median seconds per step. */
  seconds: number;
  /** Seconds of every timed step, in order. */
  times: number[];
  /** The wasm heap after the steps: it only grows, so this is its peak (GiB). */
  heapGb: number | null;
}

/**
 * Times `job.steps` training steps in this process. One untimed warm-up step comes first (XNNPACK operator
 * setup, onnxruntime sessions, heap growth), except when a single step is asked for: the big models' steps
 * take tens of seconds, so theirs is timed cold rather than doubling the bench's longest part.
 * `afterWarmUp` runs between the warm-up and the timed steps (the ort bench resets its counters there).
 */
export async function timeTrainStep(job: StepJob, afterWarmUp?: () => void): Promise<StepTiming> {
  const { step, params, state } = await stepOf(job);
  try {
    if (job.steps > 1) await step();
    afterWarmUp?.();
    const times: number[] = [];
    for (let i = 0; i < job.steps; i++) {
      const t0 = performance.now();
      await step();
      times.push((performance.now() - t0) / 1000);
    }
    const heap = (tf.backend() as unknown as { wasm?: { HEAPU8?: Uint8Array } }).wasm?.HEAPU8?.buffer;
    return {
      seconds: [...times].sort((x, y) => x - y)[Math.floor(job.steps / 2)],
      times,
      heapGb: heap ? heap.byteLength / 2 ** 30 : null,
    };
  } catch (e) {
    throw explainOutOfMemory(e, { batchSize: job.batch, what: `${job.config} training`, segments: job.segments });
  } finally {
    tf.dispose([...params.values(), ...state.values()]);
  }
}

/** The job's model, a synthetic batch and one training step over them (forward, loss, backward, updates). */
async function stepOf(job: StepJob) {
  await setBackend(job.backend);
  const cfg = loadSsdConfig(job.config, {
    ...(job.size ? sizeOverrides(job.config, job.size) : {}),
    "train.segments": String(job.segments),
  });
  const anchors = anchorsOf(cfg);
  const graph = buildModel(cfg, anchors);
  const params = initParams(graph, createRng(1), { scheme: cfg.model.init, sigma: cfg.model.init_sigma });
  const vars = trainableParams(params, []).map(([, v]) => v);
  const state = createMomentumState(params);
  const s = cfg.model.input_size, a = anchors.count;
  const batch = syntheticBatch(job.batch, s, a);
  const opts = { inputSize: s, numAnchors: a, loss: cfg.loss, segments: job.segments };
  const step = async () => {
    const r = gradStep(graph, params, vars, batch, opts);
    momentumStep(params, r.grads, state, 0.001, { momentum: cfg.train.momentum, weightDecay: 5e-4 });
    applyBnUpdates(params, r.bn);
    await r.loss.data();
    tf.dispose([r.loss, r.loc, r.cls, ...Object.values(r.grads)]);
  };
  return { step, params, state };
}

/**
 * Runs `script` (a bench module) with `args` in a fresh Deno process and parses the JSON line it prints
 * last. A child that prints `{ "error": ... }`, crashes or prints nothing throws an Error with the reason
 * (the last non-stack line of its output).
 */
export function jsonFromChild<T>(script: string, args: string[]): T {
  const r = spawnSync(Deno.execPath(), ["run", "-A", script, ...args], {
    encoding: "utf8",
    env: { ...Deno.env.toObject(), NO_COLOR: "1" },
  });
  const line = (r.stdout ?? "").trim().split("\n").at(-1) ?? "";
  let v: T & { error?: string };
  try {
    v = JSON.parse(line);
  } catch {
    const why = (r.stderr || line || `exit ${r.status}`).trim().split("\n").filter((l) => !/^\s+at /.test(l)).at(-1);
    throw new Error(why);
  }
  if (v.error) throw new Error(v.error);
  return v;
}

/** {@linkcode timeTrainStep} in a fresh process (this module's child mode). */
export function stepInChild(job: StepJob): StepTiming {
  return jsonFromChild<StepTiming>(import.meta.filename!, ["--step", JSON.stringify(job)]);
}

if (import.meta.main && Deno.args[0] === "--step") {
  try {
    console.log(JSON.stringify(await timeTrainStep(JSON.parse(Deno.args[1]))));
  } catch (e) {
    console.log(JSON.stringify({ error: (e as Error).message }));
  }
}
