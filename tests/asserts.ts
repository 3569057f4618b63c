// Assertions the tests share. node:assert's `throws` and `rejects` check an error but do not return it,
// and the tests go on to read its fields (the file, the key, the record it names).
import assert from "node:assert";
import type * as tf from "@tensorflow/tfjs-core";

/** Asserts that `fn` throws an instance of `cls` whose message contains every one of `texts`; returns it. */
export function assertThrowsError<E extends Error>(
  fn: () => unknown,
  cls: new (...args: never[]) => E,
  ...texts: string[]
): E {
  try {
    fn();
  } catch (e) {
    return checked(e, cls, texts);
  }
  throw new assert.AssertionError({ message: `expected ${cls.name} to be thrown, but nothing was` });
}

/** Asserts that `fn` rejects with an instance of `cls` whose message contains every one of `texts`; returns it. */
export async function assertRejectsError<E extends Error>(
  fn: () => Promise<unknown>,
  cls: new (...args: never[]) => E,
  ...texts: string[]
): Promise<E> {
  try {
    await fn();
  } catch (e) {
    return checked(e, cls, texts);
  }
  throw new assert.AssertionError({ message: `expected ${cls.name} to be thrown, but nothing was` });
}

function checked<E extends Error>(e: unknown, cls: new (...args: never[]) => E, texts: string[]): E {
  if (!(e instanceof cls)) throw new assert.AssertionError({ message: `expected ${cls.name}, got ${e}` });
  for (const t of texts) {
    if (!e.message.includes(t)) throw new assert.AssertionError({ message: `expected "${t}" in: ${e.message}` });
  }
  return e;
}

/** A float32 tensor's values as bits, every NaN as one pattern (x86 makes negative NaNs, wasm positive ones). */
export function canonicalBits(t: tf.Tensor): number[] {
  const values = Float32Array.from(t.dataSync());
  return [...new Uint32Array(values.buffer)].map((b, i) => Number.isNaN(values[i]) ? 0x7fc00000 : b);
}
