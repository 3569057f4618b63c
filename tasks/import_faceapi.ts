/**
 * `deno task import-faceapi`: imports face-api's pretrained SSD-MobileNetV1
 * face detector (npm @vladmandic/face-api) into a workbench checkpoint, run
 * config and ONNX model.
 *
 * @module
 */
import { setBackend } from "../lib/engine/mod.ts";
import { parseTaskArgs, runTask, type TaskSpec } from "./cli.ts";
import { importFaceapi } from "../lib/faceapi_import.ts";

const spec: TaskSpec = {
  name: "import-faceapi",
  summary: "Imports face-api's pretrained SSD-MobileNetV1 face detector: dequantises its tfjs weights, maps them " +
    "onto the workbench's own network (configs/faceapi_ssd_mobilenetv1.yaml) and writes a checkpoint, its run " +
    "config and the ONNX export.",
  usage: "[--out DIR] [--manifest FILE] [--no-onnx]",
  flags: {
    out: { type: "string", arg: "DIR", default: "runs/faceapi", help: "output folder" },
    manifest: {
      type: "string",
      arg: "FILE",
      help: "tfjs weights manifest (default: model/ssd_mobilenetv1_model-weights_manifest.json of the npm package)",
    },
    "no-onnx": { type: "boolean", help: "skip the ONNX export" },
  },
  epilog: [
    "Writes DIR/checkpoint.ckpt and DIR/run_config.yaml (anchors in anchors.stored), and DIR/model.onnx with its",
    "inference config DIR/config.yaml. Then:",
    "  deno task infer --model runs/faceapi/model.onnx --config runs/faceapi/config.yaml --input photos/ \\",
    "    --out runs/faces --min-score 0.05",
  ].join("\n"),
};

runTask(async () => {
  const { values } = parseTaskArgs(spec);
  await setBackend("wasm");
  const r = await importFaceapi({
    out: values.out as string,
    manifest: values.manifest as string | undefined,
    onnx: !values["no-onnx"],
  });
  console.log(`imported ${r.params} parameters and ${r.anchors} anchors`);
  console.log(`checkpoint: ${r.checkpoint}`);
  console.log(`run config: ${r.runConfig}`);
  if (r.onnx) console.log(`onnx:       ${r.onnx.model}\nconfig:     ${r.onnx.config}`);
});
