/**
 * Replacing a backend's kernels while keeping the shipped ones: our kernels
 * fall back to them for inputs they do not serve, the composed gradients call
 * them, and benchmarks time them as baselines ({@linkcode withShippedKernel}).
 * A replacement is marked `composed`, so registering twice never records ours
 * as the shipped kernel.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs-core";
 * import "@tensorflow/tfjs-backend-cpu";
 * const shipped = tf.getKernel("Neg", "cpu")!;
 * replaceKernel("cpu", "Neg", (args) => shipped.kernelFunc(args));
 * if (baseKernel("cpu", "Neg") !== shipped) throw new Error("the shipped Neg is lost");
 * ```
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";

/** Kernels that existed before ours were registered, by "backend/kernel". */
const shipped = new Map<string, tf.KernelConfig>();

/**
 * Records the kernel registered now for `name` on `backendName` as the shipped
 * one, unless it is one of ours or one is recorded already; returns the recorded one.
 */
export function keepShipped(backendName: string, name: string): tf.KernelConfig | undefined {
  const key = `${backendName}/${name}`;
  const existing = tf.getKernel(name, backendName);
  if (existing && !shipped.has(key) && !(existing as { composed?: boolean }).composed) shipped.set(key, existing);
  return shipped.get(key);
}

/**
 * Registers `kernelFunc` as `name` on `backendName`, keeping the kernel it
 * replaces (the shipped one) for {@linkcode baseKernel}. Idempotent.
 */
export function replaceKernel(backendName: string, name: string, kernelFunc: tf.KernelFunc): void {
  const existing = tf.getKernel(name, backendName);
  if (existing?.kernelFunc === kernelFunc) return;
  const base = keepShipped(backendName, name);
  if (existing) tf.unregisterKernel(name, backendName);
  // The shipped kernel's setup (binding its wasm functions) still runs when the backend starts, so that
  // ours can fall back to it.
  tf.registerKernel(
    { kernelName: name, backendName, kernelFunc, setupFunc: base?.setupFunc, composed: true } as tf.KernelConfig,
  );
}

/** The kernel that was registered before ours (the shipped one), if any. */
export function baseKernel(backendName: string, name: string): tf.KernelConfig | undefined {
  return shipped.get(`${backendName}/${name}`);
}

/**
 * Runs `fn` with the backend's shipped kernel for `name` (the one that was
 * registered before ours), then restores ours. Benchmarks use it for baselines.
 */
export async function withShippedKernel<T>(backendName: string, name: string, fn: () => Promise<T>): Promise<T> {
  const base = baseKernel(backendName, name);
  const ours = tf.getKernel(name, backendName);
  if (!base || !ours) throw new Error(`no shipped ${name} kernel for ${backendName}`);
  tf.unregisterKernel(name, backendName);
  tf.registerKernel(base);
  // Kernels registered before their backend initialised never ran their setup.
  base.setupFunc?.(tf.findBackend(backendName)!);
  try {
    return await fn();
  } finally {
    tf.unregisterKernel(name, backendName);
    tf.registerKernel(ours);
  }
}
