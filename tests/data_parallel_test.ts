// Data-parallel training over MPI: the batch split, the launcher detection, the binding's collectives, and
// 2-rank runs under Open MPI's mpirun on loopback (CI installs openmpi-bin; `deno task test` does when root).
import assert from "node:assert";
import * as fs from "node:fs";
import { readCheckpoint } from "../lib/checkpoint.ts";
import { openDataParallel, rankShare } from "../lib/data_parallel.ts";
import { launcherFromEnv, splitBatch } from "../lib/engine/mod.ts";
import { registerOrtKernels } from "../lib/engine/ort_kernels.ts";
import { InputError } from "../lib/errors.ts";
import { kernelThreads, loadSsdConfig } from "../lib/ssd_config.ts";
import { latestCheckpoint, train } from "../lib/train.ts";
import { assertRejectsError, assertThrowsError } from "./asserts.ts";
import { dataOverrides, synthData, TINY_CONFIG } from "./tiny_run.ts";

Deno.test("rankShare gives each rank the parts that one process's replicas would train", () => {
  for (const n of [4, 7, 10, 16, 33]) {
    for (const [ranks, replicas] of [[2, 1], [2, 2], [3, 1], [4, 2]]) {
      if (n < ranks * replicas) continue;
      // One process cutting the batch into ranks x replicas parts, as train.replicas does.
      const b = { images: new Float32Array(n * 3), loc: new Float32Array(n * 4), labels: new Int32Array(n), size: n };
      b.labels.forEach((_, i) => (b.labels[i] = i));
      const whole = splitBatch(b, ranks * replicas, 1, 1).map((p) => [...p.labels]);
      for (let rank = 0; rank < ranks; rank++) {
        const { start, end } = rankShare(n, { rank, ranks, replicas });
        const mine = { ...b, labels: b.labels.slice(start, end), size: end - start };
        const parts = splitBatch(mine, replicas, 1, 1).map((p) => [...p.labels]);
        assert.deepStrictEqual(parts, whole.slice(rank * replicas, (rank + 1) * replicas), `n ${n}, rank ${rank}`);
      }
    }
  }
});

Deno.test("launcherFromEnv reads mpirun, mpiexec (Hydra) and srun, and not a bare Slurm batch script", () => {
  assert.deepStrictEqual(
    launcherFromEnv({ OMPI_COMM_WORLD_SIZE: "4", OMPI_COMM_WORLD_RANK: "3", OMPI_COMM_WORLD_LOCAL_SIZE: "2" }),
    { launcher: "Open MPI", rank: 3, size: 4, localSize: 2 },
  );
  assert.deepStrictEqual(
    launcherFromEnv({ PMI_SIZE: "8", PMI_RANK: "5", MPI_LOCALNRANKS: "4" }),
    { launcher: "MPICH", rank: 5, size: 8, localSize: 4 },
  );
  assert.deepStrictEqual(
    launcherFromEnv({
      SLURM_STEP_NUM_TASKS: "7",
      SLURM_PROCID: "6",
      SLURM_NODEID: "2",
      SLURM_STEP_TASKS_PER_NODE: "3(x2),1",
    }),
    { launcher: "Slurm", rank: 6, size: 7, localSize: 1 },
  );
  // sbatch sets SLURM_NTASKS and SLURM_PROCID for the script itself; only srun makes a step of tasks.
  assert.strictEqual(launcherFromEnv({ SLURM_NTASKS: "4", SLURM_PROCID: "0", SLURM_JOB_ID: "12" }), null);
  assert.strictEqual(launcherFromEnv({ OMPI_COMM_WORLD_SIZE: "2" }), null);
});

Deno.test("kernel threads share the cores among the ranks on a machine and their replicas", () => {
  const cfg = loadSsdConfig(TINY_CONFIG, { "train.replicas": "1" });
  assert.strictEqual(kernelThreads(cfg, 2), 2);
  assert.strictEqual(kernelThreads(cfg, 2, 2), 1, "mpirun -np 2 on two cores: one thread each");
  assert.strictEqual(kernelThreads({ ...cfg, train: { ...cfg.train, replicas: 2 } }, 16, 2), 4);
  assert.strictEqual(kernelThreads({ ...cfg, threads: 3 }, 2, 2), 3, "an explicit threads wins");
});

Deno.test("--dist: one process without a launcher; an unknown mode or a missing libmpi is a clear error", () => {
  assert.strictEqual(openDataParallel("auto", {}), undefined);
  assert.strictEqual(openDataParallel("none", { OMPI_COMM_WORLD_SIZE: "2", OMPI_COMM_WORLD_RANK: "0" }), undefined);
  assertThrowsError(() => openDataParallel("nccl", {}), InputError, `unknown --dist "nccl"`, "auto, mpi, none");
  assertThrowsError(
    () => openDataParallel("mpi", { MPI_LIB: "/nonexistent/libmpi.so" }),
    InputError,
    "/nonexistent/libmpi.so",
    "apt-get install -y openmpi-bin",
    "MPI_LIB",
  );
});

// --- under mpirun ---

const MPI_ENV = {
  NO_COLOR: "1",
  // CI runs as root; Open MPI refuses that unless told twice.
  OMPI_ALLOW_RUN_AS_ROOT: "1",
  OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: "1",
};

/**
 * `mpirun -np N deno run -A ARGS...` (Open MPI), or with `o.mpich` MPICH's `mpiexec.mpich -n N ...`; resolves with
 * the exit, the output and the seconds it took.
 */
function mpirun(np: number, args: string[], o: { env?: Record<string, string>; mpich?: boolean } = {}) {
  const launch = o.mpich ? ["mpiexec.mpich", "-n"] : ["mpirun", "--oversubscribe", "-np"];
  const cmd = new Deno.Command(launch[0], {
    args: [...launch.slice(1), String(np), Deno.execPath(), "run", "-A", ...args],
    env: { ...MPI_ENV, ...o.env },
    stdout: "piped",
    stderr: "piped",
  });
  return cmd.spawn();
}

async function finished(child: Deno.ChildProcess) {
  const t0 = performance.now();
  const out = await child.output();
  const dec = new TextDecoder();
  return {
    code: out.code,
    stdout: dec.decode(out.stdout),
    stderr: dec.decode(out.stderr),
    s: (performance.now() - t0) / 1000,
  };
}

for (const mpich of [false, true]) {
  const name = mpich ? "MPICH's mpiexec" : "Open MPI's mpirun";
  Deno.test(`collectives agree on 2 ranks under ${name}: chunked float32 sums, float64, odd-length broadcasts`, async () => {
    const r = await finished(mpirun(2, ["tests/mpi_child.ts"], { mpich }));
    assert.strictEqual(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split("\n").map((l) => JSON.parse(l) as ChildLine).sort((a, b) => a.rank - b.rank);
    assert.deepStrictEqual(lines.map((l) => l.rank), [0, 1]);
    assert.match(lines[0].version, mpich ? /^MPICH/ : /^Open MPI/);
    checkCollectives(lines);
  });
}

Deno.test("a libmpi of another implementation than the launcher's is named in a clear error", async () => {
  const r = await finished(mpirun(2, ["tests/mpi_child.ts"], { mpich: true, env: { MPI_LIB: "libmpi.so.40" } }));
  assert.notStrictEqual(r.code, 0);
  assert.match(r.stderr, /MPICH's launcher started 2 ranks, but libmpi\.so\.40 \(Open MPI [^)]*\) sees 1/);
});

/** What tests/mpi_child.ts prints. */
interface ChildLine {
  rank: number;
  size: number;
  localSize: number;
  version: string;
  sumFirst: number[];
  sumLast: number[];
  sumBad: number;
  f64: number[];
  odd: number[];
  text: string;
}

function checkCollectives(lines: ChildLine[]): void {
  for (const l of lines) {
    assert.strictEqual(l.size, 2);
    assert.strictEqual(l.localSize, 2);
    assert.deepStrictEqual([l.sumFirst, l.sumLast, l.sumBad], [[3, 5], [5, 3], -1]);
    assert.deepStrictEqual(l.f64, [0.1 + 0.2, 2e-300]);
    assert.deepStrictEqual(l.odd, [1, 2, 3, 250, 5, 6, 7]);
    assert.strictEqual(l.text, "rank zero sagt grüß dich");
  }
}

const data = await synthData(24, 8, 2);
const FLAGS = Object.entries(dataOverrides(data)).map(([k, v]) => `--${k}=${v}`);
const cfgOf = (o: Record<string, string>) => loadSsdConfig(TINY_CONFIG, { ...dataOverrides(data), ...o });

/** `mpirun -np 2 deno run -A tasks/train.ts --config tiny ...`, into a new folder. */
async function trainOnTwoRanks(flags: string[]) {
  const out = Deno.makeTempDirSync();
  const r = await finished(mpirun(2, ["tasks/train.ts", "--config", TINY_CONFIG, "--out", out, ...FLAGS, ...flags]));
  assert.strictEqual(r.code, 0, r.stderr);
  const log = fs.readFileSync(`${out}/train_log.jsonl`, "utf8").trim().split("\n").map((l) => JSON.parse(l));
  return { ...r, out, log };
}

function maxParamDiff(a: string, b: string): number {
  const [x, y] = [readCheckpoint(a), readCheckpoint(b)];
  let worst = 0;
  for (const [name, t] of x.tensors) {
    if (!name.startsWith("param:")) continue;
    const u = y.tensors.get(name)!.data as Float32Array, v = t.data as Float32Array;
    for (let i = 0; i < v.length; i++) worst = Math.max(worst, Math.abs(v[i] - u[i]));
  }
  return worst;
}

Deno.test("mpirun -np 2 with one replica each trains what one process with two replicas does", async () => {
  const two = await trainOnTwoRanks(["--train.replicas=1", "--train.epochs=1"]);
  const one = await train(cfgOf({ "train.replicas": "2", "train.epochs": "1" }), {
    outDir: Deno.makeTempDirSync(),
    quiet: true,
  });
  // Rank 0 alone writes: one log line per step (24 images / batch 4), one summary on stdout.
  assert.strictEqual(two.log.length, 6);
  assert.strictEqual(two.stdout.match(/^done: /gm)?.length, 1);
  assert.match(two.stdout, /MPI: 2 ranks \(Open MPI/);
  two.log.forEach((l, k) => {
    const ref = one.losses[k];
    assert.strictEqual(l.global_step, ref.global_step);
    for (const key of ["loss", "loc", "cls"] as const) {
      assert.ok(
        Math.abs(l[key] - ref[key]) <= 1e-6 * Math.abs(ref[key]),
        `step ${k + 1} ${key}: ${l[key]} vs ${ref[key]}`,
      );
    }
  });
  // Same weights after the epoch, batch-norm running statistics (rank 0's = part 0's) included.
  assert.ok(maxParamDiff(`${two.out}/checkpoints/epoch-1.ckpt`, one.checkpoint!) < 1e-5);
});

Deno.test("train.sync_bn on 2 ranks normalises by the global batch, as one process does on the whole batch", async () => {
  const synced = await trainOnTwoRanks(["--train.replicas=1", "--train.sync_bn=true", "--train.epochs=1"]);
  const perPart = await trainOnTwoRanks(["--train.replicas=1", "--train.epochs=1"]);
  // The synced ranks run the op-composed batch norm, which sums in float64 like the SIMD kernels; oneDNN's
  // float32 gradient sums would move this one-process reference by ~2e-5 over 5 steps, past the bound.
  registerOrtKernels({ onednnBatchNorm: false });
  const whole = await train(cfgOf({ "train.replicas": "1", "train.epochs": "1" }), {
    outDir: Deno.makeTempDirSync(),
    quiet: true,
  }).finally(() => registerOrtKernels({ onednnBatchNorm: true }));
  synced.log.forEach((l, k) => {
    const ref = whole.losses[k].loss;
    assert.ok(Math.abs(l.loss - ref) <= 1e-5 * ref, `step ${k + 1}: ${l.loss} vs ${ref}`);
  });
  // Without sync_bn the parts' own statistics give other losses: the comparison can tell them apart.
  assert.ok(Math.abs(perPart.log[0].loss - whole.losses[0].loss) > 1e-3 * whole.losses[0].loss);
  assert.ok(maxParamDiff(`${synced.out}/checkpoints/epoch-1.ckpt`, whole.checkpoint!) < 1e-4);
  await assertRejectsError(
    () => train(cfgOf({ "train.replicas": "2", "train.sync_bn": "true" }), { outDir: Deno.makeTempDirSync() }),
    InputError,
    "train.sync_bn",
    "train.replicas: 1",
  );
});

/** Resolves once `file` exists (the 2-rank run got that far). */
async function waitFor(file: string): Promise<void> {
  const t0 = Date.now();
  while (!fs.existsSync(file)) {
    if (Date.now() - t0 > 120_000) throw new Error(`the 2-rank run wrote no ${file} in 120 s`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Pids of the processes whose environment says they are MPI rank `rank` of a command line containing `text`. */
function rankPid(rank: number, text: string): number | undefined {
  for (const e of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const cmd = fs.readFileSync(`/proc/${e}/cmdline`, "utf8");
      const env = fs.readFileSync(`/proc/${e}/environ`, "utf8").split("\0");
      if (cmd.includes(text) && cmd.includes("tasks/train.ts") && env.includes(`OMPI_COMM_WORLD_RANK=${rank}`)) {
        return Number(e);
      }
    } catch { /* gone, or not ours */ }
  }
  return undefined;
}

Deno.test("a killed rank stops the job within seconds; the last checkpoint is intact and --resume continues on 1 rank", async () => {
  const out = Deno.makeTempDirSync();
  const child = mpirun(2, ["tasks/train.ts", "--config", TINY_CONFIG, "--out", out, ...FLAGS, "--train.epochs=100"]);
  const done = finished(child);
  await waitFor(`${out}/checkpoints/epoch-2.ckpt`);
  const pid = rankPid(1, out);
  assert.ok(pid, "rank 1's process not found");
  const killedAt = performance.now();
  Deno.kill(pid, "SIGKILL");
  const r = await done;
  const stopped = (performance.now() - killedAt) / 1000;
  assert.notStrictEqual(r.code, 0);
  assert.ok(stopped < 15, `the job took ${stopped.toFixed(1)} s to stop`);
  // Whatever rank 0 was writing when the job died, the latest checkpoint reads whole.
  const last = latestCheckpoint(out)!;
  const header = readCheckpoint(last).header;
  assert.ok(header.epoch >= 2 && header.epoch < 100);
  // Resume in one process (a different rank count): the log continues from the checkpoint's step.
  const resumed = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "tasks/train.ts", "--out", out, "--resume", "--max-steps", "2"],
    env: { NO_COLOR: "1" },
  }).outputSync();
  assert.ok(resumed.success, new TextDecoder().decode(resumed.stderr));
  const log = fs.readFileSync(`${out}/train_log.jsonl`, "utf8").trim().split("\n").map((l) => JSON.parse(l));
  assert.deepStrictEqual(log.map((l) => l.global_step), Array.from({ length: log.length }, (_, i) => i + 1));
  assert.strictEqual(log.at(-1).global_step, header.global_step + 2);
});

Deno.test("SIGUSR1 to mpirun stops every rank after the same step; rank 0 saves interrupted.ckpt", async () => {
  const out = Deno.makeTempDirSync();
  const child = mpirun(2, ["tasks/train.ts", "--config", TINY_CONFIG, "--out", out, ...FLAGS, "--train.epochs=100"]);
  const done = finished(child);
  await waitFor(`${out}/checkpoints/epoch-1.ckpt`);
  child.kill("SIGUSR1");
  const r = await done;
  assert.strictEqual(r.code, 0, r.stderr);
  assert.match(r.stdout, /^interrupted: /m);
  const header = readCheckpoint(`${out}/checkpoints/interrupted.ckpt`).header;
  const log = fs.readFileSync(`${out}/train_log.jsonl`, "utf8").trim().split("\n").map((l) => JSON.parse(l));
  assert.strictEqual(header.global_step, log.at(-1).global_step);
  assert.ok(header.epoch < 100);
});

Deno.test("a rank that fails takes the others down at once (MPI_Abort), naming the rank and the cause", async () => {
  // Rank 0 finds nothing to resume while rank 1 waits for the config it would send.
  const out = Deno.makeTempDirSync();
  const r = await finished(mpirun(2, ["tasks/train.ts", "--out", out, "--resume"]));
  assert.notStrictEqual(r.code, 0);
  assert.ok(r.s < 30, `took ${r.s.toFixed(1)} s`);
  assert.match(r.stderr, /rank 0\/2: error: nothing to resume/);
  // A corrupt image fails whichever rank loads it, mid-run.
  const bad = await synthData(24, 0, 3);
  const json = JSON.parse(fs.readFileSync(`${bad}/annotations/instances_train.json`, "utf8"));
  const victim = `${bad}/images/train/${json.images[5].file_name}`;
  fs.writeFileSync(victim, new Uint8Array([0xff, 0xd8, 0xff, 0xe0, 1, 2, 3]));
  const flags = Object.entries(dataOverrides(bad)).map(([k, v]) => `--${k}=${v}`);
  const c = await finished(
    mpirun(2, [
      "tasks/train.ts",
      "--config",
      TINY_CONFIG,
      "--out",
      Deno.makeTempDirSync(),
      ...flags,
      "--train.epochs=3",
    ]),
  );
  assert.notStrictEqual(c.code, 0);
  assert.match(c.stderr, /rank [01]\/2: error: .*/);
  assert.ok(c.stderr.includes(json.images[5].file_name), c.stderr);
});
