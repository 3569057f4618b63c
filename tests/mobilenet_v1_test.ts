import assert from "node:assert";
import * as tf from "@tensorflow/tfjs-core";
import { setBackend } from "../lib/engine/backend.ts";
import { countParams, GraphBuilder, initParams, runGraph } from "../lib/graph.ts";
import { mobileNetV1, type MobileNetV1Options } from "../lib/mobilenet_v1.ts";
import { createRng } from "../lib/rng.ts";

await setBackend("wasm");

function build(size: number, o: MobileNetV1Options = {}) {
  const g = new GraphBuilder([size, size, 3]);
  const f = mobileNetV1(g, g.input, o);
  return { g, f, graph: g.build({ out: f.layers[f.layers.length - 1] }) };
}

Deno.test("MobileNetV1 has the published parameter count of its convolutional body", () => {
  // Keras `MobileNet(alpha=1.0)` (the TF-slim network) reports 4,253,864 parameters, 4,231,976 trainable and
  // 21,888 non-trainable (BN moving statistics); its classifier is a 1x1 conv 1024 -> 1000 with bias,
  // 1,025,000 parameters. What remains is this body: convs without bias, BN gamma/beta + moving mean/variance.
  assert.deepStrictEqual(countParams(build(224).graph), {
    trainable: 4_231_976 - 1_025_000,
    total: 4_253_864 - 1_025_000,
  });
});

Deno.test("MobileNetV1 returns every layer by the ModelZoo's features_only index with TF-slim names", () => {
  const { f } = build(640);
  assert.strictEqual(f.layers.length, 27);
  assert.deepStrictEqual(f.names.slice(0, 3), ["Conv2d_0", "Conv2d_1_depthwise", "Conv2d_1_pointwise"]);
  // src/fpn.py MobileNetV1Fpn taps 10, 22, 26: strides 8, 16, 32 with 256, 512, 1024 channels.
  assert.deepStrictEqual([10, 22, 26].map((i) => [f.names[i], f.layers[i].shape]), [
    ["Conv2d_5_pointwise", [80, 80, 256]],
    ["Conv2d_11_pointwise", [40, 40, 512]],
    ["Conv2d_13_pointwise", [20, 20, 1024]],
  ]);
  // The 300x300 TF OD API SSD taps Conv2d_11_pointwise (19x19) and Conv2d_13_pointwise (10x10).
  const small = build(300).f;
  assert.deepStrictEqual([small.layers[22].shape, small.layers[26].shape], [[19, 19, 512], [10, 10, 1024]]);
});

Deno.test("MobileNetV1 stops at lastLayer", () => {
  const { f } = build(64, { lastLayer: 11 });
  assert.deepStrictEqual(f.names.at(-1), "Conv2d_6_depthwise");
  assert.strictEqual(f.layers.length, 12);
});

Deno.test("the depth multiplier scales stem and pointwise channels with TF-slim's floor and min depth", () => {
  const { f } = build(64, { depthMultiplier: 0.25, minDepth: 16 });
  // max(int(32 * 0.25), 16) = 16; max(int(64 * 0.25), 16) = 16; 1024 * 0.25 = 256.
  assert.deepStrictEqual([f.layers[0].shape[2], f.layers[2].shape[2], f.layers[26].shape[2]], [16, 16, 256]);
  // Depthwise layers keep their input's channels.
  assert.strictEqual(f.layers[3].shape[2], 16);
});

Deno.test("same padding puts the extra row at the bottom, symmetric padding on both sides", () => {
  const pads = (padding: "same" | "symmetric") => {
    const { graph } = build(32, { padding, lastLayer: 3 });
    return graph.nodes.flatMap((n) => n.op === "conv" ? [n.pads] : []);
  };
  // Conv2d_0 (3x3/2 on 32) and Conv2d_2_depthwise (3x3/2 on 16): TF "same" pads 0 top, 1 bottom.
  assert.deepStrictEqual(pads("same"), [[0, 1, 0, 1], [1, 1, 1, 1], [0, 0, 0, 0], [0, 1, 0, 1]]);
  assert.deepStrictEqual(pads("symmetric"), [[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1]]);
});

Deno.test("batch norm, bias, epsilon and activation follow the options", () => {
  const def = build(32, { lastLayer: 0 }).graph;
  const bn = def.nodes.find((n) => n.op === "bn");
  assert.deepStrictEqual(bn && bn.op === "bn" ? [bn.eps, bn.momentum] : [], [1e-5, 0.9]);
  assert.deepStrictEqual(def.nodes.flatMap((n) => n.op === "act" ? [n.fn] : []), ["relu6"]);
  const folded = build(32, { lastLayer: 2, batchNorm: false, bias: true, activation: "relu" }).graph;
  assert.strictEqual(folded.nodes.some((n) => n.op === "bn"), false);
  assert.deepStrictEqual(folded.params.map((p) => p.name), [
    "backbone.Conv2d_0.conv.weight",
    "backbone.Conv2d_0.conv.bias",
    "backbone.Conv2d_1_depthwise.conv.weight",
    "backbone.Conv2d_1_depthwise.conv.bias",
    "backbone.Conv2d_1_pointwise.conv.weight",
    "backbone.Conv2d_1_pointwise.conv.bias",
  ]);
  const tfSlim = build(32, { lastLayer: 0, bnEps: 1e-3 }).graph.nodes.find((n) => n.op === "bn");
  assert.strictEqual(tfSlim && tfSlim.op === "bn" ? tfSlim.eps : 0, 1e-3);
});

Deno.test("MobileNetV1 runs forward on wasm with finite outputs and no leaked tensors", () => {
  const { graph } = build(64, { depthMultiplier: 0.5 });
  const params = initParams(graph, createRng(7));
  const x = tf.randomUniform([1, 64, 64, 3], -1, 1, "float32", 1) as tf.Tensor4D;
  const run = () =>
    tf.tidy(() => {
      const out = runGraph(graph, params, x).out;
      return { shape: out.shape, finite: tf.all(tf.isFinite(out)).dataSync()[0] };
    });
  const first = run();
  const before = tf.memory().numTensors;
  const second = run();
  assert.deepStrictEqual(first, { shape: [1, 2, 2, 512], finite: 1 });
  assert.deepStrictEqual(second, first);
  assert.strictEqual(tf.memory().numTensors, before);
  tf.dispose([x, ...params.values()]);
});

Deno.test("the norm option folds BN into the stem and pointwise convs and keeps it on the depthwise ones", () => {
  // face-api's SSD (a TF OD API graph frozen for tfjs): `convolution_bn_offset` on full convs, BatchNorm on depthwise.
  const { graph } = build(32, { lastLayer: 2, norm: { conv: "bias", depthwise: "bn" } });
  assert.deepStrictEqual(graph.params.map((p) => p.name), [
    "backbone.Conv2d_0.conv.weight",
    "backbone.Conv2d_0.conv.bias",
    "backbone.Conv2d_1_depthwise.conv.weight",
    "backbone.Conv2d_1_depthwise.bn.gamma",
    "backbone.Conv2d_1_depthwise.bn.beta",
    "backbone.Conv2d_1_depthwise.bn.moving_mean",
    "backbone.Conv2d_1_depthwise.bn.moving_variance",
    "backbone.Conv2d_1_pointwise.conv.weight",
    "backbone.Conv2d_1_pointwise.conv.bias",
  ]);
  // Without it, the graph is unchanged.
  assert.deepStrictEqual(build(32, { lastLayer: 2 }).graph, build(32, { lastLayer: 2, norm: {} }).graph);
});
