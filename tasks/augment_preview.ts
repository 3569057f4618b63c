/** `deno task augment-preview`: a grid of augmented training samples with their boxes drawn. */
import * as path from "node:path";
import { intFlag, parseTaskArgs, runTask } from "./cli.ts";
import { augmentPreview } from "../lib/augment_preview.ts";
import { loadSplit } from "../lib/dataset.ts";
import { writeFileAtomic } from "../lib/fs_atomic.ts";
import { loadSsdConfig } from "../lib/ssd_config.ts";

const spec = {
  name: "augment-preview",
  summary: "Write OUT/augment_preview.png: augmented training samples with their boxes, to check boxes follow pixels.",
  usage: "--out DIR [--config FILE] [--count N] [--seed N] [--key=value ...]",
  overrides: true,
  flags: {
    out: { type: "string", arg: "DIR", default: "runs/augment", help: "output folder" },
    config: { type: "string", arg: "FILE", default: "configs/demo.yaml", help: "run config (its data.train split)" },
    count: { type: "string", arg: "N", default: "16", help: "number of samples" },
    seed: { type: "string", arg: "N", default: "1", help: "random seed" },
  },
  epilog: "The demo config reads runs/demo (run `deno task demo` first); --data.root=DIR points it elsewhere.",
} as const;

runTask(async () => {
  const { values, overrides } = parseTaskArgs(spec);
  const cfg = loadSsdConfig(values.config as string, overrides);
  const split = loadSplit(cfg.data, "train", { classNames: cfg.model.class_names });
  const names = split.classNames ?? [];
  const png = await augmentPreview(split.records, names, cfg.model.input_size, cfg.augment, {
    seed: intFlag(values, "seed"),
    count: intFlag(values, "count"),
  });
  const file = path.join(values.out as string, "augment_preview.png");
  await writeFileAtomic(file, png);
  console.log(`wrote ${file}`);
});
