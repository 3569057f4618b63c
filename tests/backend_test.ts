import * as tf from "@tensorflow/tfjs-core";
import assert from "node:assert";
import { explainOutOfMemory, setBackend } from "../lib/engine/backend.ts";
import { InputError } from "../lib/errors.ts";

Deno.test("explainOutOfMemory() names the batch size and the ways out; other errors pass through", () => {
  const abort = new Error("Aborted(Cannot enlarge memory arrays to size 4294967296 bytes)");
  const e = explainOutOfMemory(abort, { batchSize: 4, what: "training", segments: 16 });
  assert.ok(e instanceof InputError);
  assert.match(e.message, /training ran out of the wasm backend's 4 GiB heap at batch size 4/);
  assert.match(e.message, /--train\.batch_size=2/);
  assert.match(e.message, /--train\.segments=32/);
  assert.strictEqual(e.cause, abort);
  const one = explainOutOfMemory(new Error("memory access out of bounds"), { batchSize: 1, what: "training" });
  assert.match((one as Error).message, /Even batch size 1 does not fit.*--train\.segments=8/);
  const other = new TypeError("x is undefined");
  assert.strictEqual(explainOutOfMemory(other, { batchSize: 4, what: "training" }), other);
});

Deno.test("setBackend('wasm') takes out onnxruntime kernels that were registered without it", async () => {
  // This file never calls setBackend("onnxruntime"): the kernels come in by a direct import, as the bench does.
  const ort = await import("../lib/engine/ort_kernels.ts");
  await setBackend("wasm");
  ort.registerOrtKernels({ minMacs: 0, autoSelect: false });
  const x = tf.ones([1, 6, 6, 2]) as tf.Tensor4D, w = tf.ones([3, 3, 2, 2]) as tf.Tensor4D;
  ort.resetOrtStats();
  tf.conv2d(x, w, 1, "same").dispose();
  assert.equal(ort.ortStats().runs, 1);
  await setBackend("wasm");
  tf.conv2d(x, w, 1, "same").dispose();
  assert.equal(ort.ortStats().runs, 1, "wasm's own conv ran");
  tf.dispose([x, w]);
});

Deno.test("on wasm a clone shares its source's memory, and either can be disposed first", async () => {
  await setBackend("wasm");
  const before = tf.memory();
  const x = tf.tensor1d([1, 2, 3]);
  const y = tf.clone(x);
  assert.strictEqual(tf.memory().numDataBuffers, before.numDataBuffers + 1, "one buffer for both");
  x.dispose();
  assert.deepStrictEqual(Array.from(y.dataSync()), [1, 2, 3]);
  const z = tf.clone(y);
  y.dispose();
  assert.deepStrictEqual(Array.from(z.dataSync()), [1, 2, 3]);
  z.dispose();
  assert.strictEqual(tf.memory().numDataBuffers, before.numDataBuffers);
  assert.strictEqual(tf.memory().numTensors, before.numTensors);
});
