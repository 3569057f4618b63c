/**
 * ONNX export of a workbench network: the graph IR of lib/graph.ts written as a
 * standard ONNX model (opset 13) through the compiled ONNX schema (`onnx-proto`,
 * protobufjs), with everything inference needs stored beside it.
 *
 * Layout: tfjs runs NHWC, ONNX `Conv` wants NCHW. The input is transposed once
 * (perm [0, 3, 1, 2]); convolutions, pools and resizes run NCHW; each head is
 * transposed back to NHWC before its flatten reshape, so anchors come out in the
 * tfjs order (row, col, box) that lib/default_boxes.ts generates.
 *
 * Batch norm that directly follows a convolution (and is that convolution's only
 * consumer) is folded into it: w' = w · γ/√(σ²+ε) per output channel,
 * b' = (b − μ) · γ/√(σ²+ε) + β. Any other batch norm becomes a
 * `BatchNormalization` node.
 *
 * Outputs: `loc` [N, A, 4] raw regressions (ty, tx, th, tw), `scores` [N, A, C]
 * after the model's score activation and, optionally, `boxes` [N, A, 4] decoded
 * y1, x1, y2, x2 (normalised) with the anchors as an initializer. The batch
 * dimension is symbolic ("N").
 *
 * The inference config ({@linkcode OnnxModelConfig}: classes, anchors, box coder,
 * post-processing, preprocessing) is written as `config.yaml` and also stored in
 * the model's `metadata_props` under {@linkcode CONFIG_METADATA_KEY}.
 *
 * @module
 */
import onnxProto from "onnx-proto";
import * as path from "node:path";
import YAML from "yaml";
import type { AugmentConfig } from "./augment.ts";
import type { BoxCoderConfig } from "./box_coder.ts";
import type { Checkpoint, ParamValues } from "./checkpoint.ts";
import type { Spec } from "./config.ts";
import type { DefaultBoxesConfig } from "./default_boxes.ts";
import { InputError } from "./errors.ts";
import { writeFileAtomic } from "./fs_atomic.ts";
import type { Graph, GraphNode, ParamMap } from "./graph.ts";
import type { PostprocessConfig } from "./postprocess.ts";
import type { DataConfig, SsdConfig } from "./ssd_config.ts";

const { onnx } = onnxProto;
/** The ONNX protobuf namespace (compiled schema of onnx-proto). */
export type OnnxNamespace = typeof onnx;

/** Metadata key holding the inference config (YAML) in the ONNX file. */
export const CONFIG_METADATA_KEY = "ssd_workbench_config";
/** Value of the config's `format` field. */
export const ONNX_CONFIG_FORMAT = "ssd-workbench onnx";
/** Version of the config layout. */
export const ONNX_CONFIG_VERSION = 1;

/** Reads a tfjs parameter map into plain arrays. */
export function paramValuesOf(params: ParamMap): ParamValues {
  const out: ParamValues = new Map();
  for (const [name, v] of params) out.set(name, { shape: v.shape.slice(), data: v.dataSync() as Float32Array });
  return out;
}

/**
 * The graph's parameters from a checkpoint, checked by name and shape (the same
 * rules and messages as `loadParams`, without creating tensors).
 */
export function paramValuesFromCheckpoint(graph: Graph, ckpt: Checkpoint, file?: string): ParamValues {
  const out: ParamValues = new Map();
  for (const p of graph.params) {
    const stored = ckpt.tensors.get(`param:${p.name}`);
    if (!stored) throw new InputError(`checkpoint has no parameter ${p.name}`, { file });
    if (stored.shape.join() !== p.shape.join()) {
      throw new InputError(`parameter ${p.name} has shape [${stored.shape}] but the model needs [${p.shape}]`, {
        file,
      });
    }
    out.set(p.name, { shape: stored.shape, data: stored.data });
  }
  return out;
}

/** Options of {@linkcode graphToOnnx}. */
export interface GraphToOnnxOptions {
  /** Activation turning the `cls` head into `scores`. */
  scoreActivation: "sigmoid" | "softmax";
  /** Input tensor name (default `images`). */
  inputName?: string;
  /** Opset of the default domain (default 13, the minimum supported). */
  opset?: number;
  /** Fold batch norms into their convolutions (default true). */
  foldBatchNorm?: boolean;
  /**
   * Fold batch norms into weight-shared convolutions too (default true). Folding gives every
   * sharing layer its own copy of the weights; false keeps one shared weight and emits
   * `BatchNormalization` after those convolutions (a smaller file, the same numbers).
   */
  foldShared?: boolean;
  /** Put mean/std normalisation inside the graph: the input then takes pixels 0-255. */
  normalise?: { mean: number[]; std: number[]; inputType?: "float32" | "uint8" } | null;
  /** Add the decoded `boxes` output: anchors [A, 4] as cy, cx, h, w and the coder's scale factors. */
  boxes?: { anchors: Float32Array; scaleFactors: readonly number[]; clip: boolean } | null;
  /** `metadata_props` entries. */
  metadata?: Record<string, string>;
  /** Graph name. */
  name?: string;
}

type Attr = onnxProto.onnx.IAttributeProto;
type Node = onnxProto.onnx.INodeProto;
type TensorP = onnxProto.onnx.ITensorProto;

const FLOAT = onnx.TensorProto.DataType.FLOAT;
const INT64 = onnx.TensorProto.DataType.INT64;
const UINT8 = onnx.TensorProto.DataType.UINT8;

const ints = (name: string, v: number[]): Attr => ({ name, type: onnx.AttributeProto.AttributeType.INTS, ints: v });
const int = (name: string, v: number): Attr => ({ name, type: onnx.AttributeProto.AttributeType.INT, i: v });
const float = (name: string, v: number): Attr => ({ name, type: onnx.AttributeProto.AttributeType.FLOAT, f: v });
const str = (name: string, v: string): Attr => ({
  name,
  type: onnx.AttributeProto.AttributeType.STRING,
  s: new TextEncoder().encode(v),
});

function floatTensor(name: string, dims: number[], data: Float32Array | number[]): TensorP {
  const f = data instanceof Float32Array ? data : Float32Array.from(data);
  // raw_data is little-endian; typed arrays are native-endian, little on every platform Deno runs on.
  return { name, dims, dataType: FLOAT, rawData: new Uint8Array(f.buffer, f.byteOffset, f.byteLength) };
}

function int64Tensor(name: string, dims: number[], data: number[]): TensorP {
  const b = BigInt64Array.from(data.map((v) => BigInt(v)));
  return { name, dims, dataType: INT64, rawData: new Uint8Array(b.buffer) };
}

/** tfjs conv weight [KH, KW, Ci, Co] -> ONNX [Co, Ci, KH, KW]. */
function convWeightToOnnx(w: Float32Array, kh: number, kw: number, ci: number, co: number): Float32Array {
  const out = new Float32Array(w.length);
  for (let y = 0; y < kh; y++) {
    for (let x = 0; x < kw; x++) {
      for (let i = 0; i < ci; i++) {
        const src = ((y * kw + x) * ci + i) * co;
        for (let o = 0; o < co; o++) out[((o * ci + i) * kh + y) * kw + x] = w[src + o];
      }
    }
  }
  return out;
}

/** tfjs depthwise weight [KH, KW, C, M] -> ONNX grouped [C*M, 1, KH, KW] (output channel c*M + m, as tfjs). */
function depthwiseWeightToOnnx(w: Float32Array, kh: number, kw: number, c: number, m: number): Float32Array {
  const out = new Float32Array(w.length);
  for (let y = 0; y < kh; y++) {
    for (let x = 0; x < kw; x++) {
      for (let i = 0; i < c; i++) {
        for (let j = 0; j < m; j++) out[((i * m + j) * kh + y) * kw + x] = w[((y * kw + x) * c + i) * m + j];
      }
    }
  }
  return out;
}

/**
 * Folds a batch norm into an ONNX-layout conv weight [Co, ...] and bias [Co]
 * (computed in double precision, stored as float32).
 */
export function foldBatchNorm(
  weight: Float32Array,
  bias: Float32Array | null,
  bn: { gamma: Float32Array; beta: Float32Array; mean: Float32Array; variance: Float32Array; eps: number },
): { weight: Float32Array; bias: Float32Array } {
  const co = bn.gamma.length, per = weight.length / co;
  const w = new Float32Array(weight.length), b = new Float32Array(co);
  for (let o = 0; o < co; o++) {
    const s = bn.gamma[o] / Math.sqrt(bn.variance[o] + bn.eps);
    for (let k = 0; k < per; k++) w[o * per + k] = weight[o * per + k] * s;
    b[o] = ((bias ? bias[o] : 0) - bn.mean[o]) * s + bn.beta[o];
  }
  return { weight: w, bias: b };
}

/**
 * Writes `graph` with parameter `values` as an ONNX ModelProto (see the module
 * doc for layout, folding and outputs).
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * import { GraphBuilder } from "./graph.ts";
 * const g = new GraphBuilder([8, 8, 3]);
 * const f = g.act(g.bn("bn", g.conv("c", g.input, 4, { stride: 2 })), "relu6");
 * const graph = g.build({ loc: g.flattenHead(g.conv("l", f, 8), 4), cls: g.flattenHead(g.conv("s", f, 6), 3) });
 * const values = new Map(graph.params.map((p) => [p.name, {
 *   shape: p.shape, data: new Float32Array(p.shape.reduce((a, b) => a * b, 1)).fill(p.kind.startsWith("moving_v") ? 1 : 0.1),
 * }]));
 * const model = graphToOnnx(graph, values, { scoreActivation: "sigmoid" });
 * assertEquals(model.graph!.output!.map((o) => o.name), ["loc", "scores"]);
 * assertEquals(model.graph!.node!.some((n) => n.opType === "BatchNormalization"), false); // folded
 * ```
 */
export function graphToOnnx(graph: Graph, values: ParamValues, o: GraphToOnnxOptions): onnxProto.onnx.ModelProto {
  const inputName = o.inputName ?? "images";
  const fold = o.foldBatchNorm ?? true, foldShared = o.foldShared ?? true;
  const nodes: Node[] = [];
  const inits: TensorP[] = [];
  const initNames = new Set<string>();
  let counter = 0;
  const fresh = (base: string) => `${base}_${counter++}`;
  const addInit = (t: TensorP) => {
    if (!initNames.has(t.name!)) inits.push(t), initNames.add(t.name!);
    return t.name!;
  };
  const add = (opType: string, inputs: string[], attrs: Attr[] = [], output?: string, name?: string): string => {
    const out = output ?? fresh(opType.toLowerCase());
    nodes.push({ opType, input: inputs, output: [out], attribute: attrs, name: name ?? out });
    return out;
  };
  const param = (name: string) => {
    const v = values.get(name);
    if (!v) throw new InputError(`missing parameter ${name}`);
    return v;
  };

  // Who reads each node: folding needs a conv whose only reader is its batch norm.
  const readers = new Map<number, number>();
  const bump = (id: number) => readers.set(id, (readers.get(id) ?? 0) + 1);
  for (const n of graph.nodes) {
    if ("input" in n) bump(n.input);
    if ("inputs" in n) n.inputs.forEach(bump);
  }
  for (const id of Object.values(graph.outputs)) bump(id);
  const byId = new Map(graph.nodes.map((n) => [n.id, n]));
  const sharedOwners = new Set(graph.nodes.flatMap((n) => n.op === "conv" && n.shareWith ? [n.shareWith] : []));
  const isShared = (n: Extract<GraphNode, { op: "conv" }>) => n.shareWith !== undefined || sharedOwners.has(n.name);
  const foldTarget = new Map<number, Extract<GraphNode, { op: "bn" }>>(); // conv id -> its bn
  if (fold) {
    for (const n of graph.nodes) {
      if (n.op !== "bn") continue;
      const c = byId.get(n.input);
      if (c?.op === "conv" && readers.get(c.id) === 1 && (foldShared || !isShared(c))) foldTarget.set(c.id, n);
    }
  }

  const [h0, w0, c0] = graph.input.shape;
  const tensorOf = new Map<number, string>();
  let x = inputName;
  const norm = o.normalise ?? null;
  const inputType = norm?.inputType === "uint8" ? UINT8 : FLOAT;
  if (norm) {
    // (x - mean) / std as Sub and Mul by 1/std, per channel on the last (NHWC) axis.
    if (inputType === UINT8) x = add("Cast", [x], [int("to", FLOAT)]);
    x = add("Sub", [x, addInit(floatTensor("norm_mean", [c0], norm.mean))]);
    x = add("Mul", [x, addInit(floatTensor("norm_inv_std", [c0], norm.std.map((s) => 1 / s)))]);
  }
  x = add("Transpose", [x], [ints("perm", [0, 3, 1, 2])], "images_nchw");

  for (const n of graph.nodes) {
    switch (n.op) {
      case "input":
        tensorOf.set(n.id, x);
        break;
      case "conv": {
        const owner = n.shareWith ?? n.name;
        const w = param(`${owner}.weight`);
        const [kh, kw, ci, last] = w.shape;
        let weight = n.depthwise
          ? depthwiseWeightToOnnx(w.data, kh, kw, ci, last)
          : convWeightToOnnx(w.data, kh, kw, ci, last);
        let bias: Float32Array | null = n.bias ? param(`${owner}.bias`).data : null;
        const cout = n.filters;
        const bn = foldTarget.get(n.id);
        let wName: string, bName: string | null;
        if (bn) {
          const folded = foldBatchNorm(weight, bias, {
            gamma: param(`${bn.name}.gamma`).data,
            beta: param(`${bn.name}.beta`).data,
            mean: param(`${bn.name}.moving_mean`).data,
            variance: param(`${bn.name}.moving_variance`).data,
            eps: bn.eps,
          });
          weight = folded.weight, bias = folded.bias;
          wName = addInit(floatTensor(`${n.name}.weight_folded`, [cout, n.depthwise ? 1 : ci, kh, kw], weight));
          bName = addInit(floatTensor(`${n.name}.bias_folded`, [cout], bias));
        } else {
          // Unfolded layers keep the owner's name, so shared weights are stored once.
          wName = addInit(floatTensor(`${owner}.weight`, [cout, n.depthwise ? 1 : ci, kh, kw], weight));
          bName = bias ? addInit(floatTensor(`${owner}.bias`, [cout], bias)) : null;
        }
        const [t, b, l, r] = n.pads;
        const y = add(
          "Conv",
          bName ? [tensorOf.get(n.input)!, wName, bName] : [tensorOf.get(n.input)!, wName],
          [
            ints("kernel_shape", [kh, kw]),
            ints("strides", n.strides),
            ints("dilations", n.dilation),
            ints("pads", [t, l, b, r]), // ONNX order: all begins, then all ends
            int("group", n.depthwise ? ci : 1),
          ],
          undefined,
          n.name,
        );
        tensorOf.set(n.id, y);
        // A folded batch norm is this conv's output.
        if (bn) tensorOf.set(bn.id, y);
        break;
      }
      case "bn": {
        if (tensorOf.has(n.id)) break; // folded
        const g = (k: string) =>
          addInit(floatTensor(`${n.name}.${k}`, [param(`${n.name}.${k}`).data.length], param(`${n.name}.${k}`).data));
        tensorOf.set(
          n.id,
          add(
            "BatchNormalization",
            [tensorOf.get(n.input)!, g("gamma"), g("beta"), g("moving_mean"), g("moving_variance")],
            [float("epsilon", n.eps)],
            undefined,
            n.name,
          ),
        );
        break;
      }
      case "act": {
        const inp = tensorOf.get(n.input)!;
        if (n.fn === "relu") tensorOf.set(n.id, add("Relu", [inp]));
        else if (n.fn === "sigmoid") tensorOf.set(n.id, add("Sigmoid", [inp]));
        else {
          // Opset 13 Clip takes its bounds as inputs.
          const lo = addInit(floatTensor("clip_min_0", [], [0])), hi = addInit(floatTensor("clip_max_6", [], [6]));
          tensorOf.set(n.id, add("Clip", [inp, lo, hi]));
        }
        break;
      }
      case "maxpool": {
        const [t, b, l, r] = n.pads;
        // ONNX MaxPool ignores padded cells, the -inf padding runGraph applies.
        tensorOf.set(
          n.id,
          add("MaxPool", [tensorOf.get(n.input)!], [
            ints("kernel_shape", n.kernel),
            ints("strides", n.strides),
            ints("pads", [t, l, b, r]),
          ]),
        );
        break;
      }
      case "dropout": // the identity outside training
        tensorOf.set(n.id, tensorOf.get(n.input)!);
        break;
      case "add": {
        const xs = n.inputs.map((i) => tensorOf.get(i)!);
        tensorOf.set(n.id, xs.length === 2 ? add("Add", xs) : add("Sum", xs));
        break;
      }
      case "upsample": {
        const s = n.scale;
        const scales = addInit(floatTensor(`resize_scales_${s}`, [4], [1, 1, s, s]));
        // asymmetric + floor is tf.image.resizeNearestNeighbor (no align_corners, no half-pixel centres):
        // source = floor(destination / scale). Bilinear asymmetric is TF's legacy resizeBilinear.
        const attrs = n.mode === "bilinear"
          ? [str("mode", "linear"), str("coordinate_transformation_mode", "asymmetric")]
          : [str("mode", "nearest"), str("coordinate_transformation_mode", "asymmetric"), str("nearest_mode", "floor")];
        tensorOf.set(n.id, add("Resize", [tensorOf.get(n.input)!, "", scales], attrs));
        break;
      }
      case "flatten_head": {
        // Back to NHWC first, so the rows come out in (row, col, box) order like tfjs; 0 copies the batch dim.
        const nhwc = add("Transpose", [tensorOf.get(n.input)!], [ints("perm", [0, 2, 3, 1])]);
        const shape = addInit(int64Tensor(`head_shape_${n.values}`, [3], [0, -1, n.values]));
        tensorOf.set(n.id, add("Reshape", [nhwc, shape]));
        break;
      }
      case "concat_anchors": {
        const xs = n.inputs.map((i) => tensorOf.get(i)!);
        tensorOf.set(n.id, xs.length === 1 ? xs[0] : add("Concat", xs, [int("axis", 1)]));
        break;
      }
    }
  }

  const locId = graph.outputs.loc, clsId = graph.outputs.cls;
  if (locId === undefined || clsId === undefined) throw new Error("the graph needs loc and cls outputs");
  const shapes = outputShapes(graph);
  const [numAnchors] = shapes.get(locId)!;
  const numClasses = shapes.get(clsId)![1];
  add("Identity", [tensorOf.get(locId)!], [], "loc");
  if (o.scoreActivation === "sigmoid") add("Sigmoid", [tensorOf.get(clsId)!], [], "scores");
  else add("Softmax", [tensorOf.get(clsId)!], [int("axis", -1)], "scores");

  const dimsOf = (d: (number | string)[]) => ({
    dim: d.map((v) => typeof v === "number" ? { dimValue: v } : { dimParam: v }),
  });
  const valueInfo = (name: string, elem: number, d: (number | string)[]) => ({
    name,
    type: { tensorType: { elemType: elem, shape: dimsOf(d) } },
  });
  const outputs = [
    valueInfo("loc", FLOAT, ["N", numAnchors, 4]),
    valueInfo("scores", FLOAT, ["N", numAnchors, numClasses]),
  ];

  if (o.boxes) {
    const a = o.boxes.anchors, count = a.length / 4;
    if (count !== numAnchors) throw new InputError(`${count} anchors but the network predicts ${numAnchors} boxes`);
    const [sy, sx, sh, sw] = o.boxes.scaleFactors;
    // Anchors split into centres and sizes; the scale factors fold into constants:
    // centre = loc[:2] * (size / s_yx) + anchor centre, size = exp(loc[2:] / s_hw) * anchor size.
    const centre = new Float32Array(2 * count),
      sizeDiv = new Float32Array(2 * count),
      size = new Float32Array(2 * count);
    for (let i = 0; i < count; i++) {
      centre[2 * i] = a[4 * i], centre[2 * i + 1] = a[4 * i + 1];
      size[2 * i] = a[4 * i + 2], size[2 * i + 1] = a[4 * i + 3];
      sizeDiv[2 * i] = a[4 * i + 2] / sy, sizeDiv[2 * i + 1] = a[4 * i + 3] / sx;
    }
    const cInit = addInit(floatTensor("anchors_center_yx", [count, 2], centre));
    const sInit = addInit(floatTensor("anchors_size_hw", [count, 2], size));
    const dInit = addInit(floatTensor("anchors_size_hw_over_scale", [count, 2], sizeDiv));
    const invHw = addInit(floatTensor("box_coder_inv_scale_hw", [2], [1 / sh, 1 / sw]));
    const axis2 = addInit(int64Tensor("axes_2", [1], [2]));
    const sl = (from: number, to: number) =>
      add("Slice", [
        "loc",
        addInit(int64Tensor(`slice_start_${from}`, [1], [from])),
        addInit(int64Tensor(`slice_end_${to}`, [1], [to])),
        axis2,
      ]);
    const ctr = add("Add", [add("Mul", [sl(0, 2), dInit]), cInit]);
    const sz = add("Mul", [add("Exp", [add("Mul", [sl(2, 4), invHw])]), sInit]);
    const half = add("Mul", [sz, addInit(floatTensor("half", [], [0.5]))]);
    let corners = add("Concat", [add("Sub", [ctr, half]), add("Add", [ctr, half])], [int("axis", 2)]);
    if (o.boxes.clip) {
      corners = add("Clip", [
        corners,
        addInit(floatTensor("clip_min_0", [], [0])),
        addInit(floatTensor("clip_max_1", [], [1])),
      ]);
    }
    add("Identity", [corners], [], "boxes");
    outputs.push(valueInfo("boxes", FLOAT, ["N", numAnchors, 4]));
  }

  return onnx.ModelProto.create({
    irVersion: 7, // ONNX 1.7+, pairs with opset 13
    producerName: "ssd-workbench",
    producerVersion: "1",
    opsetImport: [{ domain: "", version: o.opset ?? 13 }],
    metadataProps: Object.entries(o.metadata ?? {}).map(([key, value]) => ({ key, value })),
    graph: {
      name: o.name ?? "ssd",
      node: nodes,
      initializer: inits,
      input: [valueInfo(inputName, inputType, ["N", h0, w0, c0])],
      output: outputs,
    },
  });
}

function outputShapes(graph: Graph): Map<number, number[]> {
  // Only flatten/concat shapes are needed; inferShapes computes every node's.
  const s = new Map<number, number[]>();
  const hwc = new Map<number, number[]>();
  for (const n of graph.nodes) {
    if (n.op === "input") hwc.set(n.id, n.shape);
    else if (n.op === "conv") {
      const [h, w] = hwc.get(n.input)!;
      const ke = [(n.kernel[0] - 1) * n.dilation[0] + 1, (n.kernel[1] - 1) * n.dilation[1] + 1];
      hwc.set(n.id, [
        Math.floor((h + n.pads[0] + n.pads[1] - ke[0]) / n.strides[0]) + 1,
        Math.floor((w + n.pads[2] + n.pads[3] - ke[1]) / n.strides[1]) + 1,
        n.filters,
      ]);
    } else if (n.op === "maxpool") {
      const [h, w, c] = hwc.get(n.input)!;
      hwc.set(n.id, [
        Math.floor((h + n.pads[0] + n.pads[1] - n.kernel[0]) / n.strides[0]) + 1,
        Math.floor((w + n.pads[2] + n.pads[3] - n.kernel[1]) / n.strides[1]) + 1,
        c,
      ]);
    } else if (n.op === "bn" || n.op === "act" || n.op === "dropout") hwc.set(n.id, hwc.get(n.input)!);
    else if (n.op === "add") hwc.set(n.id, hwc.get(n.inputs[0])!);
    else if (n.op === "upsample") {
      const [h, w, c] = hwc.get(n.input)!;
      hwc.set(n.id, [h * n.scale, w * n.scale, c]);
    } else if (n.op === "flatten_head") {
      const [h, w, c] = hwc.get(n.input)!;
      s.set(n.id, [h * w * (c / n.values), n.values]);
    } else if (n.op === "concat_anchors") {
      s.set(n.id, [n.inputs.reduce((a, i) => a + s.get(i)![0], 0), s.get(n.inputs[0])![1]]);
    }
  }
  return s;
}

/** Serialises a ModelProto. */
export function encodeOnnx(model: onnxProto.onnx.IModelProto): Uint8Array {
  return onnx.ModelProto.encode(model).finish();
}

/** Parses ONNX bytes; a file that is not an ONNX model is an {@linkcode InputError} naming `file`. */
export function decodeOnnx(bytes: Uint8Array, file?: string): onnxProto.onnx.ModelProto {
  try {
    const m = onnx.ModelProto.decode(bytes);
    if (!m.graph) throw new Error("no graph");
    return m;
  } catch (e) {
    throw new InputError(`not an ONNX model: ${(e as Error).message}`, { file });
  }
}

/** The `metadata_props` of a model as a record. */
export function onnxMetadata(model: onnxProto.onnx.IModelProto): Record<string, string> {
  return Object.fromEntries((model.metadataProps ?? []).map((p) => [p.key ?? "", p.value ?? ""]));
}

/**
 * What inference needs to use an exported model alone: written as `config.yaml`
 * and stored in the ONNX metadata.
 */
export interface OnnxModelConfig {
  format: string;
  version: number;
  arch: string;
  /** Class names, background first; index = label. */
  class_names: string[];
  num_classes: number;
  input: {
    name: string;
    /** `NHWC`, batch first. */
    layout: "NHWC";
    dtype: "float32" | "uint8";
    /** [N, S, S, 3]; N is the dynamic batch. */
    shape: (number | string)[];
    /** `normalised` ((pixel - mean) / std) or `pixels` (0-255, normalised inside the graph). */
    values: "normalised" | "pixels";
    channel_order: "RGB";
  };
  preprocess: {
    /** Square side the image is resized to. */
    input_size: number;
    /**
     * `stretch`: resized to S x S with sharp ignoring the aspect ratio, no padding (the tutorial's eval
     * resize). `faceapi`: face-api's pipeline (lib/faceapi_preprocess.ts): zero-pad bottom/right to a
     * square, tfjs bilinear resize (asymmetric), boxes mapped back through face-api's rounded sides.
     */
    resize: "stretch" | "faceapi";
    /** sharp kernel of a `stretch` resize. */
    resize_kernel: AugmentConfig["resize_kernel"];
    /** `none`, or `bottom_right` zeros to a square (`faceapi`). */
    pad: "none" | "bottom_right";
    resize_inside_graph: false;
    /** Per-channel mean and std in 0-255 units. */
    mean: number[];
    std: number[];
    normalise_inside_graph: boolean;
  };
  outputs: {
    loc: { shape: (number | string)[]; layout: "ty_tx_th_tw" };
    scores: { shape: (number | string)[]; activation: "sigmoid" | "softmax"; inside_graph: true };
    boxes: { shape: (number | string)[]; layout: "y1_x1_y2_x2"; normalised: true; clipped: boolean } | null;
  };
  /** The model's anchors section (generator settings), cy, cx, h, w order as lib/default_boxes.ts. */
  anchors: DefaultBoxesConfig;
  num_anchors: number;
  box_coder: BoxCoderConfig;
  /** Post-processing on `scores` (already activated: `activation` none). */
  postprocess: PostprocessConfig;
  /** The run's `data` section (its `val` split is what `deno task eval --model` scores by default); null if none. */
  data: DataConfig | null;
}

/** Schema of {@linkcode OnnxModelConfig}'s fixed part; sections reuse their own specs when parsed. */
export const onnxModelConfigSpec: Spec = {
  type: "object",
  fields: {
    format: { type: "string", enum: [ONNX_CONFIG_FORMAT] },
    version: { type: "number", int: true, min: 1, max: ONNX_CONFIG_VERSION },
    arch: { type: "string" },
    class_names: { type: "array", items: { type: "string" }, minLength: 1 },
    num_classes: { type: "number", int: true, min: 1 },
    input: {
      type: "object",
      fields: {
        name: { type: "string" },
        layout: { type: "string", enum: ["NHWC"] },
        dtype: { type: "string", enum: ["float32", "uint8"] },
        shape: { type: "array", items: { type: "any" }, minLength: 4 },
        values: { type: "string", enum: ["normalised", "pixels"] },
        channel_order: { type: "string", enum: ["RGB"], default: "RGB" },
      },
    },
    preprocess: {
      type: "object",
      fields: {
        input_size: { type: "number", int: true, min: 1 },
        resize: { type: "string", enum: ["stretch", "faceapi"] },
        resize_kernel: { type: "string", enum: ["nearest", "linear", "cubic", "lanczos3"], default: "linear" },
        pad: { type: "string", enum: ["none", "bottom_right"], default: "none" },
        resize_inside_graph: { type: "boolean", default: false },
        mean: { type: "array", items: { type: "number" }, minLength: 3 },
        std: { type: "array", items: { type: "number", min: 0 }, minLength: 3 },
        normalise_inside_graph: { type: "boolean" },
      },
    },
    outputs: { type: "any" },
    anchors: { type: "any" },
    num_anchors: { type: "number", int: true, min: 1 },
    box_coder: { type: "any" },
    postprocess: { type: "any" },
    data: { type: "any", default: null },
  },
};

/** Options of {@linkcode onnxModelConfig}. */
export interface OnnxConfigOptions {
  classNames: string[];
  numAnchors: number;
  /** Columns of `scores` (default num_classes; imported models may have more, see postprocess.class_columns). */
  scoreColumns?: number;
  inputName?: string;
  withBoxes?: boolean;
  /** Normalisation inside the graph; the input takes pixels of this type. */
  normaliseInGraph?: false | "float32" | "uint8";
}

/**
 * The inference config of a run config.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * import { loadSsdConfig } from "./ssd_config.ts";
 * const cfg = loadSsdConfig("configs/demo.yaml");
 * const c = onnxModelConfig(cfg, { classNames: cfg.model.class_names!, numAnchors: 2152 });
 * assertEquals([c.input.shape, c.input.values], [["N", 160, 160, 3], "normalised"]);
 * assertEquals(c.outputs.scores.activation, cfg.model.score_activation);
 * ```
 */
export function onnxModelConfig(cfg: SsdConfig, o: OnnxConfigOptions): OnnxModelConfig {
  const s = cfg.model.input_size, a = o.numAnchors, c = o.scoreColumns ?? cfg.model.num_classes;
  const inGraph = o.normaliseInGraph || false;
  const faceapi = (cfg.model.options as { preprocess?: string } | undefined)?.preprocess === "faceapi";
  if (faceapi && inGraph) throw new InputError("face-api preprocessing normalises outside the graph only");
  return {
    format: ONNX_CONFIG_FORMAT,
    version: ONNX_CONFIG_VERSION,
    arch: cfg.model.arch,
    class_names: o.classNames,
    num_classes: cfg.model.num_classes,
    input: {
      name: o.inputName ?? "images",
      layout: "NHWC",
      dtype: inGraph === "uint8" ? "uint8" : "float32",
      shape: ["N", s, s, 3],
      values: inGraph ? "pixels" : "normalised",
      channel_order: "RGB",
    },
    preprocess: {
      input_size: s,
      resize: faceapi ? "faceapi" : "stretch",
      resize_kernel: cfg.augment.resize_kernel,
      pad: faceapi ? "bottom_right" : "none",
      resize_inside_graph: false,
      // face-api: x / 127.5 - 1.
      mean: faceapi ? [127.5, 127.5, 127.5] : cfg.augment.mean,
      std: faceapi ? [127.5, 127.5, 127.5] : cfg.augment.std,
      normalise_inside_graph: inGraph !== false,
    },
    outputs: {
      loc: { shape: ["N", a, 4], layout: "ty_tx_th_tw" },
      scores: { shape: ["N", a, c], activation: cfg.model.score_activation, inside_graph: true },
      boxes: o.withBoxes
        ? {
          shape: ["N", a, 4],
          layout: "y1_x1_y2_x2",
          normalised: true,
          clipped: cfg.postprocess.clip === "before_nms",
        }
        : null,
    },
    anchors: cfg.anchors,
    num_anchors: a,
    box_coder: cfg.box_coder,
    postprocess: cfg.postprocess,
    data: cfg.data ?? null,
  };
}

/** Renders the inference config as commented YAML. */
export function onnxConfigYaml(c: OnnxModelConfig): string {
  const head = [
    "# Inference config of an exported ssd-workbench model (deno task export).",
    c.preprocess.resize === "faceapi"
      ? "# input: NHWC RGB, zero-padded bottom/right to a square, resized to input_size (face-api's pipeline);"
      : "# input: NHWC RGB, resized to preprocess.input_size squared (stretched, no padding);",
    `# ${
      c.preprocess.normalise_inside_graph
        ? "pixels 0-255 go in: the graph subtracts mean and divides by std itself."
        : "feed (pixel - mean) / std: normalisation happens outside the graph."
    }`,
    "# outputs: loc (ty, tx, th, tw against the anchors, box_coder scale factors), scores after the score",
    "# activation; decode with the anchors and run postprocess (lib/postprocess.ts) on them.",
  ];
  const doc = new YAML.Document(c);
  // Lists of numbers and strings on one line: [N, 128, 128, 3] reads better than one item per line.
  YAML.visit(doc, {
    Seq(_, node) {
      if (node.items.every((i) => YAML.isScalar(i))) node.flow = true;
    },
  });
  return head.join("\n") + "\n" + doc.toString({ lineWidth: 0 });
}

/** Options of {@linkcode exportModel}. */
export interface ExportModelOptions {
  /** Output folder; receives model.onnx and config.yaml. */
  out: string;
  withBoxes?: boolean;
  normaliseInGraph?: false | "float32" | "uint8";
  foldShared?: boolean;
  opset?: number;
}

/**
 * Exports a network with its parameters: writes `out/model.onnx` and
 * `out/config.yaml` atomically and returns their paths and the config.
 */
export async function exportModel(
  graph: Graph,
  values: ParamValues,
  cfg: SsdConfig,
  extra: { classNames: string[]; anchors: { count: number; centers: Float32Array }; scaleFactors: number[] },
  o: ExportModelOptions,
): Promise<{ model: string; config: string; info: OnnxModelConfig; bytes: number }> {
  const normaliseInGraph = o.normaliseInGraph ?? false;
  const info = onnxModelConfig(cfg, {
    classNames: extra.classNames,
    numAnchors: extra.anchors.count,
    scoreColumns: outputShapes(graph).get(graph.outputs.cls)?.[1],
    withBoxes: o.withBoxes,
    normaliseInGraph,
  });
  const yamlText = onnxConfigYaml(info);
  const model = graphToOnnx(graph, values, {
    scoreActivation: cfg.model.score_activation,
    opset: o.opset,
    foldShared: o.foldShared,
    normalise: normaliseInGraph ? { mean: cfg.augment.mean, std: cfg.augment.std, inputType: normaliseInGraph } : null,
    boxes: o.withBoxes
      ? {
        anchors: extra.anchors.centers,
        scaleFactors: extra.scaleFactors,
        clip: cfg.postprocess.clip === "before_nms",
      }
      : null,
    metadata: { [CONFIG_METADATA_KEY]: yamlText },
    name: cfg.model.arch,
  });
  const bytes = encodeOnnx(model);
  const modelPath = path.join(o.out, "model.onnx"), configPath = path.join(o.out, "config.yaml");
  await writeFileAtomic(modelPath, bytes);
  await writeFileAtomic(configPath, yamlText);
  return { model: modelPath, config: configPath, info, bytes: bytes.length };
}
