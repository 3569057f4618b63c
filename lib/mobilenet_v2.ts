/**
 * MobileNetV2 (Sandler et al. 2018) as the ModelZoo `ssd300` builds it
 * (`official/cv/SSD/src/ssd.py`, `SSDWithMobileNetV2`, `InvertedResidual`,
 * `ConvBNReLU`, `_bn`): a 3x3/2 stem, seventeen inverted residual blocks, a
 * final 1x1 conv to 1280 channels; every BN has eps 1e-3 and momentum 0.97,
 * every activation is ReLU6, no conv has a bias.
 *
 * For SSD the ModelZoo adds one layer of its own: `expand_layer_conv_13`, a
 * 1x1 conv + BN + ReLU6 from the output of block 12 (96 channels, 19x19 at 300)
 * to 576 channels. It mirrors block 13's expansion conv but has its own
 * weights; its output is the first SSD feature map.
 *
 * @module
 */
import { pyRound } from "./py_round.ts";
import { BN_DEFAULTS, type BnOptions, bnSettings, type GraphBuilder, type Sym } from "./graph.ts";

/** One stage of inverted residual blocks: expansion t, output channels c, repeats n, first stride s. */
export type InvertedResidualStage = readonly [t: number, c: number, n: number, s: number];

/** `SSDWithMobileNetV2`'s `inverted_residual_setting` (the MobileNetV2 paper's Table 2). */
export const MOBILENET_V2_STAGES: readonly InvertedResidualStage[] = [
  [1, 16, 1, 1],
  [6, 24, 2, 2],
  [6, 32, 3, 2],
  [6, 64, 4, 2],
  [6, 96, 3, 1],
  [6, 160, 3, 2],
  [6, 320, 1, 1],
];

/**
 * `_make_divisible` of `src/ssd.py`: the nearest multiple of `divisor` (at
 * least `minValue`), raised by one step if that loses more than 10 %.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * assertEquals([makeDivisible(32 * 0.75, 8), makeDivisible(1280, 8), makeDivisible(9, 8)], [24, 1280, 16]);
 * ```
 */
export function makeDivisible(v: number, divisor: number, minValue: number = divisor): number {
  let n = Math.max(minValue, Math.floor(Math.floor(v + divisor / 2) / divisor) * divisor);
  if (n < 0.9 * v) n += divisor;
  return n;
}

/** Conv + BN + ReLU6 (`ConvBNReLU`): 3x3 or 1x1, "same" padding, no bias; `depthwise` for the grouped form. */
export function convBnRelu6(
  g: GraphBuilder,
  name: string,
  x: Sym,
  channels: number,
  o: BnOptions & { kernel?: number; stride?: number; depthwise?: boolean } = {},
): Sym {
  const depthwise = o.depthwise ?? false;
  const y = g.conv(`${name}.conv`, x, depthwise ? 1 : channels, { kernel: o.kernel ?? 3, stride: o.stride, depthwise });
  return g.act(g.bn(`${name}.bn`, y, bnSettings(o, BN_DEFAULTS.modelzooSsd)), "relu6");
}

/**
 * One `InvertedResidual` block: 1x1 expansion to `round(cin * t)` channels
 * (skipped when t is 1), depthwise 3x3 with the stride, linear 1x1 projection
 * + BN; the input is added back when the stride is 1 and the channels match;
 * `lastRelu` appends a ReLU6 (the SSD extra layers set it).
 *
 * @example
 * ```ts
 * import { GraphBuilder } from "./graph.ts";
 * const g = new GraphBuilder([10, 10, 1280]);
 * const y = invertedResidual(g, "extra", g.input, 512, { stride: 2, expandRatio: 0.2, lastRelu: true });
 * if (y.shape.join() !== "5,5,512") throw new Error(`shape ${y.shape}`);
 * ```
 */
export function invertedResidual(
  g: GraphBuilder,
  name: string,
  x: Sym,
  outChannels: number,
  o: BnOptions & { stride: number; expandRatio: number; lastRelu?: boolean },
): Sym {
  const cin = x.shape[2];
  const hidden = pyRound(cin * o.expandRatio);
  let y = x;
  if (o.expandRatio !== 1) y = convBnRelu6(g, `${name}.expand`, y, hidden, { ...o, kernel: 1, stride: 1 });
  y = convBnRelu6(g, `${name}.dw`, y, hidden, { ...o, kernel: 3, stride: o.stride, depthwise: true });
  y = g.conv(`${name}.project.conv`, y, outChannels, { kernel: 1 });
  y = g.bn(`${name}.project.bn`, y, bnSettings(o, BN_DEFAULTS.modelzooSsd));
  if (o.stride === 1 && cin === outChannels) y = g.add(x, y);
  return o.lastRelu ? g.act(y, "relu6") : y;
}

/** Options of {@linkcode mobileNetV2}; defaults are `SSDWithMobileNetV2()`'s. */
export interface MobileNetV2Options extends BnOptions {
  /** Layer name prefix (default `backbone`). */
  prefix?: string;
  /** Width multiplier (default 1). */
  widthMult?: number;
  /** Channel rounding (default 8). */
  roundNearest?: number;
  /** Stem channels before the multiplier (default 32). */
  stemChannels?: number;
  /** Last 1x1 conv channels; the multiplier only widens it (default 1280). */
  lastChannels?: number;
  /** Stages (default {@linkcode MOBILENET_V2_STAGES}). */
  stages?: readonly InvertedResidualStage[];
  /** Block index before which the extra expansion layer taps (default 13, `expand_layer_conv_13`); null for none. */
  tapBlock?: number | null;
}

/** Outputs of {@linkcode mobileNetV2}. */
export interface MobileNetV2Features {
  /** Output of every inverted residual block. */
  blocks: Sym[];
  /** Output of the extra expansion layer (`expand_layer_conv_13`), when built. */
  tap: Sym | null;
  /** Output of the last 1x1 conv. */
  out: Sym;
}

/**
 * Adds the ModelZoo's SSD MobileNetV2 backbone on `x`.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * import { GraphBuilder } from "./graph.ts";
 * const g = new GraphBuilder([300, 300, 3]);
 * const { tap, out } = mobileNetV2(g, g.input);
 * assertEquals([tap!.shape, out.shape], [[19, 19, 576], [10, 10, 1280]]);
 * ```
 */
export function mobileNetV2(g: GraphBuilder, x: Sym, o: MobileNetV2Options = {}): MobileNetV2Features {
  const prefix = o.prefix ?? "backbone";
  const width = o.widthMult ?? 1, round = o.roundNearest ?? 8;
  const tapBlock = o.tapBlock === undefined ? 13 : o.tapBlock;
  const bn = { bnEps: o.bnEps, bnMomentum: o.bnMomentum };
  let y = convBnRelu6(g, `${prefix}.stem`, x, makeDivisible((o.stemChannels ?? 32) * width, round), {
    ...bn,
    kernel: 3,
    stride: 2,
  });
  const blocks: Sym[] = [];
  let tap: Sym | null = null;
  for (const [t, c, n, s] of o.stages ?? MOBILENET_V2_STAGES) {
    const cout = makeDivisible(c * width, round);
    for (let i = 0; i < n; i++) {
      if (blocks.length === tapBlock) {
        tap = convBnRelu6(g, `${prefix}.expand_layer_conv_${tapBlock}`, y, pyRound(y.shape[2] * t), {
          ...bn,
          kernel: 1,
        });
      }
      y = invertedResidual(g, `${prefix}.block${blocks.length}`, y, cout, {
        ...bn,
        stride: i === 0 ? s : 1,
        expandRatio: t,
      });
      blocks.push(y);
    }
  }
  const last = makeDivisible((o.lastChannels ?? 1280) * Math.max(1, width), round);
  const out = convBnRelu6(g, `${prefix}.last`, y, last, { ...bn, kernel: 1 });
  return { blocks, tap, out };
}
