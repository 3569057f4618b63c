/**
 * `deno task bench`: every benchmark side by side in one run. Prints a table
 * and writes JSON to bench/results/. Figures are ratios against references
 * measured in the same run; peers (PyTorch, pycocotools) appear when present.
 */
import { benchStepKernels } from "./step_kernels_bench.ts";
import { benchMobileNetKernels } from "./mobilenet_kernels_bench.ts";
import * as path from "node:path";
import { parseTaskArgs, runTask } from "../tasks/cli.ts";
import { InputError } from "../lib/errors.ts";
import { writeJsonAtomic } from "../lib/fs_atomic.ts";
import { benchAnalyze } from "./analyze_bench.ts";
import { benchCocoEval, RECORDED_PYCOCOTOOLS_SECONDS } from "./coco_eval_bench.ts";
import { benchConv, benchMemoryKernels } from "./conv_bench.ts";
import { benchInfer } from "./infer_bench.ts";
import { benchLoader } from "./loader_bench.ts";
import { benchMemory } from "./memory_bench.ts";
import { benchMpi } from "./mpi_bench.ts";
import { benchOrt } from "./ort_bench.ts";
import { benchReplicas, benchTrain } from "./train_bench.ts";
import { benchWebgpu } from "./webgpu_bench.ts";
import { type BenchRow, formatTable } from "./report.ts";

/** COCOeval on the COCO-val-sized workload, side by side with pycocotools when it is importable. */
async function cocoevalSection(o: { quick: boolean }): Promise<BenchRow[]> {
  const r = await benchCocoEval({ images: o.quick ? 1000 : 5000, log: (s) => console.error(`  ${s}`) });
  const ours = r.rows.find((x) => /ours|workbench/i.test(x.name)) ?? r.rows[0];
  return r.rows.map((x) => ({
    section: "cocoeval",
    name: `${x.name} (${r.workload.images} images, ${r.workload.gtBoxes} gt, ${r.workload.detections} dets)`,
    ms: x.seconds * 1000,
    // A ratio only against pycocotools measured in this run, or its recorded time on the same 5000-image
    // workload: a recorded time scaled to --quick's smaller workload is a guess, not a measurement.
    ...(x === ours && (r.pycocotoolsMeasured || r.workload.images === 5000)
      ? {
        speedup: 1 / r.ratio,
        against: r.pycocotoolsMeasured
          ? "vs pycocotools, same files"
          : `vs pycocotools ${RECORDED_PYCOCOTOOLS_SECONDS} s, recorded 2026-11-22 on this machine kind`,
      }
      : {}),
    note: x === ours
      ? `${x.note ?? ""} ${
        r.pycocotoolsMeasured
          ? `max stat diff ${r.maxStatDiff}`
          : r.workload.images === 5000
          ? ""
          : "no ratio: pycocotools was not measured and its recorded time is for 5000 images"
      }`.trim()
      : x.note,
  }));
}

const SECTIONS: Record<string, (o: { quick: boolean }) => Promise<BenchRow[]>> = {
  conv: async (o) => [
    ...await benchConv(o),
    ...await benchMemoryKernels(o),
    ...await benchStepKernels(o),
    ...await benchMobileNetKernels(o),
  ],
  cocoeval: cocoevalSection,
  analyze: benchAnalyze,
  loader: benchLoader,
  memory: benchMemory,
  replicas: benchReplicas,
  train: benchTrain,
  infer: benchInfer,
  ort: benchOrt,
  mpi: benchMpi,
  webgpu: benchWebgpu,
};

const spec = {
  name: "bench",
  summary: "Run the benchmarks side by side and print a table of ratios; JSON goes to bench/results/.",
  usage: `[--only ${Object.keys(SECTIONS).join(",")}] [--quick] [--out DIR]`,
  flags: {
    only: { type: "string", arg: "LIST", help: `comma-separated sections (${Object.keys(SECTIONS).join(", ")})` },
    quick: { type: "boolean", help: "fewer repetitions" },
    out: { type: "string", arg: "DIR", default: "bench/results", help: "where the JSON goes" },
  },
} as const;

runTask(async () => {
  const { values } = parseTaskArgs(spec);
  const names = values.only ? (values.only as string).split(",") : Object.keys(SECTIONS);
  for (const n of names) if (!SECTIONS[n]) throw new InputError(`unknown section "${n}"`);
  const rows: BenchRow[] = [];
  for (const n of names) {
    console.error(`bench: ${n} ...`);
    rows.push(...await SECTIONS[n]({ quick: Boolean(values.quick) }));
  }
  console.log(formatTable(rows));
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  const file = path.join(values.out as string, `bench-${stamp}.json`);
  await writeJsonAtomic(file, { date: new Date().toISOString(), deno: Deno.version, rows });
  console.log(`\nwrote ${file}`);
});
