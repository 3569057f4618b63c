/**
 * SSD prediction heads. For each feature map, one head predicts 4 box offsets
 * per default box and one predicts a score per class per default box; their
 * outputs are flattened in (row, col, box) order and concatenated across
 * feature maps, which is the order `default_boxes.ts` generates boxes in.
 *
 * @module
 */
import { BN_DEFAULTS, bnSettings, type GraphBuilder, type Sym } from "./graph.ts";

/** Head styles. */
export type HeadKind = "tutorial" | "conv3x3" | "conv1x1";

/** Options of {@linkcode multiBoxHeads}. */
export interface HeadOptions {
  /** Default boxes per cell, one entry per feature map. */
  boxesPerCell: readonly number[];
  /** Classes including background. */
  numClasses: number;
  /**
   * `tutorial`: depthwise 3x3 + BN + ReLU6 + 1x1 conv with bias (the tutorial's
   * `_last_conv2d`, also ModelZoo MobileNetV2 `ssd300`); `conv3x3`: one 3x3 conv
   * with bias (the SSD paper); `conv1x1`: one 1x1 conv with bias (TF Object Detection API's
   * `ConvolutionalBoxPredictor` with kernel 1, e.g. face-api's SSD-MobileNetV1).
   */
  kind?: HeadKind;
  bnEps?: number;
  bnMomentum?: number;
  /** Name prefix. */
  prefix?: string;
}

function head(g: GraphBuilder, name: string, x: Sym, outChannels: number, o: HeadOptions): Sym {
  if ((o.kind ?? "tutorial") === "conv3x3") return g.conv(name, x, outChannels, { kernel: 3, bias: true });
  if (o.kind === "conv1x1") return g.conv(name, x, outChannels, { kernel: 1, bias: true });
  let y = g.conv(`${name}.dw`, x, 1, { kernel: 3, depthwise: true });
  y = g.bn(`${name}.bn`, y, bnSettings(o, BN_DEFAULTS.modelzooSsd));
  y = g.act(y, "relu6");
  return g.conv(`${name}.pw`, y, outChannels, { kernel: 1, bias: true });
}

/**
 * Adds loc and cls heads over `features` and returns `loc` [A, 4] and `cls`
 * [A, numClasses] symbols (batch excluded).
 *
 * @example
 * ```ts
 * import { GraphBuilder } from "./graph.ts";
 * const g = new GraphBuilder([8, 8, 3]);
 * const f = g.conv("f", g.input, 4, { stride: 2 }); // 4x4
 * const { loc, cls } = multiBoxHeads(g, [f], { boxesPerCell: [2], numClasses: 3 });
 * if (loc.shape[0] !== 32 || cls.shape[1] !== 3) throw new Error("wrong head shapes");
 * ```
 */
export function multiBoxHeads(g: GraphBuilder, features: Sym[], o: HeadOptions): { loc: Sym; cls: Sym } {
  if (features.length !== o.boxesPerCell.length) {
    throw new RangeError(`${features.length} feature maps but ${o.boxesPerCell.length} boxes-per-cell entries`);
  }
  const p = o.prefix ?? "multibox";
  const locs: Sym[] = [], clss: Sym[] = [];
  features.forEach((f, i) => {
    const k = o.boxesPerCell[i];
    locs.push(g.flattenHead(head(g, `${p}.loc${i}`, f, 4 * k, o), 4));
    clss.push(g.flattenHead(head(g, `${p}.cls${i}`, f, o.numClasses * k, o), o.numClasses));
  });
  return { loc: g.concatAnchors(locs), cls: g.concatAnchors(clss) };
}
