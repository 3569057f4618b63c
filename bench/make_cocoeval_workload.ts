/**
 * A COCO-val-sized scoring workload for timing COCO evaluation: 5000 images of
 * 640x480, 80 categories, about 35k ground-truth boxes (1% crowd) and 500k
 * detections — one noisy detection per ground truth, the rest background
 * detections padding each image's running total to a multiple of 100.
 *
 * It follows the generator used to time pycocotools on this machine (same
 * distributions and structure), drawn from the project's seeded {@linkcode createRng}.
 *
 * Run alone: `deno run -A bench/make_cocoeval_workload.ts OUTDIR [N_IMAGES]`.
 *
 * @module
 */
import { createRng, type Rng } from "../lib/rng.ts";
import { writeFileAtomic } from "../lib/fs_atomic.ts";
import type { CocoDetection, CocoGroundTruthJson } from "../lib/coco_eval.ts";

/** A generated workload. */
export interface CocoEvalWorkload {
  gt: CocoGroundTruthJson;
  dt: CocoDetection[];
}

/** Options of {@linkcode makeCocoEvalWorkload}. */
export interface WorkloadOptions {
  /** Number of images (COCO val2017 has 5000). */
  images?: number;
  /** Seed of the generator. */
  seed?: number;
}

/** A standard normal draw (Box-Muller). */
function gauss(rng: Rng): number {
  return Math.cos(2 * Math.PI * rng()) * Math.sqrt(-2 * Math.log(1 - rng()));
}

/**
 * Generates the workload deterministically.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const a = makeCocoEvalWorkload({ images: 3 }), b = makeCocoEvalWorkload({ images: 3 });
 * assertEquals(a.dt, b.dt);
 * assertEquals(a.dt.length % 100, 0);
 * ```
 */
export function makeCocoEvalWorkload(options: WorkloadOptions = {}): CocoEvalWorkload {
  const n = options.images ?? 5000;
  const rng = createRng(options.seed ?? 5);
  const uniform = (a: number, b: number) => a + (b - a) * rng();
  const randint = (a: number, b: number) => a + Math.floor(rng() * (b - a + 1));
  const categories = Array.from({ length: 80 }, (_, j) => ({ id: j + 1, name: `c${j + 1}` }));
  const images: CocoGroundTruthJson["images"] = [];
  const annotations: CocoGroundTruthJson["annotations"] = [];
  const dt: CocoDetection[] = [];
  for (let im = 1; im <= n; im++) {
    images.push({ id: im, width: 640, height: 480 } as { id: number });
    const objects = randint(0, 14);
    for (let o = 0; o < objects; o++) {
      const w = uniform(4, 300), h = uniform(4, 300);
      const x = uniform(0, 640 - w), y = uniform(0, 480 - h);
      const c = randint(1, 80);
      annotations.push({
        id: annotations.length + 1,
        image_id: im,
        category_id: c,
        bbox: [x, y, w, h],
        area: w * h,
        iscrowd: rng() < 0.01 ? 1 : 0,
      });
      dt.push({ image_id: im, category_id: c, bbox: [x + 5 * gauss(rng), y + 5 * gauss(rng), w, h], score: rng() });
    }
    // Background detections up to the next multiple of 100 of the running total (as the reference generator).
    const pad = 100 - Math.min(100, dt.length % 100);
    for (let j = 0; j < pad; j++) {
      const w = uniform(4, 300), h = uniform(4, 300);
      dt.push({
        image_id: im,
        category_id: randint(1, 80),
        bbox: [uniform(0, 640 - w), uniform(0, 480 - h), w, h],
        score: rng() * 0.5,
      });
    }
  }
  return { gt: { images, annotations, categories }, dt };
}

/**
 * Writes `perf_gt.json` and `perf_dt.json` into `dir` (atomically) and
 * returns their paths.
 */
export async function writeCocoEvalWorkload(
  dir: string,
  options: WorkloadOptions = {},
): Promise<{ gtFile: string; dtFile: string; images: number; gtBoxes: number; detections: number }> {
  const w = makeCocoEvalWorkload(options);
  const gtFile = `${dir}/perf_gt.json`, dtFile = `${dir}/perf_dt.json`;
  await writeFileAtomic(gtFile, JSON.stringify(w.gt));
  await writeFileAtomic(dtFile, JSON.stringify(w.dt));
  return {
    gtFile,
    dtFile,
    images: w.gt.images.length,
    gtBoxes: w.gt.annotations.length,
    detections: w.dt.length,
  };
}

if (import.meta.main) {
  const [dir, images] = Deno.args;
  if (!dir || dir === "--help" || dir === "-h") {
    console.log("usage: deno run -A bench/make_cocoeval_workload.ts OUTDIR [N_IMAGES]");
    Deno.exit(dir ? 0 : 1);
  }
  const info = await writeCocoEvalWorkload(dir, { images: images ? Number(images) : undefined });
  console.log(`images ${info.images} gt ${info.gtBoxes} dets ${info.detections} -> ${info.gtFile}, ${info.dtFile}`);
}
