import assert from "node:assert";
import * as tf from "@tensorflow/tfjs-core";
import { setBackend } from "../lib/engine/backend.ts";
import { gradStep } from "../lib/engine/grad_step.ts";
import { type Graph, GraphBuilder, inferShapes, initParams, nodeInputs, runGraph } from "../lib/graph.ts";
import { planSegments, segmentedGradients } from "../lib/engine/recompute.ts";
import { createRng } from "../lib/rng.ts";
import { ssdMobileNetV1Fpn } from "../lib/ssd_fpn.ts";
import { ssdTiny } from "../lib/ssd_tiny.ts";
import { lossSpec } from "../lib/loss.ts";
import { validate } from "../lib/config.ts";
import type { LossConfig } from "../lib/loss.ts";

await setBackend("wasm");

// A 128 px MobileNetV1-FPN (skip connections across segments, a weight-shared head) and the demo's tiny net.
const GRAPHS: [string, () => Graph][] = [
  [
    "MobileNetV1-FPN at 128 px",
    () => ssdMobileNetV1Fpn({ inputSize: 128, numClasses: 4, boxesPerCell: [6, 6, 6, 6, 6] }),
  ],
  ["ssd_tiny", () => ssdTiny({ inputSize: 64, numClasses: 4, boxesPerCell: [4, 6, 6], channels: [8, 16, 16, 16, 16] })],
];

function batchFor(graph: Graph, b: number, seed: number) {
  const rng = createRng(seed);
  const s = graph.input.shape[0], a = inferShapes(graph).get(graph.outputs.loc)![0];
  return {
    part: {
      images: Float32Array.from({ length: b * s * s * 3 }, () => rng() * 2 - 1),
      loc: Float32Array.from({ length: b * a * 4 }, () => rng() - 0.5),
      labels: Int32Array.from({ length: b * a }, () => (rng() < 0.05 ? 1 + Math.floor(rng() * 3) : 0)),
      size: b,
    },
    anchors: a,
  };
}

function dispose(r: ReturnType<typeof gradStep>) {
  tf.dispose([r.loss, r.loc, r.cls, ...Object.values(r.grads)]);
  for (const u of r.bn) tf.dispose([u.mean, u.variance]);
}

function close(a: tf.Tensor, b: tf.Tensor, what: string) {
  const x = a.dataSync(), y = b.dataSync();
  let scale = 0, diff = 0;
  for (let i = 0; i < x.length; i++) {
    scale = Math.max(scale, Math.abs(x[i]));
    diff = Math.max(diff, Math.abs(x[i] - y[i]));
  }
  assert.ok(diff <= 1e-5 * Math.max(scale, 1e-6), `${what}: max diff ${diff} vs scale ${scale}`);
}

Deno.test("planSegments: every segment reads only its own nodes and its declared inputs", () => {
  for (const [, build] of GRAPHS) {
    const g = build();
    for (const count of [1, 2, 5, 9]) {
      const segs = planSegments(g, count);
      assert.ok(segs.length <= count && segs.length >= 1);
      assert.deepStrictEqual(segs.flatMap((s) => s.nodes).map((n) => n.id), g.nodes.map((n) => n.id));
      const exported = new Set(segs.flatMap((s) => s.exports));
      for (const s of segs) {
        const own = new Set(s.nodes.map((n) => n.id));
        for (const n of s.nodes) {
          for (const i of nodeInputs(n)) assert.ok(own.has(i) || s.inputs.includes(i), `node ${n.id} reads ${i}`);
        }
        for (const i of s.inputs) assert.ok(exported.has(i), `input ${i} is exported`);
      }
      for (const id of Object.values(g.outputs)) assert.ok(exported.has(id));
    }
  }
});

for (const [label, build] of GRAPHS) {
  // The FPN once (8 s a step pair on wasm); the tiny net with both losses.
  for (const kind of label.startsWith("ssd_tiny") ? ["focal", "softmax_hnm"] as const : ["focal"] as const) {
    Deno.test(`gradStep in 3 and 9 recomputed segments equals the plain step: ${label}, ${kind}`, () => {
      const graph = build();
      const params = initParams(graph, createRng(3));
      const trainable = [...params.values()].filter((v) => v.trainable);
      const { part, anchors } = batchFor(graph, 2, 7);
      const loss = validate({ kind }, lossSpec) as LossConfig;
      const o = { inputSize: graph.input.shape[0], numAnchors: anchors, loss };
      const before = tf.memory().numTensors;
      const plain = gradStep(graph, params, trainable, part, o);
      for (const segments of [3, 9]) {
        const seg = gradStep(graph, params, trainable, part, { ...o, segments });
        close(plain.loss, seg.loss, "loss");
        close(plain.cls, seg.cls, "cls");
        assert.deepStrictEqual(Object.keys(seg.grads).sort(), Object.keys(plain.grads).sort());
        for (const name of Object.keys(plain.grads)) close(plain.grads[name], seg.grads[name], name);
        assert.strictEqual(seg.bn.length, plain.bn.length);
        plain.bn.forEach((u, i) => {
          assert.strictEqual(seg.bn[i].name, u.name);
          close(u.mean, seg.bn[i].mean, `${u.name} mean`);
          close(u.variance, seg.bn[i].variance, `${u.name} variance`);
        });
        dispose(seg);
      }
      dispose(plain);
      assert.strictEqual(tf.memory().numTensors, before, "no tensor leaks");
      tf.dispose([...params.values()]);
    });
  }
}

Deno.test("segmentedGradients sums the gradients of a tensor read by several later segments", () => {
  // x0 feeds the next conv and, two segments later, the residual add: its gradient has two sources.
  const b = new GraphBuilder([6, 6, 2]);
  const x0 = b.act(b.conv("c0", b.input, 3), "relu");
  const x1 = b.bn("b1", b.conv("c1", x0, 3));
  const x2 = b.act(b.conv("c2", x1, 3), "relu6");
  const graph = b.build({ out: b.add(x0, x2) });
  const params = initParams(graph, createRng(5));
  const trainable = [...params.values()].filter((v) => v.trainable);
  const rng = createRng(6);
  const x = tf.tensor4d(Float32Array.from({ length: 2 * 6 * 6 * 2 }, () => rng() * 2 - 1), [2, 6, 6, 2]);
  const loss = (out: Record<string, tf.Tensor>) => tf.sum(tf.square(out.out)) as tf.Scalar;
  const before = tf.memory().numTensors;
  const plain = tf.variableGrads(() => loss(runGraph(graph, params, x, { training: true })), trainable);
  const segs = planSegments(graph, graph.nodes.length);
  assert.ok(segs.filter((s) => s.inputs.includes(x0.id)).length >= 2, "x0 is read by two segments");
  const seg = segmentedGradients(graph, params, trainable, x, segs, loss);
  close(plain.value, seg.value, "loss");
  for (const name of Object.keys(plain.grads)) close(plain.grads[name], seg.grads[name], name);
  tf.dispose([plain.value, seg.value, ...Object.values(plain.grads), ...Object.values(seg.grads)]);
  assert.strictEqual(tf.memory().numTensors, before);
  tf.dispose([x, ...params.values()]);
});
