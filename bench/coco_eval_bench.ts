/**
 * Times our COCO bbox evaluator on a COCO-val-sized workload (5000 images,
 * 80 categories, ~35k ground truths, 500k detections) and, when a
 * pycocotools build is at hand, pycocotools on the same files, side by side,
 * comparing the 12 stats.
 *
 * pycocotools is looked up as `PYCOCOTOOLS_DIR` (a built cocoapi `PythonAPI`
 * folder) or as an importable module of `/usr/bin/python3`; without it the
 * recorded figure for this machine (63 s) stands in.
 *
 * Run alone: `deno run -A bench/coco_eval_bench.ts [--images N] [--dir DIR] [--skip-pycocotools]`.
 *
 * @module
 */
import * as fs from "node:fs";
import { cocoEvaluate } from "../lib/coco_eval.ts";
import { writeCocoEvalWorkload } from "./make_cocoeval_workload.ts";

/** pycocotools' time for the 5000-image workload on this machine (loadRes + evaluate + accumulate + summarize). */
export const RECORDED_PYCOCOTOOLS_SECONDS = 63;

/** The speed target: at most this fraction of pycocotools' time. */
export const TARGET_FRACTION = 1 / 5;

/** Options of {@linkcode benchCocoEval}. */
export interface CocoEvalBenchOptions {
  /** Images in the workload; 5000 mirrors COCO val2017. */
  images?: number;
  /** Where to write the workload; a temporary folder (removed afterwards) by default. */
  dir?: string;
  /** Do not look for pycocotools. */
  skipPycocotools?: boolean;
  /** Python interpreter for pycocotools. */
  python?: string;
  /** Progress lines; silent by default. */
  log?: (line: string) => void;
}

/** One timing row. */
export interface CocoEvalBenchRow {
  name: string;
  /** Wall time in seconds; the recorded figure when pycocotools was skipped. */
  seconds: number;
  /** "measured", or why the figure is a recorded one. */
  note: string;
}

/** What {@linkcode benchCocoEval} reports. */
export interface CocoEvalBenchResult {
  rows: CocoEvalBenchRow[];
  /** Our time over pycocotools' time (measured in the same run when possible). */
  ratio: number;
  /** True when pycocotools ran in this run. */
  pycocotoolsMeasured: boolean;
  /** Largest |ours - pycocotools| over the 12 stats, when pycocotools ran. */
  maxStatDiff: number | null;
  /** The 12 stats of our evaluator. */
  stats: number[];
  /** Workload size. */
  workload: { images: number; gtBoxes: number; detections: number };
  /** Speed target met and, when pycocotools ran, every stat within 1e-9. */
  ok: boolean;
}

// Times pycocotools the way it is used: COCO(gt), loadRes(dt), evaluate, accumulate, summarize.
const PY_TIMER = `
import contextlib, io, json, os, sys, time
import numpy as np
if not hasattr(np, "float"):
    np.float = float  # cocoeval.py still uses np.float, removed in NumPy 1.24
d = os.environ.get("PYCOCOTOOLS_DIR")
if d:
    sys.path.insert(0, d)
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
t0 = time.time()
with contextlib.redirect_stdout(io.StringIO()):
    coco = COCO(sys.argv[1])
    E = COCOeval(coco, coco.loadRes(sys.argv[2]), "bbox")
    E.evaluate(); E.accumulate(); E.summarize()
print(json.dumps({"seconds": time.time() - t0, "stats": [float(s) for s in E.stats]}))
`;

/** How to run pycocotools here, or why not. */
async function findPycocotools(python: string): Promise<{ env: Record<string, string> } | { reason: string }> {
  const dir = Deno.env.get("PYCOCOTOOLS_DIR");
  if (dir && !fs.existsSync(`${dir}/pycocotools/cocoeval.py`)) {
    return { reason: `PYCOCOTOOLS_DIR=${dir} has no pycocotools/cocoeval.py` };
  }
  const env: Record<string, string> = dir ? { PYCOCOTOOLS_DIR: dir } : {};
  const probe = `import os, sys\nd = os.environ.get("PYCOCOTOOLS_DIR")\nif d: sys.path.insert(0, d)\n` +
    "import numpy, pycocotools._mask, pycocotools.cocoeval";
  try {
    const out = await new Deno.Command(python, { args: ["-c", probe], env, stdout: "null", stderr: "null" }).output();
    if (out.code === 0) return { env };
    return { reason: dir ? `pycocotools in ${dir} does not import` : "pycocotools is not importable" };
  } catch {
    return { reason: `${python} not found` };
  }
}

/**
 * Generates the workload, times our evaluator on it and, when available,
 * pycocotools on the same files.
 */
export async function benchCocoEval(opts: CocoEvalBenchOptions = {}): Promise<CocoEvalBenchResult> {
  const log = opts.log ?? (() => {});
  const python = opts.python ?? "/usr/bin/python3";
  const tempDir = opts.dir ? undefined : await Deno.makeTempDir({ prefix: "cocoeval_bench_" });
  const dir = opts.dir ?? tempDir!;
  try {
    log(`generating workload (${opts.images ?? 5000} images) in ${dir}`);
    const w = await writeCocoEvalWorkload(dir, { images: opts.images });
    log(`images ${w.images} gt ${w.gtBoxes} dets ${w.detections}`);

    // Ours: read and parse both files, then evaluate, accumulate, summarize (the same scope as pycocotools).
    const t0 = performance.now();
    const gt = JSON.parse(await Deno.readTextFile(w.gtFile));
    const dt = JSON.parse(await Deno.readTextFile(w.dtFile));
    const res = cocoEvaluate(gt, dt, { gtFile: w.gtFile, dtFile: w.dtFile });
    const ours = (performance.now() - t0) / 1000;
    log(`ours ${ours.toFixed(2)} s`);

    let py: { seconds: number; stats: number[] } | undefined;
    let pyNote = "skipped (--skip-pycocotools); recorded figure";
    if (!opts.skipPycocotools) {
      const found = await findPycocotools(python);
      if ("reason" in found) {
        pyNote = `skipped: ${found.reason}; recorded figure`;
      } else {
        log("timing pycocotools on the same files (about a minute)");
        const out = await new Deno.Command(python, {
          args: ["-c", PY_TIMER, w.gtFile, w.dtFile],
          env: found.env,
          stdout: "piped",
          stderr: "piped",
        }).output();
        if (out.code === 0) {
          py = JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!);
          pyNote = "measured";
        } else {
          const err = new TextDecoder().decode(out.stderr).trim().split("\n").at(-1);
          pyNote = `failed (${err}); recorded figure`;
        }
      }
    }
    // The recorded figure is for 5000 images; pycocotools' time grows about linearly with the image count.
    const pySeconds = py?.seconds ?? RECORDED_PYCOCOTOOLS_SECONDS * (w.images / 5000);
    if (!py && w.images !== 5000) pyNote += ` scaled to ${w.images} images`;
    const maxStatDiff = py ? Math.max(...res.stats.map((s, j) => Math.abs(s - py!.stats[j]))) : null;
    const ratio = ours / pySeconds;
    const size = `${w.images} img, ${w.gtBoxes} gt, ${w.detections} dt`;
    const rows: CocoEvalBenchRow[] = [
      { name: "coco_eval (ours): load + evaluate + accumulate + summarize", seconds: ours, note: `measured; ${size}` },
      { name: "pycocotools: COCO + loadRes + evaluate + accumulate + summarize", seconds: pySeconds, note: pyNote },
    ];
    const ok = ratio <= TARGET_FRACTION && (maxStatDiff === null || maxStatDiff <= 1e-9);
    return {
      rows,
      ratio,
      pycocotoolsMeasured: py !== undefined,
      maxStatDiff,
      stats: res.stats,
      workload: { images: w.images, gtBoxes: w.gtBoxes, detections: w.detections },
      ok,
    };
  } finally {
    if (tempDir) await Deno.remove(tempDir, { recursive: true });
  }
}

if (import.meta.main) {
  const args = Deno.args;
  if (args.includes("--help") || args.includes("-h")) {
    console.log("usage: deno run -A bench/coco_eval_bench.ts [--images N] [--dir DIR] [--skip-pycocotools]");
    Deno.exit(0);
  }
  const flag = (name: string) => {
    const j = args.indexOf(name);
    return j >= 0 ? args[j + 1] : undefined;
  };
  const images = flag("--images");
  const r = await benchCocoEval({
    images: images ? Number(images) : undefined,
    dir: flag("--dir"),
    skipPycocotools: args.includes("--skip-pycocotools"),
    log: (s) => console.error(s),
  });
  for (const row of r.rows) console.log(`${row.name.padEnd(66)} ${row.seconds.toFixed(2).padStart(7)} s  ${row.note}`);
  console.log(
    `ratio ours/pycocotools ${r.ratio.toFixed(3)} (${(1 / r.ratio).toFixed(1)}x faster; target <= ${TARGET_FRACTION})` +
      (r.maxStatDiff === null ? "; stats not compared" : `; max |stat diff| ${r.maxStatDiff}`),
  );
  console.log(r.ok ? "ok" : "NOT OK");
  Deno.exit(r.ok ? 0 : 1);
}
