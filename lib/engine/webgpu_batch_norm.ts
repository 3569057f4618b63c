/**
 * The fused training-mode batch norm of `batch_norm_kernel.ts` (`BN_TRAIN`,
 * `BN_TRAIN_GRAD`: statistics over every axis but the last, then ReLU or
 * ReLU6) as WGSL programs for tfjs-backend-webgpu, so that a step on the GPU
 * makes the same few passes over each activation as on wasm instead of the
 * composed form's dozen.
 *
 * Forward: per-channel sums of `x`, the mean, sums of `(x - mean)^2`, the
 * variance and `invstd`, then `y = act((x - mean) * gamma * invstd + beta)`.
 * Backward: the sums of `g` and `g * (x - mean)`, where `g` is `dy` masked
 * by the activation recomputed from `x` (as on wasm: the mask passes `dy`
 * where the pre-activation lies strictly inside (0, 6) or above 0), then `dx`.
 * Each sum runs over blocks of 128 rows, one thread per (block, channel), and
 * the blocks' sums are added by 128 threads per channel and then as a tree:
 * float32 throughout, with short runs of sequential adds (one accumulator over
 * 4096 terms put 1e-3 errors into batch-norm gradients; README, "GPU").
 * 2.2-2.6x the composed ops' speed on lavapipe (`deno task bench --only webgpu`).
 *
 * Registered by {@linkcode registerWebGpuBatchNorm} (from
 * `loadWebGpuBackend`); tested against the cpu backend's float64 kernels.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs-core";
 * import { setBackend } from "./backend.ts";
 * import { batchNormTrainKernel } from "../custom_ops.ts";
 * await setBackend("webgpu"); // registers these kernels; needs a WebGPU adapter (lavapipe will do)
 * const x = tf.tensor4d([1, 3, 5, 7], [4, 1, 1, 1]); // mean 4, variance 5
 * const [y, mean, variance] = batchNormTrainKernel(x, tf.ones([1]), tf.zeros([1]), 0, "relu");
 * const r = Array.from(await y.data()).map((v) => v.toFixed(3));
 * if (r.join() !== "0.000,0.000,0.447,1.342" || (await mean.data())[0] !== 4 || (await variance.data())[0] !== 5) {
 *   throw new Error(`got ${r}`);
 * }
 * await setBackend("wasm");
 * ```
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { BN_TRAIN, BN_TRAIN_GRAD, type BnActivation } from "../custom_ops.ts";

type Info = tf.TensorInfo;
type Uniforms = { type: "int32" | "float32"; data: number[] }[];

/** The part of tfjs-backend-webgpu's WebGPUBackend used here. */
interface WebGpuLike {
  runWebGPUProgram(program: Program, inputs: Info[], dtype: "float32", uniforms?: Uniforms): Info;
  disposeData(dataId: unknown): boolean;
}

/** tfjs-backend-webgpu's WebGPUProgram, as far as these programs fill it in. */
interface Program {
  variableNames: string[];
  outputShape: number[];
  shaderKey: string;
  dispatchLayout: { x: number[] };
  dispatch: [number, number, number];
  workgroupSize: [number, number, number];
  size?: boolean;
  uniforms?: string;
  getUserCode(): string;
}

/** Threads per workgroup of the element-wise and block passes. */
const WG = 64;
/** Threads that add one channel's block sums (a tree in workgroup memory). */
const TREE = 128;
/** Rows per block: the most terms one thread adds in sequence. */
const BLOCK = 128;

/** A program over `threads` flat threads (the backend folds large dispatches into 2-D). */
function flat(
  key: string,
  names: string[],
  outputShape: number[],
  threads: number,
  uniforms: string,
  body: string,
): Program {
  return {
    variableNames: names,
    outputShape,
    shaderKey: key,
    dispatchLayout: { x: outputShape.map((_, i) => i) },
    dispatch: [Math.ceil(threads / WG), 1, 1],
    workgroupSize: [WG, 1, 1],
    uniforms,
    getUserCode: () => body,
  };
}

/** WGSL: the activation's mask of `v` (true where `dy` passes). */
const passes = (act: BnActivation) =>
  act === "linear" ? "true" : act === "relu6" ? "(v > 0.0 && v < 6.0)" : "(v > 0.0)";

/** WGSL: the activation applied to `v`. */
const activate = (act: BnActivation) => act === "linear" ? "v" : act === "relu6" ? "clamp(v, 0.0, 6.0)" : "max(v, 0.0)";

/**
 * Per-block, per-channel sums of `x` [rows, C] (`what`: "x" sums x, "sq"
 * sums (x - mean)^2, "grad" sums g and g * (x - mean) into two halves):
 * output [blocks, k * C].
 */
function blockSums(what: "x" | "sq" | "grad", rows: number, c: number, act: BnActivation): Program {
  const blocks = Math.ceil(rows / BLOCK), k = what === "grad" ? 2 : 1;
  const names = what === "x" ? ["x"] : what === "sq" ? ["x", "mean"] : ["dy", "x", "mean", "invstd", "gamma", "beta"];
  const term = what === "x"
    ? "s1 = s1 + x[i];"
    : what === "sq"
    ? "let d = x[i] - mean[ch]; s1 = s1 + d * d;"
    : `let d = x[i] - mean[ch];
       let v = d * (gamma[ch] * invstd[ch]) + beta[ch];
       var g = 0.0;
       if (${passes(act)}) { g = dy[i]; }
       s1 = s1 + g; s2 = s2 + g * d;`;
  const body = `
    fn main(index : i32) {
      let c = uniforms.channels;
      if (index >= uniforms.blocks * c) { return; }
      let b = index / c;
      let ch = index - b * c;
      let r1 = min(uniforms.rows, (b + 1) * ${BLOCK});
      var s1 = 0.0;
      var s2 = 0.0;
      for (var r = b * ${BLOCK}; r < r1; r = r + 1) {
        let i = r * c + ch;
        ${term}
      }
      result[b * ${k} * c + ch] = s1;
      ${k === 2 ? "result[b * 2 * c + c + ch] = s2;" : ""}
    }`;
  return flat(
    `ssd_bn_sums_${what}_${act}`,
    names,
    [blocks, k * c],
    blocks * c,
    "rows : i32, channels : i32, blocks : i32,",
    body,
  );
}

/** Column sums of `partial` [blocks, width]: one workgroup per column, a tree over its threads' sums. */
function columnSums(width: number): Program {
  const body = `
    var<workgroup> part : array<f32, ${TREE}>;
    fn main(index : i32) {
      let col = i32(workgroupId.x) + i32(workgroupId.y) * i32(numWorkgroups.x);
      let t = i32(localId.x);
      var s = 0.0;
      if (col < uniforms.width) {
        for (var b = t; b < uniforms.blocks; b = b + ${TREE}) {
          s = s + partial[b * uniforms.width + col];
        }
      }
      part[t] = s;
      workgroupBarrier();
      for (var span = ${TREE / 2}; span > 0; span = span / 2) {
        if (t < span) { part[t] = part[t] + part[t + span]; }
        workgroupBarrier();
      }
      if (t == 0 && col < uniforms.width) { result[col] = part[0]; }
    }`;
  return {
    variableNames: ["partial"],
    outputShape: [width],
    shaderKey: "ssd_bn_columns",
    dispatchLayout: { x: [0] },
    dispatch: [width, 1, 1],
    workgroupSize: [TREE, 1, 1],
    uniforms: "blocks : i32, width : i32,",
    getUserCode: () => body,
  };
}

/** Per-channel values [C] from `expr` (WGSL over `s1`, `s2` = sums[ch], sums[C + ch], `n` rows, `eps`, the inputs at ch). */
function perChannel(key: string, names: string[], c: number, expr: string): Program {
  const reads = names.filter((n) => n !== "sums").map((n) => `let ${n}_ = ${n}[ch];`).join(" ");
  const sumsRead = names.includes("sums")
    ? "let s1 = sums[ch]; let s2 = sums[min(ch + uniforms.channels, uniforms.sumsLen - 1)];"
    : "";
  const body = `
    fn main(index : i32) {
      let ch = index;
      if (ch >= uniforms.channels) { return; }
      let n = f32(uniforms.rows);
      let eps = uniforms.eps;
      ${sumsRead}
      ${reads}
      result[ch] = ${expr};
    }`;
  return flat(key, names, [c], c, "rows : i32, channels : i32, eps : f32, sumsLen : i32,", body);
}

/** y = act((x - mean) * gamma * invstd + beta), or with `dx` the gradient, element-wise over x. */
function elementwise(kind: "apply" | "dx", n: number, act: BnActivation): Program {
  const names = kind === "apply"
    ? ["x", "mean", "invstd", "gamma", "beta"]
    : ["dy", "x", "mean", "invstd", "gamma", "beta", "sums"];
  const body = kind === "apply"
    ? `
    fn main(index : i32) {
      if (index >= uniforms.size) { return; }
      let ch = index % uniforms.channels;
      let v = (x[index] - mean[ch]) * (gamma[ch] * invstd[ch]) + beta[ch];
      result[index] = ${activate(act)};
    }`
    : `
    fn main(index : i32) {
      if (index >= uniforms.size) { return; }
      let c = uniforms.channels;
      let ch = index % c;
      let inv = invstd[ch];
      let d = x[index] - mean[ch];
      let v = d * (gamma[ch] * inv) + beta[ch];
      var g = 0.0;
      if (${passes(act)}) { g = dy[index]; }
      let n = f32(uniforms.rows);
      // dx = gamma * invstd * (g - mean(g) - (x - mean) * invstd^2 * mean(g * (x - mean)))
      result[index] = gamma[ch] * inv * (g - sums[ch] / n - d * (inv * inv * sums[c + ch] / n));
    }`;
  return { ...flat(`ssd_bn_${kind}_${act}`, names, [n], n, "channels : i32, rows : i32,", body), size: true };
}

/** Runs `p` on `inputs` with its own uniforms. */
function run(b: WebGpuLike, p: Program, inputs: Info[], uniforms: Uniforms): Info {
  return b.runWebGPUProgram(p, inputs, "float32", uniforms);
}

const int = (...data: number[]) => ({ type: "int32" as const, data });
const float = (...data: number[]) => ({ type: "float32" as const, data });

/** Per-channel sums of `inputs` over their rows: [k * C]. */
function sums(b: WebGpuLike, what: "x" | "sq" | "grad", inputs: Info[], rows: number, c: number, act: BnActivation) {
  const blocks = Math.ceil(rows / BLOCK);
  const partial = run(b, blockSums(what, rows, c, act), inputs, [int(rows), int(c), int(blocks)]);
  const width = partial.shape[1];
  const total = run(b, columnSums(width), [partial], [int(blocks), int(width)]);
  b.disposeData(partial.dataId);
  return total;
}

/** A flat view of `t` ([elements]) for the element-wise and block programs. */
const flatInfo = (t: Info, n: number): Info => ({ ...t, shape: [n] });

const forwardKernel: tf.KernelFunc = ({ inputs, backend, attrs = {} }) => {
  const b = backend as unknown as WebGpuLike;
  const { x, gamma, beta } = inputs as { x: Info; gamma: Info; beta: Info };
  const act = attrs.activation as BnActivation, eps = attrs.eps as number;
  const c = gamma.shape[0], n = x.shape.reduce((p, q) => p * q, 1), rows = n / c;
  const xf = flatInfo(x, n);
  const u = [int(rows), int(c), float(eps)];
  const s = sums(b, "x", [xf], rows, c, act);
  const mean = run(b, perChannel("ssd_bn_mean", ["sums"], c, "s1 / n"), [s], [...u, int(c)]);
  b.disposeData(s.dataId);
  const sq = sums(b, "sq", [xf, mean], rows, c, act);
  const variance = run(b, perChannel("ssd_bn_var", ["sums"], c, "s1 / n"), [sq], [...u, int(c)]);
  b.disposeData(sq.dataId);
  const invstd = run(b, perChannel("ssd_bn_invstd", ["variance"], c, "1.0 / sqrt(variance_ + eps)"), [variance], [
    ...u,
    int(1),
  ]);
  const y = run(b, elementwise("apply", n, act), [xf, mean, invstd, gamma, beta], [int(c), int(rows)]);
  return [{ ...y, shape: x.shape }, mean, variance, invstd];
};

const gradKernel: tf.KernelFunc = ({ inputs, backend, attrs = {} }) => {
  const b = backend as unknown as WebGpuLike;
  const { dy, x, mean, invstd, gamma, beta } = inputs as Record<string, Info>;
  const act = attrs.activation as BnActivation;
  const c = gamma.shape[0], n = x.shape.reduce((p, q) => p * q, 1), rows = n / c;
  const [dyf, xf] = [flatInfo(dy, n), flatInfo(x, n)];
  const s = sums(b, "grad", [dyf, xf, mean, invstd, gamma, beta], rows, c, act);
  const u = [int(rows), int(c), float(0), int(2 * c)];
  const dbeta = run(b, perChannel("ssd_bn_dbeta", ["sums"], c, "s1"), [s], u);
  const dgamma = run(b, perChannel("ssd_bn_dgamma", ["sums", "invstd"], c, "s2 * invstd_"), [s, invstd], u);
  const dx = run(b, elementwise("dx", n, act), [dyf, xf, mean, invstd, gamma, beta, s], [int(c), int(rows)]);
  b.disposeData(s.dataId);
  return [{ ...dx, shape: x.shape }, dgamma, dbeta];
};

/**
 * Registers the WGSL batch-norm kernels for the webgpu backend (idempotent).
 * The gradient that connects them is `batch_norm_kernel.ts`'s, shared by every backend.
 */
export function registerWebGpuBatchNorm(): void {
  if (!tf.getKernel(BN_TRAIN, "webgpu")) {
    tf.registerKernel({ kernelName: BN_TRAIN, backendName: "webgpu", kernelFunc: forwardKernel });
  }
  if (!tf.getKernel(BN_TRAIN_GRAD, "webgpu")) {
    tf.registerKernel({ kernelName: BN_TRAIN_GRAD, backendName: "webgpu", kernelFunc: gradKernel });
  }
}

/** Removes them again: the op-composed batch norm of `graph.ts` takes over (for the bench's comparison). */
export function unregisterWebGpuBatchNorm(): void {
  for (const k of [BN_TRAIN, BN_TRAIN_GRAD]) if (tf.getKernel(k, "webgpu")) tf.unregisterKernel(k, "webgpu");
}
