/** `deno task synth`: writes the embedded synthetic detection dataset. */
import { intFlag, parseTaskArgs, runTask } from "./cli.ts";
import { loadConfig } from "../lib/config.ts";
import { type SynthConfig, synthSpec, writeSynthDataset } from "../lib/synth.ts";

const spec = {
  name: "synth",
  summary: "Write the synthetic shapes dataset (JPEG images + COCO json), deterministic by seed.",
  usage: "--out DIR [--seed N] [--config FILE] [--splits.train=N ...]",
  overrides: true,
  flags: {
    out: { type: "string", arg: "DIR", default: "runs/synth", help: "output folder" },
    seed: { type: "string", arg: "N", default: "1", help: "random seed" },
    config: { type: "string", arg: "FILE", default: "configs/synth.yaml", help: "dataset settings" },
  },
  epilog: "Writes DIR/images/{train,val}/*.jpg and DIR/annotations/instances_{train,val}.json.",
} as const;

runTask(async () => {
  const { values, overrides } = parseTaskArgs(spec);
  const cfg = loadConfig<SynthConfig>(values.config as string, synthSpec, overrides);
  const t0 = performance.now();
  const r = await writeSynthDataset(values.out as string, cfg, { seed: intFlag(values, "seed") });
  console.log(
    `wrote ${r.images} images with ${r.objects} objects to ${values.out} in ${
      ((performance.now() - t0) / 1000).toFixed(1)
    } s`,
  );
});
