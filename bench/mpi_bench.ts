/**
 * The MPI section of `deno task bench`:
 * - the gradient all-reduce of SSD300-VGG16 and SSD300-MobileNetV2 on 2 ranks
 *   (`mpirun -np 2`, shared memory), next to copying the same buffer once;
 * - training throughput of the real `train` task at 1 and 2 ranks, next to
 *   one process with `train.replicas: 2`, on the demo (and, without --quick,
 *   SSD300-MobileNetV2);
 * - a ring all-reduce model of 8 and 64 ranks from the measured compute and
 *   gradient sizes, for a few network bandwidths (the README's table).
 *
 * Needs Open MPI's `mpirun` (`apt-get install openmpi-bin`).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { spawnSync } from "node:child_process";
import { dataParallelThroughput, openDataParallel } from "../lib/data_parallel.ts";
import { loadConfig } from "../lib/config.ts";
import { writeFileAtomic } from "../lib/fs_atomic.ts";
import { anchorsOf, buildModel, loadSsdConfig } from "../lib/ssd_config.ts";
import { type SynthConfig, synthSpec, writeSynthDataset } from "../lib/synth.ts";
import type { StepLog } from "../lib/train.ts";
import { type BenchRow, timeMedian } from "./report.ts";

const MPI_ENV = { NO_COLOR: "1", OMPI_ALLOW_RUN_AS_ROOT: "1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: "1" };

/** Trainable float32 values of a config's network: what its gradient all-reduce carries. */
export function gradientFloats(config: string): number {
  const cfg = loadSsdConfig(config);
  const graph = buildModel(cfg, anchorsOf(cfg));
  return graph.params
    .filter((p) => p.kind !== "moving_mean" && p.kind !== "moving_variance")
    .reduce((a, p) => a + p.shape.reduce((x, y) => x * y, 1), 0);
}

// Gradient sizes as configured (the SSD300s with COCO's 81 classes).
const GRADS = [
  { name: "demo", config: "configs/demo.yaml" },
  { name: "ssd300_vgg16", config: "configs/ssd300_vgg16.yaml" },
  { name: "ssd300_mobilenetv2", config: "configs/ssd300_mobilenetv2.yaml" },
];

function run(cmd: string, args: string[], env: Record<string, string> = {}): string {
  const r = spawnSync(cmd, args, { encoding: "utf8", env: { ...Deno.env.toObject(), ...MPI_ENV, ...env } });
  if (r.status !== 0) {
    throw new Error(`${cmd} ${args.slice(0, 6).join(" ")} ... failed: ${(r.stderr ?? "").slice(-400)}`);
  }
  return r.stdout;
}

/** Median images/s of a run's logged steps after the first two (start-up, first batches). */
function loggedThroughput(out: string): number {
  const steps = fs.readFileSync(path.join(out, "train_log.jsonl"), "utf8").trim().split("\n")
    .map((l) => JSON.parse(l) as StepLog).slice(2).map((l) => l.images_per_s).sort((a, b) => a - b);
  return steps[Math.floor(steps.length / 2)];
}

/** The section: rows for the table, and the scaling model (also written to bench/results). */
export async function benchMpi(o: { quick?: boolean } = {}): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  // 1. All-reduce on 2 ranks.
  const sizes = GRADS.map((g) => ({ ...g, floats: gradientFloats(g.config) }));
  const reps = o.quick ? 3 : 7;
  const measured = JSON.parse(
    run("mpirun", [
      "-np",
      "2",
      Deno.execPath(),
      "run",
      "-A",
      import.meta.filename!,
      "--allreduce",
      JSON.stringify({
        floats: sizes.map((s) => s.floats),
        reps,
      }),
    ]).trim().split("\n").at(-1)!,
  ) as { allreduceMs: number[]; copyMs: number[] };
  sizes.forEach((s, k) => {
    const mb = s.floats * 4 / 1e6;
    rows.push({
      section: "mpi",
      name: `all-reduce of ${s.name}'s gradients (${mb.toFixed(1)} MB float32), 2 ranks, shared memory`,
      ms: measured.allreduceMs[k],
      speedup: measured.copyMs[k] / measured.allreduceMs[k],
      against: "vs one copy of the buffer in one process",
      note: `${(mb / measured.allreduceMs[k]).toFixed(2)} GB/s algorithm bandwidth`,
    });
  });

  // 2. Throughput of the train task: 1 process, 1 process with 2 replicas, 2 ranks.
  const data = Deno.makeTempDirSync({ prefix: "mpi-bench-" });
  const synth = loadConfig<SynthConfig>("configs/synth.yaml", synthSpec, { "splits.train": "128", "splits.val": "0" });
  await writeSynthDataset(data, synth, { seed: 3, quiet: true });
  const models = [{ name: "demo", config: "configs/demo.yaml", batch: 16, steps: 12 }];
  if (!o.quick) {
    models.push(
      { name: "ssd300_mobilenetv2", config: "configs/ssd300_mobilenetv2.yaml", batch: 4, steps: 6 },
      { name: "ssd300_vgg16", config: "configs/ssd300_vgg16.yaml", batch: 4, steps: 5 },
    );
  }
  const throughput: Record<string, number> = {};
  for (const m of models) {
    const flags = [
      "--config",
      m.config,
      `--data.root=${data}`,
      "--data.train.format=coco",
      "--data.train.path=annotations/instances_train.json",
      "--data.train.images=images/train",
      "--data.val.path=null",
      `--train.batch_size=${m.batch}`,
      "--train.epochs=50",
      "--train.eval_every=0",
      "--max-steps",
      String(m.steps),
      // The synthetic shapes' classes, for the COCO-class configs too.
      "--model.num_classes=4",
      "--model.class_names=[background, rectangle, ellipse, triangle]",
    ];
    const variants = [
      { label: "1 process, train.replicas: 1", mpi: false, replicas: 1 },
      { label: "1 process, train.replicas: 2", mpi: false, replicas: 2 },
      { label: "mpirun -np 2, train.replicas: 1", mpi: true, replicas: 1 },
    ];
    const ips: number[] = [];
    for (const v of variants) {
      const out = Deno.makeTempDirSync({ prefix: "mpi-bench-run-" });
      const args = ["run", "-A", "tasks/train.ts", "--out", out, ...flags, `--train.replicas=${v.replicas}`];
      if (v.mpi) run("mpirun", ["-np", "2", Deno.execPath(), ...args]);
      else run(Deno.execPath(), [...args, "--dist", "none"]);
      ips.push(loggedThroughput(out));
      fs.rmSync(out, { recursive: true, force: true });
    }
    throughput[m.name] = ips[0];
    variants.forEach((v, k) =>
      rows.push({
        section: "mpi",
        name: `${m.name} train task, batch ${m.batch}: ${v.label}`,
        ms: 1000 * m.batch / ips[k],
        ...(k > 0 ? { speedup: ips[k] / ips[0], against: "vs 1 process, 1 replica" } : {}),
        note: `${ips[k].toFixed(1)} img/s`,
      })
    );
  }
  fs.rmSync(data, { recursive: true, force: true });

  // 3. The scaling model, for the ModelZoo's 32 images per device: compute per image from the 1-process,
  // 1-replica runs above (one rank = one machine like this; their heads have 4 classes, a rounding error of the
  // backbone's work), gradient bytes of the configured networks.
  const perImage: Record<string, number> = Object.fromEntries(
    Object.entries(throughput).map(([name, ips]) => [name, 1 / ips]),
  );
  const links = [
    { name: "1 GbE", bandwidth: 0.125e9, latency: 50e-6 },
    { name: "10 GbE", bandwidth: 1.25e9, latency: 20e-6 },
    { name: "100 Gb/s IB", bandwidth: 12.5e9, latency: 2e-6 },
  ];
  // Ranks like this machine (measured), and ranks 100x faster at compute (an assumption standing for a GPU
  // rank: torchvision's SSD300 trains at hundreds of images/s on one), where the network starts to matter.
  const ranksLike = [
    { rank: "this machine", factor: 1 },
    { rank: "100x faster (assumed)", factor: 0.01 },
  ];
  // One row per model, rank speed and rank count; per network: the all-reduce, img/s and efficiency
  // (compute / (compute + all-reduce)).
  const table: string[] = [
    `| model (grads) | rank compute, 32 img | ranks | ${links.map((l) => l.name).join(" | ")} |`,
    `|---|---|---|${links.map(() => "---").join("|")}|`,
  ];
  for (const s of sizes.filter((x) => perImage[x.name] !== undefined && x.name !== "demo")) {
    for (const like of ranksLike) {
      const computePerImage = perImage[s.name] * like.factor;
      for (const ranks of [8, 64]) {
        const cells = links.map((link) => {
          const t = dataParallelThroughput({ ranks, perRank: 32, computePerImage, gradBytes: s.floats * 4, link });
          return `${(t.allreduceSeconds * 1000).toFixed(0)} ms: ${t.imagesPerSecond.toFixed(0)} img/s, ` +
            `${(100 * t.efficiency).toFixed(0)}%`;
        });
        table.push(
          `| ${s.name} (${(s.floats * 4 / 1e6).toFixed(0)} MB) | ${
            (32 * computePerImage).toFixed(2)
          } s, ${like.rank} | ` +
            `${ranks} | ${cells.join(" | ")} |`,
        );
      }
    }
  }
  console.error(table.join("\n"));
  const file = "bench/results/mpi_scaling.md";
  await writeFileAtomic(file, table.join("\n") + "\n");
  rows.push({
    section: "mpi",
    name: "scaling model (ring all-reduce) of 8 and 64 ranks",
    ms: null,
    untimed: true,
    note: file,
  });
  return rows;
}

// Child mode, under mpirun: all-reduce buffers of the given sizes; rank 0 prints the medians.
if (import.meta.main && Deno.args[0] === "--allreduce") {
  const job = JSON.parse(Deno.args[1]) as { floats: number[]; reps: number };
  const mpi = openDataParallel("auto", Deno.env.toObject());
  if (!mpi) throw new Error("--allreduce runs under mpirun");
  const allreduceMs: number[] = [], copyMs: number[] = [];
  for (const n of job.floats) {
    // As training does: the same two buffers every step (lib/data_parallel.ts).
    const buf = new Float32Array(n).fill(mpi.rank + 1), sum = new Float32Array(n);
    mpi.barrier();
    allreduceMs.push(
      await timeMedian(() => {
        mpi.allreduceSum(buf, sum);
      }, job.reps),
    );
    const dst = new Float32Array(n);
    copyMs.push(await timeMedian(() => dst.set(buf), job.reps));
  }
  if (mpi.rank === 0) console.log(JSON.stringify({ allreduceMs, copyMs }));
  mpi.finalize();
}
