/**
 * `deno task export`: writes a trained checkpoint as a standard ONNX model
 * (`DIR/model.onnx`) plus the config inference needs (`DIR/config.yaml`, also
 * stored in the model's metadata).
 *
 * @module
 */
import { parseTaskArgs, runTask, type TaskSpec } from "./cli.ts";
import { InputError } from "../lib/errors.ts";
import { exportCheckpoint } from "../lib/export_stage.ts";
import { formatBytes } from "../lib/progress.ts";

const spec: TaskSpec = {
  name: "export",
  summary: "Exports a checkpoint to ONNX (opset 13, dynamic batch, batch norm folded) with its inference config.",
  usage: "--checkpoint CKPT [--config CFG] --out DIR [--with-boxes] [--normalise-in-graph float32|uint8]",
  flags: {
    checkpoint: {
      type: "string",
      arg: "CKPT",
      help: "trained checkpoint: the workbench's, or MindSpore's (.ckpt, with --config naming its model)",
    },
    config: {
      type: "string",
      arg: "CFG",
      help: "run config; default: the one stored in a workbench checkpoint (a MindSpore one needs it)",
    },
    out: { type: "string", arg: "DIR", help: "output folder: model.onnx and config.yaml" },
    "with-boxes": { type: "boolean", help: "add a decoded `boxes` output [N, A, 4] (y1, x1, y2, x2, normalised)" },
    "normalise-in-graph": {
      type: "string",
      arg: "TYPE",
      help: "normalise inside the graph; the input takes pixels 0-255 as float32 or uint8",
    },
    "keep-shared": {
      type: "boolean",
      help: "keep weight-shared convs shared (BatchNormalization after them) instead of folding a copy per level",
    },
    opset: { type: "string", arg: "N", default: "13", help: "ONNX opset (13 or newer)" },
  },
  epilog: [
    "Outputs of the model: loc [N, A, 4] (ty, tx, th, tw), scores [N, A, C] after the score activation,",
    "and with --with-boxes boxes [N, A, 4]. Input `images` [N, S, S, 3] NHWC RGB float32, normalised",
    "((pixel - mean) / std) unless --normalise-in-graph. config.yaml says all of it.",
    "",
    "Example:",
    "  deno task export --checkpoint runs/demo/checkpoints/last.ckpt --out runs/demo/export",
  ].join("\n"),
};

if (import.meta.main) {
  await runTask(async () => {
    const { values } = parseTaskArgs(spec);
    const ckptFile = values.checkpoint, out = values.out;
    if (typeof ckptFile !== "string" || typeof out !== "string") {
      throw new InputError("--checkpoint CKPT and --out DIR are required; see --help");
    }
    const opset = Number(values.opset);
    if (!Number.isInteger(opset) || opset < 13) {
      throw new InputError(`--opset must be an integer >= 13, got ${values.opset}`);
    }
    const nig = values["normalise-in-graph"];
    if (nig !== undefined && nig !== "float32" && nig !== "uint8") {
      throw new InputError(`--normalise-in-graph takes float32 or uint8, got ${JSON.stringify(nig)}`);
    }
    const r = await exportCheckpoint(ckptFile, {
      configFile: values.config as string | undefined,
      out,
      withBoxes: values["with-boxes"] === true,
      normaliseInGraph: (nig as "float32" | "uint8" | undefined) ?? false,
      foldShared: values["keep-shared"] !== true,
      opset,
    });
    console.error(
      `wrote ${r.model} (${formatBytes(r.bytes)}, ${r.cfg.model.arch}, ${r.anchors} anchors, ` +
        `${r.classNames.length} classes) and ${r.config}`,
    );
  });
}
