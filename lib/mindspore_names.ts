/**
 * Parameter names and tensor layouts between the workbench's models and MindSpore's, so that a `.ckpt` of the
 * MindSpore ModelZoo SSD (mindspore-ai/models `official/cv/SSD`, commit eab643f5) or of the MindSpore SSD tutorial
 * loads into the workbench model of the matching config, and back. This module works on names and plain
 * `Float32Array`s only; the `.ckpt` wire format is lib/mindspore_ckpt.ts's.
 *
 * How MindSpore names a parameter (`mindspore/nn/cell.py`): assigning a cell to an attribute renames its parameters
 * `<attribute>.<path inside the cell>` (`Cell.update_parameters_name`); `nn.SequentialCell` and `nn.CellList` name
 * their children `0`, `1`, ... in list order, activations included, so a conv followed by a ReLU is child 0 and the
 * next conv child 2. A parameter reachable by several paths (a conv shared between cells) is named by the first path
 * in attribute order (`parameters_and_names` walks `cells_and_names` depth first and yields each parameter once).
 * `nn.Conv2d` holds `weight` [out, in / group, kh, kw] and, with `has_bias` (default false), `bias`;
 * `nn.BatchNorm2d` holds `gamma`, `beta`, `moving_mean`, `moving_variance`; `nn.Dense` `weight` [out, in] and `bias`.
 *
 * The maps, workbench -> MindSpore. `<cbr>` is a conv + BN sequence: `conv.weight` -> `0.weight`, `bn.<k>` ->
 * `1.<k>`, `<k>` one of `gamma`, `beta`, `moving_mean`, `moving_variance`.
 *
 * - VGG16 (`ssd300_vgg16`, tutorial and ModelZoo `ssd_vgg16`): `backbone.b<n>.<i>.weight` ->
 *   `backbone.b<n>.<2i>.weight` (`_make_layer`: conv, ReLU, conv, ...); `b6.weight` -> `b6_1.weight`,
 *   `b7.weight` -> `b7_1.weight`, `b8_1.weight` ... `b11_2.weight` unchanged.
 * - MultiBox heads (VGG16, MobileNetV2, MobileNetV1-300): `multibox.loc<h>.{dw.weight, bn.<k>, pw.weight, pw.bias}`
 *   -> `multi_box.multi_loc_layers.<h>.{0.weight, 1.<k>, 3.weight, 3.bias}` (`_last_conv2d`); `cls` likewise.
 * - MobileNetV2 (`ssd300_mobilenetv2`): `backbone.stem`, `backbone.block<i>`, `backbone.last` are entries f = 0,
 *   i + 1, blocks + 1 of `features`: `backbone.features_1.<f>` for f < 14, else `backbone.features_2.<f - 14>`. In a
 *   block, `expand.<cbr>`, `dw.<cbr>`, `project.conv.weight`, `project.bn.<k>` -> `conv.0.features.<cbr>`,
 *   `conv.1.features.<cbr>`, `conv.2.weight`, `conv.3.<k>` (one less without `expand`); the stem and last ->
 *   `features.<cbr>`; `backbone.expand_layer_conv_13.*` -> `backbone.expand_layer_conv_13.features.<cbr>`;
 *   `extras.<e>.*` -> `multi_residual.<e>.*` as a block.
 * - MobileNetV1 (`backbone.` in the FPN model, `feature_extractor.mobilenet_v1.` in the 300 one): `Conv2d_0`,
 *   `Conv2d_<k>_depthwise`, `Conv2d_<k>_pointwise` -> `feature_extractor.mobilenet_v1.network.{0, 2k-1, 2k}.<cbr>`;
 *   the 300 model's `multi_residual.<i>.*` -> `multi_residual.<i>.features.<cbr>`.
 * - ResNet50 (`ssd_resnet50_fpn`): `backbone.stem.{conv, bn}` -> `feature_extractor.resnet.{conv1, bn1}`;
 *   `backbone.layer<s>.<b>.conv<n>.{conv, bn}` -> `feature_extractor.resnet.layer<s>.<b>.{conv<n>, bn<n>}`;
 *   `backbone.layer<s>.<b>.down_sample.*` -> `feature_extractor.resnet.layer<s>.<b>.down_sample_layer.<cbr>`.
 * - FPN (both FPN models): `fpn.lateral<i>.{weight, bias}` -> `feature_extractor.fpn.lateral_convs_list.<i>.*`;
 *   `fpn.output<i>.*` -> `feature_extractor.fpn.fpn_convs_list.<i>.<cbr>`; `fpn.bottom_up<u>.*` ->
 *   `feature_extractor.bottom_up.blocks.<u>.<cbr>`.
 * - WeightSharedMultiBox (both FPN models): the shared `multibox.loc_tower.<j>.{weight, bias}` ->
 *   `multi_box.addition_layer_loc.0.<j>.features.0.*` (level 0's path); per level `multibox.loc_tower.<j>.bn<l>.<k>`
 *   -> `multi_box.addition_layer_loc.<l>.<j>.features.1.<k>`; `multibox.loc.*` -> `multi_box.loc_layers.0.*`;
 *   `cls` likewise.
 *
 * Layouts: conv weights are HWIO [kh, kw, in, out] here and OIHW [out, in, kh, kw] in MindSpore; depthwise weights
 * [kh, kw, c, m] here and [c * m, 1, kh, kw] there (`group = c`, output channel c * m + j); dense [in, out] and
 * [out, in]; biases and batch-norm vectors are the same. {@linkcode toMsLayout} and {@linkcode fromMsLayout} convert.
 *
 * Names here are the network's own. What a file adds in front: the ModelZoo's `train.py` saves the
 * `TrainingWrapper(SSDWithLossCell(ssd))` (`src/ssd.py`: `SSDWithLossCell.network`, `TrainingWrapper` built with
 * `auto_prefix=False`), so every name starts with `network.`, and the optimizer's state follows
 * (`moments.network.*`, `learning_rate`, `momentum`, `global_step`); its `eval.py` and `export.py` load into
 * `SsdInferWithDecoder(net)`, whose `self.network` wants the same `network.`. The tutorial calls
 * `ms.save_checkpoint(network, ...)` on the bare `SSD300Vgg16` and loads with `ms.load_param_into_net(network, ...)`
 * before wrapping it: no prefix. See {@linkcode WRAPPER_PREFIX} and {@linkcode matchWrapped}.
 *
 * @module
 */
import { featureSizesOf } from "./default_boxes.ts";
import { ConfigError, InputError } from "./errors.ts";
import type { Graph, GraphNode } from "./graph.ts";
import { anchorsOf, boxesPerCell, buildModel, type ModelConfig, type SsdConfig } from "./ssd_config.ts";

/**
 * How a tensor's layout differs: `conv` HWIO <-> OIHW, `depthwise` [kh, kw, c, m] <-> [c * m, 1, kh, kw],
 * `dense` [in, out] <-> [out, in], `same` unchanged (biases, batch-norm vectors).
 */
export type MsLayout = "conv" | "depthwise" | "dense" | "same";

/** One parameter: its workbench and MindSpore names, layouts and shapes. */
export interface NameMapEntry {
  /** The workbench name (`Graph.params[i].name`). */
  workbench: string;
  /** The MindSpore name inside the network, without any wrapper prefix (see {@linkcode WRAPPER_PREFIX}). */
  mindspore: string;
  layout: MsLayout;
  /** Workbench shape: conv [kh, kw, in, out], depthwise [kh, kw, c, m], vectors [c]. */
  shape: number[];
  /** MindSpore shape: conv [out, in, kh, kw], depthwise [c * m, 1, kh, kw], vectors [c]. */
  msShape: number[];
}

/** Whose checkpoints a config's model reads and writes: the MindSpore tutorial's, or the ModelZoo's. */
export type MsFlavour = "tutorial" | "modelzoo";

/**
 * The prefix each flavour's saved names carry before the network's own:
 *
 * - `modelzoo`: `network.` — ModelZoo `train.py` saves `TrainingWrapper(SSDWithLossCell(ssd, config), opt)`;
 *   `SSDWithLossCell.__init__` sets `self.network = network` (`src/ssd.py` line 498) and `TrainingWrapper.__init__`
 *   calls `super().__init__(auto_prefix=False)` (line 543), so one `network.` is added. `eval.py` (line 45) and
 *   `export.py` (line 57) load into `SsdInferWithDecoder(net, ...)`, whose `self.network = network` (line 663) wants
 *   the same prefix.
 * - `tutorial`: none — the tutorial saves with `ms.save_checkpoint(network, "ssd-60_9.ckpt")` on the bare
 *   `SSD300Vgg16` (its training loop is functional, with no loss or train cell), and its `SsdInferWithDecoder` calls
 *   `ms.load_param_into_net(network, param_dict)` before `self.network = network`.
 *
 * MindSpore's `load_param_into_net` (`train/serialization.py`, `_load_dismatch_prefix_params`, non-strict load)
 * drops a prefix the file has and the network lacks, not the reverse: a `network.` file also loads into the bare
 * tutorial network, an unprefixed one does not load into the ModelZoo's `SsdInferWithDecoder`.
 */
export const WRAPPER_PREFIX: Readonly<Record<MsFlavour, string>> = { modelzoo: "network.", tutorial: "" };

/** Every wrapper prefix a supported checkpoint may carry, tried in this order by {@linkcode matchWrapped}. */
export const MS_WRAPPER_PREFIXES: readonly string[] = ["network.", ""];

/** The tutorial's `MultiBox` hard-codes `num_default = [4, 6, 6, 6, 4, 4]` (the ModelZoo's VGG16: 3, 6, 6, 6, 6, 6). */
export const TUTORIAL_NUM_DEFAULT: readonly number[] = [4, 6, 6, 6, 4, 4];

/** ModelZoo `model_name` (config/*.yaml, `train.py` `ssd_model_build`) of each architecture that has one. */
export const MODELZOO_MODEL_NAME: Readonly<Partial<Record<ModelConfig["arch"], string>>> = {
  ssd300_vgg16: "ssd_vgg16", // src/ssd.py SSD300VGG16 (the tutorial's SSD300Vgg16 has the same cells)
  ssd300_mobilenetv2: "ssd300", // SSD300(SSDWithMobileNetV2())
  ssd_mobilenetv1_fpn: "ssd_mobilenet_v1_fpn", // SsdMobilenetV1Fpn
  ssd_resnet50_fpn: "ssd_resnet50_fpn", // SsdResNet50Fpn
  ssd_mobilenetv1_300: "ssd_mobilenet_v1", // SsdMobilenetV1Feature
};

function noCounterpart(arch: string): ConfigError {
  const known = Object.keys(MODELZOO_MODEL_NAME).join(", ");
  return new ConfigError(
    `${arch} has no MindSpore counterpart (neither the ModelZoo SSD nor the tutorial builds it); MindSpore ` +
      `checkpoints exist for ${known}`,
    { key: "model.arch" },
  );
}

function supported(cfg: SsdConfig): void {
  if (!(cfg.model.arch in MODELZOO_MODEL_NAME)) throw noCounterpart(cfg.model.arch);
}

/**
 * Whose checkpoints `cfg`'s model matches. Both the tutorial and the ModelZoo's `ssd_vgg16` build SSD300-VGG16 with
 * the same cell attributes, so the names are the same; they differ in their boxes per cell, hence in the heads'
 * shapes: the tutorial's `MultiBox` hard-codes {@linkcode TUTORIAL_NUM_DEFAULT}, the ModelZoo reads `num_default`
 * [3, 6, 6, 6, 6, 6] (config/ssd_vgg16_config.yaml line 38). So `ssd300_vgg16` with 4, 6, 6, 6, 4, 4 boxes per cell
 * is the tutorial's; every other supported config is the ModelZoo's. The flavour only decides the wrapper prefix
 * written ({@linkcode WRAPPER_PREFIX}).
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * import { loadSsdConfig } from "./ssd_config.ts";
 * assertEquals(mindsporeFlavour(loadSsdConfig("configs/ssd300_vgg16.yaml")), "tutorial");
 * assertEquals(mindsporeFlavour(loadSsdConfig("configs/ssd_vgg16.yaml")), "modelzoo");
 * ```
 */
export function mindsporeFlavour(cfg: SsdConfig): MsFlavour {
  supported(cfg);
  if (cfg.model.arch !== "ssd300_vgg16") return "modelzoo";
  const perCell = cfg.anchors.num_default ?? boxesPerCell(anchorsOf(cfg), featureSizesOf(cfg.anchors));
  const tutorial = perCell.length === TUTORIAL_NUM_DEFAULT.length &&
    perCell.every((k, i) => k === TUTORIAL_NUM_DEFAULT[i]);
  return tutorial ? "tutorial" : "modelzoo";
}

// ---------------------------------------------------------------------------------------------------------------------
// Name rules: each maps a workbench name to the MindSpore one, or null when the name is not its part.

/** What a rule may consult: every workbench name, and the MobileNetV2 block count. */
interface RuleContext {
  names: ReadonlySet<string>;
  /** Inverted residual blocks of the MobileNetV2 backbone (`backbone.block<i>`). */
  blocks: number;
}

type Rule = (name: string, ctx: RuleContext) => string | null;

const BN_KEYS = "(gamma|beta|moving_mean|moving_variance)";

/** `prefix + tail`, or null when the tail did not map. */
const join = (prefix: string, tail: string | null): string | null => tail === null ? null : prefix + tail;

/**
 * A conv + BN (+ activation) `nn.SequentialCell`: the workbench's `conv.weight` / `bn.<k>` are its children 0 and 1.
 * `ConvBNReLU` of `src/ssd.py` (line 93) holds the sequence as `features`, `conv_bn_relu` of `src/mobilenet_v1.py`
 * (lines 19-26) is the sequence itself: `seq` is `features.` or empty.
 */
function convBnTail(tail: string, seq: string): string | null {
  if (tail === "conv.weight") return `${seq}0.weight`;
  const m = new RegExp(`^bn\\.${BN_KEYS}$`).exec(tail);
  return m ? `${seq}1.${m[1]}` : null;
}

/**
 * `MultiBox` (`src/ssd.py` lines 173-199, and the tutorial's): `multi_loc_layers` / `multi_cls_layers` are
 * `nn.CellList`s of `_last_conv2d` (lines 51-57): `nn.SequentialCell([depthwise_conv, _bn, nn.ReLU6(), conv])`,
 * the depthwise conv without bias, the 1x1 conv with one.
 */
const multiBoxRule: Rule = (name) => {
  const m = /^multibox\.(loc|cls)(\d+)\.(.+)$/.exec(name);
  if (!m) return null;
  const base = `multi_box.multi_${m[1]}_layers.${m[2]}.`, tail = m[3];
  if (tail === "dw.weight") return `${base}0.weight`;
  if (tail === "pw.weight" || tail === "pw.bias") return `${base}3.${tail.slice(3)}`;
  const bn = new RegExp(`^bn\\.${BN_KEYS}$`).exec(tail);
  return bn ? `${base}1.${bn[1]}` : null;
};

/**
 * SSD300-VGG16: ModelZoo `src/vgg16.py` `VGG16` (attributes `b1` ... `b5`, each `_make_layer`: conv, ReLU, conv,
 * ReLU ..., lines 46-65; `ssd_vgg_bn: False` in every config, so no BN) and `src/ssd.py` `SSD300VGG16`
 * (`b6_1`, `b7_1`, `b8_1` ... `b11_2`, `multi_box`; lines 697-725); the tutorial's `Vgg16` and `SSD300Vgg16` have the
 * same attributes. No conv has a bias (`nn.Conv2d`'s default); the dropouts `b6_2`, `b7_2` have no parameters.
 */
const vggRule: Rule = (name, ctx) => {
  const b = /^backbone\.b([1-5])\.(\d+)\.weight$/.exec(name);
  if (b) return `backbone.b${b[1]}.${2 * Number(b[2])}.weight`;
  if (name === "b6.weight") return "b6_1.weight";
  if (name === "b7.weight") return "b7_1.weight";
  if (/^b(8|9|10|11)_[12]\.weight$/.test(name)) return name;
  return multiBoxRule(name, ctx);
};

/**
 * One `InvertedResidual` (`src/ssd.py` lines 116-133): `self.conv = nn.SequentialCell(layers)` with the expansion
 * `ConvBNReLU` (only when `expand_ratio != 1`), the depthwise `ConvBNReLU`, the 1x1 projection conv and its `_bn`.
 */
function invertedResidualTail(block: string, tail: string, ctx: RuleContext): string | null {
  const e = ctx.names.has(`${block}.expand.conv.weight`) ? 1 : 0;
  const cbr = /^(expand|dw)\.(.+)$/.exec(tail);
  if (cbr) {
    if (cbr[1] === "expand" && e === 0) return null;
    return convBnTail(cbr[2], `conv.${cbr[1] === "expand" ? 0 : e}.features.`);
  }
  if (tail === "project.conv.weight") return `conv.${e + 1}.weight`;
  const bn = new RegExp(`^project\\.bn\\.${BN_KEYS}$`).exec(tail);
  return bn ? `conv.${e + 2}.${bn[1]}` : null;
}

/**
 * ModelZoo `ssd300`: `SSD300` (`src/ssd.py` lines 307-321: `backbone`, `multi_residual`, `multi_box`) with
 * `SSDWithMobileNetV2` (lines 595-636): `features` = [stem `ConvBNReLU`, 17 `InvertedResidual`s, last `ConvBNReLU`]
 * split into `features_1 = nn.SequentialCell(features[:14])` and `features_2 = nn.SequentialCell(features[14:])`,
 * plus `expand_layer_conv_13`.
 */
const mobileNetV2Rule: Rule = (name, ctx) => {
  const feature = (f: number) => f < 14 ? `backbone.features_1.${f}.` : `backbone.features_2.${f - 14}.`;
  let m = /^backbone\.stem\.(.+)$/.exec(name);
  if (m) return join(feature(0), convBnTail(m[1], "features."));
  m = /^backbone\.block(\d+)\.(.+)$/.exec(name);
  if (m) return join(feature(Number(m[1]) + 1), invertedResidualTail(`backbone.block${m[1]}`, m[2], ctx));
  m = /^backbone\.last\.(.+)$/.exec(name);
  if (m) return join(feature(ctx.blocks + 1), convBnTail(m[1], "features."));
  // The ModelZoo's extra 1x1 expansion is built at layer_index 13 (line 625), whatever the stages.
  m = /^backbone\.expand_layer_conv_13\.(.+)$/.exec(name);
  if (m) return join("backbone.expand_layer_conv_13.", convBnTail(m[1], "features."));
  m = /^extras\.(\d+)\.(.+)$/.exec(name);
  if (m) return join(`multi_residual.${m[1]}.`, invertedResidualTail(`extras.${m[1]}`, m[2], ctx));
  return multiBoxRule(name, ctx);
};

/**
 * ModelZoo `MobileNetV1(features_only=True)` (`src/mobilenet_v1.py` lines 33-72): `self.network = nn.CellList(cnn)`
 * of 27 `conv_bn_relu`s, no conv bias; as `feature_extractor.mobilenet_v1` of `MobileNetV1Feature` (line 110) and of
 * `MobileNetV1Fpn` (`src/fpn.py` line 101). Workbench layer `Conv2d_0` is entry 0, `Conv2d_k_depthwise` 2k - 1,
 * `Conv2d_k_pointwise` 2k (lib/mobilenet_v1.ts).
 */
function mobileNetV1Rule(wbPrefix: string): Rule {
  const re = new RegExp(`^${wbPrefix.replaceAll(".", "\\.")}\\.Conv2d_(\\d+)(?:_(depthwise|pointwise))?\\.(.+)$`);
  return (name) => {
    const m = re.exec(name);
    if (!m) return null;
    const k = Number(m[1]);
    if ((k === 0) !== (m[2] === undefined)) return null;
    const index = k === 0 ? 0 : m[2] === "depthwise" ? 2 * k - 1 : 2 * k;
    return join(`feature_extractor.mobilenet_v1.network.${index}.`, convBnTail(m[3], ""));
  };
}

/**
 * ModelZoo `ssd_mobilenet_v1`: `SsdMobilenetV1Feature` (`src/ssd.py` lines 387-401): `feature_extractor`, then
 * `multi_residual`, an `nn.CellList` of `ConvBNReLU(in, out, stride=2)` (3x3, `_bn`), then `multi_box`.
 */
const multiResidual300Rule: Rule = (name) => {
  const m = /^multi_residual\.(\d+)\.(.+)$/.exec(name);
  return m ? join(`multi_residual.${m[1]}.`, convBnTail(m[2], "features.")) : null;
};

/**
 * `src/fpn.py`: `FpnTopDown` (lines 26-37: `lateral_convs_list`, 1x1 convs with bias, and `fpn_convs_list`,
 * `conv_bn_relu`s; the plain lists `lateral_convs_list_` and `fpn_convs_` register nothing) as `fpn`, and
 * `BottomUp` (lines 66-72: `blocks`, `conv_bn_relu`s with stride 2) as `bottom_up` of the feature extractor
 * (`MobileNetV1Fpn` lines 106-107, `ResNetV1Fpn` lines 123-124).
 */
const fpnRule: Rule = (name) => {
  let m = /^fpn\.lateral(\d+)\.(weight|bias)$/.exec(name);
  if (m) return `feature_extractor.fpn.lateral_convs_list.${m[1]}.${m[2]}`;
  m = /^fpn\.output(\d+)\.(.+)$/.exec(name);
  if (m) return join(`feature_extractor.fpn.fpn_convs_list.${m[1]}.`, convBnTail(m[2], ""));
  m = /^fpn\.bottom_up(\d+)\.(.+)$/.exec(name);
  return m ? join(`feature_extractor.bottom_up.blocks.${m[1]}.`, convBnTail(m[2], "")) : null;
};

/**
 * `WeightSharedMultiBox` (`src/ssd.py` lines 224-272): per level an `nn.SequentialCell` of
 * `ConvBNReLU(..., shared_conv)`s in `addition_layer_loc` / `addition_layer_cls` (`nn.CellList`s; one
 * `addition_layer` when `loc_cls_shared_addition`), each holding the shared 3x3 conv with bias (`_conv2d`) and its
 * own `_bn`; the predictors `loc_layers` / `cls_layers` are one-conv `nn.SequentialCell`s. A shared conv is named by
 * its first path, level 0's: `addition_layer_loc.0.<j>.features.0` (the checkpoint_filter_list of
 * config/ssd_mobilenet_v1_fpn_config.yaml lines 80-81 names `network.multi_box.cls_layers.0.weight`).
 */
const weightSharedRule: Rule = (name) => {
  const tower = (kind: string) => kind === "shared" ? "multi_box.addition_layer" : `multi_box.addition_layer_${kind}`;
  let m = /^multibox\.(loc|cls|shared)_tower\.(\d+)\.(weight|bias)$/.exec(name);
  if (m) return `${tower(m[1])}.0.${m[2]}.features.0.${m[3]}`;
  m = new RegExp(`^multibox\\.(loc|cls|shared)_tower\\.(\\d+)\\.bn(\\d+)\\.${BN_KEYS}$`).exec(name);
  if (m) return `${tower(m[1])}.${m[3]}.${m[2]}.features.1.${m[4]}`;
  m = /^multibox\.(loc|cls)\.(weight|bias)$/.exec(name);
  return m ? `multi_box.${m[1]}_layers.0.${m[2]}` : null;
};

/**
 * ModelZoo `src/resnet.py` `ResNet` (lines 139-162: `conv1`, `bn1`, `layer1` ... `layer4`, `nn.SequentialCell`s of
 * `ResidualBlock`s, lines 66-82: `conv1` `bn1` `conv2` `bn2` `conv3` `bn3`, and `down_sample_layer =
 * nn.SequentialCell([_conv1x1, _bn])`), as `feature_extractor.resnet` (`src/fpn.py` `ResNetV1Fpn`, line 122).
 */
const resNetRule: Rule = (name) => {
  const r = "feature_extractor.resnet.";
  if (name === "backbone.stem.conv.weight") return `${r}conv1.weight`;
  let m = new RegExp(`^backbone\\.stem\\.bn\\.${BN_KEYS}$`).exec(name);
  if (m) return `${r}bn1.${m[1]}`;
  m = /^backbone\.layer([1-4])\.(\d+)\.conv([123])\.conv\.weight$/.exec(name);
  if (m) return `${r}layer${m[1]}.${m[2]}.conv${m[3]}.weight`;
  m = new RegExp(`^backbone\\.layer([1-4])\\.(\\d+)\\.conv([123])\\.bn\\.${BN_KEYS}$`).exec(name);
  if (m) return `${r}layer${m[1]}.${m[2]}.bn${m[3]}.${m[4]}`;
  m = /^backbone\.layer([1-4])\.(\d+)\.down_sample\.(.+)$/.exec(name);
  return m ? join(`${r}layer${m[1]}.${m[2]}.down_sample_layer.`, convBnTail(m[3], "")) : null;
};

const anyOf = (...rules: Rule[]): Rule => (name, ctx) => {
  for (const rule of rules) {
    const ms = rule(name, ctx);
    if (ms !== null) return ms;
  }
  return null;
};

const RULES: Readonly<Partial<Record<ModelConfig["arch"], Rule>>> = {
  ssd300_vgg16: vggRule,
  ssd300_mobilenetv2: mobileNetV2Rule,
  ssd_mobilenetv1_fpn: anyOf(mobileNetV1Rule("backbone"), fpnRule, weightSharedRule),
  ssd_resnet50_fpn: anyOf(resNetRule, fpnRule, weightSharedRule),
  ssd_mobilenetv1_300: anyOf(mobileNetV1Rule("feature_extractor.mobilenet_v1"), multiResidual300Rule, multiBoxRule),
};

// ---------------------------------------------------------------------------------------------------------------------
// Layouts

/**
 * The MindSpore shape of a workbench tensor of `shape` in `layout`.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * assertEquals(msShapeOf("conv", [3, 3, 3, 32]), [32, 3, 3, 3]);
 * assertEquals(msShapeOf("depthwise", [3, 3, 32, 1]), [32, 1, 3, 3]);
 * assertEquals(msShapeOf("dense", [1024, 10]), [10, 1024]);
 * ```
 */
export function msShapeOf(layout: MsLayout, shape: readonly number[]): number[] {
  const want = layout === "conv" || layout === "depthwise" ? 4 : layout === "dense" ? 2 : shape.length;
  if (shape.length !== want) throw new RangeError(`a ${layout} tensor has ${want} dimensions, not [${shape}]`);
  if (layout === "conv") return [shape[3], shape[2], shape[0], shape[1]];
  if (layout === "depthwise") return [shape[2] * shape[3], 1, shape[0], shape[1]];
  if (layout === "dense") return [shape[1], shape[0]];
  return shape.slice();
}

const sizeOf = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

function checkSize(values: Float32Array, shape: readonly number[], entry: NameMapEntry, side: string): void {
  if (values.length !== sizeOf(shape)) {
    throw new InputError(
      `${entry.mindspore} (workbench ${entry.workbench}): ${values.length} values, but its ${side} shape ` +
        `[${shape}] holds ${sizeOf(shape)}`,
    );
  }
}

/**
 * Moves values between the workbench layout and MindSpore's; `toMs` picks the direction. Conv: workbench
 * [kh, kw, in, out] element (y, x, i, o) is MindSpore [out, in, kh, kw] element (o, i, y, x). Depthwise: (y, x, c, j)
 * of [kh, kw, c, m] is (c * m + j, 0, y, x) of [c * m, 1, kh, kw]. Dense: (i, o) of [in, out] is (o, i) of [out, in].
 */
function relayout(values: Float32Array, entry: NameMapEntry, toMs: boolean): Float32Array {
  const out = new Float32Array(values.length);
  const s = entry.shape;
  const move = (wb: number, ms: number) => toMs ? out[ms] = values[wb] : out[wb] = values[ms];
  if (entry.layout === "conv" || entry.layout === "depthwise") {
    const [kh, kw, a, b] = s; // conv: a = in, b = out; depthwise: a = c, b = m
    for (let y = 0; y < kh; y++) {
      for (let x = 0; x < kw; x++) {
        for (let i = 0; i < a; i++) {
          for (let o = 0; o < b; o++) {
            const wb = ((y * kw + x) * a + i) * b + o;
            const ms = entry.layout === "conv" ? ((o * a + i) * kh + y) * kw + x : ((i * b + o) * kh + y) * kw + x;
            move(wb, ms);
          }
        }
      }
    }
  } else if (entry.layout === "dense") {
    const [cin, cout] = s;
    for (let i = 0; i < cin; i++) for (let o = 0; o < cout; o++) move(i * cout + o, o * cin + i);
  } else {
    out.set(values);
  }
  return out;
}

/**
 * A workbench tensor's values in MindSpore's layout (a new array; `values` is workbench-ordered, `entry.shape`).
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * // A 1x1 conv, 2 in, 3 out: HWIO [1, 1, 2, 3] holds w[i][o] = 10 * i + o; OIHW [3, 2, 1, 1] lists it by o, then i.
 * const shape = [1, 1, 2, 3], msShape = [3, 2, 1, 1];
 * const entry = { workbench: "c.weight", mindspore: "c.weight", layout: "conv" as const, shape, msShape };
 * assertEquals(Array.from(toMsLayout(new Float32Array([0, 1, 2, 10, 11, 12]), entry)), [0, 10, 1, 11, 2, 12]);
 * ```
 */
export function toMsLayout(values: Float32Array, entry: NameMapEntry): Float32Array {
  checkSize(values, entry.shape, entry, "workbench");
  return relayout(values, entry, true);
}

/**
 * A MindSpore tensor's values in the workbench layout (a new array; `values` is MindSpore-ordered, `entry.msShape`).
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * // A depthwise 2x1 kernel on 2 channels: MindSpore [2, 1, 2, 1] lists channel 0's taps, then channel 1's.
 * const shape = [2, 1, 2, 1], msShape = [2, 1, 2, 1];
 * const entry = { workbench: "d.weight", mindspore: "d.weight", layout: "depthwise" as const, shape, msShape };
 * assertEquals(Array.from(fromMsLayout(new Float32Array([0, 2, 1, 3]), entry)), [0, 1, 2, 3]);
 * ```
 */
export function fromMsLayout(values: Float32Array, entry: NameMapEntry): Float32Array {
  checkSize(values, entry.msShape, entry, "MindSpore");
  return relayout(values, entry, false);
}

// ---------------------------------------------------------------------------------------------------------------------
// The map

/**
 * One entry per parameter of `graph` (default: the config's model, {@linkcode buildModel}), trainable ones and
 * batch-norm statistics alike, in the graph's order: the MindSpore name inside the network (no wrapper prefix),
 * the layout and both shapes. The naming is the ModelZoo's for every supported architecture; the tutorial's
 * SSD300Vgg16 names its cells exactly as the ModelZoo's SSD300VGG16 (see {@linkcode mindsporeFlavour}).
 *
 * Throws a `ConfigError` for an architecture with no MindSpore counterpart (`ssd_tiny`, `ssd_mobilenetv1_tfod`),
 * for SSD300-VGG16 with other heads than `_last_conv2d` (`model.head: tutorial`), and for any parameter an option
 * adds that MindSpore's cells do not have.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * import { loadSsdConfig } from "./ssd_config.ts";
 * const map = mindsporeNames(loadSsdConfig("configs/ssd300_vgg16.yaml"));
 * const fc6 = map.find((e) => e.workbench === "b6.weight")!;
 * assertEquals([fc6.mindspore, fc6.layout, fc6.msShape], ["b6_1.weight", "conv", [1024, 512, 3, 3]]);
 * const gamma = map.find((e) => e.workbench === "multibox.cls0.bn.gamma")!;
 * assertEquals(gamma.mindspore, "multi_box.multi_cls_layers.0.1.gamma");
 * ```
 */
export function mindsporeNames(cfg: SsdConfig, graph?: Graph): NameMapEntry[] {
  supported(cfg);
  const arch = cfg.model.arch;
  if (arch === "ssd300_vgg16" && cfg.model.head !== "tutorial") {
    throw new ConfigError(
      `is ${cfg.model.head}, but MindSpore's SSD300-VGG16 heads are _last_conv2d (depthwise 3x3 + BN + ReLU6 + 1x1): ` +
        "head: tutorial",
      { key: "model.head" },
    );
  }
  const g = graph ?? buildModel(cfg);
  const convs = new Map<string, Extract<GraphNode, { op: "conv" }>>();
  for (const n of g.nodes) if (n.op === "conv") convs.set(n.name, n);
  const names = new Set(g.params.map((p) => p.name));
  const blocks = new Set(g.params.map((p) => /^backbone\.block(\d+)\./.exec(p.name)?.[1]).filter((b) => b)).size;
  const ctx: RuleContext = { names, blocks };
  const rule = RULES[arch]!;
  const seen = new Map<string, string>();
  return g.params.map((p) => {
    const mindspore = rule(p.name, ctx);
    if (mindspore === null) {
      throw new ConfigError(
        `${arch}: parameter ${p.name} [${p.shape}] has no counterpart in MindSpore's ` +
          `${MODELZOO_MODEL_NAME[arch]} (an option the ModelZoo does not have?)`,
        { key: "model" },
      );
    }
    if (seen.has(mindspore)) throw new Error(`${p.name} and ${seen.get(mindspore)} both map to ${mindspore}`);
    seen.set(mindspore, p.name);
    let layout: MsLayout = "same";
    if (p.kind === "weight") {
      const node = convs.get(p.node);
      if (!node) throw new Error(`${p.name}: its node ${p.node} is not a conv layer`);
      layout = node.depthwise ? "depthwise" : "conv";
    }
    return { workbench: p.name, mindspore, layout, shape: p.shape.slice(), msShape: msShapeOf(layout, p.shape) };
  });
}

// ---------------------------------------------------------------------------------------------------------------------
// Wrapper prefixes

/**
 * `name` without a leading wrapper prefix (`network.`, {@linkcode MS_WRAPPER_PREFIXES}); other names as they are. No
 * supported network has a top-level attribute `network`, so the strip is unambiguous. Optimizer state keeps its own
 * prefix (`moments.network.…`).
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * assertEquals(stripWrapperPrefix("network.multi_box.cls_layers.0.weight"), "multi_box.cls_layers.0.weight");
 * assertEquals(stripWrapperPrefix("b6_1.weight"), "b6_1.weight");
 * ```
 */
export function stripWrapperPrefix(name: string): string {
  for (const prefix of MS_WRAPPER_PREFIXES) {
    if (prefix !== "" && name.startsWith(prefix)) return name.slice(prefix.length);
  }
  return name;
}

/** How a checkpoint's names meet a model's map: see {@linkcode matchWrapped}. */
export interface WrappedMatch {
  /** The wrapper prefix the checkpoint's parameter names carry: `network.` or "". */
  prefix: string;
  /** The checkpoint name of every entry found, by workbench name. */
  found: Map<string, string>;
  /** Entries whose prefixed name the checkpoint lacks (e.g. heads dropped by `filter_weight`). */
  missing: NameMapEntry[];
  /**
   * Checkpoint names no entry claims: optimizer and loop state (`moments.network.*`, `learning_rate`, `momentum`,
   * `global_step`; lib/mindspore_ckpt.ts `isOptimizerState` tells them apart) or parameters of another model.
   */
  unclaimed: string[];
}

/**
 * Finds the wrapper prefix a checkpoint uses — the one of {@linkcode MS_WRAPPER_PREFIXES} under which most of
 * `entries` are present in `names` — and matches the entries under it. Throws an `InputError` when no entry is
 * present under any prefix. A checkpoint of another model may still share some names (the MultiBox heads of the
 * VGG16, MobileNetV2 and MobileNetV1-300 models are named alike): check `missing`, and the shapes.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const entries = [
 *   {
 *     workbench: "b6.weight",
 *     mindspore: "b6_1.weight",
 *     layout: "conv" as const,
 *     shape: [3, 3, 512, 1024],
 *     msShape: [1024, 512, 3, 3],
 *   },
 * ];
 * const m = matchWrapped(["network.b6_1.weight", "moments.network.b6_1.weight", "learning_rate"], entries);
 * assertEquals([m.prefix, m.found.get("b6.weight"), m.missing.length], ["network.", "network.b6_1.weight", 0]);
 * assertEquals(m.unclaimed, ["moments.network.b6_1.weight", "learning_rate"]);
 * ```
 */
export function matchWrapped(names: Iterable<string>, entries: readonly NameMapEntry[]): WrappedMatch {
  const all = [...names];
  const present = new Set(all);
  let best = MS_WRAPPER_PREFIXES[0], bestCount = -1;
  for (const prefix of MS_WRAPPER_PREFIXES) {
    const count = entries.filter((e) => present.has(prefix + e.mindspore)).length;
    if (count > bestCount) best = prefix, bestCount = count;
  }
  if (bestCount <= 0) {
    const example = entries[0] ? ` (such as ${entries[0].mindspore} or network.${entries[0].mindspore})` : "";
    throw new InputError(
      `none of the model's ${entries.length} MindSpore parameters${example} is in the checkpoint; its first names: ` +
        (all.slice(0, 5).join(", ") || "none"),
    );
  }
  const found = new Map<string, string>(), missing: NameMapEntry[] = [], claimed = new Set<string>();
  for (const e of entries) {
    const name = best + e.mindspore;
    if (present.has(name)) found.set(e.workbench, name), claimed.add(name);
    else missing.push(e);
  }
  return { prefix: best, found, missing, unclaimed: all.filter((n) => !claimed.has(n)) };
}

// ---------------------------------------------------------------------------------------------------------------------
// Fine-tuning filter

/**
 * The ModelZoo's `checkpoint_filter_list` for `cfg`'s model: with `filter_weight: True`, `train.py` (lines 155-159)
 * drops every checkpoint parameter whose name contains one of these before `load_param_into_net(net, param_dict,
 * True)` into `SSDWithLossCell` (so a `pre_trained` file carries `network.`): the class-count dependent heads.
 * `['multi_loc_layers', 'multi_cls_layers']` for ssd300 (config/ssd300_config.yaml line 78), ssd_vgg16
 * (config/ssd_vgg16_config.yaml line 77) and ssd_mobilenet_v1 (config/ssd_mobilenet_v1_300_config_gpu.yaml line
 * 81); the four predictor tensors for the FPN models (config/ssd_mobilenet_v1_fpn_config.yaml lines 80-81,
 * config/ssd_resnet50_fpn_config.yaml lines 81-82).
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * import { loadSsdConfig } from "./ssd_config.ts";
 * const cfg = loadSsdConfig("configs/ssd300_mobilenetv2.yaml");
 * assertEquals(checkpointFilterList(cfg), ["multi_loc_layers", "multi_cls_layers"]);
 * ```
 */
export function checkpointFilterList(cfg: SsdConfig): string[] {
  supported(cfg);
  if (cfg.model.arch === "ssd_mobilenetv1_fpn" || cfg.model.arch === "ssd_resnet50_fpn") {
    return [
      "network.multi_box.cls_layers.0.weight",
      "network.multi_box.cls_layers.0.bias",
      "network.multi_box.loc_layers.0.weight",
      "network.multi_box.loc_layers.0.bias",
    ];
  }
  return ["multi_loc_layers", "multi_cls_layers"];
}

/**
 * `filter_checkpoint_parameter_by_list` (`src/init_params.py` lines 43-50): splits `names` into those kept and those
 * dropped because they contain one of `filterList` as a substring.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const names = ["network.b6_1.weight", "network.multi_box.multi_loc_layers.0.3.bias"];
 * const { kept, dropped } = filterCheckpointNames(names, ["multi_loc_layers"]);
 * assertEquals([kept, dropped], [[names[0]], [names[1]]]);
 * ```
 */
export function filterCheckpointNames(
  names: Iterable<string>,
  filterList: readonly string[],
): { kept: string[]; dropped: string[] } {
  const kept: string[] = [], dropped: string[] = [];
  for (const n of names) (filterList.some((f) => n.includes(f)) ? dropped : kept).push(n);
  return { kept, dropped };
}
