/**
 * The SIMD kernels of lib/simd_kernels.wat, instantiated inside the tfjs wasm
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
  dw_input_grad(
    dy: number,
    w: number,
    dx: number,
    rowTab: number,
    colTab: number,
    n: number,
    h: number,
    wd: number,
    c: number,
    oh: number,
    ow: number,
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
}

interface WasmBackendLike {
  wasm: {
    asm?: { memory?: WebAssembly.Memory };
    HEAPU8: Uint8Array;
    _malloc(n: number): number;
    _free(p: number): void;
  };
  dataIdMap: { get(id: unknown): { memoryOffset: number } | undefined };
}

let compiled: WebAssembly.Module | null = null;
const bound = new WeakMap<object, SimdKernels | null>();

/**
 * The kernels for `backend` (a tfjs wasm backend), or null when it is not one,
 * its memory is shared (the threaded build) or the engine lacks wasm SIMD.
 */
export function simdKernels(backend: unknown): SimdKernels | null {
  const b = backend as WasmBackendLike;
  if (!b || typeof b !== "object" || !b.wasm?.asm?.memory) return null;
  if (bound.has(b)) return bound.get(b)!;
  let k: SimdKernels | null = null;
  const memory = b.wasm.asm.memory;
  if (!(typeof SharedArrayBuffer !== "undefined" && memory.buffer instanceof SharedArrayBuffer)) {
    try {
      compiled ??= new WebAssembly.Module(Uint8Array.from(atob(SIMD_KERNELS_WASM), (ch) => ch.charCodeAt(0)));
      const inst = new WebAssembly.Instance(compiled, { env: { memory } });
      k = {
        fns: inst.exports as unknown as SimdExports,
        offset: (info) => b.dataIdMap.get(info.dataId)!.memoryOffset >>> 0,
        alloc: (bytes) => b.wasm._malloc(bytes) >>> 0,
        free: (p) => b.wasm._free(p),
        heap: () => memory.buffer as ArrayBuffer,
      };
    } catch {
      k = null; // no wasm SIMD here: the callers' JavaScript loops take over
    }
  }
  bound.set(b, k);
  return k;
}
