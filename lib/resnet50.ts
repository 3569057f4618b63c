/**
 * ResNet50 as the ModelZoo's FPN variant builds it (`official/cv/SSD/src/resnet.py`):
 * a 7x7/2 stem + BN + ReLU and a 3x3/2 max pool ("same"), then four stages of
 * bottleneck blocks (1x1, 3x3, 1x1 with 4x expansion), the stride on the 3x3
 * conv (the "v1.5" placement), a 1x1 projection + BN on the shortcut when the
 * stride or the channels change. Every conv is "same" padded without bias;
 * every BN has eps 1e-3 and momentum 0.997.
 *
 * The ModelZoo starts the last BN of each block at gamma 0 (`_bn_last`), so
 * every block begins as the identity; {@linkcode resnetInitOverrides} gives that
 * to `initParams`.
 *
 * @module
 */
import { BN_DEFAULTS, bnSettings, type GraphBuilder, type ParamSpec, type Sym } from "./graph.ts";

/** Options of {@linkcode resNet50}; defaults are `resnet50()`'s. */
export interface ResNetOptions {
  /** Layer name prefix (default `backbone`). */
  prefix?: string;
  /** Blocks per stage (default [3, 4, 6, 3]). */
  layerNums?: readonly number[];
  /** Output channels per stage (default [256, 512, 1024, 2048]); the bottleneck width is a quarter of it. */
  outChannels?: readonly number[];
  /** First stride per stage (default [1, 2, 2, 2]). */
  strides?: readonly number[];
  /** Stem channels (default 64). */
  stemChannels?: number;
  /** Default 1e-3. */
  bnEps?: number;
  /** Default 0.997, the weight of the old moving average. */
  bnMomentum?: number;
}

/** Stage outputs, as `ResNet.construct` returns them: c1 (after the pool), c2 ... c5. */
export type ResNetFeatures = [c1: Sym, c2: Sym, c3: Sym, c4: Sym, c5: Sym];

/**
 * Adds ResNet50 (or another bottleneck ResNet, by options) on `x`.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * import { GraphBuilder } from "./graph.ts";
 * const g = new GraphBuilder([64, 64, 3]);
 * const [c1, , c3, , c5] = resNet50(g, g.input);
 * assertEquals([c1.shape, c3.shape, c5.shape], [[16, 16, 64], [8, 8, 512], [2, 2, 2048]]);
 * ```
 */
export function resNet50(g: GraphBuilder, x: Sym, o: ResNetOptions = {}): ResNetFeatures {
  const prefix = o.prefix ?? "backbone";
  const layerNums = o.layerNums ?? [3, 4, 6, 3];
  const outChannels = o.outChannels ?? [256, 512, 1024, 2048];
  const strides = o.strides ?? [1, 2, 2, 2];
  const bnOpts = bnSettings(o, BN_DEFAULTS.resnet);
  const convBn = (name: string, inp: Sym, c: number, kernel: number, stride: number) =>
    g.bn(`${name}.bn`, g.conv(`${name}.conv`, inp, c, { kernel, stride }), bnOpts);
  let y = g.act(convBn(`${prefix}.stem`, x, o.stemChannels ?? 64, 7, 2), "relu");
  y = g.maxpool(y, 3, 2, "same");
  const features: Sym[] = [y];
  layerNums.forEach((n, s) => {
    for (let b = 0; b < n; b++) {
      const name = `${prefix}.layer${s + 1}.${b}`;
      const stride = b === 0 ? strides[s] : 1;
      const cout = outChannels[s], width = cout / 4;
      // ResidualBlock: conv1 1x1, conv2 3x3 (strided), conv3 1x1 whose BN is `_bn_last`.
      let r = g.act(convBn(`${name}.conv1`, y, width, 1, 1), "relu");
      r = g.act(convBn(`${name}.conv2`, r, width, 3, stride), "relu");
      r = convBn(`${name}.conv3`, r, cout, 1, 1);
      const shortcut = stride !== 1 || y.shape[2] !== cout ? convBn(`${name}.down_sample`, y, cout, 1, stride) : y;
      y = g.act(g.add(r, shortcut), "relu");
    }
    features.push(y);
  });
  return features as ResNetFeatures;
}

/**
 * `initParams` overrides that start every block's last BN at gamma 0, as
 * `_bn_last` of `src/resnet.py` does.
 *
 * @example
 * ```ts
 * const o = resnetInitOverrides();
 * const spec = { name: "backbone.layer1.0.conv3.bn.gamma", shape: [4], kind: "gamma", node: "x", fanIn: 1 } as const;
 * if (o[".conv3.bn.gamma"]({ ...spec, shape: [4] }).some((v) => v !== 0)) throw new Error("expected zeros");
 * ```
 */
export function resnetInitOverrides(): Record<string, (spec: ParamSpec) => Float32Array> {
  return { ".conv3.bn.gamma": (p) => new Float32Array(p.shape.reduce((a, b) => a * b, 1)) };
}
