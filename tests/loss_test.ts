import * as tf from "@tensorflow/tfjs-core";
import assert from "node:assert";
import { setBackend } from "../lib/engine/backend.ts";
import {
  focalLoss,
  focalLossSum,
  hardNegativeMask,
  hardNegativeMaskOf,
  hardNegativeMaskOps,
  smoothL1,
  ssdLoss,
} from "../lib/loss.ts";
import { createRng } from "../lib/rng.ts";

await setBackend("cpu");
const close = (a: number, b: number, tol = 1e-5) => assert.ok(Math.abs(a - b) <= tol, `${a} != ${b}`);

Deno.test("smoothL1() is quadratic below 1 and linear above", () => {
  const v = smoothL1(tf.tensor1d([0, 0.5, -0.5, 2, -3]), tf.zeros([5])).dataSync();
  [0, 0.125, 0.125, 1.5, 2.5].forEach((e, i) => close(v[i], e));
});

Deno.test("focalLoss() follows the tutorial's class_loss by hand", () => {
  // logit 2 for a negative: p = sigmoid(2), p_t = 1 - p, BCE = log(1 + e^2), alpha_t = 0.25.
  const p = 1 / (1 + Math.exp(-2));
  const expected = p ** 2 * 0.25 * Math.log(1 + Math.exp(2));
  close(focalLoss(tf.tensor2d([[2]]), tf.tensor2d([[0]]), { gamma: 2, alpha: 0.75 }).dataSync()[0], expected);
  // gamma 0 and alpha 0.5 reduce to half the plain BCE.
  close(
    focalLoss(tf.tensor2d([[-1]]), tf.tensor2d([[1]]), { gamma: 0, alpha: 0.5 }).dataSync()[0],
    0.5 * Math.log(1 + Math.E),
  );
});

Deno.test("ssdLoss() divides both parts by the matched count of the batch", () => {
  // Two images, three default boxes; two positives in all.
  const labels = tf.tensor2d([[1, 0, 0], [0, 2, 0]], [2, 3], "int32");
  const locT = tf.zeros([2, 3, 4]) as tf.Tensor3D;
  const locP = tf.fill([2, 3, 4], 0.5) as tf.Tensor3D;
  const logits = tf.zeros([2, 3, 3]) as tf.Tensor3D;
  const cfg = { kind: "focal" as const, gamma: 2, alpha: 0.75, neg_pos_ratio: 3, loc_weight: 1 };
  const r = ssdLoss(locP, logits, locT, labels as tf.Tensor2D, cfg);
  // loc: 2 positives x 4 coordinates x 0.125, over 2 matches.
  close(r.loc.dataSync()[0], (2 * 4 * 0.125) / 2);
  // cls: every logit 0 gives p_t 0.5, BCE ln 2. The one-hot covers the background column too (label 0 sets
  // column 0), so each of the 6 boxes has one target 1 (alpha .75) and two 0s (alpha .25); x 0.25, over 2.
  const cls = (0.25 * Math.LN2 * (6 * 0.75 + 12 * 0.25)) / 2;
  close(r.cls.dataSync()[0], cls);
  close(r.total.dataSync()[0], cls + 0.5);
});

Deno.test("hardNegativeMask() keeps positives and the 3:1 hardest negatives", () => {
  const ce = tf.tensor2d([[0.1, 5, 4, 3, 2, 1, 0.5, 0.2, 9]]);
  const pos = tf.tensor2d([[0, 0, 0, 0, 0, 0, 0, 0, 1]]);
  const m = hardNegativeMask(ce, pos, 3).dataSync();
  assert.deepStrictEqual(Array.from(m), [0, 1, 1, 1, 0, 0, 0, 0, 1]);
});

Deno.test("hardNegativeMaskOf() selects what the tensor ops select: ties, no positives, a capped count", () => {
  const rng = createRng(5);
  const a = 40;
  // Rows: few positives; no positives; most positives (the count caps at A - 1); ties on a coarse grid.
  const posRows = [[3, 17], [], Array.from({ length: 30 }, (_, i) => i), [0, 1, 2, 5]];
  const ce = Float32Array.from(
    { length: posRows.length * a },
    (_, i) => i >= 3 * a ? Math.floor(rng() * 4) : rng() * 5,
  );
  const pos = new Float32Array(ce.length);
  posRows.forEach((ps, r) => ps.forEach((j) => pos[r * a + j] = 1));
  for (const ratio of [3, 2.5, 1]) {
    const want = hardNegativeMaskOps(tf.tensor2d(ce, [4, a]), tf.tensor2d(pos, [4, a]), ratio);
    const got = hardNegativeMaskOf(ce, pos, a, ratio);
    assert.deepStrictEqual(Array.from(got), Array.from(want.dataSync()), `ratio ${ratio}`);
    want.dispose();
  }
  // The tie row keeps more than 3 x 4 negatives: every loss equal to the threshold stays.
  const kept = hardNegativeMaskOf(ce, pos, a, 3).subarray(3 * a).reduce((s, v) => s + v, 0);
  assert.ok(kept > 16, `kept ${kept}`);
});

Deno.test("the softmax loss with hard negative mining has gradients and no leaks", () => {
  const logits = tf.variable(tf.randomNormal([2, 6, 3], 0, 1, "float32", 3));
  const labels = tf.tensor2d([[1, 0, 0, 0, 0, 0], [0, 0, 2, 0, 0, 0]], [2, 6], "int32") as tf.Tensor2D;
  const loc = tf.zeros([2, 6, 4]) as tf.Tensor3D;
  const cfg = { kind: "softmax_hnm" as const, gamma: 2, alpha: 0.75, neg_pos_ratio: 3, loc_weight: 1 };
  const before = tf.memory().numTensors;
  const { value, grads } = tf.variableGrads(
    () => ssdLoss(loc, logits as unknown as tf.Tensor3D, loc, labels, cfg).total,
    [logits],
  );
  assert.ok(Number.isFinite(value.dataSync()[0]));
  const g = Object.values(grads)[0].dataSync();
  assert.ok(g.some((v) => v !== 0));
  tf.dispose([value, ...Object.values(grads)]);
  assert.strictEqual(tf.memory().numTensors, before);
});

Deno.test("focalLossSum(): its analytic gradient equals autodiff of the element-wise focal loss", () => {
  const rng = createRng(11);
  const x = tf.tensor2d(Float32Array.from({ length: 64 * 5 }, () => (rng() - 0.5) * 12), [64, 5]);
  const z = tf.oneHot(tf.tensor1d(Int32Array.from({ length: 64 }, () => Math.floor(rng() * 5)), "int32"), 5)
    .toFloat();
  for (const o of [{ gamma: 2, alpha: 0.75 }, { gamma: 1.5, alpha: 0.25 }, { gamma: 0, alpha: 0.5 }]) {
    const before = tf.memory().numTensors;
    const ours = tf.valueAndGrad((t: tf.Tensor) => focalLossSum(t, z, o))(x);
    const auto = tf.valueAndGrad((t: tf.Tensor) => tf.sum(focalLoss(t, z, o)) as tf.Scalar)(x);
    close(ours.value.dataSync()[0], auto.value.dataSync()[0], 1e-5 * Math.abs(auto.value.dataSync()[0]));
    const a = ours.grad.dataSync(), b = auto.grad.dataSync();
    for (let i = 0; i < a.length; i++) close(a[i], b[i], 1e-5);
    tf.dispose([ours.value, ours.grad, auto.value, auto.grad]);
    assert.strictEqual(tf.memory().numTensors, before);
  }
  tf.dispose([x, z]);
});

Deno.test("focalLossSum() on wasm equals autodiff on cpu, and leaks nothing with or without a gradient", async () => {
  const rng = createRng(12);
  const xs = Float32Array.from({ length: 300 * 9 }, () => (rng() - 0.5) * 16);
  const labels = Int32Array.from({ length: 300 }, () => Math.floor(rng() * 9));
  const o = { gamma: 2, alpha: 0.75 };
  const run = (fused: boolean) =>
    tf.tidy(() => {
      const x = tf.tensor2d(xs, [300, 9]), z = tf.oneHot(tf.tensor1d(labels, "int32"), 9).toFloat();
      const f = (t: tf.Tensor) => fused ? focalLossSum(t, z, o) : tf.sum(focalLoss(t, z, o)) as tf.Scalar;
      const { value, grad } = tf.valueAndGrad(f)(x);
      return [value.dataSync()[0], grad.dataSync() as Float32Array] as const;
    });
  const ref = run(false);
  await setBackend("wasm");
  try {
    const before = tf.memory().numTensors;
    const got = run(true);
    const value = tf.tidy(() =>
      focalLossSum(tf.tensor2d(xs, [300, 9]), tf.oneHot(tf.tensor1d(labels, "int32"), 9).toFloat(), o).dataSync()[0]
    );
    assert.strictEqual(tf.memory().numTensors, before);
    close(got[0], ref[0], 1e-5 * Math.abs(ref[0]));
    close(value, ref[0], 1e-5 * Math.abs(ref[0]));
    got[1].forEach((g, i) => close(g, ref[1][i], 1e-5));
  } finally {
    await setBackend("cpu");
  }
});
