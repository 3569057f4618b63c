/**
 * The eval stage on a tfjs model: preprocess, run the network, decode and
 * post-process (the shared `postprocess`), write COCO results, score them
 * with the exact COCOeval port.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { type AugmentConfig, evalSample } from "./augment.ts";
import { type CocoDetection, type CocoEvalResult, cocoEvaluate, type CocoGroundTruthJson } from "./coco_eval.ts";
import type { DefaultBoxes } from "./default_boxes.ts";
import type { DetectionRecord } from "./detection_record.ts";
import { preparedBatches } from "./data_loader.ts";
import { InputError } from "./errors.ts";
import { type Graph, type ParamMap, runGraph } from "./graph.ts";
import { postprocess, type PostprocessConfig, postprocessOptionsFromConfig } from "./postprocess.ts";

/** A COCO results entry that also names its image file. */
export interface NamedDetection extends CocoDetection {
  file_name: string;
}

/**
 * Runs the network in inference mode: `loc` [N, A, 4] raw regressions and
 * `scores` [N, A, C] after the model's score activation.
 */
export function predict(
  graph: Graph,
  params: ParamMap,
  x: tf.Tensor4D,
  activation: "sigmoid" | "softmax",
): { loc: tf.Tensor3D; scores: tf.Tensor3D } {
  return tf.tidy(() => {
    const out = runGraph(graph, params, x);
    const scores = activation === "sigmoid" ? tf.sigmoid(out.cls) : tf.softmax(out.cls);
    return { loc: out.loc as tf.Tensor3D, scores: scores as tf.Tensor3D };
  });
}

/** Converts one image's detections (pixel y1, x1, y2, x2) into COCO results entries. */
export function toCocoResults(
  det: { count: number; boxes: Float32Array; scores: Float32Array; labels: Int32Array },
  imageId: number,
  fileName: string,
  labelToCategory: (label: number) => number,
): NamedDetection[] {
  const out: NamedDetection[] = [];
  for (let k = 0; k < det.count; k++) {
    const [y1, x1, y2, x2] = det.boxes.subarray(4 * k, 4 * k + 4);
    out.push({
      image_id: imageId,
      category_id: labelToCategory(det.labels[k]),
      // Unrounded, as the tutorial's COCOMetrics writes them (rounding moves boxes across IoU thresholds).
      bbox: [x1, y1, x2 - x1, y2 - y1],
      score: det.scores[k],
      file_name: fileName,
    });
  }
  return out;
}

/**
 * Label -> the ground truth's category id, by class name, as the tutorial's
 * COCOMetrics maps `train_cls` names through the annotation json. A label with
 * no name, or a name the json does not have, is an error naming both.
 *
 * @example
 * ```ts
 * import { throws } from "node:assert";
 * const gt = { images: [], annotations: [], categories: [{ id: 18, name: "dog" }] };
 * const f = labelToCategoryOf(gt, ["background", "cat", "dog"], "gt.json");
 * if (f(2) !== 18) throw new Error("dog is category 18");
 * throws(() => f(1), /class "cat" \(label 1\) is not a category of gt.json/);
 * throws(() => f(3), /label 3 has no name/);
 * ```
 */
export function labelToCategoryOf(
  gt: Pick<CocoGroundTruthJson, "categories">,
  classNames: readonly string[],
  file: string,
): (label: number) => number {
  const idByName = new Map(gt.categories.map((c) => [c.name, Number(c.id)]));
  return (label) => {
    const name = classNames[label];
    if (name === undefined || label < 1) {
      throw new InputError(`label ${label} has no name: the model names labels 1..${classNames.length - 1}`, {
        file,
      });
    }
    const id = idByName.get(name);
    if (id === undefined) {
      throw new InputError(`class "${name}" (label ${label}) is not a category of ${file}`, { file });
    }
    return id;
  };
}

/** Options of {@linkcode detectRecords}. */
export interface DetectOptions {
  inputSize: number;
  anchors: DefaultBoxes;
  scaleFactors: number[];
  augment: AugmentConfig;
  postprocess: PostprocessConfig;
  activation: "sigmoid" | "softmax";
  batchSize?: number;
  labelToCategory?: (label: number) => number;
  onProgress?: (done: number, total: number) => void;
}

/** Detections for every record, in COCO results form (pixel boxes of the original images). */
export async function detectRecords(
  graph: Graph,
  params: ParamMap,
  records: DetectionRecord[],
  o: DetectOptions,
): Promise<NamedDetection[]> {
  const bs = o.batchSize ?? 8, s = o.inputSize;
  const results: NamedDetection[] = [];
  const toCat = o.labelToCategory ?? ((l: number) => l);
  const prepare = (rs: DetectionRecord[]) => Promise.all(rs.map((r) => evalSample(r, s, o.augment)));
  for await (const { start: b, items: batch, prepared: samples } of preparedBatches(records, bs, prepare)) {
    const images = new Float32Array(batch.length * s * s * 3);
    samples.forEach((smp, k) => images.set(smp.image, k * s * s * 3));
    const x = tf.tensor4d(images, [batch.length, s, s, 3]);
    const { loc, scores } = predict(graph, params, x, o.activation);
    x.dispose();
    const [locData, scoreData] = await Promise.all([loc.data(), scores.data()]) as Float32Array[];
    tf.dispose([loc, scores]);
    const a = o.anchors.count, c = scoreData.length / (batch.length * a);
    batch.forEach((r, k) => {
      const det = postprocess(
        locData.subarray(k * a * 4, (k + 1) * a * 4),
        scoreData.subarray(k * a * c, (k + 1) * a * c),
        postprocessOptionsFromConfig(o.postprocess, {
          anchors: o.anchors.centers,
          scaleFactors: o.scaleFactors,
          imageSize: { height: r.height, width: r.width },
        }),
      );
      results.push(...toCocoResults(det, r.imgId, r.file.split("/").pop()!, toCat));
    });
    o.onProgress?.(Math.min(records.length, b + bs), records.length);
  }
  return results;
}

/** Scores detections against ground truth (pycocotools-exact). */
export function scoreDetections(gt: CocoGroundTruthJson, detections: CocoDetection[]): CocoEvalResult {
  return cocoEvaluate(
    gt,
    detections.map(({ image_id, category_id, bbox, score }) => ({ image_id, category_id, bbox, score })),
  );
}
