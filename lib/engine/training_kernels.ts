/**
 * The kernels every training backend needs, installed once by `setBackend`:
 * the dilation-aware conv gradients, our SIMD kernels and a sharing Identity.
 * It also notes whether onnxruntime's kernels (`ort_kernels.ts`) have been
 * loaded, so that `setBackend` can take them out again; this note lives here,
 * not in backend.ts, because ort_kernels.ts needs these kernels too.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { registerConvGradient, registerGradKernels } from "./conv_grad_kernels.ts";
import { registerMaxPoolGradKernel } from "./max_pool_grad.ts";
import { registerDepthwiseConvKernel } from "./depthwise_gather.ts";
import { registerPointwiseConvKernel } from "./pointwise_conv.ts";
import { registerReluGradients } from "./relu_grad.ts";
import { registerBatchNormKernels } from "./batch_norm_kernel.ts";
import { registerSplitKernel } from "./split_kernel.ts";
import { registerMomentumKernel } from "./momentum_kernel.ts";
import { registerFocalKernel } from "./focal_kernel.ts";
import { registerNativeAddSum } from "./native_add_sum.ts";

let gradientsReady = false;
// Loaded on first use: it loads onnxruntime's native addon.
let ortKernels: OrtKernelsModule | undefined;
/** What backend.ts needs of ort_kernels.ts. */
export type OrtKernelsModule = {
  registerOrtKernels(o?: { threads?: number }): void;
  unregisterOrtKernels(): void;
  /** Whether the convs run on oneDNN: asked for and the library loaded. */
  ortConvsOnDnnl(): boolean;
  /** The options in force (`onednn`: whether oneDNN is asked for). */
  ortKernelOptions(): { onednn: boolean };
};

/**
 * Called by ort_kernels.ts as it loads, however it was imported, so that
 * choosing another backend always takes its kernels back out.
 */
export function noteOrtKernels(m: OrtKernelsModule): void {
  ortKernels ??= m;
}

/** ort_kernels.ts, once it has been loaded. */
export function loadedOrtKernels(): OrtKernelsModule | undefined {
  return ortKernels;
}

/**
 * wasm's Identity copies its input, and the engine clones (Identity) every tensor a
 * gradient saves: 700 copies of activations per SSD300-MobileNetV2 step, 5% of it.
 * tfjs tensors are immutable, so the clone can share the data and count a reference,
 * as the cpu backend's Identity does.
 */
function registerSharedIdentity(): void {
  const kernelFunc: tf.KernelFunc = ({ inputs, backend }) => {
    const x = inputs.x as tf.TensorInfo;
    (backend as unknown as { incRef(id: unknown): void }).incRef(x.dataId);
    return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
  };
  if (tf.getKernel("Identity", "wasm")) tf.unregisterKernel("Identity", "wasm");
  tf.registerKernel({ kernelName: "Identity", backendName: "wasm", kernelFunc });
}

/** Installs the dilation-aware Conv2D gradient and the composed kernels (idempotent). */
export function installTrainingKernels(): void {
  if (gradientsReady) return;
  registerConvGradient();
  registerReluGradients();
  registerMaxPoolGradKernel();
  registerDepthwiseConvKernel();
  registerPointwiseConvKernel();
  registerBatchNormKernels();
  registerSharedIdentity();
  registerSplitKernel();
  registerMomentumKernel();
  registerFocalKernel();
  registerNativeAddSum();
  registerGradKernels("wasm", "replace");
  registerGradKernels("cpu", "dilated-only");
  gradientsReady = true;
}
