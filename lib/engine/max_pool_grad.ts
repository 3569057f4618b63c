/**
 * The max-pool gradient as one pass: each output's dy goes to the first
 * maximum of its window (row-major, strictly greater, as tfjs's cpu backend
 * picks it). The wasm backend's shipped MaxPoolGrad is a scalar loop over every
 * input pixel and its windows, and onnxruntime's (MaxPool indices, then
 * ScatterElements between NCHW transposes) is little better: on SSD300-VGG16 at
 * batch 4 the gradient of the 300x300x64 pool took 741 ms and 272 ms (`deno task
 * bench`), and the five pools 6.6% of an onnxruntime training step. This kernel
 * reads x and dy once and writes dx once where the windows tile the input (50 ms).
 *
 * On the `wasm` backend it is a SIMD kernel of simd_kernels.wat over four
 * channels at a time (channel counts that are multiples of 4); otherwise the
 * JavaScript loop {@linkcode maxPoolGradInto}, which is also the reference the
 * tests check the SIMD kernel with.
 *
 * @example
 * ```ts
 * // 2x2 windows at stride 2 over a 1x2x2x1 input: the maximum (4, at the end) takes dy.
 * const dx = new Float32Array(4);
 * maxPoolGradInto(Float32Array.of(1, 3, 2, 4), Float32Array.of(5), dx, {
 *   n: 1, h: 2, w: 2, c: 1, oh: 1, ow: 1, kh: 2, kw: 2, sh: 2, sw: 2, top: 0, left: 0,
 * });
 * if (dx.join() !== "0,0,0,5") throw new Error(`got ${dx}`);
 * ```
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { replaceKernel } from "./kernel_registry.ts";
import { checkFloat32, ioOf, type WasmLike } from "./kernel_io.ts";
import { simdKernels } from "./simd_kernels.ts";

/** Sizes of one max pool (dilation 1): input [n, h, w, c], output [n, oh, ow, c], windows kh x kw at stride sh, sw. */
export interface PoolGeometry {
  n: number;
  h: number;
  w: number;
  c: number;
  oh: number;
  ow: number;
  kh: number;
  kw: number;
  sh: number;
  sw: number;
  /** Padding before the first row and column. */
  top: number;
  left: number;
}

/**
 * Adds the max-pool gradient of `dy` into `dx` (zero it first): for every
 * output pixel and channel, `dy` goes to the window's first maximum of `x`.
 * A window of NaN or -Infinity only passes nothing.
 */
export function maxPoolGradInto(
  x: Float32Array, // [n, h, w, c]
  dy: Float32Array, // [n, oh, ow, c]
  dx: Float32Array, // [n, h, w, c]
  g: PoolGeometry,
): void {
  const { n, h, w, c, oh, ow, kh, kw, sh, sw, top, left } = g;
  for (let b = 0; b < n; b++) {
    for (let oy = 0; oy < oh; oy++) {
      for (let ox = 0; ox < ow; ox++) {
        const dyAt = ((b * oh + oy) * ow + ox) * c;
        for (let j = 0; j < c; j++) {
          let best = -Infinity, at = -1;
          for (let ky = 0; ky < kh; ky++) {
            const iy = oy * sh + ky - top;
            if (iy < 0 || iy >= h) continue;
            for (let kx = 0; kx < kw; kx++) {
              const ix = ox * sw + kx - left;
              if (ix < 0 || ix >= w) continue;
              const i = ((b * h + iy) * w + ix) * c + j;
              if (x[i] > best) best = x[i], at = i;
            }
          }
          if (at >= 0) dx[at] += dy[dyAt + j];
        }
      }
    }
  }
}

/** The pool geometry of a MaxPoolGrad call, from tfjs's own pool arithmetic. */
export function poolGeometry(xShape: number[], attrs: tf.NamedAttrMap): PoolGeometry {
  const info = tf.backend_util.computePool2DInfo(
    xShape as [number, number, number, number],
    attrs.filterSize as [number, number] | number,
    attrs.strides as [number, number] | number,
    1,
    attrs.pad as "same" | "valid" | number,
    attrs.dimRoundingMode as "floor" | "round" | "ceil" | undefined,
  );
  return {
    n: info.batchSize,
    h: info.inHeight,
    w: info.inWidth,
    c: info.inChannels,
    oh: info.outHeight,
    ow: info.outWidth,
    kh: info.filterHeight,
    kw: info.filterWidth,
    sh: info.strideHeight,
    sw: info.strideWidth,
    top: info.padInfo.top,
    left: info.padInfo.left,
  };
}

const maxPoolGradKernel: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const { dy, input } = inputs as { dy: tf.TensorInfo; input: tf.TensorInfo };
  checkFloat32([dy, input], "MaxPoolGrad");
  const g = poolGeometry(input.shape, attrs ?? {});
  const simd = g.c % 4 === 0 ? simdKernels(backend) : null;
  if (simd) {
    const dx = (backend as unknown as WasmLike).makeOutput(input.shape, "float32");
    const at = simd.offset(dx);
    // Windows that tile the input exactly write every dx once: no zeroing, no read-back.
    const tiled = g.kh === g.sh && g.kw === g.sw && g.top === 0 && g.left === 0 && g.oh * g.sh === g.h &&
      g.ow * g.sw === g.w;
    if (!tiled) new Float32Array(simd.heap(), at, input.shape.reduce((a, b) => a * b, 1)).fill(0);
    // By images: each writes only its own dx.
    const xp = simd.offset(input), dyp = simd.offset(dy), image = g.h * g.w * g.c, out = g.oh * g.ow * g.c;
    simd.parallel(
      "max_pool_grad",
      simd.split(g.n, image).map(([b, n]) => [
        xp + 4 * b * image,
        dyp + 4 * b * out,
        at + 4 * b * image,
        n,
        g.h,
        g.w,
        g.c,
        g.oh,
        g.ow,
        g.kh,
        g.kw,
        g.sh,
        g.sw,
        g.top,
        g.left,
        tiled ? 1 : 0,
      ]),
    );
    return dx;
  }
  const io = ioOf(backend).run([input, dy], [input.shape]);
  io.outs[0].fill(0);
  maxPoolGradInto(io.ins[0], io.ins[1], io.outs[0], g);
  return io.infos()[0];
};

/** Replaces the wasm backend's MaxPoolGrad with this one (idempotent; the shipped one stays for baselines). */
export function registerMaxPoolGradKernel(): void {
  replaceKernel("wasm", "MaxPoolGrad", maxPoolGradKernel);
}
