/**
 * ssd-workbench: SSD object detection in Deno + TypeScript, from data to
 * training, COCO evaluation, ONNX export and inference. A port of the
 * MindSpore SSD tutorial and ModelZoo SSD.
 *
 * Notebooks import it as `import * as ssd from "ssd-workbench";`.
 *
 * @module
 */
export * from "./lib/archive.ts";
export * from "./lib/augment.ts";
export * from "./lib/augment_preview.ts";
export * from "./lib/engine/backend.ts";
export * from "./lib/engine/batch_norm_kernel.ts";
export * from "./lib/box_coder.ts";
export * from "./lib/checkpoint.ts";
export * from "./lib/class_maps.ts";
export * from "./lib/coco_eval.ts";
export * from "./lib/coco_reader.ts";
export * from "./lib/config.ts";
export * from "./lib/engine/conv_grad_kernels.ts";
export * from "./lib/convert.ts";
export * from "./lib/data_loader.ts";
export * from "./lib/dataset.ts";
export * from "./lib/default_boxes.ts";
export * from "./lib/engine/depthwise_gather.ts";
export * from "./lib/demo.ts";
export * from "./lib/detection_record.ts";
export * from "./lib/download.ts";
export * from "./lib/draw.ts";
export * from "./lib/errors.ts";
export * from "./lib/eval_stage.ts";
export * from "./lib/evaluate.ts";
export * from "./lib/export_stage.ts";
export * from "./lib/faceapi_import.ts";
export * from "./lib/faceapi_preprocess.ts";
export * from "./lib/fpn.ts";
export * from "./lib/fs_atomic.ts";
export * from "./lib/engine/grad_step.ts";
export * from "./lib/graph.ts";
export * from "./lib/infer.ts";
export * from "./lib/iou.ts";
export * from "./lib/engine/kernel_io.ts";
export * from "./lib/engine/kernel_registry.ts";
export * from "./lib/loss.ts";
export * from "./lib/lr_schedule.ts";
export * from "./lib/matcher.ts";
export * from "./lib/engine/max_pool_grad.ts";
export * from "./lib/mindrecord_dump.ts";
export {
  type ArrayType,
  blobFieldsOf,
  DEFAULT_HEADER_SIZE,
  DEFAULT_PAGE_SIZE,
  type FieldSpec,
  type FieldType,
  type FieldValue,
  hasIntArray,
  isBlobField,
  type MindRecordRow,
  type MindRecordSchema,
  type NdArray,
  type SchemaEntry,
  shardFileNames,
} from "./lib/mindrecord_format.ts";
export {
  canonicalJson,
  type MindRecordHeader,
  type PageInfo,
  parseHeader,
  readHeader,
  serializeHeader,
} from "./lib/mindrecord_header.ts";
export {
  createIndexesSql,
  indexDbQuotesStrings,
  readIndexDb,
  type RowLocation,
  rowLocations,
  verifyIndexDb,
} from "./lib/mindrecord_index.ts";
export { compressInt, decodeBlob, decompressInt, encodeBlob, encodeRaw, resolveShape } from "./lib/mindrecord_pages.ts";
export * from "./lib/mindrecord_reader.ts";
export * from "./lib/mindrecord_ssd.ts";
export * from "./lib/mindrecord_writer.ts";
export * from "./lib/mobilenet_v1.ts";
export * from "./lib/mobilenet_v2.ts";
export * from "./lib/msgpack.ts";
export * from "./lib/nms.ts";
export * from "./lib/notebook_views.ts";
export * from "./lib/onnx_export.ts";
export * from "./lib/onnx_infer.ts";
export * from "./lib/optimizer.ts";
export * from "./lib/plot.ts";
export * from "./lib/engine/pointwise_conv.ts";
export * from "./lib/postprocess.ts";
export * from "./lib/progress.ts";
export * from "./lib/py_round.ts";
export * from "./lib/engine/relu_grad.ts";
export * from "./lib/engine/replicas.ts";
export * from "./lib/resnet50.ts";
export * from "./lib/rng.ts";
export * from "./lib/engine/shared_heap.ts";
export * from "./lib/engine/simd_kernels.ts";
export { KernelThreads, splitRange } from "./lib/engine/simd_threads.ts";
export * from "./lib/ssd_config.ts";
export * from "./lib/ssd_fpn.ts";
export * from "./lib/ssd_heads.ts";
export * from "./lib/ssd_mobilenet_v1_300.ts";
export * from "./lib/ssd_mobilenet_v1_tfod.ts";
export * from "./lib/ssd_mobilenet_v2.ts";
export * from "./lib/ssd_tiny.ts";
export * from "./lib/ssd_vgg16.ts";
export * from "./lib/synth.ts";
export * from "./lib/train.ts";
export * from "./lib/txt_reader.ts";
export * from "./lib/voc_reader.ts";
