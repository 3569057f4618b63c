/**
 * MobileNetV1 (Howard et al. 2017) as a backbone: a 3x3/2 stem conv, then
 * thirteen depthwise-separable blocks (depthwise 3x3 + BN + ReLU6, pointwise
 * 1x1 + BN + ReLU6). It returns the output of every layer, indexed as the
 * ModelZoo's `MobileNetV1(features_only=True)` returns them
 * (`official/cv/SSD/src/mobilenet_v1.py`): 0 is `Conv2d_0`, 2k-1 is
 * `Conv2d_k_depthwise` and 2k is `Conv2d_k_pointwise`, so 26 is the last
 * pointwise layer. The FPN variant taps 10, 22 and 26 (`src/fpn.py`); the
 * 300x300 variant 14 and 26.
 *
 * Layer names follow TF-slim (`Conv2d_1_depthwise` ...), so the weights of a
 * TF Object Detection API SSD-MobileNetV1 can be mapped onto them. The TF-slim
 * knobs are options: depth multiplier and minimum depth, BN epsilon, ReLU6 or
 * ReLU, "same" (TF / MindSpore: extra padding at the bottom and right) or
 * symmetric padding, and bias instead of batch norm (folded checkpoints).
 *
 * @module
 */
import { BN_DEFAULTS, bnSettings, type GraphBuilder, type PadArg, type Sym } from "./graph.ts";

/** One depthwise-separable block: stride of its depthwise conv, output channels of its pointwise conv. */
export type SeparableBlock = readonly [stride: number, channels: number];

/**
 * The ModelZoo / TF-slim MobileNetV1 blocks (`src/mobilenet_v1.py`, comments
 * `Conv1_depthwise` ... `Conv13_pointwise`): strides 2 at blocks 2, 4, 6 and 12.
 */
export const MOBILENET_V1_BLOCKS: readonly SeparableBlock[] = [
  [1, 64],
  [2, 128],
  [1, 128],
  [2, 256],
  [1, 256],
  [2, 512],
  [1, 512],
  [1, 512],
  [1, 512],
  [1, 512],
  [1, 512],
  [2, 1024],
  [1, 1024],
];

/** Options of {@linkcode mobileNetV1}. Defaults are the ModelZoo's (`src/mobilenet_v1.py`). */
export interface MobileNetV1Options {
  /** Layer name prefix (default `backbone`). */
  prefix?: string;
  /** Stem conv channels before the multiplier (default 32). */
  stemChannels?: number;
  /** Separable blocks (default {@linkcode MOBILENET_V1_BLOCKS}). */
  blocks?: readonly SeparableBlock[];
  /** TF-slim `depth_multiplier`: stem and pointwise channels become `max(floor(c * m), minDepth)` (default 1). */
  depthMultiplier?: number;
  /** TF-slim `min_depth` (default 8, slim's `mobilenet_v1` default; it only bites when the multiplier is below 1). */
  minDepth?: number;
  /**
   * `same` (default): TF / MindSpore "same" padding, the extra row and column at the bottom and
   * right; `symmetric`: (k - 1) / 2 on every side (Caffe / PyTorch style). They differ on strided layers.
   */
  padding?: "same" | "symmetric";
  /** Batch norm after every conv (default true). */
  batchNorm?: boolean;
  /** Bias on every conv (default false; true with `batchNorm: false` for BN-folded weights). */
  bias?: boolean;
  /**
   * Per layer kind, overriding `batchNorm` and `bias`: `bn` (batch norm, no bias) or `bias` (a folded
   * batch norm: bias only). `conv` is the stem and the pointwise convs, `depthwise` the depthwise ones.
   * TF Object Detection API graphs frozen for tfjs (face-api's SSD) fold BN into the full convs only.
   */
  norm?: { conv?: "bn" | "bias"; depthwise?: "bn" | "bias" };
  /** BN epsilon (default 1e-5: MindSpore `nn.BatchNorm2d`'s default, which `conv_bn_relu` keeps; TF-slim uses 1e-3). */
  bnEps?: number;
  /** BN momentum, the weight of the old moving average (default 0.9, `nn.BatchNorm2d`'s default). */
  bnMomentum?: number;
  /** Activation after every layer (default `relu6`, `conv_bn_relu`'s `activation='relu6'`). */
  activation?: "relu6" | "relu";
  /** Index of the last layer to build (default: all, 2 * blocks). */
  lastLayer?: number;
}

/** Every layer's output and TF-slim name, by ModelZoo `features_only` index. */
export interface MobileNetV1Features {
  layers: Sym[];
  names: string[];
}

/**
 * Adds MobileNetV1 on `x` and returns every layer's output. Each layer is a
 * conv named `${prefix}.${name}.conv`, a BN `${prefix}.${name}.bn` and the activation.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * import { GraphBuilder } from "./graph.ts";
 * const g = new GraphBuilder([64, 64, 3]);
 * const { layers, names } = mobileNetV1(g, g.input, { depthMultiplier: 0.25 });
 * assertEquals(layers.length, 27);
 * assertEquals([names[26], layers[26].shape], ["Conv2d_13_pointwise", [2, 2, 256]]);
 * assertEquals([names[10], layers[10].shape], ["Conv2d_5_pointwise", [8, 8, 64]]);
 * ```
 */
export function mobileNetV1(g: GraphBuilder, x: Sym, o: MobileNetV1Options = {}): MobileNetV1Features {
  const prefix = o.prefix ?? "backbone";
  const blocks = o.blocks ?? MOBILENET_V1_BLOCKS;
  const multiplier = o.depthMultiplier ?? 1;
  const minDepth = o.minDepth ?? 8;
  const lastLayer = o.lastLayer ?? 2 * blocks.length;
  const batchNorm = o.batchNorm ?? true;
  // TF-slim mobilenet_v1: depth = lambda d: max(int(d * depth_multiplier), min_depth).
  const depth = (c: number) => Math.max(Math.floor(c * multiplier), minDepth);
  const pad = (k: number): PadArg => (o.padding ?? "same") === "same" ? "same" : (k - 1) / 2;
  const layers: Sym[] = [], names: string[] = [];
  const kindNorm = (depthwise: boolean) => depthwise ? o.norm?.depthwise : o.norm?.conv;
  const layer = (name: string, inp: Sym, filters: number, kernel: number, stride: number, depthwise: boolean) => {
    let y = g.conv(`${prefix}.${name}.conv`, inp, filters, {
      kernel,
      stride,
      pad: pad(kernel),
      depthwise,
      bias: kindNorm(depthwise) === undefined ? (o.bias ?? false) : kindNorm(depthwise) === "bias",
    });
    if (kindNorm(depthwise) === undefined ? batchNorm : kindNorm(depthwise) === "bn") {
      y = g.bn(`${prefix}.${name}.bn`, y, bnSettings(o, BN_DEFAULTS.mindspore));
    }
    y = g.act(y, o.activation ?? "relu6");
    layers.push(y), names.push(name);
    return y;
  };
  let y = layer("Conv2d_0", x, depth(o.stemChannels ?? 32), 3, 2, false);
  for (let k = 1; k <= blocks.length && 2 * k - 1 <= lastLayer; k++) {
    const [stride, channels] = blocks[k - 1];
    y = layer(`Conv2d_${k}_depthwise`, y, 1, 3, stride, true);
    if (2 * k > lastLayer) break;
    y = layer(`Conv2d_${k}_pointwise`, y, depth(channels), 1, 1, false);
  }
  return { layers, names };
}
