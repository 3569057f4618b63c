/**
 * `deno task demo`: every stage on the embedded synthetic dataset, in order:
 * synth, convert to MindRecord, train, eval, export to ONNX, infer on val
 * images; then a report. Each stage is the lib function its own task calls.
 */
import { intFlag, parseTaskArgs, runTask } from "./cli.ts";
import { hasCompiler, hasSharedLibrary, offerDebianPackages } from "./setup_check.ts";
import { runDemo } from "../lib/demo.ts";

const spec = {
  name: "demo",
  summary:
    "Run every stage on the embedded synthetic dataset: synth, convert, train, eval, export, infer; write a report.",
  usage: "[--out DIR] [--seed N] [--config FILE] [--key=value ...]",
  overrides: true,
  flags: {
    out: { type: "string", arg: "DIR", default: "runs/demo", help: "output folder" },
    seed: { type: "string", arg: "N", default: "1", help: "random seed (dataset and training)" },
    config: { type: "string", arg: "FILE", default: "configs/demo.yaml", help: "training config" },
  },
  epilog: [
    "Writes DIR/eval_stats.json (COCO stats, as `deno task eval --stats-json`), DIR/report.md (loss curve, COCO",
    "summary, detection pictures), and each stage's output under DIR/. Config overrides apply to training, e.g.",
    "--train.epochs=2 for a quicker, weaker run.",
  ].join("\n"),
} as const;

runTask(async () => {
  const { values, overrides } = parseTaskArgs(spec);
  // oneDNN runs the onnxruntime backend's convs (lib/engine/dnnl.ts): the demo trains about 1.7x faster with it.
  offerDebianPackages(["libdnnl2"], () => hasSharedLibrary("libdnnl.so.2"), "oneDNN would train the demo 1.7x faster");
  // And a C compiler builds the batch-norm passes that run on oneDNN's threads (lib/engine/native_kernels.ts).
  offerDebianPackages(["gcc", "libc6-dev"], hasCompiler, "a C compiler would train the demo faster");
  await runDemo({
    out: values.out as string,
    seed: intFlag(values, "seed")!,
    config: values.config as string,
    overrides,
  });
});
