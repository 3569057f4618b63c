import assert from "node:assert";
import * as fs from "node:fs";
import * as tf from "@tensorflow/tfjs-core";
import { setBackend } from "../lib/engine/backend.ts";
import { parseYaml, validate } from "../lib/config.ts";
import { type DefaultBoxesConfig, defaultBoxesFromConfig, defaultBoxesSpec } from "../lib/default_boxes.ts";
import {
  applyBnUpdates,
  type BnUpdate,
  countParams,
  type Graph,
  GraphBuilder,
  inferShapes,
  initParams,
  runGraph,
} from "../lib/graph.ts";
import { mobileNetV2 } from "../lib/mobilenet_v2.ts";
import { createRng } from "../lib/rng.ts";
import { ssdMobileNetV2 } from "../lib/ssd_mobilenet_v2.ts";
import { checkForward } from "./model_checks.ts";

await setBackend("wasm");

const BOXES = [3, 6, 6, 6, 6, 6];
const ssd300 = (inputSize = 300, numClasses = 81) => ssdMobileNetV2({ inputSize, numClasses, boxesPerCell: BOXES });

/** Anchors contributed by each level of an output: the sizes of the heads its concat_anchors joins. */
function perLevel(graph: Graph, output: string): number[] {
  const shapes = inferShapes(graph);
  const concat = graph.nodes.find((n) => n.id === graph.outputs[output]);
  assert.ok(concat && concat.op === "concat_anchors");
  return concat.inputs.map((i) => shapes.get(i)![0]);
}

Deno.test("SSD300-MobileNetV2 predicts 1917 boxes, level by level as the ssd300 anchors", () => {
  const graph = ssd300();
  const shapes = inferShapes(graph);
  assert.deepStrictEqual(shapes.get(graph.outputs.loc), [1917, 4, 1]);
  assert.deepStrictEqual(shapes.get(graph.outputs.cls), [1917, 81, 1]);
  const name = "ssd300_mobilenetv2.yaml";
  const raw = parseYaml(fs.readFileSync(new URL(`../configs/anchors/${name}`, import.meta.url), "utf8"), name);
  const anchors = defaultBoxesFromConfig(validate(raw.anchors, defaultBoxesSpec) as DefaultBoxesConfig);
  assert.deepStrictEqual(perLevel(graph, "loc"), anchors.perLayer);
  assert.deepStrictEqual(perLevel(graph, "cls"), anchors.perLayer);
  // feature_size [19, 10, 5, 3, 2, 1]: each level's boxes are its cells times its boxes per cell.
  assert.deepStrictEqual(anchors.perLayer.map((n, l) => Math.sqrt(n / BOXES[l])), [19, 10, 5, 3, 2, 1]);
});

Deno.test("the SSD feature maps have the ssd300 extras_out_channels", () => {
  const graph = ssd300();
  const shapes = inferShapes(graph);
  // Each head's depthwise conv reads one feature map; the loc heads come in level order.
  const maps = graph.nodes.flatMap((n) =>
    n.op === "conv" && /^multibox\.loc\d\.dw$/.test(n.name) ? [shapes.get(n.input)!] : []
  );
  assert.deepStrictEqual(maps, [[19, 19, 576], [10, 10, 1280], [5, 5, 512], [3, 3, 256], [2, 2, 256], [1, 1, 128]]);
});

Deno.test("every batch norm has the ModelZoo's eps 1e-3 and momentum 0.97", () => {
  const bns = ssd300().nodes.flatMap((n) => n.op === "bn" ? [`${n.eps}/${n.momentum}`] : []);
  assert.deepStrictEqual([...new Set(bns)], ["0.001/0.97"]);
});

Deno.test("the MobileNetV2 body has torchvision's parameter count", () => {
  // torchvision mobilenet_v2 (the same network: stem 32, the paper's stages, 1x1 to 1280, no conv biases) has
  // 3,504,872 parameters with its 1280 -> 1000 classifier (1,281,000). BN moving statistics are not parameters there.
  const g = new GraphBuilder([224, 224, 3]);
  const { out } = mobileNetV2(g, g.input, { tapBlock: null });
  assert.strictEqual(countParams(g.build({ out })).trainable, 3_504_872 - 1_281_000);
});

Deno.test("SSD300-MobileNetV2 has the parameter count read off the ModelZoo definition", () => {
  // Worked out from src/ssd.py by hand, trainable values only (BN: gamma + beta per channel).
  const pw = (cin: number, cout: number) => cin * cout + 2 * cout; // 1x1 conv + BN
  const dw = (c: number) => 9 * c + 2 * c; // depthwise 3x3 + BN
  const body = 3_504_872 - 1_281_000; // torchvision, see above
  const expand13 = pw(96, 576); // expand_layer_conv_13
  // InvertedResidual(in, out, stride, ratio, last_relu=True) for i = 2..5: hidden = round(in * ratio).
  const ir = (cin: number, cout: number, hidden: number) => pw(cin, hidden) + dw(hidden) + pw(hidden, cout);
  const extras = ir(1280, 512, 256) + ir(512, 256, 128) + ir(256, 256, 128) + ir(256, 128, 64);
  // _last_conv2d: depthwise 3x3 + BN + 1x1 with bias, for loc (4k) and cls (81k) on every map.
  const head = (c: number, out: number) => dw(c) + c * out + out;
  const heads = [576, 1280, 512, 256, 256, 128].reduce(
    (a, c, l) => a + head(c, 4 * BOXES[l]) + head(c, 81 * BOXES[l]),
    0,
  );
  const trainable = body + expand13 + extras + heads;
  const { trainable: got, total } = countParams(ssd300());
  assert.strictEqual(got, trainable);
  assert.strictEqual(got, 4_393_461);
  assert.strictEqual(total, 4_445_365);
});

Deno.test("SSD300-MobileNetV2 runs forward at 300x300 on wasm with finite outputs and no leaked tensors", () => {
  const graph = ssd300();
  const params = initParams(graph, createRng(3));
  const x = tf.randomUniform([1, 300, 300, 3], -1, 1, "float32", 2) as tf.Tensor4D;
  assert.deepStrictEqual(checkForward(graph, params, x), [[1, 1917, 4], [1, 1917, 81]]);
  tf.dispose([x, ...params.values()]);
});

Deno.test("SSD300-MobileNetV2 trains: every trainable parameter gets a finite gradient on wasm", () => {
  // A 64x64 input keeps it fast: maps 4, 2, 1, 1, 1, 1.
  const graph = ssd300(64, 5);
  const params = initParams(graph, createRng(4));
  const x = tf.randomUniform([2, 64, 64, 3], -1, 1, "float32", 5) as tf.Tensor4D;
  const step = () => {
    const updates: BnUpdate[] = [];
    const result = tf.tidy(() => {
      const { value, grads } = tf.variableGrads(() => {
        const { loc, cls } = runGraph(graph, params, x, { training: true, bnUpdates: updates });
        return tf.add(tf.sum(loc), tf.mean(cls)) as tf.Scalar;
      });
      const names = Object.keys(grads);
      const finite = names.every((n) => tf.all(tf.isFinite(grads[n])).dataSync()[0] === 1);
      return { loss: value.dataSync()[0], names: names.length, finite };
    });
    const bnCount = updates.length;
    applyBnUpdates(params, updates);
    return { ...result, bnCount };
  };
  const first = step();
  const before = tf.memory().numTensors;
  const second = step();
  assert.strictEqual(tf.memory().numTensors, before);
  const trainable = graph.params.filter((p) => p.kind !== "moving_mean" && p.kind !== "moving_variance").length;
  assert.strictEqual(first.names, trainable);
  assert.ok(first.finite && second.finite && Number.isFinite(first.loss));
  assert.strictEqual(first.bnCount, graph.nodes.filter((n) => n.op === "bn").length);
  tf.dispose([x, ...params.values()]);
});
