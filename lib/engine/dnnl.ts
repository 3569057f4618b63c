/**
 * 2-D convolutions (forward, input gradient, filter gradient) on oneDNN, the
 * library behind PyTorch's CPU convolutions, opened through Deno's FFI from
 * Debian's `libdnnl2` (2.6). The tensors stay where they are, in the wasm
 * heap (NHWC activations, tfjs's [KH, KW, Ci, Co] filters). Each conv plan
 * lets oneDNN pick its own blocked layout (`any`) and reorders into and out of
 * it, and a pass then runs near the machine's best GEMM rate (the large dense
 * 3x3s as Winograd convolutions, {@linkcode winogradFits}); a 1x1 conv at
 * stride 1 is a matmul over the NHWC rows, with no reorders, its weight
 * gradients over many rows an inner product's ({@linkcode dnnlPointwise}). `deno task bench --only ort` measures both
 * against onnxruntime. Depthwise convs keep NHWC, where oneDNN has kernels of
 * their own, and the batch-norm gradient with its ReLU or ReLU6
 * ({@linkcode dnnlBatchNormBackward}) runs here too (`--only conv` times both).
 *
 * Optional: without the library {@linkcode dnnlAvailable} is false and the
 * onnxruntime kernels keep the convs. `deno task test` installs it (as root).
 * The C API is the one of oneDNN v2.6 (include/oneapi/dnnl/dnnl.h,
 * dnnl_types.h at v2.6.3): descriptors are structs the caller allocates,
 * dims are int64[12], dilation 0 means none.
 *
 * @example
 * ```ts
 * // A 1x1 conv: y = x * w per pixel, on oneDNN when the library is installed.
 * if (dnnlAvailable()) {
 *   const g = { x: [1, 1, 2, 2], w: [1, 1, 2, 1], y: [1, 1, 2, 1], strides: [1, 1] as [number, number],
 *     dilations: [1, 1] as [number, number], pads: [0, 0, 0, 0] as [number, number, number, number], depthwise: false };
 *   const y = new Float32Array(2);
 *   dnnlConv("fwd", g, { x: Float32Array.of(1, 2, 3, 4), w: Float32Array.of(10, 100), y });
 *   if (y.join() !== "210,430") throw new Error(`got ${y}`);
 * }
 * ```
 *
 * @module
 */
import type { ConvGeometry } from "./ort_graphs.ts";
import type { BnActivation } from "../custom_ops.ts";

/** The library: Debian's soname, or `SSD_ONEDNN_LIB` (another build, or a missing path to test without it). */
const LIB = Deno.env.get("SSD_ONEDNN_LIB") || "libdnnl.so.2";

/** What to install when the library is missing (printed where oneDNN is asked for by name). */
export const DNNL_INSTALL_HINT = "oneDNN is not installed: sudo apt-get install -y libdnnl2 (Debian 12)";

const SYMBOLS = {
  dnnl_engine_create: { parameters: ["buffer", "i32", "usize"], result: "i32" },
  dnnl_stream_create: { parameters: ["buffer", "pointer", "u32"], result: "i32" },
  dnnl_stream_wait: { parameters: ["pointer"], result: "i32" },
  dnnl_memory_desc_init_by_tag: { parameters: ["buffer", "i32", "buffer", "i32", "i32"], result: "i32" },
  dnnl_memory_desc_init_by_strides: { parameters: ["buffer", "i32", "buffer", "i32", "buffer"], result: "i32" },
  dnnl_memory_desc_equal: { parameters: ["pointer", "pointer"], result: "i32" },
  dnnl_dilated_convolution_forward_desc_init: {
    parameters: [
      "buffer",
      "i32",
      "i32",
      "buffer",
      "buffer",
      "pointer",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
    ],
    result: "i32",
  },
  dnnl_dilated_convolution_backward_data_desc_init: {
    parameters: ["buffer", "i32", "buffer", "buffer", "buffer", "buffer", "buffer", "buffer", "buffer"],
    result: "i32",
  },
  dnnl_dilated_convolution_backward_weights_desc_init: {
    parameters: ["buffer", "i32", "buffer", "buffer", "pointer", "buffer", "buffer", "buffer", "buffer", "buffer"],
    result: "i32",
  },
  dnnl_batch_normalization_forward_desc_init: { parameters: ["buffer", "i32", "buffer", "f32", "u32"], result: "i32" },
  dnnl_batch_normalization_backward_desc_init: {
    parameters: ["buffer", "i32", "buffer", "buffer", "f32", "u32"],
    result: "i32",
  },
  dnnl_eltwise_forward_desc_init: { parameters: ["buffer", "i32", "i32", "buffer", "f32", "f32"], result: "i32" },
  dnnl_eltwise_backward_desc_init: { parameters: ["buffer", "i32", "buffer", "buffer", "f32", "f32"], result: "i32" },
  dnnl_matmul_desc_init: { parameters: ["buffer", "buffer", "buffer", "pointer", "buffer"], result: "i32" },
  dnnl_inner_product_forward_desc_init: {
    parameters: ["buffer", "i32", "buffer", "buffer", "pointer", "buffer"],
    result: "i32",
  },
  dnnl_inner_product_backward_data_desc_init: {
    parameters: ["buffer", "buffer", "buffer", "buffer"],
    result: "i32",
  },
  dnnl_inner_product_backward_weights_desc_init: {
    parameters: ["buffer", "buffer", "buffer", "pointer", "buffer"],
    result: "i32",
  },
  dnnl_primitive_desc_create: { parameters: ["buffer", "buffer", "pointer", "pointer", "pointer"], result: "i32" },
  dnnl_primitive_desc_query_md: { parameters: ["pointer", "i32", "i32"], result: "pointer" },
  dnnl_primitive_desc_query: { parameters: ["pointer", "i32", "i32", "buffer"], result: "i32" },
  dnnl_reorder_primitive_desc_create: {
    parameters: ["buffer", "pointer", "pointer", "pointer", "pointer", "pointer"],
    result: "i32",
  },
  dnnl_primitive_create: { parameters: ["buffer", "pointer"], result: "i32" },
  dnnl_primitive_execute: { parameters: ["pointer", "pointer", "i32", "buffer"], result: "i32" },
  dnnl_memory_create: { parameters: ["buffer", "pointer", "pointer", "pointer"], result: "i32" },
  dnnl_memory_set_data_handle: { parameters: ["pointer", "pointer"], result: "i32" },
} as const;

// dnnl_types.h (v2.6.3)
const CPU = 1, IN_ORDER = 1, F32 = 3, FORWARD_TRAINING = 64, BACKWARD = 128, DIRECT = 1, WINOGRAD = 2;
const TAG_ANY = 1, TAG_X = 2, TAG_AB = 3, TAG_NHWC = 20, TAG_BA = 22, TAG_HWIO = 30;
const Q_SRC = 129, Q_DIFF_SRC = 130, Q_WEIGHTS = 131, Q_DIFF_WEIGHTS = 132, Q_DST = 133, Q_DIFF_DST = 134;
const ARG_SRC = 1, ARG_DST = 17, ARG_WEIGHTS = 33, ARG_BIAS = 41;
const ARG_DIFF_SRC = 129, ARG_DIFF_DST = 145, ARG_DIFF_WEIGHTS = 161;
const ARG_MEAN = 49, ARG_VARIANCE = 50, ARG_SCALE = 51, ARG_SHIFT = 52, ARG_DIFF_SCALE = 255, ARG_DIFF_SHIFT = 256;
const Q_IMPL_INFO = 8, Q_EXEC_ARG = 255, USE_SCALE_SHIFT = 0x8 | 0x10, RELU_USE_DST = 0x100, CLIP_V2_USE_DST = 0x106;
const STATUS = ["success", "out_of_memory", "invalid_arguments", "unimplemented", "iterator_ends", "runtime_error"];
/** sizeof(dnnl_memory_desc_t) is 696 and sizeof(dnnl_convolution_desc_t) 5976 in v2.6: room to spare. */
const MD_BYTES = 1024, OP_BYTES = 8192;

type Lib = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];
let state: { lib: Lib; engine: Deno.PointerValue; stream: Deno.PointerValue } | null | undefined;

function check(status: number, what: string): void {
  if (status !== 0) throw new Error(`oneDNN ${what}: ${STATUS[status] ?? `status ${status}`}`);
}

/** A handle written by a create call into `out`. */
function handle(out: BigUint64Array): Deno.PointerValue {
  return Deno.UnsafePointer.create(out[0]);
}

/**
 * Opens the library once. `threads` (default: OMP_NUM_THREADS, else 2) sets
 * its OpenMP threads, read when the library loads; idle ones spin briefly,
 * then sleep (OMP_WAIT_POLICY=ACTIVE with GOMP_SPINCOUNT=50000 unless set).
 */
export function dnnlAvailable(threads?: number): boolean {
  if (state !== undefined) return state !== null;
  try {
    if (!Deno.env.get("OMP_NUM_THREADS")) Deno.env.set("OMP_NUM_THREADS", String(threads ?? 2));
    // Idle OpenMP threads spin for a bounded while (GNU OpenMP's GOMP_SPINCOUNT), then sleep. Spinning without
    // end took the cores from wasm's and onnxruntime's threads; sleeping at once made each of a step's hundreds
    // of short calls wait for a wake-up (SSD300-MobileNetV2 batch 4: 1.10-1.21x slower in 5 paired runs).
    if (!Deno.env.get("OMP_WAIT_POLICY")) {
      Deno.env.set("OMP_WAIT_POLICY", "ACTIVE");
      if (!Deno.env.get("GOMP_SPINCOUNT")) Deno.env.set("GOMP_SPINCOUNT", "50000");
    }
    const lib = Deno.dlopen(LIB, SYMBOLS).symbols;
    const e = new BigUint64Array(1), s = new BigUint64Array(1);
    check(lib.dnnl_engine_create(e, CPU, 0n), "engine_create");
    check(lib.dnnl_stream_create(s, handle(e), IN_ORDER), "stream_create");
    state = { lib, engine: handle(e), stream: handle(s) };
  } catch {
    state = null;
  }
  return state !== null;
}

function lib(): NonNullable<typeof state> {
  if (!dnnlAvailable()) throw new Error(DNNL_INSTALL_HINT);
  return state!;
}

const dims = (...d: number[]) => BigInt64Array.from({ length: 12 }, (_, i) => BigInt(d[i] ?? 0));

function md(d: number[], tag: number): Uint8Array {
  const m = new Uint8Array(MD_BYTES);
  check(lib().lib.dnnl_memory_desc_init_by_tag(m, d.length, dims(...d), F32, tag), "memory_desc_init_by_tag");
  return m;
}

/** A memory descriptor of dims `d` with element strides `s` (any layout a tag cannot name). */
function mdStrided(d: number[], s: number[]): Uint8Array {
  const m = new Uint8Array(MD_BYTES);
  check(
    lib().lib.dnnl_memory_desc_init_by_strides(m, d.length, dims(...d), F32, dims(...s)),
    "memory_desc_init_by_strides",
  );
  return m;
}

/** One tensor argument of a plan: the user's memory (data handle set per call) and, if the primitive wants another layout, its own memory and the reorder between them. */
interface Arg {
  arg: number;
  user: Deno.PointerValue;
  inner?: Deno.PointerValue;
  reorder?: Deno.PointerValue;
  reorderArgs?: Uint8Array;
  output: boolean;
}

/** A primitive ready to run on any buffers of its geometry. */
interface Plan {
  prim: Deno.PointerValue;
  args: Record<string, Arg>;
  exec: Uint8Array;
  /** oneDNN's name for the implementation it chose, e.g. "jit_dw:avx512_core", or "ref:any" for its slow reference. */
  impl: string;
}

/** The name of the implementation behind a primitive descriptor. */
function implOf(pd: Deno.PointerValue): string {
  const out = new BigUint64Array(1);
  check(lib().lib.dnnl_primitive_desc_query(pd, Q_IMPL_INFO, 0, out), "primitive_desc_query");
  const p = Deno.UnsafePointer.create(out[0]);
  return p ? Deno.UnsafePointerView.getCString(p) : "";
}

/**
 * Whether oneDNN fell back to a reference implementation: plain loops, which machines without the vector
 * units its fast kernels need get for some primitives (depthwise convs, batch norm). Those stay off oneDNN.
 */
const isReference = (plan: Plan) => plan.impl.startsWith("ref");

/** The buffers of one call: x/w/y (and bias) forward, dy/w/dx for dX, x/dy/dw for dW. */
export type ConvBuffers = Partial<Record<"x" | "w" | "b" | "y" | "dy" | "dx" | "dw", Float32Array>>;

/** Which pass: forward, input gradient, filter gradient. */
export type ConvPass = "fwd" | "dx" | "dw";

const plans = new Map<string, Plan>();

function newHandle(f: (out: BigUint64Array) => number, what: string): Deno.PointerValue {
  const out = new BigUint64Array(1);
  check(f(out), what);
  return handle(out);
}

function primitiveDesc(op: Uint8Array, hint: Deno.PointerValue): Deno.PointerValue {
  const { lib: l, engine } = lib();
  return newHandle((o) => l.dnnl_primitive_desc_create(o, op, null, engine, hint), "primitive_desc_create");
}

/** The user's memory for `userMd`, and the primitive's own plus a reorder where its layout (`query`) differs. */
function argOf(pd: Deno.PointerValue, query: number, arg: number, userMd: Uint8Array, output: boolean, index = 0): Arg {
  const { lib: l, engine } = lib();
  const userPtr = Deno.UnsafePointer.of(userMd as Uint8Array<ArrayBuffer>);
  const user = newHandle((o) => l.dnnl_memory_create(o, userPtr, engine, null), "memory_create");
  const want = l.dnnl_primitive_desc_query_md(pd, query, index);
  if (!want) throw new Error(`oneDNN: no memory descriptor for query ${query}`);
  if (l.dnnl_memory_desc_equal(userPtr, want) === 1) return { arg, user, output };
  // DNNL_MEMORY_ALLOCATE: the library allocates (and keeps) the blocked copy.
  const all = Deno.UnsafePointer.create(0xffffffffffffffffn);
  const inner = newHandle((o) => l.dnnl_memory_create(o, want, engine, all), "memory_create");
  const [from, to] = output ? [want, userPtr] : [userPtr, want];
  const rpd = newHandle((o) => l.dnnl_reorder_primitive_desc_create(o, from, engine, to, engine, null), "reorder");
  const reorder = newHandle((o) => l.dnnl_primitive_create(o, rpd), "primitive_create");
  const reorderArgs = execArgs(output ? [[ARG_SRC, inner], [ARG_DST, user]] : [[ARG_SRC, user], [ARG_DST, inner]]);
  return { arg, user, inner, reorder, reorderArgs, output };
}

/** dnnl_exec_arg_t[]: { int arg; dnnl_memory_t memory; } of 16 bytes. */
function execArgs(pairs: [number, Deno.PointerValue][]): Uint8Array {
  const a = new BigUint64Array(pairs.length * 2);
  pairs.forEach(([arg, mem], i) => {
    a[2 * i] = BigInt(arg);
    a[2 * i + 1] = BigInt(Deno.UnsafePointer.value(mem));
  });
  return new Uint8Array(a.buffer);
}

/**
 * Multiply-adds per image below which a conv keeps the direct algorithm. The demo's one conv that would fit
 * (64 -> 64 channels at 20x20, 15M) ran 1.8x faster as Winograd, 1.5 ms of a 55 ms step at batch 16, but its
 * extra rounding moved the lockstep check against wasm (`deno task bench --only ort`): the worst of 10 focal-loss
 * steps from 1.7e-4 to 2.9e-3 relative in the gradients. VGG16's smallest fitting conv does 850M.
 */
export const WINOGRAD_MIN_MACS = 1e8;

let winograd = true, winogradMinMacs = WINOGRAD_MIN_MACS;

/**
 * Turns oneDNN's Winograd convolutions on (the default) or off for the convs they fit
 * ({@linkcode winogradFits}); off, every conv runs oneDNN's direct algorithm. `minMacs` moves the least work per
 * image a conv needs (default {@linkcode WINOGRAD_MIN_MACS}). Plans made before stay cached under their own
 * algorithm.
 */
export function dnnlWinograd(on: boolean, minMacs: number = WINOGRAD_MIN_MACS): void {
  winograd = on;
  winogradMinMacs = minMacs;
}

/**
 * Whether a conv runs as a Winograd convolution when they are on: dense 3x3 convs at stride 1, undilated, of
 * 64 or more channels in and out, over maps of 19x19 or more, and of at least `minMacs` multiply-adds per
 * image (default: as {@linkcode dnnlWinograd} set it). oneDNN 2.6's F(4x4, 3x3) kernels (`jit_wino_4x3`) do a
 * quarter of the direct algorithm's multiplies. On SSD300-VGG16's conv shapes at batch 4 they ran forward, input
 * and filter gradients 1.4-2.4x faster than the direct kernels (fwd + dX + dW 983 -> 499 ms over six layers, a
 * development run), at ~2-3.5x the direct algorithm's float32 rounding error (a relative RMS error of 7.6e-7
 * against 2.2e-7 over float64 sums; tests/dnnl_test.ts bounds it). Other shapes have no Winograd kernel.
 */
export function winogradFits(g: ConvGeometry, minMacs: number = winogradMinMacs): boolean {
  const [, oh, ow, co] = g.y, ci = g.x[3];
  return !g.depthwise && g.w[0] === 3 && g.w[1] === 3 && g.strides[0] === 1 && g.strides[1] === 1 &&
    g.dilations[0] === 1 && g.dilations[1] === 1 && ci >= 64 && co >= 64 && oh >= 19 && ow >= 19 &&
    oh * ow * ci * co * 9 >= minMacs;
}

function planOf(pass: ConvPass, g: ConvGeometry, bias: boolean): Plan {
  const wino = winograd && winogradFits(g);
  const key = `${pass}|${g.x}|${g.w}|${g.strides}|${g.dilations}|${g.pads}|${bias}|${g.depthwise}|${wino}`;
  const hit = plans.get(key);
  if (hit) return hit;
  if (wino) {
    try {
      return planWith(key, pass, g, bias, WINOGRAD);
    } catch {
      // No Winograd kernel for this shape on this CPU: the direct algorithm takes it, under the same key.
    }
  }
  return planWith(key, pass, g, bias, DIRECT);
}

/** The plan of one pass of the conv with convolution algorithm `alg` (DIRECT or WINOGRAD), cached under `key`. */
function planWith(key: string, pass: ConvPass, g: ConvGeometry, bias: boolean, alg: number): Plan {
  const { lib: l } = lib();
  const [n, h, w, ci] = g.x, [kh, kw] = g.w, [, oh, ow, co] = g.y;
  // User layouts: NHWC activations, tfjs filters [KH, KW, Ci, Co] (hwio); dims are logical N,C,H,W and O,I,H,W.
  // A depthwise filter [KH, KW, C, M] is grouped: G = C, O = M, I = 1 (strides of hwigo).
  const m = g.w[3];
  const wUser = g.depthwise
    ? mdStrided([ci, m, 1, kh, kw], [m, 1, ci * m, kw * ci * m, ci * m])
    : md([co, ci, kh, kw], TAG_HWIO);
  const wAny = g.depthwise ? md([ci, m, 1, kh, kw], TAG_ANY) : md([co, ci, kh, kw], TAG_ANY);
  const user = { x: md([n, ci, h, w], TAG_NHWC), w: wUser, y: md([n, co, oh, ow], TAG_NHWC) };
  // Depthwise convs keep NHWC: oneDNN's depthwise kernels read it directly, and letting it pick a blocked
  // layout cost reorders that took longer than the conv (MobileNetV2's at batch 4: 48.8 against 20.7 ms, a development run).
  // So do stems over an image's few channels: MobileNetV2's 3 -> 32 at 300 px, batch 4, took 2.5 ms forward and
  // filter gradient in NHWC against 3.7-4.4 ms with the reorders into and out of the blocked layout (DNNL_VERBOSE).
  const layout = g.depthwise || ci <= 4 ? TAG_NHWC : TAG_ANY;
  const any = { x: md([n, ci, h, w], layout), w: wAny, y: md([n, co, oh, ow], layout) };
  const b = bias ? md([co], TAG_X) : null;
  const strides = dims(...g.strides), dil = dims(g.dilations[0] - 1, g.dilations[1] - 1);
  const padL = dims(g.pads[0], g.pads[1]), padR = dims(g.pads[2], g.pads[3]);
  const fwdOp = new Uint8Array(OP_BYTES);
  check(
    l.dnnl_dilated_convolution_forward_desc_init(
      fwdOp,
      FORWARD_TRAINING,
      alg,
      any.x,
      any.w,
      b ? Deno.UnsafePointer.of(b as Uint8Array<ArrayBuffer>) : null,
      any.y,
      strides,
      dil,
      padL,
      padR,
    ),
    "convolution_forward_desc_init",
  );
  const fwd = primitiveDesc(fwdOp, null);
  let pd: Deno.PointerValue, args: Record<string, Arg>;
  if (pass === "fwd") {
    pd = fwd;
    args = {
      x: argOf(pd, Q_SRC, ARG_SRC, user.x, false),
      w: argOf(pd, Q_WEIGHTS, ARG_WEIGHTS, user.w, false),
      y: argOf(pd, Q_DST, ARG_DST, user.y, true),
    };
    if (b) args.b = argOf(pd, Q_WEIGHTS, ARG_BIAS, b, false, 1); // the bias is weights #1
  } else if (pass === "dx") {
    const op = new Uint8Array(OP_BYTES);
    check(
      l.dnnl_dilated_convolution_backward_data_desc_init(op, alg, any.x, any.w, any.y, strides, dil, padL, padR),
      "convolution_backward_data_desc_init",
    );
    pd = primitiveDesc(op, fwd);
    args = {
      dy: argOf(pd, Q_DIFF_DST, ARG_DIFF_DST, user.y, false),
      w: argOf(pd, Q_WEIGHTS, ARG_WEIGHTS, user.w, false),
      dx: argOf(pd, Q_DIFF_SRC, ARG_DIFF_SRC, user.x, true),
    };
  } else {
    const op = new Uint8Array(OP_BYTES);
    check(
      l.dnnl_dilated_convolution_backward_weights_desc_init(
        op,
        alg,
        any.x,
        any.w,
        null,
        any.y,
        strides,
        dil,
        padL,
        padR,
      ),
      "convolution_backward_weights_desc_init",
    );
    pd = primitiveDesc(op, fwd);
    args = {
      x: argOf(pd, Q_SRC, ARG_SRC, user.x, false),
      dy: argOf(pd, Q_DIFF_DST, ARG_DIFF_DST, user.y, false),
      dw: argOf(pd, Q_DIFF_WEIGHTS, ARG_DIFF_WEIGHTS, user.w, true),
    };
  }
  return planFrom(key, pd, args);
}

/** The primitive of `pd` with its arguments, cached under `key`. */
function planFrom(key: string, pd: Deno.PointerValue, args: Record<string, Arg>): Plan {
  const prim = newHandle((o) => lib().lib.dnnl_primitive_create(o, pd), "primitive_create");
  const exec = execArgs(Object.values(args).map((a) => [a.arg, a.inner ?? a.user]));
  const plan = { prim, args, exec, impl: implOf(pd) };
  plans.set(key, plan);
  return plan;
}

/**
 * Runs `plan` over `bufs` (one per argument, by name): points the user memories at them, reorders the inputs
 * into the primitive's layouts, executes, reorders the outputs back, and waits.
 */
function execute(plan: Plan, bufs: Partial<Record<string, Float32Array>>, what: string): void {
  const { lib: l, stream } = lib();
  const run = (prim: Deno.PointerValue, args: Uint8Array) =>
    check(l.dnnl_primitive_execute(prim, stream, args.byteLength / 16, args), "primitive_execute");
  const outs: Arg[] = [];
  for (const [name, a] of Object.entries(plan.args)) {
    const v = bufs[name];
    if (!v) throw new Error(`oneDNN ${what}: buffer ${name} missing`);
    check(l.dnnl_memory_set_data_handle(a.user, addressOf(v)), "memory_set_data_handle");
    if (a.output) outs.push(a);
    else if (a.reorder) run(a.reorder, a.reorderArgs!);
  }
  run(plan.prim, plan.exec);
  for (const a of outs) if (a.reorder) run(a.reorder, a.reorderArgs!);
  check(l.dnnl_stream_wait(stream), "stream_wait");
}

/** The address of `v`'s first element (views of the shared wasm heap included). */
function addressOf(v: Float32Array): Deno.PointerValue {
  const base = Deno.UnsafePointer.of(new Uint8Array(v.buffer as ArrayBuffer));
  return Deno.UnsafePointer.offset(base!, v.byteOffset);
}

/**
 * Runs one pass of the conv of geometry `g` on oneDNN over `bufs` (NHWC
 * activations, [KH, KW, Ci, Co] filters, a [Co] bias `b` forward), writing
 * the output buffer (`y`, `dx` or `dw`) whole. Plans are cached by geometry.
 */
export function dnnlConv(pass: ConvPass, g: ConvGeometry, bufs: ConvBuffers): void {
  execute(planOf(pass, g, pass === "fwd" && bufs.b !== undefined), bufs, `conv ${pass}`);
}

/** The implementation oneDNN runs for this pass of the conv of geometry `g` (plans it if needed). */
export function dnnlConvImpl(pass: ConvPass, g: ConvGeometry, bias = false): string {
  return planOf(pass, g, bias).impl;
}

/** Whether oneDNN has a fast (not reference) implementation for this pass of the conv. */
export function dnnlConvFast(pass: ConvPass, g: ConvGeometry, bias = false): boolean {
  try {
    return !isReference(planOf(pass, g, bias));
  } catch {
    return false; // no implementation at all: the caller's own kernel runs it
  }
}

/**
 * `c = a b` for row-major `a` [M, K], `b` [K, N] and `c` [M, N]: oneDNN's
 * float32 matmul (its GEMM). `transA` / `transB` read `a` stored as [K, M] /
 * `b` stored as [N, K] instead. The bench measures the machine's peak with it,
 * and 1x1 convs at stride 1 run on it (a matmul over NHWC rows). Plans are
 * cached by shape.
 */
export function dnnlMatmul(
  a: Float32Array,
  b: Float32Array,
  c: Float32Array,
  m: number,
  k: number,
  n: number,
  o: { transA?: boolean; transB?: boolean } = {},
): void {
  const { lib: l } = lib();
  const key = `matmul|${m}|${k}|${n}|${!!o.transA}|${!!o.transB}`;
  let plan = plans.get(key);
  if (!plan) {
    const mds = {
      a: md([m, k], o.transA ? TAG_BA : TAG_AB),
      b: md([k, n], o.transB ? TAG_BA : TAG_AB),
      c: md([m, n], TAG_AB),
    };
    const op = new Uint8Array(OP_BYTES);
    check(l.dnnl_matmul_desc_init(op, mds.a, mds.b, null, mds.c), "matmul_desc_init");
    const pd = primitiveDesc(op, null);
    const args = {
      a: argOf(pd, Q_SRC, ARG_SRC, mds.a, false),
      b: argOf(pd, Q_WEIGHTS, ARG_WEIGHTS, mds.b, false),
      c: argOf(pd, Q_DST, ARG_DST, mds.c, true),
    };
    plan = planFrom(key, pd, args);
  }
  execute(plan, { a, b, c }, "matmul");
}

/**
 * One pass of a 1x1 conv at stride 1 as a matmul over the R = N*H*W NHWC rows
 * (x [R, Ci], w [Ci, Co], y [R, Co]): forward y = x w, dX = dy wT, dW = xT dy.
 */
export function dnnlPointwise(pass: ConvPass, g: ConvGeometry, bufs: ConvBuffers): void {
  const rows = g.x[0] * g.x[1] * g.x[2], ci = g.x[3], co = g.y[3];
  if (pass === "fwd") dnnlMatmul(bufs.x!, bufs.w!, bufs.y!, rows, ci, co);
  else if (pass === "dx" && rows >= IP_MIN_ROWS) {
    dnnlInnerProductGradient("dx", bufs.dy!, bufs.w!, bufs.dx!, rows, ci, co);
  } else if (pass === "dx") dnnlMatmul(bufs.dy!, bufs.w!, bufs.dx!, rows, co, ci, { transB: true });
  else if (rows >= IP_MIN_ROWS) dnnlInnerProductGradient("dw", bufs.x!, bufs.dy!, bufs.dw!, rows, ci, co);
  else dnnlMatmul(bufs.x!, bufs.dy!, bufs.dw!, ci, rows, co, { transA: true });
}

/**
 * From this many rows on, a 1x1 conv's gradients run as an inner product's ({@linkcode
 * dnnlInnerProductGradient}). In the MobileNetV2 step the weight gradient won on every shape from 1444
 * rows up (1.1-1.9x) and tied on 400 (a DNNL_VERBOSE profile of one step).
 */
const IP_MIN_ROWS = 1024;

/**
 * A gradient of an inner product (a fully connected layer) over a batch of `m` rows, `k` inputs and `n`
 * outputs, whose weights are stored [K, N] as a 1x1 conv's filter: `"dw"`: dw = aT b for a = x [M, K],
 * b = dy [M, N] into out = dw [K, N]; `"dx"`: dx = a wT for a = dy [M, N], b = w [K, N] into out = dx
 * [M, K]. oneDNN's GEMM-based kernels for these ran faster than the same products as matmuls: the weight
 * gradient 1.3-2.6x alone on SSD300-MobileNetV2's 1x1 convs (up to 90000 rows of 16-576 channels),
 * 1.1-1.9x within the step; dx 1.18x over the same shapes alone. Plans are cached by shape.
 */
export function dnnlInnerProductGradient(
  pass: "dw" | "dx",
  a: Float32Array,
  b: Float32Array,
  out: Float32Array,
  m: number,
  k: number,
  n: number,
): void {
  const { lib: l } = lib();
  const key = `ip${pass}|${m}|${k}|${n}`;
  let plan = plans.get(key);
  if (!plan) {
    // The layer's weights are [N, K] (out, in); stored in-major ("io") they are the filter [K, N] as it is.
    const mds = { x: md([m, k], TAG_AB), w: md([n, k], TAG_BA), y: md([m, n], TAG_AB) };
    const fwd = new Uint8Array(OP_BYTES), back = new Uint8Array(OP_BYTES);
    check(l.dnnl_inner_product_forward_desc_init(fwd, FORWARD_TRAINING, mds.x, mds.w, null, mds.y), "ip_desc_init");
    check(
      pass === "dw"
        ? l.dnnl_inner_product_backward_weights_desc_init(back, mds.x, mds.w, null, mds.y)
        : l.dnnl_inner_product_backward_data_desc_init(back, mds.x, mds.w, mds.y),
      "ip_desc_init",
    );
    const pd = primitiveDesc(back, primitiveDesc(fwd, null));
    const args = pass === "dw"
      ? {
        a: argOf(pd, Q_SRC, ARG_SRC, mds.x, false),
        b: argOf(pd, Q_DIFF_DST, ARG_DIFF_DST, mds.y, false),
        out: argOf(pd, Q_DIFF_WEIGHTS, ARG_DIFF_WEIGHTS, mds.w, true),
      }
      : {
        a: argOf(pd, Q_DIFF_DST, ARG_DIFF_DST, mds.y, false),
        b: argOf(pd, Q_WEIGHTS, ARG_WEIGHTS, mds.w, false),
        out: argOf(pd, Q_DIFF_SRC, ARG_DIFF_SRC, mds.x, true),
      };
    plan = planFrom(key, pd, args);
  }
  execute(plan, { a, b, out }, `inner product ${pass}`);
}

/**
 * The buffers of a batch-norm gradient: the forward's input x, output y (after the activation), batch mean
 * and biased variance, gamma, beta and the output gradient dy in; dx, dgamma, dbeta out.
 */
export type BatchNormBackwardBuffers = Record<
  "x" | "y" | "dy" | "mean" | "variance" | "gamma" | "beta" | "dx" | "dgamma" | "dbeta",
  Float32Array
>;

/** Channels-last `shape` as oneDNN's logical N, C, H, W (other ranks as P rows of C). */
function bnDims(shape: number[]): number[] {
  const c = shape[shape.length - 1];
  if (shape.length === 4) return [shape[0], c, shape[1], shape[2]];
  return [shape.slice(0, -1).reduce((a, b) => a * b, 1), c, 1, 1];
}

/** The backward plans of one batch norm + activation: the activation's (none when linear), then batch norm's. */
interface BnPlans {
  act: Plan | null;
  bn: Plan;
}

const bnPlans = new Map<string, BnPlans>();

function bnPlanOf(shape: number[], eps: number, act: BnActivation): BnPlans {
  const key = `bn|${shape}|${eps}|${act}`;
  const hit = bnPlans.get(key);
  if (hit) return hit;
  const { lib: l } = lib();
  const data = md(bnDims(shape), TAG_NHWC), vec = md([shape[shape.length - 1]], TAG_X);
  const argsOf = (pd: Deno.PointerValue, spec: [string, number, Uint8Array, boolean][]) =>
    Object.fromEntries(spec.map(([name, arg, m, out]) => [name, argOf(pd, Q_EXEC_ARG, arg, m, out, arg)]));
  // A backward primitive is made against its forward one (the hint), which never runs here.
  const fwdOp = new Uint8Array(OP_BYTES), backOp = new Uint8Array(OP_BYTES);
  check(l.dnnl_batch_normalization_forward_desc_init(fwdOp, FORWARD_TRAINING, data, eps, USE_SCALE_SHIFT), "bnorm");
  check(l.dnnl_batch_normalization_backward_desc_init(backOp, BACKWARD, data, data, eps, USE_SCALE_SHIFT), "bnorm");
  const back = primitiveDesc(backOp, primitiveDesc(fwdOp, null));
  // dx is read and written in place when the activation's gradient went there first (dxIn).
  const plans: BnPlans = {
    act: null,
    bn: planFrom(
      `${key}|bn`,
      back,
      argsOf(back, [
        ["x", ARG_SRC, data, false],
        ["dxIn", ARG_DIFF_DST, data, false],
        ["mean", ARG_MEAN, vec, false],
        ["variance", ARG_VARIANCE, vec, false],
        ["gamma", ARG_SCALE, vec, false],
        ["beta", ARG_SHIFT, vec, false],
        ["dx", ARG_DIFF_SRC, data, true],
        ["dgamma", ARG_DIFF_SCALE, vec, true],
        ["dbeta", ARG_DIFF_SHIFT, vec, true],
      ]),
    ),
  };
  if (act !== "linear") {
    // The "use dst" forms pass the gradient where 0 < y < 6 (ReLU6) or 0 < y (ReLU): the same mask as the
    // pre-activation's, read off y, which the next layer keeps as its input anyway.
    const alg = act === "relu6" ? CLIP_V2_USE_DST : RELU_USE_DST, hi = act === "relu6" ? 6 : 0;
    const eOp = new Uint8Array(OP_BYTES), eBackOp = new Uint8Array(OP_BYTES);
    check(l.dnnl_eltwise_forward_desc_init(eOp, FORWARD_TRAINING, alg, data, 0, hi), "eltwise");
    check(l.dnnl_eltwise_backward_desc_init(eBackOp, alg, data, data, 0, hi), "eltwise");
    const eBack = primitiveDesc(eBackOp, primitiveDesc(eOp, null));
    plans.act = planFrom(
      `${key}|act`,
      eBack,
      argsOf(eBack, [
        ["y", ARG_DST, data, false],
        ["dy", ARG_DIFF_DST, data, false],
        ["dx", ARG_DIFF_SRC, data, true],
      ]),
    );
  }
  bnPlans.set(key, plans);
  return plans;
}

/** Whether oneDNN has fast (not reference) implementations for this batch-norm gradient (plans it if needed). */
export function dnnlBatchNormBackwardFast(shape: number[], eps: number, act: BnActivation): boolean {
  try {
    const p = bnPlanOf(shape, eps, act);
    return !isReference(p.bn) && !(p.act && isReference(p.act));
  } catch {
    return false; // no implementation at all: the caller's own kernel runs it
  }
}

/**
 * The gradient of training-mode batch norm (statistics over every axis but the last of channels-last
 * `shape`) followed by `act`, on oneDNN: the activation's mask applied to dy into dx, then batch norm's
 * backward from there, in place, with dgamma and dbeta. Plans are cached by shape, eps and activation.
 *
 * @example
 * ```ts
 * // One channel, x = 1, 3: mean 2, variance 1; y = x - mean; dy = 1, 0 gives dbeta 1, dgamma -1.
 * if (dnnlAvailable()) {
 *   const f = (...v: number[]) => Float32Array.from(v), dx = f(0, 0), dgamma = f(0), dbeta = f(0);
 *   dnnlBatchNormBackward([2, 1], 0, "linear", {
 *     x: f(1, 3), y: f(-1, 1), dy: f(1, 0), mean: f(2), variance: f(1), gamma: f(1), beta: f(0), dx, dgamma, dbeta,
 *   });
 *   if (dbeta[0] !== 1 || dgamma[0] !== -1 || dx.join() !== "0,0") throw new Error(`${dx} ${dgamma} ${dbeta}`);
 * }
 * ```
 */
export function dnnlBatchNormBackward(
  shape: number[],
  eps: number,
  act: BnActivation,
  bufs: BatchNormBackwardBuffers,
): void {
  const p = bnPlanOf(shape, eps, act);
  if (p.act) execute(p.act, { y: bufs.y, dy: bufs.dy, dx: bufs.dx }, "batch norm activation gradient");
  execute(p.bn, { ...bufs, dxIn: p.act ? bufs.dx : bufs.dy }, "batch norm gradient");
}
