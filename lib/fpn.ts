/**
 * The feature pyramid of the ModelZoo FPN variants (`official/cv/SSD/src/fpn.py`,
 * `FpnTopDown` then `BottomUp`):
 *
 * 1. lateral: a 1x1 conv with bias to `outChannels` on every backbone map;
 * 2. top-down: from the coarsest lateral, resize (bilinear, `ops.ResizeBilinear`)
 *    to the next finer map's size and add that map's lateral, down to the finest;
 * 3. output: a 3x3 conv + BN + ReLU6 (`conv_bn_relu`, default BN eps 1e-5 and
 *    momentum 0.9) on every merged map, finest first;
 * 4. bottom-up extra levels: `bottomUpLevels` 3x3/2 conv + BN + ReLU6 layers,
 *    each on the previous coarsest level.
 *
 * With MobileNetV1 at 640x640 the backbone maps are 80, 40, 20 and the extras
 * 10 and 5: five levels of 256 channels, finest first.
 *
 * @module
 */
import { BN_DEFAULTS, bnSettings, type GraphBuilder, type Sym } from "./graph.ts";

/** Options of {@linkcode fpn}; defaults are the ModelZoo's. */
export interface FpnOptions {
  /** Layer name prefix (default `fpn`). */
  prefix?: string;
  /** Channels of every level (default 256, `FpnTopDown(..., 256)`). */
  outChannels?: number;
  /** Extra stride-2 levels on top (default 2, `BottomUp(2, 256, 3, 2)`). */
  bottomUpLevels?: number;
  /** Top-down resize: `bilinear` (default, TF legacy as `ops.ResizeBilinear`) or `nearest`. */
  upsample?: "bilinear" | "nearest";
  /** Default 1e-5 (`nn.BatchNorm2d`'s default, used by `conv_bn_relu`). */
  bnEps?: number;
  /** Default 0.9 (`nn.BatchNorm2d`'s default). */
  bnMomentum?: number;
  /** Activation of the output and extra layers (default `relu6`). */
  activation?: "relu6" | "relu";
}

/**
 * Adds the pyramid over backbone maps `inputs` (finest first, each exactly
 * twice the next one's size) and returns its levels, finest first.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * import { GraphBuilder } from "./graph.ts";
 * const g = new GraphBuilder([32, 32, 3]);
 * const c3 = g.conv("c3", g.input, 8, { stride: 8 }); // 4x4
 * const c4 = g.conv("c4", c3, 16, { stride: 2 }); // 2x2
 * const levels = fpn(g, [c3, c4], { outChannels: 4, bottomUpLevels: 1 });
 * assertEquals(levels.map((l) => l.shape), [[4, 4, 4], [2, 2, 4], [1, 1, 4]]);
 * ```
 */
export function fpn(g: GraphBuilder, inputs: readonly Sym[], o: FpnOptions = {}): Sym[] {
  const p = o.prefix ?? "fpn";
  const c = o.outChannels ?? 256;
  const act = o.activation ?? "relu6";
  const bnOpts = bnSettings(o, BN_DEFAULTS.mindspore);
  const convBnAct = (name: string, x: Sym, stride: number) =>
    g.act(g.bn(`${name}.bn`, g.conv(`${name}.conv`, x, c, { kernel: 3, stride }), bnOpts), act);
  const laterals = inputs.map((x, i) => g.conv(`${p}.lateral${i}`, x, c, { kernel: 1, bias: true }));
  // Top-down, coarsest first; merged[i] is level i after the addition.
  const merged: Sym[] = new Array(inputs.length);
  merged[inputs.length - 1] = laterals[inputs.length - 1];
  for (let i = inputs.length - 2; i >= 0; i--) {
    const top = merged[i + 1], [h, w] = laterals[i].shape;
    const scale = h / top.shape[0];
    if (!Number.isInteger(scale) || top.shape[0] * scale !== h || top.shape[1] * scale !== w) {
      throw new RangeError(`fpn: level ${i} is ${h}x${w}, not an integer multiple of level ${i + 1}'s ${top.shape}`);
    }
    merged[i] = g.add(g.upsample(top, scale, o.upsample ?? "bilinear"), laterals[i]);
  }
  const levels = merged.map((x, i) => convBnAct(`${p}.output${i}`, x, 1));
  for (let k = 0; k < (o.bottomUpLevels ?? 2); k++) {
    levels.push(convBnAct(`${p}.bottom_up${k}`, levels[levels.length - 1], 2));
  }
  return levels;
}
