import assert from "node:assert";
import * as fs from "node:fs";
import * as tf from "@tensorflow/tfjs-core";
import { setBackend } from "../lib/engine/backend.ts";
import { parseYaml, validate } from "../lib/config.ts";
import { type DefaultBoxesConfig, defaultBoxesFromConfig, defaultBoxesSpec } from "../lib/default_boxes.ts";
import { countParams, type Graph, inferShapes, initParams, type ParamSpec, runGraph } from "../lib/graph.ts";
import { createRng } from "../lib/rng.ts";
import { resnetInitOverrides } from "../lib/resnet50.ts";
import { type SsdFpnOptions, ssdMobileNetV1Fpn, ssdResNet50Fpn } from "../lib/ssd_fpn.ts";
import { checkForward } from "./model_checks.ts";

await setBackend("wasm");

const MODELS: [string, (o: SsdFpnOptions) => Graph, string][] = [
  ["SSD-MobileNetV1-FPN", ssdMobileNetV1Fpn, "ssd_mobilenetv1_fpn.yaml"],
  ["SSD-ResNet50-FPN", ssdResNet50Fpn, "ssd_resnet50_fpn.yaml"],
];
const opts = (inputSize = 640, numClasses = 81): SsdFpnOptions => ({
  inputSize,
  numClasses,
  boxesPerCell: [6, 6, 6, 6, 6],
});

/**
 * `initParams` draws 33M truncated normals for ResNet50 in ~2.5 s; these tests only need finite, He-scaled
 * weights, so a cheap uniform generator (He uniform bound sqrt(6 / fanIn)) fills them instead.
 */
const fastWeights = {
  ".weight": (p: ParamSpec) => {
    const n = p.shape.reduce((a, b) => a * b, 1), bound = Math.sqrt(6 / p.fanIn), out = new Float32Array(n);
    let s = 12345;
    for (let i = 0; i < n; i++) {
      s = (Math.imul(s, 1103515245) + 12345) >>> 0;
      out[i] = (s / 2 ** 32 * 2 - 1) * bound;
    }
    return out;
  },
};

function perLevel(graph: Graph, output: string): number[] {
  const shapes = inferShapes(graph);
  const concat = graph.nodes.find((n) => n.id === graph.outputs[output]);
  assert.ok(concat && concat.op === "concat_anchors");
  return concat.inputs.map((i) => shapes.get(i)![0]);
}

function anchorsPerLayer(file: string): number[] {
  const raw = parseYaml(fs.readFileSync(new URL(`../configs/anchors/${file}`, import.meta.url), "utf8"), file);
  return defaultBoxesFromConfig(validate(raw.anchors, defaultBoxesSpec) as DefaultBoxesConfig).perLayer;
}

for (const [label, build, file] of MODELS) {
  Deno.test(`${label} predicts 51150 boxes at 640, level by level as its grid anchors`, () => {
    const graph = build(opts());
    const shapes = inferShapes(graph);
    assert.deepStrictEqual(shapes.get(graph.outputs.loc), [51150, 4, 1]);
    assert.deepStrictEqual(shapes.get(graph.outputs.cls), [51150, 81, 1]);
    const anchors = anchorsPerLayer(file);
    assert.deepStrictEqual(perLevel(graph, "loc"), anchors);
    assert.deepStrictEqual(perLevel(graph, "cls"), anchors);
  });

  Deno.test(`${label} feeds five 256-channel pyramid levels of 80, 40, 20, 10, 5 to the head`, () => {
    const graph = build(opts());
    const shapes = inferShapes(graph);
    const towerInputs = graph.nodes.flatMap((n) =>
      n.op === "conv" && /^multibox\.loc_tower\.0(\.level\d)?$/.test(n.name) ? [shapes.get(n.input)] : []
    );
    assert.deepStrictEqual(towerInputs, [[80, 80, 256], [40, 40, 256], [20, 20, 256], [10, 10, 256], [5, 5, 256]]);
    // The top-down path resizes as ops.ResizeBilinear does.
    assert.deepStrictEqual(graph.nodes.flatMap((n) => n.op === "upsample" ? [`${n.scale} ${n.mode}`] : []), [
      "2 bilinear",
      "2 bilinear",
    ]);
  });

  Deno.test(`${label} shares the head's convs across levels but keeps a batch norm per level`, () => {
    const graph = build(opts());
    const head = graph.params.filter((p) => p.name.startsWith("multibox."));
    // Owned convs: 4 + 4 tower layers and the two predictors, weight and bias each, declared once.
    const convs = head.filter((p) => p.kind === "weight").map((p) => p.node);
    assert.deepStrictEqual(convs, [
      "multibox.loc_tower.0",
      "multibox.loc_tower.1",
      "multibox.loc_tower.2",
      "multibox.loc_tower.3",
      "multibox.cls_tower.0",
      "multibox.cls_tower.1",
      "multibox.cls_tower.2",
      "multibox.cls_tower.3",
      "multibox.loc",
      "multibox.cls",
    ]);
    const shared = graph.nodes.filter((n) => n.op === "conv" && n.shareWith !== undefined);
    assert.strictEqual(shared.length, 4 * 10);
    const bns = graph.nodes.filter((n) => n.op === "bn" && n.name.startsWith("multibox."));
    assert.strictEqual(bns.length, 5 * 8);
    assert.deepStrictEqual(
      [...new Set(bns.map((n) => n.op === "bn" ? `${n.eps}/${n.momentum}` : ""))],
      ["0.001/0.97"],
    );
  });
}

// Parameter counts read off src/fpn.py and src/ssd.py by hand (trainable values; BN: gamma + beta per channel).
const conv = (k: number, cin: number, cout: number, bias: boolean) => k * k * cin * cout + (bias ? cout : 0);
const fpnParams = (inputs: number[]) =>
  inputs.reduce((a, c) => a + conv(1, c, 256, true), 0) + // lateral 1x1 with bias
  3 * (conv(3, 256, 256, false) + 512) + // output conv_bn_relu per level
  2 * (conv(3, 256, 256, false) + 512); // BottomUp(2, 256, 3, 2)
const headParams = 2 * 4 * conv(3, 256, 256, true) + // loc and cls towers, shared convs with bias
  5 * 2 * 4 * 512 + // one BN per tower layer and level
  conv(3, 256, 4 * 6, true) + conv(3, 256, 81 * 6, true); // shared predictors

Deno.test("SSD-MobileNetV1-FPN has the parameter count read off the ModelZoo definition", () => {
  // MobileNetV1 body: Keras MobileNet 4,231,976 trainable minus its 1,025,000-parameter classifier.
  const expected = 4_231_976 - 1_025_000 + fpnParams([256, 512, 1024]) + headParams;
  const { trainable, total } = countParams(ssdMobileNetV1Fpn(opts()));
  assert.strictEqual(trainable, expected);
  assert.deepStrictEqual([trainable, total], [12_534_846, 12_579_774]);
});

Deno.test("SSD-ResNet50-FPN has the parameter count read off the ModelZoo definition", () => {
  // ResNet50 body: torchvision resnet50 25,557,032 minus its 2048 -> 1000 classifier (2,049,000).
  const expected = 25_557_032 - 2_049_000 + fpnParams([512, 1024, 2048]) + headParams;
  const { trainable, total } = countParams(ssdResNet50Fpn(opts()));
  assert.strictEqual(trainable, expected);
  assert.deepStrictEqual([trainable, total], [33_294_654, 33_370_814]);
});

for (const [label, build] of MODELS) {
  Deno.test(`${label} runs forward at 128x128 on wasm with finite outputs and no leaked tensors`, () => {
    // 128 keeps every level an exact halving: 16, 8, 4, 2, 1 cells, (256 + 64 + 16 + 4 + 1) * 6 = 2046 boxes.
    const graph = build(opts(128, 5));
    const params = initParams(graph, createRng(5), { overrides: { ...resnetInitOverrides(), ...fastWeights } });
    const x = tf.randomUniform([1, 128, 128, 3], -1, 1, "float32", 6) as tf.Tensor4D;
    assert.deepStrictEqual(checkForward(graph, params, x), [[1, 2046, 4], [1, 2046, 5]]);
    tf.dispose([x, ...params.values()]);
  });
}

Deno.test("the shared predictor's gradient collects every level's contribution", () => {
  const graph = ssdMobileNetV1Fpn(opts(128, 3));
  const params = initParams(graph, createRng(8), { overrides: fastWeights });
  const x = tf.randomUniform([1, 128, 128, 3], -1, 1, "float32", 9) as tf.Tensor4D;
  const w = params.get("multibox.loc.bias")!;
  // d(sum of loc)/d(loc bias) is the number of loc rows each bias entry feeds: one per anchor of every level.
  const grad = tf.tidy(() => {
    const { grads } = tf.variableGrads(() => tf.sum(runGraph(graph, params, x).loc) as tf.Scalar, [w]);
    return Array.from(grads[w.name].dataSync());
  });
  assert.deepStrictEqual(grad, new Array(24).fill(256 + 64 + 16 + 4 + 1));
  tf.dispose([x, ...params.values()]);
});
