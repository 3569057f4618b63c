// lib/engine/shared_heap.ts: the binary rewrites (memory defined -> imported shared; imported -> shared) on small modules
// written out byte by byte here, and the wasm backend's heap after setBackend.
import * as tf from "@tensorflow/tfjs-core";
import assert from "node:assert";
import { setBackend } from "../lib/engine/backend.ts";
import { shareDefinedMemory, sharedHeap, shareImportedMemory } from "../lib/engine/shared_heap.ts";

const HEADER = [0, 0x61, 0x73, 0x6d, 1, 0, 0, 0];
const str = (s: string) => [s.length, ...new TextEncoder().encode(s)];
const section = (id: number, body: number[]) => [id, body.length, ...body];
const TYPE = section(1, [1, 0x60, 2, 0x7f, 0x7f, 0]); // one type: (i32, i32) -> ()
const FUNC = section(3, [1, 0]);
// store(p, v): i32.store at p (align 2, offset 0)
const CODE = section(10, [1, 9, 0, 0x20, 0, 0x20, 1, 0x36, 2, 0, 0x0b]);
const exports = (mem: boolean) =>
  section(7, [mem ? 2 : 1, ...str("store"), 0, 0, ...(mem ? [...str("memory"), 2, 0] : [])]);

/** A module that defines memory {min 1, max 4} (or none), exports it and a `store`; `imports` adds a function import. */
function definingModule(o: { memory: boolean; max?: boolean; importFn?: boolean }): Uint8Array {
  const imports = o.importFn ? section(2, [1, ...str("env"), ...str("abort"), 0, 0]) : [];
  const mem = o.memory ? section(5, o.max === false ? [1, 0, 1] : [1, 1, 1, 4]) : [];
  // With a function import, `store` is function 1.
  const exp = o.importFn ? section(7, [2, ...str("store"), 0, 1, ...str("memory"), 2, 0]) : exports(o.memory);
  return new Uint8Array([...HEADER, ...TYPE, ...imports, ...FUNC, ...mem, ...exp, ...CODE]);
}

Deno.test("shareDefinedMemory(): the memory becomes an imported shared env.memory, with its limits, still exported", () => {
  for (const importFn of [false, true]) {
    const p = shareDefinedMemory(definingModule({ memory: true, importFn }));
    assert(p, "rewritten");
    assert.deepStrictEqual([p.initial, p.maximum], [1, 4]);
    const mod = new WebAssembly.Module(p.bytes);
    const imps = WebAssembly.Module.imports(mod).map((i) => `${i.module}.${i.name}:${i.kind}`);
    assert.deepStrictEqual(imps, importFn ? ["env.abort:function", "env.memory:memory"] : ["env.memory:memory"]);
    const memory = new WebAssembly.Memory({ initial: 1, maximum: 4, shared: true });
    const env: Record<string, unknown> = { memory, abort: () => {} };
    const inst = new WebAssembly.Instance(mod, { env } as WebAssembly.Imports);
    (inst.exports.store as (p: number, v: number) => void)(8, 12345);
    assert.strictEqual(new Int32Array(memory.buffer)[2], 12345, "stores land in the shared memory");
    assert.strictEqual(inst.exports.memory, memory, "exported memory is the imported one");
    // An unshared memory no longer links: the import is shared.
    assert.throws(() =>
      new WebAssembly.Instance(mod, { env: { ...env, memory: new WebAssembly.Memory({ initial: 1, maximum: 4 }) } })
    );
  }
});

Deno.test("shareDefinedMemory(): null without a memory or without a maximum; bytes that are not wasm throw", () => {
  assert.strictEqual(shareDefinedMemory(definingModule({ memory: false })), null);
  assert.strictEqual(shareDefinedMemory(definingModule({ memory: true, max: false })), null);
  assert.throws(() => shareDefinedMemory(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8])), /not a wasm binary/);
});

Deno.test("shareImportedMemory(): a memory import becomes shared with the given maximum; other imports pass", () => {
  // (import "env" "abort" (func)) (import "env" "memory" (memory 1)) (import "env" "g" (global i32)) and `store`.
  const imports = section(2, [
    3,
    ...str("env"),
    ...str("abort"),
    0,
    0,
    ...str("env"),
    ...str("memory"),
    2,
    0,
    1,
    ...str("env"),
    ...str("g"),
    3,
    0x7f,
    0,
  ]);
  const bytes = new Uint8Array([
    ...HEADER,
    ...TYPE,
    ...imports,
    ...FUNC,
    ...section(7, [1, ...str("store"), 0, 1]),
    ...CODE,
  ]);
  const shared = new WebAssembly.Module(shareImportedMemory(bytes, 16));
  const memory = new WebAssembly.Memory({ initial: 1, maximum: 16, shared: true });
  const env = { memory, abort: () => {}, g: 7 };
  const inst = new WebAssembly.Instance(shared, { env });
  (inst.exports.store as (p: number, v: number) => void)(4, -9);
  assert.strictEqual(new Int32Array(memory.buffer)[1], -9);
  // The original takes only an unshared memory.
  assert.throws(() => new WebAssembly.Instance(new WebAssembly.Module(bytes), { env }));
  // A shared memory larger than the declared maximum does not link.
  const big = new WebAssembly.Memory({ initial: 1, maximum: 32, shared: true });
  assert.throws(() => new WebAssembly.Instance(shared, { env: { ...env, memory: big } }));
});

Deno.test("setBackend('wasm') gives the wasm backend a shared heap, and tensors on it compute as before", async () => {
  await setBackend("wasm");
  const heap = (tf.backend() as unknown as { wasm: { HEAPU8: Uint8Array } }).wasm.HEAPU8.buffer;
  assert(heap instanceof SharedArrayBuffer, "heap is a SharedArrayBuffer");
  assert.strictEqual(sharedHeap()?.buffer, heap);
  const before = tf.memory().numTensors;
  // A conv and a matmul by hand.
  const x = tf.tensor4d([1, 2, 3, 4], [1, 2, 2, 1]), w = tf.tensor4d([1, 0, 0, 1], [2, 2, 1, 1]);
  tf.tidy(() => {
    assert.deepStrictEqual(Array.from(tf.conv2d(x, w, 1, "valid").dataSync()), [5]);
    const m = tf.matMul(tf.tensor2d([1, 2], [1, 2]), tf.tensor2d([3, 4], [2, 1]));
    assert.deepStrictEqual(Array.from(m.dataSync()), [11]);
  });
  // Growing the heap (a 400 MB tensor) keeps it shared and the data intact.
  const big = tf.zeros([100, 1000, 1000]);
  assert(
    ((tf.backend() as unknown as { wasm: { HEAPU8: Uint8Array } }).wasm.HEAPU8.buffer) instanceof SharedArrayBuffer,
  );
  assert.deepStrictEqual(Array.from(x.dataSync()), [1, 2, 3, 4]);
  tf.dispose([big, x, w]);
  assert.strictEqual(tf.memory().numTensors, before);
});
