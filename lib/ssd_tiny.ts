/**
 * A small SSD for the synthetic demo: a plain stack of 3x3 conv + BN + ReLU
 * stages, each halving the resolution, with heads on the last few stages. It
 * trains visibly in minutes on two CPU cores, which is its whole purpose.
 *
 * @module
 */
import { BN_DEFAULTS, bnSettings, type Graph, GraphBuilder, type Sym } from "./graph.ts";
import { type HeadKind, multiBoxHeads } from "./ssd_heads.ts";

/** Options of {@linkcode ssdTiny}. */
export interface SsdTinyOptions {
  inputSize: number;
  numClasses: number;
  boxesPerCell: readonly number[];
  /** Channels per stage; each stage is a 3x3/2 conv then a 3x3/1 conv (both BN + ReLU). */
  channels: readonly number[];
  /** Heads go on the last `boxesPerCell.length` stages. */
  head?: HeadKind;
  bnMomentum?: number;
}

/**
 * Builds the demo SSD.
 *
 * @example
 * ```ts
 * const g = ssdTiny({ inputSize: 64, numClasses: 4, boxesPerCell: [4, 4], channels: [8, 16, 16, 16] });
 * if (g.outputs.loc === undefined) throw new Error("no loc output");
 * ```
 */
export function ssdTiny(o: SsdTinyOptions): Graph {
  const g = new GraphBuilder([o.inputSize, o.inputSize, 3]);
  const cbr = (name: string, x: Sym, c: number, stride: number) =>
    g.act(
      g.bn(`${name}.bn`, g.conv(`${name}.conv`, x, c, { kernel: 3, stride }), bnSettings(o, BN_DEFAULTS.mindspore)),
      "relu",
    );
  let x = g.input;
  const stages: Sym[] = [];
  o.channels.forEach((c, i) => {
    x = cbr(`stage${i}.down`, x, c, 2);
    // The smallest maps (2x2 and below) get no second conv: there is little left to mix.
    if (x.shape[0] > 2) x = cbr(`stage${i}.mix`, x, c, 1);
    stages.push(x);
  });
  const features = stages.slice(stages.length - o.boxesPerCell.length);
  const { loc, cls } = multiBoxHeads(g, features, {
    boxesPerCell: o.boxesPerCell,
    numClasses: o.numClasses,
    kind: o.head ?? "conv3x3",
  });
  return g.build({ loc, cls });
}
