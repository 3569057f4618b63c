// Tests of the graph IR additions for the ModelZoo SSD variants: conv weight sharing (`shareWith`, used by the
// FPN models' weight-shared box predictor) and the TF-legacy bilinear upsample (the FPN's top-down resize).
import assert from "node:assert";
import * as tf from "@tensorflow/tfjs-core";
import { setBackend } from "../lib/engine/backend.ts";
import {
  bnActFusions,
  countParams,
  GraphBuilder,
  inferShapes,
  initParams,
  layerTable,
  runGraph,
} from "../lib/graph.ts";
import { createRng } from "../lib/rng.ts";
import type { BnActivation } from "../lib/custom_ops.ts";

await setBackend("wasm");

function sharedPair() {
  const g = new GraphBuilder([4, 4, 2]);
  const a = g.conv("head", g.input, 3, { kernel: 3, bias: true });
  const small = g.conv("down", g.input, 2, { kernel: 1, stride: 2 });
  const b = g.conv("head.level1", small, 3, { kernel: 3, bias: true, shareWith: "head" });
  return g.build({ a, b });
}

Deno.test("a conv that shares another's weights declares no parameters of its own", () => {
  const graph = sharedPair();
  assert.deepStrictEqual(graph.params.map((p) => p.name), ["head.weight", "head.bias", "down.weight"]);
  assert.deepStrictEqual(countParams(graph), {
    trainable: 3 * 3 * 2 * 3 + 3 + 2 * 2,
    total: 3 * 3 * 2 * 3 + 3 + 2 * 2,
  });
  const row = layerTable(graph).find((r) => r.name === "head.level1")!;
  assert.deepStrictEqual([row.op, row.shape, row.params], ["conv 3x3/1 shares head", "2x2x3", 0]);
  assert.deepStrictEqual(inferShapes(graph).get(graph.outputs.b), [2, 2, 3]);
});

Deno.test("a shared conv computes with the owner's weights and sends its gradient to them", () => {
  const g = new GraphBuilder([4, 4, 2]);
  const a = g.conv("head", g.input, 3, { kernel: 3, bias: true });
  const b = g.conv("head.again", g.input, 3, { kernel: 3, bias: true, shareWith: "head" });
  const graph = g.build({ a, b });
  const params = initParams(graph, createRng(1), {
    overrides: { "head.bias": () => new Float32Array([0.1, -0.2, 0.3]) },
  });
  const x = tf.randomNormal([1, 4, 4, 2], 0, 1, "float32", 3) as tf.Tensor4D;
  const [same, gradRatio] = tf.tidy(() => {
    const out = runGraph(graph, params, x);
    const both = tf.variableGrads(() => {
      const o = runGraph(graph, params, x);
      return tf.add(tf.sum(o.a), tf.sum(o.b)) as tf.Scalar;
    });
    const one = tf.variableGrads(() => tf.sum(runGraph(graph, params, x).a) as tf.Scalar);
    const w = params.get("head.weight")!.name;
    return [
      tf.max(tf.abs(tf.sub(out.a, out.b))).dataSync()[0],
      tf.max(tf.abs(tf.sub(both.grads[w], tf.mul(one.grads[w], 2)))).dataSync()[0],
    ];
  });
  assert.strictEqual(same, 0);
  assert.ok(gradRatio < 1e-4, `gradient of the shared weight is not the sum over both uses (${gradRatio})`);
  tf.dispose([x, ...params.values()]);
});

Deno.test("sharing with a missing layer or a different weight shape is refused", () => {
  const g = new GraphBuilder([4, 4, 2]);
  g.conv("head", g.input, 3, { kernel: 3, bias: true });
  assert.throws(() => g.conv("x1", g.input, 3, { kernel: 3, bias: true, shareWith: "nope" }), /not an earlier conv/);
  assert.throws(() => g.conv("x2", g.input, 4, { kernel: 3, bias: true, shareWith: "head" }), /does not fit/);
  assert.throws(() => g.conv("x3", g.input, 3, { kernel: 3, shareWith: "head" }), /does not fit/);
  assert.throws(() => g.conv("x4", g.input, 3, { kernel: 1, bias: true, shareWith: "head" }), /does not fit/);
});

Deno.test("bilinear upsampling is TF's legacy resize and nearest stays the default", () => {
  const g = new GraphBuilder([2, 2, 1]);
  const up = g.upsample(g.input, 2, "bilinear");
  const near = g.upsample(g.input, 2);
  const graph = g.build({ up, near });
  assert.strictEqual("mode" in graph.nodes[near.id], false);
  assert.deepStrictEqual(inferShapes(graph).get(up.id), [4, 4, 1]);
  const x = tf.tensor4d([1, 2, 3, 4], [1, 2, 2, 1]);
  const out = tf.tidy(() => Array.from(runGraph(graph, new Map(), x).up.dataSync()));
  // Source row/column = destination / 2, interpolated, the last one clamped to the edge.
  assert.deepStrictEqual(out, [1, 1.5, 2, 2, 2, 2.5, 3, 3, 3, 3.5, 4, 4, 3, 3.5, 4, 4]);
  x.dispose();
});

Deno.test("training fuses a batch norm with the ReLU/ReLU6 that alone reads it; values and gradients unchanged", () => {
  const g = new GraphBuilder([6, 6, 3]);
  const c1 = g.conv("c1", g.input, 8, { kernel: 3 });
  const fused = g.act(g.bn("bn1", c1), "relu6"); // fused
  const c2 = g.conv("c2", fused, 8, { kernel: 1 });
  const shared = g.bn("bn2", c2); // read by two nodes: not fused
  const a = g.act(shared, "relu");
  const c3 = g.conv("c3", shared, 4, { kernel: 1 });
  const s = g.act(g.bn("bn3", c3), "sigmoid"); // sigmoid: not fused
  const graph = g.build({ a, s });
  const fusions = bnActFusions(graph);
  const names = new Map(graph.nodes.map((n) => [n.id, "name" in n ? n.name : n.op]));
  assert.deepStrictEqual([...fusions].map(([id, act]) => [names.get(id), act]), [["bn1", "relu6"]]);

  const params = initParams(graph, createRng(1));
  const x = tf.randomNormal([2, 6, 6, 3], 0, 1, "float32", 3) as tf.Tensor4D;
  const before = tf.memory().numTensors;
  const run = (f: ReadonlyMap<number, BnActivation>) =>
    tf.tidy(() => {
      const r = tf.variableGrads(() => {
        const o = runGraph(graph, params, x, { training: true, fusions: f });
        return tf.add(tf.sum(tf.mul(o.a, o.a)), tf.sum(o.s)) as tf.Scalar;
      });
      return [r.value.dataSync()[0], ...Object.values(r.grads).map((t) => Array.from(t.dataSync()))] as const;
    });
  const [v1, ...g1] = run(fusions);
  const [v0, ...g0] = run(new Map());
  assert(Math.abs(v1 - v0) <= 1e-6 * Math.abs(v0), `loss ${v1} vs ${v0}`);
  g1.forEach((gr, i) => {
    const scale = Math.max(...g0[i].map(Math.abs));
    const err = Math.max(...gr.map((v, k) => Math.abs(v - g0[i][k])));
    assert(err <= 1e-5 * scale, `gradient ${i}: ${err / scale}`);
  });
  assert.strictEqual(tf.memory().numTensors, before);
  tf.dispose([x, ...params.values()]);
});
