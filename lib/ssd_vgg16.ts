/**
 * SSD300 with a VGG16 backbone, as the MindSpore tutorial builds it
 * ("Building a Model"): VGG16 blocks 1-5 (3x3 convs without bias, ReLU,
 * 2x2 max pools, a 3x3/1 pool after block 5), fc6 as a 3x3 conv with dilation
 * 6, fc7 as a 1x1 conv, extra blocks 8-11, and MultiBox heads on block4 (38x38),
 * block7 (19x19), block8 (10x10), block9 (5x5), block10 (3x3), block11 (1x1).
 *
 * @module
 */
import { type Graph, GraphBuilder, type Sym } from "./graph.ts";
import { type HeadKind, multiBoxHeads } from "./ssd_heads.ts";

/** Options of {@linkcode ssdVgg16}. */
export interface SsdVgg16Options {
  inputSize: number;
  numClasses: number;
  boxesPerCell: readonly number[];
  /**
   * The tutorial applies no activation after fc6, fc7 and the extra blocks
   * (its `construct` chains the convs directly); the SSD paper uses ReLU there.
   */
  extraRelu?: boolean;
  head?: HeadKind;
  /** Drop probability of the dropout after fc6 and fc7 in training (the tutorial's `nn.Dropout(p=0.5)`; default 0, off). */
  dropout?: number;
  bnEps?: number;
  bnMomentum?: number;
}

/**
 * Builds the tutorial's SSD300-VGG16.
 *
 * @example
 * ```ts
 * import { inferShapes } from "./graph.ts";
 * const g = ssdVgg16({ inputSize: 300, numClasses: 81, boxesPerCell: [4, 6, 6, 6, 4, 4] });
 * if (inferShapes(g).get(g.outputs.loc)![0] !== 8732) throw new Error("expected 8732 boxes");
 * ```
 */
export function ssdVgg16(o: SsdVgg16Options): Graph {
  const g = new GraphBuilder([o.inputSize, o.inputSize, 3]);
  const relu = (x: Sym) => o.extraRelu ? g.act(x, "relu") : x;
  const block = (name: string, x: Sym, channels: number[]) => {
    channels.forEach((c, i) => x = g.act(g.conv(`backbone.${name}.${i}`, x, c, { kernel: 3 }), "relu"));
    return x;
  };
  let x = block("b1", g.input, [64, 64]);
  x = g.maxpool(x, 2, 2, "same");
  x = block("b2", x, [128, 128]);
  x = g.maxpool(x, 2, 2, "same");
  x = block("b3", x, [256, 256, 256]);
  x = g.maxpool(x, 2, 2, "same");
  const block4 = block("b4", x, [512, 512, 512]);
  x = g.maxpool(block4, 2, 2, "same");
  x = block("b5", x, [512, 512, 512]);
  x = g.maxpool(x, 3, 1, "same");
  // fc6: 3x3, dilation 6, padding 6 keeps 19x19; b6_2 and b7_2 are Dropout(p=0.5), in training only.
  x = g.dropout(relu(g.conv("b6", x, 1024, { kernel: 3, dilation: 6, pad: 6 })), o.dropout ?? 0);
  const block7 = g.dropout(relu(g.conv("b7", x, 1024, { kernel: 1 })), o.dropout ?? 0);
  // The 1x1 convs of blocks 8 and 9 pad by 1 (pad_mode "pad"), so the valid 3x3/2 convs give 10x10 and 5x5.
  x = relu(g.conv("b8_1", block7, 256, { kernel: 1, pad: 1 }));
  const block8 = relu(g.conv("b8_2", x, 512, { kernel: 3, stride: 2, pad: "valid" }));
  x = relu(g.conv("b9_1", block8, 128, { kernel: 1, pad: 1 }));
  const block9 = relu(g.conv("b9_2", x, 256, { kernel: 3, stride: 2, pad: "valid" }));
  x = relu(g.conv("b10_1", block9, 128, { kernel: 1 }));
  const block10 = relu(g.conv("b10_2", x, 256, { kernel: 3, pad: "valid" }));
  x = relu(g.conv("b11_1", block10, 128, { kernel: 1 }));
  const block11 = relu(g.conv("b11_2", x, 256, { kernel: 3, pad: "valid" }));
  const { loc, cls } = multiBoxHeads(g, [block4, block7, block8, block9, block10, block11], {
    boxesPerCell: o.boxesPerCell,
    numClasses: o.numClasses,
    kind: o.head,
    bnEps: o.bnEps,
    bnMomentum: o.bnMomentum,
  });
  return g.build({ loc, cls });
}
