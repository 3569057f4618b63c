// Gradient kernels for wasm checked against the cpu backend's own gradients.
import * as tf from "@tensorflow/tfjs-core";
import assert from "node:assert";
import { setBackend } from "../lib/engine/backend.ts";
import { caseName, convCases, convGrads, maxRelErr } from "./conv_cases.ts";
import { convGradStep } from "./model_checks.ts";

await setBackend("wasm");

for (const c of convCases()) {
  Deno.test(`wasm gradients match the cpu backend for ${caseName(c)}`, async () => {
    const ref = await convGrads(c, "cpu", true);
    const got = await convGrads(c, "wasm", false);
    for (const k of ["y", "dx", "dw"] as const) {
      const e = maxRelErr(got[k], ref[k]);
      assert(e <= 1e-4, `${k}: max relative error ${e}`);
    }
  });
}

Deno.test("the composed gradient kernels leak no tensors", async () => {
  await setBackend("wasm");
  const x = tf.randomNormal([1, 8, 8, 3]) as tf.Tensor4D;
  const w = tf.randomNormal([3, 3, 3, 4]) as tf.Tensor4D;
  const dw = tf.randomNormal([3, 3, 3, 2]) as tf.Tensor4D;
  const step = () => convGradStep(x, w, dw, 2);
  step();
  const before = tf.memory().numTensors;
  const bytesBefore = tf.memory().numBytes;
  for (let i = 0; i < 5; i++) step();
  assert.equal(tf.memory().numTensors, before);
  assert.equal(tf.memory().numBytes, bytesBefore);
  tf.dispose([x, w, dw]);
});
