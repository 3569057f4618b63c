/**
 * Chooses the tfjs compute backend by name and makes it able to train.
 *
 * - `wasm` (default): XNNPACK with SIMD, plus the composed gradient kernels of
 *   `conv_grad_kernels.ts` that the shipped backend lacks or runs slowly, and
 *   SIMD kernels of our own (batch norm, depthwise and few-channel 1x1 convs,
 *   ReLU and max-pool gradients) that split over the kernel threads.
 * - `cpu`: pure JS; the reference that tests compare against (its conv
 *   backward is ~700x slower, so never train on it).
 * - `tensorflow`: `@tensorflow/tfjs-node` or `-gpu`, when the user has them.
 * - `onnxruntime`: the wasm backend with convs, their gradients, matmuls and
 *   max-pool gradients run by onnxruntime-node (`ort_kernels.ts`).
 * - `webgpu`: tfjs-backend-webgpu on Deno's WebGPU (`webgpu.ts`): a GPU where
 *   one has a Vulkan, Metal or DX12 driver, Mesa's lavapipe on the CPU here.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
// tfjs-core's node bundle ships no gradients and no chained ops (x.add(y)), and
// its ESM files use extensionless imports that Deno cannot resolve; the full
// @tensorflow/tfjs bundle registers both in the shared global registry.
import "@tensorflow/tfjs";
import "@tensorflow/tfjs-backend-cpu";
import "@tensorflow/tfjs-backend-wasm";
import { installTrainingKernels, loadedOrtKernels, type OrtKernelsModule } from "./training_kernels.ts";
import { DNNL_INSTALL_HINT } from "./dnnl.ts";
import { InputError } from "../errors.ts";
import { installSharedHeap } from "./shared_heap.ts";
import { setSimdThreads } from "./simd_kernels.ts";
import * as os from "node:os";
import { currentAdapter, describeAdapter, loadWebGpuBackend, softwareWarning } from "./webgpu.ts";

/** Backends the workbench can run on. */
export const BACKENDS = ["wasm", "cpu", "tensorflow", "onnxruntime", "webgpu"] as const;
/** A backend name. */
export type BackendName = (typeof BACKENDS)[number];

/**
 * Threads the SIMD kernels split their calls over at most: they stream memory,
 * and past a few threads the bandwidth, not the cores, bounds them.
 */
export const MAX_SIMD_THREADS = 8;

/**
 * Activates a backend and returns its name. `threads` sets the intra-op
 * threads of the `onnxruntime` backend's kernels (default 2) and, on `wasm`
 * and `onnxruntime`, the threads that the SIMD kernels (batch norm, ReLU,
 * depthwise and max-pool gradients) split over (default 2, or the cores if fewer; at most
 * {@linkcode MAX_SIMD_THREADS}; 1 keeps them on the calling thread). Throws an {@linkcode InputError}
 * with install instructions when `tensorflow` is asked for but absent.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs-core";
 * await setBackend("cpu");
 * if (tf.getBackend() !== "cpu") throw new Error("backend not set");
 * ```
 */
export async function setBackend(name: string = "wasm", o: { threads?: number } = {}): Promise<BackendName> {
  if (!(BACKENDS as readonly string[]).includes(name)) {
    throw new InputError(`unknown backend "${name}"; choose one of ${BACKENDS.join(", ")}`);
  }
  installTrainingKernels();
  // Before the wasm backend first initialises: its heap becomes shared, so kernel threads can work on it.
  installSharedHeap();
  // onnxruntime is wasm with its heavy kernels replaced; any other choice restores wasm's own.
  if (name === "onnxruntime") {
    const ort: OrtKernelsModule = loadedOrtKernels() ?? await import("./ort_kernels.ts");
    ort.registerOrtKernels({ threads: o.threads });
  } else loadedOrtKernels()?.unregisterOrtKernels();
  // PROD silences tfjs's "install tfjs-node" console hint, which misleads here.
  tf.env().set("PROD", true);
  if (name === "tensorflow") await loadTfjsNode();
  if (name === "webgpu") await loadWebGpuBackend();
  const ok = await tf.setBackend(name === "onnxruntime" ? "wasm" : name);
  if (!ok) throw new InputError(`backend "${name}" failed to initialise`);
  await tf.ready();
  if (name === "wasm" || name === "onnxruntime") {
    const threads = o.threads ?? Math.min(2, navigator.hardwareConcurrency || 1);
    await setSimdThreads(tf.backend(), Math.min(MAX_SIMD_THREADS, threads));
  }
  return name as BackendName;
}

async function loadTfjsNode(): Promise<void> {
  if (tf.findBackend("tensorflow")) return;
  const errors: string[] = [];
  for (const pkg of ["@tensorflow/tfjs-node-gpu", "@tensorflow/tfjs-node"]) {
    try {
      // A computed specifier, so Deno never tries to fetch the package unless asked.
      await import(pkg);
      if (tf.findBackend("tensorflow")) return;
    } catch (e) {
      errors.push(`${pkg}: ${(e as Error).message.split("\n")[0]}`);
    }
  }
  throw new InputError(
    [
      "the tensorflow backend needs @tensorflow/tfjs-node (CPU) or @tensorflow/tfjs-node-gpu (CUDA), which are not installed.",
      "Their install step downloads libtensorflow, so it needs internet access. On a machine that has it, add",
      '  "@tensorflow/tfjs-node": "npm:@tensorflow/tfjs-node@4.22.0"   (or tfjs-node-gpu)',
      'to deno.json "imports", run `deno install --allow-scripts=npm:@tensorflow/tfjs-node`, and retry.',
      "Until then use --backend wasm (the default).",
      ...errors.map((e) => `  (${e})`),
    ].join("\n"),
  );
}

/** Bytes the wasm heap can address (wasm32). */
export const WASM_HEAP_LIMIT = 4 * 1024 ** 3;

/**
 * Turns the wasm backend's out-of-memory crash into a clear message naming
 * the batch size. Other errors pass through unchanged.
 */
export function explainOutOfMemory(
  e: unknown,
  context: { batchSize: number; what: string; segments?: number },
): unknown {
  const msg = e instanceof Error ? e.message : String(e);
  if (/memory access out of bounds|Cannot enlarge memory|out of memory|Aborted\(/i.test(msg)) {
    const lower = context.batchSize > 1
      ? `Lower the batch size (e.g. --train.batch_size=${Math.floor(context.batchSize / 2)})`
      : "Even batch size 1 does not fit: lower the input size (model.input_size, with the anchors' img_shape)";
    return new InputError(
      `${context.what} ran out of the wasm backend's 4 GiB heap at batch size ${context.batchSize}. ` +
        `${lower}, recompute the step in more segments (--train.segments=${
          Math.max(8, 2 * (context.segments ?? 1))
        }: one more forward pass, a fraction of the memory), or use a backend without that cap (--backend tensorflow).`,
      { cause: e },
    );
  }
  return e;
}

/**
 * One line naming what the backend runs on, for the start of a run and its
 * log: the WebGPU adapter (name, vendor, limits), else the CPU.
 */
export function deviceDescription(name: BackendName): string {
  const a = name === "webgpu" ? currentAdapter() : undefined;
  if (a) return `webgpu on ${describeAdapter(a)}`;
  const cpu = os.cpus()[0]?.model?.trim() || "CPU";
  const convs = name === "onnxruntime" && loadedOrtKernels()?.ortConvsOnDnnl() ? ", convs on oneDNN" : "";
  return `${name} on ${cpu} (${navigator.hardwareConcurrency || 1} cores)${convs}`;
}

/**
 * A warning for the run: a software WebGPU adapter (a correctness run, not GPU speed), or onnxruntime without
 * oneDNN (asked for but not loaded); else null.
 */
export function deviceWarning(name: BackendName): string | null {
  const a = name === "webgpu" ? currentAdapter() : undefined;
  if (a) return softwareWarning(a);
  const ort = name === "onnxruntime" ? loadedOrtKernels() : undefined;
  if (ort?.ortKernelOptions().onednn && !ort.ortConvsOnDnnl()) {
    return `note: oneDNN did not load (${DNNL_INSTALL_HINT}); the convs run on onnxruntime's kernels, ` +
      `2-4x slower on VGG-sized layers (README, "Compute backends")`;
  }
  return null;
}
