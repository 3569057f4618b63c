/**
 * `deno task infer`: runs an exported ONNX model (onnxruntime-node) over an
 * image, a folder or a glob; writes detections.json (COCO results with
 * file_name) and annotated pictures.
 *
 * @module
 */
import { intFlag, numberFlag, onnxProviderOf, parseTaskArgs, runTask, type TaskSpec } from "./cli.ts";
import { InputError } from "../lib/errors.ts";
import { inferImages } from "../lib/infer.ts";

const spec: TaskSpec = {
  name: "infer",
  summary:
    "Detects objects with an exported ONNX model: writes OUT/detections.json and OUT/<image>.jpg with boxes drawn.",
  usage: "--model DIR/model.onnx [--config DIR/config.yaml] --input IMAGE|FOLDER|GLOB --out OUT " +
    "[--min-score S] [--threads N] [--backend onnxruntime|webgpu] [--batch-size B] [--skip-bad] [--gt instances.json]",
  flags: {
    model: { type: "string", arg: "FILE", help: "model.onnx written by deno task export" },
    config: {
      type: "string",
      arg: "FILE",
      help: "its config.yaml; default: the config stored in the model's metadata",
    },
    input: { type: "string", arg: "PATH", help: "an image, a folder of images, or a quoted glob such as 'imgs/*.jpg'" },
    out: { type: "string", arg: "DIR", help: "output folder" },
    "min-score": { type: "string", arg: "S", help: "score threshold (default: the config's postprocess.min_score)" },
    threads: { type: "string", arg: "N", help: "onnxruntime intra-op threads (default: one per core)" },
    backend: {
      type: "string",
      arg: "NAME",
      help:
        "onnxruntime (its CPU provider, default) or webgpu (its WebGPU provider: a GPU through Vulkan, Metal or DX12)",
    },
    "batch-size": { type: "string", arg: "B", default: "8", help: "images per network run" },
    "skip-bad": { type: "boolean", help: "report unreadable or corrupt images and go on with the rest" },
    gt: {
      type: "string",
      arg: "FILE",
      help: "COCO instances json: image_id by file_name and category_id by class name (default: position, label)",
    },
    "no-draw": { type: "boolean", help: "write detections.json only" },
  },
  epilog: [
    "detections.json: [{image_id, category_id, bbox: [x, y, w, h] in original pixels, score, file_name}, ...].",
    "Without --gt, image_id is the image's 1-based position in sorted order and category_id its label.",
    "",
    "Example:",
    "  deno task infer --model runs/demo/export/model.onnx --input runs/demo/data/images/val --out runs/demo/infer",
  ].join("\n"),
};

if (import.meta.main) {
  await runTask(async () => {
    const { values } = parseTaskArgs(spec);
    const model = values.model, input = values.input, out = values.out;
    if (typeof model !== "string" || typeof input !== "string" || typeof out !== "string") {
      throw new InputError("--model FILE, --input PATH and --out DIR are required; see --help");
    }
    const threads = intFlag(values, "threads"), batchSize = intFlag(values, "batch-size")!;
    if (threads !== undefined && threads < 1) throw new InputError("--threads must be at least 1");
    if (batchSize < 1) throw new InputError("--batch-size must be at least 1");
    const t0 = performance.now();
    const r = await inferImages({
      model,
      config: values.config as string | undefined,
      input,
      out,
      minScore: numberFlag(values, "min-score"),
      threads,
      provider: onnxProviderOf(values.backend as string | undefined),
      batchSize,
      skipBad: values["skip-bad"] === true,
      gt: values.gt as string | undefined,
      draw: values["no-draw"] !== true,
    });
    const secs = (performance.now() - t0) / 1000;
    console.error(
      `${r.images} images, ${r.detections.length} detections in ${secs.toFixed(1)} s ` +
        `(${(r.images / secs).toFixed(1)} img/s); wrote ${r.detectionsFile}` +
        (r.pictures.length ? ` and ${r.pictures.length} pictures` : "") +
        (r.skipped.length ? `; skipped ${r.skipped.length} bad images` : ""),
    );
  });
}
