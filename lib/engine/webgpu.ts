/**
 * The `webgpu` backend: tfjs-backend-webgpu on Deno's WebGPU (wgpu over
 * Vulkan, Metal or DX12), with adapter discovery and clear failures.
 *
 * - The adapter is asked for before tfjs is: its name, vendor and limits are
 *   returned for the run's log, and a software adapter (Mesa's lavapipe,
 *   SwiftShader, WARP) is named as one: exact, but a correctness run.
 * - No adapter: an {@linkcode InputError} saying what to install.
 * - Mesa's Vulkan loader wants `XDG_RUNTIME_DIR` and prints an error line
 *   without it; when it is unset or not a folder, a private one is made.
 * - WebGPU has no synchronous read in Deno (tfjs reads through a canvas), so
 *   code that runs on it reads with `await data()` only.
 *
 * @example
 * ```ts
 * const s = softwareAdapterName({ description: "llvmpipe (LLVM 15.0.6, 256 bits)", isFallbackAdapter: true });
 * if (s !== "lavapipe") throw new Error(`got ${s}`);
 * if (vendorName("4318") !== "NVIDIA") throw new Error("0x10de is NVIDIA");
 * ```
 *
 * @module
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as tf from "@tensorflow/tfjs-core";
import { InputError } from "../errors.ts";
import { registerGradKernels } from "./conv_grad_kernels.ts";
import { registerWebGpuBatchNorm } from "./webgpu_batch_norm.ts";

/** What a run records of its adapter. */
export interface AdapterSummary {
  /** The adapter's description, or its vendor and device ids when it has none. */
  name: string;
  vendor: string;
  architecture: string;
  /** "lavapipe", "SwiftShader" or "WARP" for a software adapter, else null. */
  software: string | null;
  /** The limits that bound tfjs's buffers and dispatches. */
  limits: {
    maxBufferSize: number;
    maxStorageBufferBindingSize: number;
    maxComputeWorkgroupStorageSize: number;
    maxComputeInvocationsPerWorkgroup: number;
    maxComputeWorkgroupsPerDimension: number;
  };
}

/** What to install when no adapter is found (printed by the no-adapter error). */
export const WEBGPU_INSTALL_HINT = [
  "WebGPU found no adapter. Deno's WebGPU runs on Vulkan (Linux), Metal (macOS) or DX12 (Windows):",
  "  - NVIDIA: the proprietary driver with its Vulkan ICD (Debian: nvidia-driver, nvidia-vulkan-icd);",
  "  - AMD / Intel: Mesa's Vulkan drivers (sudo apt-get install mesa-vulkan-drivers);",
  "  - no GPU: the same package brings lavapipe, a software Vulkan on the CPU (exact, slow);",
  "  - check with `vulkaninfo --summary` (Debian: vulkan-tools).",
  "Mesa also wants XDG_RUNTIME_DIR set to a writable folder (the workbench makes one when it is unset).",
].join("\n");

const SOFTWARE = [
  [/llvmpipe|lavapipe/i, "lavapipe"],
  [/swiftshader/i, "SwiftShader"],
  [/microsoft basic render|warp/i, "WARP"],
] as const;

/**
 * The software adapter's name, or null for a hardware one. wgpu marks
 * lavapipe `isFallbackAdapter`; the description names the others.
 */
export function softwareAdapterName(info: { description?: string; isFallbackAdapter?: boolean }): string | null {
  const d = info.description ?? "";
  for (const [re, name] of SOFTWARE) if (re.test(d)) return name;
  return info.isFallbackAdapter ? "a software adapter" : null;
}

/** One line naming the adapter, for logs: `llvmpipe (LLVM 15.0.6, 256 bits) [software: lavapipe]`. */
export function describeAdapter(a: AdapterSummary): string {
  const mib = (n: number) => `${Math.round(n / 2 ** 20)} MiB`;
  return `${a.name}${a.vendor ? ` (${a.vendor})` : ""}${a.software ? ` [software: ${a.software}]` : ""}; ` +
    `max buffer ${mib(a.limits.maxBufferSize)}, max storage binding ${mib(a.limits.maxStorageBufferBindingSize)}`;
}

/** The warning printed for a software adapter. */
export function softwareWarning(a: AdapterSummary): string | null {
  if (!a.software) return null;
  return `warning: WebGPU runs on ${a.software}, a software renderer on the CPU: results are exact, ` +
    `but this is a correctness run, not GPU speed (the wasm or onnxruntime backend is faster here)`;
}

/** Gives Mesa's Vulkan loader a private XDG_RUNTIME_DIR when the environment has none. */
export function ensureRuntimeDir(): void {
  const dir = Deno.env.get("XDG_RUNTIME_DIR");
  if (dir && fs.existsSync(dir) && fs.statSync(dir).isDirectory()) return;
  const own = path.join(os.tmpdir(), `ssd-workbench-xdg-${Deno.uid() ?? "user"}`);
  fs.mkdirSync(own, { recursive: true, mode: 0o700 });
  Deno.env.set("XDG_RUNTIME_DIR", own);
}

/** PCI (and Khronos) vendor ids that wgpu reports as decimal strings. */
const VENDORS: Record<number, string> = {
  0x10de: "NVIDIA",
  0x1002: "AMD",
  0x8086: "Intel",
  0x106b: "Apple",
  0x13b5: "Arm",
  0x5143: "Qualcomm",
  0x1414: "Microsoft",
  0x10005: "Mesa",
};

/** A vendor id as a name where it is a known one: "65541" -> "Mesa". */
export function vendorName(vendor: string): string {
  const id = /^\d+$/.test(vendor) ? Number(vendor) : /^0x[0-9a-f]+$/i.test(vendor) ? parseInt(vendor, 16) : NaN;
  return VENDORS[id] ?? vendor;
}

let adapter: AdapterSummary | undefined;

/**
 * Finds the WebGPU adapter tfjs will use (the high-performance one), or
 * throws {@linkcode WEBGPU_INSTALL_HINT}. Cached: the adapter is the process's.
 */
export async function findAdapter(): Promise<AdapterSummary> {
  if (adapter) return adapter;
  ensureRuntimeDir();
  const gpu = (navigator as { gpu?: GPU }).gpu;
  if (!gpu) throw new InputError(`this Deno has no navigator.gpu (WebGPU); Deno 2.x ships it.\n${WEBGPU_INSTALL_HINT}`);
  const a = await gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!a) throw new InputError(WEBGPU_INSTALL_HINT);
  const info = a.info as GPUAdapterInfo & { isFallbackAdapter?: boolean };
  const l = a.limits;
  adapter = {
    name: info.description || `device ${info.device || "?"}`,
    vendor: vendorName(info.vendor ?? ""),
    architecture: info.architecture ?? "",
    software: softwareAdapterName(info),
    limits: {
      maxBufferSize: l.maxBufferSize,
      maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
      maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
      maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension,
    },
  };
  return adapter;
}

/** The adapter found, once {@linkcode loadWebGpuBackend} has run. */
export function currentAdapter(): AdapterSummary | undefined {
  return adapter;
}

/**
 * Finds the adapter, then registers tfjs-backend-webgpu (imported only now:
 * it probes `navigator.gpu` as it loads) and, once, the dilated conv
 * gradients and the WGSL batch-norm kernels. Idempotent.
 */
export async function loadWebGpuBackend(): Promise<AdapterSummary> {
  const a = await findAdapter();
  if (!tf.findBackend("webgpu")) {
    // Imported late: loaded, it registers a backend that tfjs would otherwise pick first (priority 3).
    await import("@tensorflow/tfjs-backend-webgpu");
    // Its conv backprops ignore dilations (VGG16's fc6 has 6): ours serve those, composed from its kernels.
    registerGradKernels("webgpu", "dilated-only");
    // Batch norm as WGSL passes: 2.2-2.6x the composed ops on lavapipe (`deno task bench --only webgpu`).
    registerWebGpuBatchNorm();
  }
  return a;
}

/**
 * Buffers the webgpu backend holds: in use by tensors, and pooled for reuse.
 * Null on other backends.
 */
export function webgpuBufferCounts(): { inUse: number; pooled: number } | null {
  if (tf.getBackend() !== "webgpu") return null;
  const b = tf.backend() as unknown as {
    bufferManager?: { getNumUsedBuffers(): number; getNumFreeBuffers(): number };
  };
  if (!b.bufferManager) return null;
  return { inUse: b.bufferManager.getNumUsedBuffers(), pooled: b.bufferManager.getNumFreeBuffers() };
}
