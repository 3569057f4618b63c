/**
 * The one typed, validated configuration of an SSD run, composed from the
 * spec fragments each part exports (anchors, box coder, matcher, loss,
 * augmentation, post-processing, learning-rate schedule), plus the model,
 * training and data sections. `buildModel` turns its `model` section into a
 * graph.
 *
 * @module
 */
import * as path from "node:path";
import { type AugmentConfig, augmentSpec } from "./augment.ts";
import { type BoxCoderConfig, boxCoderSpec, scaleFactorsFromConfig } from "./box_coder.ts";
import { loadConfig, type Spec, validate } from "./config.ts";
import {
  type DefaultBoxes,
  type DefaultBoxesConfig,
  defaultBoxesFromConfig,
  defaultBoxesSpec,
  featureSizesOf,
} from "./default_boxes.ts";
import { ConfigError } from "./errors.ts";
import { BN_DEFAULTS, type Graph, type ParamSpec } from "./graph.ts";
import { type LossConfig, lossSpec } from "./loss.ts";
import { type LrScheduleConfig, lrScheduleSpec } from "./lr_schedule.ts";
import { type MatcherConfig, matcherSpec } from "./matcher.ts";
import { type PostprocessConfig, postprocessSpec } from "./postprocess.ts";
import { type SsdFpnConfig, ssdFpnConfigOptions, ssdFpnSpec, ssdMobileNetV1Fpn, ssdResNet50Fpn } from "./ssd_fpn.ts";
import {
  ssdMobileNetV2,
  type SsdMobileNetV2Config,
  ssdMobileNetV2ConfigOptions,
  ssdMobileNetV2Spec,
} from "./ssd_mobilenet_v2.ts";
import { resnetInitOverrides } from "./resnet50.ts";
import { ssdTiny } from "./ssd_tiny.ts";
import {
  type SsdMobileNetV1TfodConfig,
  ssdMobileNetV1TfodFromConfig,
  ssdMobileNetV1TfodSpec,
} from "./ssd_mobilenet_v1_tfod.ts";
import { ssdMobileNetV1300 } from "./ssd_mobilenet_v1_300.ts";
import { ssdVgg16 } from "./ssd_vgg16.ts";

/** Architectures the workbench builds. */
export const ARCHS = [
  "ssd300_vgg16",
  "ssd_tiny",
  "ssd300_mobilenetv2",
  "ssd_mobilenetv1_fpn",
  "ssd_resnet50_fpn",
  "ssd_mobilenetv1_tfod",
  "ssd_mobilenetv1_300",
] as const;

/** The `model` section. */
export interface ModelConfig {
  arch: (typeof ARCHS)[number];
  /** Classes including background (tutorial 81 for COCO). */
  num_classes: number;
  /** Class names, background first; null takes them from the dataset. */
  class_names: string[] | null;
  /** Square input side in pixels. */
  input_size: number;
  /** Head style: tutorial (dw3x3 + BN + ReLU6 + 1x1) or conv3x3. */
  head: "tutorial" | "conv3x3";
  /** Activation turning class logits into scores at inference. */
  score_activation: "sigmoid" | "softmax";
  /** Weight initialisation: the tutorial's TruncatedNormal(init_sigma), or He normal. */
  init: "truncated_normal" | "he_normal";
  init_sigma: number;
  bn_eps: number;
  bn_momentum: number;
  /** ssd300_vgg16: ReLU after fc6, fc7 and extra blocks (the tutorial has none). */
  extra_relu: boolean;
  /** ssd300_vgg16: drop probability of the dropout after fc6 and after fc7 in training (0: none). */
  dropout: number;
  /** ssd_tiny: channels per stage. */
  channels: number[] | null;
  /** Architecture options of the ModelZoo variants (width multiplier, FPN channels ...), passed through. */
  options: Record<string, unknown>;
}

/** The `train` section. */
export interface TrainConfig extends LrScheduleConfig {
  epochs: number;
  batch_size: number;
  momentum: number;
  weight_decay: number;
  /** Momentum's `loss_scale`: the decayed gradient is divided by this (see lib/optimizer.ts). */
  loss_scale: number;
  /** The ModelZoo TrainingWrapper's `sens`: gradients are of the loss times this (see lib/optimizer.ts). */
  sens: number;
  /** Save a checkpoint every N epochs (and always at the end). */
  checkpoint_every: number;
  /** Also write each checkpoint as a MindSpore `.ckpt` (OUT/mindspore/), with its Momentum state. */
  save_mindspore: boolean;
  /** Evaluate on the val split every N epochs (0: only at the end). */
  eval_every: number;
  /** Parameter name patterns (regular expressions) that are not trained. */
  freeze: string[];
  /** Batches prepared ahead of the model. */
  prefetch: number;
  /**
   * MiB of decoded, resized images kept between epochs (lib/image_cache.ts): an uncropped sample is decoded once.
   * 0 keeps none. The pixels are the same either way.
   */
  image_cache_mb: number;
  /**
   * Gradient replicas: 1 trains on this thread; N > 1 adds N - 1 workers, one per extra core. Under MPI, each
   * rank runs this many.
   */
  replicas: number;
  /**
   * Under MPI: batch norm normalises by the global batch's statistics, summed over the ranks each layer
   * (SyncBatchNorm), instead of each part's own. Needs `replicas: 1`.
   */
  sync_bn: boolean;
  /**
   * Gradient checkpointing: run the network in this many segments and recompute each in the backward pass
   * (lib/engine/recompute.ts). 1 is off; more segments trade one extra forward pass for a much lower memory peak.
   */
  segments: number;
}

/** Dataset formats a split can be read from. */
export const DATA_FORMATS = ["coco", "voc", "txt", "mindrecord"] as const;

/** One split of a dataset. Relative paths resolve against `data.root` (see {@linkcode resolveSplit}). */
export interface SplitConfig {
  format: (typeof DATA_FORMATS)[number];
  /** COCO instances json, VOC root (with Annotations/), ModelZoo TXT file, or any shard of a MindRecord set. */
  path: string | null;
  /** Image folder: COCO's, VOC's (default ROOT/JPEGImages), the TXT lines' IMAGE_DIR (default the file's folder). */
  images: string | null;
  /**
   * A COCO instances json to score this split against, matched by image id: the tutorial evaluates
   * `ssd_eval.mindrecord0` against `annotations/instances_val2017.json` (its `anno_json`). Null: the split's own
   * boxes (a COCO split's json).
   */
  annotations: string | null;
  /** Use only the first N images (null: all). */
  limit: number | null;
}

/** The `data` section. */
export interface DataConfig {
  /** Folder that relative dataset paths resolve against (`--data.root=DIR` relocates them all). */
  root: string;
  train: SplitConfig;
  val: SplitConfig;
  /** Bad annotation policy: error, clip or drop. */
  policy: "error" | "clip" | "drop";
}

/** A complete run configuration. */
export interface SsdConfig {
  /** The engine's `BACKENDS` (spelled out here: the engine imports this file; tests/webgpu_test.ts checks both agree). */
  backend: "wasm" | "cpu" | "tensorflow" | "onnxruntime" | "webgpu";
  /**
   * Threads of the `onnxruntime` backend's kernels per replica; null: the cores divided among the
   * `train.replicas` (each replica runs its own kernels).
   */
  threads: number | null;
  seed: number;
  model: ModelConfig;
  anchors: DefaultBoxesConfig;
  box_coder: BoxCoderConfig;
  matcher: MatcherConfig;
  loss: LossConfig;
  augment: AugmentConfig;
  postprocess: PostprocessConfig;
  train: TrainConfig;
  data: DataConfig;
}

const split: Spec = {
  type: "object",
  fields: {
    format: { type: "string", enum: DATA_FORMATS, default: "coco" },
    path: { type: "string", nullable: true },
    images: { type: "string", nullable: true },
    annotations: { type: "string", nullable: true },
    limit: { type: "number", int: true, min: 1, nullable: true },
  },
};

/** Schema of {@linkcode DataConfig}. */
export const dataSpec: Spec = {
  type: "object",
  fields: {
    root: { type: "string", default: "runs/data" },
    train: split,
    val: split,
    policy: { type: "string", enum: ["error", "clip", "drop"], default: "error" },
  },
};

/** Schema of {@linkcode SsdConfig}. */
export const ssdConfigSpec: Spec = {
  type: "object",
  fields: {
    backend: { type: "string", enum: ["wasm", "cpu", "tensorflow", "onnxruntime", "webgpu"], default: "onnxruntime" },
    threads: { type: "number", int: true, min: 1, nullable: true },
    seed: { type: "number", int: true, default: 1 },
    model: {
      type: "object",
      fields: {
        arch: { type: "string", enum: ARCHS },
        num_classes: { type: "number", int: true, min: 2 },
        class_names: { type: "array", items: { type: "string" }, nullable: true },
        input_size: { type: "number", int: true, min: 16 },
        head: { type: "string", enum: ["tutorial", "conv3x3"], default: "tutorial" },
        score_activation: { type: "string", enum: ["sigmoid", "softmax"], default: "sigmoid" },
        init: { type: "string", enum: ["truncated_normal", "he_normal"], default: "truncated_normal" },
        init_sigma: { type: "number", min: 0, default: 0.02 },
        bn_eps: { type: "number", min: 0, default: BN_DEFAULTS.modelzooSsd.eps },
        bn_momentum: { type: "number", min: 0, max: 1, default: BN_DEFAULTS.modelzooSsd.momentum },
        extra_relu: { type: "boolean", default: false },
        dropout: { type: "number", min: 0, max: 0.99, default: 0 },
        channels: { type: "array", items: { type: "number", int: true, min: 1 }, nullable: true },
        options: { type: "any", default: {} },
      },
    },
    anchors: defaultBoxesSpec,
    box_coder: boxCoderSpec,
    matcher: matcherSpec,
    loss: lossSpec,
    augment: augmentSpec,
    postprocess: postprocessSpec,
    train: {
      type: "object",
      fields: {
        ...(lrScheduleSpec as { fields: Record<string, Spec> }).fields,
        epochs: { type: "number", int: true, min: 1 },
        batch_size: { type: "number", int: true, min: 1 },
        momentum: { type: "number", min: 0, max: 1, default: 0.9 },
        weight_decay: { type: "number", min: 0, default: 0.00015 },
        loss_scale: { type: "number", min: 0, default: 1 },
        sens: { type: "number", min: 0, default: 1 },
        checkpoint_every: { type: "number", int: true, min: 1, default: 1 },
        save_mindspore: { type: "boolean", default: false },
        eval_every: { type: "number", int: true, min: 0, default: 0 },
        freeze: { type: "array", items: { type: "string" }, default: [] },
        prefetch: { type: "number", int: true, min: 1, default: 3 },
        image_cache_mb: { type: "number", min: 0, default: 0 },
        replicas: { type: "number", int: true, min: 1, default: 1 },
        sync_bn: { type: "boolean", default: false },
        segments: { type: "number", int: true, min: 1, default: 1 },
      },
    },
    data: dataSpec,
  },
};

/**
 * Kernel threads per replica (the `onnxruntime` sessions', and the SIMD kernels' on `wasm` too): `threads`, or the
 * cores shared among the replicas of all `localRanks` MPI ranks on this machine, so `mpirun -np 2` on two cores
 * does not oversubscribe them.
 */
export function kernelThreads(cfg: SsdConfig, cores = navigator.hardwareConcurrency, localRanks = 1): number {
  return cfg.threads ?? Math.max(1, Math.floor(cores / (cfg.train.replicas * localRanks)));
}

/** Keys that earlier versions wrote into checkpoints' configs and this one no longer has. */
const RETIRED_KEYS = [["train", "workers"]];

/**
 * The run config stored in a checkpoint, validated: keys this version retired
 * are dropped, keys it added get their defaults, so older checkpoints still
 * evaluate, export and resume. Anything else unknown is still an error naming `file`.
 */
export function storedConfig(raw: Record<string, unknown>, file?: string): SsdConfig {
  const copy = structuredClone(raw);
  for (const [section, key] of RETIRED_KEYS) {
    const s = copy[section];
    if (s && typeof s === "object") delete (s as Record<string, unknown>)[key];
  }
  // Before data.root existed, dataset paths were relative to the working folder.
  const data = copy.data as Record<string, unknown> | undefined;
  if (data && typeof data === "object" && !("root" in data)) data.root = ".";
  return validate(copy, ssdConfigSpec, { file }) as SsdConfig;
}

/**
 * A split with its relative paths resolved against `root` (absolute paths and nulls are kept).
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const s = { format: "mindrecord", path: "a/ssd.mindrecord0", images: null, annotations: "/x.json", limit: null } as const;
 * assertEquals(resolveSplit(s, "runs/data").path, "runs/data/a/ssd.mindrecord0");
 * assertEquals(resolveSplit(s, "runs/data").annotations, "/x.json");
 * ```
 */
export function resolveSplit(split: SplitConfig, root: string): SplitConfig {
  const r = (p: string | null) => (p === null || path.isAbsolute(p) ? p : path.join(root, p));
  return { ...split, path: r(split.path), images: r(split.images), annotations: r(split.annotations) };
}

/** Reads and validates a run config (YAML, with `extends` and `--key=value` overrides). */
export function loadSsdConfig(file: string, overrides: Record<string, string> = {}): SsdConfig {
  const cfg = loadConfig<SsdConfig>(file, ssdConfigSpec, overrides);
  checkConsistency(cfg, file);
  return cfg;
}

/** Cross-section checks that a schema cannot express. */
export function checkConsistency(cfg: SsdConfig, file?: string): void {
  const names = cfg.model.class_names;
  if (names && names.length !== cfg.model.num_classes) {
    throw new ConfigError(`has ${names.length} names but model.num_classes is ${cfg.model.num_classes}`, {
      file,
      key: "model.class_names",
    });
  }
  if (cfg.anchors.img_shape[0] !== cfg.model.input_size) {
    throw new ConfigError(`is ${cfg.anchors.img_shape[0]} but model.input_size is ${cfg.model.input_size}`, {
      file,
      key: "anchors.img_shape",
    });
  }
}

/** The default boxes of a config. */
export function anchorsOf(cfg: SsdConfig, stored?: ArrayLike<number>): DefaultBoxes {
  return defaultBoxesFromConfig(cfg.anchors, { stored });
}

/** The box coder's scale factors of a config. */
export function scaleFactorsOf(cfg: SsdConfig): number[] {
  return scaleFactorsFromConfig(cfg.box_coder);
}

/** Boxes per cell of each level, from the anchors and the square feature sizes. */
export function boxesPerCell(anchors: DefaultBoxes, featureSizes: number[]): number[] {
  return anchors.perLayer.map((n, i) => n / (featureSizes[i] * featureSizes[i]));
}

/** Validates `model.options` against an architecture's own spec, naming keys as `model.options.<key>`. */
function archOptions<T>(cfg: SsdConfig, spec: Spec): T {
  try {
    return validate(cfg.model.options ?? {}, spec) as T;
  } catch (e) {
    if (e instanceof ConfigError) throw new ConfigError(e.message.replace(/^key "/, 'key "model.options.'));
    throw e;
  }
}

/** Model builders by architecture. */
export const MODEL_BUILDERS: Partial<Record<ModelConfig["arch"], (cfg: SsdConfig, perCell: number[]) => Graph>> = {
  ssd300_vgg16: (cfg, perCell) =>
    ssdVgg16({
      inputSize: cfg.model.input_size,
      numClasses: cfg.model.num_classes,
      boxesPerCell: perCell,
      extraRelu: cfg.model.extra_relu,
      dropout: cfg.model.dropout,
      head: cfg.model.head,
      bnEps: cfg.model.bn_eps,
      bnMomentum: cfg.model.bn_momentum,
    }),
  ssd_tiny: (cfg, perCell) =>
    ssdTiny({
      inputSize: cfg.model.input_size,
      numClasses: cfg.model.num_classes,
      boxesPerCell: perCell,
      channels: cfg.model.channels ?? [16, 32, 64, 128, 128, 128, 128],
      head: cfg.model.head,
      bnMomentum: cfg.model.bn_momentum,
    }),
  ssd300_mobilenetv2: (cfg, perCell) =>
    ssdMobileNetV2({
      inputSize: cfg.model.input_size,
      numClasses: cfg.model.num_classes,
      boxesPerCell: perCell,
      bnEps: cfg.model.bn_eps,
      bnMomentum: cfg.model.bn_momentum,
      ...ssdMobileNetV2ConfigOptions(archOptions<SsdMobileNetV2Config>(cfg, ssdMobileNetV2Spec)),
    }),
  ssd_mobilenetv1_fpn: (cfg, perCell) =>
    ssdMobileNetV1Fpn({
      inputSize: cfg.model.input_size,
      numClasses: cfg.model.num_classes,
      boxesPerCell: perCell,
      ...ssdFpnConfigOptions(archOptions<SsdFpnConfig>(cfg, ssdFpnSpec)),
    }),
  ssd_resnet50_fpn: (cfg, perCell) =>
    ssdResNet50Fpn({
      inputSize: cfg.model.input_size,
      numClasses: cfg.model.num_classes,
      boxesPerCell: perCell,
      ...ssdFpnConfigOptions(archOptions<SsdFpnConfig>(cfg, ssdFpnSpec)),
    }),
  ssd_mobilenetv1_300: (cfg, perCell) =>
    ssdMobileNetV1300({
      inputSize: cfg.model.input_size,
      numClasses: cfg.model.num_classes,
      boxesPerCell: perCell,
      bnEps: cfg.model.bn_eps,
      bnMomentum: cfg.model.bn_momentum,
    }),
  ssd_mobilenetv1_tfod: (cfg) =>
    ssdMobileNetV1TfodFromConfig(archOptions<SsdMobileNetV1TfodConfig>(cfg, ssdMobileNetV1TfodSpec), {
      inputSize: cfg.model.input_size,
      numClasses: cfg.model.num_classes,
      numDefault: cfg.anchors.num_default,
    }),
};

/** Parameter initialisers an architecture needs beyond the scheme (ResNet zero-initialises its last BN gammas). */
export function initOverridesOf(cfg: SsdConfig): Record<string, (spec: ParamSpec) => Float32Array> {
  return cfg.model.arch === "ssd_resnet50_fpn" ? resnetInitOverrides() : {};
}

/**
 * Builds the network a config describes and checks that its heads produce
 * exactly one prediction per default box.
 */
export function buildModel(cfg: SsdConfig, anchors: DefaultBoxes = anchorsOf(cfg)): Graph {
  const builder = MODEL_BUILDERS[cfg.model.arch];
  if (!builder) throw new ConfigError(`architecture ${cfg.model.arch} is not available`, { key: "model.arch" });
  const sizes = featureSizesOf(cfg.anchors);
  const perCell = anchors.perLayer.length === sizes.length ? boxesPerCell(anchors, sizes) : [];
  try {
    return builder(cfg, perCell);
  } catch (e) {
    // A builder rejects shapes that do not fit together (a map too small, channels that disagree): in a
    // config, that is the model section's doing.
    if (e instanceof RangeError) throw new ConfigError(`${cfg.model.arch}: ${e.message}`, { key: "model", cause: e });
    throw e;
  }
}
