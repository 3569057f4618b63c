/**
 * The peak float32 rate of the machine, measured by the bench rather than
 * assumed, for every per-layer GFLOP/s figure to be read against: the best
 * square matmul, products of growing size. On the CPU that is the faster of
 * onnxruntime's GEMM (MLAS, through the `onnxruntime` backend) and oneDNN's
 * (where installed), each on 2 threads; on a WebGPU adapter it is
 * tfjs-backend-webgpu's matmul. A share of it says how much of what the
 * machine can do a layer gets.
 */
import * as tf from "@tensorflow/tfjs-core";
import { setBackend } from "../lib/engine/mod.ts";
import { dnnlAvailable, dnnlMatmul } from "../lib/engine/dnnl.ts";
import { timeMedian } from "./report.ts";

/** A measured peak: GFLOP/s, the matrix side that reached it, and what was measured. */
export interface Peak {
  gflops: number;
  n: number;
  what: string;
}

/** "12.3 GFLOP/s" for `flop` operations in `ms` milliseconds. */
export function gflops(flop: number, ms: number): string {
  const g = flop / ms / 1e6;
  return `${g < 1 ? g.toPrecision(2) : g.toFixed(1)} GFLOP/s`;
}

/** "12.3 GFLOP/s, 8% of peak" (without a peak, the rate alone). */
export function gflopsOfPeak(flop: number, ms: number, peak?: Peak): string {
  if (!peak) return gflops(flop, ms);
  return `${gflops(flop, ms)}, ${(100 * flop / ms / 1e6 / peak.gflops).toFixed(0)}% of peak`;
}

/** Waits for everything queued before `t` by reading one element of it back (WebGPU queues its work), then frees it. */
export async function settle(t: tf.Tensor): Promise<void> {
  const one = tf.slice(t.reshape([-1]), [0], [1]);
  await one.data();
  tf.dispose([one, t]);
}

/**
 * The best float32 matmul rate of the current backend: square products of
 * 512 to 4096 (`repeat` queued per timing), up to the first size whose timing
 * takes over a second (a software adapter stops early).
 */
export async function matmulPeak(repeat: number, reps: number, what: string): Promise<Peak> {
  let best: Peak = { gflops: 0, n: 0, what };
  for (const n of [512, 1024, 2048, 4096]) {
    const a = tf.randomNormal([n, n], 0, 1, "float32", 1), b = tf.randomNormal([n, n], 0, 1, "float32", 2);
    const ms = await timeMedian(async () => {
      let c: tf.Tensor | null = null;
      for (let i = 0; i < repeat; i++) {
        c?.dispose();
        c = tf.matMul(a, b);
      }
      await settle(c!);
    }, reps);
    tf.dispose([a, b]);
    const g = (repeat * 2 * n ** 3) / ms / 1e6;
    if (g > best.gflops) best = { gflops: g, n, what };
    if (ms > 1000) break;
  }
  return best;
}

let cpu: Peak | undefined;

/** oneDNN's best float32 GEMM over square sizes 1024-4096, run directly on typed arrays. */
async function dnnlPeak(reps: number): Promise<Peak> {
  let best: Peak = { gflops: 0, n: 0, what: "best oneDNN float32 GEMM (2 threads)" };
  for (const n of [1024, 2048, 4096]) {
    const a = Float32Array.from({ length: n * n }, (_, i) => ((i * 7919) % 1000) / 1000 - 0.5);
    const c = new Float32Array(n * n);
    const ms = await timeMedian(() => dnnlMatmul(a, a, c, n, n, n), reps);
    const g = (2 * n ** 3) / ms / 1e6;
    if (g > best.gflops) best = { ...best, gflops: g, n };
  }
  return best;
}

/**
 * This machine's CPU peak: the best float32 GEMM of onnxruntime (MLAS) and,
 * where it is installed, of oneDNN (measured once per process; leaves the
 * backend on `wasm`).
 */
export async function cpuPeak(o: { quick?: boolean } = {}): Promise<Peak> {
  if (cpu) return cpu;
  const reps = o.quick ? 2 : 3;
  await setBackend("onnxruntime");
  try {
    cpu = await matmulPeak(2, reps, "best onnxruntime float32 GEMM (MLAS; the backend's 2 threads)");
  } finally {
    await setBackend("wasm");
  }
  if (dnnlAvailable()) {
    const d = await dnnlPeak(reps);
    if (d.gflops > cpu.gflops) cpu = { ...d, what: `${d.what}; onnxruntime's ${cpu.gflops.toFixed(0)} GFLOP/s` };
  }
  return cpu;
}

/** The bench row that states a measured peak. */
export function peakRow(section: string, peak: Peak, note = "") {
  return {
    section,
    name: `peak: ${peak.what}`,
    ms: null,
    untimed: true,
    note: `${peak.gflops.toFixed(1)} GFLOP/s at ${peak.n}x${peak.n}${note}`,
  };
}
