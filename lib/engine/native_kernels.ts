/**
 * The batch-norm passes of native_kernels.c (and the focal loss, the
 * optimizer's updates, channel sums and adds), compiled on first use with the
 * system's C compiler (`cc`, Debian's `gcc`) and loaded through Deno's FFI,
 * for the onnxruntime backend when oneDNN runs its convolutions.
 *
 * Why native: both run on GNU OpenMP's one thread team. The wasm kernel
 * threads (simd_threads.ts) would share the two cores with oneDNN's spinning
 * OpenMP threads, and there a call's hand-off to a worker cost ~100 us. With
 * the passes on the same team, and in 512-bit vectors where the CPU has them,
 * the SSD300-MobileNetV2 step runs faster (`deno task bench --only ort`).
 *
 * The results are bit for bit those of the SIMD kernels (tests/native_kernels_test.ts):
 * the same float32 operations in the same order, no FMA contraction, the
 * same parts of rows for the float64 totals. So the wasm and onnxruntime
 * backends keep identical batch-norm statistics and gradients.
 *
 * The shared library is cached under `$XDG_CACHE_HOME/ssd-workbench` (else
 * `~/.cache/ssd-workbench`, or `SSD_NATIVE_CACHE`), keyed by the source, the
 * flags and the CPU. Without a compiler (or with `SSD_NATIVE=0`) batch norm
 * stays where it ran before: the forward on the SIMD kernels, the gradient on
 * oneDNN (batch_norm_kernel.ts).
 *
 * @example
 * ```ts
 * import { nativeKernels } from "./native_kernels.ts";
 * const k = nativeKernels(); // null without a C compiler
 * if (k) {
 *   const x = Float32Array.of(1, 3, 5, 7), y = new Float32Array(4);
 *   const f = (...v: number[]) => Float32Array.of(...v);
 *   // one channel: mean 4, scale 0.5, beta 0, clipped to [0, 6]
 *   k.bnApply(k.address(x), k.address(y), 4, 1, k.address(f(4)), k.address(f(0.5)), k.address(f(0)), 0, 6);
 *   if (y.join() !== "0,0,0.5,1.5") throw new Error(`${y}`);
 * }
 * ```
 *
 * @module
 */
import * as fs from "node:fs";

/** The Debian packages that build the kernels: a C compiler with OpenMP, and the C library's headers. */
export const NATIVE_PACKAGES = "gcc libc6-dev";

const SOURCE = new URL("./native_kernels.c", import.meta.url);
/** -ffp-contract=off: no fused multiply-adds, so every operation rounds as wasm's do. */
const FLAGS = ["-O3", "-march=native", "-fopenmp", "-ffp-contract=off", "-fno-math-errno", "-shared", "-fPIC"];

const SYMBOLS = {
  ssd_moments: {
    parameters: ["pointer", "i32", "pointer", "pointer", "buffer", "buffer", "i32"],
    result: "void",
  },
  ssd_bn_apply: {
    parameters: ["pointer", "pointer", "i32", "i32", "pointer", "pointer", "pointer", "f32", "f32"],
    result: "void",
  },
  ssd_bn_grad_sums: {
    parameters: [
      "pointer",
      "pointer",
      "i32",
      "pointer",
      "pointer",
      "pointer",
      "f32",
      "i32",
      "pointer",
      "buffer",
      "buffer",
      "i32",
    ],
    result: "void",
  },
  ssd_bn_grad_dx: {
    parameters: [
      "pointer",
      "pointer",
      "pointer",
      "i32",
      "i32",
      "pointer",
      "pointer",
      "pointer",
      "pointer",
      "pointer",
      "pointer",
      "f32",
      "i32",
    ],
    result: "void",
  },
  ssd_focal: {
    parameters: ["pointer", "pointer", "pointer", "f32", "pointer", "buffer", "buffer", "i32"],
    result: "void",
  },
  ssd_momentum_many: {
    parameters: ["pointer", "i32", "buffer", "buffer", "buffer", "buffer"],
    result: "void",
  },
  ssd_channel_sums: { parameters: ["pointer", "i32", "i32", "pointer"], result: "void" },
  ssd_add: { parameters: ["pointer", "pointer", "pointer", "i64"], result: "void" },
} as const;

type Ptr = Deno.PointerValue;

/** The compiled passes; pointers are addresses (see `address`), `parts` lists [first row, rows] pairs. */
export interface NativeKernels {
  /** Calls made so far (tests check that a path ran here). */
  calls: number;
  /** The address of `v`'s first element (views of the shared wasm heap included). */
  address(v: ArrayBufferView): Ptr;
  /** `at` bytes past `base`. */
  offset(base: Ptr, at: number): Ptr;
  /** simd_kernels.wat's `moments` over each part, in parallel; part i's totals at acc + 16 c i bytes. */
  moments(x: Ptr, c: number, shift: Ptr, acc: Ptr, parts: [number, number][]): void;
  /** simd_kernels.wat's `bn_apply` over `rows` rows of `c` channels. */
  bnApply(x: Ptr, y: Ptr, rows: number, c: number, mean: Ptr, scale: Ptr, beta: Ptr, lo: number, hi: number): void;
  /** simd_kernels.wat's `bn_grad_sums` over each part, as `moments`. */
  bnGradSums(
    dy: Ptr,
    x: Ptr,
    c: number,
    v: { mean: Ptr; scale: Ptr; beta: Ptr; hi: number; masked: boolean },
    acc: Ptr,
    parts: [number, number][],
  ): void;
  /** simd_kernels.wat's `bn_grad_dx` over `rows` rows. */
  bnGradDx(
    dy: Ptr,
    x: Ptr,
    dx: Ptr,
    rows: number,
    c: number,
    v: { mean: Ptr; scale: Ptr; beta: Ptr; k: Ptr; a: Ptr; b: Ptr; hi: number; masked: boolean },
  ): void;
  /** simd_kernels.wat's `focal` over each part (in groups of four floats); part i's lane sums at acc + 32 i bytes. */
  focal(x: Ptr, z: Ptr, g: Ptr, alpha: number, acc: Ptr, parts: [number, number][]): void;
  /**
   * simd_kernels.wat's `momentum` for many tensors in one call: tensor k's w, v, g, w', v' at float
   * offsets `at[5k..5k+4]` of `heap`, `sizes[k]` floats, constants m, wd, scale, lr, sens at
   * `consts[5k..5k+4]`, `flags[k]` as the SIMD kernel's.
   */
  momentumMany(heap: Ptr, at: Uint32Array, sizes: Int32Array, consts: Float32Array, flags: Int32Array): void;
  /** Per-channel sums of x [rows, c] into out [c], each channel's rows added in order (tfjs-backend-wasm's Sum). */
  channelSums(x: Ptr, rows: number, c: number, out: Ptr): void;
  /** out = a + b over n floats. */
  add(a: Ptr, b: Ptr, out: Ptr, n: number): void;
}

let loaded: NativeKernels | null | undefined;
let why = "";

/** Why the native kernels are not in use ("" when they are, or were not asked for yet). */
export function nativeKernelsUnavailable(): string {
  return why;
}

/** A short hash of `text` (FNV-1a, 32 bits, hex). */
function hashOf(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return h.toString(16).padStart(8, "0");
}

/** The CPU's model and feature flags (what -march=native compiles for), or "" where /proc has none. */
function cpuKey(): string {
  try {
    const info = Deno.readTextFileSync("/proc/cpuinfo");
    return (info.match(/^model name.*$/m)?.[0] ?? "") + (info.match(/^flags.*$/m)?.[0] ?? "");
  } catch {
    return "";
  }
}

function cacheDir(): string {
  const env = (k: string) => Deno.env.get(k);
  return env("SSD_NATIVE_CACHE") ||
    `${env("XDG_CACHE_HOME") || `${env("HOME") || Deno.cwd()}/.cache`}/ssd-workbench`;
}

/** Compiles native_kernels.c into the cache (once per source, flags and CPU) and returns the library's path. */
function build(): string {
  const source = fs.readFileSync(SOURCE, "utf8");
  const dir = cacheDir();
  const path = `${dir}/native_kernels-${hashOf(source + FLAGS.join(" ") + cpuKey())}.so`;
  if (fs.existsSync(path)) return path;
  fs.mkdirSync(dir, { recursive: true });
  // Replica threads of one process may build at once: each writes its own file, then renames it into place.
  const tmp = `${path}.${crypto.randomUUID()}.tmp`;
  const cc = Deno.env.get("CC") || "cc";
  const out = new Deno.Command(cc, { args: [...FLAGS, "-o", tmp, SOURCE.pathname], stderr: "piped" }).outputSync();
  if (!out.success) throw new Error(`${cc} failed: ${new TextDecoder().decode(out.stderr).slice(0, 400)}`);
  fs.renameSync(tmp, path); // the same bytes as any other build of this key
  return path;
}

/** The parts' first rows and row counts (reused between calls: a step makes hundreds). */
const starts = new Int32Array(64), counts = new Int32Array(64);

function setParts(parts: [number, number][]): void {
  if (parts.length > starts.length) throw new Error(`${parts.length} parts, at most ${starts.length}`);
  parts.forEach(([first, rows], i) => {
    starts[i] = first;
    counts[i] = rows;
  });
}

/**
 * The native kernels, compiled and loaded on first call; null without a C
 * compiler or OpenMP (the reason in {@linkcode nativeKernelsUnavailable}), or
 * with `SSD_NATIVE=0`. Load oneDNN first (dnnl.ts), which sets the OpenMP
 * environment both share.
 */
export function nativeKernels(): NativeKernels | null {
  if (loaded !== undefined) return loaded;
  loaded = null;
  if (Deno.env.get("SSD_NATIVE") === "0") {
    why = "SSD_NATIVE=0";
    return null;
  }
  try {
    const s = Deno.dlopen(build(), SYMBOLS).symbols;
    const address = (v: ArrayBufferView) =>
      Deno.UnsafePointer.offset(Deno.UnsafePointer.of(new Uint8Array(v.buffer as ArrayBuffer))!, v.byteOffset);
    const offset = (base: Ptr, at: number) => Deno.UnsafePointer.offset(base!, at);
    loaded = {
      calls: 0,
      address,
      offset,
      moments(x, c, shift, acc, parts) {
        this.calls++;
        setParts(parts);
        s.ssd_moments(x, c, shift, acc, starts, counts, parts.length);
      },
      bnApply(x, y, rows, c, mean, scale, beta, lo, hi) {
        this.calls++;
        s.ssd_bn_apply(x, y, rows, c, mean, scale, beta, lo, hi);
      },
      bnGradSums(dy, x, c, v, acc, parts) {
        this.calls++;
        setParts(parts);
        const m = v.masked ? 1 : 0;
        s.ssd_bn_grad_sums(dy, x, c, v.mean, v.scale, v.beta, v.hi, m, acc, starts, counts, parts.length);
      },
      bnGradDx(dy, x, dx, rows, c, v) {
        this.calls++;
        s.ssd_bn_grad_dx(dy, x, dx, rows, c, v.mean, v.scale, v.beta, v.k, v.a, v.b, v.hi, v.masked ? 1 : 0);
      },
      focal(x, z, g, alpha, acc, parts) {
        this.calls++;
        setParts(parts);
        s.ssd_focal(x, z, g, alpha, acc, starts, counts, parts.length);
      },
      momentumMany(heap, at, sizes, consts, flags) {
        this.calls++;
        s.ssd_momentum_many(heap, sizes.length, at, sizes, consts, flags);
      },
      channelSums(x, rows, c, out) {
        this.calls++;
        s.ssd_channel_sums(x, rows, c, out);
      },
      add(a, b, out, n) {
        this.calls++;
        s.ssd_add(a, b, out, BigInt(n));
      },
    };
    why = "";
  } catch (e) {
    why = e instanceof Error ? e.message : String(e);
    console.error(
      `note: the native batch-norm kernels did not build (${why.split("\n")[0]}); batch norm stays on the SIMD ` +
        `kernels and oneDNN. To build them: sudo apt-get install -y --no-install-recommends ${NATIVE_PACKAGES}`,
    );
  }
  return loaded;
}
