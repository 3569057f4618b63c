/**
 * The export stage on a trained checkpoint: rebuild the network from the
 * checkpoint's own config (or a given one) and write `out/model.onnx` and
 * `out/config.yaml`. `deno task export` and the demo both call it.
 *
 * @module
 */
import { readAnyCheckpoint } from "./mindspore_convert.ts";
import { InputError } from "./errors.ts";
import {
  exportModel,
  type ExportModelOptions,
  type OnnxModelConfig,
  paramValuesFromCheckpoint,
} from "./onnx_export.ts";
import {
  anchorsOf,
  buildModel,
  checkConsistency,
  loadSsdConfig,
  scaleFactorsOf,
  type SsdConfig,
  storedConfig,
} from "./ssd_config.ts";

/** What {@linkcode exportCheckpoint} wrote. */
export interface ExportResult {
  model: string;
  config: string;
  info: OnnxModelConfig;
  bytes: number;
  cfg: SsdConfig;
  anchors: number;
  classNames: string[];
}

/** Exports a checkpoint to ONNX with its inference config. */
export async function exportCheckpoint(
  checkpoint: string,
  o: ExportModelOptions & { configFile?: string },
): Promise<ExportResult> {
  // A MindSpore .ckpt carries no config: `configFile` names its model.
  const given = o.configFile ? loadSsdConfig(o.configFile) : undefined;
  const ckpt = readAnyCheckpoint(checkpoint, given).checkpoint;
  let cfg: SsdConfig;
  if (given) cfg = given;
  else {
    cfg = storedConfig(ckpt.header.config, checkpoint);
    checkConsistency(cfg, checkpoint);
  }
  const classNames = ckpt.header.class_names?.length ? ckpt.header.class_names : cfg.model.class_names;
  if (!classNames) {
    throw new InputError("neither the checkpoint nor the config names the classes", { file: checkpoint });
  }
  const anchors = anchorsOf(cfg);
  const graph = buildModel(cfg, anchors);
  const values = paramValuesFromCheckpoint(graph, ckpt, checkpoint);
  const r = await exportModel(graph, values, cfg, { classNames, anchors, scaleFactors: scaleFactorsOf(cfg) }, o);
  return { ...r, cfg, anchors: anchors.count, classNames };
}
