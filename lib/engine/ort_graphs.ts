/**
 * Small ONNX graphs, one per tfjs kernel call, for the onnxruntime kernels of
 * `ort_kernels.ts`.
 *
 * Every graph takes and returns tensors in tfjs layout (NHWC activations,
 * [KH, KW, Ci, Co] or [KH, KW, C, M] filters): the NHWC <-> NCHW transposes
 * sit inside the graph, so onnxruntime runs them in the same session as the
 * convolution (and can fuse them with its own layout reorders) and the caller
 * never reorders data in JavaScript.
 *
 * - Forward: `Conv` (grouped for depthwise), optional bias and activation.
 * - dX: `ConvTranspose` with the forward conv's strides, dilations and pads
 *   (and `output_padding` for the rows a strided conv never read).
 * - dW, three variants (see {@linkcode FilterGradVariant}).
 *
 * @module
 */
import onnxProto from "onnx-proto";

const { onnx } = onnxProto;
type Attr = onnxProto.onnx.IAttributeProto;
type Node = onnxProto.onnx.INodeProto;
type TensorP = onnxProto.onnx.ITensorProto;

const FLOAT = onnx.TensorProto.DataType.FLOAT;
const INT64 = onnx.TensorProto.DataType.INT64;
const A = onnx.AttributeProto.AttributeType;

/**
 * How the filter gradient of a conv is computed:
 * - `conv`: a Conv over transposed tensors (input channels as batch, batch as
 *   channels, the output gradient as filter; stride and dilation swap roles).
 * - `im2col`: all kernel taps of the input gathered with strided `Slice`s into
 *   one [N*OH*OW, KH*KW*Ci] matrix, then one `Gemm` with the output gradient.
 * - `taps`: one `Slice` + `Gemm` per kernel tap (no big im2col buffer).
 * - `shifted` (stride 1; other convs use `taps`): the input is padded into a
 *   buffer of rows `wp` wide, and the output gradient into the same width with
 *   zeros, so each tap's input is the padded buffer read from a fixed offset:
 *   one `Gemm` per tap over views, no slice copies ({@linkcode shiftedLayout}).
 */
export type FilterGradVariant = "conv" | "im2col" | "taps" | "shifted";

/** Activations of tfjs's fused convs that map to one ONNX node. */
export type FusedActivation = "linear" | "relu" | "relu6" | "leakyrelu" | "sigmoid" | "elu";

/** Geometry of a 2-D conv, as tfjs's `computeConv2DInfo` reports it. */
export interface ConvGeometry {
  /** Input [N, H, W, C]. */
  x: number[];
  /** Filter, tfjs layout: [KH, KW, Ci, Co] or depthwise [KH, KW, C, M]. */
  w: number[];
  /** Output [N, OH, OW, Co]. */
  y: number[];
  strides: [number, number];
  dilations: [number, number];
  /** top, left, bottom, right */
  pads: [number, number, number, number];
  depthwise: boolean;
}

/** A graph under construction: nodes, initializers, and unique names. */
class Builder {
  nodes: Node[] = [];
  inits: TensorP[] = [];
  #n = 0;
  add(op: string, inputs: string[], attrs: Attr[] = [], output?: string): string {
    const out = output ?? `t${this.#n++}`;
    this.nodes.push({ opType: op, input: inputs, output: [out], attribute: attrs, name: `n${this.nodes.length}` });
    return out;
  }
  i64(values: number[]): string {
    const name = `c${this.#n++}`;
    const b = BigInt64Array.from(values.map((v) => BigInt(v)));
    this.inits.push({ name, dims: [values.length], dataType: INT64, rawData: new Uint8Array(b.buffer) });
    return name;
  }
  f32(value: number): string {
    const name = `c${this.#n++}`;
    const f = Float32Array.of(value);
    this.inits.push({ name, dims: [], dataType: FLOAT, rawData: new Uint8Array(f.buffer) });
    return name;
  }
  transpose(x: string, perm: number[], output?: string): string {
    return this.add("Transpose", [x], [ints("perm", perm)], output);
  }
  reshape(x: string, shape: number[], output?: string): string {
    return this.add("Reshape", [x, this.i64(shape)], [], output);
  }
  slice(x: string, starts: number[], ends: number[], axes: number[], steps?: number[]): string {
    const inputs = [x, this.i64(starts), this.i64(ends), this.i64(axes)];
    if (steps) inputs.push(this.i64(steps));
    return this.add("Slice", inputs);
  }
  /** The model bytes, with float32 inputs and outputs of fixed shapes. */
  encode(inputs: [string, number[]][], outputs: [string, number[]][], opset = 13): Uint8Array {
    const vi = (name: string, dims: number[]) => ({
      name,
      type: { tensorType: { elemType: FLOAT, shape: { dim: dims.map((d) => ({ dimValue: d })) } } },
    });
    const model = onnx.ModelProto.create({
      irVersion: opset > 13 ? 8 : 7, // ONNX 1.7 pairs with opset 13, 1.11 with 16
      producerName: "ssd-workbench ort_kernels",
      opsetImport: [{ domain: "", version: opset }],
      graph: {
        name: "kernel",
        node: this.nodes,
        initializer: this.inits,
        input: inputs.map(([n, d]) => vi(n, d)),
        output: outputs.map(([n, d]) => vi(n, d)),
      },
    });
    return onnx.ModelProto.encode(model).finish();
  }
}

const ints = (name: string, v: number[]): Attr => ({ name, type: A.INTS, ints: v });
const int = (name: string, v: number): Attr => ({ name, type: A.INT, i: v });
const float = (name: string, v: number): Attr => ({ name, type: A.FLOAT, f: v });

/** Whether the conv is a 1x1 at stride 1 without padding: a matmul over the NHWC rows. */
export function isPointwise(g: ConvGeometry): boolean {
  return !g.depthwise && g.w[0] === 1 && g.w[1] === 1 && g.strides[0] === 1 && g.strides[1] === 1 &&
    g.pads.every((p) => p === 0);
}

/** The tfjs filter as an ONNX Conv weight: [Co, Ci, KH, KW], or [C*M, 1, KH, KW] for depthwise. */
function onnxWeight(b: Builder, w: string, g: ConvGeometry): string {
  const [kh, kw, c, m] = g.w;
  if (!g.depthwise) return b.transpose(w, [3, 2, 0, 1]);
  // Output channel c*M + m reads input channel c through w[:, :, c, m]: the [C, M] order of ONNX groups.
  return b.reshape(b.transpose(w, [2, 3, 0, 1]), [c * m, 1, kh, kw]);
}

function convAttrs(g: ConvGeometry, pads: number[], strides = g.strides, dilations = g.dilations): Attr[] {
  const a = [ints("strides", strides), ints("dilations", dilations), ints("pads", pads)];
  if (g.depthwise) a.push(int("group", g.x[3]));
  return a;
}

/**
 * Forward conv: inputs `x` (NHWC), `w` (tfjs layout) and, with `bias`, `b`
 * [Co]; output `y` (NHWC) after the activation.
 */
export function convForwardGraph(
  g: ConvGeometry,
  fused: { bias?: boolean; activation?: FusedActivation; alpha?: number } = {},
): Uint8Array {
  const b = new Builder();
  const [t, l, bo, r] = g.pads;
  const act = fused.activation ?? "linear";
  const yName = act === "linear" ? "y" : undefined;
  let y: string;
  if (isPointwise(g)) {
    // A 1x1 conv at stride 1 is a matmul over the NHWC rows: no layout change at all.
    const [n, h, w, ci] = g.x, co = g.w[3];
    const inputs = [b.reshape("x", [n * h * w, ci]), b.reshape("w", [ci, co])];
    if (fused.bias) inputs.push("b");
    y = b.reshape(b.add("Gemm", inputs), g.y, yName);
  } else {
    const xt = b.transpose("x", [0, 3, 1, 2]);
    const inputs = [xt, onnxWeight(b, "w", g)];
    if (fused.bias) inputs.push("b");
    const yt = b.add("Conv", inputs, convAttrs(g, [t, l, bo, r]));
    y = b.transpose(yt, [0, 2, 3, 1], yName);
  }
  if (act === "relu") b.add("Relu", [y], [], "y");
  else if (act === "relu6") b.add("Clip", [y, b.f32(0), b.f32(6)], [], "y");
  else if (act === "leakyrelu") b.add("LeakyRelu", [y], [float("alpha", fused.alpha ?? 0.2)], "y");
  else if (act === "sigmoid") b.add("Sigmoid", [y], [], "y");
  else if (act === "elu") b.add("Elu", [y], [float("alpha", 1)], "y");
  const ins: [string, number[]][] = [["x", g.x], ["w", g.w]];
  if (fused.bias) ins.push(["b", [g.w[3] * (g.depthwise ? g.x[3] : 1)]]);
  return b.encode(ins, [["y", g.y]]);
}

/**
 * How the input gradient is computed: `convtranspose`, or with `auto` a Conv of
 * the output gradient with the flipped, channel-swapped filter at stride 1
 * (onnxruntime's Conv runs about 1.5x faster than its ConvTranspose there), and
 * ConvTranspose at larger strides.
 */
export type InputGradVariant = "auto" | "convtranspose";

/**
 * Input gradient: inputs `dy` (NHWC) and `w` (tfjs layout), output `dx` (NHWC)
 * of shape `g.x` (see {@linkcode InputGradVariant}).
 */
export function convBackpropInputGraph(g: ConvGeometry, variant: InputGradVariant = "auto"): Uint8Array {
  const b = new Builder();
  const [, h, w] = g.x;
  const [kh, kw, c] = g.w;
  const [, oh, ow] = g.y;
  const [sh, sw] = g.strides, [dh, dw] = g.dilations;
  const [top, left] = g.pads;
  if (isPointwise(g)) {
    // dX = dy W^T over the NHWC rows.
    const rows = g.x[0] * h * w, co = g.w[3];
    const d = b.add("Gemm", [b.reshape("dy", [rows, co]), b.reshape("w", [c, co])], [int("transB", 1)]);
    b.reshape(d, g.x, "dx");
    return b.encode([["dy", g.y], ["w", g.w]], [["dx", g.x]]);
  }
  const keH = (kh - 1) * dh + 1, keW = (kw - 1) * dw + 1;
  // dx[h] = sum over k of dy[h + top - k*d] * w[k]: a correlation with the flipped filter, padded by
  // keH-1-top before and by what makes H rows after.
  const beforeH = keH - 1 - top, beforeW = keW - 1 - left;
  const afterH = h - oh + keH - 1 - beforeH, afterW = w - ow + keW - 1 - beforeW;
  if (variant === "auto" && sh === 1 && sw === 1 && Math.min(beforeH, beforeW, afterH, afterW) >= 0) {
    const dyt = b.transpose("dy", [0, 3, 1, 2]);
    // [KH, KW, Ci, Co] -> [Ci, Co, KH, KW] (depthwise [KH, KW, C, M] -> [C, M, KH, KW], group C), flipped spatially.
    const wt = b.transpose("w", [2, 3, 0, 1]);
    const big = -(2 ** 62);
    const wf = b.slice(wt, [-1, -1], [big, big], [2, 3], [-1, -1]);
    const attrs = [
      ints("strides", [1, 1]),
      ints("dilations", [dh, dw]),
      ints("pads", [beforeH, beforeW, afterH, afterW]),
    ];
    if (g.depthwise) attrs.push(int("group", c));
    const dxt = b.add("Conv", [dyt, wf], attrs);
    b.transpose(dxt, [0, 2, 3, 1], "dx");
    return b.encode([["dy", g.y], ["w", g.w]], [["dx", g.x]]);
  }
  // ConvTranspose yields s*(O-1) + (K-1)*d + 1 - begin - end rows; choose `end` so that this is H.
  // A negative end means rows the forward conv never read: ConvTranspose adds them as output_padding (zeros).
  const endH = sh * (oh - 1) + (kh - 1) * dh + 1 - top - h;
  const endW = sw * (ow - 1) + (kw - 1) * dw + 1 - left - w;
  const attrs = [
    ints("strides", [sh, sw]),
    ints("dilations", [dh, dw]),
    ints("pads", [top, left, Math.max(0, endH), Math.max(0, endW)]),
    ints("output_padding", [Math.max(0, -endH), Math.max(0, -endW)]),
  ];
  if (g.depthwise) attrs.push(int("group", g.x[3]));
  const dyt = b.transpose("dy", [0, 3, 1, 2]);
  // ConvTranspose's weight is [C_in of the transpose = Co, Ci/group, KH, KW]: the forward Conv weight as is.
  const dxt = b.add("ConvTranspose", [dyt, onnxWeight(b, "w", g)], attrs);
  b.transpose(dxt, [0, 2, 3, 1], "dx");
  return b.encode([["dy", g.y], ["w", g.w]], [["dx", g.x]]);
}

/** Rows (cols) of padded input the filter gradient reads, and the padding after. */
function needed(g: ConvGeometry) {
  const [, h, w] = g.x;
  const [kh, kw] = g.w;
  const [, oh, ow] = g.y;
  const [sh, sw] = g.strides, [dh, dw] = g.dilations;
  const [top, left] = g.pads;
  const needH = (oh - 1) * sh + (kh - 1) * dh + 1, needW = (ow - 1) * sw + (kw - 1) * dw + 1;
  return { needH, needW, afterH: Math.max(0, needH - top - h), afterW: Math.max(0, needW - left - w) };
}

/**
 * Filter gradient: inputs `x` and `dy` (NHWC), output `dw` in tfjs layout
 * (`g.w`). Depthwise convs use a grouped conv for `conv`, and one
 * multiply-and-reduce per tap for `im2col` and `taps`.
 */
export function convBackpropFilterGraph(g: ConvGeometry, variant: FilterGradVariant = "conv"): Uint8Array {
  const b = new Builder();
  const [n, , , c] = g.x;
  const [kh, kw, , m] = g.w;
  const [, oh, ow, co] = g.y;
  const [sh, sw] = g.strides, [dh, dw] = g.dilations;
  const [top, left] = g.pads;
  const { afterH, afterW } = needed(g);
  if (g.depthwise && variant !== "conv") {
    // One multiply-and-reduce per tap: dW[i, j, c, m] = sum over n, oh, ow of x_tap[n, oh, ow, c] * dy[n, oh, ow, c*M+m].
    const xp = top || left || afterH || afterW
      ? b.add("Pad", ["x", b.i64([0, top, left, 0, 0, afterH, afterW, 0])]) // zeros
      : "x";
    const dy5 = m === 1 ? "dy" : b.reshape("dy", [n, oh, ow, c, m]);
    const parts: string[] = [];
    for (let i = 0; i < kh; i++) {
      for (let j = 0; j < kw; j++) {
        let t = b.slice(xp, [i * dh, j * dw], [i * dh + (oh - 1) * sh + 1, j * dw + (ow - 1) * sw + 1], [1, 2], [
          sh,
          sw,
        ]);
        if (m !== 1) t = b.reshape(t, [n, oh, ow, c, 1]);
        const r = b.add("ReduceSum", [b.add("Mul", [t, dy5]), b.i64([0, 1, 2])], [int("keepdims", 0)]);
        parts.push(b.reshape(r, [1, c * m]));
      }
    }
    const d = parts.length === 1 ? parts[0] : b.add("Concat", parts, [int("axis", 0)]);
    b.reshape(d, g.w, "dw");
    return b.encode([["x", g.x], ["dy", g.y]], [["dw", g.w]]);
  }
  if (g.depthwise || variant === "conv") {
    // x as [C, N, H, W]: channels become the batch (depthwise: one batch of C groups of N channels),
    // dy as the filter [Co, N, OH, OW]; the forward stride becomes the dilation and vice versa.
    let xt = b.transpose("x", [3, 0, 1, 2]);
    if (g.depthwise) xt = b.reshape(xt, [1, c * n, g.x[1], g.x[2]]);
    const dyt = b.transpose("dy", [3, 0, 1, 2]);
    const attrs = [ints("strides", [dh, dw]), ints("dilations", [sh, sw]), ints("pads", [top, left, afterH, afterW])];
    if (g.depthwise) attrs.push(int("group", c));
    let y = b.add("Conv", [xt, dyt], attrs); // [Ci, Co, >=KH, >=KW] or [1, C*M, >=KH, >=KW]
    y = b.slice(y, [0, 0], [kh, kw], [2, 3]);
    if (g.depthwise) y = b.reshape(y, [c, m, kh, kw]);
    b.transpose(y, [2, 3, 0, 1], "dw");
    return b.encode([["x", g.x], ["dy", g.y]], [["dw", g.w]]);
  }
  // The im2col forms stay in NHWC: each tap is a strided slice of the padded input, [N, OH, OW, Ci].
  const rows = n * oh * ow;
  const xp = top || left || afterH || afterW
    ? b.add("Pad", ["x", b.i64([0, top, left, 0, 0, afterH, afterW, 0])]) // zeros
    : "x";
  const taps: string[] = [];
  if (isPointwise(g)) taps.push(xp);
  else {
    for (let i = 0; i < kh; i++) {
      for (let j = 0; j < kw; j++) {
        taps.push(
          b.slice(xp, [i * dh, j * dw], [i * dh + (oh - 1) * sh + 1, j * dw + (ow - 1) * sw + 1], [1, 2], [sh, sw]),
        );
      }
    }
  }
  const dy2 = b.reshape("dy", [rows, co]);
  const gemm = [int("transA", 1)];
  if (variant === "im2col") {
    const cols = taps.length === 1 ? taps[0] : b.add("Concat", taps, [int("axis", 3)]); // [N, OH, OW, KH*KW*Ci]
    const d = b.add("Gemm", [b.reshape(cols, [rows, kh * kw * c]), dy2], gemm); // [KH*KW*Ci, Co]
    b.reshape(d, g.w, "dw");
  } else {
    const parts = taps.map((t) => b.add("Gemm", [b.reshape(t, [rows, c]), dy2], gemm)); // [Ci, Co] each
    const d = parts.length === 1 ? parts[0] : b.add("Concat", parts, [int("axis", 0)]);
    b.reshape(d, g.w, "dw");
  }
  return b.encode([["x", g.x], ["dy", g.y]], [["dw", g.w]]);
}

/**
 * Buffers of the `shifted` filter gradient of a stride-1 conv: the input padded
 * to [N, hp, wp, Ci] (plus `tail` zero rows at the end), the output gradient to
 * [N, hp, wp, Co] (in the top-left oh x ow corner, zeros elsewhere). Tap (i, j)
 * reads the padded input from row `offsets[i * KW + j]`: its row r lines up with
 * row r of the padded gradient, and rows where that is zero add nothing. Null
 * for convs it does not serve (strided, depthwise, 1x1), and where the padding
 * adds over 15% rows, which all go through every tap's Gemm: there `taps` wins
 * (VGG16's fc6, 19x19 padded by 6 at dilation 6: 241 vs 87 ms in a step).
 */
export function shiftedLayout(
  g: ConvGeometry,
): { hp: number; wp: number; rows: number; tail: number; offsets: number[] } | null {
  if (g.depthwise || isPointwise(g) || g.strides[0] !== 1 || g.strides[1] !== 1) return null;
  const { needH: hp, needW: wp } = needed(g);
  if (hp * wp > 1.15 * g.y[1] * g.y[2]) return null;
  const [kh, kw] = g.w, [dh, dw] = g.dilations;
  const offsets: number[] = [];
  for (let i = 0; i < kh; i++) for (let j = 0; j < kw; j++) offsets.push(i * dh * wp + j * dw);
  return { hp, wp, rows: g.x[0] * hp * wp, tail: offsets[offsets.length - 1], offsets };
}

/**
 * The `shifted` filter gradient: inputs `x0` ... (one [rows, Ci] view of the
 * padded input per tap) and `dy` [rows, Co]; output `dw` (tfjs layout).
 */
export function convBackpropFilterShiftedGraph(g: ConvGeometry): Uint8Array {
  const layout = shiftedLayout(g);
  if (!layout) throw new Error("the shifted filter gradient serves stride-1 convs only");
  const b = new Builder();
  const [c, co] = [g.x[3], g.y[3]];
  const parts = layout.offsets.map((_, t) => b.add("Gemm", [`x${t}`, "dy"], [int("transA", 1)])); // [Ci, Co] each
  const d = parts.length === 1 ? parts[0] : b.add("Concat", parts, [int("axis", 0)]);
  b.reshape(d, g.w, "dw");
  const ins: [string, number[]][] = layout.offsets.map((_, t) => [`x${t}`, [layout.rows, c]]);
  ins.push(["dy", [layout.rows, co]]);
  return b.encode(ins, [["dw", g.w]]);
}

/** Batched matmul: inputs `a` [..., M, K] (or [..., K, M] transposed) and `b` of the same rank; output `y` [..., M, N]. */
export function batchMatMulGraph(
  a: number[],
  bShape: number[],
  y: number[],
  transposeA: boolean,
  transposeB: boolean,
): Uint8Array {
  const g = new Builder();
  const swap = (r: number) => [...Array(r - 2).keys(), r - 1, r - 2];
  const at = transposeA ? g.transpose("a", swap(a.length)) : "a";
  const bt = transposeB ? g.transpose("b", swap(bShape.length)) : "b";
  g.add("MatMul", [at, bt], [], "y");
  return g.encode([["a", a], ["b", bShape]], [["y", y]]);
}

/**
 * Max-pool gradient: inputs `x` [N, H, W, C] and `dy` [N, OH, OW, C], output
 * `dx`. MaxPool's Indices output (flat positions in the NCHW input) routes each
 * output gradient to its window's maximum; ScatterElements with `add`
 * (opset 16) sums where overlapping windows share a maximum. Ties go to the
 * first maximum, as in tfjs; either choice is a valid subgradient.
 */
export function maxPoolGradGraph(
  x: number[],
  dy: number[],
  pool: { kernel: [number, number]; strides: [number, number]; pads: [number, number, number, number] },
): Uint8Array {
  const b = new Builder();
  const [n, h, w, c] = x;
  const xt = b.transpose("x", [0, 3, 1, 2]);
  const yIdx = `t_pool_y`, idx = `t_pool_i`;
  b.nodes.push({
    opType: "MaxPool",
    input: [xt],
    output: [yIdx, idx],
    name: "maxpool",
    attribute: [ints("kernel_shape", pool.kernel), ints("strides", pool.strides), ints("pads", pool.pads)],
  });
  const flatIdx = b.reshape(idx, [-1]);
  const flatDy = b.reshape(b.transpose("dy", [0, 3, 1, 2]), [-1]);
  const zero = new Float32Array(1);
  const zeros = b.add("ConstantOfShape", [b.i64([n * c * h * w])], [{
    name: "value",
    type: A.TENSOR,
    t: { dims: [1], dataType: FLOAT, rawData: new Uint8Array(zero.buffer) },
  }]);
  const scattered = b.add("ScatterElements", [zeros, flatIdx, flatDy], [int("axis", 0), {
    name: "reduction",
    type: A.STRING,
    s: new TextEncoder().encode("add"),
  }]);
  b.transpose(b.reshape(scattered, [n, c, h, w]), [0, 2, 3, 1], "dx");
  return b.encode([["x", x], ["dy", dy]], [["dx", x]], 16);
}
