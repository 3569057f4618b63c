/**
 * The workbench's checkpoint format, one self-describing file:
 *
 * ```
 * offset 0   8 bytes   magic "SSDWBCK1"
 * offset 8   u32 LE    header length L
 * offset 12  L bytes   header, UTF-8 JSON: format version, the full run config, class names,
 *                      epoch / step counters, metrics, and a table of tensors
 *                      { name, group ("param" | "momentum"), shape, offset, length }
 * then                 zero padding to a multiple of 8
 * then                 the tensors' float32 little-endian values at their offsets (from the data start)
 * ```
 *
 * Files are written to a temporary name and renamed, so a crash leaves the
 * previous checkpoint intact.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import * as fs from "node:fs";
import { InputError } from "./errors.ts";
import { writeFileAtomic } from "./fs_atomic.ts";
import type { ParamMap } from "./graph.ts";

const MAGIC = "SSDWBCK1";
/** Version of the header layout. */
export const CHECKPOINT_VERSION = 1;

/** One stored tensor. */
export interface StoredTensor {
  name: string;
  group: "param" | "momentum";
  shape: number[];
  /** Byte offset from the start of the data section. */
  offset: number;
  /** Number of float32 values. */
  length: number;
}

/** The checkpoint header. */
export interface CheckpointHeader {
  format: "ssd-workbench checkpoint";
  version: number;
  created: string;
  /** The validated run config the weights belong to. */
  config: Record<string, unknown>;
  /** Class names, background first. */
  class_names: string[];
  /** Epochs completed. */
  epoch: number;
  /** Batches completed within the next epoch (non-zero only for an interrupted run). */
  step_in_epoch: number;
  /** Optimiser steps completed. */
  global_step: number;
  /** Loss, mAP ... at save time. */
  metrics: Record<string, number>;
  tensors: StoredTensor[];
}

/** A checkpoint read into memory. */
export interface Checkpoint {
  header: CheckpointHeader;
  tensors: Map<string, { group: StoredTensor["group"]; shape: number[]; data: Float32Array }>;
}

/** Parameter values in the workbench's layout, by name: what a checkpoint holds, away from any backend. */
export type ParamValues = Map<string, { shape: number[]; data: Float32Array }>;

/** A tensor as {@linkcode encodeCheckpoint} reads it: a tfjs tensor, or plain values ({@linkcode valuesAsTensors}). */
export interface TensorSource {
  shape: number[];
  size: number;
  data(): Promise<unknown>;
}

/** Plain values as {@linkcode TensorSource}s, to save them without a backend. */
export function valuesAsTensors(values: ParamValues): Map<string, TensorSource> {
  return new Map(
    [...values].map((
      [name, v],
    ) => [name, { shape: v.shape, size: v.data.length, data: () => Promise.resolve(v.data) }]),
  );
}

/** What {@linkcode saveCheckpoint} stores. */
export interface SaveOptions {
  params: ParamMap | Map<string, TensorSource>;
  momentum?: Map<string, tf.Variable> | Map<string, TensorSource>;
  config: Record<string, unknown>;
  classNames: string[];
  epoch: number;
  stepInEpoch?: number;
  globalStep: number;
  metrics?: Record<string, number>;
}

/** Serialises a checkpoint to bytes. Tensor values are read asynchronously (fast on wasm). */
export async function encodeCheckpoint(o: SaveOptions): Promise<Uint8Array> {
  const entries: { name: string; group: StoredTensor["group"]; t: TensorSource }[] = [];
  for (const [name, t] of o.params) entries.push({ name, group: "param", t });
  for (const [name, t] of o.momentum ?? []) entries.push({ name, group: "momentum", t });
  const tensors: StoredTensor[] = [];
  let offset = 0;
  for (const e of entries) {
    tensors.push({ name: e.name, group: e.group, shape: e.t.shape, offset, length: e.t.size });
    offset += e.t.size * 4;
  }
  const header: CheckpointHeader = {
    format: "ssd-workbench checkpoint",
    version: CHECKPOINT_VERSION,
    created: new Date().toISOString(),
    config: o.config,
    class_names: o.classNames,
    epoch: o.epoch,
    step_in_epoch: o.stepInEpoch ?? 0,
    global_step: o.globalStep,
    metrics: o.metrics ?? {},
    tensors,
  };
  const json = new TextEncoder().encode(JSON.stringify(header));
  const dataStart = Math.ceil((12 + json.length) / 8) * 8;
  const out = new Uint8Array(dataStart + offset);
  out.set(new TextEncoder().encode(MAGIC), 0);
  new DataView(out.buffer).setUint32(8, json.length, true);
  out.set(json, 12);
  for (let i = 0; i < entries.length; i++) {
    const values = await entries[i].t.data() as Float32Array;
    out.set(new Uint8Array(values.buffer, values.byteOffset, values.byteLength), dataStart + tensors[i].offset);
  }
  return out;
}

/** Writes a checkpoint atomically. */
export async function saveCheckpoint(file: string, o: SaveOptions): Promise<void> {
  await writeFileAtomic(file, await encodeCheckpoint(o));
}

/** Parses checkpoint bytes; every inconsistency is an {@linkcode InputError} naming `file`. */
export function decodeCheckpoint(bytes: Uint8Array, file: string): Checkpoint {
  const fail = (msg: string): never => {
    throw new InputError(msg, { file });
  };
  if (bytes.length < 12 || new TextDecoder().decode(bytes.subarray(0, 8)) !== MAGIC) {
    fail("not a workbench checkpoint (bad magic)");
  }
  const len = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(8, true);
  if (12 + len > bytes.length) fail(`truncated: header needs ${12 + len} bytes, file has ${bytes.length}`);
  let header: CheckpointHeader;
  try {
    header = JSON.parse(new TextDecoder().decode(bytes.subarray(12, 12 + len)));
  } catch (e) {
    return fail(`corrupt header: ${(e as Error).message}`);
  }
  if (header.format !== "ssd-workbench checkpoint" || !Array.isArray(header.tensors)) fail("corrupt header");
  if (header.version > CHECKPOINT_VERSION) fail(`version ${header.version} is newer than this workbench reads`);
  const dataStart = Math.ceil((12 + len) / 8) * 8;
  const tensors: Checkpoint["tensors"] = new Map();
  for (const t of header.tensors) {
    const end = dataStart + t.offset + t.length * 4;
    if (end > bytes.length) fail(`truncated: tensor ${t.name} ends at byte ${end}, file has ${bytes.length}`);
    if (t.shape.reduce((a, b) => a * b, 1) !== t.length) fail(`tensor ${t.name}: shape and length disagree`);
    const data = new Float32Array(t.length);
    new Uint8Array(data.buffer).set(bytes.subarray(dataStart + t.offset, end));
    tensors.set(`${t.group}:${t.name}`, { group: t.group, shape: t.shape, data });
  }
  return { header, tensors };
}

/** Reads a checkpoint file. */
export function readCheckpoint(file: string): Checkpoint {
  let bytes: Uint8Array;
  try {
    bytes = fs.readFileSync(file);
  } catch (e) {
    throw new InputError(`cannot read checkpoint: ${(e as Error).message}`, { file });
  }
  return decodeCheckpoint(bytes, file);
}

/**
 * Copies stored parameters into `params` by name. Names in `skip` (or failing
 * `keep`) are left as they are; a missing or mis-shaped parameter is an error
 * unless `allowMissing`. Returns the names loaded and skipped.
 */
export function loadParams(
  params: ParamMap,
  ckpt: Checkpoint,
  o: { keep?: (name: string) => boolean; allowMissing?: boolean; file?: string } = {},
): { loaded: string[]; skipped: string[] } {
  const loaded: string[] = [], skipped: string[] = [];
  for (const [name, v] of params) {
    const stored = ckpt.tensors.get(`param:${name}`);
    if (o.keep && !o.keep(name)) {
      skipped.push(name);
      continue;
    }
    if (!stored) {
      if (o.allowMissing) {
        skipped.push(name);
        continue;
      }
      throw new InputError(`checkpoint has no parameter ${name}`, { file: o.file });
    }
    if (stored.shape.join() !== v.shape.join()) {
      throw new InputError(`parameter ${name} has shape [${stored.shape}] but the model needs [${v.shape}]`, {
        file: o.file,
      });
    }
    const t = tf.tensor(stored.data, v.shape);
    v.assign(t);
    t.dispose();
    loaded.push(name);
  }
  return { loaded, skipped };
}

/** Restores momentum buffers saved with the parameters. */
export function loadMomentum(state: Map<string, tf.Variable>, ckpt: Checkpoint): void {
  for (const [name, v] of state) {
    const stored = ckpt.tensors.get(`momentum:${name}`);
    if (!stored || stored.shape.join() !== v.shape.join()) continue;
    const t = tf.tensor(stored.data, v.shape);
    v.assign(t);
    t.dispose();
  }
}
