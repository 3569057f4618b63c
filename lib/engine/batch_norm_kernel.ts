/**
 * Training-mode batch normalisation (batch statistics over every axis but the
 * last), optionally followed by ReLU or ReLU6, as one tfjs kernel with its
 * gradient as a second.
 *
 * Batch norm is memory-bound: composed from tfjs ops it reads and writes the
 * activation about 12 times forward and 15 times backward (a mean, a centred
 * copy, its square, the scale, the shift, ..., and the engine's copy of every
 * saved tensor). These kernels make two passes each way: forward, the
 * per-channel sums and then `y = act((x - mean) * scale + beta)`; backward,
 * the sums of `dy` and `dy * (x - mean)` and then `dx`. The activation's mask
 * is recomputed from `x` with the same float32 statistics, so the output is not
 * kept for the backward pass. On an SSD300-MobileNetV2 step at batch 4 batch
 * norm (with its ReLU6) went from ~620 ms of composed ops to ~190 ms.
 *
 * On the `wasm` backend the passes are the SIMD kernels of simd_kernels.wat,
 * in place in its heap (channel counts that are multiples of 4; sums in
 * float32 over blocks of 16 rows, then in float64). The `cpu` backend, and
 * other channel counts, run the JavaScript loops below (float64 arithmetic);
 * other backends keep the op-composed form of `graph.ts`. On the onnxruntime
 * backend with oneDNN ({@linkcode batchNormOnDnnl}), the same passes run as
 * native code on oneDNN's OpenMP threads (native_kernels.ts), bit for bit; where
 * no C compiler built them, the gradient runs on oneDNN itself, which reads the
 * activation's mask off the saved output instead. The fused
 * activation's gradient passes `dy` where the pre-activation is strictly
 * inside (0, 6) (ReLU6) or above 0 (ReLU), as PyTorch does. The statistics
 * outputs carry no gradient.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs-core";
 * import { setBackend } from "./backend.ts";
 * import { batchNormTrainKernel } from "../custom_ops.ts";
 * await setBackend("cpu");
 * registerBatchNormKernels();
 * const x = tf.tensor4d([1, 3, 5, 7], [4, 1, 1, 1]); // mean 4, variance 5
 * const [y, mean, variance] = batchNormTrainKernel(x, tf.ones([1]), tf.zeros([1]), 0, "relu");
 * const r = Array.from(y.dataSync()).map((v) => v.toFixed(3));
 * if (r.join() !== "0.000,0.000,0.447,1.342" || mean.dataSync()[0] !== 4 || variance.dataSync()[0] !== 5) {
 *   throw new Error(`got ${r}`);
 * }
 * ```
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { type SimdKernels, simdKernels } from "./simd_kernels.ts";
import { checkFloat32, ioOf, type WasmLike } from "./kernel_io.ts";
import { BN_TRAIN, BN_TRAIN_GRAD, type BnActivation } from "../custom_ops.ts";
import { dnnlBatchNormBackward, dnnlBatchNormBackwardFast } from "./dnnl.ts";
import { type NativeKernels, nativeKernels } from "./native_kernels.ts";

/** Whether oneDNN's OpenMP threads take the passes, and whether as native code (see {@linkcode batchNormOnDnnl}). */
let onDnnl = false, nativeOn = true;

/**
 * Runs the wasm backend's batch norm on oneDNN's OpenMP threads (`on`), or on the SIMD kernels' threads.
 * The onnxruntime backend turns it on with its oneDNN convs: between oneDNN's calls its OpenMP threads
 * spin, and the SIMD kernel threads would share the two cores with them (a hand-off to a worker took
 * ~100 us there). Both passes then run as native code on those threads (native_kernels.ts), computing
 * the SIMD kernels' bits: the SSD300-MobileNetV2 step runs 1.49x faster than with batch norm on the SIMD
 * kernels, and 1.10x faster than with only the gradient on oneDNN (`deno task bench --only ort`).
 * Where no C compiler built that code, the gradient runs on oneDNN's clip and batch-norm backward (the
 * step was 1.39x faster with them than on the SIMD kernels) and the forward stays on the SIMD kernels:
 * oneDNN's forward computes its statistics in float32, which moved the lockstep gradients 200x further
 * from wasm's (5.6e-4 against 2.5e-6). `native: false` keeps that arrangement with the native code built.
 */
export function batchNormOnDnnl(on: boolean, o: { native?: boolean } = {}): void {
  onDnnl = on;
  nativeOn = o.native ?? true;
}

/**
 * Per-channel mean and biased variance of `x` [P, C] (channels last), in
 * float64. Sums are taken about the first row, which keeps the variance exact
 * when the mean is large against the spread.
 *
 * @example
 * ```ts
 * const { mean, variance } = channelMoments(Float32Array.of(1, 10, 3, 20), 2);
 * if (mean.join() !== "2,15" || variance.join() !== "1,25") throw new Error(`${mean} ${variance}`);
 * ```
 */
export function channelMoments(x: Float32Array, c: number): { mean: Float64Array; variance: Float64Array } {
  const p = x.length / c;
  const s = new Float64Array(c), q = new Float64Array(c), k = new Float64Array(c);
  for (let j = 0; j < c; j++) k[j] = x[j];
  for (let i = 0; i < x.length; i += c) {
    for (let j = 0; j < c; j++) {
      const v = x[i + j] - k[j];
      s[j] += v;
      q[j] += v * v;
    }
  }
  const mean = new Float64Array(c), variance = new Float64Array(c);
  for (let j = 0; j < c; j++) {
    const m = s[j] / p;
    mean[j] = k[j] + m;
    variance[j] = Math.max(0, q[j] / p - m * m);
  }
  return { mean, variance };
}

/**
 * The per-channel statistics and scale as the kernels store them (float32):
 * `mean`, `variance`, `invstd` and `scale = gamma * invstd`. The backward
 * pass recomputes the pre-activation `(x - mean) * scale + beta` from these
 * same float32 values, so its activation mask is the forward's exactly.
 */
export function batchNormStats(
  x: Float32Array,
  gamma: Float32Array,
  eps: number,
): { mean: Float32Array; variance: Float32Array; invstd: Float32Array; scale: Float32Array } {
  const c = gamma.length;
  const m = channelMoments(x, c);
  const invstd = new Float32Array(c), scale = new Float32Array(c);
  for (let j = 0; j < c; j++) {
    invstd[j] = 1 / Math.sqrt(m.variance[j] + eps);
    scale[j] = gamma[j] * invstd[j];
  }
  return { mean: Float32Array.from(m.mean), variance: Float32Array.from(m.variance), invstd, scale };
}

/**
 * Forward pass into `y`: `act((x - mean) * scale + beta)` over `x` [P, C],
 * with the float32 statistics of {@linkcode batchNormStats}.
 */
export function batchNormForward(
  x: Float32Array,
  mean: Float32Array,
  scale: Float32Array,
  beta: Float32Array,
  act: BnActivation,
  y: Float32Array,
): void {
  const c = mean.length;
  const lo = act === "linear" ? -Infinity : 0, hi = act === "relu6" ? 6 : Infinity;
  for (let i = 0; i < x.length; i += c) {
    for (let j = 0; j < c; j++) {
      const v = (x[i + j] - mean[j]) * scale[j] + beta[j];
      y[i + j] = v < lo ? lo : v > hi ? hi : v;
    }
  }
}

/**
 * Backward pass into `dx`, `dgamma`, `dbeta`, from the output gradient `dy`,
 * the input `x` and the forward's float32 statistics. A fused activation
 * passes `dy` where the recomputed pre-activation lies in (0, hi).
 */
export function batchNormBackward(
  dy: Float32Array,
  x: Float32Array,
  act: BnActivation,
  s: { mean: Float32Array; invstd: Float32Array; scale: Float32Array },
  gamma: Float32Array,
  beta: Float32Array,
  out: { dx: Float32Array; dgamma: Float32Array; dbeta: Float32Array },
): void {
  const { mean, invstd, scale } = s;
  const c = gamma.length, p = x.length / c;
  const sdy = new Float64Array(c), sdyx = new Float64Array(c);
  const hi = act === "relu6" ? 6 : Infinity;
  const masked = act !== "linear";
  const grad = (i: number, j: number) => {
    if (!masked) return dy[i + j];
    const v = (x[i + j] - mean[j]) * scale[j] + beta[j];
    return v > 0 && v < hi ? dy[i + j] : 0;
  };
  for (let i = 0; i < x.length; i += c) {
    for (let j = 0; j < c; j++) {
      const g = grad(i, j);
      sdy[j] += g;
      sdyx[j] += g * (x[i + j] - mean[j]);
    }
  }
  // dx = gamma * invstd * (g - mean(g) - xhat * mean(g * xhat)), xhat = (x - mean) * invstd.
  const k = new Float64Array(c), a = new Float64Array(c), b = new Float64Array(c);
  for (let j = 0; j < c; j++) {
    out.dbeta[j] = sdy[j];
    out.dgamma[j] = sdyx[j] * invstd[j];
    k[j] = gamma[j] * invstd[j];
    a[j] = sdy[j] / p;
    b[j] = invstd[j] * invstd[j] * sdyx[j] / p;
  }
  for (let i = 0; i < x.length; i += c) {
    for (let j = 0; j < c; j++) {
      out.dx[i + j] = k[j] * (grad(i, j) - a[j] - (x[i + j] - mean[j]) * b[j]);
    }
  }
}

type Info = tf.TensorInfo;

/** Upper clip of the fused activation (its lower one is 0). */
const upper = (act: BnActivation) => act === "relu6" ? 6 : Infinity;

/** Where the SIMD sums put channel j's first sum (its second is 4 further): groups of four channels, interleaved. */
const sumAt = (j: number) => (j >> 2) * 8 + (j & 3);

/** Adds the per-thread sums (`parts` equal runs of `all`) into the first run, in part order, and returns it. */
function addParts(all: Float64Array, parts: number): Float64Array {
  const len = all.length / parts, first = all.subarray(0, len);
  for (let i = 1; i < parts; i++) {
    for (let j = 0; j < len; j++) first[j] += all[i * len + j];
  }
  return first;
}

/** Forward with the SIMD kernels: statistics in one pass, the output in a second. */
function forwardSimd(
  k: SimdKernels,
  backend: WasmLike,
  x: Info,
  gamma: Info,
  beta: Info,
  eps: number,
  act: BnActivation,
) {
  const c = gamma.shape[0], n = x.shape.reduce((a, b) => a * b, 1), p = n / c;
  const outs = [x.shape, [c], [c], [c]].map((s) => backend.makeOutput(s, "float32"));
  const [y, meanI, varI, invI] = outs;
  // Rows split over the threads; sums in blocks of 16 rows, so the parts' blocks are the one-thread ones.
  const parts = k.split(p, c, 16);
  // Scratch: shift f32[c], scale f32[c], acc f64[2c] per part.
  const scratch = k.alloc(8 * c + 16 * c * parts.length + 16);
  try {
    const heap = k.heap();
    const f32 = (ptr: number, len: number) => new Float32Array(heap, ptr, len);
    const shift = scratch, scale = scratch + 4 * c, acc = scratch + 8 * c; // acc 8-aligned: c % 4 === 0
    f32(shift, c).set(f32(k.offset(x), c)); // sums about the first row
    new Float64Array(heap, acc, 2 * c * parts.length).fill(0);
    const xp = k.offset(x);
    const nat = nativeFor(k);
    if (nat) {
      nat.k.moments(nat.at(xp), c, nat.at(shift), nat.at(acc), parts);
    } else {
      k.parallel("moments", parts.map(([r0, rows], i) => [xp + 4 * r0 * c, rows, c, shift, acc + 16 * c * i]));
    }
    const sums = addParts(new Float64Array(heap, acc, 2 * c * parts.length), parts.length), sh = f32(shift, c);
    const mean = f32(k.offset(meanI), c), variance = f32(k.offset(varI), c), invstd = f32(k.offset(invI), c);
    const g = f32(k.offset(gamma), c), sc = f32(scale, c);
    for (let j = 0; j < c; j++) {
      const at = sumAt(j), m = sums[at] / p, v = Math.max(0, sums[at + 4] / p - m * m);
      mean[j] = sh[j] + m;
      variance[j] = v;
      invstd[j] = 1 / Math.sqrt(v + eps);
      sc[j] = g[j] * invstd[j]; // from the stored float32 invstd, as the backward pass recomputes it
    }
    const lo = act === "linear" ? -Infinity : 0;
    const yp = k.offset(y), m = k.offset(meanI), b = k.offset(beta), hi = upper(act);
    if (nat) {
      nat.k.bnApply(nat.at(xp), nat.at(yp), p, c, nat.at(m), nat.at(scale), nat.at(b), lo, hi);
    } else {
      const calls = parts.map(([r0, rows]) => [xp + 4 * r0 * c, yp + 4 * r0 * c, rows * c, c, m, scale, b, lo, hi]);
      k.parallel("bn_apply", calls);
    }
  } finally {
    k.free(scratch);
  }
  return outs;
}

/** The native kernels, when oneDNN runs the convs (see {@linkcode batchNormOnDnnl}) and they compiled. */
const native = () => onDnnl && nativeOn ? nativeKernels() : null;

/**
 * The native kernels (native_kernels.ts) and a way to address the heap at an offset, or null: the SIMD
 * kernels' passes then run on the kernel threads. Both compute the same bits. The focal loss and the
 * optimizer's updates (focal_kernel.ts, momentum_kernel.ts) follow batch norm onto oneDNN's threads.
 */
export function nativeFor(k: SimdKernels): { k: NativeKernels; at: (offset: number) => Deno.PointerValue } | null {
  const nat = native();
  if (!nat) return null;
  const base = nat.address(new Uint8Array(k.heap()));
  return { k: nat, at: (o) => nat.offset(base, o) };
}

/**
 * Gradient with the SIMD kernels: the two sums in one pass, dx in a second. `overDy`: the native pass may write
 * dx over dy, which the caller frees after and no other tensor shares; dx is then dy's data.
 */
function gradSimd(k: SimdKernels, backend: WasmLike, io: Record<string, Info>, act: BnActivation, overDy: boolean) {
  const { dy, x, mean, invstd, gamma, beta } = io;
  const c = gamma.shape[0], n = x.shape.reduce((a, b) => a * b, 1), p = n / c;
  const nat = nativeFor(k);
  const inPlace = overDy && nat !== null;
  if (inPlace) (backend as unknown as { incRef(id: unknown): void }).incRef(dy.dataId);
  const outs = [
    inPlace ? { dataId: dy.dataId, shape: x.shape, dtype: "float32" as const } : backend.makeOutput(x.shape, "float32"),
    ...[[c], [c]].map((s) => backend.makeOutput(s, "float32")),
  ];
  const [dx, dgI, dbI] = outs;
  const parts = k.split(p, c, 16);
  // Scratch: scale/k/a/b f32[4c], acc f64[2c] per part.
  const scratch = k.alloc(16 * c + 16 * c * parts.length + 16);
  try {
    const heap = k.heap();
    const f32 = (ptr: number, len: number) => new Float32Array(heap, ptr, len);
    const sp = scratch, kp = sp + 4 * c, ap = kp + 4 * c, bp = ap + 4 * c, acc = bp + 4 * c;
    new Float64Array(heap, acc, 2 * c * parts.length).fill(0);
    const inv = f32(k.offset(invstd), c), g = f32(k.offset(gamma), c), sc = f32(sp, c);
    for (let j = 0; j < c; j++) sc[j] = g[j] * inv[j];
    const masked = act === "linear" ? 0 : 1, hi = upper(act), m = k.offset(mean), b = k.offset(beta);
    const dyp = k.offset(dy), xp = k.offset(x), dxp = k.offset(dx);
    if (nat) {
      const v = { mean: nat.at(m), scale: nat.at(sp), beta: nat.at(b), hi, masked: masked === 1 };
      nat.k.bnGradSums(nat.at(dyp), nat.at(xp), c, v, nat.at(acc), parts);
    } else {
      const calls = parts.map(([r0, rows], i) => {
        const at = 4 * r0 * c;
        return [dyp + at, xp + at, rows, c, m, sp, b, hi, masked, acc + 16 * c * i];
      });
      k.parallel("bn_grad_sums", calls);
    }
    const sums = addParts(new Float64Array(heap, acc, 2 * c * parts.length), parts.length);
    const dg = f32(k.offset(dgI), c), db = f32(k.offset(dbI), c);
    const kk = f32(kp, c), aa = f32(ap, c), bb = f32(bp, c);
    for (let j = 0; j < c; j++) {
      const s1 = sums[sumAt(j)], s2 = sums[sumAt(j) + 4];
      db[j] = s1;
      dg[j] = s2 * inv[j];
      kk[j] = g[j] * inv[j];
      aa[j] = s1 / p;
      bb[j] = inv[j] * inv[j] * s2 / p;
    }
    if (nat) {
      const v = { mean: nat.at(m), scale: nat.at(sp), beta: nat.at(b), k: nat.at(kp), a: nat.at(ap), b: nat.at(bp) };
      nat.k.bnGradDx(nat.at(dyp), nat.at(xp), nat.at(dxp), p, c, { ...v, hi, masked: masked === 1 });
    } else {
      const calls = parts.map(([r0, rows]) => {
        const at = 4 * r0 * c;
        return [dyp + at, xp + at, dxp + at, rows * c, c, m, sp, b, kp, ap, bp, hi, masked];
      });
      k.parallel("bn_grad_dx", calls);
    }
  } finally {
    k.free(scratch);
  }
  return outs;
}

/** Gradient on oneDNN: the activation's mask from the saved output y, then batch norm's backward. */
function gradDnnl(backend: WasmLike, io: Record<string, Info>, eps: number, act: BnActivation) {
  const { dy, x, y, mean, variance, gamma, beta } = io;
  const c = gamma.shape[0];
  const outs = [x.shape, [c], [c]].map((s) => backend.makeOutput(s, "float32"));
  const view = (i: Info) => backend.typedArrayFromHeap(i);
  const [dx, dgamma, dbeta] = outs.map(view);
  const ins = { dy: view(dy), x: view(x), y: view(y), mean: view(mean), variance: view(variance) };
  dnnlBatchNormBackward(x.shape, eps, act, { ...ins, gamma: view(gamma), beta: view(beta), dx, dgamma, dbeta });
  return outs;
}

/**
 * oneDNN takes the gradient: turned on, on the wasm heap, given the saved output and variance, and with
 * fast kernels for the shape (not its reference loops).
 */
const dnnlFor = (backend: unknown, x: Info, y: Info | undefined, variance: Info | undefined, attrs: tf.NamedAttrMap) =>
  onDnnl && y !== undefined && variance !== undefined &&
  typeof (backend as Partial<WasmLike>).typedArrayFromHeap === "function" &&
  dnnlBatchNormBackwardFast(x.shape, attrs.eps as number, attrs.activation as BnActivation);

const forwardKernel: tf.KernelFunc = ({ inputs, backend, attrs = {} }) => {
  const { x, gamma, beta } = inputs as { x: Info; gamma: Info; beta: Info };
  checkFloat32([x, gamma, beta], BN_TRAIN);
  const c = x.shape[x.shape.length - 1];
  const act = attrs.activation as BnActivation, eps = attrs.eps as number;
  const simd = c > 0 && c % 4 === 0 ? simdKernels(backend) : null;
  if (simd) return forwardSimd(simd, backend as unknown as WasmLike, x, gamma, beta, eps, act);
  const io = ioOf(backend).run([x, gamma, beta], [x.shape, [c], [c], [c]]);
  const [xv, g, b] = io.ins, [y, meanOut, varOut, invOut] = io.outs;
  const s = batchNormStats(xv, g, eps);
  batchNormForward(xv, s.mean, s.scale, b, act, y);
  meanOut.set(s.mean);
  varOut.set(s.variance);
  invOut.set(s.invstd);
  return io.infos();
};

const gradKernel: tf.KernelFunc = ({ inputs, backend, attrs = {} }) => {
  const { dy, x, y, mean, variance, invstd, gamma, beta } = inputs as Record<string, Info>;
  const act = attrs.activation as BnActivation;
  const used = [dy, x, mean, invstd, gamma, beta];
  checkFloat32(used, BN_TRAIN_GRAD);
  if (!native() && dnnlFor(backend, x, y, variance, attrs)) {
    return gradDnnl(
      backend as unknown as WasmLike,
      { dy, x, y, mean, variance, gamma, beta },
      attrs.eps as number,
      act,
    );
  }
  const c = gamma.shape[0];
  const simd = c > 0 && c % 4 === 0 ? simdKernels(backend) : null;
  // The backward pass without the tape frees dy after this kernel and says so (`dyConsumed`); unless another
  // tensor shares dy's data, dx may then be written over it.
  const overDy = attrs.dyConsumed === true &&
    (backend as unknown as { refCount(id: unknown): number }).refCount(dy.dataId) === 1;
  if (simd) return gradSimd(simd, backend as unknown as WasmLike, { dy, x, mean, invstd, gamma, beta }, act, overDy);
  const io = ioOf(backend).run(used, [x.shape, [c], [c]]);
  const [dyv, xv, m, inv, g, b] = io.ins, [dx, dgamma, dbeta] = io.outs;
  const scale = g.map((v, j) => v * inv[j]);
  batchNormBackward(dyv, xv, act, { mean: m, invstd: inv, scale }, g, b, { dx, dgamma, dbeta });
  return io.infos();
};

/** Backends that get these kernels; others keep the op-composed batch norm. */
const BACKENDS = ["wasm", "cpu"];

/** Registers both kernels and the gradient (idempotent). */
export function registerBatchNormKernels(): void {
  for (const backendName of BACKENDS) {
    if (!tf.getKernel(BN_TRAIN, backendName)) {
      tf.registerKernel({ kernelName: BN_TRAIN, backendName, kernelFunc: forwardKernel });
    }
    if (!tf.getKernel(BN_TRAIN_GRAD, backendName)) {
      tf.registerKernel({ kernelName: BN_TRAIN_GRAD, backendName, kernelFunc: gradKernel });
    }
  }
  tf.registerGradient({
    kernelName: BN_TRAIN,
    // The SIMD and JavaScript gradients recompute the activation's mask from x and the statistics; oneDNN's
    // reads it off the output y, which the next layer keeps as its input anyway.
    inputsToSave: ["x", "gamma", "beta"],
    outputsToSave: [true, true, true, true], // y, mean, variance, invstd
    gradFunc: (dys, saved, attrs) => {
      const dy = (dys as tf.Tensor[])[0];
      const [x, gamma, beta, y, mean, variance, invstd] = saved;
      const [dx, dgamma, dbeta] = tf.engine().runKernel(
        BN_TRAIN_GRAD,
        { dy, x, y, mean, variance, invstd, gamma, beta },
        attrs as unknown as tf.NamedAttrMap,
      ) as tf.Tensor[];
      return { x: () => dx, gamma: () => dgamma, beta: () => dbeta };
    },
  });
}
