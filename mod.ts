/**
 * ssd-workbench: SSD object detection in Deno + TypeScript, from data to
 * training, COCO evaluation, ONNX export and inference. A port of the
 * MindSpore SSD tutorial and ModelZoo SSD.
 *
 * Import it in notebooks as `import * as ssd from "ssd-workbench";`.
 *
 * @module
 */
export * from "./lib/backend.ts";
export * from "./lib/cli.ts";
export * from "./lib/config.ts";
export * from "./lib/conv_grad_kernels.ts";
export * from "./lib/detection_record.ts";
export * from "./lib/draw.ts";
export * from "./lib/errors.ts";
export * from "./lib/fs_atomic.ts";
export * from "./lib/progress.ts";
export * from "./lib/rng.ts";
export * from "./lib/setup_check.ts";
export * from "./lib/synth.ts";
