/**
 * The `onnxruntime` training backend: the wasm backend with its heavy kernels
 * (convs and their gradients, batched matmuls, max-pool gradients) run by
 * onnxruntime-node. `setBackend("onnxruntime")` (backend.ts) registers them.
 *
 * onnxruntime-node's native `InferenceSession.run` is synchronous (only the
 * public JS API wraps it in a Promise), so it can serve tfjs kernels, which
 * must return synchronously. Tensors stay in the wasm heap: each kernel
 * allocates its output there, hands onnxruntime typed-array views of the
 * inputs and of the output (a pre-allocated fetch), and onnxruntime reads and
 * writes the wasm memory in place. Nothing is copied unless `copy: true` asks
 * for the copying path (kept as a baseline: it copies inputs out of the heap
 * and the result back in). The views are made after the output allocation
 * because a `malloc` that grows the wasm memory detaches older views.
 *
 * Each kernel call runs one small ONNX graph ({@link ./ort_graphs.ts}) whose
 * NHWC <-> NCHW transposes sit inside the session. Sessions are cached by
 * kernel, shapes and attributes; {@linkcode ortStats} counts runs, sessions,
 * bytes handed over and bytes copied, and time per graph kind.
 *
 * A session run has a fixed cost (~0.1-0.5 ms with its transposes), so some
 * small convs (a few px, few channels) run faster on wasm; `minMacs` keeps
 * them there, and `autoSelect` times both on the first call of a signature.
 * Both are off by default: every kernel on onnxruntime was fastest over whole
 * training steps, and a fixed choice keeps runs reproducible.
 * Kernels with inputs this module does not handle (non-float32, NCHW, prelu)
 * fall back to the kernel registered before: wasm's own or the composed
 * gradients of conv_grad_kernels.ts.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs-core";
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * import { setBackend } from "./backend.ts";
 * await setBackend("onnxruntime");
 * registerOrtKernels({ threads: 1, autoSelect: false });
 * const y = tf.conv2d(tf.ones([1, 4, 4, 1]) as tf.Tensor4D, tf.ones([3, 3, 1, 1]) as tf.Tensor4D, 1, "same");
 * assertEquals(Array.from(await y.data()).slice(0, 4), [4, 6, 6, 4]);
 * assertEquals(ortStats().runs > 0, true);
 * y.dispose();
 * unregisterOrtKernels();
 * ```
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { binding, initOrt } from "onnxruntime-node/dist/binding.js";
import { Tensor as OrtTensor } from "onnxruntime-node";
import { installTrainingKernels, noteOrtKernels } from "./training_kernels.ts";
import { POINTWISE_MAX_K } from "./pointwise_conv.ts";
import { type ConvPass, dnnlAvailable, dnnlConv, dnnlConvFast, dnnlPointwise, dnnlWinograd } from "./dnnl.ts";
import { batchNormOnDnnl } from "./batch_norm_kernel.ts";
import {
  batchMatMulGraph,
  convBackpropFilterGraph,
  convBackpropFilterShiftedGraph,
  convBackpropInputGraph,
  convForwardGraph,
  type ConvGeometry,
  type FilterGradVariant,
  type FusedActivation,
  type InputGradVariant,
  isPointwise,
  maxPoolGradGraph,
  shiftedLayout,
} from "./ort_graphs.ts";

type Info = tf.TensorInfo;

/** Options of {@linkcode registerOrtKernels}. */
export interface OrtKernelOptions {
  /** onnxruntime intra-op threads (default 2, the cores of the target machine). */
  threads?: number;
  /**
   * Filter-gradient graph (default `shifted`, the fastest in bench/ort_bench.ts; strided convs
   * take `taps` with it). Depthwise convs use the grouped conv for `conv` and for output maps over
   * 40x40, else one multiply-and-reduce per tap.
   */
  filterGrad?: FilterGradVariant;
  /** Input-gradient graph (default `auto`: Conv at stride 1, ConvTranspose otherwise). */
  inputGrad?: InputGradVariant;
  /** Copy tensors out of and into the wasm heap instead of sharing it (a baseline; default false). */
  copy?: boolean;
  /** Calls below this many multiply-adds stay on the previous kernel: a session run costs ~0.1 ms (default 0). */
  minMacs?: number;
  /**
   * Forward 1x1 convs with at most this many input channels stay on the wasm backend's Conv2D
   * (default {@linkcode POINTWISE_MAX_K}): the SIMD kernel of pointwise_conv.ts up to its own
   * limit, XNNPACK above. With so few channels to sum, the output write bounds the conv, and
   * onnxruntime's Gemm is slowest there (pointwise_conv.ts has the figures).
   */
  pointwiseMaxK?: number;
  /** onnxruntime's per-session memory arena: faster allocations, but every session keeps its peak (default false). */
  memArena?: boolean;
  /** Let onnxruntime's pool threads spin between runs: lower latency for small ops, but they compete with wasm (default false). */
  spinning?: boolean;
  /** onnxruntime graph optimisation level (default "all": NCHWc layouts and reorders for AVX-512/AVX2). */
  optimization?: "disabled" | "basic" | "extended" | "all";
  /**
   * On the first call of each signature, time onnxruntime against the previous kernel and keep the
   * faster (default false). Single timings are noisy, so two runs may choose differently and round
   * differently; and measured over whole steps it lost to running every kernel on onnxruntime
   * (demo batch 16: 279 vs 253 ms; SSD300-MobileNetV2 batch 4: 2.36 vs 2.28 s).
   */
  autoSelect?: boolean;
  /** Kernels to take over (default {@linkcode DEFAULT_ORT_KERNELS}; kept for later calls like the other options). */
  kernels?: readonly OrtKernelName[];
  /**
   * Run the dense convs (forward without a fused non-linear activation, dX, dW; 1x1s at stride 1
   * only without a bias) on oneDNN (dnnl.ts) where Debian's libdnnl2 loads (default true;
   * `SSD_ONEDNN=0` makes it false). Without the library, onnxruntime runs them.
   */
  onednn?: boolean;
  /** With `onednn`, run the depthwise convs there too ({@linkcode DNNL_DEPTHWISE_KERNELS}; default true). */
  onednnDepthwise?: boolean;
  /**
   * With `onednn`, run batch norm on oneDNN's OpenMP threads too (batch_norm_kernel.ts; default true): as
   * native code where a C compiler builds it (native_kernels.ts), else its gradient on oneDNN itself.
   */
  onednnBatchNorm?: boolean;
  /** With `onednnBatchNorm`, use the native code where it builds (default true; false: oneDNN's gradient). */
  nativeBatchNorm?: boolean;
  /**
   * With `onednn`, run the convs that fit as Winograd convolutions (dnnl.ts's `winogradFits`: dense 3x3
   * convs at stride 1 of 64+ channels over maps of 19x19+, 100M+ multiply-adds per image; default true,
   * `SSD_WINOGRAD=0` makes it false).
   */
  winograd?: boolean;
  /** tfjs backend whose kernels are replaced (default "wasm"; must keep data in a wasm heap). */
  backendName?: string;
}

/** Counters since the last {@linkcode resetOrtStats}. */
export interface OrtStats {
  /** Session runs. */
  runs: number;
  /** Sessions created (graph builds + loads). */
  sessions: number;
  /** Bytes of inputs handed to onnxruntime / of outputs it produced. */
  bytesIn: number;
  bytesOut: number;
  /** Bytes actually copied between the wasm heap and other memory (0 unless `copy`). */
  bytesCopied: number;
  /** Milliseconds inside `run` (onnxruntime compute), and in copies. */
  runMs: number;
  copyMs: number;
  /** Milliseconds building and loading sessions. */
  sessionMs: number;
  /** Calls that went to the previous kernel (unsupported inputs, below `minMacs` or `pointwiseMaxK`). */
  fallbacks: number;
  /** Runs and milliseconds by graph kind (Conv, ConvDx, ConvDw, DepthwiseConv, ..., BatchMatMul). */
  byKind: Record<string, { runs: number; ms: number }>;
  /** Auto-selection trials: call signature and the measured ms of each side. */
  trials: { sig: string; ortMs: number; prevMs: number }[];
}

/** Kernels this module can provide. */
export const ORT_KERNELS = [
  "Conv2D",
  "FusedConv2D",
  "DepthwiseConv2dNative",
  "FusedDepthwiseConv2D",
  "Conv2DBackpropInput",
  "Conv2DBackpropFilter",
  "DepthwiseConv2dNativeBackpropInput",
  "DepthwiseConv2dNativeBackpropFilter",
  "BatchMatMul",
  "MaxPoolGrad",
] as const;
/** A kernel name of {@linkcode ORT_KERNELS}. */
export type OrtKernelName = (typeof ORT_KERNELS)[number];

/**
 * The kernels taken over by default: all but the depthwise ones and MaxPoolGrad. XNNPACK runs
 * the depthwise forward and input gradient in NHWC 3-7x faster than onnxruntime's grouped Conv
 * with its layout transposes (batch 4, 75x75x144: forward 4.9 vs 27.8 ms, input gradient 6.6 vs
 * 23.3 ms), and the SIMD filter gradient of conv_grad_kernels.ts beats onnxruntime's 3-5x (8.2 vs
 * 27.8 ms). The SIMD max-pool gradient of max_pool_grad.ts beats the MaxPool + ScatterElements
 * graph here more than 10x. Where oneDNN runs the convs it takes the depthwise ones too
 * ({@linkcode DNNL_DEPTHWISE_KERNELS}).
 */
export const DEFAULT_ORT_KERNELS: readonly OrtKernelName[] = ORT_KERNELS.filter((k) =>
  !k.startsWith("DepthwiseConv2dNative") && k !== "FusedDepthwiseConv2D" && k !== "MaxPoolGrad"
);

const zeroStats = (): OrtStats => ({
  runs: 0,
  sessions: 0,
  bytesIn: 0,
  bytesOut: 0,
  bytesCopied: 0,
  runMs: 0,
  copyMs: 0,
  sessionMs: 0,
  fallbacks: 0,
  byKind: {},
  trials: [],
});
let stats = zeroStats();
let opts: Required<Omit<OrtKernelOptions, "backendName">> = {
  threads: 2,
  filterGrad: "shifted",
  inputGrad: "auto",
  copy: false,
  minMacs: 0,
  pointwiseMaxK: POINTWISE_MAX_K,
  memArena: false,
  spinning: false,
  optimization: "all",
  autoSelect: false,
  kernels: DEFAULT_ORT_KERNELS,
  onednn: Deno.env.get("SSD_ONEDNN") !== "0",
  onednnDepthwise: true,
  onednnBatchNorm: true,
  nativeBatchNorm: true,
  winograd: Deno.env.get("SSD_WINOGRAD") !== "0",
};

interface NativeSession {
  loadModel(buffer: ArrayBuffer, offset: number, length: number, options: unknown): void;
  run(feeds: Record<string, unknown>, fetches: Record<string, unknown>, options: unknown): Record<string, unknown>;
  dispose(): void;
}
/**
 * Sessions by signature, least recently used first. Bounded: a run sees a few hundred signatures (SSD300-VGG16
 * ~150, the FPN variants ~300), but eval at many image sizes or a long notebook could keep adding them.
 */
const sessions = new Map<string, NativeSession>();
/** Most sessions kept; the least recently used is released past this. */
export const MAX_ORT_SESSIONS = 512;
/** Kernels that were registered before ours, by "backend/kernel". */
const previous = new Map<string, tf.KernelConfig>();
let ortReady = false;

/** A copy of the counters. */
export function ortStats(): OrtStats {
  return {
    ...stats,
    trials: stats.trials.slice(),
    byKind: Object.fromEntries(Object.entries(stats.byKind).map(([k, v]) => [k, { ...v }])),
  };
}

/** The options in force (after {@linkcode registerOrtKernels}). */
export function ortKernelOptions(): Readonly<typeof opts> {
  return { ...opts };
}

/** Zeroes the counters. */
export function resetOrtStats(): void {
  stats = zeroStats();
}

/** Releases every cached session (they are rebuilt on demand). */
export function clearOrtSessions(): void {
  for (const s of sessions.values()) s.dispose();
  sessions.clear();
  choices.clear();
}

function session(key: string, build: () => Uint8Array): NativeSession {
  const fullKey = `${key}|t${opts.threads}|a${opts.memArena}|s${opts.spinning}|o${opts.optimization}`;
  let s = sessions.get(fullKey);
  if (s) {
    sessions.delete(fullKey); // most recently used goes last
    sessions.set(fullKey, s);
    return s;
  }
  const t0 = performance.now();
  if (!ortReady) {
    initOrt();
    ortReady = true;
  }
  const bytes = build();
  s = new binding.InferenceSession() as NativeSession;
  s.loadModel(bytes.buffer as ArrayBuffer, bytes.byteOffset, bytes.byteLength, {
    intraOpNumThreads: opts.threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: opts.optimization,
    executionMode: "sequential",
    enableCpuMemArena: opts.memArena,
    // Spinning pool threads would steal the core that the wasm kernels between our calls run on.
    extra: { session: { intra_op: { allow_spinning: opts.spinning ? "1" : "0" } } },
  });
  sessions.set(fullKey, s);
  if (sessions.size > MAX_ORT_SESSIONS) {
    const [oldest, old] = sessions.entries().next().value!;
    sessions.delete(oldest);
    old.dispose();
  }
  stats.sessions++;
  stats.sessionMs += performance.now() - t0;
  return s;
}

interface WasmBackend {
  makeOutput(shape: number[], dtype: tf.DataType): Info;
  typedArrayFromHeap(info: Info): Float32Array;
}

/** Part of a tensor passed to a session as an input of its own: `shape` from float `offset` (no copy). */
interface View {
  offset: number;
  shape: number[];
}

/**
 * Runs the cached session `key` on float32 `inputs` (named like the graph's
 * inputs, in order) and returns its single output, allocated in the wasm heap.
 */
function runSession(
  backend: WasmBackend,
  key: string,
  build: () => Uint8Array,
  inputs: ([string, Info] | [string, Info, View])[],
  output: [string, number[]],
): Info {
  const s = session(key, build);
  const out = backend.makeOutput(output[1], "float32");
  // Views only now: the allocation above may have grown (and detached) the heap.
  const outView = ortView(backend.typedArrayFromHeap(out));
  const feeds: Record<string, unknown> = {};
  let copyMs = 0;
  for (const [name, info, view] of inputs) {
    let v = ortView(backend.typedArrayFromHeap(info));
    if (view) v = v.subarray(view.offset, view.offset + view.shape.reduce((a, b) => a * b, 1));
    stats.bytesIn += v.byteLength;
    if (opts.copy) {
      const t0 = performance.now();
      v = v.slice();
      copyMs += performance.now() - t0;
      stats.bytesCopied += v.byteLength;
    }
    feeds[name] = new OrtTensor("float32", v, view?.shape ?? info.shape);
  }
  const target = opts.copy ? new Float32Array(outView.length) : outView;
  const t0 = performance.now();
  s.run(feeds, { [output[0]]: new OrtTensor("float32", target, output[1]) }, {});
  countRun(key.slice(0, key.indexOf("|")), performance.now() - t0);
  stats.bytesOut += outView.byteLength;
  if (opts.copy) {
    const t1 = performance.now();
    backend.typedArrayFromHeap(out).set(target);
    copyMs += performance.now() - t1;
    stats.bytesCopied += outView.byteLength;
  }
  stats.copyMs += copyMs;
  return out;
}

/** Counts one native run of `kind` that took `ms`. */
function countRun(kind: string, ms: number): void {
  stats.runMs += ms;
  stats.runs++;
  const k = stats.byKind[kind] ??= { runs: 0, ms: 0 };
  k.runs++;
  k.ms += ms;
}

/** Whether the convs run on oneDNN: asked for (`onednn`) and the library loads. */
export function ortConvsOnDnnl(): boolean {
  return opts.onednn && dnnlAvailable(opts.threads);
}

const DNNL_KINDS = { fwd: "OneDnnConv", dx: "OneDnnConvDx", dw: "OneDnnConvDw" } as const;

/**
 * Whether a conv goes to oneDNN: asked for and the library loads; a 1x1 at stride 1 (a matmul over
 * the NHWC rows, no reorders) only without a bias. Per pass, oneDNN ran at or below onnxruntime's
 * time on every SSD300-MobileNetV2 1x1 shape tried (4x10x10 to 4x150x150).
 */
function useDnnl(g: ConvGeometry, pass: ConvPass, bias = false): boolean {
  if (isPointwise(g)) return !bias && ortConvsOnDnnl();
  if (!g.depthwise) return ortConvsOnDnnl();
  // A depthwise pass only where oneDNN has a fast kernel for it (not its reference loops).
  return opts.onednnDepthwise && ortConvsOnDnnl() && dnnlConvFast(pass, g, bias);
}

/**
 * The depthwise kernels oneDNN takes over whenever it runs the convs, whatever `kernels` says:
 * in NHWC it beats both XNNPACK and the SIMD kernels on every SSD300-MobileNetV2 depthwise shape
 * (batch 4, all ten: forward + dX + dW 16.8 against 35.3 ms, and the whole step 1.24x faster;
 * `deno task bench --only conv,ort`).
 * Without oneDNN they go to onnxruntime's grouped Conv only where `kernels` lists them.
 */
export const DNNL_DEPTHWISE_KERNELS: readonly OrtKernelName[] = [
  "DepthwiseConv2dNative",
  "DepthwiseConv2dNativeBackpropInput",
  "DepthwiseConv2dNativeBackpropFilter",
];

/** Whether a depthwise call that oneDNN does not take runs an onnxruntime session (else the previous kernel). */
const ortTakes = (name: OrtKernelName) => opts.kernels.includes(name);

/**
 * One conv pass on oneDNN, in place in the wasm heap like {@linkcode runSession}: the output is
 * allocated first, then the views are taken. Counted with the onnxruntime runs (kinds `OneDnnConv`,
 * `OneDnnConvDx`, `OneDnnConvDw`).
 */
function runDnnl(
  backend: WasmBackend,
  pass: ConvPass,
  g: ConvGeometry,
  inputs: [string, Info][],
  output: [string, number[]],
): Info {
  const out = backend.makeOutput(output[1], "float32");
  const bufs: Record<string, Float32Array> = { [output[0]]: backend.typedArrayFromHeap(out) };
  for (const [name, info] of inputs) {
    bufs[name] = backend.typedArrayFromHeap(info);
    stats.bytesIn += bufs[name].byteLength;
  }
  const t0 = performance.now();
  (isPointwise(g) ? dnnlPointwise : dnnlConv)(pass, g, bufs);
  countRun(DNNL_KINDS[pass], performance.now() - t0);
  stats.bytesOut += bufs[output[0]].byteLength;
  return out;
}

let alias: { of: SharedArrayBuffer; buffer: ArrayBuffer } | null = null;

/**
 * `v` as onnxruntime-node takes it. Its native binding refuses views of a
 * SharedArrayBuffer, which the wasm heap is when kernel threads share it
 * (shared_heap.ts); the same memory seen through an unshared ArrayBuffer
 * (Deno's pointer view, no copy) passes. A shared memory never moves, so
 * the alias stays valid; it is remade when the heap grows.
 */
function ortView(v: Float32Array): Float32Array {
  const sab = v.buffer;
  if (!(sab instanceof SharedArrayBuffer)) return v;
  if (alias?.of !== sab) {
    const base = Deno.UnsafePointer.of(new Uint8Array(sab) as unknown as Uint8Array<ArrayBuffer>);
    if (!base) throw new Error("onnxruntime kernels: no address for the shared wasm heap");
    alias = { of: sab, buffer: Deno.UnsafePointerView.getArrayBuffer(base, sab.byteLength) };
  }
  return new Float32Array(alias.buffer, v.byteOffset, v.length);
}

function pair(v: unknown): [number, number] {
  if (v === undefined || v === null) return [1, 1];
  return typeof v === "number" ? [v, v] : [(v as number[])[0], (v as number[])[1]];
}

/** The geometry oneDNN and the onnxruntime graphs get for a conv kernel's shapes and tfjs attributes. */
export function convGeometry(
  xShape: number[],
  wShape: number[],
  attrs: tf.NamedAttrMap,
  depthwise: boolean,
): ConvGeometry {
  const info = tf.backend_util.computeConv2DInfo(
    xShape as [number, number, number, number],
    wShape as [number, number, number, number],
    pair(attrs.strides),
    pair(attrs.dilations),
    attrs.pad as "same" | "valid" | number,
    attrs.dimRoundingMode as "floor" | "round" | "ceil" | undefined,
    depthwise,
  );
  const p = info.padInfo;
  return {
    x: xShape,
    w: wShape,
    y: [info.batchSize, info.outHeight, info.outWidth, info.outChannels],
    strides: [info.strideHeight, info.strideWidth],
    dilations: [info.dilationHeight, info.dilationWidth],
    pads: [p.top, p.left, p.bottom, p.right],
    depthwise,
  };
}

const keyOf = (kernel: string, g: ConvGeometry, extra = "") =>
  `${kernel}|${g.x}|${g.w}|${g.strides}|${g.dilations}|${g.pads}${extra}`;

/** Multiply-adds of one pass of the conv (any of forward, dX, dW). */
function macs(g: ConvGeometry): number {
  const [, oh, ow, co] = g.y;
  return g.x[0] * oh * ow * co * g.w[0] * g.w[1] * (g.depthwise ? 1 : g.x[3]);
}

const FUSED_ACTIVATIONS = new Set(["linear", "relu", "relu6", "leakyrelu", "sigmoid", "elu"]);

function usable(infos: (Info | undefined)[], attrs: tf.NamedAttrMap | undefined): boolean {
  if (infos.some((i) => i && (i.dtype !== "float32" || i.shape.some((d) => d === 0)))) return false;
  const fmt = attrs?.dataFormat;
  return fmt === undefined || fmt === "NHWC" || fmt === "channelsLast";
}

type OurKernel = (args: { inputs: tf.NamedTensorInfoMap; backend: WasmBackend; attrs: tf.NamedAttrMap }) =>
  | Info
  | null;

/** Each kernel returns null to hand the call to the previous kernel. */
const kernels: Record<OrtKernelName, OurKernel> = {
  Conv2D: ({ inputs, backend, attrs }) => convForward(inputs, backend, attrs, false, false),
  FusedConv2D: ({ inputs, backend, attrs }) => convForward(inputs, backend, attrs, false, true),
  DepthwiseConv2dNative: ({ inputs, backend, attrs }) => convForward(inputs, backend, attrs, true, false),
  FusedDepthwiseConv2D: ({ inputs, backend, attrs }) => convForward(inputs, backend, attrs, true, true),
  Conv2DBackpropInput: ({ inputs, backend, attrs }) => backpropInput(inputs, backend, attrs, false),
  DepthwiseConv2dNativeBackpropInput: ({ inputs, backend, attrs }) => backpropInput(inputs, backend, attrs, true),
  Conv2DBackpropFilter: ({ inputs, backend, attrs }) => backpropFilter(inputs, backend, attrs, false),
  DepthwiseConv2dNativeBackpropFilter: ({ inputs, backend, attrs }) => backpropFilter(inputs, backend, attrs, true),
  MaxPoolGrad: ({ inputs, backend, attrs }) => {
    const { dy, input } = inputs as { dy: Info; input: Info };
    if (!usable([dy, input], undefined) || input.shape.length !== 4) return null;
    const info = tf.backend_util.computePool2DInfo(
      input.shape as [number, number, number, number],
      attrs.filterSize as [number, number] | number,
      attrs.strides as [number, number] | number,
      1,
      attrs.pad as "same" | "valid" | number,
      attrs.dimRoundingMode as "floor" | "round" | "ceil" | undefined,
    );
    if (info.outHeight !== dy.shape[1] || info.outWidth !== dy.shape[2]) return null;
    const p = info.padInfo;
    const pool = {
      kernel: [info.filterHeight, info.filterWidth] as [number, number],
      strides: [info.strideHeight, info.strideWidth] as [number, number],
      pads: [p.top, p.left, p.bottom, p.right] as [number, number, number, number],
    };
    if (input.shape.reduce((a, b) => a * b, 1) < opts.minMacs) return null;
    return runSession(
      backend,
      `MaxPoolGrad|${input.shape}|${dy.shape}|${pool.kernel}|${pool.strides}|${pool.pads}`,
      () => maxPoolGradGraph(input.shape, dy.shape, pool),
      [["x", input], ["dy", dy]],
      ["dx", input.shape],
    );
  },
  BatchMatMul: ({ inputs, backend, attrs }) => {
    const { a, b } = inputs as { a: Info; b: Info };
    const ra = a.shape.length, rb = b.shape.length;
    if (!usable([a, b], undefined) || ra < 2 || rb < 2 || ra !== rb) return null;
    const ta = !!attrs.transposeA, tb = !!attrs.transposeB;
    const m = a.shape[ta ? ra - 1 : ra - 2], k = a.shape[ta ? ra - 2 : ra - 1];
    const n = b.shape[tb ? rb - 2 : rb - 1];
    // Batch dimensions broadcast (1 against B), as in both tfjs and ONNX MatMul.
    const batch = a.shape.slice(0, -2).map((d, i) => Math.max(d, b.shape[i]));
    const y = [...batch, m, n];
    if (y.reduce((p, d) => p * d, 1) * k < opts.minMacs) return null;
    return runSession(
      backend,
      `BatchMatMul|${a.shape}|${b.shape}|${ta}|${tb}`,
      () => batchMatMulGraph(a.shape, b.shape, y, ta, tb),
      [["a", a], ["b", b]],
      ["y", y],
    );
  },
};

function convForward(
  inputs: tf.NamedTensorInfoMap,
  backend: WasmBackend,
  attrs: tf.NamedAttrMap,
  depthwise: boolean,
  fused: boolean,
): Info | null {
  const { x, filter, bias, preluActivationWeights } = inputs as Record<string, Info | undefined>;
  if (!x || !filter || !usable([x, filter, bias], attrs)) return null;
  const activation = (fused ? attrs.activation ?? "linear" : "linear") as FusedActivation;
  if (preluActivationWeights || !FUSED_ACTIVATIONS.has(activation)) return null;
  const g = convGeometry(x.shape, filter.shape, attrs, depthwise);
  const outC = g.y[3];
  // Only a per-channel bias maps onto Conv's B input.
  if (bias && !(bias.shape.length === 1 && bias.shape[0] === outC)) return null;
  const dnnl = activation === "linear" && useDnnl(g, "fwd", !!bias);
  if (depthwise && !dnnl && !ortTakes(fused ? "FusedDepthwiseConv2D" : "DepthwiseConv2dNative")) return null;
  // oneDNN's matmul beats the few-channel SIMD kernel too (4x150x150, 16->96: 1.0-1.4 vs 3.9-4.1 ms).
  if (macs(g) < opts.minMacs || (!dnnl && isPointwise(g) && g.x[3] <= opts.pointwiseMaxK)) return null;
  if (dnnl) {
    return runDnnl(backend, "fwd", g, bias ? [["x", x], ["w", filter], ["b", bias]] : [["x", x], ["w", filter]], [
      "y",
      g.y,
    ]);
  }
  const alpha = attrs.leakyreluAlpha as number | undefined;
  const ins: [string, Info][] = [["x", x], ["w", filter]];
  if (bias) ins.push(["b", bias]);
  return runSession(
    backend,
    keyOf(depthwise ? "DepthwiseConv" : "Conv", g, `|${!!bias}|${activation}|${alpha}`),
    () => convForwardGraph(g, { bias: !!bias, activation, alpha }),
    ins,
    ["y", g.y],
  );
}

function backpropInput(
  inputs: tf.NamedTensorInfoMap,
  backend: WasmBackend,
  attrs: tf.NamedAttrMap,
  depthwise: boolean,
): Info | null {
  const { dy, filter } = inputs as { dy: Info; filter: Info };
  if (!usable([dy, filter], attrs)) return null;
  const g = convGeometry(attrs.inputShape as number[], filter.shape, attrs, depthwise);
  if (macs(g) < opts.minMacs) return null;
  if (useDnnl(g, "dx")) return runDnnl(backend, "dx", g, [["dy", dy], ["w", filter]], ["dx", g.x]);
  if (depthwise && !ortTakes("DepthwiseConv2dNativeBackpropInput")) return null;
  return runSession(
    backend,
    keyOf(depthwise ? "DepthwiseDx" : "ConvDx", g, `|${opts.inputGrad}`),
    () => convBackpropInputGraph(g, opts.inputGrad),
    [["dy", dy], ["w", filter]],
    ["dx", g.x],
  );
}

function backpropFilter(
  inputs: tf.NamedTensorInfoMap,
  backend: WasmBackend,
  attrs: tf.NamedAttrMap,
  depthwise: boolean,
): Info | null {
  const { x, dy } = inputs as { x: Info; dy: Info };
  if (!usable([x, dy], attrs)) return null;
  const g = convGeometry(x.shape, attrs.filterShape as number[], attrs, depthwise);
  if (macs(g) < opts.minMacs) return null;
  if (useDnnl(g, "dw")) return runDnnl(backend, "dw", g, [["x", x], ["dy", dy]], ["dw", g.w]);
  if (depthwise && !ortTakes("DepthwiseConv2dNativeBackpropFilter")) return null;
  // Depthwise: the per-tap multiply-and-reduce wins on small maps, the grouped conv on large ones
  // (bench at batch 4: 38x38x192 taps 20 vs conv 24 ms; 75x75x96 taps 95 vs conv 82 ms).
  const variant = depthwise && opts.filterGrad !== "conv" && g.y[1] * g.y[2] > 1600 ? "conv" : opts.filterGrad;
  if (variant === "shifted") {
    const layout = shiftedLayout(g);
    if (layout) return backpropFilterShifted(backend, g, layout, x, dy);
  }
  return runSession(
    backend,
    keyOf(depthwise ? "DepthwiseDw" : "ConvDw", g, `|${variant}`),
    () => convBackpropFilterGraph(g, variant === "shifted" ? "taps" : variant),
    [["x", x], ["dy", dy]],
    ["dw", g.w],
  );
}

/**
 * The `shifted` filter gradient: pads x and dy into wasm-heap buffers of the
 * layout, then passes each tap's view of the padded x as its own input.
 */
function backpropFilterShifted(
  backend: WasmBackend,
  g: ConvGeometry,
  layout: NonNullable<ReturnType<typeof shiftedLayout>>,
  x: Info,
  dy: Info,
): Info {
  const [n, h, w, c] = g.x, [, oh, ow, co] = g.y;
  const { hp, wp, rows, tail } = layout;
  const xPad = backend.makeOutput([(rows + tail) * c], "float32");
  const dyPad = backend.makeOutput([rows * co], "float32");
  try {
    // Views only after both allocations: growing the heap detaches older views.
    const xp = backend.typedArrayFromHeap(xPad), dp = backend.typedArrayFromHeap(dyPad);
    padRows(backend.typedArrayFromHeap(x), [n, h, w, c], xp, hp, wp, g.pads[0], g.pads[1]);
    xp.fill(0, rows * c);
    padRows(backend.typedArrayFromHeap(dy), [n, oh, ow, co], dp, hp, wp, 0, 0);
    const inputs: [string, Info, View][] = layout.offsets.map((o, t) => [`x${t}`, xPad, {
      offset: o * c,
      shape: [rows, c],
    }]);
    inputs.push(["dy", dyPad, { offset: 0, shape: [rows, co] }]);
    return runSession(
      backend,
      keyOf("ConvDw", g, "|shifted"),
      () => convBackpropFilterShiftedGraph(g),
      inputs,
      ["dw", g.w],
    );
  } finally {
    (backend as unknown as tf.KernelBackend).disposeData(xPad.dataId);
    (backend as unknown as tf.KernelBackend).disposeData(dyPad.dataId);
  }
}

/**
 * Writes `src` [n, h, w, c] into `dst` [n, hp, wp, c] moved down `top` rows and
 * right `left` columns, cropped to the destination, zeros elsewhere.
 */
function padRows(
  src: Float32Array,
  [n, h, w, c]: number[],
  dst: Float32Array,
  hp: number,
  wp: number,
  top: number,
  left: number,
): void {
  const x0 = Math.max(0, -left), x1 = Math.min(w, wp - left); // source columns that land inside
  for (let b = 0; b < n; b++) {
    for (let yp = 0; yp < hp; yp++) {
      const row = (b * hp + yp) * wp * c, y = yp - top;
      if (y < 0 || y >= h || x1 <= x0) {
        dst.fill(0, row, row + wp * c);
        continue;
      }
      const at = row + (x0 + left) * c;
      dst.fill(0, row, at);
      dst.set(src.subarray(((b * h + y) * w + x0) * c, ((b * h + y) * w + x1) * c), at);
      dst.fill(0, at + (x1 - x0) * c, row + wp * c);
    }
  }
}

/** Per call signature, the faster of onnxruntime and the previous kernel (with `autoSelect`). */
const choices = new Map<string, "ort" | "previous">();

/**
 * Times both kernels on this call (the second of two runs each, after session and
 * operator setup) and remembers the faster; returns the choice. Small convs lose to
 * the wasm kernels: a session run has a fixed cost and transposes to and from NCHW.
 */
function trial(sig: string, backendArg: unknown, runOurs: () => Info | null, runPrev: () => Info): "ort" | "previous" {
  const backend = backendArg as tf.KernelBackend;
  // The best of two runs after a warm-up (session and operator setup): single runs are noisy on a busy machine.
  const timed = (f: () => Info | null, runs: number): number => {
    const first = f();
    if (!first) return Infinity;
    backend.disposeData(first.dataId);
    let best = Infinity;
    for (let i = 0; i < runs; i++) {
      const t0 = performance.now();
      const r = f()!;
      best = Math.min(best, performance.now() - t0);
      backend.disposeData(r.dataId);
    }
    return best;
  };
  const ortMs = timed(runOurs, 2);
  // Past a few ms the fixed cost of a run no longer matters and onnxruntime wins (bench/ort_bench.ts):
  // skip timing the slow side.
  const prevMs = ortMs > 5 ? Infinity : timed(runPrev, 2);
  const choice = ortMs <= prevMs ? "ort" : "previous";
  if (choices.size >= 4096) choices.clear(); // bounded: a new trial per signature is cheap next to a leak
  choices.set(sig, choice);
  stats.trials.push({ sig, ortMs, prevMs });
  return choice;
}

/** Our registered kernel functions, to notice when something replaced them. */
const ourFuncs = new Map<string, tf.KernelFunc>();

let registeredOn: { backendName: string; names: OrtKernelName[] } | null = null;

/**
 * Registers the onnxruntime kernels for the wasm backend, over whatever was
 * registered before (the shipped kernels, or the composed gradients of
 * `conv_grad_kernels.ts`, which stay as the fallback). Calling it again only
 * updates the options. {@linkcode unregisterOrtKernels} restores the previous
 * kernels.
 */
export function registerOrtKernels(options: OrtKernelOptions = {}): void {
  const before = JSON.stringify(opts);
  opts = {
    threads: options.threads ?? opts.threads,
    filterGrad: options.filterGrad ?? opts.filterGrad,
    inputGrad: options.inputGrad ?? opts.inputGrad,
    copy: options.copy ?? opts.copy,
    minMacs: options.minMacs ?? opts.minMacs,
    pointwiseMaxK: options.pointwiseMaxK ?? opts.pointwiseMaxK,
    memArena: options.memArena ?? opts.memArena,
    spinning: options.spinning ?? opts.spinning,
    optimization: options.optimization ?? opts.optimization,
    autoSelect: options.autoSelect ?? opts.autoSelect,
    kernels: options.kernels ?? opts.kernels,
    onednn: options.onednn ?? opts.onednn,
    onednnDepthwise: options.onednnDepthwise ?? opts.onednnDepthwise,
    onednnBatchNorm: options.onednnBatchNorm ?? opts.onednnBatchNorm,
    nativeBatchNorm: options.nativeBatchNorm ?? opts.nativeBatchNorm,
    winograd: options.winograd ?? opts.winograd,
  };
  // Timings taken under other options no longer hold.
  if (JSON.stringify(opts) !== before) choices.clear();
  const backendName = options.backendName ?? "wasm";
  const names = [
    ...new Set([...opts.kernels, ...(opts.onednnDepthwise && ortConvsOnDnnl() ? DNNL_DEPTHWISE_KERNELS : [])]),
  ];
  // The composed gradients must be in place first: they are the fallback, and registered later they
  // would take our kernels for the shipped ones.
  installTrainingKernels();
  batchNormOnDnnl(opts.onednnBatchNorm && ortConvsOnDnnl(), { native: opts.nativeBatchNorm });
  dnnlWinograd(opts.winograd);
  const intact = () => names.every((n) => tf.getKernel(n, backendName)?.kernelFunc === ourFuncs.get(n));
  if (registeredOn && registeredOn.backendName === backendName && registeredOn.names.join() === names.join()) {
    if (intact()) return;
  }
  if (registeredOn) unregisterOrtKernels();
  for (const name of names) {
    const prev = tf.getKernel(name, backendName);
    if (prev) {
      previous.set(`${backendName}/${name}`, prev);
      tf.unregisterKernel(name, backendName);
    }
    const ours = kernels[name];
    // Registered before the backend initialised, the previous kernel may never have run its setup.
    let prevReady = false;
    const kernelFunc: tf.KernelFunc = (args) => {
      const runPrev = () => {
        if (!prev) throw new Error(`onnxruntime kernel ${name}: unsupported inputs and no ${backendName} kernel`);
        if (!prevReady) prev.setupFunc?.(args.backend);
        prevReady = true;
        return prev.kernelFunc(args) as Info;
      };
      const runOurs = () => ours(args as unknown as Parameters<OurKernel>[0]);
      if (!opts.autoSelect || !prev) {
        const r = runOurs();
        if (r) return r;
        stats.fallbacks++;
        return runPrev();
      }
      const sig = `${name}|${Object.values(args.inputs).map((i) => i?.shape)}|${JSON.stringify(args.attrs)}`;
      let choice = choices.get(sig);
      if (choice === undefined) choice = trial(sig, args.backend, runOurs, runPrev);
      if (choice === "ort") {
        const r = runOurs();
        if (r) return r;
      }
      stats.fallbacks++;
      return runPrev();
    };
    ourFuncs.set(name, kernelFunc);
    tf.registerKernel({ kernelName: name, backendName, kernelFunc });
  }
  registeredOn = { backendName, names };
}

/** Restores the kernels that were registered before {@linkcode registerOrtKernels}; keeps the sessions. */
export function unregisterOrtKernels(): void {
  if (!registeredOn) return;
  batchNormOnDnnl(false);
  const { backendName, names } = registeredOn;
  const backend = tf.findBackend(backendName);
  for (const name of names) {
    // Something registered over ours since: leave it.
    if (tf.getKernel(name, backendName)?.kernelFunc !== ourFuncs.get(name)) continue;
    tf.unregisterKernel(name, backendName);
    const prev = previous.get(`${backendName}/${name}`);
    if (!prev) continue;
    tf.registerKernel(prev);
    // A kernel that was unregistered while its backend initialised never ran its setup (idempotent cwraps).
    if (backend) prev.setupFunc?.(backend);
  }
  registeredOn = null;
}

/** Whether the onnxruntime kernels are registered. */
export function ortKernelsActive(): boolean {
  return registeredOn !== null;
}

noteOrtKernels({ registerOrtKernels, unregisterOrtKernels, ortConvsOnDnnl, ortKernelOptions });
