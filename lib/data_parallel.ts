/**
 * Data-parallel training across MPI ranks, as the ModelZoo's
 * `run_distribute_train_gpu.sh` (`mpirun -n N python train.py --run_distribute`)
 * and PyTorch's DistributedDataParallel do it:
 *
 * - Every rank holds the whole model. Rank 0's weights and optimizer state
 *   are broadcast at the start and on resume, so all ranks begin equal.
 * - A global batch of `train.batch_size` images, from one seeded epoch order,
 *   is cut into `ranks x train.replicas` contiguous parts; each rank loads
 *   and augments only its own parts (see {@linkcode rankShare}).
 * - The matched-box count of the global batch is summed first, and every part
 *   normalises its loss by it; the parts' gradients are then summed with one
 *   all-reduce, so every rank applies the same update.
 * - Batch norm normalises each part by its own statistics (as `train.replicas`
 *   and DDP do), or by the global batch's with `train.sync_bn`. The running
 *   statistics are rank 0's, broadcast after every step (DDP's
 *   `broadcast_buffers`).
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * // 10 images over 2 ranks of 2 replicas: parts of 3, 3, 2, 2.
 * assertEquals(rankShare(10, { rank: 0, ranks: 2, replicas: 2 }), { start: 0, end: 6 });
 * assertEquals(rankShare(10, { rank: 1, ranks: 2, replicas: 2 }), { start: 6, end: 10 });
 * ```
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { launcherFromEnv, type Mpi, openMpi } from "./engine/mod.ts";
import { InputError } from "./errors.ts";
import type { BnUpdate, ParamMap } from "./graph.ts";

/** Where this process sits in a data-parallel job. */
export interface Share {
  rank: number;
  ranks: number;
  /** Gradient replicas inside each rank (`train.replicas`). */
  replicas: number;
}

/** Size of part `k` when `n` images are cut into `parts` contiguous parts, the first ones one larger. */
export function partSize(n: number, parts: number, k: number): number {
  return Math.floor(n / parts) + (k < n % parts ? 1 : 0);
}

/**
 * The images of a global batch of `n` that `share.rank` trains: parts
 * `rank * replicas` to `(rank + 1) * replicas - 1` of the batch cut into
 * `ranks * replicas` parts. Cutting this range into `replicas` parts again
 * gives the same parts, so `-np 2` with one replica and one process with two
 * replicas train identical parts.
 */
export function rankShare(n: number, share: Share): { start: number; end: number } {
  const parts = share.ranks * share.replicas;
  let start = 0;
  for (let k = 0; k < share.rank * share.replicas; k++) start += partSize(n, parts, k);
  let end = start;
  for (let k = share.rank * share.replicas; k < (share.rank + 1) * share.replicas; k++) end += partSize(n, parts, k);
  return { start, end };
}

// The gradient buffers, kept from step to step: fresh pages for 100 MB cost as much as the all-reduce itself.
const buffers = new WeakMap<Mpi, { flat: Float32Array; sum: Float32Array }>();
function stepBuffers(mpi: Mpi, total: number): { flat: Float32Array; sum: Float32Array } {
  let b = buffers.get(mpi);
  if (!b || b.flat.length !== total) {
    buffers.set(mpi, b = { flat: new Float32Array(total), sum: new Float32Array(total) });
  }
  return b;
}

/**
 * Sums `grads` (tensors by tfjs variable name) over all ranks in one
 * all-reduce and returns the sums by the same names; the inputs are disposed.
 * `vars` fixes the packing order, the same on every rank; a variable with no
 * gradient here packs zeros, so all ranks pack the same layout.
 */
export async function allreduceGrads(
  mpi: Mpi,
  grads: Record<string, tf.Tensor>,
  vars: readonly tf.Variable[],
): Promise<Record<string, tf.Tensor>> {
  const total = vars.reduce((a, v) => a + v.size, 0);
  const { flat, sum } = stepBuffers(mpi, total);
  // Asynchronous reads: a device backend (webgpu) has no synchronous one.
  const values = await Promise.all(vars.map((v) => grads[v.name]?.data()));
  let o = 0;
  vars.forEach((v, k) => {
    const g = values[k];
    if (g) flat.set(g as Float32Array, o);
    else flat.fill(0, o, o + v.size);
    o += v.size;
  });
  mpi.allreduceSum(flat, sum);
  const out: Record<string, tf.Tensor> = {};
  o = 0;
  for (const v of vars) {
    if (grads[v.name]) out[v.name] = tf.tensor(sum.subarray(o, o + v.size), v.shape);
    o += v.size;
  }
  tf.dispose(Object.values(grads));
  return out;
}

/** Overwrites the variables of every map with rank 0's values (one broadcast for all). */
export async function broadcastVariables(
  mpi: Mpi,
  maps: ParamMap[],
  only?: (name: string) => boolean,
): Promise<void> {
  const vars: tf.Variable[] = [];
  for (const m of maps) {
    for (const [name, v] of [...m].sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0)) {
      if (!only || only(name)) vars.push(v);
    }
  }
  const total = vars.reduce((a, v) => a + v.size, 0);
  const flat = new Float32Array(total);
  if (mpi.rank === 0) {
    const values = await Promise.all(vars.map((v) => v.data()));
    let o = 0;
    values.forEach((d, k) => (flat.set(d as Float32Array, o), o += vars[k].size));
  }
  mpi.bcast(flat);
  if (mpi.rank === 0) return;
  let o = 0;
  for (const v of vars) {
    const t = tf.tensor(flat.subarray(o, o + v.size), v.shape);
    v.assign(t);
    t.dispose();
    o += v.size;
  }
}

/** The running-statistics variables that `updates` move: what a step broadcasts from rank 0. */
export function bnStatNames(updates: BnUpdate[]): Set<string> {
  return new Set(updates.flatMap((u) => [`${u.name}.moving_mean`, `${u.name}.moving_variance`]));
}

/**
 * A sum over all ranks for `train.sync_bn`: the graph's batch norm hands it
 * per-channel sums and gets the global ones back (SyncBatchNorm).
 */
export function syncBnReducer(mpi: Mpi): (sums: Float64Array) => Float64Array {
  return (sums) => mpi.allreduceSum(sums);
}

/** How `--dist` chooses: MPI when a launcher started the process (`auto`), always (`mpi`), or never (`none`). */
export const DIST_MODES = ["auto", "mpi", "none"] as const;

/**
 * Opens MPI when `mode` asks for it: `auto` when a launcher's variables are
 * in `env` (mpirun, mpiexec, srun; see {@linkcode launcherFromEnv}), `mpi`
 * always, `none` never; `env.MPI_LIB` names the library. Returns undefined
 * when training stays in one process.
 *
 * @example
 * ```ts
 * if (openDataParallel("auto", {}) !== undefined) throw new Error("no launcher: one process");
 * ```
 */
export function openDataParallel(mode: string, env: Record<string, string | undefined>): Mpi | undefined {
  if (!(DIST_MODES as readonly string[]).includes(mode)) {
    throw new InputError(`unknown --dist "${mode}"; choose one of ${DIST_MODES.join(", ")}`);
  }
  const launch = launcherFromEnv(env);
  if (mode === "none" || (mode === "auto" && !launch)) return undefined;
  return openMpi({ library: env.MPI_LIB, launch });
}

/** A network, for {@linkcode ringAllreduceSeconds}: bandwidth in bytes/s each way per link, latency in s per message. */
export interface Link {
  bandwidth: number;
  latency: number;
}

/**
 * Seconds a ring all-reduce of `bytes` takes over `ranks` ranks: a
 * reduce-scatter then an all-gather, 2 (N - 1) steps that each move 1/N of
 * the buffer over every link at once (Patarasuk and Yuan, "Bandwidth optimal
 * all-reduce algorithms", 2009; the cost NCCL's "bus bandwidth" assumes).
 *
 * @example
 * ```ts
 * // 100 MB over 8 ranks on 10 Gbit/s links: 2 * 7/8 * 100e6 / 1.25e9 = 0.14 s, plus 14 latencies of 50 us.
 * const s = ringAllreduceSeconds(100e6, 8, { bandwidth: 1.25e9, latency: 50e-6 });
 * if (Math.abs(s - 0.1407) > 1e-9) throw new Error(`got ${s}`);
 * ```
 */
export function ringAllreduceSeconds(bytes: number, ranks: number, link: Link): number {
  if (ranks <= 1) return 0;
  return (2 * (ranks - 1) / ranks) * bytes / link.bandwidth + 2 * (ranks - 1) * link.latency;
}

/**
 * Images per second of `ranks` ranks training `perRank` images each per step
 * (weak scaling, as the ModelZoo's per-device batch): compute that takes
 * `computePerImage` seconds, then the gradient all-reduce, not overlapped.
 */
export function dataParallelThroughput(
  o: { ranks: number; perRank: number; computePerImage: number; gradBytes: number; link: Link },
): { imagesPerSecond: number; efficiency: number; allreduceSeconds: number } {
  const compute = o.perRank * o.computePerImage;
  const allreduceSeconds = ringAllreduceSeconds(o.gradBytes, o.ranks, o.link);
  const imagesPerSecond = o.ranks * o.perRank / (compute + allreduceSeconds);
  return { imagesPerSecond, efficiency: compute / (compute + allreduceSeconds), allreduceSeconds };
}
