/**
 * SSD-MobileNetV1 as the TF Object Detection API builds it (`ssd_mobilenet_v1`
 * feature extractor with `ConvolutionalBoxPredictor`), in the form face-api
 * ships frozen for tfjs (`@vladmandic/face-api` `src/ssdMobilenetv1/`):
 *
 * - backbone: MobileNetV1 ({@linkcode mobileNetV1}) with TF "same" padding and
 *   ReLU6; the stem and every pointwise conv carry a folded batch norm (a bias,
 *   face-api's `convolution_bn_offset`), the depthwise convs a full batch norm
 *   with TF-slim's epsilon 1e-3 (as float32: 0.0010000000474974513);
 * - extra layers `Prediction/Conv2d_0..7_pointwise`: alternating 1x1 stride-1
 *   and 3x3 stride-2 convs with bias and ReLU6, channels 256, 512, 128, 256,
 *   128, 256, 64, 128;
 * - six feature maps: `Conv2d_11_pointwise` (32x32x512 at 512), `Conv2d_13_pointwise`
 *   (16x16x1024) and extra layers 1, 3, 5, 7 (8x8, 4x4, 2x2, 1x1);
 * - heads: a 1x1 conv with bias per map and output (the `conv1x1` heads of
 *   `ssd_heads.ts`), 3, 6, 6, 6, 6, 6 boxes per cell: 5118 boxes at 512.
 *
 * The graph outputs raw logits (`cls` [A, classLogits]); which logit is a
 * class and its activation are post-processing (face-api: sigmoid of logit 1).
 *
 * @module
 */
import type { Spec } from "./config.ts";
import { ConfigError } from "./errors.ts";
import { type Graph, GraphBuilder, type Sym } from "./graph.ts";
import { mobileNetV1 } from "./mobilenet_v1.ts";
import { multiBoxHeads } from "./ssd_heads.ts";

/** TF-slim's batch-norm epsilon 1e-3, as the float32 the frozen graph stores. */
export const TFOD_BN_EPS = Math.fround(0.001);

/** Channels of the extra layers `Prediction/Conv2d_0..7_pointwise` (face-api's weights). */
export const TFOD_EXTRA_CHANNELS: readonly number[] = [256, 512, 128, 256, 128, 256, 64, 128];

/** Options of {@linkcode ssdMobileNetV1Tfod}. */
export interface SsdMobileNetV1TfodOptions {
  /** Input side (face-api 512). */
  inputSize: number;
  /** Class logits per box (face-api 3: background, face and one unused). */
  classLogits: number;
  /** Boxes per cell per feature map (face-api [3, 6, 6, 6, 6, 6]). */
  boxesPerCell: readonly number[];
  /** Channels of the eight extra layers (default {@linkcode TFOD_EXTRA_CHANNELS}). */
  extraChannels?: readonly number[];
  /** BN epsilon of the depthwise convs (default {@linkcode TFOD_BN_EPS}). */
  bnEps?: number;
}

/** Config keys of this model (`model.options`); null means face-api's value. */
export const ssdMobileNetV1TfodSpec: Spec = {
  type: "object",
  optional: true,
  doc: "TF OD API SSD-MobileNetV1 (face-api's ssdMobilenetv1)",
  fields: {
    class_logits: { type: "number", int: true, min: 1, nullable: true, doc: "class logits per box (3)" },
    extra_channels: {
      type: "array",
      items: { type: "number", int: true, min: 1 },
      nullable: true,
      doc: "channels of the 8 extra layers",
    },
    preprocess: {
      type: "string",
      enum: ["faceapi"],
      nullable: true,
      doc: "input preprocessing: faceapi (pad bottom/right to square, tfjs bilinear resize, x / 127.5 - 1)",
    },
  },
};

/**
 * Builds the network.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * import { inferShapes } from "./graph.ts";
 * const g = ssdMobileNetV1Tfod({ inputSize: 512, classLogits: 3, boxesPerCell: [3, 6, 6, 6, 6, 6] });
 * const shapes = inferShapes(g);
 * // 32*32*3 + 16*16*6 + 8*8*6 + 4*4*6 + 2*2*6 + 1*1*6 = 5118 boxes.
 * assertEquals([shapes.get(g.outputs.loc), shapes.get(g.outputs.cls)], [[5118, 4, 1], [5118, 3, 1]]);
 * // Convs: stem + 13 x (depthwise + pointwise), 8 extra layers, 6 x 2 heads.
 * assertEquals(g.params.filter((p) => p.name.endsWith(".weight")).length, 1 + 26 + 8 + 12);
 * ```
 */
export function ssdMobileNetV1Tfod(o: SsdMobileNetV1TfodOptions): Graph {
  const g = new GraphBuilder([o.inputSize, o.inputSize, 3]);
  const backbone = mobileNetV1(g, g.input, {
    padding: "same",
    norm: { conv: "bias", depthwise: "bn" },
    bnEps: o.bnEps ?? TFOD_BN_EPS,
    activation: "relu6",
  });
  // features_only indices: 22 is Conv2d_11_pointwise, 26 Conv2d_13_pointwise.
  const conv11 = backbone.layers[22], conv13 = backbone.layers[26];
  const channels = o.extraChannels ?? TFOD_EXTRA_CHANNELS;
  if (channels.length !== 8) throw new RangeError(`expected 8 extra layer channels, got ${channels.length}`);
  const maps: Sym[] = [conv11, conv13];
  let y = conv13;
  channels.forEach((c, k) => {
    // Even layers squeeze with a 1x1 conv, odd ones halve the map with a 3x3 stride-2 conv (TF "same").
    const odd = k % 2 === 1;
    y = g.conv(`extras.Conv2d_${k}_pointwise.conv`, y, c, { kernel: odd ? 3 : 1, stride: odd ? 2 : 1, bias: true });
    y = g.act(y, "relu6");
    if (odd) maps.push(y);
  });
  const { loc, cls } = multiBoxHeads(g, maps, {
    boxesPerCell: o.boxesPerCell,
    numClasses: o.classLogits,
    kind: "conv1x1",
  });
  return g.build({ loc, cls });
}

/** The validated `model.options` of this architecture. */
export interface SsdMobileNetV1TfodConfig {
  class_logits: number | null;
  extra_channels: number[] | null;
  preprocess: "faceapi" | null;
}

/** What a run config gives {@linkcode ssdMobileNetV1TfodFromConfig} besides `model.options`. */
export interface TfodRunShape {
  /** `model.input_size`. */
  inputSize: number;
  /** `model.num_classes`, background included. */
  numClasses: number;
  /** `anchors.num_default`: boxes per cell of the six maps. */
  numDefault?: number[] | null;
}

/**
 * Builds the network of a run config (`model.arch: ssd_mobilenetv1_tfod`). Boxes per cell come
 * from `anchors.num_default`, since stored anchors carry no per-level structure of their own.
 */
export function ssdMobileNetV1TfodFromConfig(o: SsdMobileNetV1TfodConfig, run: TfodRunShape): Graph {
  const perCell = run.numDefault;
  if (!perCell) throw new ConfigError("is required: boxes per cell of the six maps", { key: "anchors.num_default" });
  return ssdMobileNetV1Tfod({
    inputSize: run.inputSize,
    classLogits: o.class_logits ?? run.numClasses,
    boxesPerCell: perCell,
    extraChannels: o.extra_channels ?? undefined,
  });
}
