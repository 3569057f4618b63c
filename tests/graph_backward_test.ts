import assert from "node:assert";
import * as tf from "@tensorflow/tfjs-core";
import { setBackend } from "../lib/engine/backend.ts";
import { gradStep, useUntapedBackward } from "../lib/engine/grad_step.ts";
import { canRunUntaped, graphGradients } from "../lib/engine/graph_backward.ts";
import {
  type BnUpdate,
  type Graph,
  GraphBuilder,
  inferShapes,
  initParams,
  type ParamMap,
  runGraph,
} from "../lib/graph.ts";
import { createRng } from "../lib/rng.ts";
import { ssdTiny } from "../lib/ssd_tiny.ts";
import { validate } from "../lib/config.ts";
import { type LossConfig, lossSpec } from "../lib/loss.ts";

/**
 * Every node kind and every way a gradient flows: fused and unfused activations, a padded and a plain max
 * pool, dropout at rates 0.3 and 0, a dilated conv, a depthwise conv, a weight-shared conv, an add of three
 * inputs (one of them read by two nodes), both upsamplings, a sigmoid, and heads concatenated from two
 * inputs and from one.
 */
function everyNode(): Graph {
  const g = new GraphBuilder([12, 12, 3]);
  const a1 = g.act(g.bn("b1", g.conv("c1", g.input, 8, { bias: true, stride: 2 })), "relu6");
  const a2 = g.act(g.bn("b2", g.conv("d1", a1, 1, { depthwise: true })), "relu");
  const a3 = g.act(g.conv("c2", a2, 8, { dilation: 2, bias: true }), "relu");
  const dropped = g.dropout(g.dropout(g.maxpool(a3, 3, 1, "same"), 0.3), 0);
  const sum = g.add(g.conv("c3", dropped, 8, { kernel: 1 }), g.conv("c3s", a2, 8, { kernel: 1, shareWith: "c3" }), a1);
  const sg = g.act(g.bn("b3", sum), "sigmoid");
  const m2 = g.maxpool(sg, 2, 2);
  const up = g.add(g.upsample(m2, 2), g.upsample(m2, 2, "bilinear"));
  const loc = g.concatAnchors([
    g.flattenHead(g.conv("h1", up, 8, { bias: true }), 4),
    g.flattenHead(g.conv("h2", m2, 8, { bias: true }), 4),
  ]);
  const cls = g.concatAnchors([g.flattenHead(g.conv("k1", a2, 6, { bias: true }), 3)]);
  return g.build({ loc, cls });
}

/** A fixed weighting of the outputs, so every output value's gradient differs. */
function weightedLoss(graph: Graph, params: ParamMap, x: tf.Tensor4D) {
  const shapes = tf.tidy(() => {
    const out = runGraph(graph, params, x, { training: true, bnUpdates: [] });
    return Object.fromEntries(Object.entries(out).map(([k, t]) => [k, t.shape]));
  });
  const weights = Object.fromEntries(
    Object.entries(shapes).map(([k, s], i) => [k, tf.randomNormal(s, 0, 1, "float32", 11 + i)]),
  );
  return {
    loss: (out: Record<string, tf.Tensor>) =>
      tf.addN(Object.keys(weights).map((k) => tf.sum(tf.mul(out[k], weights[k])))) as tf.Scalar,
    dispose: () => tf.dispose(Object.values(weights)),
  };
}

function bits(t: tf.Tensor): Uint32Array {
  return new Uint32Array(Float32Array.from(t.dataSync()).buffer);
}

function assertSameGradients(
  a: { value: tf.Scalar; grads: Record<string, tf.Tensor> },
  b: { value: tf.Scalar; grads: Record<string, tf.Tensor> },
  what: string,
) {
  assert.deepStrictEqual(bits(a.value), bits(b.value), `${what}: loss`);
  assert.deepStrictEqual(Object.keys(a.grads).sort(), Object.keys(b.grads).sort(), `${what}: gradient names`);
  for (const k of Object.keys(a.grads)) assert.deepStrictEqual(bits(a.grads[k]), bits(b.grads[k]), `${what}: ${k}`);
}

function disposeResult(r: { value: tf.Scalar; grads: Record<string, tf.Tensor> }, bn: BnUpdate[]) {
  tf.dispose([r.value, ...Object.values(r.grads), ...bn.flatMap((u) => [u.mean, u.variance])]);
}

// onnxruntime: with oneDNN and the native kernels, batch norm's dx is written over dy without the tape.
for (const backend of ["wasm", "cpu", "onnxruntime"]) {
  Deno.test(`graphGradients equals the tape bit for bit through every node kind (${backend})`, async () => {
    await setBackend(backend);
    const graph = everyNode();
    const params = initParams(graph, createRng(3));
    const x = tf.randomNormal([2, 12, 12, 3], 0, 1, "float32", 5) as tf.Tensor4D;
    const { loss, dispose } = weightedLoss(graph, params, x);
    const all = [...params.values()].filter((v) => v.trainable);
    // All parameters, and a frozen subset (the first conv and a batch norm's scale: no gradient flows into
    // the input then, and none of theirs is computed).
    const frozen = new Set(["c1.weight", "c1.bias", "b3.gamma"]);
    const subsets = [all, [...params].filter(([n, v]) => v.trainable && !frozen.has(n)).map(([, v]) => v)];
    const dropout = { seed: 9, offset: 2 };
    try {
      for (const trainable of subsets) {
        const before = tf.memory().numTensors;
        const bnTape: BnUpdate[] = [], bnOurs: BnUpdate[] = [];
        const tape = tf.variableGrads(
          () => loss(runGraph(graph, params, x, { training: true, bnUpdates: bnTape, dropout })),
          trainable,
        );
        const ours = graphGradients(graph, params, trainable, x, loss, { bnUpdates: bnOurs, dropout });
        assertSameGradients(tape, ours, `${backend}, ${trainable.length} trainable`);
        assert.strictEqual(Object.keys(ours.grads).length, trainable.length);
        assert.strictEqual(bnOurs.length, 3);
        bnOurs.forEach((u, i) => {
          assert.deepStrictEqual(bits(u.mean), bits(bnTape[i].mean), `${u.name} mean`);
          assert.deepStrictEqual(bits(u.variance), bits(bnTape[i].variance), `${u.name} variance`);
        });
        disposeResult(tape, bnTape);
        disposeResult(ours, bnOurs);
        assert.strictEqual(tf.memory().numTensors, before, "no tensor left behind");
      }
    } finally {
      dispose();
      tf.dispose([x, ...params.values()]);
    }
  });
}

const LOSS = validate({ kind: "focal" }, lossSpec) as LossConfig;

function tinyStep() {
  const graph = ssdTiny({ inputSize: 64, numClasses: 4, boxesPerCell: [4, 6, 6], channels: [8, 16, 16, 16, 16] });
  const params = initParams(graph, createRng(1));
  const rng = createRng(2);
  const a = inferShapes(graph).get(graph.outputs.loc)![0];
  const part = {
    images: Float32Array.from({ length: 2 * 64 * 64 * 3 }, () => rng() * 2 - 1),
    loc: Float32Array.from({ length: 2 * a * 4 }, () => rng() - 0.5),
    labels: Int32Array.from({ length: 2 * a }, () => (rng() < 0.05 ? 1 + Math.floor(rng() * 3) : 0)),
    size: 2,
  };
  const vars = [...params.values()].filter((v) => v.trainable);
  const run = (untaped: boolean) => {
    useUntapedBackward(untaped);
    try {
      return gradStep(graph, params, vars, part, { inputSize: 64, numAnchors: a, loss: LOSS });
    } finally {
      useUntapedBackward(true);
    }
  };
  return { run, params };
}

Deno.test("gradStep runs without the tape by default, with the tape's results", async () => {
  await setBackend("wasm");
  // Whether a tape records while the convs run: tfjs's engine holds it in its state while recording.
  const engine = tf.engine() as unknown as { state: { activeTape: unknown[] | null } };
  const conv = tf.getKernel("Conv2D", "wasm")!;
  const original = conv.kernelFunc;
  const taped: boolean[] = [];
  (conv as { kernelFunc: tf.KernelFunc }).kernelFunc = (args) => {
    taped.push(engine.state.activeTape !== null);
    return original(args);
  };
  const { run, params } = tinyStep();
  try {
    const a = run(true);
    assert.ok(taped.length > 0 && taped.every((t) => !t), "the untaped step recorded a tape");
    taped.length = 0;
    const b = run(false);
    assert.ok(taped.some((t) => t), "useUntapedBackward(false) records the tape");
    assertSameGradients({ value: a.loss, grads: a.grads }, { value: b.loss, grads: b.grads }, "gradStep");
    assert.deepStrictEqual(bits(a.cls), bits(b.cls));
    for (const r of [a, b]) {
      tf.dispose([r.loss, r.loc, r.cls, ...Object.values(r.grads)]);
      tf.dispose(r.bn.flatMap((u) => [u.mean, u.variance]));
    }
  } finally {
    (conv as { kernelFunc: tf.KernelFunc }).kernelFunc = original;
    tf.dispose([...params.values()]);
  }
});

Deno.test("SyncBatchNorm keeps the tape: its reduction is a custom gradient", async () => {
  await setBackend("wasm");
  assert.strictEqual(canRunUntaped({}), true);
  assert.strictEqual(canRunUntaped({ syncBn: (s) => s }), false);
  const graph = everyNode(), params = initParams(graph, createRng(1));
  const x = tf.zeros([1, 12, 12, 3]) as tf.Tensor4D;
  assert.throws(
    () => graphGradients(graph, params, [], x, (o) => tf.sum(o.loc) as tf.Scalar, { syncBn: (s) => s }),
    /syncBn/,
  );
  tf.dispose([x, ...params.values()]);
});
