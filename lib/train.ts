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
import { ImageCache } from "./image_cache.ts";
import {
  BACKENDS,
  deviceDescription,
  deviceWarning,
  explainOutOfMemory,
  type GradOutputs,
  GradReplica,
  gradStep,
  type Mpi,
  setBackend,
  splitBatch,
  trainableParams,
} from "./engine/mod.ts";
import {
  type Checkpoint,
  loadMomentum,
  loadParams,
  type ParamValues,
  readCheckpoint,
  saveCheckpoint,
  valuesAsTensors,
} from "./checkpoint.ts";
import { writeMsCheckpoint } from "./mindspore_ckpt.ts";
import { mindsporeNames } from "./mindspore_names.ts";
import { mindsporeNameOf, mindsporeTensors, readAnyCheckpoint } from "./mindspore_convert.ts";
import { type Batch, batches, batchesPerEpoch } from "./data_loader.ts";
import { allreduceGrads, bnStatNames, broadcastVariables, rankShare, syncBnReducer } from "./data_parallel.ts";
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
  /**
   * Start from these weights (a workbench or MindSpore checkpoint, or a MindSpore backbone alone); class heads of
   * another class count are re-initialised.
   */
  init?: string;
  /** With `init`: drop the tensors whose workbench or MindSpore name contains one of these (`filter_weight`). */
  initFilter?: string[];
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
  /**
   * Train data-parallel over these MPI ranks (lib/data_parallel.ts): each rank computes its share of every
   * batch, and rank 0 alone writes the log, checkpoints and plots and evaluates. On the other ranks `init`
   * and `resume` files are not read (rank 0's weights are broadcast) and nothing is printed.
   */
  mpi?: Mpi;
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
  /** On the first step of each start or resume: what the backend ran on (e.g. the WebGPU adapter). */
  device?: string;
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
  "train.save_mindspore",
  "train.prefetch",
  "train.image_cache_mb",
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

/**
 * Trains a model as `cfg` says: resume or start, load the data, build the model
 * and optimiser, open the log, then run the epochs (each step: loss and
 * gradients, a Momentum update, a log line; each epoch: eval and checkpoints as
 * configured), and draw the loss curve.
 */
export async function train(cfg: SsdConfig, options: TrainOptions): Promise<TrainResult> {
  const mpi = options.mpi;
  const lead = !mpi || mpi.rank === 0;
  // Ranks other than 0 stay quiet and read no weights: rank 0's arrive by broadcast.
  const o: TrainOptions = lead ? options : { ...options, quiet: true, init: undefined, onStep: undefined };
  await setBackend(cfg.backend, { threads: kernelThreads(cfg, undefined, mpi?.localSize) });
  const device = deviceDescription(cfg.backend);
  if (!o.quiet) console.log(`backend: ${device}`);
  const warning = deviceWarning(cfg.backend);
  if (warning && lead) console.error(warning);
  checkBackendPair(cfg, o.checkBackend);
  checkDataParallel(cfg, mpi, o.checkBackend);
  if (lead) fs.mkdirSync(path.join(o.outDir, "checkpoints"), { recursive: true });
  const resume = o.resume && lead ? openResume(o.outDir, cfg) : null;
  const { records, classNames } = loadTrainSplit(cfg);
  const model = buildTrainingModel(cfg, resume, o);
  if (mpi) await startTogether(mpi, model);
  // A model with no MindSpore counterpart cannot save for it: say so before training, not at the first save.
  if (cfg.train.save_mindspore) mindsporeNames(cfg, model.graph);
  const feed = trainingFeed(cfg, records.length, model.anchors, mpi);
  const logFile = lead ? await startLog(o.outDir, cfg, o.resume ? model.start.globalStep : null) : null;

  const run: Run = {
    cfg,
    device,
    o,
    mpi,
    model,
    classNames,
    replicas: [],
    globalStep: model.start.globalStep,
    steps: 0,
    losses: [],
    evals: [],
    lastCkpt: resume?.file ?? null,
    best: null,
    bestMap: -Infinity,
    interrupted: false,
  };
  // Data-parallel replicas: part 0 of each batch runs here, the other parts in workers.
  const threads = kernelThreads(cfg, undefined, mpi?.localSize);
  for (let k = 1; k < cfg.train.replicas; k++) run.replicas.push(await GradReplica.start(cfg, threads));
  const stopListening = listenForInterrupt(run);
  const log = logFile ? fs.openSync(logFile, "a") : null;
  const bar = new Progress("train", feed.stepsPerEpoch * cfg.train.epochs, { unit: "step", quiet: o.quiet });
  bar.update(run.globalStep);
  const cache = new ImageCache(cfg.train.image_cache_mb * 2 ** 20);
  const transform = (r: (typeof records)[number], rng: () => number) =>
    augmentSample(r, cfg.model.input_size, rng, cfg.augment, cache);
  try {
    outer:
    for (let epoch = model.start.epoch; epoch < cfg.train.epochs; epoch++) {
      const clock = { t0: performance.now(), last: performance.now() };
      const skip = epoch === model.start.epoch ? model.start.batch : 0;
      for await (const batch of batches(records, transform, feed.encode, epoch, feed.loaderOpts, skip)) {
        const entry = await trainStep(run, batch, epoch, feed, clock);
        if (log !== null) fs.writeSync(log, JSON.stringify(entry) + "\n");
        o.onStep?.(entry);
        bar.update(
          run.globalStep,
          `ep ${epoch + 1}/${cfg.train.epochs} loss ${entry.loss.toFixed(3)} (loc ${entry.loc.toFixed(3)} ` +
            `cls ${entry.cls.toFixed(3)}) lr ${entry.lr.toExponential(2)} ${entry.images_per_s.toFixed(1)} img/s`,
        );
        const stopAt = run.interrupted
          ? "interrupted.ckpt"
          : o.maxSteps !== undefined && run.steps >= o.maxSteps
          ? `step-${run.globalStep}.ckpt`
          : null;
        if (stopAt) {
          if (lead) {
            await saveRun(run, path.join(o.outDir, "checkpoints", stopAt), epoch, batch.index + 1, {
              loss: entry.loss,
            });
          }
          break outer;
        }
      }
      await endOfEpoch(run, epoch + 1);
      // The other ranks wait for rank 0's eval and checkpoint asleep, not spinning in the next all-reduce.
      await mpi?.quietBarrier();
    }
  } finally {
    bar.done();
    if (log !== null) fs.closeSync(log);
    for (const w of run.replicas) w.close();
    stopListening();
  }
  await mpi?.quietBarrier();
  if (logFile) await writeLossCurve(path.join(o.outDir, "loss_curve.png"), logFile);
  return {
    outDir: o.outDir,
    checkpoint: run.lastCkpt,
    best: run.best,
    losses: run.losses,
    evals: run.evals,
    classNames,
    graph: model.graph,
    params: model.params,
    interrupted: run.interrupted,
  };
}

/** The checkpoint a run resumes from. */
interface Resume {
  file: string;
  checkpoint: Checkpoint;
}

/**
 * The latest checkpoint of the run in `outDir`. The run's own config wins, so the continuation is exact; only
 * keys that do not change what the run computes may differ (see {@linkcode RESUME_SAFE_KEYS}).
 */
function openResume(outDir: string, cfg: SsdConfig): Resume {
  const file = latestCheckpoint(outDir);
  if (!file) throw new InputError(`nothing to resume: no checkpoint in ${path.join(outDir, "checkpoints")}`);
  const checkpoint = readCheckpoint(file);
  checkResumeChanges(storedConfig(checkpoint.header.config, file), cfg, file);
  return { file, checkpoint };
}

/** What data-parallel training needs of the config, checked before any work. */
function checkDataParallel(cfg: SsdConfig, mpi: Mpi | undefined, checkBackend: string | undefined): void {
  if (cfg.train.sync_bn && cfg.train.replicas !== 1) {
    throw new ConfigError(
      `train.sync_bn sums batch statistics over MPI ranks and needs train.replicas: 1 (it is ${cfg.train.replicas})`,
      { key: "train.sync_bn" },
    );
  }
  if (cfg.train.sync_bn && cfg.backend === "webgpu") {
    throw new ConfigError(
      "train.sync_bn reads each batch norm's statistics back for the all-reduce in the middle of the forward pass, " +
        "which WebGPU cannot do synchronously; use backend wasm or onnxruntime for sync_bn",
      { key: "train.sync_bn" },
    );
  }
  if (!mpi) return;
  if (checkBackend !== undefined) throw new InputError("--check-backend runs in one process, not under MPI");
  const parts = mpi.size * cfg.train.replicas;
  if (cfg.train.batch_size < parts) {
    throw new ConfigError(
      `train.batch_size ${cfg.train.batch_size} is the global batch and must give each of the ${mpi.size} ranks x ` +
        `${cfg.train.replicas} replicas at least one image`,
      { key: "train.batch_size" },
    );
  }
}

/**
 * Every rank starts from rank 0's weights, Momentum state and place in the run (fresh, `--init` or resume):
 * one broadcast, as DDP does at construction.
 */
async function startTogether(mpi: Mpi, model: TrainingModel): Promise<void> {
  const s = model.start;
  const at = new Float64Array([s.epoch, s.batch, s.globalStep]);
  mpi.bcast(at);
  Object.assign(s, { epoch: at[0], batch: at[1], globalStep: at[2] });
  await broadcastVariables(mpi, [model.params, model.state]);
}

/** A check backend runs the same step in the same process: one replica, any of the backends. */
function checkBackendPair(cfg: SsdConfig, checkBackend: string | undefined): void {
  if (checkBackend === undefined) return;
  if (!(BACKENDS as readonly string[]).includes(checkBackend)) {
    throw new InputError(`unknown check backend "${checkBackend}"; choose one of ${BACKENDS.join(", ")}`);
  }
  if (cfg.train.replicas !== 1) {
    throw new InputError(`a check backend needs train.replicas: 1 (it is ${cfg.train.replicas})`);
  }
}

/** The training split, checked against the model's class count and the batch size. */
function loadTrainSplit(cfg: SsdConfig): { records: ReturnType<typeof loadSplit>["records"]; classNames: string[] } {
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
  if (split.records.length < cfg.train.batch_size) {
    throw new InputError(
      `the training split has ${split.records.length} images, fewer than batch_size ${cfg.train.batch_size}`,
    );
  }
  return { records: split.records, classNames };
}

/** The model being trained: graph, weights, Momentum state, and where in the run it starts. */
interface TrainingModel {
  anchors: ReturnType<typeof anchorsOf>;
  graph: Graph;
  params: ParamMap;
  state: ReturnType<typeof createMomentumState>;
  /** The trained weights by parameter name (`train.freeze` leaves the others out). */
  trainable: [string, tf.Variable][];
  start: { epoch: number; batch: number; globalStep: number };
}

/** Builds the model and optimiser: fresh, from `--init` weights, or from the resume checkpoint. */
function buildTrainingModel(cfg: SsdConfig, resume: Resume | null, o: TrainOptions): TrainingModel {
  const anchors = anchorsOf(cfg);
  const graph = buildModel(cfg, anchors);
  const params = initParams(graph, createRng(cfg.seed), {
    scheme: cfg.model.init,
    sigma: cfg.model.init_sigma,
    overrides: initOverridesOf(cfg),
  });
  const state = createMomentumState(params);
  const start = { epoch: 0, batch: 0, globalStep: 0 };
  if (resume) {
    const h = resume.checkpoint.header;
    loadParams(params, resume.checkpoint, { file: resume.file });
    loadMomentum(state, resume.checkpoint);
    Object.assign(start, { epoch: h.epoch, batch: h.step_in_epoch, globalStep: h.global_step });
  } else if (o.init) {
    // A workbench or MindSpore checkpoint, whole or a backbone alone; `initFilter` drops tensors by name as the
    // ModelZoo's `filter_weight` does.
    const filter = o.initFilter ?? [];
    const { checkpoint: ckpt, import: ms } = readAnyCheckpoint(o.init, cfg, { graph, partial: true, filter });
    const msName = filter.length && !ms ? mindsporeNameOf(cfg, graph) : () => undefined;
    const filtered = (n: string) => filter.some((f) => n.includes(f) || msName(n)?.includes(f));
    const stored = new Map([...ckpt.tensors].filter(([k]) => k.startsWith("param:")).map(([k, v]) => [k.slice(6), v]));
    // A different class count changes the class heads' shapes: those start fresh.
    const r = loadParams(params, ckpt, {
      file: o.init,
      keep: (n) => !filtered(n) && stored.get(n)?.shape.join() === params.get(n)!.shape.join(),
      allowMissing: true,
    });
    if (!o.quiet) {
      const from = ms ? ` (MindSpore${ms.backboneOnly ? ", backbone only" : ""})` : "";
      const dropped = ms ? ms.filtered.length : [...stored.keys()].filter(filtered).length;
      console.log(
        `init: loaded ${r.loaded.length} tensors from ${o.init}${from}, re-initialised ${r.skipped.length}` +
          (filter.length ? `, ${dropped} dropped by the filter` : ""),
      );
    }
  }
  return { anchors, graph, params, state, trainable: trainableParams(params, cfg.train.freeze), start };
}

/** How batches are made and which learning rate each step gets. */
interface Feed {
  loaderOpts: Parameters<typeof batches>[4];
  stepsPerEpoch: number;
  lrOpts: ReturnType<typeof lrOptionsFromConfig>;
  encode: (smp: { boxes: Float32Array; labels: Int32Array }) => ReturnType<typeof matchAndEncode>;
}

function trainingFeed(cfg: SsdConfig, images: number, anchors: ReturnType<typeof anchorsOf>, mpi?: Mpi): Feed {
  const replicas = cfg.train.replicas;
  const loaderOpts = {
    batchSize: cfg.train.batch_size,
    inputSize: cfg.model.input_size,
    numAnchors: anchors.count,
    seed: cfg.seed,
    prefetch: cfg.train.prefetch,
    dropRemainder: true,
    // Under MPI the batch is global: each rank loads its own share of it (lib/data_parallel.ts).
    share: mpi ? (n: number) => rankShare(n, { rank: mpi.rank, ranks: mpi.size, replicas }) : undefined,
  };
  const stepsPerEpoch = batchesPerEpoch(images, loaderOpts);
  const sf = scaleFactorsOf(cfg);
  return {
    loaderOpts,
    stepsPerEpoch,
    lrOpts: lrOptionsFromConfig(cfg.train, { totalEpochs: cfg.train.epochs, stepsPerEpoch }),
    encode: (smp) =>
      matchAndEncode({ boxes: smp.boxes, labels: smp.labels }, anchors, {
        matchThreshold: cfg.matcher.match_threshold,
        scaleFactors: sf,
      }),
  };
}

/**
 * Writes `config.yaml` and returns the log file. On resume (`resumeStep` set) the log keeps what happened up to
 * that step and drops what a killed run logged after it; streamed, since a long run's log does not fit in
 * memory as objects. A fresh run starts an empty log.
 */
async function startLog(outDir: string, cfg: SsdConfig, resumeStep: number | null): Promise<string> {
  const logFile = path.join(outDir, "train_log.jsonl");
  const tmpLog = `${logFile}.tmp-${Deno.pid}`;
  const kept = fs.openSync(tmpLog, "w");
  try {
    if (resumeStep !== null && fs.existsSync(logFile)) {
      for await (const l of readJsonLines<StepLog>(logFile)) {
        if (l.global_step <= resumeStep) fs.writeSync(kept, JSON.stringify(l) + "\n");
      }
    }
  } finally {
    fs.closeSync(kept);
  }
  fs.renameSync(tmpLog, logFile);
  await writeFileAtomic(path.join(outDir, "config.yaml"), YAML.stringify(cfg));
  return logFile;
}

/** A run in progress: what the steps and epochs read and update. */
interface Run {
  cfg: SsdConfig;
  /** {@linkcode deviceDescription} of the backend. */
  device: string;
  o: TrainOptions;
  mpi: Mpi | undefined;
  model: TrainingModel;
  classNames: string[];
  replicas: GradReplica[];
  globalStep: number;
  /** Steps this call trained. */
  steps: number;
  losses: StepLog[];
  evals: { epoch: number; stats: number[] }[];
  lastCkpt: string | null;
  best: string | null;
  bestMap: number;
  interrupted: boolean;
}

/**
 * A first Ctrl-C lets the step finish and saves a checkpoint; a second is the caller's to act on (the train
 * task exits at once), since the library never ends the process. Returns the function that stops listening.
 */
function listenForInterrupt(run: Run): () => void {
  const onSigint = () => {
    if (run.interrupted) {
      run.o.onSecondInterrupt?.();
      return;
    }
    run.interrupted = true;
    if (!run.o.quiet) {
      const again = run.o.onSecondInterrupt ? " (Ctrl-C again to quit at once)" : "";
      console.error(`\ninterrupt: saving a checkpoint after this step${again}`);
    }
  };
  if (typeof Deno === "undefined" || Deno.build.os === "windows") return () => {};
  Deno.addSignalListener("SIGINT", onSigint);
  // Under MPI: mpirun ends the job on Ctrl-C, but forwards SIGUSR1 to every rank. Any rank's interrupt reaches the
  // others through the step's all-reduce, so all stop after the same step and rank 0 saves.
  const onUsr1 = () => void (run.interrupted || onSigint());
  if (run.mpi) Deno.addSignalListener("SIGUSR1", onUsr1);
  return () => {
    Deno.removeSignalListener("SIGINT", onSigint);
    if (run.mpi) Deno.removeSignalListener("SIGUSR1", onUsr1);
  };
}

/** Losses of the parts that replicas computed, added to this process's. */
type PartLosses = { loss: number; loc: number; cls: number };

/**
 * One training step: loss and gradients (on replicas when configured), a NaN check, the optional check
 * backend, the Momentum update and batch-norm statistics. Returns the step's log line.
 */
async function trainStep(
  run: Run,
  batch: Batch,
  epoch: number,
  feed: Feed,
  clock: { t0: number; last: number },
): Promise<StepLog> {
  const { cfg, o, model, mpi } = run;
  const lr = lrAtStep(run.globalStep, feed.lrOpts);
  const stepOpts = {
    inputSize: cfg.model.input_size,
    numAnchors: model.anchors.count,
    loss: cfg.loss,
    segments: cfg.train.segments,
    // Dropout masks of this step: from the run's seed, the step (a resume draws the same ones) and each image's
    // place in the global batch.
    dropout: { seed: dropoutSeed(cfg.seed, run.globalStep), offset: batch.offset },
    // Every part's loss is normalised by the global batch's matched boxes, so the parts' gradients add up.
    normalizer: mpi ? mpi.allreduceSum(new Float64Array([batch.numMatch]))[0] : undefined,
    syncBn: mpi && cfg.train.sync_bn ? syncBnReducer(mpi) : undefined,
  };
  const trainable = model.trainable.map(([, v]) => v);
  let r: GradOutputs, extra: PartLosses = { loss: 0, loc: 0, cls: 0 };
  try {
    if (run.replicas.length === 0) r = gradStep(model.graph, model.params, trainable, batch, stepOpts);
    else [r, extra] = await replicatedGradStep(run, batch, stepOpts);
  } catch (e) {
    throw explainOutOfMemory(e, { batchSize: cfg.train.batch_size, what: "training", segments: cfg.train.segments });
  }
  let [loss, loc, cls] = (await Promise.all([r.loss.data(), r.loc.data(), r.cls.data()])).map((d, k) =>
    d[0] + [extra.loss, extra.loc, extra.cls][k]
  );
  if (mpi) {
    // One all-reduce for the gradients, one for the losses and whether any rank was interrupted, so all
    // ranks apply the same update and stop at the same step.
    r.grads = await allreduceGrads(mpi, r.grads, trainable);
    const sums = mpi.allreduceSum(new Float64Array([loss, loc, cls, run.interrupted ? 1 : 0]));
    [loss, loc, cls] = sums;
    run.interrupted = sums[3] > 0;
  }
  if (!Number.isFinite(loss)) {
    tf.dispose([r.loss, r.loc, r.cls, ...Object.values(r.grads)]);
    for (const u of r.bn) tf.dispose([u.mean, u.variance]);
    throw new InputError(
      `loss is ${loss} at epoch ${epoch + 1}, step ${batch.index + 1} (lr ${lr}); training stopped without ` +
        `applying this step. Last good checkpoint: ${run.lastCkpt ?? "none"}. Try a lower train.lr.`,
    );
  }
  const check = o.checkBackend === undefined
    ? undefined
    : await checkStep(r, o.checkBackend, cfg.backend, kernelThreads(cfg), model, (params, vars) =>
      gradStep(model.graph, params, vars, batch, stepOpts));
  momentumStep(model.params, r.grads, model.state, lr, {
    momentum: cfg.train.momentum,
    weightDecay: cfg.train.weight_decay,
    lossScale: cfg.train.loss_scale,
    sens: cfg.train.sens,
  });
  const bnStats = mpi ? bnStatNames(r.bn) : null;
  applyBnUpdates(model.params, r.bn);
  // Running statistics: rank 0's, as DDP's broadcast_buffers (the ranks' own differ without sync_bn).
  if (mpi && bnStats!.size > 0) await broadcastVariables(mpi, [model.params], (n) => bnStats!.has(n));
  tf.dispose([r.loss, r.loc, r.cls, ...Object.values(r.grads)]);
  run.globalStep++;
  run.steps++;
  const now = performance.now();
  const entry: StepLog = {
    epoch: epoch + 1,
    step: batch.index + 1,
    global_step: run.globalStep,
    loss,
    loc,
    cls,
    lr,
    images_per_s: batch.globalSize / ((now - clock.last) / 1000),
    time: Math.round(now - clock.t0),
    ...check,
    ...(run.steps === 1 ? { device: run.device } : {}),
  };
  clock.last = now;
  run.losses.push(entry);
  // Bounded: the first and the latest steps of a long run (train_log.jsonl has every step).
  if (run.losses.length > 2 * KEPT_STEPS) run.losses.splice(KEPT_STEPS, 1);
  return entry;
}

/**
 * Loss and gradients of a batch split over this process (part 0) and the replicas (the others), summed. The
 * loss is normalised by the whole batch's matched boxes, and each part's dropout masks are those of its
 * images' places in the whole batch, so the sum equals one process's step.
 */
async function replicatedGradStep(
  run: Run,
  batch: Batch,
  stepOpts: Parameters<typeof gradStep>[4],
): Promise<[GradOutputs, PartLosses]> {
  const { model, cfg } = run;
  const parts = splitBatch(batch, run.replicas.length + 1, cfg.model.input_size, model.anchors.count);
  const values: Record<string, Float32Array> = {};
  for (const [name, v] of model.trainable) values[name] = await v.data() as Float32Array;
  const normalizer = stepOpts.normalizer ?? batch.numMatch;
  const offsets = parts.map((_, k) => batch.offset + parts.slice(0, k).reduce((a, p) => a + p.size, 0));
  const seed = stepOpts.dropout?.seed ?? 0;
  const remote = parts.slice(1).map((p, k) =>
    run.replicas[k].compute(values, p, normalizer, { seed, offset: offsets[k + 1] })
  );
  const trainable = model.trainable.map(([, v]) => v);
  const r = gradStep(model.graph, model.params, trainable, parts[0], { ...stepOpts, normalizer });
  const done = await Promise.all(remote);
  const extra = { loss: 0, loc: 0, cls: 0 };
  for (const d of done) {
    extra.loss += d.loss, extra.loc += d.loc, extra.cls += d.cls;
    for (const [name, v] of model.trainable) {
      const g = r.grads[v.name];
      if (!g || !d.grads[name]) continue;
      r.grads[v.name] = tf.tidy(() => tf.add(g, tf.tensor(d.grads[name], v.shape)));
      g.dispose();
    }
  }
  return [r, extra];
}

/** Writes a checkpoint of the run's current weights and Momentum state. */
async function saveRun(
  run: Run,
  file: string,
  epoch: number,
  stepInEpoch: number,
  metrics: Record<string, number> = {},
): Promise<void> {
  // The weights are read out of the backend once, for the workbench's file and, when asked, MindSpore's.
  const values = async (m: Map<string, tf.Variable>): Promise<ParamValues> =>
    new Map(
      await Promise.all(
        [...m].map(async ([n, v]) => [n, { shape: v.shape, data: await v.data() as Float32Array }] as const),
      ),
    );
  const [params, momentum] = [await values(run.model.params), await values(run.model.state)];
  await saveCheckpoint(file, {
    params: valuesAsTensors(params),
    momentum: valuesAsTensors(momentum),
    config: run.cfg as unknown as Record<string, unknown>,
    classNames: run.classNames,
    epoch,
    stepInEpoch,
    globalStep: run.globalStep,
    metrics,
  });
  run.lastCkpt = file;
  if (run.cfg.train.save_mindspore) {
    // The same weights for MindSpore, beside the run's own checkpoints: OUT/mindspore/<name>.ckpt.
    const tensors = mindsporeTensors(params, run.cfg, { graph: run.model.graph, momentum, globalStep: run.globalStep });
    const msDir = path.join(run.o.outDir, "mindspore");
    fs.mkdirSync(msDir, { recursive: true });
    await writeMsCheckpoint(path.join(msDir, path.basename(file)), tensors);
  }
}

/** After epoch `done` (1-based): eval every `train.eval_every` epochs, checkpoints, and `best.ckpt` by mAP. */
async function endOfEpoch(run: Run, done: number): Promise<void> {
  const { cfg, o, model } = run;
  if (run.mpi && run.mpi.rank !== 0) return; // rank 0 alone evaluates and writes
  const last = done === cfg.train.epochs;
  let metrics: Record<string, number> = { loss: run.losses.at(-1)?.loss ?? NaN };
  if (cfg.train.eval_every > 0 && (done % cfg.train.eval_every === 0 || last) && cfg.data.val.path) {
    const stats = await evaluateDuringTraining(model.graph, model.params, cfg, run.classNames, model.anchors, o.quiet);
    run.evals.push({ epoch: done, stats });
    metrics = { ...metrics, map: stats[0], map50: stats[1] };
    if (!o.quiet) console.log(`eval after epoch ${done}: mAP ${stats[0].toFixed(3)}, mAP@0.5 ${stats[1].toFixed(3)}`);
  }
  if (done % cfg.train.checkpoint_every === 0 || last) {
    const file = checkpointPath(o.outDir, done);
    await saveRun(run, file, done, 0, metrics);
    if (metrics.map !== undefined && metrics.map > run.bestMap) {
      run.bestMap = metrics.map;
      run.best = path.join(o.outDir, "checkpoints", "best.ckpt");
      await writeFileAtomic(run.best, fs.readFileSync(file));
    }
  }
}

/**
 * Runs one step's forward and backward pass again on `checkBackend`, from the
 * same weights and batch, and measures how far it lands from `r`, the
 * training backend's. The weights are copied there (read with `await data()`,
 * which every backend serves; WebGPU in Deno has no synchronous read, so tfjs
 * could not move them itself), and the copies are freed after the step.
 */
async function checkStep(
  r: GradOutputs,
  checkBackend: string,
  backend: string,
  threads: number,
  model: TrainingModel,
  step: (params: ParamMap, trainable: tf.Variable[]) => GradOutputs,
): Promise<{ check_loss: number; check_grad_diff: number }> {
  const entries = [...model.params];
  const values = await Promise.all(entries.map(([, v]) => v.data()));
  const names = Object.keys(r.grads);
  const want = await Promise.all(names.map((n) => r.grads[n].data()));
  await setBackend(checkBackend, { threads });
  const copies: ParamMap = new Map();
  const byVariable = new Map<string, tf.Variable>();
  let c: GradOutputs | null = null;
  try {
    entries.forEach(([name, v], k) => {
      const t = tf.tensor(values[k], v.shape, v.dtype);
      const copy = tf.variable(t, v.trainable);
      t.dispose();
      copies.set(name, copy);
      byVariable.set(v.name, copy);
    });
    c = step(copies, model.trainable.map(([, v]) => byVariable.get(v.name)!));
    const got = await Promise.all(names.map((n) => c!.grads[byVariable.get(n)!.name].data()));
    // float64 sums of squares of the differences over all gradients
    let num = 0, den = 0;
    want.forEach((g, k) => {
      const h = got[k];
      for (let i = 0; i < g.length; i++) {
        const d = g[i] - h[i];
        num += d * d;
        den += g[i] * g[i];
      }
    });
    return { check_loss: (await c.loss.data())[0], check_grad_diff: Math.sqrt(num / den) };
  } finally {
    if (c) {
      tf.dispose([c.loss, c.loc, c.cls, ...Object.values(c.grads)]);
      for (const u of c.bn) tf.dispose([u.mean, u.variance]);
    }
    tf.dispose([...copies.values()]);
    await setBackend(backend, { threads });
  }
}

async function evaluateDuringTraining(
  graph: Graph,
  params: ParamMap,
  cfg: SsdConfig,
  classNames: string[],
  anchors: ReturnType<typeof anchorsOf>,
  quiet?: boolean,
): Promise<number[]> {
  const val = loadSplit(cfg.data, "val", { classNames });
  const gt = val.groundTruth();
  const bar = new Progress("eval", val.records.length, { unit: "img", quiet });
  const dets = await detectRecords(graph, params, val.records, {
    inputSize: cfg.model.input_size,
    anchors,
    scaleFactors: scaleFactorsOf(cfg),
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
