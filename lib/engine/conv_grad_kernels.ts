/**
 * Training-gradient kernels for backends that lack them or ship slow ones.
 *
 * The wasm backend has no `Conv2DBackpropFilter` nor depthwise backprops, and
 * its `Conv2DBackpropInput` is a scalar loop (965 of 1316 ms of a small SSD
 * step, shared/notes/measurements.md). Each gradient here is composed from the
 * backend's own fast forward kernels (XNNPACK convs, transposes, pads), so it
 * runs at forward-conv speed:
 *
 * - dX of a conv is a conv of the (zero-inserted, for stride > 1) output
 *   gradient with the spatially flipped, channel-swapped filter.
 * - dW of a conv is a conv over the transposed input (batch as channels) with
 *   the transposed output gradient as filter (stride and dilation swap roles).
 * - Depthwise dW is one depthwise conv with the batch folded into the
 *   channels (the output gradient as filter), then a sum over the batch.
 *
 * tfjs refuses gradients of dilated convs; {@linkcode registerConvGradient}
 * replaces the Conv2D gradient with one that passes dilations through, which
 * VGG16's fc6 (3x3, dilation 6) needs.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { depthwiseGather, inputGradTable } from "./depthwise_gather.ts";
import { baseKernel, keepShipped } from "./kernel_registry.ts";
import { simdKernels } from "./simd_kernels.ts";

type Info = tf.TensorInfo;
type Pair = [number, number];

/** Kernel calls against one backend, with disposal of intermediates. */
function ops(backendName: string, backendArg: unknown) {
  const backend = backendArg as tf.KernelBackend;
  const run = (kernel: string, inputs: tf.NamedTensorInfoMap, attrs: tf.NamedAttrMap = {}): Info => {
    const cfg = baseKernel(backendName, kernel) ?? tf.getKernel(kernel, backendName);
    if (!cfg) throw new Error(`kernel ${kernel} is not registered for backend ${backendName}`);
    return cfg.kernelFunc({ inputs, backend, attrs }) as Info;
  };
  const free = (...infos: Info[]) => {
    for (const i of infos) backend.disposeData(i.dataId);
  };
  const reshape = (x: Info, shape: number[]) => run("Reshape", { x }, { shape });
  const transpose = (x: Info, perm: number[]) => run("Transpose", { x }, { perm });
  const slice = (x: Info, begin: number[], size: number[]) => run("Slice", { x }, { begin, size });
  return { run, free, reshape, transpose, slice };
}

function pair(v: number | number[] | undefined): Pair {
  if (v === undefined) return [1, 1];
  return typeof v === "number" ? [v, v] : [v[0], v[1]];
}

/** Zero-inserts `sh-1` rows and `sw-1` columns after every row/column of dy [N, OH, OW, C]. */
function zeroInsert(o: ReturnType<typeof ops>, dy: Info, sh: number, sw: number): Info {
  const [n, oh, ow, c] = dy.shape;
  if (sh === 1 && sw === 1) return dy;
  const r = o.reshape(dy, [n, oh, 1, ow, 1, c]);
  const p = o.run("PadV2", { x: r }, {
    paddings: [[0, 0], [0, 0], [0, sh - 1], [0, 0], [0, sw - 1], [0, 0]],
    constantValue: 0,
  });
  o.free(r);
  const up = o.reshape(p, [n, oh * sh, ow * sw, c]);
  o.free(p);
  return up;
}

/**
 * Full correlation of `up` [N, UH, UW, C] with filter `w` (already flipped)
 * so that the result has `h` x `w` rows/cols: the shared core of both dX kernels.
 */
function fullCorrelate(
  o: ReturnType<typeof ops>,
  up: Info,
  w: Info,
  out: { h: number; w: number; kh: number; kw: number; dh: number; dw: number; top: number; left: number },
  depthwise: boolean,
): Info {
  const [, uh, uw] = up.shape;
  const keH = (out.kh - 1) * out.dh + 1, keW = (out.kw - 1) * out.dw + 1;
  const beforeH = keH - 1 - out.top, beforeW = keW - 1 - out.left;
  const afterH = out.h + keH - 1 - beforeH - uh, afterW = out.w + keW - 1 - beforeW - uw;
  const pad = [[0, 0], [Math.max(0, beforeH), Math.max(0, afterH)], [Math.max(0, beforeW), Math.max(0, afterW)], [
    0,
    0,
  ]];
  const y = o.run(depthwise ? "DepthwiseConv2dNative" : "Conv2D", { x: up, filter: w }, {
    strides: [1, 1],
    pad,
    dilations: [out.dh, out.dw],
    dataFormat: "NHWC",
  });
  const cropH = Math.max(0, -beforeH), cropW = Math.max(0, -beforeW);
  if (cropH === 0 && cropW === 0 && y.shape[1] === out.h && y.shape[2] === out.w) return y;
  const s = o.slice(y, [0, cropH, cropW, 0], [y.shape[0], out.h, out.w, y.shape[3]]);
  o.free(y);
  return s;
}

function convInfo(
  xShape: number[],
  wShape: number[],
  attrs: tf.NamedAttrMap,
  depthwise: boolean,
) {
  return tf.backend_util.computeConv2DInfo(
    xShape as [number, number, number, number],
    wShape as [number, number, number, number],
    pair(attrs.strides as number | number[]),
    pair(attrs.dilations as number | number[] | undefined),
    attrs.pad as "same" | "valid" | number,
    attrs.dimRoundingMode as "floor" | "round" | "ceil" | undefined,
    depthwise,
  );
}

/** dX of Conv2D: inputs {dy, filter}, attrs {strides, pad, inputShape, dilations?}. */
function conv2dBackpropInput(backendName: string): tf.KernelFunc {
  return ({ inputs, backend, attrs }) => {
    const o = ops(backendName, backend);
    const { dy, filter } = inputs as { dy: Info; filter: Info };
    const inputShape = attrs!.inputShape as number[];
    const info = convInfo(inputShape, filter.shape, attrs!, false);
    // [KH, KW, Ci, Co] -> flipped in both spatial axes -> [KH, KW, Co, Ci]
    const rev = o.run("Reverse", { x: filter }, { dims: [0, 1] });
    const wT = o.transpose(rev, [0, 1, 3, 2]);
    o.free(rev);
    const up = zeroInsert(o, dy, info.strideHeight, info.strideWidth);
    const dx = fullCorrelate(o, up, wT, {
      h: inputShape[1],
      w: inputShape[2],
      kh: info.filterHeight,
      kw: info.filterWidth,
      dh: info.dilationHeight,
      dw: info.dilationWidth,
      top: info.padInfo.top,
      left: info.padInfo.left,
    }, false);
    if (up !== dy) o.free(up);
    o.free(wT);
    return dx;
  };
}

/** dW of Conv2D: inputs {x, dy}, attrs {strides, pad, filterShape, dilations?}. */
function conv2dBackpropFilter(backendName: string): tf.KernelFunc {
  return ({ inputs, backend, attrs }) => {
    const o = ops(backendName, backend);
    const { x, dy } = inputs as { x: Info; dy: Info };
    const filterShape = attrs!.filterShape as number[];
    const info = convInfo(x.shape, filterShape, attrs!, false);
    const [, h, w] = x.shape;
    const [kh, kw, ci, co] = filterShape;
    const { strideHeight: sh, strideWidth: sw, dilationHeight: dh, dilationWidth: dw } = info;
    const { top, left } = info.padInfo;
    const oh = dy.shape[1], ow = dy.shape[2];
    // x as [Ci, H, W, N]: channels become the batch, the batch becomes channels.
    const xT = o.transpose(x, [3, 1, 2, 0]);
    // dy as a filter [OH, OW, N, Co]; the forward stride becomes its dilation.
    const dyT = o.transpose(dy, [1, 2, 0, 3]);
    const needH = (oh - 1) * sh + (kh - 1) * dh + 1, needW = (ow - 1) * sw + (kw - 1) * dw + 1;
    const y = o.run("Conv2D", { x: xT, filter: dyT }, {
      strides: [dh, dw],
      dilations: [sh, sw],
      pad: [[0, 0], [top, Math.max(0, needH - top - h)], [left, Math.max(0, needW - left - w)], [0, 0]],
      dataFormat: "NHWC",
    }); // [Ci, >=KH, >=KW, Co]
    o.free(xT, dyT);
    let ys = y;
    if (y.shape[1] !== kh || y.shape[2] !== kw) {
      ys = o.slice(y, [0, 0, 0, 0], [ci, kh, kw, co]);
      o.free(y);
    }
    const dW = o.transpose(ys, [1, 2, 0, 3]);
    o.free(ys);
    return dW;
  };
}

/** dX of a depthwise conv: inputs {dy, filter [KH, KW, C, M]}, attrs {strides, pad, dilations, inputShape}. */
function depthwiseBackpropInput(backendName: string): tf.KernelFunc {
  return ({ inputs, backend, attrs }) => {
    const o = ops(backendName, backend);
    const { dy, filter } = inputs as { dy: Info; filter: Info };
    const inputShape = attrs!.inputShape as number[];
    const info = convInfo(inputShape, filter.shape, attrs!, true);
    const [kh, kw, c, m] = filter.shape;
    const strided = info.strideHeight > 1 || info.strideWidth > 1;
    // Strided: the SIMD gather per input pixel beats zero-inserting dy for XNNPACK (batch 4,
    // 150x150x96 at stride 2: 9 vs 21 ms). At stride 1 XNNPACK's conv of the padded dy is up to
    // 1.15x faster on one thread, the gather 1.6-2.0x on two.
    const simd = m === 1 && c % 4 === 0 && dy.dtype === "float32" ? simdKernels(backend) : null;
    if (simd && (strided || simd.threads > 1)) {
      const [, h, w] = inputShape, [, oh, ow] = dy.shape;
      const { strideHeight: sh, strideWidth: sw, dilationHeight: dh, dilationWidth: dw } = info;
      const rows = inputGradTable(h, kh, sh, dh, info.padInfo.top, oh);
      const cols = inputGradTable(w, kw, sw, dw, info.padInfo.left, ow);
      return depthwiseGather(simd, backend, dy, filter, inputShape, rows, cols);
    }
    const rev = o.run("Reverse", { x: filter }, { dims: [0, 1] });
    // Output channel c*M+m came from input channel c through w[:, :, c, m].
    const w1 = o.reshape(rev, [kh, kw, c * m, 1]);
    o.free(rev);
    const up = zeroInsert(o, dy, info.strideHeight, info.strideWidth);
    const full = fullCorrelate(o, up, w1, {
      h: inputShape[1],
      w: inputShape[2],
      kh,
      kw,
      dh: info.dilationHeight,
      dw: info.dilationWidth,
      top: info.padInfo.top,
      left: info.padInfo.left,
    }, true); // [N, H, W, C*M]
    if (up !== dy) o.free(up);
    o.free(w1);
    if (m === 1) return full;
    const r = o.reshape(full, [inputShape[0], inputShape[1], inputShape[2], c, m]);
    o.free(full);
    const dx = o.run("Sum", { x: r }, { axis: [4], keepDims: false });
    o.free(r);
    return dx;
  };
}

/** dW of a depthwise conv: inputs {x, dy}, attrs {strides, pad, dilations, filterShape [KH, KW, C, M]}. */
function depthwiseBackpropFilter(backendName: string): tf.KernelFunc {
  return ({ inputs, backend, attrs }) => {
    const o = ops(backendName, backend);
    const { x, dy } = inputs as { x: Info; dy: Info };
    const filterShape = attrs!.filterShape as number[];
    const info = convInfo(x.shape, filterShape, attrs!, true);
    const [n, h, w, c] = x.shape;
    const [kh, kw, , m] = filterShape;
    const { strideHeight: sh, strideWidth: sw, dilationHeight: dh, dilationWidth: dw } = info;
    const { top, left } = info.padInfo;
    const oh = dy.shape[1], ow = dy.shape[2];
    const simd = m === 1 && c % 4 === 0 && x.dtype === "float32" ? simdKernels(backend) : null;
    if (simd) {
      // One pass over dy, each tap's product summed in place (SIMD over channels).
      const out = (backend as unknown as { makeOutput(s: number[], d: string): Info }).makeOutput(
        filterShape,
        "float32",
      );
      const taps = kh * kw * c;
      // By images, each into its own sums, added in image order after.
      const parts = simd.split(n, h * w * c);
      const scratch = simd.alloc(12 * taps * parts.length + 16); // per part: part f32[taps], acc f64[taps]
      try {
        const heap = simd.heap(), xp = simd.offset(x), dyp = simd.offset(dy);
        const acc = scratch + 4 * taps * parts.length; // 8-aligned: c % 4 === 0
        new Float64Array(heap, acc, taps * parts.length).fill(0);
        simd.parallel(
          "dw_filter_grad",
          parts.map(([b, nb], i) => [
            xp + 4 * b * h * w * c,
            dyp + 4 * b * oh * ow * c,
            scratch + 4 * taps * i,
            acc + 8 * taps * i,
            nb,
            h,
            w,
            c,
            oh,
            ow,
            kh,
            kw,
            sh,
            sw,
            dh,
            dw,
            top,
            left,
          ]),
        );
        const sums = new Float64Array(heap, acc, taps * parts.length);
        for (let i = 1; i < parts.length; i++) {
          for (let t = 0; t < taps; t++) sums[t] += sums[i * taps + t];
        }
        new Float32Array(heap, simd.offset(out), taps).set(sums.subarray(0, taps));
      } finally {
        simd.free(scratch);
      }
      return out;
    }
    // The batch joins the channels: x as [1, H, W, N*C] and dy as a depthwise filter [OH, OW, N*C, M], so one
    // depthwise conv (stride and dilation swapped) correlates each image's channel with its own gradient. A sum
    // over the batch then gives dW. One pass instead of one strided slice per kernel tap (10x faster at stride 2).
    const xt = o.transpose(x, [1, 2, 0, 3]); // [H, W, N, C]
    const x1 = o.reshape(xt, [1, h, w, n * c]);
    o.free(xt);
    const dyt = o.transpose(dy, [1, 2, 0, 3]); // [OH, OW, N, C*M]
    const f = o.reshape(dyt, [oh, ow, n * c, m]);
    o.free(dyt);
    const needH = (oh - 1) * sh + (kh - 1) * dh + 1, needW = (ow - 1) * sw + (kw - 1) * dw + 1;
    const y = o.run("DepthwiseConv2dNative", { x: x1, filter: f }, {
      strides: [dh, dw],
      dilations: [sh, sw],
      pad: [[0, 0], [top, Math.max(0, needH - top - h)], [left, Math.max(0, needW - left - w)], [0, 0]],
      dataFormat: "NHWC",
    }); // [1, >=KH, >=KW, N*C*M]
    o.free(x1, f);
    let ys = y;
    if (y.shape[1] !== kh || y.shape[2] !== kw) {
      ys = o.slice(y, [0, 0, 0, 0], [1, kh, kw, n * c * m]);
      o.free(y);
    }
    const y5 = o.reshape(ys, [kh, kw, n, c * m]);
    o.free(ys);
    const summed = o.run("Sum", { x: y5 }, { axis: [2], keepDims: false }); // [KH, KW, C*M]
    o.free(y5);
    const dW = o.reshape(summed, [kh, kw, c, m]);
    o.free(summed);
    return dW;
  };
}

/** Names of the kernels this module provides. */
export const GRAD_KERNELS = [
  "Conv2DBackpropInput",
  "Conv2DBackpropFilter",
  "DepthwiseConv2dNativeBackpropInput",
  "DepthwiseConv2dNativeBackpropFilter",
] as const;

const factories: Record<(typeof GRAD_KERNELS)[number], (b: string) => tf.KernelFunc> = {
  Conv2DBackpropInput: conv2dBackpropInput,
  Conv2DBackpropFilter: conv2dBackpropFilter,
  DepthwiseConv2dNativeBackpropInput: depthwiseBackpropInput,
  DepthwiseConv2dNativeBackpropFilter: depthwiseBackpropFilter,
};

function isDilated(attrs: tf.NamedAttrMap | undefined): boolean {
  const d = pair(attrs?.dilations as number | number[] | undefined);
  return d[0] !== 1 || d[1] !== 1;
}

/**
 * Registers the composed gradient kernels for `backendName`.
 *
 * With `mode: "replace"` (wasm) every call uses the composed kernels. With
 * `mode: "dilated-only"` (cpu, the test reference) the backend keeps its own
 * kernels and ours only serve dilated convs, which its kernels ignore.
 */
export function registerGradKernels(backendName: string, mode: "replace" | "dilated-only" = "replace"): void {
  for (const name of GRAD_KERNELS) {
    const existing = tf.getKernel(name, backendName);
    const base = keepShipped(backendName, name);
    const composed = factories[name](backendName);
    let kernelFunc: tf.KernelFunc = composed;
    if (mode === "dilated-only") {
      if (!base) continue;
      kernelFunc = (args) => isDilated(args.attrs) ? composed(args) : base.kernelFunc(args);
    }
    if (existing) tf.unregisterKernel(name, backendName);
    tf.registerKernel({ kernelName: name, backendName, kernelFunc, composed: true } as tf.KernelConfig);
  }
}

/**
 * Replaces tfjs's Conv2D gradient, which refuses dilations > 1, with one that
 * passes the dilations to the backprop kernels (VGG16 fc6 uses dilation 6).
 */
export function registerConvGradient(): void {
  tf.registerGradient({
    kernelName: "Conv2D",
    inputsToSave: ["x", "filter"],
    gradFunc: (dy, saved, attrs) => {
      const [x, filter] = saved as tf.Tensor4D[];
      const a = attrs as unknown as {
        strides: number;
        pad: string;
        dataFormat: string;
        dimRoundingMode?: string;
        dilations: number;
      };
      if (a.dataFormat && a.dataFormat !== "NHWC") throw new Error("Conv2D gradient supports NHWC only");
      const common = {
        strides: a.strides,
        pad: a.pad,
        dataFormat: "NHWC",
        dimRoundingMode: a.dimRoundingMode,
        dilations: a.dilations,
      };
      return {
        x: () =>
          tf.engine().runKernel("Conv2DBackpropInput", { dy: dy as tf.Tensor, filter }, {
            ...common,
            inputShape: x.shape,
          } as unknown as tf.NamedAttrMap) as tf.Tensor,
        filter: () =>
          tf.engine().runKernel("Conv2DBackpropFilter", { x, dy: dy as tf.Tensor }, {
            ...common,
            filterShape: filter.shape,
          } as unknown as tf.NamedAttrMap) as tf.Tensor,
      };
    },
  });
}
