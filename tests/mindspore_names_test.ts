// The MindSpore name maps of lib/mindspore_names.ts, checked against the ModelZoo SSD (mindspore-ai/models
// official/cv/SSD, commit eab643f5) and the MindSpore SSD tutorial.
//
// Besides golden names copied from the sources, every map is compared, name by name and shape by shape, with the
// parameters MindSpore itself would give the ModelZoo's network: the cells below transcribe the Python classes
// (src/ssd.py, src/vgg16.py, src/mobilenet_v1.py, src/fpn.py, src/resnet.py) and `parametersAndNames` follows
// `Cell.cells_and_names` / `Cell.parameters_and_names` of mindspore/nn/cell.py (depth first in attribute order, each
// cell and each parameter once, so a shared conv keeps its first path).
import assert from "node:assert";
import { assertThrowsError } from "./asserts.ts";
import { ConfigError, InputError } from "../lib/errors.ts";
import type { Graph } from "../lib/graph.ts";
import {
  checkpointFilterList,
  filterCheckpointNames,
  fromMsLayout,
  matchWrapped,
  mindsporeFlavour,
  mindsporeNames,
  MS_WRAPPER_PREFIXES,
  msShapeOf,
  type NameMapEntry,
  stripWrapperPrefix,
  toMsLayout,
  WRAPPER_PREFIX,
} from "../lib/mindspore_names.ts";
import { buildModel, loadSsdConfig, type SsdConfig } from "../lib/ssd_config.ts";
import { createRng } from "../lib/rng.ts";

// ---------------------------------------------------------------------------------------------------------------------
// A MindSpore cell tree: attribute name -> child cell, attribute name -> parameter (its shape), in assignment order.

interface Param {
  shape: number[];
}
interface Cell {
  cells: [string, Cell][];
  params: [string, Param][];
}

const node = (cells: [string, Cell][] = [], params: [string, Param][] = []): Cell => ({ cells, params });
/** `nn.SequentialCell(list)` and `nn.CellList(list)`: children named by their index. */
const sequential = (list: Cell[]): Cell => node(list.map((c, i) => [String(i), c]));
/** An activation (`nn.ReLU`, `nn.ReLU6`): no parameters, but it takes an index in a sequence. */
const act = (): Cell => node();
/** `nn.Conv2d`: weight [out, in / group, k, k]; bias only with `has_bias=True` (default False). */
function conv2d(cin: number, cout: number, k: number, o: { group?: number; bias?: boolean } = {}): Cell {
  const params: [string, Param][] = [["weight", { shape: [cout, cin / (o.group ?? 1), k, k] }]];
  if (o.bias) params.push(["bias", { shape: [cout] }]);
  return node([], params);
}
/** `nn.BatchNorm2d`. */
const batchNorm2d = (c: number): Cell =>
  node([], ["gamma", "beta", "moving_mean", "moving_variance"].map((n) => [n, { shape: [c] }]));
const range = (a: number, b?: number) =>
  b === undefined ? [...Array(a).keys()] : [...Array(b - a).keys()].map((i) => a + i);

/** mindspore/nn/cell.py `parameters_and_names` over `cells_and_names`: full name -> shape, in MindSpore's order. */
function parametersAndNames(root: Cell): Map<string, number[]> {
  const out = new Map<string, number[]>();
  const cellsSeen = new Set<Cell>(), paramsSeen = new Set<Param>();
  const walk = (c: Cell, prefix: string) => {
    if (cellsSeen.has(c)) return;
    cellsSeen.add(c);
    for (const [n, p] of c.params) {
      if (!paramsSeen.has(p)) paramsSeen.add(p), out.set(prefix ? `${prefix}.${n}` : n, p.shape);
    }
    for (const [n, child] of c.cells) walk(child, prefix ? `${prefix}.${n}` : n);
  };
  walk(root, "");
  return out;
}

// ---------------------------------------------------------------------------------------------------------------------
// The ModelZoo's cells (src/ssd.py unless said otherwise). Strides and paddings change no parameter and are left out.

/** `_last_conv2d` (lines 51-57): depthwise conv, `_bn`, ReLU6, 1x1 conv with bias (`_conv2d`, lines 41-43). */
const lastConv2d = (cin: number, cout: number) =>
  sequential([conv2d(cin, cin, 3, { group: cin }), batchNorm2d(cin), act(), conv2d(cin, cout, 1, { bias: true })]);

/** `MultiBox` (lines 184-200); the tutorial's `MultiBox` is the same with its constants. */
const multiBox = (outChannels: number[], numDefault: number[], numClasses: number) =>
  node([
    ["multi_loc_layers", sequential(outChannels.map((c, k) => lastConv2d(c, 4 * numDefault[k])))],
    ["multi_cls_layers", sequential(outChannels.map((c, k) => lastConv2d(c, numClasses * numDefault[k])))],
  ]);

/** `ConvBNReLU` (lines 78-93): `features = SequentialCell([conv or shared_conv, _bn(out_planes), ReLU6])`. */
function convBNReLU(cin: number, cout: number, k = 3, groups = 1, shared?: Cell): Cell {
  const conv = shared ?? (groups === 1 ? conv2d(cin, cout, k) : conv2d(cin, cin, k, { group: cin }));
  return node([["features", sequential([conv, batchNorm2d(cout), act()])]]);
}

/** `InvertedResidual` (lines 116-133); `hidden_dim = int(round(inp * expand_ratio))`. */
function invertedResidual(inp: number, oup: number, expandRatio: number): Cell {
  const hidden = Math.round(inp * expandRatio);
  const layers = expandRatio !== 1 ? [convBNReLU(inp, hidden, 1)] : [];
  layers.push(convBNReLU(hidden, hidden, 3, hidden), conv2d(hidden, oup, 1), batchNorm2d(oup));
  return node([["conv", sequential(layers)]]);
}

/** `SSDWithMobileNetV2` (lines 595-636), width 1. */
function ssdWithMobileNetV2(): Cell {
  const setting = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2], [
    6,
    320,
    1,
    1,
  ]];
  let input = 32, layerIndex = 0;
  let expand13: Cell | undefined;
  const features = [convBNReLU(3, input, 3)];
  for (const [t, c, n] of setting) {
    for (let i = 0; i < n; i++) {
      if (layerIndex === 13) expand13 = convBNReLU(input, Math.round(input * t), 1);
      features.push(invertedResidual(input, c, t));
      input = c;
      layerIndex++;
    }
  }
  features.push(convBNReLU(input, 1280, 1));
  return node([
    ["expand_layer_conv_13", expand13!],
    ["features_1", sequential(features.slice(0, 14))],
    ["features_2", sequential(features.slice(14))],
  ]);
}

/** ModelZoo config values a model reads. */
interface ZooConfig {
  numClasses: number;
  numDefault: number[];
  extrasIn: number[];
  extrasOut: number[];
  extrasRatio: number[];
  featureSize: number[];
  numAdditionLayers: number;
}

/** `SSD300(ssd_mobilenet_v2(), config)` (lines 307-321). */
const ssd300 = (c: ZooConfig) =>
  node([
    ["backbone", ssdWithMobileNetV2()],
    [
      "multi_residual",
      sequential(range(2, 6).map((i) => invertedResidual(c.extrasIn[i], c.extrasOut[i], c.extrasRatio[i]))),
    ],
    ["multi_box", multiBox(c.extrasOut, c.numDefault, c.numClasses)],
  ]);

/** src/vgg16.py `_make_layer` (lines 46-55, `ssd_vgg_bn: False`; the tutorial's has no BN at all): conv, ReLU, .... */
const makeLayer = (channels: number[]) =>
  sequential(range(1, channels.length).flatMap((i) => [conv2d(channels[i - 1], channels[i], 3), act()]));

/** `SSD300VGG16` (lines 697-725) with src/vgg16.py `VGG16` (lines 58-65); the tutorial's `SSD300Vgg16` and `Vgg16`. */
const ssd300Vgg16 = (numDefault: number[], numClasses: number) =>
  node([
    [
      "backbone",
      node([
        ["b1", makeLayer([3, 64, 64])],
        ["b2", makeLayer([64, 128, 128])],
        ["b3", makeLayer([128, 256, 256, 256])],
        ["b4", makeLayer([256, 512, 512, 512])],
        ["b5", makeLayer([512, 512, 512, 512])],
      ]),
    ],
    ["b6_1", conv2d(512, 1024, 3)],
    ["b7_1", conv2d(1024, 1024, 1)],
    ["b8_1", conv2d(1024, 256, 1)],
    ["b8_2", conv2d(256, 512, 3)],
    ["b9_1", conv2d(512, 128, 1)],
    ["b9_2", conv2d(128, 256, 3)],
    ["b10_1", conv2d(256, 128, 1)],
    ["b10_2", conv2d(128, 256, 3)],
    ["b11_1", conv2d(256, 128, 1)],
    ["b11_2", conv2d(128, 256, 3)],
    ["multi_box", multiBox([512, 1024, 512, 256, 256, 256], numDefault, numClasses)],
  ]);

/** src/mobilenet_v1.py `conv_bn_relu` (lines 19-26). */
const convBnRelu = (cin: number, cout: number, k: number, depthwise: boolean) =>
  sequential([conv2d(cin, cout, k, { group: depthwise ? cin : 1 }), batchNorm2d(cout), act()]);

/** src/mobilenet_v1.py `MobileNetV1(features_only=True)` (lines 36-72): in, out, kernel, depthwise of `cnn`. */
const MOBILENET_V1_CNN: [number, number, number, boolean][] = [
  [3, 32, 3, false],
  [32, 32, 3, true],
  [32, 64, 1, false],
  [64, 64, 3, true],
  [64, 128, 1, false],
  [128, 128, 3, true],
  [128, 128, 1, false],
  [128, 128, 3, true],
  [128, 256, 1, false],
  [256, 256, 3, true],
  [256, 256, 1, false],
  [256, 256, 3, true],
  [256, 512, 1, false],
  ...range(5).flatMap((): [number, number, number, boolean][] => [[512, 512, 3, true], [512, 512, 1, false]]),
  [512, 512, 3, true],
  [512, 1024, 1, false],
  [1024, 1024, 3, true],
  [1024, 1024, 1, false],
];
const mobileNetV1 = () =>
  node([["network", sequential(MOBILENET_V1_CNN.map(([i, o, k, d]) => convBnRelu(i, o, k, d)))]]);

/** src/fpn.py `FpnTopDown` (lines 26-37) and `BottomUp` (lines 66-72). */
const fpnTopDown = (ins: number[], out: number) =>
  node([
    ["lateral_convs_list", sequential(ins.map((c) => conv2d(c, out, 1, { bias: true })))],
    ["fpn_convs_list", sequential(ins.map(() => convBnRelu(out, out, 3, false)))],
  ]);
const bottomUp = (levels: number, channels: number) =>
  node([["blocks", sequential(range(levels).map(() => convBnRelu(channels, channels, 3, false)))]]);

/** `WeightSharedMultiBox(config)` (lines 224-272), `loc_cls_shared_addition=False`. */
function weightSharedMultiBox(c: ZooConfig): Cell {
  const ch = c.extrasOut[0], k = c.numDefault[0], levels = c.featureSize.length, depth = c.numAdditionLayers;
  const locConvs = range(depth).map(() => conv2d(ch, ch, 3, { bias: true }));
  const clsConvs = range(depth).map(() => conv2d(ch, ch, 3, { bias: true }));
  const tower = (convs: Cell[]) =>
    sequential(range(levels).map(() => sequential(range(depth).map((x) => convBNReLU(ch, ch, 3, 1, convs[x])))));
  return node([
    ["addition_layer_loc", tower(locConvs)],
    ["addition_layer_cls", tower(clsConvs)],
    ["loc_layers", sequential([conv2d(ch, 4 * k, 3, { bias: true })])],
    ["cls_layers", sequential([conv2d(ch, c.numClasses * k, 3, { bias: true })])],
  ]);
}

/** `SsdMobilenetV1Fpn` (lines 356-360) with src/fpn.py `MobileNetV1Fpn` (lines 99-107). */
const ssdMobilenetV1Fpn = (c: ZooConfig) =>
  node([
    ["multi_box", weightSharedMultiBox(c)],
    [
      "feature_extractor",
      node([["mobilenet_v1", mobileNetV1()], ["fpn", fpnTopDown([256, 512, 1024], 256)], [
        "bottom_up",
        bottomUp(2, 256),
      ]]),
    ],
  ]);

/** src/resnet.py `ResidualBlock` (lines 59-83). */
function residualBlock(cin: number, cout: number, stride: number): Cell {
  const ch = cout / 4;
  const cells: [string, Cell][] = [
    ["conv1", conv2d(cin, ch, 1)],
    ["bn1", batchNorm2d(ch)],
    ["conv2", conv2d(ch, ch, 3)],
    ["bn2", batchNorm2d(ch)],
    ["conv3", conv2d(ch, cout, 1)],
    ["bn3", batchNorm2d(cout)],
    ["relu", act()],
  ];
  if (stride !== 1 || cin !== cout) {
    cells.push(["down_sample_layer", sequential([conv2d(cin, cout, 1), batchNorm2d(cout)])]);
  }
  return node(cells);
}

/** src/resnet.py `resnet50()` (lines 202-216) = `ResNet` (lines 129-187). */
function resnet50(): Cell {
  const nums = [3, 4, 6, 3], ins = [64, 256, 512, 1024], outs = [256, 512, 1024, 2048], strides = [1, 2, 2, 2];
  const layers = nums.map((n, s): [string, Cell] => [
    `layer${s + 1}`,
    sequential(
      range(n).map((b) => b === 0 ? residualBlock(ins[s], outs[s], strides[s]) : residualBlock(outs[s], outs[s], 1)),
    ),
  ]);
  return node([["conv1", conv2d(3, 64, 7)], ["bn1", batchNorm2d(64)], ...layers]);
}

/** `SsdResNet50Fpn` (lines 435-439) with src/fpn.py `ResNetV1Fpn` (lines 120-124). */
const ssdResNet50Fpn = (c: ZooConfig) =>
  node([
    ["multi_box", weightSharedMultiBox(c)],
    [
      "feature_extractor",
      node([["resnet", resnet50()], ["fpn", fpnTopDown([512, 1024, 2048], 256)], ["bottom_up", bottomUp(2, 256)]]),
    ],
  ]);

/** `SsdMobilenetV1Feature` (lines 387-401) with src/mobilenet_v1.py `MobileNetV1Feature` (lines 108-112). */
const ssdMobilenetV1Feature = (c: ZooConfig) =>
  node([
    ["multi_box", multiBox(c.extrasOut, c.numDefault, c.numClasses)],
    ["feature_extractor", node([["mobilenet_v1", mobileNetV1()]])],
    ["multi_residual", sequential(range(2, 6).map((i) => convBNReLU(c.extrasIn[i], c.extrasOut[i], 3)))],
  ]);

const RATIO = [0.2, 0.2, 0.2, 0.25, 0.5, 0.25];
const FPN: ZooConfig = {
  // config/ssd_mobilenet_v1_fpn_config.yaml and ssd_resnet50_fpn_config.yaml: num_default (l. 38), extras_*_channels
  // (l. 39-40), feature_size (l. 43), num_addition_layers (l. 51), num_classes (l. 102 / 103).
  numClasses: 81,
  numDefault: [6, 6, 6, 6, 6],
  extrasIn: [256, 512, 1024, 256, 256],
  extrasOut: [256, 256, 256, 256, 256],
  extrasRatio: RATIO,
  featureSize: [80, 40, 20, 10, 5],
  numAdditionLayers: 4,
};

/** Per workbench config: the ModelZoo (or tutorial) network MindSpore would build, and its parameter count. */
const CASES: { file: string; count: number; reference: () => Cell }[] = [
  // The tutorial's MultiBox: num_classes = 81, num_default = [4, 6, 6, 6, 4, 4] ("Model Building", class MultiBox).
  { file: "configs/ssd300_vgg16.yaml", count: 107, reference: () => ssd300Vgg16([4, 6, 6, 6, 4, 4], 81) },
  // config/ssd_vgg16_config.yaml: num_default (l. 38), num_classes (l. 98).
  { file: "configs/ssd_vgg16.yaml", count: 107, reference: () => ssd300Vgg16([3, 6, 6, 6, 6, 6], 81) },
  {
    file: "configs/ssd300_mobilenetv2.yaml",
    count: 409,
    // config/ssd300_config.yaml: num_default (l. 39), extras_in/out_channels (l. 40-41), extras_ratio (l. 43).
    reference: () =>
      ssd300({
        ...FPN,
        numDefault: [3, 6, 6, 6, 6, 6],
        extrasIn: [256, 576, 1280, 512, 256, 256],
        extrasOut: [576, 1280, 512, 256, 256, 128],
      }),
  },
  { file: "configs/ssd_mobilenetv1_fpn.yaml", count: 346, reference: () => ssdMobilenetV1Fpn(FPN) },
  { file: "configs/ssd_resnet50_fpn.yaml", count: 476, reference: () => ssdResNet50Fpn(FPN) },
  {
    file: "configs/ssd_mobilenetv1_300.yaml",
    count: 239,
    // config/ssd_mobilenet_v1_300_config_gpu.yaml: num_default (l. 42), extras_in/out_channels (l. 43-44).
    reference: () =>
      ssdMobilenetV1Feature({
        ...FPN,
        numDefault: [3, 6, 6, 6, 6, 6],
        extrasIn: [256, 512, 1024, 512, 256, 256],
        extrasOut: [512, 1024, 512, 256, 256, 128],
      }),
  },
];

const loaded = new Map<string, { cfg: SsdConfig; graph: Graph; map: NameMapEntry[] }>();
function load(file: string) {
  if (!loaded.has(file)) {
    const cfg = loadSsdConfig(file);
    const graph = buildModel(cfg);
    loaded.set(file, { cfg, graph, map: mindsporeNames(cfg, graph) });
  }
  return loaded.get(file)!;
}
const byMs = (map: NameMapEntry[]) => new Map(map.map((e) => [e.mindspore, e]));

// ---------------------------------------------------------------------------------------------------------------------

for (const { file, count, reference } of CASES) {
  Deno.test(`mindsporeNames(${file}): every parameter once, unique MindSpore names, consistent shapes`, () => {
    const { graph, map } = load(file);
    assert.strictEqual(map.length, count);
    assert.deepStrictEqual(map.map((e) => e.workbench), graph.params.map((p) => p.name));
    assert.strictEqual(new Set(map.map((e) => e.workbench)).size, graph.params.length);
    assert.strictEqual(new Set(map.map((e) => e.mindspore)).size, map.length);
    for (const e of map) {
      const [a, b, c, d] = e.shape;
      const expected = e.layout === "conv"
        ? [d, c, a, b]
        : e.layout === "depthwise"
        ? [c * d, 1, a, b]
        : e.layout === "dense"
        ? [b, a]
        : e.shape;
      assert.deepStrictEqual(e.msShape, expected, e.workbench);
      assert.strictEqual(e.layout === "same", !e.workbench.endsWith(".weight"), e.workbench);
      if (e.layout === "depthwise") assert.ok(/\.(dw(\.conv)?|Conv2d_\d+_depthwise\.conv)\.weight$/.test(e.workbench));
    }
  });

  Deno.test(`mindsporeNames(${file}): the names and shapes MindSpore gives the reference network`, () => {
    const { map } = load(file);
    const ours = new Map(map.map((e) => [e.mindspore, e.msShape]));
    const theirs = parametersAndNames(reference());
    const missing = [...theirs.keys()].filter((n) => !ours.has(n));
    const extra = [...ours.keys()].filter((n) => !theirs.has(n));
    assert.deepStrictEqual([missing, extra], [[], []]);
    for (const [name, shape] of theirs) assert.deepStrictEqual(ours.get(name), shape, name);
  });
}

/** Golden MindSpore names and shapes, copied by hand from the sources (line numbers of commit eab643f5). */
const GOLDEN: Record<string, [string, number[]][]> = {
  // The tutorial ("Model Building"): Vgg16.b1 = _make_layer([3, 64, 64]); SSD300Vgg16.b6_1 = nn.Conv2d(512, 1024, 3,
  // dilation=6); MultiBox.multi_cls_layers = nn.CellList(cls_layers) of _last_conv2d = SequentialCell([depthwise_conv,
  // bn, ReLU6, conv]). The three examples are the tutorial's real attribute paths.
  "configs/ssd300_vgg16.yaml": [
    ["backbone.b1.0.weight", [64, 3, 3, 3]],
    ["backbone.b1.2.weight", [64, 64, 3, 3]], // conv, ReLU, conv: the second conv is child 2
    ["backbone.b5.4.weight", [512, 512, 3, 3]],
    ["b6_1.weight", [1024, 512, 3, 3]],
    ["b7_1.weight", [1024, 1024, 1, 1]],
    ["b8_2.weight", [512, 256, 3, 3]],
    ["b11_2.weight", [256, 128, 3, 3]],
    ["multi_box.multi_cls_layers.0.0.weight", [512, 1, 3, 3]],
    ["multi_box.multi_cls_layers.0.1.gamma", [512]],
    ["multi_box.multi_cls_layers.0.1.beta", [512]],
    ["multi_box.multi_cls_layers.0.1.moving_mean", [512]],
    ["multi_box.multi_cls_layers.0.1.moving_variance", [512]],
    ["multi_box.multi_loc_layers.0.3.weight", [16, 512, 1, 1]], // 4 boxes x 4
    ["multi_box.multi_loc_layers.5.3.weight", [16, 256, 1, 1]],
    ["multi_box.multi_loc_layers.5.3.bias", [16]],
    ["multi_box.multi_cls_layers.5.3.weight", [324, 256, 1, 1]], // 4 boxes x 81 classes
    ["multi_box.multi_cls_layers.5.3.bias", [324]],
  ],
  // src/vgg16.py l. 61 `self.b1 = _make_layer([3, 64, 64])`, l. 50 `nn.Conv2d(..., kernel_size=3)`; src/ssd.py
  // l. 705 `self.b6_1`, l. 722 `self.b11_2`, l. 725 `self.multi_box = MultiBox(config)`, l. 198-199 `multi_loc_layers`,
  // `multi_cls_layers`, l. 57 `_last_conv2d`; num_default [3, 6, 6, 6, 6, 6] (config/ssd_vgg16_config.yaml l. 38).
  "configs/ssd_vgg16.yaml": [
    ["backbone.b1.0.weight", [64, 3, 3, 3]],
    ["backbone.b4.4.weight", [512, 512, 3, 3]],
    ["b6_1.weight", [1024, 512, 3, 3]],
    ["b9_1.weight", [128, 512, 1, 1]],
    ["b11_2.weight", [256, 128, 3, 3]],
    ["multi_box.multi_loc_layers.0.1.gamma", [512]],
    ["multi_box.multi_loc_layers.0.1.beta", [512]],
    ["multi_box.multi_loc_layers.0.1.moving_mean", [512]],
    ["multi_box.multi_loc_layers.0.1.moving_variance", [512]],
    ["multi_box.multi_loc_layers.0.3.weight", [12, 512, 1, 1]], // 3 boxes x 4
    ["multi_box.multi_loc_layers.5.3.weight", [24, 256, 1, 1]],
    ["multi_box.multi_cls_layers.5.3.weight", [486, 256, 1, 1]],
    ["multi_box.multi_cls_layers.5.3.bias", [486]],
  ],
  // src/ssd.py: l. 619 `features = [ConvBNReLU(3, input_channel, stride=2)]`, l. 93 `self.features`, l. 635-636
  // `features_1` / `features_2`, l. 627 `self.expand_layer_conv_13`, l. 633 the last ConvBNReLU (features[18]),
  // l. 125-133 InvertedResidual `self.conv`, l. 320 `self.multi_residual`, l. 321 `self.multi_box`.
  "configs/ssd300_mobilenetv2.yaml": [
    ["backbone.features_1.0.features.0.weight", [32, 3, 3, 3]],
    ["backbone.features_1.0.features.1.gamma", [32]],
    ["backbone.features_1.0.features.1.beta", [32]],
    ["backbone.features_1.0.features.1.moving_mean", [32]],
    ["backbone.features_1.0.features.1.moving_variance", [32]],
    ["backbone.features_1.1.conv.0.features.0.weight", [32, 1, 3, 3]], // t = 1: no expansion, depthwise first
    ["backbone.features_1.1.conv.1.weight", [16, 32, 1, 1]],
    ["backbone.features_1.1.conv.2.gamma", [16]],
    ["backbone.features_1.2.conv.0.features.0.weight", [96, 16, 1, 1]],
    ["backbone.features_1.13.conv.3.moving_variance", [96]],
    ["backbone.expand_layer_conv_13.features.0.weight", [576, 96, 1, 1]],
    ["backbone.features_2.0.conv.1.features.0.weight", [576, 1, 3, 3]],
    ["backbone.features_2.4.features.0.weight", [1280, 320, 1, 1]],
    ["multi_residual.0.conv.0.features.0.weight", [256, 1280, 1, 1]],
    ["multi_residual.3.conv.2.weight", [128, 64, 1, 1]],
    ["multi_box.multi_loc_layers.0.0.weight", [576, 1, 3, 3]],
    ["multi_box.multi_loc_layers.5.3.weight", [24, 128, 1, 1]],
    ["multi_box.multi_loc_layers.5.3.bias", [24]],
    ["multi_box.multi_cls_layers.5.3.weight", [486, 128, 1, 1]],
    ["multi_box.multi_cls_layers.5.3.bias", [486]],
  ],
  // src/ssd.py l. 360 `self.feature_extractor = mobilenet_v1_fpn(config)`, l. 358 `self.multi_box`, l. 251-252
  // `addition_layer_loc` / `addition_layer_cls`, l. 270-271 `loc_layers` / `cls_layers`; src/fpn.py l. 101
  // `self.mobilenet_v1`, l. 106 `self.fpn`, l. 107 `self.bottom_up`, l. 36-37 `lateral_convs_list`, `fpn_convs_list`,
  // l. 72 `self.blocks`; src/mobilenet_v1.py l. 72 `self.network = nn.CellList(cnn)`. The predictor names are those of
  // config/ssd_mobilenet_v1_fpn_config.yaml l. 80-81 (checkpoint_filter_list), without `network.`.
  "configs/ssd_mobilenetv1_fpn.yaml": [
    ["feature_extractor.mobilenet_v1.network.0.0.weight", [32, 3, 3, 3]],
    ["feature_extractor.mobilenet_v1.network.0.1.gamma", [32]],
    ["feature_extractor.mobilenet_v1.network.0.1.beta", [32]],
    ["feature_extractor.mobilenet_v1.network.0.1.moving_mean", [32]],
    ["feature_extractor.mobilenet_v1.network.0.1.moving_variance", [32]],
    ["feature_extractor.mobilenet_v1.network.1.0.weight", [32, 1, 3, 3]],
    ["feature_extractor.mobilenet_v1.network.26.0.weight", [1024, 1024, 1, 1]],
    ["feature_extractor.fpn.lateral_convs_list.0.weight", [256, 256, 1, 1]],
    ["feature_extractor.fpn.lateral_convs_list.2.bias", [256]],
    ["feature_extractor.fpn.fpn_convs_list.1.0.weight", [256, 256, 3, 3]],
    ["feature_extractor.bottom_up.blocks.1.1.moving_variance", [256]],
    ["multi_box.addition_layer_loc.0.0.features.0.weight", [256, 256, 3, 3]],
    ["multi_box.addition_layer_loc.0.0.features.0.bias", [256]],
    ["multi_box.addition_layer_cls.4.3.features.1.gamma", [256]],
    ["multi_box.loc_layers.0.weight", [24, 256, 3, 3]],
    ["multi_box.loc_layers.0.bias", [24]],
    ["multi_box.cls_layers.0.weight", [486, 256, 3, 3]],
    ["multi_box.cls_layers.0.bias", [486]],
  ],
  // src/ssd.py l. 437-439; src/fpn.py l. 122-124 `self.resnet`, `self.fpn`, `self.bottom_up`; src/resnet.py l. 139-140
  // `self.conv1 = _conv7x7(3, 64, stride=2)`, `self.bn1`, l. 143 `self.layer1`, l. 66-72 `conv1` ... `bn3`, l. 82
  // `self.down_sample_layer = nn.SequentialCell([_conv1x1(...), _bn(...)])`.
  "configs/ssd_resnet50_fpn.yaml": [
    ["feature_extractor.resnet.conv1.weight", [64, 3, 7, 7]],
    ["feature_extractor.resnet.bn1.gamma", [64]],
    ["feature_extractor.resnet.bn1.beta", [64]],
    ["feature_extractor.resnet.bn1.moving_mean", [64]],
    ["feature_extractor.resnet.bn1.moving_variance", [64]],
    ["feature_extractor.resnet.layer1.0.down_sample_layer.0.weight", [256, 64, 1, 1]],
    ["feature_extractor.resnet.layer1.0.down_sample_layer.1.gamma", [256]],
    ["feature_extractor.resnet.layer3.5.conv2.weight", [256, 256, 3, 3]],
    ["feature_extractor.resnet.layer4.2.bn3.moving_variance", [2048]],
    ["feature_extractor.fpn.lateral_convs_list.2.weight", [256, 2048, 1, 1]],
    ["feature_extractor.bottom_up.blocks.0.0.weight", [256, 256, 3, 3]],
    ["multi_box.addition_layer_cls.0.3.features.0.weight", [256, 256, 3, 3]],
    ["multi_box.loc_layers.0.weight", [24, 256, 3, 3]],
    ["multi_box.cls_layers.0.weight", [486, 256, 3, 3]],
    ["multi_box.cls_layers.0.bias", [486]],
  ],
  // src/ssd.py l. 391 `self.feature_extractor = mobilenet_v1_Feature(config)`, l. 397-400 `multi_residual` of
  // ConvBNReLU(in, out, stride), l. 401 `self.multi_box`; src/mobilenet_v1.py l. 110 `self.mobilenet_v1`, l. 67-68
  // Conv13_depthwise / Conv13_pointwise (entries 25, 26).
  "configs/ssd_mobilenetv1_300.yaml": [
    ["feature_extractor.mobilenet_v1.network.0.0.weight", [32, 3, 3, 3]],
    ["feature_extractor.mobilenet_v1.network.25.0.weight", [1024, 1, 3, 3]],
    ["feature_extractor.mobilenet_v1.network.26.1.gamma", [1024]],
    ["feature_extractor.mobilenet_v1.network.26.1.beta", [1024]],
    ["feature_extractor.mobilenet_v1.network.26.1.moving_mean", [1024]],
    ["feature_extractor.mobilenet_v1.network.26.1.moving_variance", [1024]],
    ["multi_residual.0.features.0.weight", [512, 1024, 3, 3]],
    ["multi_residual.3.features.1.gamma", [128]],
    ["multi_box.multi_loc_layers.0.0.weight", [512, 1, 3, 3]],
    ["multi_box.multi_loc_layers.1.0.weight", [1024, 1, 3, 3]],
    ["multi_box.multi_loc_layers.5.3.weight", [24, 128, 1, 1]],
    ["multi_box.multi_cls_layers.5.3.weight", [486, 128, 1, 1]],
    ["multi_box.multi_cls_layers.5.3.bias", [486]],
  ],
};

Deno.test("mindsporeNames(): golden names and shapes from the ModelZoo and tutorial sources", () => {
  for (const [file, golden] of Object.entries(GOLDEN)) {
    const map = byMs(load(file).map);
    for (const [name, shape] of golden) {
      assert.ok(map.has(name), `${file}: ${name} is not mapped`);
      assert.deepStrictEqual(map.get(name)!.msShape, shape, `${file}: ${name}`);
    }
  }
  // Workbench side of a few, for the reader.
  const vgg = byMs(load("configs/ssd300_vgg16.yaml").map);
  assert.deepStrictEqual(
    ["backbone.b1.0.weight", "backbone.b1.2.weight", "b6_1.weight", "multi_box.multi_cls_layers.0.1.gamma"].map((n) =>
      vgg.get(n)!.workbench
    ),
    ["backbone.b1.0.weight", "backbone.b1.1.weight", "b6.weight", "multibox.cls0.bn.gamma"],
  );
  const fpn = byMs(load("configs/ssd_mobilenetv1_fpn.yaml").map);
  assert.strictEqual(
    fpn.get("multi_box.addition_layer_loc.0.2.features.0.weight")!.workbench,
    "multibox.loc_tower.2.weight",
  );
  assert.strictEqual(
    fpn.get("multi_box.addition_layer_loc.3.2.features.1.beta")!.workbench,
    "multibox.loc_tower.2.bn3.beta",
  );
});

Deno.test("mindsporeFlavour() and WRAPPER_PREFIX: the tutorial saves the bare network, the ModelZoo `network.`", () => {
  assert.strictEqual(mindsporeFlavour(load("configs/ssd300_vgg16.yaml").cfg), "tutorial");
  for (const { file } of CASES.slice(1)) assert.strictEqual(mindsporeFlavour(load(file).cfg), "modelzoo", file);
  assert.deepStrictEqual(WRAPPER_PREFIX, { tutorial: "", modelzoo: "network." });
  assert.deepStrictEqual(MS_WRAPPER_PREFIXES, ["network.", ""]);
  // The two VGG16 configs differ only in their heads' shapes.
  const tutorial = load("configs/ssd300_vgg16.yaml").map, zoo = load("configs/ssd_vgg16.yaml").map;
  assert.deepStrictEqual(tutorial.map((e) => e.mindspore), zoo.map((e) => e.mindspore));
  assert.strictEqual(stripWrapperPrefix("network.backbone.b1.0.weight"), "backbone.b1.0.weight");
  assert.strictEqual(stripWrapperPrefix("moments.network.b6_1.weight"), "moments.network.b6_1.weight");
  assert.strictEqual(stripWrapperPrefix("multi_box.loc_layers.0.bias"), "multi_box.loc_layers.0.bias");
});

Deno.test("matchWrapped(): finds the prefix a checkpoint uses and what it lacks", () => {
  const { cfg, map } = load("configs/ssd300_mobilenetv2.yaml");
  // As ModelZoo train.py saves TrainingWrapper(SSDWithLossCell(ssd)) with nn.Momentum: network.*, moments.network.*,
  // learning_rate, momentum, global_step.
  const params = map.map((e) => "network." + e.mindspore);
  const state = [...params.map((n) => "moments." + n), "learning_rate", "momentum", "global_step"];
  const zoo = matchWrapped([...params, ...state], map);
  assert.strictEqual(zoo.prefix, "network.");
  assert.strictEqual(zoo.found.size, map.length);
  assert.deepStrictEqual([zoo.missing, zoo.unclaimed], [[], state]);
  assert.strictEqual(zoo.found.get("backbone.stem.conv.weight"), "network.backbone.features_1.0.features.0.weight");
  // As the tutorial saves: the bare network.
  const vgg = load("configs/ssd300_vgg16.yaml").map;
  const bare = matchWrapped(vgg.map((e) => e.mindspore), vgg);
  assert.deepStrictEqual([bare.prefix, bare.found.size, bare.missing.length, bare.unclaimed], ["", 107, 0, []]);
  // A pre_trained file filtered as train.py does with filter_weight: the heads are missing.
  const { kept, dropped } = filterCheckpointNames(params, checkpointFilterList(cfg));
  const filtered = matchWrapped(kept, map);
  assert.strictEqual(filtered.missing.length, dropped.length);
  assert.strictEqual(dropped.length, 6 * 2 * 7); // 6 levels, loc and cls, 7 tensors per _last_conv2d
  assert.ok(filtered.missing.every((e) => e.workbench.startsWith("multibox.")));
  // The FPN models filter their predictors only.
  const fpn = load("configs/ssd_resnet50_fpn.yaml");
  const fpnNames = fpn.map.map((e) => "network." + e.mindspore);
  assert.deepStrictEqual(
    filterCheckpointNames(fpnNames, checkpointFilterList(fpn.cfg)).dropped.sort(),
    [
      "network.multi_box.cls_layers.0.bias",
      "network.multi_box.cls_layers.0.weight",
      "network.multi_box.loc_layers.0.bias",
      "network.multi_box.loc_layers.0.weight",
    ],
  );
  // Another model's checkpoint: MultiBox head names are shared between models, so a partial match shows in
  // `missing`; with no name in common at all, an InputError.
  const partial = matchWrapped(params, vgg);
  assert.deepStrictEqual([partial.found.size, partial.missing.length], [6 * 2 * 7, 107 - 6 * 2 * 7]);
  assertThrowsError(() => matchWrapped(fpnNames, vgg), InputError, "none of the model's 107", "backbone.b1.0.weight");
});

Deno.test("toMsLayout() / fromMsLayout(): hand-checked conv, depthwise and dense cases", () => {
  const entry = (layout: NameMapEntry["layout"], shape: number[]): NameMapEntry => ({
    workbench: "w",
    mindspore: "w",
    layout,
    shape,
    msShape: msShapeOf(layout, shape),
  });
  // Conv HWIO [1, 2, 2, 3] with value 6x + 3i + o at (0, x, i, o); OIHW [3, 2, 1, 2] lists o, then i, then x.
  const conv = entry("conv", [1, 2, 2, 3]);
  const hwio = Float32Array.from(range(12));
  const oihw = [0, 6, 3, 9, 1, 7, 4, 10, 2, 8, 5, 11];
  assert.deepStrictEqual(conv.msShape, [3, 2, 1, 2]);
  assert.deepStrictEqual(Array.from(toMsLayout(hwio, conv)), oihw);
  assert.deepStrictEqual(Array.from(fromMsLayout(Float32Array.from(oihw), conv)), range(12));
  // Depthwise [2, 1, 2, 1] with value 2y + c; MindSpore [2, 1, 2, 1] (c, 0, y, 0) lists channel 0's taps first.
  const dw = entry("depthwise", [2, 1, 2, 1]);
  assert.deepStrictEqual(Array.from(toMsLayout(Float32Array.from([0, 1, 2, 3]), dw)), [0, 2, 1, 3]);
  // Depthwise with multiplier 2: (y, x, c, j) goes to output channel 2c + j.
  const dw2 = entry("depthwise", [1, 1, 2, 2]);
  assert.deepStrictEqual(dw2.msShape, [4, 1, 1, 1]);
  assert.deepStrictEqual(Array.from(toMsLayout(Float32Array.from([0, 1, 2, 3]), dw2)), [0, 1, 2, 3]);
  // Dense [in 2, out 3] -> [out 3, in 2].
  const dense = entry("dense", [2, 3]);
  assert.deepStrictEqual(Array.from(toMsLayout(Float32Array.from(range(6)), dense)), [0, 3, 1, 4, 2, 5]);
  assert.deepStrictEqual(Array.from(toMsLayout(Float32Array.from([5, 6]), entry("same", [2]))), [5, 6]);
  // Sizes are checked against the side's own shape.
  assertThrowsError(() => toMsLayout(new Float32Array(11), conv), InputError, "11 values", "[1,2,2,3]");
  assertThrowsError(() => fromMsLayout(new Float32Array(13), conv), InputError, "13 values", "[3,2,1,2]");
});

Deno.test("toMsLayout() -> fromMsLayout() is the identity; elements land where OIHW says", () => {
  const rand = createRng(7);
  const pick = (n: number) => 1 + Math.floor(rand() * n);
  for (let t = 0; t < 50; t++) {
    const [kh, kw, a, b] = [pick(3), pick(3), pick(5), pick(5)];
    for (
      const [layout, shape] of [["conv", [kh, kw, a, b]], ["depthwise", [kh, kw, a, pick(2)]], ["dense", [a, b]], [
        "same",
        [a],
      ]] as const
    ) {
      const e: NameMapEntry = {
        workbench: "w",
        mindspore: "w",
        layout,
        shape: [...shape],
        msShape: msShapeOf(layout, shape),
      };
      const values = Float32Array.from(range(shape.reduce((x, y) => x * y, 1)), () => rand() - 0.5);
      const ms = toMsLayout(values, e);
      assert.deepStrictEqual(fromMsLayout(ms, e), values);
      if (layout === "conv") {
        const [y, x, i, o] = [pick(kh) - 1, pick(kw) - 1, pick(a) - 1, pick(b) - 1];
        assert.strictEqual(ms[((o * a + i) * kh + y) * kw + x], values[((y * kw + x) * a + i) * b + o]);
      }
    }
  }
  // And on the real entries of a model: a conv, a depthwise conv and a BN vector.
  const map = load("configs/ssd_mobilenetv1_300.yaml").map;
  for (const layout of ["conv", "depthwise", "same"] as const) {
    const e = map.find((x) => x.layout === layout)!;
    const values = Float32Array.from(range(e.shape.reduce((x, y) => x * y, 1)), () => rand());
    assert.deepStrictEqual(fromMsLayout(toMsLayout(values, e), e), values, e.workbench);
  }
});

Deno.test("mindsporeNames(): a ConfigError for models and options MindSpore does not have", () => {
  for (const file of ["configs/demo.yaml", "configs/faceapi_ssd_mobilenetv1.yaml"]) {
    const cfg = loadSsdConfig(file);
    const e = assertThrowsError(() => mindsporeNames(cfg), ConfigError, cfg.model.arch, "no MindSpore counterpart");
    assert.ok(e.message.includes("model.arch"), e.message);
    assertThrowsError(() => mindsporeFlavour(cfg), ConfigError, "no MindSpore counterpart");
  }
  const conv3x3 = loadSsdConfig("configs/ssd300_vgg16.yaml", { "model.head": "conv3x3" });
  assertThrowsError(() => mindsporeNames(conv3x3), ConfigError, "model.head", "_last_conv2d");
  // A parameter no ModelZoo cell has (here, the head's 1x1 conv given a stray name).
  const { cfg, graph } = load("configs/ssd_vgg16.yaml");
  const odd: Graph = {
    ...graph,
    params: graph.params.map((p) => p.name === "b7.weight" ? { ...p, name: "b7.extra.weight" } : p),
  };
  assertThrowsError(() => mindsporeNames(cfg, odd), ConfigError, "b7.extra.weight", "no counterpart", "ssd_vgg16");
});
