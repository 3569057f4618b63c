/**
 * Imports face-api's pretrained SSD-MobileNetV1 face detector (npm
 * `@vladmandic/face-api`, pinned in deno.json) into the workbench: its tfjs
 * weights manifest and `.bin` are dequantised exactly as tfjs does, every
 * tensor is mapped by name onto the workbench's own network
 * (lib/ssd_mobilenet_v1_tfod.ts, `configs/faceapi_ssd_mobilenetv1.yaml`), and
 * the result is saved as a workbench checkpoint plus run config and exported
 * to ONNX.
 *
 * Where the anchors go: face-api's anchors are a tensor of its weights
 * (`Output/extra_dim`, [1, 5118, 4] as ymin, xmin, ymax, xmax). They are copied
 * into the config's `anchors.stored` list (generator `stored`), so they travel
 * with the config wherever it goes: the checkpoint header, the run config YAML
 * and the ONNX export's config.yaml. Everything that calls `anchorsOf(cfg)`
 * then gets them with no extra file.
 *
 * Name mapping (face-api -> workbench):
 *
 * | face-api tensor                                                   | workbench parameter                           |
 * | ----------------------------------------------------------------- | --------------------------------------------- |
 * | `MobilenetV1/Conv2d_0_pointwise/{weights,convolution_bn_offset}`  | `backbone.Conv2d_0.conv.{weight,bias}`        |
 * | `MobilenetV1/Conv2d_k_pointwise/{weights,convolution_bn_offset}`  | `backbone.Conv2d_k_pointwise.conv.{weight,bias}` |
 * | `MobilenetV1/Conv2d_k_depthwise/depthwise_weights`                | `backbone.Conv2d_k_depthwise.conv.weight`     |
 * | `MobilenetV1/Conv2d_k_depthwise/BatchNorm/{gamma,beta,moving_*}`  | `backbone.Conv2d_k_depthwise.bn.{...}`        |
 * | `Prediction/Conv2d_k_pointwise/{weights,convolution_bn_offset}`   | `extras.Conv2d_k_pointwise.conv.{weight,bias}` |
 * | `Prediction/BoxPredictor_i/BoxEncodingPredictor/{weights,biases}` | `multibox.loc{i}.{weight,bias}`               |
 * | `Prediction/BoxPredictor_i/ClassPredictor/{weights,biases}`       | `multibox.cls{i}.{weight,bias}`               |
 * | `Output/extra_dim`                                                | `anchors.stored` of the config                |
 *
 * Layouts need no change: TF's HWIO conv weights and [KH, KW, C, 1] depthwise
 * weights are the workbench's. The manifest's int32 constants (reshape sizes and
 * slice bounds of the frozen TF graph) and the TF graph's own preprocessing
 * constants (`Preprocessor/mul/x` = 2 / 255, `Preprocessor/sub/y` = 1, which
 * face-api replaces by `x / 127.5 - 1`) are not parameters and are skipped.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import YAML from "yaml";
import { saveCheckpoint } from "./checkpoint.ts";
import type { DefaultBoxes } from "./default_boxes.ts";
import { InputError } from "./errors.ts";
import { writeFileAtomic } from "./fs_atomic.ts";
import { type Graph, type ParamMap, variableOf } from "./graph.ts";
import { exportModel, paramValuesOf } from "./onnx_export.ts";
import { anchorsOf, buildModel, loadSsdConfig, scaleFactorsOf, type SsdConfig } from "./ssd_config.ts";
import type { DrawBox } from "./draw.ts";
import { predict } from "./evaluate.ts";
import { faceapiBoxScale, faceapiInput, type RgbImage } from "./faceapi_preprocess.ts";
import { type Detections, postprocess, type PostprocessOptions, postprocessOptionsFromConfig } from "./postprocess.ts";

/** The npm package the weights come from (pinned in deno.json). */
export const FACEAPI_PACKAGE = "@vladmandic/face-api";
/** The weights manifest inside the package. */
export const FACEAPI_SSD_MANIFEST = "model/ssd_mobilenetv1_model-weights_manifest.json";
/** The workbench config describing the imported model. */
export const FACEAPI_CONFIG = fileURLToPath(new URL("../configs/faceapi_ssd_mobilenetv1.yaml", import.meta.url));

/**
 * The face-api package folder, resolved like any other dependency (Deno's
 * node_modules, `nodeModulesDir: auto`).
 */
export function faceapiPackageDir(): string {
  return path.dirname(fileURLToPath(import.meta.resolve(`${FACEAPI_PACKAGE}/package.json`)));
}

/** One entry of a tfjs weights manifest. */
export interface TfjsWeightEntry {
  name: string;
  shape: number[];
  dtype: "float32" | "int32";
  quantization?: { scale: number; min: number; dtype: "uint8" | "uint16" };
}

/** A decoded weight. */
export interface DecodedWeight {
  shape: number[];
  dtype: "float32" | "int32";
  data: Float32Array | Int32Array;
}

/**
 * Decodes the concatenated weight bytes of a tfjs manifest group, as tfjs's
 * `io.decodeWeights`: quantised values are `q * scale + min`, computed in double
 * precision and then stored as float32 (or int32). Computing them in float32
 * instead moves face-api's scores by ~1e-4.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const w = decodeTfjsWeights(new Uint8Array([0, 2, 255]), [
 *   { name: "a", shape: [3], dtype: "float32", quantization: { scale: 0.1, min: -0.1, dtype: "uint8" } },
 * ]);
 * assertEquals(Array.from(w.get("a")!.data), [-0.1, 0.1, 25.4].map(Math.fround));
 * ```
 */
export function decodeTfjsWeights(bytes: Uint8Array, entries: TfjsWeightEntry[]): Map<string, DecodedWeight> {
  const out = new Map<string, DecodedWeight>();
  let offset = 0;
  for (const e of entries) {
    const size = e.shape.reduce((a, b) => a * b, 1);
    const q = e.quantization;
    const data = e.dtype === "int32" ? new Int32Array(size) : new Float32Array(size);
    if (q) {
      const width = q.dtype === "uint8" ? 1 : q.dtype === "uint16" ? 2 : 0;
      if (!width) throw new InputError(`weight ${e.name}: unsupported quantization ${q.dtype}`);
      if (offset + size * width > bytes.length) throw new InputError(`weight ${e.name}: weights file too short`);
      const view = new DataView(bytes.buffer, bytes.byteOffset + offset, size * width);
      for (let i = 0; i < size; i++) {
        const v = width === 1 ? view.getUint8(i) : view.getUint16(2 * i, true);
        // Double precision, then the typed array's own rounding (float32) or truncation (int32).
        data[i] = v * q.scale + q.min;
      }
      offset += size * width;
    } else {
      if (offset + size * 4 > bytes.length) throw new InputError(`weight ${e.name}: weights file too short`);
      const view = new DataView(bytes.buffer, bytes.byteOffset + offset, size * 4);
      for (let i = 0; i < size; i++) {
        data[i] = e.dtype === "int32" ? view.getInt32(4 * i, true) : view.getFloat32(4 * i, true);
      }
      offset += size * 4;
    }
    out.set(e.name, { shape: e.shape, dtype: e.dtype, data });
  }
  if (offset !== bytes.length) throw new InputError(`weights file has ${bytes.length} bytes, the manifest ${offset}`);
  return out;
}

/** Reads and decodes face-api's SSD weights (default: from the pinned npm package). */
export function readFaceapiWeights(manifestFile = path.join(faceapiPackageDir(), FACEAPI_SSD_MANIFEST)): Map<
  string,
  DecodedWeight
> {
  let groups: { paths: string[]; weights: TfjsWeightEntry[] }[];
  try {
    groups = JSON.parse(fs.readFileSync(manifestFile, "utf8"));
  } catch (e) {
    throw new InputError(`cannot read the weights manifest: ${(e as Error).message}`, { file: manifestFile });
  }
  const out = new Map<string, DecodedWeight>();
  for (const g of groups) {
    const parts = g.paths.map((p) => fs.readFileSync(path.join(path.dirname(manifestFile), p)));
    const bytes = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
    let at = 0;
    for (const p of parts) bytes.set(p, at), at += p.length;
    for (const [k, v] of decodeTfjsWeights(bytes, g.weights)) out.set(k, v);
  }
  return out;
}

/** The anchors tensor of face-api's SSD. */
export const FACEAPI_ANCHORS_TENSOR = "Output/extra_dim";

/**
 * The workbench parameter a face-api tensor maps onto, or null for a tensor
 * that is not a parameter (the anchors, graph constants).
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * assertEquals(faceapiParamName("MobilenetV1/Conv2d_0_pointwise/weights"), "backbone.Conv2d_0.conv.weight");
 * assertEquals(faceapiParamName("MobilenetV1/Conv2d_3_depthwise/BatchNorm/gamma"), "backbone.Conv2d_3_depthwise.bn.gamma");
 * assertEquals(faceapiParamName("Prediction/BoxPredictor_5/ClassPredictor/biases"), "multibox.cls5.bias");
 * assertEquals(faceapiParamName("Output/extra_dim"), null);
 * ```
 */
export function faceapiParamName(name: string): string | null {
  const conv = (p: string, leaf: string) => `${p}.conv.${leaf === "weights" ? "weight" : "bias"}`;
  let m = name.match(/^MobilenetV1\/Conv2d_(\d+)_pointwise\/(weights|convolution_bn_offset)$/);
  // face-api calls the stem `Conv2d_0_pointwise` although it is a full 3x3 conv: TF-slim's `Conv2d_0`.
  if (m) return conv(`backbone.${m[1] === "0" ? "Conv2d_0" : `Conv2d_${m[1]}_pointwise`}`, m[2]);
  m = name.match(/^MobilenetV1\/Conv2d_(\d+)_depthwise\/depthwise_weights$/);
  if (m) return `backbone.Conv2d_${m[1]}_depthwise.conv.weight`;
  m = name.match(/^MobilenetV1\/Conv2d_(\d+)_depthwise\/BatchNorm\/(gamma|beta|moving_mean|moving_variance)$/);
  if (m) return `backbone.Conv2d_${m[1]}_depthwise.bn.${m[2]}`;
  m = name.match(/^Prediction\/Conv2d_(\d+)_pointwise\/(weights|convolution_bn_offset)$/);
  if (m) return conv(`extras.Conv2d_${m[1]}_pointwise`, m[2]);
  m = name.match(/^Prediction\/BoxPredictor_(\d+)\/(BoxEncodingPredictor|ClassPredictor)\/(weights|biases)$/);
  if (m) {
    return `multibox.${m[2] === "ClassPredictor" ? "cls" : "loc"}${m[1]}.${m[3] === "weights" ? "weight" : "bias"}`;
  }
  return null;
}

/** An imported model: its config (anchors included), network, parameters and anchors. */
export interface FaceapiModel {
  config: SsdConfig;
  graph: Graph;
  params: ParamMap;
  anchors: DefaultBoxes;
}

/**
 * Builds the workbench model and fills it with face-api's weights. Every
 * parameter of the network must come from a tensor of the right shape, and
 * every float tensor of the weights must be used; anything else is an error.
 * Dispose `params` when done.
 */
export function faceapiModel(
  weights: Map<string, DecodedWeight> = readFaceapiWeights(),
  options: { configFile?: string } = {},
): FaceapiModel {
  const config = loadSsdConfig(options.configFile ?? FACEAPI_CONFIG);
  const anchorsTensor = weights.get(FACEAPI_ANCHORS_TENSOR);
  if (!anchorsTensor) throw new InputError(`the weights have no ${FACEAPI_ANCHORS_TENSOR} (anchors)`);
  // The float32 values as numbers: they print and parse back to the same float32.
  config.anchors.stored = Array.from(anchorsTensor.data);
  const anchors = anchorsOf(config);
  const graph = buildModel(config, anchors);

  const byParam = new Map<string, string>();
  for (const [name, w] of weights) {
    const p = faceapiParamName(name);
    if (p) byParam.set(p, name);
    else if (w.dtype === "float32" && name !== FACEAPI_ANCHORS_TENSOR && !name.startsWith("Preprocessor/")) {
      throw new InputError(`face-api tensor ${name} maps onto no parameter`);
    }
  }
  const params: ParamMap = new Map();
  try {
    for (const spec of graph.params) {
      const src = byParam.get(spec.name);
      if (!src) throw new InputError(`no face-api tensor for parameter ${spec.name}`);
      byParam.delete(spec.name);
      const w = weights.get(src)!;
      if (w.shape.join() !== spec.shape.join()) {
        throw new InputError(`${src} has shape [${w.shape}] but ${spec.name} needs [${spec.shape}]`);
      }
      const trainable = spec.kind !== "moving_mean" && spec.kind !== "moving_variance";
      params.set(spec.name, variableOf(tf.tensor(w.data as Float32Array, spec.shape), trainable));
    }
    if (byParam.size > 0) throw new InputError(`face-api tensors left unused: ${[...byParam.values()].join(", ")}`);
  } catch (e) {
    tf.dispose([...params.values()]);
    throw e;
  }
  return { config, graph, params, anchors };
}

/** Options of {@linkcode importFaceapi}. */
export interface ImportFaceapiOptions {
  /** Output folder (the task's default: runs/faceapi). */
  out: string;
  /** Weights manifest (default: face-api's, from the npm package). */
  manifest?: string;
  /** Export ONNX too (default true): `out/model.onnx` and `out/config.yaml`. */
  onnx?: boolean;
}

/** Files written by {@linkcode importFaceapi}. */
export interface ImportFaceapiResult {
  /** The workbench checkpoint. */
  checkpoint: string;
  /** The run config (with the stored anchors), the one the checkpoint header holds. */
  runConfig: string;
  /** The ONNX model and its inference config, when exported. */
  onnx: { model: string; config: string } | null;
  /** Parameters and anchors imported. */
  params: number;
  anchors: number;
}

/**
 * Imports face-api's SSD into `out`: `checkpoint.ckpt` (workbench format),
 * `run_config.yaml`, and with `onnx` the export's `model.onnx` + `config.yaml`.
 */
export async function importFaceapi(o: ImportFaceapiOptions): Promise<ImportFaceapiResult> {
  const model = faceapiModel(readFaceapiWeights(o.manifest));
  const { config, graph, params, anchors } = model;
  try {
    const checkpoint = path.join(o.out, "checkpoint.ckpt"), runConfig = path.join(o.out, "run_config.yaml");
    const classNames = config.model.class_names!;
    await saveCheckpoint(checkpoint, {
      params,
      config: config as unknown as Record<string, unknown>,
      classNames,
      epoch: 0,
      globalStep: 0,
      metrics: {},
    });
    await writeFileAtomic(
      runConfig,
      "# face-api's SSD-MobileNetV1 as imported by `deno task import-faceapi` (configs/faceapi_ssd_mobilenetv1.yaml\n" +
        "# plus the anchors of its weights in anchors.stored).\n" + YAML.stringify(config, { lineWidth: 0 }),
    );
    let onnx: ImportFaceapiResult["onnx"] = null;
    if (o.onnx ?? true) {
      const r = await exportModel(graph, paramValuesOf(params), config, {
        classNames,
        anchors,
        scaleFactors: scaleFactorsOf(config),
      }, { out: o.out });
      onnx = { model: r.model, config: r.config };
    }
    return { checkpoint, runConfig, onnx, params: graph.params.length, anchors: anchors.count };
  } finally {
    tf.dispose([...params.values()]);
  }
}

/**
 * Post-processing options of the imported model for one image of `height` x
 * `width` pixels: the config's (class-agnostic NMS at IoU 0.5 on unclipped
 * boxes, strict `>` score threshold, sigmoid of logit 1), with face-api's pixel
 * mapping ({@linkcode faceapiBoxScale}) and, optionally, another score threshold
 * (face-api's `minConfidence`).
 */
export function faceapiPostprocessOptions(
  config: SsdConfig,
  anchors: DefaultBoxes,
  height: number,
  width: number,
  options: { minScore?: number } = {},
): PostprocessOptions {
  const pp = { ...config.postprocess, min_score: options.minScore ?? config.postprocess.min_score };
  return postprocessOptionsFromConfig(pp, {
    anchors: anchors.centers,
    scaleFactors: scaleFactorsOf(config),
    imageSize: faceapiBoxScale(height, width, config.model.input_size),
  });
}

/**
 * Faces in one decoded image by the imported model on tfjs, as face-api's
 * `ssdMobilenetv1.locateFaces` finds them: boxes y1, x1, y2, x2 in pixels of the image.
 */
export async function detectFaces(
  model: FaceapiModel,
  image: RgbImage,
  options: { minScore?: number } = {},
): Promise<Detections> {
  const { config, graph, params, anchors } = model;
  const x = faceapiInput(image.data, image.height, image.width, config.model.input_size);
  const { loc, scores } = predict(graph, params, x, config.model.score_activation);
  x.dispose();
  const [l, s] = await Promise.all([loc.data(), scores.data()]) as Float32Array[];
  tf.dispose([loc, scores]);
  return postprocess(l, s, faceapiPostprocessOptions(config, anchors, image.height, image.width, options));
}

/**
 * Detections as boxes to draw (lib/draw.ts), labelled "face 0.97".
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const det = { count: 1, boxes: new Float32Array([10, 20, 50, 60]), scores: new Float32Array([0.5]) };
 * assertEquals(faceDrawBoxes(det), [{ box: [20, 10, 60, 50], label: "face 0.50", colour: 2 }]);
 * ```
 */
export function faceDrawBoxes(det: Pick<Detections, "count" | "boxes" | "scores">, name = "face"): DrawBox[] {
  return Array.from({ length: det.count }, (_, k) => {
    const [y1, x1, y2, x2] = det.boxes.subarray(4 * k, 4 * k + 4);
    return { box: [x1, y1, x2, y2], label: `${name} ${det.scores[k].toFixed(2)}`, colour: 2 };
  });
}
