/**
 * The compute engine: what makes tfjs fast enough to train an SSD on a CPU.
 * Nothing here is a tutorial concept; the rest of `lib/` imports the engine
 * through this file only.
 *
 * - `backend.ts`: choose a backend (`wasm` by default, `onnxruntime`, `cpu`,
 *   `tensorflow`, `webgpu`) and install the training kernels; `webgpu.ts`
 *   finds the WebGPU adapter and says what it is.
 * - Kernels: composed conv gradients (`conv_grad_kernels.ts`), SIMD kernels
 *   from `simd_kernels.wat` (batch norm, ReLU and max-pool gradients,
 *   depthwise and few-channel 1x1 convs), onnxruntime kernels and their ONNX
 *   graphs (`ort_kernels.ts`, `ort_graphs.ts`, loaded only when chosen), oneDNN
 *   through FFI (`dnnl.ts`) with batch norm as native code on its threads
 *   (`native_kernels.c`, built and loaded by `native_kernels.ts`), and the
 *   registry that keeps the shipped kernels as fallbacks and baselines.
 * - Memory and threads: the shared wasm heap (`shared_heap.ts`), the kernel
 *   threads that split SIMD calls (`simd_threads.ts`, `simd_worker.ts`).
 * - One training step: loss and gradients of a batch (`grad_step.ts`), node
 *   by node without tfjs's tape (`graph_backward.ts`), in recomputed segments
 *   (`recompute.ts`), or split over worker replicas (`replicas.ts`,
 *   `grad_worker.ts`).
 * - Across processes and machines: MPI through FFI (`mpi.ts`).
 *
 * The model reaches the engine's own ops by name (`../custom_ops.ts`), so the
 * engine depends on the model, never the reverse.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs-core";
 * await setBackend("wasm", { threads: 1 });
 * if (tf.getBackend() !== "wasm") throw new Error("wasm is not active");
 * ```
 *
 * @module
 */
export {
  type BackendName,
  BACKENDS,
  deviceDescription,
  deviceWarning,
  explainOutOfMemory,
  MAX_SIMD_THREADS,
  setBackend,
  WASM_HEAP_LIMIT,
} from "./backend.ts";
export { type GradInputs, type GradOutputs, gradStep, trainableParams, useUntapedBackward } from "./grad_step.ts";
export { canRunUntaped, graphGradients } from "./graph_backward.ts";
export { planSegments, type Segment, segmentedGradients, type SegmentedResult } from "./recompute.ts";
export {
  type Launch,
  launcherFromEnv,
  librariesFor,
  Mpi,
  MPI_INSTALL_HINT,
  MPI_LIBRARIES,
  openMpi,
  slurmTasksPerNode,
} from "./mpi.ts";
export { GradReplica, type RemoteGrads, splitBatch } from "./replicas.ts";
export { simdKernelsUnavailable } from "./simd_kernels.ts";
export {
  type AdapterSummary,
  currentAdapter,
  describeAdapter,
  ensureRuntimeDir,
  findAdapter,
  softwareAdapterName,
  vendorName,
  WEBGPU_INSTALL_HINT,
  webgpuBufferCounts,
} from "./webgpu.ts";
export { KernelThreads, splitRange } from "./simd_threads.ts";
