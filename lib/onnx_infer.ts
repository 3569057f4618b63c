/**
 * Inference with an exported model on onnxruntime-node: load the model and its
 * config (from `config.yaml` or the model's own metadata), preprocess images
 * exactly as eval does (lib/augment.ts `evalSample`), run batches, and turn the
 * outputs into detections through the shared post-processing (lib/postprocess.ts).
 *
 * @module
 */
import * as ort from "onnxruntime-node";
import * as fs from "node:fs";
import * as path from "node:path";
import { type AugmentConfig, evalSample, imageBytes } from "./augment.ts";
import { type BoxCoderConfig, boxCoderSpec, scaleFactorsFromConfig } from "./box_coder.ts";
import { parseYaml, validate } from "./config.ts";
import {
  type DefaultBoxes,
  type DefaultBoxesConfig,
  defaultBoxesFromConfig,
  defaultBoxesSpec,
} from "./default_boxes.ts";
import type { DetectionRecord } from "./detection_record.ts";
import { preparedBatches } from "./data_loader.ts";
import { InputError } from "./errors.ts";
import { ensureRuntimeDir } from "./engine/mod.ts";
import { type DataConfig, dataSpec } from "./ssd_config.ts";
import { type NamedDetection, toCocoResults } from "./evaluate.ts";
import {
  CONFIG_METADATA_KEY,
  decodeOnnx,
  onnxMetadata,
  type OnnxModelConfig,
  onnxModelConfigSpec,
} from "./onnx_export.ts";
import {
  type Detections,
  postprocess,
  type PostprocessConfig,
  postprocessOptionsFromConfig,
  postprocessSpec,
} from "./postprocess.ts";

/** onnxruntime session settings. */
export interface SessionOptions {
  /** intraOpNumThreads; onnxruntime's default (one per core) when absent. */
  threads?: number;
  /** Graph optimisation level (default `all`). */
  optimization?: ort.InferenceSession.SessionOptions["graphOptimizationLevel"];
  /** Operator scheduling (default `sequential`). */
  executionMode?: "sequential" | "parallel";
  /**
   * Where onnxruntime runs the network: `cpu` (default) or `webgpu`, its
   * WebGPU execution provider (Dawn over Vulkan/Metal/DX12, bundled in
   * onnxruntime-node's Linux x64, macOS and Windows builds).
   */
  provider?: OnnxProvider;
}

/** onnxruntime execution providers the workbench offers. */
export const ONNX_PROVIDERS = ["cpu", "webgpu"] as const;
/** An onnxruntime execution provider. */
export type OnnxProvider = (typeof ONNX_PROVIDERS)[number];

/**
 * Why onnxruntime's WebGPU provider could not start, as an error that says
 * what to do. Its Dawn refuses adapters that lack Vulkan features it needs,
 * Mesa's lavapipe among them ("No supported adapters").
 */
function webgpuProviderError(e: unknown, file: string): InputError {
  const msg = (e as Error).message ?? String(e);
  return new InputError(
    `onnxruntime's WebGPU provider could not start: ${msg.split("\n")[0]}\n` +
      "It needs a GPU whose Vulkan (Linux), Metal or DX12 driver Dawn accepts; Mesa's software lavapipe is " +
      "refused. Use --backend onnxruntime (CPU) here, or see README, GPU.",
    { file, cause: e },
  );
}

/** A loaded model: session, config, anchors and coder. */
export interface OnnxModel {
  file: string;
  session: ort.InferenceSession;
  config: OnnxModelConfig;
  anchors: DefaultBoxes;
  scaleFactors: number[];
  /** Post-processing section, validated. */
  postprocess: PostprocessConfig;
  /** Square input side. */
  inputSize: number;
  /** Columns of `scores` per box. */
  scoreColumns: number;
}

/**
 * Parses and validates an inference config (YAML text of `config.yaml` or of the
 * model's metadata); errors name `file` and the key.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * import { loadSsdConfig } from "./ssd_config.ts";
 * import { onnxConfigYaml, onnxModelConfig } from "./onnx_export.ts";
 * const cfg = loadSsdConfig("configs/demo.yaml");
 * const text = onnxConfigYaml(onnxModelConfig(cfg, { classNames: cfg.model.class_names!, numAnchors: 2152 }));
 * assertEquals(parseOnnxModelConfig(text, "config.yaml").preprocess.input_size, 160);
 * ```
 */
export function parseOnnxModelConfig(text: string, file: string): OnnxModelConfig {
  const raw = parseYaml(text, file);
  const c = validate(raw, onnxModelConfigSpec, { file }) as OnnxModelConfig;
  c.anchors = validate(c.anchors, defaultBoxesSpec, { file, key: "anchors" }) as DefaultBoxesConfig;
  c.box_coder = validate(c.box_coder, boxCoderSpec, { file, key: "box_coder" }) as BoxCoderConfig;
  c.postprocess = validate(c.postprocess, postprocessSpec, { file, key: "postprocess" }) as PostprocessConfig;
  if (c.data !== null) c.data = validate(c.data, dataSpec, { file, key: "data" }) as DataConfig;
  if (c.class_names.length !== c.num_classes) {
    throw new InputError(`has ${c.class_names.length} class names but num_classes ${c.num_classes}`, { file });
  }
  return c;
}

/** Reads the inference config: from `configFile` when given, else from the model's metadata. */
export function readOnnxModelConfig(modelFile: string, bytes: Uint8Array, configFile?: string): OnnxModelConfig {
  if (configFile) {
    let text: string;
    try {
      text = fs.readFileSync(configFile, "utf8");
    } catch (e) {
      throw new InputError(`cannot read config: ${(e as Error).message}`, { file: configFile });
    }
    return parseOnnxModelConfig(text, configFile);
  }
  const meta = onnxMetadata(decodeOnnx(bytes, modelFile));
  const text = meta[CONFIG_METADATA_KEY];
  if (!text) {
    throw new InputError(
      `the model carries no "${CONFIG_METADATA_KEY}" metadata, so its classes, anchors and preprocessing are unknown; ` +
        "pass --config with the config.yaml that deno task export wrote beside it",
      { file: modelFile },
    );
  }
  return parseOnnxModelConfig(text, `${modelFile} (metadata ${CONFIG_METADATA_KEY})`);
}

/**
 * Opens a model with onnxruntime and checks it against its config: input name,
 * shape [N, S, S, 3] and type, and the `loc` / `scores` outputs.
 */
export async function loadOnnxModel(
  file: string,
  o: SessionOptions & { config?: string } = {},
): Promise<OnnxModel> {
  let bytes: Uint8Array;
  try {
    bytes = fs.readFileSync(file);
  } catch (e) {
    throw new InputError(`cannot read model: ${(e as Error).message}`, { file });
  }
  const config = readOnnxModelConfig(file, bytes, o.config);
  const where = o.config ?? "its metadata";
  let session: ort.InferenceSession;
  try {
    if (o.provider === "webgpu") ensureRuntimeDir();
    session = await ort.InferenceSession.create(bytes, {
      graphOptimizationLevel: o.optimization ?? "all",
      executionMode: o.executionMode ?? "sequential",
      executionProviders: [o.provider ?? "cpu"],
      ...(o.threads ? { intraOpNumThreads: o.threads, interOpNumThreads: 1 } : {}),
    });
  } catch (e) {
    if (o.provider === "webgpu") throw webgpuProviderError(e, file);
    throw new InputError(`onnxruntime cannot load the model: ${(e as Error).message}`, { file });
  }
  const s = config.preprocess.input_size;
  const input = session.inputMetadata.find((m) => m.name === config.input.name);
  if (!input) {
    throw new InputError(
      `the config (${where}) names input "${config.input.name}" but the model's inputs are ${
        session.inputNames.join(", ")
      }`,
      { file },
    );
  }
  if (input.isTensor) {
    const shape = input.shape;
    const fits = shape.length === 4 && shape.slice(1).every((d, i) => typeof d !== "number" || d === [s, s, 3][i]);
    if (!fits) {
      throw new InputError(
        `the model's input "${input.name}" has shape [${shape.join(", ")}] but the config (${where}) expects ` +
          `[N, ${s}, ${s}, 3] (input_size ${s}): the config does not belong to this model`,
        { file },
      );
    }
    const want = config.input.dtype;
    if (input.type !== want) {
      throw new InputError(`the model's input is ${input.type} but the config (${where}) says ${want}`, { file });
    }
  }
  for (const name of ["loc", "scores"]) {
    if (!session.outputNames.includes(name)) {
      throw new InputError(`the model has no "${name}" output (outputs: ${session.outputNames.join(", ")})`, { file });
    }
  }
  const anchors = defaultBoxesFromConfig(config.anchors, { file: o.config ?? file });
  const loc = session.outputMetadata.find((m) => m.name === "loc");
  if (loc?.isTensor && typeof loc.shape[1] === "number" && loc.shape[1] !== anchors.count) {
    throw new InputError(
      `the model predicts ${loc.shape[1]} boxes but the anchors of the config (${where}) number ${anchors.count}`,
      { file },
    );
  }
  return {
    file,
    session,
    config,
    anchors,
    scaleFactors: scaleFactorsFromConfig(config.box_coder, { file: o.config ?? file }),
    postprocess: config.postprocess,
    inputSize: s,
    scoreColumns: Number(config.outputs.scores?.shape?.[2] ?? config.num_classes),
  };
}

/** The eval preprocessing a model's config describes, as lib/augment.ts `evalSample` takes it. */
export function preprocessConfigOf(c: OnnxModelConfig): AugmentConfig {
  const inGraph = c.preprocess.normalise_inside_graph;
  // Only resize_kernel, mean and std are read by evalSample; the rest is training augmentation.
  return {
    crop_min_ious: [null],
    crop_tries: 0,
    crop_scale: [1, 1],
    crop_aspect: [1, 1],
    flip_prob: 0,
    brightness: 0,
    contrast: 0,
    saturation: 0,
    mean: inGraph ? [0, 0, 0] : c.preprocess.mean,
    std: inGraph ? [1, 1, 1] : c.preprocess.std,
    resize_kernel: c.preprocess.resize_kernel,
  };
}

/** One preprocessed image: [S, S, 3] values as the model's input takes them, and the original size. */
export interface PreparedImage {
  data: Float32Array;
  width: number;
  height: number;
  /** Size that normalised boxes are scaled by to give pixels of the original image. */
  boxScale: { width: number; height: number };
}

let tfjsReady: Promise<unknown> | null = null;

/**
 * Decodes and preprocesses one record's image (its bytes or file). A corrupt
 * or unreadable image is an {@linkcode InputError} naming the file.
 */
export async function prepareImage(model: OnnxModel, record: DetectionRecord): Promise<PreparedImage> {
  if (model.config.preprocess.resize === "faceapi") {
    // face-api's resize is tfjs's resizeBilinear, so the same code runs here (on the cpu backend unless one is set).
    const fa = await import("./faceapi_preprocess.ts");
    tfjsReady ??= import("./engine/mod.ts").then(async (b) => {
      const tf = await import("@tensorflow/tfjs-core");
      if (!tf.getBackend()) await b.setBackend("cpu");
    });
    await tfjsReady;
    const bytes = record.image ?? await imageBytes(record);
    const r = await fa.faceapiPreprocessImage(bytes, { size: model.inputSize, file: record.file });
    return { data: r.input, width: r.width, height: r.height, boxScale: r.boxScale };
  }
  const smp = await evalSample(record, model.inputSize, preprocessConfigOf(model.config));
  return {
    data: smp.image,
    width: record.width,
    height: record.height,
    boxScale: { width: record.width, height: record.height },
  };
}

/**
 * Runs the network on `n` images stacked as [n, S, S, 3] and returns `loc`
 * [n, A, 4] and `scores` [n, A, C].
 */
export async function runOnnx(
  model: OnnxModel,
  images: Float32Array,
  n: number,
): Promise<{ loc: Float32Array; scores: Float32Array }> {
  const s = model.inputSize;
  const input = model.config.input.dtype === "uint8"
    ? new ort.Tensor("uint8", Uint8Array.from(images), [n, s, s, 3])
    : new ort.Tensor("float32", images, [n, s, s, 3]);
  const out = await model.session.run({ [model.config.input.name]: input }, ["loc", "scores"]);
  const r = { loc: out.loc.data as Float32Array, scores: out.scores.data as Float32Array };
  input.dispose?.();
  return r;
}

/**
 * Detections of image `k` of a batch's outputs: decoding and the shared
 * post-processing; boxes in pixels of an image of `imageSize`. `minScore`
 * overrides the config's threshold.
 */
export function detectionsOf(
  model: OnnxModel,
  out: { loc: Float32Array; scores: Float32Array },
  k: number,
  imageSize: { width: number; height: number },
  minScore?: number,
): Detections {
  const a = model.anchors.count, c = model.scoreColumns;
  const opts = postprocessOptionsFromConfig(model.postprocess, {
    anchors: model.anchors.centers,
    scaleFactors: model.scaleFactors,
    imageSize: { height: imageSize.height, width: imageSize.width },
  });
  if (minScore !== undefined) opts.scoreThreshold = minScore;
  return postprocess(
    out.loc.subarray(k * a * 4, (k + 1) * a * 4),
    out.scores.subarray(k * a * c, (k + 1) * a * c),
    opts,
  );
}

/** Options of {@linkcode detectWithOnnx}. */
export interface DetectWithOnnxOptions extends SessionOptions {
  /** config.yaml; default: the model's metadata. */
  config?: string;
  batchSize?: number;
  labelToCategory?: (label: number) => number;
  onProgress?: (done: number, total: number) => void;
  /** Overrides the config's score threshold. */
  minScore?: number;
}

/**
 * Detections of an exported model for every record, in COCO results form
 * (pixel boxes of the original images): the same output as `detectRecords` in
 * lib/evaluate.ts gives for the checkpoint, so `deno task eval` scores both alike.
 */
export async function detectWithOnnx(
  modelPath: string | OnnxModel,
  records: DetectionRecord[],
  o: DetectWithOnnxOptions = {},
): Promise<NamedDetection[]> {
  const model = typeof modelPath === "string" ? await loadOnnxModel(modelPath, o) : modelPath;
  const bs = o.batchSize ?? 8, s = model.inputSize;
  const toCat = o.labelToCategory ?? ((l: number) => l);
  const results: NamedDetection[] = [];
  const prepare = (rs: DetectionRecord[]) => Promise.all(rs.map((r) => prepareImage(model, r)));
  for await (const { start: b, items: batch, prepared: images } of preparedBatches(records, bs, prepare)) {
    const x = new Float32Array(batch.length * s * s * 3);
    images.forEach((im, k) => x.set(im.data, k * s * s * 3));
    const out = await runOnnx(model, x, batch.length);
    batch.forEach((r, k) => {
      const det = detectionsOf(model, out, k, images[k].boxScale, o.minScore);
      results.push(...toCocoResults(det, r.imgId, path.basename(r.file), toCat));
    });
    o.onProgress?.(Math.min(records.length, b + bs), records.length);
  }
  return results;
}
