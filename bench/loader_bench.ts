/**
 * The training loader alone: decode (sharp), augment, match and batch, with
 * no model, in images per second, next to the train step's own rate.
 */
import * as fs from "node:fs";
import { type AugmentConfig, augmentSample } from "../lib/augment.ts";
import { batches } from "../lib/data_loader.ts";
import { ImageCache } from "../lib/image_cache.ts";
import { loadSplit } from "../lib/dataset.ts";
import { matchAndEncode } from "../lib/matcher.ts";
import { anchorsOf, loadSsdConfig, scaleFactorsOf } from "../lib/ssd_config.ts";
import { loadConfig } from "../lib/config.ts";
import { type SynthConfig, synthSpec, writeSynthDataset } from "../lib/synth.ts";
import { ortStepInChild } from "./ort_bench.ts";
import type { BenchRow } from "./report.ts";

/** The loader section of `deno task bench`. */
export async function benchLoader(o: { quick?: boolean } = {}): Promise<BenchRow[]> {
  const dir = Deno.makeTempDirSync({ prefix: "loader_bench_" });
  try {
    const n = o.quick ? 128 : 512;
    const synth = loadConfig<SynthConfig>("configs/synth.yaml", synthSpec, {
      "splits.train": String(n),
      "splits.val": "0",
    });
    await writeSynthDataset(dir, synth, { seed: 1, quiet: true });
    const cfg = loadSsdConfig("configs/demo.yaml", {
      "data.train.format": "coco",
      "data.train.path": `${dir}/annotations/instances_train.json`,
      "data.train.images": `${dir}/images/train`,
    });
    const rows: BenchRow[] = [];
    // The tutorial's augmentation, as its config states it (sizes stay the demo's).
    const tutorial: AugmentConfig = loadSsdConfig("configs/ssd300_vgg16.yaml").augment;
    const variants: [string, AugmentConfig, ImageCache | null][] = [
      ["demo augmentation", cfg.augment, null],
      ["tutorial augmentation", tutorial, null],
      // The demo's config keeps decoded images (train.image_cache_mb): its second epoch decodes nothing.
      ["demo augmentation, decoded images cached (2nd epoch)", cfg.augment, new ImageCache(2 ** 30)],
    ];
    for (const [label, aug, cache] of variants) {
      const split = loadSplit(cfg.data, "train", { classNames: cfg.model.class_names });
      const anchors = anchorsOf(cfg), sf = scaleFactorsOf(cfg);
      const epoch = (e: number) =>
        batches(
          split.records,
          (r, rng) => augmentSample(r, cfg.model.input_size, rng, aug, cache ?? undefined),
          (s) => matchAndEncode(s, anchors, { matchThreshold: cfg.matcher.match_threshold, scaleFactors: sf }),
          e,
          { batchSize: 16, inputSize: cfg.model.input_size, numAnchors: anchors.count, seed: 1, prefetch: 3 },
        );
      if (cache) { for await (const _ of epoch(0)) { /* fills the cache */ } }
      const t0 = performance.now();
      let images = 0;
      for await (const b of epoch(cache ? 1 : 0)) images += b.size;
      const sec = (performance.now() - t0) / 1000;
      rows.push({
        section: "loader",
        name: `decode + ${label} + match + batch, ${cfg.model.input_size} px`,
        ms: (sec / images) * 1000,
        note: `${(images / sec).toFixed(0)} img/s (per-image time shown)`,
      });
    }
    // Against what the loader feeds: the demo's train step (batch 16, one replica, its default onnxruntime
    // backend) timed in this run; above 1x the loader keeps ahead of the model.
    const bs = 16;
    const step = ortStepInChild({
      config: "configs/demo.yaml",
      backend: "onnxruntime",
      batch: bs,
      steps: o.quick ? 3 : 5,
      segments: 1,
    });
    const stepRate = bs / step.seconds;
    for (const r of rows) {
      r.speedup = (step.seconds / bs) / (r.ms! / 1000);
      r.against = `the demo train step's ${stepRate.toFixed(0)} img/s (batch ${bs}, one replica, onnxruntime)`;
    }
    return rows;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
