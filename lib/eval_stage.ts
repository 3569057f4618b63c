/**
 * The eval stage on a trained checkpoint: rebuild the model from the config
 * stored in the checkpoint (or a given one), run it over an eval split, and
 * score the detections with the pycocotools-exact COCOeval.
 *
 * @module
 */
import { setBackend } from "./backend.ts";
import { loadParams, readCheckpoint } from "./checkpoint.ts";
import type { CocoEvalResult } from "./coco_eval.ts";
import { type LoadedSplit, loadSplit } from "./dataset.ts";
import { detectRecords, type NamedDetection, scoreDetections } from "./evaluate.ts";
import { type Graph, initParams, type ParamMap } from "./graph.ts";
import { detectWithOnnx, loadOnnxModel } from "./onnx_infer.ts";
import { Progress } from "./progress.ts";
import { createRng } from "./rng.ts";
import {
  anchorsOf,
  buildModel,
  checkConsistency,
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
 * unless `configFile` is given.
 */
export async function loadModel(
  checkpoint: string,
  o: { configFile?: string; overrides?: Record<string, string> } = {},
): Promise<LoadedModel> {
  const ckpt = readCheckpoint(checkpoint);
  const cfg = o.configFile ? loadSsdConfig(o.configFile, o.overrides) : storedConfig(ckpt.header.config, checkpoint);
  if (!o.configFile) checkConsistency(cfg, checkpoint);
  await setBackend(cfg.backend, { threads: cfg.threads ?? undefined });
  const graph = buildModel(cfg);
  const params = initParams(graph, createRng(0));
  loadParams(params, ckpt, { file: checkpoint });
  return { cfg, graph, params, classNames: ckpt.header.class_names };
}

/** What {@linkcode evaluateCheckpoint} returns. */
export interface EvalRun {
  result: CocoEvalResult;
  detections: NamedDetection[];
  images: number;
  /** Category id -> name, from the ground truth. */
  categoryNames: Map<number, string>;
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
  const idByName = new Map(gt.categories.map((c) => [c.name, Number(c.id)]));
  const bar = new Progress("eval", data.records.length, { unit: "img", quiet });
  const detections = await detect(
    data.records,
    (label) => idByName.get(classNames[label]) ?? label,
    (d) => bar.update(d),
  );
  bar.done();
  return {
    result: scoreDetections(gt, detections),
    detections,
    images: data.records.length,
    categoryNames: new Map(gt.categories.map((c) => [Number(c.id), c.name ?? String(c.id)])),
  };
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
    split?: SplitConfig;
    batchSize?: number;
    quiet?: boolean;
  } = {},
): Promise<EvalRun> {
  const model = await loadModel(checkpoint, o);
  const data = loadSplit(o.split ?? model.cfg.data.val, { policy: model.cfg.data.policy, which: "val" });
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

/**
 * Scores an exported ONNX model on a split, exactly as {@linkcode evaluateCheckpoint}
 * scores a checkpoint (the ModelZoo's ONNX evaluation).
 */
export async function evaluateOnnx(
  modelFile: string,
  split: SplitConfig,
  o: { configFile?: string; batchSize?: number; threads?: number; quiet?: boolean } = {},
): Promise<EvalRun> {
  const model = await loadOnnxModel(modelFile, { config: o.configFile, threads: o.threads });
  const data = loadSplit(split, { which: "val" });
  return scoreSplit(
    data,
    model.config.class_names,
    (records, labelToCategory, onProgress) =>
      detectWithOnnx(model, records, { batchSize: o.batchSize, labelToCategory, onProgress }),
    o.quiet,
  );
}
