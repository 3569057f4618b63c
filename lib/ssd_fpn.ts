/**
 * The ModelZoo's FPN SSDs (`official/cv/SSD/src/ssd.py`, `SsdMobilenetV1Fpn`,
 * `SsdResNet50Fpn`, `WeightSharedMultiBox`; `src/fpn.py`;
 * `config/ssd_mobilenet_v1_fpn_config.yaml`, `config/ssd_resnet50_fpn_config.yaml`):
 *
 * - backbone: MobileNetV1 layers 10, 22, 26 (strides 8, 16, 32; 256, 512, 1024
 *   channels) or ResNet50 c3, c4, c5 (512, 1024, 2048 channels);
 * - {@linkcode fpn}: five 256-channel levels, 80, 40, 20, 10, 5 at 640x640;
 * - {@linkcode weightSharedMultiBox}: one loc tower and one cls tower of
 *   `num_addition_layers` (4) 3x3 convs with bias + BN + ReLU6, then a 3x3
 *   predictor conv with bias; the conv weights are the same at every level, the
 *   BNs are per level (`ConvBNReLU(..., shared_conv)` makes a new `_bn`, eps
 *   1e-3 and momentum 0.97, for each level). 6 boxes per cell: 51150 boxes.
 *
 * @module
 */
import type { Spec } from "./config.ts";
import { fpn } from "./fpn.ts";
import { BN_DEFAULTS, bnSettings, type Graph, GraphBuilder, type Sym } from "./graph.ts";
import { mobileNetV1 } from "./mobilenet_v1.ts";
import { resNet50 } from "./resnet50.ts";

/** Options of {@linkcode weightSharedMultiBox}; defaults are the ModelZoo's. */
export interface WeightSharedMultiBoxOptions {
  /** Boxes per cell, the same at every level (ModelZoo `num_default[0]`, 6). */
  boxesPerCell: number;
  /** Classes including background. */
  numClasses: number;
  /** Tower depth (ModelZoo `num_addition_layers`, 4). */
  numAdditionLayers?: number;
  /** One tower feeding both predictors instead of one each (`loc_cls_shared_addition`, default false). */
  locClsSharedAddition?: boolean;
  /** Default 1e-3 (`_bn`). */
  bnEps?: number;
  /** Default 0.97 (`_bn`). */
  bnMomentum?: number;
  /** Name prefix (default `multibox`). */
  prefix?: string;
}

/**
 * Adds the weight-shared box predictor over `features` (all with the same
 * channels) and returns `loc` [A, 4] and `cls` [A, numClasses], level by level.
 * Level 0 declares the conv parameters (`${prefix}.loc_tower.j`,
 * `${prefix}.loc`, ...); the other levels' convs share them.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * import { countParams, GraphBuilder } from "./graph.ts";
 * const g = new GraphBuilder([8, 8, 4]);
 * const f1 = g.conv("f1", g.input, 4, { stride: 2 }); // 4x4
 * const f2 = g.conv("f2", f1, 4, { stride: 2 }); // 2x2
 * const before = countParams(g.build({})).trainable;
 * const { loc, cls } = weightSharedMultiBox(g, [f1, f2], { boxesPerCell: 2, numClasses: 3, numAdditionLayers: 1 });
 * assertEquals([loc.shape[0], cls.shape[1]], [(16 + 4) * 2, 3]);
 * // Shared: two tower convs, two predictors (weights + bias) and one BN (gamma, beta) per tower and level.
 * const conv = (cout: number) => 9 * 4 * cout + cout;
 * assertEquals(countParams(g.build({})).trainable - before, 2 * conv(4) + conv(8) + conv(6) + 2 * 2 * 8);
 * ```
 */
export function weightSharedMultiBox(
  g: GraphBuilder,
  features: readonly Sym[],
  o: WeightSharedMultiBoxOptions,
): { loc: Sym; cls: Sym } {
  const p = o.prefix ?? "multibox";
  const depth = o.numAdditionLayers ?? 4;
  const bnOpts = bnSettings(o, BN_DEFAULTS.modelzooSsd);
  const channels = features[0].shape[2];
  for (const f of features) {
    if (f.shape[2] !== channels) {
      throw new RangeError(`weightSharedMultiBox: levels have ${channels} and ${f.shape[2]} channels`);
    }
  }
  // Level 0 owns each conv; level l > 0 names its copy `${owner}.level${l}` and reads the owner's weights.
  const conv = (owner: string, level: number, x: Sym, cout: number) =>
    g.conv(level === 0 ? owner : `${owner}.level${level}`, x, cout, {
      kernel: 3,
      bias: true,
      ...(level === 0 ? {} : { shareWith: owner }),
    });
  const tower = (kind: string, level: number, x: Sym) => {
    for (let j = 0; j < depth; j++) {
      const owner = `${p}.${kind}_tower.${j}`;
      x = g.act(g.bn(`${owner}.bn${level}`, conv(owner, level, x, channels), bnOpts), "relu6");
    }
    return x;
  };
  const k = o.boxesPerCell;
  const locs: Sym[] = [], clss: Sym[] = [];
  features.forEach((f, l) => {
    const locIn = tower(o.locClsSharedAddition ? "shared" : "loc", l, f);
    const clsIn = o.locClsSharedAddition ? locIn : tower("cls", l, f);
    locs.push(g.flattenHead(conv(`${p}.loc`, l, locIn, 4 * k), 4));
    clss.push(g.flattenHead(conv(`${p}.cls`, l, clsIn, o.numClasses * k), o.numClasses));
  });
  return { loc: g.concatAnchors(locs), cls: g.concatAnchors(clss) };
}

/** Options of {@linkcode ssdMobileNetV1Fpn} and {@linkcode ssdResNet50Fpn}. */
export interface SsdFpnOptions {
  /** Input side (ModelZoo 640); a multiple of 128 keeps every level an exact halving. */
  inputSize: number;
  /** Classes including background (ModelZoo 81). */
  numClasses: number;
  /** Boxes per cell per level, all equal (ModelZoo `num_default` [6, 6, 6, 6, 6]). */
  boxesPerCell: readonly number[];
  /** Head tower depth (ModelZoo `num_addition_layers`, 4). */
  numAdditionLayers?: number;
  /** Pyramid channels, also the head's (ModelZoo 256: `FpnTopDown(..., 256)`, `extras_out_channels[0]`). */
  fpnChannels?: number;
  /** Extra stride-2 levels (default 2). */
  bottomUpLevels?: number;
  /** Top-down resize (default `bilinear`, as the ModelZoo). */
  upsample?: "bilinear" | "nearest";
  /** MobileNetV1 only: layer indices feeding the pyramid (default [10, 22, 26], `MobileNetV1Fpn`). */
  featureLayers?: readonly number[];
}

/** Config keys of the FPN models beyond input size, classes and boxes per cell; null means the ModelZoo default. */
export const ssdFpnSpec: Spec = {
  type: "object",
  optional: true,
  doc: "FPN SSD architecture (ModelZoo config/ssd_*_fpn_config.yaml)",
  fields: {
    num_addition_layers: { type: "number", int: true, min: 0, nullable: true, doc: "head tower depth (4)" },
    fpn_channels: { type: "number", int: true, min: 1, nullable: true, doc: "pyramid and head channels (256)" },
    bottom_up_levels: { type: "number", int: true, min: 0, nullable: true, doc: "extra stride-2 levels (2)" },
    upsample: { type: "string", enum: ["bilinear", "nearest"], nullable: true, doc: "top-down resize (bilinear)" },
    feature_layers: {
      type: "array",
      items: { type: "number", int: true, min: 0 },
      nullable: true,
      doc: "MobileNetV1 layer indices feeding the pyramid ([10, 22, 26])",
    },
  },
};

/** A validated {@linkcode ssdFpnSpec} section. */
export interface SsdFpnConfig {
  num_addition_layers: number | null;
  fpn_channels: number | null;
  bottom_up_levels: number | null;
  upsample: "bilinear" | "nearest" | null;
  feature_layers: number[] | null;
}

/**
 * The builder options a validated {@linkcode ssdFpnSpec} section sets (nulls left to the defaults).
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * import { validate } from "./config.ts";
 * const cfg = validate({ num_addition_layers: 2, upsample: "nearest" }, ssdFpnSpec) as SsdFpnConfig;
 * assertEquals(ssdFpnConfigOptions(cfg), { numAdditionLayers: 2, upsample: "nearest" });
 * ```
 */
export function ssdFpnConfigOptions(cfg: SsdFpnConfig): Partial<SsdFpnOptions> {
  const o: Partial<SsdFpnOptions> = {};
  if (cfg.num_addition_layers !== null) o.numAdditionLayers = cfg.num_addition_layers;
  if (cfg.fpn_channels !== null) o.fpnChannels = cfg.fpn_channels;
  if (cfg.bottom_up_levels !== null) o.bottomUpLevels = cfg.bottom_up_levels;
  if (cfg.upsample !== null) o.upsample = cfg.upsample;
  if (cfg.feature_layers !== null) o.featureLayers = cfg.feature_layers;
  return o;
}

function perCell(o: SsdFpnOptions, levels: number): number {
  if (o.boxesPerCell.length !== levels || o.boxesPerCell.some((k) => k !== o.boxesPerCell[0])) {
    throw new RangeError(`boxesPerCell ${o.boxesPerCell}: the shared predictor needs ${levels} equal entries`);
  }
  return o.boxesPerCell[0];
}

function head(g: GraphBuilder, backbone: Sym[], o: SsdFpnOptions): Graph {
  const levels = fpn(g, backbone, {
    outChannels: o.fpnChannels,
    bottomUpLevels: o.bottomUpLevels,
    upsample: o.upsample,
  });
  const { loc, cls } = weightSharedMultiBox(g, levels, {
    boxesPerCell: perCell(o, levels.length),
    numClasses: o.numClasses,
    numAdditionLayers: o.numAdditionLayers,
  });
  return g.build({ loc, cls });
}

/**
 * Builds the ModelZoo `ssd_mobilenet_v1_fpn`.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * import { inferShapes } from "./graph.ts";
 * const g = ssdMobileNetV1Fpn({ inputSize: 640, numClasses: 81, boxesPerCell: [6, 6, 6, 6, 6] });
 * assertEquals(inferShapes(g).get(g.outputs.cls), [51150, 81, 1]);
 * ```
 */
export function ssdMobileNetV1Fpn(o: SsdFpnOptions): Graph {
  const g = new GraphBuilder([o.inputSize, o.inputSize, 3]);
  const taps = o.featureLayers ?? [10, 22, 26];
  const { layers } = mobileNetV1(g, g.input, { lastLayer: Math.max(...taps) });
  return head(g, taps.map((i) => layers[i]), o);
}

/**
 * Builds the ModelZoo `ssd_resnet50_fpn`.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * import { inferShapes } from "./graph.ts";
 * const g = ssdResNet50Fpn({ inputSize: 640, numClasses: 81, boxesPerCell: [6, 6, 6, 6, 6] });
 * assertEquals(inferShapes(g).get(g.outputs.loc), [51150, 4, 1]);
 * ```
 */
export function ssdResNet50Fpn(o: SsdFpnOptions): Graph {
  const g = new GraphBuilder([o.inputSize, o.inputSize, 3]);
  const [, , c3, c4, c5] = resNet50(g, g.input);
  return head(g, [c3, c4, c5], o);
}
