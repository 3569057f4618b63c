/**
 * ssd-workbench: SSD object detection in Deno + TypeScript, from data to
 * training, COCO evaluation, ONNX export and inference. A port of the
 * MindSpore SSD tutorial and ModelZoo SSD.
 *
 * Notebooks import it as `import * as ssd from "ssd-workbench";`. This is the
 * public API, in the tutorial's order; the helpers behind it (archive
 * extraction, msgpack, atomic writes, progress bars, the engine's kernels)
 * stay in their files.
 *
 * @module
 */

// Data: the synthetic default, the readers and their bad-input policy, MindRecord, augmentation, batches.
export * from "./lib/synth.ts";
export * from "./lib/detection_record.ts";
export * from "./lib/class_maps.ts";
export * from "./lib/input_policy.ts";
export * from "./lib/coco_reader.ts";
export * from "./lib/voc_reader.ts";
export * from "./lib/txt_reader.ts";
export * from "./lib/download.ts";
export * from "./lib/convert.ts";
export * from "./lib/dataset.ts";
export {
  type FieldSpec,
  type FieldType,
  type FieldValue,
  type MindRecordRow,
  type MindRecordSchema,
  type NdArray,
  shardFileNames,
} from "./lib/mindrecord_format.ts";
export { type MindRecordHeader, readHeader } from "./lib/mindrecord_header.ts";
export { readIndexDb, verifyIndexDb } from "./lib/mindrecord_index.ts";
export * from "./lib/mindrecord_reader.ts";
export * from "./lib/mindrecord_writer.ts";
export * from "./lib/mindrecord_ssd.ts";
export * from "./lib/augment.ts";
export * from "./lib/augment_preview.ts";
export * from "./lib/data_loader.ts";
export * from "./lib/image_cache.ts";

// Boxes: default boxes, encoding, matching, NMS and decoding.
export * from "./lib/default_boxes.ts";
export * from "./lib/box_coder.ts";
export * from "./lib/iou.ts";
export * from "./lib/matcher.ts";
export * from "./lib/nms.ts";
export * from "./lib/postprocess.ts";

// Models: the graph every network is described in, backbones, necks, heads and the SSD variants.
export * from "./lib/config.ts";
export * from "./lib/ssd_config.ts";
export * from "./lib/graph.ts";
export * from "./lib/mobilenet_v1.ts";
export * from "./lib/mobilenet_v2.ts";
export * from "./lib/resnet50.ts";
export * from "./lib/fpn.ts";
export * from "./lib/ssd_heads.ts";
export * from "./lib/ssd_vgg16.ts";
export * from "./lib/ssd_mobilenet_v2.ts";
export * from "./lib/ssd_mobilenet_v1_300.ts";
export * from "./lib/ssd_mobilenet_v1_tfod.ts";
export * from "./lib/ssd_fpn.ts";
export * from "./lib/ssd_tiny.ts";

// Training: loss, learning rate, optimiser, checkpoints and the stage itself.
export * from "./lib/loss.ts";
export * from "./lib/lr_schedule.ts";
export * from "./lib/optimizer.ts";
export * from "./lib/checkpoint.ts";
export * from "./lib/train.ts";
export * from "./lib/data_parallel.ts";

// MindSpore checkpoints: the .ckpt format, the tutorial's and the ModelZoo's parameter names, conversion.
export * from "./lib/mindspore_ckpt.ts";
export * from "./lib/mindspore_names.ts";
export * from "./lib/mindspore_convert.ts";

// Evaluation, export and inference.
export * from "./lib/evaluate.ts";
export * from "./lib/coco_eval.ts";
export * from "./lib/eval_stage.ts";

// Error analysis: TIDE, the confusion matrix, PR breakdown and worst images, and their pictures.
export * from "./lib/tide.ts";
export * from "./lib/error_analysis.ts";
export * from "./lib/analysis_plots.ts";
export * from "./lib/analysis_stage.ts";
export * from "./lib/onnx_export.ts";
export * from "./lib/export_stage.ts";
export * from "./lib/onnx_infer.ts";
export * from "./lib/infer.ts";
export * from "./lib/draw.ts";
export * from "./lib/plot.ts";

// A real pretrained SSD (face-api's face detector), the demo, and what every stage shares.
export * from "./lib/faceapi_import.ts";
export * from "./lib/faceapi_preprocess.ts";
export * from "./lib/demo.ts";
export * from "./lib/rng.ts";
export * from "./lib/errors.ts";

// The compute engine's public face: choose a backend; train over replicas or recomputed segments.
export * from "./lib/engine/mod.ts";
