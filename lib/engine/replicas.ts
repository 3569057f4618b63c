/**
 * Data-parallel training on one machine: the wasm backend runs on one thread,
 * so the trainer splits each batch and hands parts to gradient workers
 * (lib/engine/grad_worker.ts), one per extra core. Each part's loss is normalised by
 * the whole batch's matched count, so the summed gradients are those of the
 * whole batch's loss with batch norm computed per part (each part normalised by
 * its own statistics, as multi-GPU training without SyncBatchNorm): equal to
 * one process on the whole batch where no batch norm is involved.
 *
 * @module
 */
import type { GradInputs } from "./grad_step.ts";
import type { SsdConfig } from "../ssd_config.ts";

/** A part's gradients as the worker returns them. */
export interface RemoteGrads {
  grads: Record<string, Float32Array>;
  loss: number;
  loc: number;
  cls: number;
}

/** A gradient worker. */
export class GradReplica {
  #worker: Worker;
  #pending: { resolve: (v: RemoteGrads) => void; reject: (e: Error) => void } | null = null;

  private constructor(worker: Worker) {
    this.#worker = worker;
    worker.onmessage = (e: MessageEvent) => {
      const p = this.#pending;
      this.#pending = null;
      if (!p) return;
      if (e.data.type === "error") p.reject(new Error(`gradient worker: ${e.data.message}`));
      else p.resolve(e.data as RemoteGrads);
    };
    worker.onerror = (e) => {
      e.preventDefault();
      this.#pending?.reject(new Error(`gradient worker crashed: ${e.message}`));
      this.#pending = null;
    };
  }

  /** Starts a worker holding the network of `cfg`, its kernels on `threads` threads. */
  static async start(cfg: SsdConfig, threads: number): Promise<GradReplica> {
    const worker = new Worker(new URL("./grad_worker.ts", import.meta.url).href, { type: "module" });
    const ready = new Promise<void>((resolve, reject) => {
      worker.onmessage = (e) => e.data.type === "ready" ? resolve() : reject(new Error(e.data.message));
      worker.onerror = (e) => {
        e.preventDefault();
        reject(new Error(`gradient worker failed to start: ${e.message}`));
      };
    });
    worker.postMessage({ type: "init", cfg, threads });
    await ready;
    return new GradReplica(worker);
  }

  /** Sends a part; resolves with its gradients. */
  compute(
    values: Record<string, Float32Array>,
    part: GradInputs,
    normalizer: number,
    dropout?: { seed: number; offset: number },
  ): Promise<RemoteGrads> {
    if (this.#pending) throw new Error("gradient worker is busy");
    const p = new Promise<RemoteGrads>((resolve, reject) => (this.#pending = { resolve, reject }));
    this.#worker.postMessage({ type: "step", values, part, normalizer, dropout });
    return p;
  }

  close(): void {
    this.#worker.terminate();
  }
}

/** Splits a batch into `n` contiguous parts (the first parts one larger when uneven). */
export function splitBatch(b: GradInputs, n: number, inputSize: number, numAnchors: number): GradInputs[] {
  const parts: GradInputs[] = [];
  const img = inputSize * inputSize * 3;
  let start = 0;
  for (let k = 0; k < n; k++) {
    const size = Math.floor(b.size / n) + (k < b.size % n ? 1 : 0);
    if (size === 0) continue;
    parts.push({
      images: b.images.subarray(start * img, (start + size) * img),
      loc: b.loc.subarray(start * numAnchors * 4, (start + size) * numAnchors * 4),
      labels: b.labels.subarray(start * numAnchors, (start + size) * numAnchors),
      size,
    });
    start += size;
  }
  return parts;
}
