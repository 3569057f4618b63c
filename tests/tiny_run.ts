// The tiny training setup that train_test.ts and data_parallel_test.ts share: a synthetic dataset of 64 px
// images, and the overrides that point tests/fixtures/configs/tiny_train.yaml at it.
import { loadConfig } from "../lib/config.ts";
import { type SynthConfig, synthSpec, writeSynthDataset } from "../lib/synth.ts";

/** The tiny training config, for `loadSsdConfig` or `--config`. */
export const TINY_CONFIG = "tests/fixtures/configs/tiny_train.yaml";

/** A synthetic dataset of 64 px images in a new folder. */
export async function synthData(train: number, val: number, seed: number): Promise<string> {
  const dir = Deno.makeTempDirSync();
  const synth = loadConfig<SynthConfig>("configs/synth.yaml", synthSpec, {
    image_size: "64",
    "splits.train": String(train),
    "splits.val": String(val),
  });
  await writeSynthDataset(dir, synth, { seed, quiet: true });
  return dir;
}

/** The tiny config's splits pointed at `data` (COCO json + images). */
export function dataOverrides(data: string): Record<string, string> {
  return {
    "data.train.format": "coco",
    "data.train.path": `${data}/annotations/instances_train.json`,
    "data.train.images": `${data}/images/train`,
    "data.val.path": `${data}/annotations/instances_val.json`,
    "data.val.images": `${data}/images/val`,
  };
}
