/**
 * A kernel thread of simd_threads.ts: instantiates the SIMD kernels over the
 * shared wasm heap, then runs the calls posted in its control block until told
 * to stop. It blocks in `Atomics.wait` between calls, so it takes no CPU idle.
 *
 * @module
 */
import { parentPort, workerData } from "node:worker_threads";
import { ARGS_AT, MESSAGE_AT, MESSAGE_BYTES, State } from "./simd_threads.ts";

const { memory, module, control, names } = workerData as {
  memory: WebAssembly.Memory;
  module: WebAssembly.Module;
  control: SharedArrayBuffer;
  names: string[];
};
const fns = new WebAssembly.Instance(module, { env: { memory } }).exports as Record<
  string,
  (...args: number[]) => void
>;
const ctl = new Int32Array(control), args = new Float64Array(control, ARGS_AT);
parentPort!.postMessage("ready");
for (;;) {
  let s: number;
  while ((s = Atomics.load(ctl, 0)) !== State.Posted && s !== State.Stop) Atomics.wait(ctl, 0, s);
  if (s === State.Stop) break;
  let next: number = State.Done;
  try {
    fns[names[ctl[1]]](...Array.from(args.subarray(0, ctl[2])));
  } catch (e) {
    // The caller is blocked in Atomics.wait and cannot take a message: leave the reason (a wasm trap's
    // "memory access out of bounds" ...) in the control block, where it reads it into its error.
    const text = new TextEncoder().encode(e instanceof Error ? e.message : String(e)).subarray(0, MESSAGE_BYTES - 1);
    const slot = new Uint8Array(control, MESSAGE_AT, MESSAGE_BYTES);
    slot.fill(0);
    slot.set(text);
    next = State.Failed;
  }
  Atomics.store(ctl, 0, next);
  Atomics.notify(ctl, 0);
}
