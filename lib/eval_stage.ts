/**
 * The eval stage on a trained checkpoint: rebuild the model from the config
 * stored in the checkpoint (or a given one), run it over an eval split, and
 * score the detections with the pycocotools-exact COCOeval.
 *
 * @module
 */
import { type BackendName, deviceDescription, deviceWarning, setBackend } from "./engine/mod.ts";
import { loadParams } from "./checkpoint.ts";
import { readAnyCheckpoint } from "./mindspore_convert.ts";
import type { CocoEvalResult, CocoGroundTruthJson } from "./coco_eval.ts";
import * as path from "node:path";
import { applyOverrides, validate } from "./config.ts";
import { InputError } from "./errors.ts";
import { type LoadedSplit, loadSplit } from "./dataset.ts";
import { detectRecords, labelToCategoryOf, type NamedDetection, scoreDetections } from "./evaluate.ts";
import { type Graph, initParams, type ParamMap } from "./graph.ts";
import { detectWithOnnx, loadOnnxModel, type OnnxProvider } from "./onnx_infer.ts";
import { Progress } from "./progress.ts";
import { createRng } from "./rng.ts";
import {
  anchorsOf,
  buildModel,
  checkConsistency,
  type DataConfig,
  dataSpec,
  loadSsdConfig,
  scaleFactorsOf,
  type SplitConfig,
  type SsdConfig,
  storedConfig,
} from "./ssd_config.ts";

/** A model restored from a checkpoint. */
export interface LoadedModel {
  cfg: SsdConfig;
  graph: Graph;
  params: ParamMap;
  classNames: string[];
}

/**
 * Restores a model on its config's backend: the checkpoint's own config
 * unless `configFile` is given, with `overrides` applied either way
 * (`--postprocess.min_score=0.01` rescoring a trained checkpoint).
 */
export async function loadModel(
  checkpoint: string,
  o: { configFile?: string; overrides?: Record<string, string>; backend?: BackendName } = {},
): Promise<LoadedModel> {
  // A MindSpore .ckpt carries no config: `configFile` names its model.
  const given = o.configFile ? loadSsdConfig(o.configFile, o.overrides) : undefined;
  const ckpt = readAnyCheckpoint(checkpoint, given).checkpoint;
  const cfg = given ?? storedConfig(applyOverrides(ckpt.header.config, o.overrides ?? {}), checkpoint);
  if (!o.configFile) checkConsistency(cfg, checkpoint);
  // `backend` runs the model elsewhere than it trained (the config keeps its own).
  await setBackend(o.backend ?? cfg.backend, { threads: cfg.threads ?? undefined });
  const graph = buildModel(cfg);
  const params = initParams(graph, createRng(0));
  loadParams(params, ckpt, { file: checkpoint });
  const classNames = ckpt.header.class_names.length ? ckpt.header.class_names : cfg.model.class_names;
  if (!classNames?.length) {
    throw new InputError("neither the checkpoint nor the config names the classes (model.class_names)", {
      file: checkpoint,
    });
  }
  return { cfg, graph, params, classNames };
}

/** What {@linkcode evaluateCheckpoint} returns. */
export interface EvalRun {
  result: CocoEvalResult;
  detections: NamedDetection[];
  images: number;
  /** Category id -> name, from the ground truth. */
  categoryNames: Map<number, string>;
  /** The ground truth the detections were scored against (COCO instances). */
  groundTruth: CocoGroundTruthJson;
  /** The folder of the split's image files (a COCO split), or null (MindRecord: the images are inside). */
  imageDir: string | null;
}

/** A detector over records: the tfjs checkpoint path or the ONNX path, same output. */
type Detect = (
  records: LoadedSplit["records"],
  labelToCategory: (label: number) => number,
  onProgress: (done: number) => void,
) => Promise<NamedDetection[]>;

/**
 * Runs `detect` over a split and scores it. Labels map to the ground truth's
 * category ids by class name (labels are contiguous; COCO ids are not).
 */
async function scoreSplit(data: LoadedSplit, classNames: string[], detect: Detect, quiet?: boolean): Promise<EvalRun> {
  const gt = data.groundTruth();
  const toCategory = labelToCategoryOf(gt, classNames, data.split.annotations ?? data.split.path ?? "ground truth");
  const bar = new Progress("eval", data.records.length, { unit: "img", quiet });
  const detections = await detect(data.records, toCategory, (d) => bar.update(d));
  bar.done();
  return {
    result: scoreDetections(gt, detections),
    detections,
    images: data.records.length,
    categoryNames: new Map(gt.categories.map((c) => [Number(c.id), c.name ?? String(c.id)])),
    groundTruth: gt,
    imageDir: data.split.format === "coco" ? data.split.images : null,
  };
}

/** What changes a run's eval data: `--data FILE` (with `--images DIR`) and `--data.*` overrides. */
export interface EvalDataOptions {
  file?: string;
  images?: string;
  overrides?: Record<string, string>;
}

/**
 * The eval data of a run: its config's `data` section (`base`), with `--data.*`
 * overrides applied (`data.root` relocates every relative path) and, when
 * `file` is given, its `val` split replaced by that file (a COCO json with
 * `images`, else a MindRecord shard), resolved against the working folder.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const split = { format: "mindrecord", path: "a/ssd_eval.mindrecord0", images: null, annotations: null, limit: null } as const;
 * const base = { root: "runs/data", train: split, val: split, policy: "error" } as const;
 * const d = evalDataConfig(base, { overrides: { "data.root": "/mnt/data" } });
 * assertEquals([d.root, d.val.path], ["/mnt/data", "a/ssd_eval.mindrecord0"]);
 * ```
 */
export function evalDataConfig(base: DataConfig | null, o: EvalDataOptions = {}): DataConfig {
  const empty = { format: "coco", path: null, images: null, annotations: null, limit: null };
  const raw = { data: base ?? { train: empty, val: empty } };
  const overrides = Object.fromEntries(Object.entries(o.overrides ?? {}).filter(([k]) => k.startsWith("data.")));
  const data = (validate(applyOverrides(raw, overrides), {
    type: "object",
    fields: { data: dataSpec },
  }) as { data: DataConfig }).data;
  if (o.file) {
    const json = o.file.toLowerCase().endsWith(".json");
    data.val = {
      ...data.val,
      format: json ? "coco" : "mindrecord",
      path: path.resolve(o.file),
      images: json && o.images ? path.resolve(o.images) : json ? data.val.images : null,
      // A COCO json is its own ground truth; a MindRecord keeps the config's json unless told otherwise.
      annotations: json && !("data.val.annotations" in overrides) ? null : data.val.annotations,
    };
  }
  if (!data.val.path) {
    throw new InputError(
      "no eval data: the run's config names no val split (data.val.path); give --data FILE or --data.val.path=FILE",
    );
  }
  return data;
}

/**
 * Runs a checkpoint over a split (the config's `data.val` unless `split` is
 * given) and scores it.
 */
export async function evaluateCheckpoint(
  checkpoint: string,
  o: {
    configFile?: string;
    overrides?: Record<string, string>;
    /** The eval data (default: the model config's `data`, whose `val` split is read). */
    data?: DataConfig;
    /** Or just the split to score, its paths relative to the working folder. */
    split?: Partial<SplitConfig>;
    /** Or the model config's own `data`, changed by {@linkcode evalDataConfig} (`--data`, `--data.*` flags). */
    dataOptions?: EvalDataOptions;
    batchSize?: number;
    /** The backend to run on (default: the config's). */
    backend?: BackendName;
    quiet?: boolean;
  } = {},
): Promise<EvalRun> {
  const model = await loadModel(checkpoint, o);
  const dataCfg = o.split
    ? splitOnly(o.split, model.cfg.data.policy)
    : o.data ?? (o.dataOptions ? evalDataConfig(model.cfg.data, o.dataOptions) : model.cfg.data);
  const data = loadSplit(dataCfg, "val", { classNames: model.classNames });
  const backend = o.backend ?? model.cfg.backend;
  if (!o.quiet) {
    console.error(`backend: ${deviceDescription(backend)}`);
    const warning = deviceWarning(backend);
    if (warning) console.error(warning);
  }
  return scoreSplit(
    data,
    model.classNames,
    (records, labelToCategory, onProgress) =>
      detectRecords(model.graph, model.params, records, {
        inputSize: model.cfg.model.input_size,
        anchors: anchorsOf(model.cfg),
        scaleFactors: scaleFactorsOf(model.cfg),
        augment: model.cfg.augment,
        postprocess: model.cfg.postprocess,
        activation: model.cfg.model.score_activation,
        batchSize: o.batchSize,
        labelToCategory,
        onProgress,
      }),
    o.quiet,
  );
}

function splitOnly(split: Partial<SplitConfig>, policy: DataConfig["policy"]): DataConfig {
  const full: SplitConfig = { format: "coco", path: null, images: null, annotations: null, limit: null, ...split };
  return { root: ".", train: full, val: full, policy };
}

/**
 * Scores an exported ONNX model on a split, exactly as {@linkcode evaluateCheckpoint}
 * scores a checkpoint (the ModelZoo's ONNX evaluation).
 */
export async function evaluateOnnx(
  modelFile: string,
  o: {
    configFile?: string;
    /** The eval data (default: the model config's `data`, whose `val` split is read). */
    data?: DataConfig;
    /** Or just the split to score, its paths relative to the working folder. */
    split?: Partial<SplitConfig>;
    /** Or the model config's own `data`, changed by {@linkcode evalDataConfig} (`--data`, `--data.*` flags). */
    dataOptions?: EvalDataOptions;
    batchSize?: number;
    threads?: number;
    /** onnxruntime's execution provider (default cpu). */
    provider?: OnnxProvider;
    quiet?: boolean;
  } = {},
): Promise<EvalRun> {
  const model = await loadOnnxModel(modelFile, { config: o.configFile, threads: o.threads, provider: o.provider });
  const dataCfg = o.split
    ? splitOnly(o.split, "error")
    : o.data ?? (o.dataOptions ? evalDataConfig(model.config.data, o.dataOptions) : model.config.data);
  if (!dataCfg) {
    throw new InputError("no eval data: give --data FILE or a config with a data section", { file: modelFile });
  }
  const data = loadSplit(dataCfg, "val", { classNames: model.config.class_names });
  return scoreSplit(
    data,
    model.config.class_names,
    (records, labelToCategory, onProgress) =>
      detectWithOnnx(model, records, { batchSize: o.batchSize, labelToCategory, onProgress }),
    o.quiet,
  );
}
