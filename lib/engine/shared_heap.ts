/**
 * The tfjs wasm backend's heap as a shared memory, so that worker threads can
 * run the SIMD kernels of simd_kernels.wat on its tensors in place.
 *
 * The single-threaded tfjs wasm binary defines its own, unshared memory. Its
 * code uses no atomics and runs the same on a shared one, so before tfjs
 * instantiates it, {@linkcode installSharedHeap} rewrites the binary to import
 * its memory instead and hands it a shared `WebAssembly.Memory` of the same
 * limits. Nothing else changes: tfjs still grows it and views it through
 * `memory.buffer` (now a `SharedArrayBuffer`).
 *
 * @example
 * ```ts
 * import { shareImportedMemory } from "./shared_heap.ts";
 * // (module (import "env" "memory" (memory 1)))
 * const bytes = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 2, 15, 1, 3, 101, 110, 118, 6, 109, 101, 109, 111, 114, 121, 2, 0, 1]);
 * const shared = shareImportedMemory(bytes, 16);
 * const memory = new WebAssembly.Memory({ initial: 1, maximum: 16, shared: true });
 * new WebAssembly.Instance(new WebAssembly.Module(shared), { env: { memory } });
 * ```
 *
 * @module
 */

/** Section ids of the wasm binary format (spec 5.5.2). */
const IMPORT = 2, MEMORY = 5;
/** Limits flags: bit 0 "has maximum", bit 1 "shared" (threads proposal). */
const HAS_MAX = 1, SHARED = 2;
/** Import kind of a memory. */
const MEMORY_KIND = 2;

/** Reads an unsigned LEB128 at `at`: [value, next offset]. */
function uleb(b: Uint8Array, at: number): [number, number] {
  let v = 0, scale = 1;
  for (;;) {
    if (at >= b.length) throw new Error("truncated wasm binary");
    const byte = b[at++];
    v += (byte & 0x7f) * scale;
    if (byte < 0x80) return [v, at];
    scale *= 128;
  }
}

function toUleb(v: number): number[] {
  const out: number[] = [];
  do {
    let byte = v % 128;
    v = Math.floor(v / 128);
    if (v) byte |= 0x80;
    out.push(byte);
  } while (v);
  return out;
}

const name = (s: string) => [s.length, ...new TextEncoder().encode(s)];

/** The sections of a binary, after its 8-byte header: [id, body]. */
function sections(b: Uint8Array): [number, Uint8Array][] {
  if (b.length < 8 || b[0] !== 0 || b[1] !== 0x61 || b[2] !== 0x73 || b[3] !== 0x6d) {
    throw new Error("not a wasm binary");
  }
  const out: [number, Uint8Array][] = [];
  let at = 8;
  while (at < b.length) {
    const id = b[at];
    const [size, start] = uleb(b, at + 1);
    out.push([id, b.subarray(start, start + size)]);
    at = start + size;
  }
  return out;
}

function assemble(header: Uint8Array, secs: [number, Uint8Array][]): Uint8Array<ArrayBuffer> {
  const parts = [header, ...secs.flatMap(([id, body]) => [new Uint8Array([id, ...toUleb(body.length)]), body])];
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) out.set(p, at), at += p.length;
  return out;
}

/** Reads memory limits at `at`: [flags, initial, maximum or undefined, next offset]. */
function limits(b: Uint8Array, at: number): [number, number, number | undefined, number] {
  const flags = b[at];
  const [initial, next] = uleb(b, at + 1);
  if (!(flags & HAS_MAX)) return [flags, initial, undefined, next];
  const [maximum, end] = uleb(b, next);
  return [flags, initial, maximum, end];
}

/**
 * Rewrites a binary that defines one memory with a maximum so that it imports
 * it as shared `env.memory` instead (kept at index 0, still exported under its
 * name). Returns null when the binary has no such memory.
 */
export function shareDefinedMemory(
  bytes: Uint8Array,
): { bytes: Uint8Array<ArrayBuffer>; initial: number; maximum: number } | null {
  const secs = sections(bytes);
  const mem = secs.find(([id]) => id === MEMORY)?.[1];
  if (!mem) return null;
  const [count, at] = uleb(mem, 0);
  const [, initial, maximum] = limits(mem, at);
  if (count !== 1 || maximum === undefined) return null;
  const entry = [
    ...name("env"),
    ...name("memory"),
    MEMORY_KIND,
    HAS_MAX | SHARED,
    ...toUleb(initial),
    ...toUleb(maximum),
  ];
  const imports = secs.find(([id]) => id === IMPORT);
  const out = secs.filter(([id]) => id !== MEMORY).map(([id, body]): [number, Uint8Array] => {
    if (id !== IMPORT) return [id, body];
    const [n, rest] = uleb(body, 0);
    return [id, new Uint8Array([...toUleb(n + 1), ...body.subarray(rest), ...entry])];
  });
  // Imports come right after the type section (1), before functions (3).
  if (!imports) out.splice(out.findIndex(([id]) => id > IMPORT), 0, [IMPORT, new Uint8Array([1, ...entry])]);
  return { bytes: assemble(bytes.subarray(0, 8), out), initial, maximum };
}

/**
 * Rewrites a binary's memory imports to shared ones of `maximum` pages (a
 * shared memory can only be imported as shared). Other imports pass unchanged.
 */
export function shareImportedMemory(bytes: Uint8Array, maximum: number): Uint8Array<ArrayBuffer> {
  const secs = sections(bytes).map(([id, body]): [number, Uint8Array] => {
    if (id !== IMPORT) return [id, body];
    const [count, first] = uleb(body, 0);
    const out = toUleb(count);
    let at = first;
    for (let i = 0; i < count; i++) {
      const start = at;
      const [moduleLen, m] = uleb(body, at);
      const [fieldLen, f] = uleb(body, m + moduleLen);
      const kindAt = f + fieldLen, kind = body[kindAt];
      if (kind !== MEMORY_KIND) {
        const end = importEnd(body, kindAt);
        out.push(...body.subarray(start, end));
        at = end;
        continue;
      }
      const [, initial, , end] = limits(body, kindAt + 1);
      out.push(...body.subarray(start, kindAt + 1), HAS_MAX | SHARED, ...toUleb(initial), ...toUleb(maximum));
      at = end;
    }
    return [id, new Uint8Array(out)];
  });
  return assemble(bytes.subarray(0, 8), secs);
}

/** End of a non-memory import's descriptor starting at its kind byte. */
function importEnd(b: Uint8Array, kindAt: number): number {
  const kind = b[kindAt];
  if (kind === 0) return uleb(b, kindAt + 1)[1]; // function: type index
  if (kind === 1) return limits(b, kindAt + 2)[3]; // table: reftype, limits
  if (kind === 3) return kindAt + 3; // global: valtype, mutability
  throw new Error(`unsupported import kind ${kind}`);
}

let installed = false;
let heap: WebAssembly.Memory | null = null;

/** The shared memory handed to the tfjs wasm binary, once it was instantiated. */
export function sharedHeap(): WebAssembly.Memory | null {
  return heap;
}

/**
 * Makes the next tfjs wasm binary instantiated through `WebAssembly.instantiate`
 * use a shared memory (idempotent; a no-op without SharedArrayBuffer). Call it
 * before the wasm backend first initialises; later, it changes nothing.
 */
export function installSharedHeap(): void {
  if (installed || typeof SharedArrayBuffer === "undefined") return;
  installed = true;
  const original = WebAssembly.instantiate;
  const patched = function (source: unknown, imports?: WebAssembly.Imports) {
    const env = imports?.env as Record<string, unknown> | undefined;
    // tfjs's Emscripten glue passes the binary's bytes and an `env` with `abort` in it.
    if (!heap && env && "abort" in env && (source instanceof Uint8Array || source instanceof ArrayBuffer)) {
      let p: ReturnType<typeof shareDefinedMemory> = null;
      try {
        p = shareDefinedMemory(source instanceof Uint8Array ? source : new Uint8Array(source));
      } catch {
        p = null; // not a binary we can rewrite: leave it alone
      }
      if (p) {
        heap = new WebAssembly.Memory({ initial: p.initial, maximum: p.maximum, shared: true });
        WebAssembly.instantiate = original;
        return original(p.bytes, { ...imports, env: { ...env, memory: heap } });
      }
    }
    return (original as (s: unknown, i?: WebAssembly.Imports) => Promise<unknown>)(source, imports);
  };
  WebAssembly.instantiate = patched as typeof WebAssembly.instantiate;
}
