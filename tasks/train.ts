/** `deno task train`: trains an SSD as a config says. */
import process from "node:process";
import { intFlag, parseTaskArgs, runTask } from "./cli.ts";
import { InputError } from "../lib/errors.ts";
import { DIST_MODES, openDataParallel } from "../lib/data_parallel.ts";
import { BACKENDS, type Mpi } from "../lib/engine/mod.ts";
import { loadSsdConfig, type SsdConfig, storedConfig } from "../lib/ssd_config.ts";
import { checkSummary, RESUME_SAFE_KEYS, resumeConfig, train } from "../lib/train.ts";

const spec = {
  name: "train",
  summary: "Train an SSD (Momentum, warmup + cosine lr, focal + SmoothL1 loss) with checkpoints and exact resume.",
  usage:
    "--config FILE [--out DIR] [--init CKPT [--init.filter NAMES]] [--seed N] [--max-steps N] [--key=value ...] | --out DIR --resume",
  overrides: true,
  flags: {
    config: {
      type: "string",
      arg: "FILE",
      help: "run config (YAML; default configs/demo.yaml; not read with --resume)",
    },
    out: { type: "string", arg: "DIR", default: "runs/train", help: "run folder" },
    seed: { type: "string", arg: "N", help: "random seed (overrides the config's)" },
    backend: { type: "string", arg: "NAME", help: `${BACKENDS.join(", ")} (overrides the config's)` },
    resume: {
      type: "boolean",
      help: "continue the run in --out from its latest checkpoint, with the config stored in it",
    },
    init: {
      type: "string",
      arg: "CKPT",
      help: "start from these weights: a workbench or MindSpore .ckpt, or a MindSpore backbone alone (other class " +
        "counts re-initialise the class heads)",
    },
    "init.filter": {
      type: "string",
      arg: "NAMES",
      help: "with --init: drop tensors whose name contains one of these (comma-separated), e.g. " +
        "multi_loc_layers,multi_cls_layers (the ModelZoo's filter_weight)",
    },
    "max-steps": {
      type: "string",
      arg: "N",
      help: "stop after N steps, saving OUT/checkpoints/step-<global step>.ckpt",
    },
    dist: {
      type: "string",
      arg: "MODE",
      default: "auto",
      help: `data-parallel over MPI ranks: ${DIST_MODES.join(", ")} (auto: when mpirun, mpiexec or srun launched ` +
        "this process; MPI_LIB=PATH picks the libmpi)",
    },
    "check-backend": {
      type: "string",
      arg: "NAME",
      help: `also run each step on this backend (${
        BACKENDS.join(", ")
      }; same weights and batch) and log the differences`,
    },
  },
  epilog: [
    "Writes OUT/checkpoints/epoch-<N>.ckpt (see lib/checkpoint.ts for the format), OUT/train_log.jsonl (one JSON line",
    "per step), OUT/loss_curve.png and OUT/config.yaml. Ctrl-C saves OUT/checkpoints/interrupted.ckpt and exits.",
    "--check-backend logs check_loss and check_grad_diff (|g - g'| / |g|) per step; it needs --train.replicas=1.",
    "--backend webgpu trains on the GPU that Deno's WebGPU finds (Vulkan, Metal, DX12; README, GPU). The first log",
    'line records the device (its "device" field); a software adapter such as lavapipe gets a warning.',
    "--resume continues exactly: the run's own stored config (with the overrides it started with), its data order,",
    "augmentation draws and optimizer state. An override given with --resume that would change the run is an error",
    "naming the key; these may change: " + RESUME_SAFE_KEYS.join(", ") + " (train.epochs only longer).",
    "Relative dataset paths resolve against data.root (default runs/data): --data.root=DIR relocates them.",
    "Under MPI (mpirun -np N deno task train ..., srun ...), train.batch_size is the global batch: each rank trains",
    "its share, gradients are summed with MPI_Allreduce, and rank 0 alone writes OUT (see README, Data-parallel training).",
    "kill -USR1 <mpirun pid> stops every rank after the same step and saves interrupted.ckpt.",
    "Example: deno task train --config configs/demo.yaml --out runs/demo/train --train.epochs=4",
  ].join("\n"),
} as const;

function initFilter(list: string | undefined, hasInit: boolean): string[] | undefined {
  if (list === undefined) return undefined;
  if (!hasInit) throw new InputError("--init.filter needs --init CKPT");
  const names = list.split(",").map((s) => s.trim()).filter(Boolean);
  if (names.length === 0) throw new InputError("--init.filter needs at least one name");
  return names;
}

let mpi: Mpi | undefined;

/** The run's config: rank 0 resolves it (from --config, or the run's checkpoint with --resume) and sends it on. */
function resolveConfig(values: Record<string, unknown>, overrides: Record<string, string>): SsdConfig {
  let cfg: SsdConfig | undefined;
  if (!mpi || mpi.rank === 0) {
    if (values.resume) {
      if (values.config !== undefined) {
        console.error(`note: --resume continues with the config stored in the run; ${values.config} is not read`);
      }
      cfg = resumeConfig(values.out as string, overrides);
    } else cfg = loadSsdConfig((values.config as string | undefined) ?? "configs/demo.yaml", overrides);
  }
  if (!mpi) return cfg!;
  return storedConfig(JSON.parse(mpi.bcastString(cfg ? JSON.stringify(cfg) : "")));
}

runTask(async () => {
  const { values, overrides } = parseTaskArgs(spec);
  if (values.seed !== undefined) overrides.seed = String(intFlag(values, "seed"));
  if (values.backend !== undefined) overrides.backend = values.backend as string;
  mpi = openDataParallel(values.dist as string, Deno.env.toObject());
  const lead = !mpi || mpi.rank === 0;
  const cfg = resolveConfig(values, overrides);
  if (mpi && lead) {
    const b = cfg.train.batch_size;
    console.log(
      `MPI: ${mpi.size} ranks (${mpi.version.split(",")[0]}, ${mpi.localSize} on this machine), ` +
        `${cfg.train.replicas} replica(s) each; global batch ${b}, ~${Math.round(b / mpi.size)} images per rank`,
    );
  }
  const r = await train(cfg, {
    outDir: values.out as string,
    resume: Boolean(values.resume),
    init: values.init as string | undefined,
    initFilter: initFilter(values["init.filter"] as string | undefined, values.init !== undefined),
    maxSteps: intFlag(values, "max-steps"),
    checkBackend: values["check-backend"] as string | undefined,
    onSecondInterrupt: () => mpi ? mpi.abort(130) : process.exit(130),
    mpi,
  });
  mpi?.finalize();
  if (!lead) return;
  const last = r.losses.at(-1);
  const check = checkSummary(r.losses);
  if (check) {
    console.log(
      `check on ${values["check-backend"]}, worst step: loss ${check.loss.toExponential(1)} relative, ` +
        `gradients ${check.grads.toExponential(1)} (|g - g'| / |g|)`,
    );
  }
  console.log(
    `${r.interrupted ? "interrupted" : "done"}: ${r.losses.length} steps logged, last loss ${last?.loss.toFixed(4)}`,
  );
  console.log(
    `checkpoint: ${r.checkpoint}${r.best ? `, best: ${r.best}` : ""}; loss curve: ${r.outDir}/loss_curve.png`,
  );
}, {
  // Under MPI a failing rank takes the job down (MPI_Abort) instead of leaving the others waiting in a collective.
  prefix: () => mpi ? `rank ${mpi.rank}/${mpi.size}: ` : "",
  exit: (code) => mpi ? mpi.abort(code) : process.exit(code),
});
