/**
 * The training stage: the tutorial's loop (Momentum, warmup + cosine
 * learning rate, focal + SmoothL1 loss) over the workbench's loader, with
 * checkpoints, exact resume, evaluation every N epochs, a JSON-lines log and a
 * loss curve. `deno task train` and `deno task demo` both call {@linkcode train}.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import * as fs from "node:fs";
import * as path from "node:path";
import * as readline from "node:readline";
import YAML from "yaml";
import { augmentSample } from "./augment.ts";
import {
  explainOutOfMemory,
  type GradOutputs,
  GradReplica,
  gradStep,
  setBackend,
  splitBatch,
  trainableParams,
} from "./engine/mod.ts";
import { type Checkpoint, loadMomentum, loadParams, readCheckpoint, saveCheckpoint } from "./checkpoint.ts";
import { type Batch, batches, batchesPerEpoch } from "./data_loader.ts";
import { loadSplit } from "./dataset.ts";
import { configFrom } from "./config.ts";
import { ConfigError, InputError } from "./errors.ts";
import { detectRecords, labelToCategoryOf, scoreDetections } from "./evaluate.ts";
import { writeFileAtomic } from "./fs_atomic.ts";
import { applyBnUpdates, type Graph, initParams, type ParamMap } from "./graph.ts";
import { lrAtStep, lrOptionsFromConfig } from "./lr_schedule.ts";
import { matchAndEncode } from "./matcher.ts";
import { createMomentumState, momentumStep } from "./optimizer.ts";
import { Binner, linePlotPng } from "./plot.ts";
import { Progress } from "./progress.ts";
import { createRng } from "./rng.ts";
import {
  anchorsOf,
  buildModel,
  checkConsistency,
  initOverridesOf,
  kernelThreads,
  scaleFactorsOf,
  type SsdConfig,
  ssdConfigSpec,
  storedConfig,
} from "./ssd_config.ts";

/** Options of {@linkcode train}. */
export interface TrainOptions {
  /** Output folder: checkpoints/, train_log.jsonl, loss_curve.png, config.yaml. */
  outDir: string;
  /** Continue the run in `outDir` from its latest checkpoint. */
  resume?: boolean;
  /** Start from these weights; class heads of another class count are re-initialised. */
  init?: string;
  /** Print nothing. */
  quiet?: boolean;
  /** Stop after this many optimiser steps (tests, benchmarks). */
  maxSteps?: number;
  /** Called after every step. */
  onStep?: (log: StepLog) => void;
  /**
   * Also run every step's forward and backward pass on this backend (`wasm` or
   * `onnxruntime`, the other of the pair), from the same weights and batch,
   * and log how far its loss and gradients are from the training backend's
   * (`check_loss`, `check_grad_diff`). Training itself is unchanged; the
   * logged step times include the check. Needs `train.replicas: 1`.
   */
  checkBackend?: string;
  /** Called on a second Ctrl-C while the first waits for the step to end (the train task exits with 130). */
  onSecondInterrupt?: () => void;
}

/** One line of `train_log.jsonl`. */
export interface StepLog {
  epoch: number;
  step: number;
  global_step: number;
  loss: number;
  loc: number;
  cls: number;
  lr: number;
  images_per_s: number;
  time: number;
  /** With {@linkcode TrainOptions.checkBackend}: the loss on that backend. */
  check_loss?: number;
  /** With a check backend: |g - g'| / |g| over all gradients. */
  check_grad_diff?: number;
}

/** Steps kept in {@linkcode TrainResult.losses} from each end of a long run. */
const KEPT_STEPS = 10_000;

/** What a run produced. */
export interface TrainResult {
  outDir: string;
  /** The last checkpoint written. */
  checkpoint: string | null;
  /** The checkpoint with the best eval mAP, when eval ran. */
  best: string | null;
  /**
   * The steps this call trained, as logged; of a run longer than 20k steps, the first and the latest 10k
   * (`train_log.jsonl` has every step).
   */
  losses: StepLog[];
  evals: { epoch: number; stats: number[] }[];
  classNames: string[];
  graph: Graph;
  params: ParamMap;
  interrupted: boolean;
}

/**
 * The worst step of a run with a check backend: the largest relative
 * difference of its loss, and of its gradients. `null` without a check.
 *
 * @example
 * ```ts
 * // r = await train(cfg, { outDir, checkBackend: "onnxruntime" }); checkSummary(r.losses)
 * const step = { epoch: 1, step: 1, global_step: 1, loc: 1, cls: 1, lr: 0.01, images_per_s: 9, time: 0 };
 * const s = checkSummary([{ ...step, loss: 2, check_loss: 2.0002, check_grad_diff: 3e-6 }]);
 * if (Math.abs(s!.loss - 1e-4) > 1e-12 || s!.grads !== 3e-6) throw new Error("checkSummary");
 * ```
 */
export function checkSummary(losses: StepLog[]): { loss: number; grads: number } | null {
  const checked = losses.filter((l) => l.check_loss !== undefined);
  if (checked.length === 0) return null;
  return {
    loss: Math.max(...checked.map((l) => Math.abs(l.check_loss! - l.loss) / Math.abs(l.loss))),
    grads: Math.max(...checked.map((l) => l.check_grad_diff!)),
  };
}

/** The dropout seed of a step: a hash of the run's seed and the global step. */
function dropoutSeed(seed: number, step: number): number {
  let h = Math.imul((seed >>> 0) ^ 0x9e3779b9, 0x85ebca6b) >>> 0;
  h = Math.imul(h ^ (step >>> 0), 0xc2b2ae35) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

/** `OUT/checkpoints/epoch-<N>.ckpt`. */
export function checkpointPath(outDir: string, epoch: number): string {
  return path.join(outDir, "checkpoints", `epoch-${epoch}.ckpt`);
}

/** The newest checkpoint of a run folder (by global step), or null. */
export function latestCheckpoint(outDir: string): string | null {
  const dir = path.join(outDir, "checkpoints");
  if (!fs.existsSync(dir)) return null;
  let best: { file: string; step: number } | null = null;
  for (const f of fs.readdirSync(dir)) {
    if (!f.endsWith(".ckpt") || f === "best.ckpt") continue;
    const file = path.join(dir, f);
    try {
      const step = readCheckpoint(file).header.global_step;
      if (!best || step > best.step) best = { file, step };
    } catch (e) {
      // An unreadable checkpoint (e.g. copied in half) is not a resume point; say so and use the others.
      console.error(`note: skipping unreadable checkpoint ${file}: ${e instanceof Error ? e.message : e}`);
    }
  }
  return best?.file ?? null;
}

/**
 * Config keys a resume may change (a key names itself and everything under it): where data lives, the eval split,
 * how the run executes, and a longer `train.epochs`. Anything else would make the continuation a different run.
 */
export const RESUME_SAFE_KEYS: readonly string[] = [
  "train.epochs",
  "train.eval_every",
  "train.checkpoint_every",
  "train.prefetch",
  "train.segments",
  "backend",
  "threads",
  "data.root",
  "data.val",
];

function flatten(v: unknown, prefix = "", out = new Map<string, string>()): Map<string, string> {
  if (v && typeof v === "object" && !Array.isArray(v)) {
    for (const [k, x] of Object.entries(v)) flatten(x, prefix ? `${prefix}.${k}` : k, out);
  } else out.set(prefix, JSON.stringify(v));
  return out;
}

/**
 * Throws a {@linkcode ConfigError} naming the first key where `given` differs from
 * the `stored` config of the run being resumed, unless {@linkcode RESUME_SAFE_KEYS}
 * allows it (`train.epochs` only grows).
 *
 * @example
 * ```ts
 * import { throws } from "node:assert";
 * const stored = { seed: 1, train: { epochs: 2, lr: 0.05 } };
 * checkResumeChanges(stored as never, { seed: 1, train: { epochs: 8, lr: 0.05 } } as never);
 * throws(() => checkResumeChanges(stored as never, { seed: 1, train: { epochs: 2, lr: 0.1 } } as never), /train\.lr/);
 * throws(() => checkResumeChanges(stored as never, { seed: 1, train: { epochs: 1, lr: 0.05 } } as never), /epochs/);
 * ```
 */
export function checkResumeChanges(stored: SsdConfig, given: SsdConfig, file?: string): void {
  const a = flatten(stored), b = flatten(given);
  for (const key of new Set([...a.keys(), ...b.keys()])) {
    if (a.get(key) === b.get(key)) continue;
    const safe = RESUME_SAFE_KEYS.some((k) => key === k || key.startsWith(k + "."));
    if (safe && key !== "train.epochs") continue;
    if (key === "train.epochs" && given.train.epochs >= stored.train.epochs) continue;
    throw new ConfigError(
      `the run being resumed has ${a.get(key) ?? "no value"}, not ${b.get(key) ?? "no value"}: ` +
        (key === "train.epochs"
          ? "a resume may only make train.epochs longer"
          : `a resume continues the stored run; only ${RESUME_SAFE_KEYS.join(", ")} may change (train.epochs longer)`),
      { key, file },
    );
  }
}

/**
 * The config to resume the run in `outDir` with: the one stored in its latest
 * checkpoint, with `overrides` (`--key=value` flags) applied and checked by
 * {@linkcode checkResumeChanges}. A `--config` file plays no part: its values
 * are not the run's.
 */
export function resumeConfig(outDir: string, overrides: Record<string, string> = {}): SsdConfig {
  const file = latestCheckpoint(outDir);
  if (!file) throw new InputError(`nothing to resume: no checkpoint in ${path.join(outDir, "checkpoints")}`);
  const stored = storedConfig(readCheckpoint(file).header.config, file);
  const cfg = configFrom<SsdConfig>(stored as unknown as Record<string, unknown>, ssdConfigSpec, overrides);
  checkConsistency(cfg, file);
  checkResumeChanges(stored, cfg, file);
  return cfg;
}

/** Trains a model as `cfg` says. */
export async function train(cfg: SsdConfig, o: TrainOptions): Promise<TrainResult> {
  await setBackend(cfg.backend, { threads: kernelThreads(cfg) });
  const out = o.outDir;
  fs.mkdirSync(path.join(out, "checkpoints"), { recursive: true });

  // 1) Resume: the run's own config wins, so the continuation is exact; only keys that do not change what the
  // run computes may differ (see RESUME_SAFE_KEYS).
  let resumeFrom: Checkpoint | null = null, resumeFile: string | null = null;
  if (o.resume) {
    resumeFile = latestCheckpoint(out);
    if (!resumeFile) throw new InputError(`nothing to resume: no checkpoint in ${path.join(out, "checkpoints")}`);
    resumeFrom = readCheckpoint(resumeFile);
    checkResumeChanges(storedConfig(resumeFrom.header.config, resumeFile), cfg, resumeFile);
  }

  if (o.checkBackend !== undefined) {
    const pair = ["wasm", "onnxruntime"];
    if (!pair.includes(o.checkBackend) || !pair.includes(cfg.backend)) {
      throw new InputError(
        `a check backend runs on the same tensors as the training backend: both must be wasm or onnxruntime ` +
          `(got ${o.checkBackend} and ${cfg.backend})`,
      );
    }
    if (cfg.train.replicas !== 1) {
      throw new InputError(`a check backend needs train.replicas: 1 (it is ${cfg.train.replicas})`);
    }
  }

  // 2) Data.
  const split = loadSplit(cfg.data, "train", { classNames: cfg.model.class_names });
  const classNames = split.classNames;
  if (!classNames) {
    throw new InputError(
      `model.class_names is required: the ${cfg.data.train.format} split ${split.split.path} carries label ids only`,
    );
  }
  if (classNames.length !== cfg.model.num_classes) {
    throw new InputError(
      `the dataset has ${
        classNames.length - 1
      } classes (+ background) but model.num_classes is ${cfg.model.num_classes}`,
    );
  }
  const records = split.records;
  if (records.length < cfg.train.batch_size) {
    throw new InputError(
      `the training split has ${records.length} images, fewer than batch_size ${cfg.train.batch_size}`,
    );
  }

  // 3) Model, anchors, optimiser.
  const anchors = anchorsOf(cfg);
  const graph = buildModel(cfg, anchors);
  const params = initParams(graph, createRng(cfg.seed), {
    scheme: cfg.model.init,
    sigma: cfg.model.init_sigma,
    overrides: initOverridesOf(cfg),
  });
  const state = createMomentumState(params);
  let startEpoch = 0, startBatch = 0, globalStep = 0;
  if (resumeFrom) {
    loadParams(params, resumeFrom, { file: resumeFile! });
    loadMomentum(state, resumeFrom);
    startEpoch = resumeFrom.header.epoch;
    startBatch = resumeFrom.header.step_in_epoch;
    globalStep = resumeFrom.header.global_step;
  } else if (o.init) {
    const ckpt = readCheckpoint(o.init);
    const stored = new Map([...ckpt.tensors].filter(([k]) => k.startsWith("param:")).map(([k, v]) => [k.slice(6), v]));
    // A different class count changes the class heads' shapes: those start fresh.
    const r = loadParams(params, ckpt, {
      file: o.init,
      keep: (n) => stored.get(n)?.shape.join() === params.get(n)!.shape.join(),
      allowMissing: true,
    });
    if (!o.quiet) {
      console.log(`init: loaded ${r.loaded.length} tensors from ${o.init}, re-initialised ${r.skipped.length}`);
    }
  }
  const trainablePairs = trainableParams(params, cfg.train.freeze);
  const trainable = trainablePairs.map(([, v]) => v);
  const sf = scaleFactorsOf(cfg);
  const loaderOpts = {
    batchSize: cfg.train.batch_size,
    inputSize: cfg.model.input_size,
    numAnchors: anchors.count,
    seed: cfg.seed,
    prefetch: cfg.train.prefetch,
    dropRemainder: true,
  };
  const stepsPerEpoch = batchesPerEpoch(records.length, loaderOpts);
  const lrOpts = lrOptionsFromConfig(cfg.train, { totalEpochs: cfg.train.epochs, stepsPerEpoch });
  const transform = (r: (typeof records)[number], rng: () => number) =>
    augmentSample(r, cfg.model.input_size, rng, cfg.augment);
  const encode = (smp: { boxes: Float32Array; labels: Int32Array }) =>
    matchAndEncode({ boxes: smp.boxes, labels: smp.labels }, anchors, {
      matchThreshold: cfg.matcher.match_threshold,
      scaleFactors: sf,
    });

  // 4) Logs: keep what happened before the resume point, drop what a killed run logged after it (streamed:
  // a long run's log does not fit in memory as objects).
  const logFile = path.join(out, "train_log.jsonl");
  const losses: StepLog[] = [];
  const tmpLog = `${logFile}.tmp-${Deno.pid}`;
  const kept = fs.openSync(tmpLog, "w");
  try {
    if (resumeFrom && fs.existsSync(logFile)) {
      for await (const l of readJsonLines<StepLog>(logFile)) {
        if (l.global_step <= globalStep) fs.writeSync(kept, JSON.stringify(l) + "\n");
      }
    }
  } finally {
    fs.closeSync(kept);
  }
  fs.renameSync(tmpLog, logFile);
  await writeFileAtomic(path.join(out, "config.yaml"), YAML.stringify(cfg));
  const log = fs.openSync(logFile, "a");

  // Data-parallel replicas: part 0 of each batch runs here, the other parts in workers.
  const replicas: GradReplica[] = [];
  for (let k = 1; k < cfg.train.replicas; k++) replicas.push(await GradReplica.start(cfg));
  const replicatedStep = async (
    batch: Batch,
    stepOpts: Parameters<typeof gradStep>[4],
  ): Promise<[GradOutputs, { loss: number; loc: number; cls: number }]> => {
    const parts = splitBatch(batch, replicas.length + 1, cfg.model.input_size, anchors.count);
    const values: Record<string, Float32Array> = {};
    for (const [name, v] of trainablePairs) values[name] = await v.data() as Float32Array;
    const normalizer = batch.numMatch;
    // Each part's dropout masks are those of its images' places in the whole batch.
    const offsets = parts.map((_, k) => parts.slice(0, k).reduce((a, p) => a + p.size, 0));
    const seed = stepOpts.dropout?.seed ?? 0;
    const remote = parts.slice(1).map((p, k) =>
      replicas[k].compute(values, p, normalizer, { seed, offset: offsets[k + 1] })
    );
    const r = gradStep(graph, params, trainable, parts[0], { ...stepOpts, normalizer });
    const done = await Promise.all(remote);
    const extra = { loss: 0, loc: 0, cls: 0 };
    for (const d of done) {
      extra.loss += d.loss, extra.loc += d.loc, extra.cls += d.cls;
      for (const [name, v] of trainablePairs) {
        const g = r.grads[v.name];
        if (!g || !d.grads[name]) continue;
        r.grads[v.name] = tf.tidy(() => tf.add(g, tf.tensor(d.grads[name], v.shape)));
        g.dispose();
      }
    }
    return [r, extra];
  };

  let interrupted = false;
  const onSigint = () => {
    if (interrupted) {
      // A second Ctrl-C: the caller decides (the train task exits at once); the library never ends the process.
      o.onSecondInterrupt?.();
      return;
    }
    interrupted = true;
    if (!o.quiet) {
      console.error(
        `\ninterrupt: saving a checkpoint after this step${
          o.onSecondInterrupt ? " (Ctrl-C again to quit at once)" : ""
        }`,
      );
    }
  };
  const canSignal = typeof Deno !== "undefined" && Deno.build.os !== "windows";
  if (canSignal) Deno.addSignalListener("SIGINT", onSigint);

  const evals: { epoch: number; stats: number[] }[] = [];
  let lastCkpt: string | null = resumeFile, best: string | null = null, bestMap = -Infinity;
  const save = async (file: string, epoch: number, stepInEpoch: number, metrics: Record<string, number> = {}) => {
    await saveCheckpoint(file, {
      params,
      momentum: state,
      config: cfg as unknown as Record<string, unknown>,
      classNames,
      epoch,
      stepInEpoch,
      globalStep,
      metrics,
    });
    lastCkpt = file;
  };
  const totalSteps = stepsPerEpoch * cfg.train.epochs;
  const bar = new Progress("train", totalSteps, { unit: "step", quiet: o.quiet });
  bar.update(globalStep);
  let steps = 0;
  try {
    outer:
    for (let epoch = startEpoch; epoch < cfg.train.epochs; epoch++) {
      const t0 = performance.now();
      let tLast = t0;
      for await (
        const batch of batches(records, transform, encode, epoch, loaderOpts, epoch === startEpoch ? startBatch : 0)
      ) {
        const lr = lrAtStep(globalStep, lrOpts);
        let r: GradOutputs, extra = { loss: 0, loc: 0, cls: 0 };
        const stepOpts = {
          inputSize: cfg.model.input_size,
          numAnchors: anchors.count,
          loss: cfg.loss,
          segments: cfg.train.segments,
          // Dropout masks of this step: from the run's seed and the step (a resume draws the same ones).
          dropout: { seed: dropoutSeed(cfg.seed, globalStep), offset: 0 },
        };
        try {
          if (replicas.length === 0) r = gradStep(graph, params, trainable, batch, stepOpts);
          else [r, extra] = await replicatedStep(batch, stepOpts);
        } catch (e) {
          throw explainOutOfMemory(e, {
            batchSize: cfg.train.batch_size,
            what: "training",
            segments: cfg.train.segments,
          });
        }
        const [loss, loc, cls] = (await Promise.all([r.loss.data(), r.loc.data(), r.cls.data()])).map((d, k) =>
          d[0] + [extra.loss, extra.loc, extra.cls][k]
        );
        if (!Number.isFinite(loss)) {
          tf.dispose([r.loss, r.loc, r.cls, ...Object.values(r.grads)]);
          for (const u of r.bn) tf.dispose([u.mean, u.variance]);
          throw new InputError(
            `loss is ${loss} at epoch ${epoch + 1}, step ${batch.index + 1} (lr ${lr}); training stopped without ` +
              `applying this step. Last good checkpoint: ${lastCkpt ?? "none"}. Try a lower train.lr.`,
          );
        }
        const check = o.checkBackend === undefined
          ? undefined
          : await checkStep(r, o.checkBackend, cfg.backend, kernelThreads(cfg), () =>
            gradStep(graph, params, trainable, batch, stepOpts));
        momentumStep(params, r.grads, state, lr, {
          momentum: cfg.train.momentum,
          weightDecay: cfg.train.weight_decay,
          lossScale: cfg.train.loss_scale,
          sens: cfg.train.sens,
        });
        applyBnUpdates(params, r.bn);
        tf.dispose([r.loss, r.loc, r.cls, ...Object.values(r.grads)]);
        globalStep++;
        steps++;
        const now = performance.now();
        const entry: StepLog = {
          epoch: epoch + 1,
          step: batch.index + 1,
          global_step: globalStep,
          loss,
          loc,
          cls,
          lr,
          images_per_s: batch.size / ((now - tLast) / 1000),
          time: Math.round(now - t0),
          ...check,
        };
        tLast = now;
        losses.push(entry);
        // Bounded: the first and the latest steps of a long run (train_log.jsonl has every step).
        if (losses.length > 2 * KEPT_STEPS) losses.splice(KEPT_STEPS, 1);
        fs.writeSync(log, JSON.stringify(entry) + "\n");
        o.onStep?.(entry);
        bar.update(
          globalStep,
          `ep ${epoch + 1}/${cfg.train.epochs} loss ${loss.toFixed(3)} (loc ${loc.toFixed(3)} cls ${cls.toFixed(3)}) ` +
            `lr ${lr.toExponential(2)} ${entry.images_per_s.toFixed(1)} img/s`,
        );
        if (interrupted) {
          await save(path.join(out, "checkpoints", "interrupted.ckpt"), epoch, batch.index + 1, { loss });
          break outer;
        }
        if (o.maxSteps !== undefined && steps >= o.maxSteps) {
          await save(path.join(out, "checkpoints", `step-${globalStep}.ckpt`), epoch, batch.index + 1, { loss });
          break outer;
        }
      }
      const done = epoch + 1;
      const last = done === cfg.train.epochs;
      let metrics: Record<string, number> = { loss: losses.at(-1)?.loss ?? NaN };
      if (cfg.train.eval_every > 0 && (done % cfg.train.eval_every === 0 || last) && cfg.data.val.path) {
        const stats = await evaluateDuringTraining(graph, params, cfg, classNames, anchors, sf, o.quiet);
        evals.push({ epoch: done, stats });
        metrics = { ...metrics, map: stats[0], map50: stats[1] };
        if (!o.quiet) {
          console.log(`eval after epoch ${done}: mAP ${stats[0].toFixed(3)}, mAP@0.5 ${stats[1].toFixed(3)}`);
        }
      }
      if (done % cfg.train.checkpoint_every === 0 || last) {
        const file = checkpointPath(out, done);
        await save(file, done, 0, metrics);
        if (metrics.map !== undefined && metrics.map > bestMap) {
          bestMap = metrics.map;
          best = path.join(out, "checkpoints", "best.ckpt");
          await writeFileAtomic(best, fs.readFileSync(file));
        }
      }
    }
  } finally {
    bar.done();
    fs.closeSync(log);
    for (const w of replicas) w.close();
    if (canSignal) Deno.removeSignalListener("SIGINT", onSigint);
  }
  await writeLossCurve(path.join(out, "loss_curve.png"), logFile);
  return { outDir: out, checkpoint: lastCkpt, best, losses, evals, classNames, graph, params, interrupted };
}

/**
 * Runs one step's forward and backward pass again on `checkBackend` (same
 * weights, same batch) and measures how far it lands from `r`, the training
 * backend's. Both backends keep their tensors in the wasm heap, so switching
 * between them moves no data.
 */
async function checkStep(
  r: GradOutputs,
  checkBackend: string,
  backend: string,
  threads: number,
  step: () => GradOutputs,
): Promise<{ check_loss: number; check_grad_diff: number }> {
  await setBackend(checkBackend, { threads });
  let c: GradOutputs | null = null;
  try {
    c = step();
    const diff = tf.tidy(() => {
      // float32 sums of squares: ample for a relative difference
      let num = tf.scalar(0), den = tf.scalar(0);
      for (const [name, g] of Object.entries(r.grads)) {
        num = num.add(tf.sub(g, c!.grads[name]).square().sum());
        den = den.add(g.square().sum());
      }
      return tf.sqrt(num.div(den));
    });
    const [loss, d] = await Promise.all([c.loss.data(), diff.data()]);
    diff.dispose();
    return { check_loss: loss[0], check_grad_diff: d[0] };
  } finally {
    if (c) {
      tf.dispose([c.loss, c.loc, c.cls, ...Object.values(c.grads)]);
      for (const u of c.bn) tf.dispose([u.mean, u.variance]);
    }
    await setBackend(backend, { threads });
  }
}

async function evaluateDuringTraining(
  graph: Graph,
  params: ParamMap,
  cfg: SsdConfig,
  classNames: string[],
  anchors: ReturnType<typeof anchorsOf>,
  sf: number[],
  quiet?: boolean,
): Promise<number[]> {
  const val = loadSplit(cfg.data, "val", { classNames });
  const gt = val.groundTruth();
  const bar = new Progress("eval", val.records.length, { unit: "img", quiet });
  const dets = await detectRecords(graph, params, val.records, {
    inputSize: cfg.model.input_size,
    anchors,
    scaleFactors: sf,
    augment: cfg.augment,
    postprocess: cfg.postprocess,
    activation: cfg.model.score_activation,
    labelToCategory: labelToCategoryOf(gt, classNames, val.split.annotations ?? val.split.path ?? "ground truth"),
    onProgress: (d) => bar.update(d),
  });
  bar.done();
  return scoreDetections(gt, dets).stats;
}

/** Points drawn per line of the loss curve: longer logs are drawn as means of consecutive steps. */
const LOSS_CURVE_BINS = 250;

/** The lines of a JSON-lines file, streamed (a million-step log is ~200 MB). */
export async function* readJsonLines<T>(file: string): AsyncGenerator<T> {
  const rl = readline.createInterface({ input: fs.createReadStream(file), crlfDelay: Infinity });
  let n = 0;
  for await (const line of rl) {
    n++;
    if (!line.trim()) continue;
    try {
      yield JSON.parse(line) as T;
    } catch (e) {
      throw new InputError(`not valid JSON: ${(e as Error).message}`, { file, where: `line ${n}` });
    }
  }
}

/**
 * Writes the loss curve of a run's `train_log.jsonl` as a PNG: total, cls and
 * loc loss, each step drawn, or the means of consecutive steps when the log
 * is longer than {@linkcode LOSS_CURVE_BINS}. Streams the log, so a
 * million-step run plots in bounded memory.
 */
export async function writeLossCurve(file: string, logFile: string): Promise<void> {
  const bins = {
    total: new Binner(LOSS_CURVE_BINS),
    cls: new Binner(LOSS_CURVE_BINS),
    loc: new Binner(LOSS_CURVE_BINS),
  };
  for await (const l of readJsonLines<StepLog>(logFile)) {
    bins.total.add(l.global_step, l.loss);
    bins.cls.add(l.global_step, l.cls);
    bins.loc.add(l.global_step, l.loc);
  }
  const n = bins.total.count;
  if (n === 0) return;
  const per = Math.ceil(n / bins.total.series().x.length);
  const png = await linePlotPng(
    Object.entries(bins).map(([name, b]) => ({ name, ...b.series() })),
    {
      title: "Training loss",
      xLabel: "step",
      yLabel: per > 1 ? `loss (mean of ~${per} steps)` : "loss",
      logY: true,
    },
  );
  await writeFileAtomic(file, png);
}
