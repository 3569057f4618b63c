/**
 * The ModelZoo's `ssd_mobilenet_v1_300` (mindspore-ai/models official/cv/SSD,
 * `src/ssd.py` SsdMobilenetV1Feature, config/ssd_mobilenet_v1_300_config_gpu.yaml):
 * MobileNetV1 (conv + BN + ReLU6, BN eps 1e-5 and momentum 0.9, `nn.BatchNorm2d`'s
 * defaults) tapped at layer 14 (Conv7 pointwise, 512 channels at 19x19) and
 * layer 26 (Conv13 pointwise, 1024 at 10x10), then four extra 3x3/2 conv + BN
 * (eps 1e-3, momentum 0.97) + ReLU6 blocks (`multi_residual`: 512, 256, 256,
 * 128 channels at 5, 3, 2, 1), and the tutorial's MultiBox heads. 1917 boxes
 * with the `ssd300` anchors.
 *
 * @module
 */
import { type Graph, GraphBuilder, type Sym } from "./graph.ts";
import { mobileNetV1 } from "./mobilenet_v1.ts";
import { convBnRelu6 } from "./mobilenet_v2.ts";
import { multiBoxHeads } from "./ssd_heads.ts";

/** Options of {@linkcode ssdMobileNetV1300}. */
export interface SsdMobileNetV1300Options {
  inputSize: number;
  numClasses: number;
  boxesPerCell: readonly number[];
  /** Backbone layers that feed the heads (ModelZoo FeatureSelector([14, 26])). */
  taps?: readonly number[];
  /** Channels of the extra blocks (ModelZoo extras_out_channels[2:]: 512, 256, 256, 128). */
  extrasOutChannels?: readonly number[];
  /** BN of the extras and heads (`_bn`: eps 1e-3, momentum 0.97). */
  bnEps?: number;
  bnMomentum?: number;
}

/**
 * Builds SSD-MobileNetV1-300.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * import { inferShapes } from "./graph.ts";
 * const g = ssdMobileNetV1300({ inputSize: 300, numClasses: 81, boxesPerCell: [3, 6, 6, 6, 6, 6] });
 * assertEquals(inferShapes(g).get(g.outputs.loc), [1917, 4, 1]);
 * ```
 */
export function ssdMobileNetV1300(o: SsdMobileNetV1300Options): Graph {
  const taps = o.taps ?? [14, 26];
  const extras = o.extrasOutChannels ?? [512, 256, 256, 128];
  const g = new GraphBuilder([o.inputSize, o.inputSize, 3]);
  // MobileNetV1(features_only=True) keeps nn.BatchNorm2d's defaults (eps 1e-5, momentum 0.9).
  const { layers } = mobileNetV1(g, g.input, {
    prefix: "feature_extractor.mobilenet_v1",
    lastLayer: Math.max(...taps),
  });
  const features: Sym[] = taps.map((i) => layers[i]);
  const bn = { bnEps: o.bnEps, bnMomentum: o.bnMomentum }; // unset: `_bn`'s, as convBnRelu6 and the heads default
  extras.forEach((c, i) => {
    features.push(convBnRelu6(g, `multi_residual.${i}`, features.at(-1)!, c, { ...bn, kernel: 3, stride: 2 }));
  });
  const { loc, cls } = multiBoxHeads(g, features, {
    boxesPerCell: o.boxesPerCell,
    numClasses: o.numClasses,
    kind: "tutorial",
    bnEps: bn.bnEps,
    bnMomentum: bn.bnMomentum,
  });
  return g.build({ loc, cls });
}
