import * as tf from "@tensorflow/tfjs-core";
import assert from "node:assert";
import { setBackend } from "../lib/engine/backend.ts";
import { baseKernel } from "../lib/engine/kernel_registry.ts";

/** Splits on `backend`, returning each part's shape and values. */
async function splitOn(
  backend: string,
  x: { values: number[]; shape: number[]; dtype: tf.DataType },
  sizes: number[] | number,
  axis: number,
) {
  await setBackend(backend as "wasm" | "cpu");
  const t = tf.tensor(x.values, x.shape, x.dtype);
  const parts = tf.split(t, sizes, axis);
  const out = parts.map((p) => ({ shape: p.shape, values: Array.from(p.dataSync()) }));
  tf.dispose([t, ...parts]);
  return out;
}

Deno.test("SplitV on wasm is the block-copy kernel, and splits as the cpu backend does", async () => {
  await setBackend("wasm");
  const shipped = baseKernel("wasm", "SplitV");
  assert.ok(
    shipped && tf.getKernel("SplitV", "wasm")!.kernelFunc !== shipped.kernelFunc,
    "ours replaced the shipped SplitV",
  );
  const cases: { shape: number[]; sizes: number[] | number; axis: number; dtype: tf.DataType }[] = [
    { shape: [16, 1364, 4], sizes: [1024, 256, 64, 16, 4], axis: 1, dtype: "float32" }, // the demo's heads at 128 px
    { shape: [2, 7, 3, 5], sizes: [2, -1, 1], axis: 1, dtype: "float32" },
    { shape: [6, 5], sizes: 3, axis: 0, dtype: "int32" },
    { shape: [3, 4, 6], sizes: [1, 0, 5], axis: -1, dtype: "float32" }, // an empty part
    { shape: [4, 9], sizes: [4, 5], axis: 1, dtype: "bool" },
  ];
  for (const c of cases) {
    const n = c.shape.reduce((a, b) => a * b, 1);
    const values = Array.from(
      { length: n },
      (_, i) => c.dtype === "bool" ? (i * 7) % 3 === 0 ? 1 : 0 : (i * 37) % 101 - 50,
    );
    const x = { values, shape: c.shape, dtype: c.dtype };
    const before = (await setBackend("wasm"), tf.memory().numTensors);
    const got = await splitOn("wasm", x, c.sizes, c.axis);
    assert.strictEqual(tf.memory().numTensors, before, "tensors leaked");
    assert.deepStrictEqual(got, await splitOn("cpu", x, c.sizes, c.axis), JSON.stringify(c));
  }
});
