/**
 * The SIMD kernels of lib/engine/simd_kernels.wat, instantiated inside the tfjs wasm
 * backend's memory so that they read and write its tensors in place.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs-core";
 * import { setBackend } from "./backend.ts";
 * await setBackend("wasm");
 * const k = simdKernels(tf.backend());
 * if (!k) throw new Error("no wasm SIMD kernels");
 * const scratch = k.alloc(16);
 * k.free(scratch);
 * ```
 *
 * @module
 */
import type * as tf from "@tensorflow/tfjs-core";
import { SIMD_KERNELS_WASM } from "./simd_kernels_wasm.ts";
import { shareImportedMemory } from "./shared_heap.ts";
import { KernelThreads, splitRange } from "./simd_threads.ts";

/** The module's exports (pointers are byte offsets in the wasm heap). */
export interface SimdExports {
  moments(x: number, p: number, c: number, shift: number, acc: number): void;
  bn_apply(
    x: number,
    y: number,
    n: number,
    c: number,
    mean: number,
    scale: number,
    beta: number,
    lo: number,
    hi: number,
  ): void;
  bn_grad_sums(
    dy: number,
    x: number,
    p: number,
    c: number,
    mean: number,
    scale: number,
    beta: number,
    hi: number,
    masked: number,
    acc: number,
  ): void;
  bn_grad_dx(
    dy: number,
    x: number,
    dx: number,
    n: number,
    c: number,
    mean: number,
    scale: number,
    beta: number,
    k: number,
    a: number,
    b: number,
    hi: number,
    masked: number,
  ): void;
  dw_filter_grad(
    x: number,
    dy: number,
    part: number,
    acc: number,
    n: number,
    h: number,
    w: number,
    c: number,
    oh: number,
    ow: number,
    kh: number,
    kw: number,
    sh: number,
    sw: number,
    dh: number,
    dw: number,
    top: number,
    left: number,
  ): void;
  dw_gather(
    src: number,
    w: number,
    dst: number,
    rowTab: number,
    colTab: number,
    n: number,
    h: number,
    wd: number,
    c: number,
    sh: number,
    sw: number,
    kh: number,
    kw: number,
  ): void;
  max_pool_grad(
    x: number,
    dy: number,
    dx: number,
    n: number,
    h: number,
    w: number,
    c: number,
    oh: number,
    ow: number,
    kh: number,
    kw: number,
    sh: number,
    sw: number,
    top: number,
    left: number,
    tiled: number,
  ): void;
  relu_grad(dy: number, x: number, dx: number, n: number, hi: number): void;
  momentum(
    w: number,
    v: number,
    g: number,
    wo: number,
    vo: number,
    n: number,
    m: number,
    wd: number,
    scale: number,
    lr: number,
    sens: number,
    flags: number,
  ): void;
  pointwise(x: number, w: number, y: number, rows: number, k: number, co: number): void;
  focal(x: number, z: number, g: number, n: number, alpha: number, acc: number): void;
}

/** The kernels bound to one backend's heap, with its allocator. */
export interface SimdKernels {
  fns: SimdExports;
  /** Heap offset of a tensor's data. */
  offset(info: tf.TensorInfo): number;
  /** Scratch memory from the backend's allocator (free it; views made before may detach). */
  alloc(bytes: number): number;
  free(ptr: number): void;
  /** A view of the heap now (make it after the last allocation). */
  heap(): ArrayBuffer;
  /** Threads a call may split over (1 unless the heap is shared and {@linkcode setSimdThreads} started more). */
  readonly threads: number;
  /**
   * Runs `fns[name]` once per argument list, each on its own thread, and returns
   * when all are done. The lists must touch disjoint outputs.
   */
  parallel(name: keyof SimdExports, calls: number[][]): void;
  /**
   * Splits `rows` rows of `rowFloats` floats each over the threads, boundaries
   * a multiple of `align` rows; one part below {@linkcode MIN_SPLIT_FLOATS}.
   */
  split(rows: number, rowFloats: number, align?: number): [number, number][];
}

/** Below this many floats a call runs on one thread: a round trip to a worker costs ~30 us. */
export const MIN_SPLIT_FLOATS = 1 << 16;

interface WasmBackendLike {
  wasm: {
    asm?: { memory?: WebAssembly.Memory };
    HEAPU8: Uint8Array;
    _malloc(n: number): number;
    _free(p: number): void;
  };
  dataIdMap: { get(id: unknown): { memoryOffset: number } | undefined };
}

/** Compiled modules: for an unshared heap, and for a shared one (its import made shared). */
const compiled: { plain?: WebAssembly.Module; shared?: WebAssembly.Module } = {};
const bound = new WeakMap<object, SimdKernels | null>();
const pools = new WeakMap<object, KernelThreads>();
/** Pages of the largest wasm32 memory: the shared import's maximum, which any heap's fits under. */
const MAX_PAGES = 65536;

function simdModule(shared: boolean): WebAssembly.Module {
  const bytes = () => Uint8Array.from(atob(SIMD_KERNELS_WASM), (ch) => ch.charCodeAt(0));
  if (!shared) return compiled.plain ??= new WebAssembly.Module(bytes());
  return compiled.shared ??= new WebAssembly.Module(shareImportedMemory(bytes(), MAX_PAGES));
}

/**
 * The kernels for `backend` (a tfjs wasm backend), or null when it is not one
 * or the engine lacks wasm SIMD.
 */
export function simdKernels(backend: unknown): SimdKernels | null {
  const b = backend as WasmBackendLike;
  if (!b || typeof b !== "object" || !b.wasm?.asm?.memory) return null;
  if (bound.has(b)) return bound.get(b)!;
  let k: SimdKernels | null = null;
  const memory = b.wasm.asm.memory;
  const shared = typeof SharedArrayBuffer !== "undefined" && memory.buffer instanceof SharedArrayBuffer;
  try {
    const fns = new WebAssembly.Instance(simdModule(shared), { env: { memory } }).exports as unknown as SimdExports;
    k = {
      fns,
      offset: (info) => b.dataIdMap.get(info.dataId)!.memoryOffset >>> 0,
      alloc: (bytes) => b.wasm._malloc(bytes) >>> 0,
      free: (p) => b.wasm._free(p),
      heap: () => memory.buffer as ArrayBuffer,
      get threads() {
        return pools.get(b)?.size ?? 1;
      },
      parallel(name, calls) {
        const f = fns[name] as (...a: number[]) => void;
        const pool = pools.get(b);
        if (!pool || calls.length <= 1) return calls.forEach((a) => f(...a));
        pool.run(name, calls, (a) => f(...a));
      },
      split(rows, rowFloats, align = 1) {
        const n = rows * rowFloats < MIN_SPLIT_FLOATS ? 1 : this.threads;
        return splitRange(rows, n, align);
      },
    };
  } catch (e) {
    // No wasm SIMD in this engine (or the module would not instantiate): the callers' slower JavaScript loops
    // take over. Said once, with the reason, since every training step gets slower.
    k = null;
    unavailable = e instanceof Error ? e.message : String(e);
    console.error(`note: the SIMD kernels are unavailable (${unavailable}); using the JavaScript fallbacks`);
  }
  bound.set(b, k);
  return k;
}

let unavailable: string | null = null;

/** Why the SIMD kernels could not be instantiated, or null when they were (or were not tried). */
export function simdKernelsUnavailable(): string | null {
  return unavailable;
}

/**
 * Lets the SIMD kernels of `backend` split calls over `threads` threads (the
 * caller's included) when its heap is shared (shared_heap.ts); returns the
 * threads they will use, 1 on an unshared heap.
 */
export async function setSimdThreads(backend: unknown, threads: number): Promise<number> {
  const k = simdKernels(backend);
  const memory = (backend as WasmBackendLike | null)?.wasm?.asm?.memory;
  if (!k || !memory || !(memory.buffer instanceof SharedArrayBuffer)) return 1;
  let pool = pools.get(backend as object);
  if (!pool) {
    if (threads <= 1) return 1;
    const names = Object.keys(k.fns).filter((n) =>
      typeof (k.fns as unknown as Record<string, unknown>)[n] === "function"
    );
    pool = new KernelThreads(memory, simdModule(true), names);
    pools.set(backend as object, pool);
  }
  await pool.resize(threads);
  return pool.size;
}
