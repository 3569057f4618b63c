/**
 * Run by tests/data_parallel_test.ts under `mpirun -np 2`: exercises the MPI
 * binding's collectives and prints one JSON line per rank for the test to check.
 */
import { openDataParallel } from "../lib/data_parallel.ts";

const mpi = openDataParallel("auto", Deno.env.toObject());
if (!mpi) throw new Error("not launched by mpirun");
// Past one 2^24-element slice, so the chunked path runs: rank r contributes r + 1 and its index parity.
const n = (1 << 24) + 3;
const big = new Float32Array(n);
for (let i = 0; i < n; i++) big[i] = mpi.rank + 1 + (i % 2);
const sum = mpi.allreduceSum(big);
const f64 = mpi.allreduceSum(new Float64Array([0.1 * (mpi.rank + 1), 1e-300]));
const odd = new Uint8Array(7);
if (mpi.rank === 0) odd.set([1, 2, 3, 250, 5, 6, 7]);
mpi.bcast(odd);
const text = mpi.bcastString(mpi.rank === 0 ? "rank zero sagt grüß dich" : "");
await mpi.quietBarrier();
console.log(JSON.stringify({
  rank: mpi.rank,
  size: mpi.size,
  version: mpi.version,
  localSize: mpi.localSize,
  sumFirst: [sum[0], sum[1]],
  sumLast: [sum[n - 2], sum[n - 1]],
  sumBad: sum.findIndex((v, i) => v !== 3 + 2 * (i % 2)),
  f64: [...f64],
  odd: [...odd],
  text,
}));
mpi.finalize();
