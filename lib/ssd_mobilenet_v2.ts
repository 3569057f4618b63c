/**
 * The ModelZoo's default SSD, `ssd300` (`official/cv/SSD/src/ssd.py`, `SSD300`
 * with `SSDWithMobileNetV2`, `config/ssd300_config.yaml`):
 *
 * - backbone: MobileNetV2 ({@linkcode mobileNetV2}); feature maps are its
 *   `expand_layer_conv_13` (19x19x576 at 300) and its last 1x1 conv (10x10x1280);
 * - extra layers: four `InvertedResidual` blocks with a final ReLU6, built from
 *   entries 2..5 of `extras_out_channels`, `extras_strides` and `extras_ratio`:
 *   1280 -> 512 (5x5), 512 -> 256 (3x3), 256 -> 256 (2x2), 256 -> 128 (1x1);
 * - heads: `MultiBox`, i.e. per map and per output (loc, cls) a depthwise 3x3 +
 *   BN + ReLU6 + 1x1 conv with bias (`_last_conv2d`, the `tutorial` heads of
 *   `ssd_heads.ts`), 3, 6, 6, 6, 6, 6 boxes per cell: 1917 boxes.
 *
 * The sigmoid the ModelZoo applies to class logits at inference is
 * post-processing here; the graph outputs logits.
 *
 * @module
 */
import type { Spec } from "./config.ts";
import { type Graph, GraphBuilder, type Sym } from "./graph.ts";
import { invertedResidual, mobileNetV2 } from "./mobilenet_v2.ts";
import { multiBoxHeads } from "./ssd_heads.ts";

/** `extras_out_channels` of `ssd300_config.yaml`: channels of the six feature maps. */
export const SSD300_EXTRAS_OUT_CHANNELS: readonly number[] = [576, 1280, 512, 256, 256, 128];
/** `extras_strides`; the first two entries describe the backbone maps and are not read. */
export const SSD300_EXTRAS_STRIDES: readonly number[] = [1, 1, 2, 2, 2, 2];
/** `extras_ratio`: expansion ratios of the extra blocks (first two entries not read). */
export const SSD300_EXTRAS_RATIO: readonly number[] = [0.2, 0.2, 0.2, 0.25, 0.5, 0.25];

/** Options of {@linkcode ssdMobileNetV2}. */
export interface SsdMobileNetV2Options {
  /** Input side (ModelZoo 300). */
  inputSize: number;
  /** Classes including background (ModelZoo 81). */
  numClasses: number;
  /** Boxes per cell per feature map (ModelZoo `num_default` [3, 6, 6, 6, 6, 6]). */
  boxesPerCell: readonly number[];
  /** Backbone width multiplier (default 1). */
  widthMult?: number;
  /** Channels of each feature map (default {@linkcode SSD300_EXTRAS_OUT_CHANNELS}); the first two are checked. */
  extrasOutChannels?: readonly number[];
  /** Strides per map (default {@linkcode SSD300_EXTRAS_STRIDES}). */
  extrasStrides?: readonly number[];
  /** Expansion ratios per map (default {@linkcode SSD300_EXTRAS_RATIO}). */
  extrasRatio?: readonly number[];
  /** BN eps of backbone, extras and heads (default 1e-3, `_bn`). */
  bnEps?: number;
  /** BN momentum (default 0.97, `_bn`). */
  bnMomentum?: number;
}

/** Config keys of this model beyond input size, classes and boxes per cell; null means the ModelZoo default. */
export const ssdMobileNetV2Spec: Spec = {
  type: "object",
  optional: true,
  doc: "ssd300 MobileNetV2 architecture (ModelZoo config/ssd300_config.yaml)",
  fields: {
    width_mult: { type: "number", min: 0, nullable: true, doc: "backbone width multiplier (1)" },
    extras_out_channels: {
      type: "array",
      items: { type: "number", int: true, min: 1 },
      nullable: true,
      doc: "channels of each feature map ([576, 1280, 512, 256, 256, 128])",
    },
    extras_strides: {
      type: "array",
      items: { type: "number", int: true, min: 1 },
      nullable: true,
      doc: "stride of each extra block ([1, 1, 2, 2, 2, 2])",
    },
    extras_ratio: {
      type: "array",
      items: { type: "number", min: 0 },
      nullable: true,
      doc: "expansion ratio of each extra block ([0.2, 0.2, 0.2, 0.25, 0.5, 0.25])",
    },
  },
};

/** A validated {@linkcode ssdMobileNetV2Spec} section. */
export interface SsdMobileNetV2Config {
  width_mult: number | null;
  extras_out_channels: number[] | null;
  extras_strides: number[] | null;
  extras_ratio: number[] | null;
}

/**
 * The builder options a validated {@linkcode ssdMobileNetV2Spec} section sets (nulls left to the defaults).
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * import { validate } from "./config.ts";
 * const cfg = validate({ width_mult: 0.5 }, ssdMobileNetV2Spec) as SsdMobileNetV2Config;
 * assertEquals(ssdMobileNetV2ConfigOptions(cfg), { widthMult: 0.5 });
 * ```
 */
export function ssdMobileNetV2ConfigOptions(cfg: SsdMobileNetV2Config): Partial<SsdMobileNetV2Options> {
  const o: Partial<SsdMobileNetV2Options> = {};
  if (cfg.width_mult !== null) o.widthMult = cfg.width_mult;
  if (cfg.extras_out_channels !== null) o.extrasOutChannels = cfg.extras_out_channels;
  if (cfg.extras_strides !== null) o.extrasStrides = cfg.extras_strides;
  if (cfg.extras_ratio !== null) o.extrasRatio = cfg.extras_ratio;
  return o;
}

/**
 * Builds the ModelZoo `ssd300` (SSD-MobileNetV2).
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * import { inferShapes } from "./graph.ts";
 * const g = ssdMobileNetV2({ inputSize: 300, numClasses: 81, boxesPerCell: [3, 6, 6, 6, 6, 6] });
 * const shapes = inferShapes(g);
 * assertEquals([shapes.get(g.outputs.loc), shapes.get(g.outputs.cls)], [[1917, 4, 1], [1917, 81, 1]]);
 * ```
 */
export function ssdMobileNetV2(o: SsdMobileNetV2Options): Graph {
  const outChannels = o.extrasOutChannels ?? SSD300_EXTRAS_OUT_CHANNELS;
  const strides = o.extrasStrides ?? SSD300_EXTRAS_STRIDES;
  const ratios = o.extrasRatio ?? SSD300_EXTRAS_RATIO;
  if (strides.length !== outChannels.length || ratios.length !== outChannels.length) {
    throw new RangeError(`extras: ${outChannels.length} channels, ${strides.length} strides, ${ratios.length} ratios`);
  }
  const g = new GraphBuilder([o.inputSize, o.inputSize, 3]);
  const bn = { bnEps: o.bnEps, bnMomentum: o.bnMomentum };
  const { tap, out } = mobileNetV2(g, g.input, { ...bn, widthMult: o.widthMult });
  const features: Sym[] = [tap!, out];
  features.forEach((f, i) => {
    if (f.shape[2] !== outChannels[i]) {
      throw new RangeError(`feature map ${i} has ${f.shape[2]} channels, extras_out_channels says ${outChannels[i]}`);
    }
  });
  // SSD300.__init__: for i in range(2, len(in_channels)): InvertedResidual(..., last_relu=True).
  for (let i = 2; i < outChannels.length; i++) {
    features.push(
      invertedResidual(g, `extras.${i - 2}`, features[i - 1], outChannels[i], {
        ...bn,
        stride: strides[i],
        expandRatio: ratios[i],
        lastRelu: true,
      }),
    );
  }
  const { loc, cls } = multiBoxHeads(g, features, {
    boxesPerCell: o.boxesPerCell,
    numClasses: o.numClasses,
    kind: "tutorial",
    bnEps: o.bnEps,
    bnMomentum: o.bnMomentum,
  });
  return g.build({ loc, cls });
}
