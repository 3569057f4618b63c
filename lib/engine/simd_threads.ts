/**
 * Worker threads that run the SIMD kernels on the shared wasm heap
 * (shared_heap.ts), so that one kernel call can split its rows over the cores.
 * The kernels it splits (batch norm, ReLU, depthwise and max-pool gradients)
 * stream memory: one thread reaches ~10 GB/s here, two ~1.5-1.9x that.
 *
 * Each worker has a control block: a state word, the export's index, the
 * argument count and up to {@linkcode MAX_ARGS} float64 arguments. The caller
 * posts a call by writing the block and flipping the state, runs its own part,
 * then waits on the state (~30 us for a round trip here).
 *
 * @example
 * ```ts
 * import { splitRange } from "./simd_threads.ts";
 * // 100 rows over two threads, each part but the last a multiple of 16 rows
 * const parts = splitRange(100, 2, 16);
 * if (JSON.stringify(parts) !== "[[0,48],[48,52]]") throw new Error(JSON.stringify(parts));
 * ```
 *
 * @module
 */
import { Worker } from "node:worker_threads";

/** Byte offset of the arguments in a control block. */
export const ARGS_AT = 64;
/** Most arguments a call can take. */
export const MAX_ARGS = 24;
/** Byte offset and size of a failed call's message (UTF-8) in a control block, after the arguments. */
export const MESSAGE_AT = ARGS_AT + 8 * MAX_ARGS;
/** See {@linkcode MESSAGE_AT}. */
export const MESSAGE_BYTES = 512;
/** Control block states. */
export const State = { Idle: 0, Posted: 1, Done: 2, Failed: 3, Stop: 4 } as const;
/** How long the caller waits for a worker before it gives up (a worker that died never answers). */
const WAIT_MS = 120_000;

/**
 * Splits `count` units into at most `parts` contiguous [start, length] ranges
 * of near-equal size, every boundary a multiple of `align`. Fewer parts when
 * `count` is too small to give each at least one `align`.
 */
export function splitRange(count: number, parts: number, align = 1): [number, number][] {
  const blocks = Math.ceil(count / align), n = Math.max(1, Math.min(parts, blocks));
  const out: [number, number][] = [];
  let start = 0;
  for (let i = 0; i < n; i++) {
    const end = i === n - 1 ? count : Math.min(count, Math.floor((blocks * (i + 1)) / n) * align);
    out.push([start, end - start]);
    start = end;
  }
  return out;
}

/** The message a worker left in its control block when a call failed (e.g. the wasm trap). */
function failureMessage(ctl: Int32Array): string {
  const bytes = new Uint8Array(ctl.buffer as SharedArrayBuffer, MESSAGE_AT, MESSAGE_BYTES);
  const end = bytes.indexOf(0);
  return new TextDecoder().decode(bytes.slice(0, end < 0 ? MESSAGE_BYTES : end)) || "no message";
}

interface Thread {
  worker: Worker;
  ctl: Int32Array;
  args: Float64Array;
}

/** A pool of kernel threads over one shared memory. */
export class KernelThreads {
  #threads: Thread[] = [];
  #names: string[];
  #memory: WebAssembly.Memory;
  #module: WebAssembly.Module;

  /** `names`: the module's exports that calls may name. */
  constructor(memory: WebAssembly.Memory, module: WebAssembly.Module, names: string[]) {
    this.#memory = memory;
    this.#module = module;
    this.#names = names;
  }

  /** Threads a call can split over, the calling one included. */
  get size(): number {
    return this.#threads.length + 1;
  }

  /** Starts or stops workers until calls split over `threads` threads (the caller's included). */
  async resize(threads: number): Promise<void> {
    const want = Math.max(0, Math.floor(threads) - 1);
    while (this.#threads.length > want) this.#stop(this.#threads.pop()!);
    const started: Promise<void>[] = [];
    while (this.#threads.length < want) {
      const control = new SharedArrayBuffer(MESSAGE_AT + MESSAGE_BYTES);
      const worker = new Worker(new URL("./simd_worker.ts", import.meta.url), {
        workerData: { memory: this.#memory, module: this.#module, control, names: this.#names },
      });
      started.push(
        new Promise<void>((resolve, reject) => {
          worker.once("message", () => {
            // An idle pool must not keep the process alive (only once ready: the wait for it must).
            worker.unref();
            resolve();
          });
          worker.once("error", reject);
        }),
      );
      this.#threads.push({ worker, ctl: new Int32Array(control), args: new Float64Array(control, ARGS_AT) });
    }
    await Promise.all(started);
  }

  /**
   * Runs export `name` once per argument list: `calls[0]` through `local` on
   * this thread, the others on the workers, and returns when all are done.
   */
  run(name: string, calls: number[][], local: (args: number[]) => void): void {
    if (calls.length > this.size) throw new Error(`${calls.length} calls for ${this.size} threads`);
    const index = this.#names.indexOf(name);
    if (index < 0) throw new Error(`unknown kernel ${name}`);
    const posted = this.#threads.slice(0, calls.length - 1);
    posted.forEach((t, i) => {
      const a = calls[i + 1];
      if (a.length > MAX_ARGS) throw new Error(`${name}: ${a.length} arguments, at most ${MAX_ARGS}`);
      t.args.set(a);
      t.ctl[1] = index;
      t.ctl[2] = a.length;
      Atomics.store(t.ctl, 0, State.Posted);
      Atomics.notify(t.ctl, 0);
    });
    let error: unknown = null;
    try {
      if (calls.length) local(calls[0]);
    } catch (e) {
      error = e;
    }
    // Always collect the workers: returning while they still write would hand out half-made tensors.
    for (const t of posted) {
      const t0 = performance.now();
      let s: number;
      while ((s = Atomics.load(t.ctl, 0)) === State.Posted) {
        if (Atomics.wait(t.ctl, 0, s, 1000) === "timed-out" && performance.now() - t0 > WAIT_MS) {
          throw new Error(`kernel thread did not finish ${name} in ${WAIT_MS / 1000} s`);
        }
      }
      Atomics.store(t.ctl, 0, State.Idle);
      if (s === State.Failed) error ??= new Error(`kernel thread failed in ${name}: ${failureMessage(t.ctl)}`);
    }
    if (error) throw error;
  }

  /** Stops every worker. */
  stop(): void {
    for (const t of this.#threads.splice(0)) this.#stop(t);
  }

  #stop(t: Thread): void {
    Atomics.store(t.ctl, 0, State.Stop);
    Atomics.notify(t.ctl, 0);
  }
}
