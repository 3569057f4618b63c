/**
 * The training loader: seeded shuffling, sharding, decoding and augmentation
 * through a function it is given, matching, and batching, with batches
 * prepared ahead of the model. Decoding runs in sharp's threads, so it
 * overlaps the (synchronous) training step.
 *
 * @module
 */
import type { Sample } from "./augment.ts";
import type { DetectionRecord } from "./detection_record.ts";
import { createRng, type Rng, shuffled } from "./rng.ts";

/** A batch ready for the network. */
export interface Batch {
  /** [B, S, S, 3] normalised images. */
  images: Float32Array;
  /** [B, A, 4] encoded regression targets. */
  loc: Float32Array;
  /** [B, A] labels, 0 background. */
  labels: Int32Array;
  /** Matched default boxes in the whole batch. */
  numMatch: number;
  /** Images in the batch. */
  size: number;
  /** Image ids, in batch order. */
  imgIds: number[];
  /** Position of this batch in its epoch. */
  index: number;
  /** Images in the global batch this one is a share of (equals `size` in one process). */
  globalSize: number;
  /** Position of this share's first image in the global batch (0 in one process). */
  offset: number;
}

/** Options of {@linkcode batches}. */
export interface LoaderOptions {
  batchSize: number;
  /** Input side S. */
  inputSize: number;
  /** Default boxes A. */
  numAnchors: number;
  seed: number;
  shuffle?: boolean;
  /** Split the data across `numShards` processes; this one takes `shardId` (MindSpore's distributed sampler). */
  numShards?: number;
  shardId?: number;
  /** Drop the last incomplete batch (tutorial: drop_remainder=True). */
  dropRemainder?: boolean;
  /** Batches prepared ahead (default 2). */
  prefetch?: number;
  /**
   * Data-parallel ranks: `batchSize` is the global batch, and this process
   * loads only the images `share(size)` picks out of each (see `data_parallel.ts`).
   */
  share?: (size: number) => { start: number; end: number };
}

/** Turns a record into a sample (augmentation), with a generator private to that sample. */
export type Transform = (record: DetectionRecord, rng: Rng) => Promise<Sample>;
/** Turns a sample's boxes into targets (matching and encoding). */
export type Encode = (sample: Sample) => { loc: Float32Array; labels: Int32Array; numMatch: number };

function mix(...xs: number[]): number {
  let h = 0x811c9dc5;
  for (const x of xs) {
    h = Math.imul(h ^ (x >>> 0), 0x01000193) >>> 0;
    h = Math.imul(h ^ (h >>> 15), 0x2c1b3c6d) >>> 0;
  }
  return h >>> 0;
}

/**
 * The record indices this shard visits in `epoch`, in order: a seeded shuffle
 * of all records (the same on every shard), then every `numShards`-th.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const a = epochOrder(10, 0, { seed: 1, numShards: 2, shardId: 0 });
 * const b = epochOrder(10, 0, { seed: 1, numShards: 2, shardId: 1 });
 * assertEquals([...a, ...b].sort((x, y) => x - y), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
 * ```
 */
export function epochOrder(
  count: number,
  epoch: number,
  o: { seed: number; shuffle?: boolean; numShards?: number; shardId?: number },
): number[] {
  const all = Array.from({ length: count }, (_, i) => i);
  const order = o.shuffle === false ? all : shuffled(all, createRng(mix(o.seed, epoch, 0x5eed)));
  const n = o.numShards ?? 1, k = o.shardId ?? 0;
  return n === 1 ? order : order.filter((_, i) => i % n === k);
}

/** Number of batches per epoch for this shard. */
export function batchesPerEpoch(count: number, o: LoaderOptions): number {
  const mine = Math.floor(count / (o.numShards ?? 1)) + ((o.shardId ?? 0) < count % (o.numShards ?? 1) ? 1 : 0);
  return o.dropRemainder === false ? Math.ceil(mine / o.batchSize) : Math.floor(mine / o.batchSize);
}

/**
 * Yields the batches of one epoch, starting at batch `startBatch` (for an
 * exact resume). Each sample's augmentation draws from a generator seeded by
 * (seed, epoch, record), so the result does not depend on timing.
 */
export async function* batches(
  records: DetectionRecord[],
  transform: Transform,
  encode: Encode,
  epoch: number,
  o: LoaderOptions,
  startBatch = 0,
): AsyncGenerator<Batch> {
  const order = epochOrder(records.length, epoch, o);
  const nb = batchesPerEpoch(records.length, o);
  const s = o.inputSize, a = o.numAnchors;
  const make = async (b: number): Promise<Batch> => {
    const global = order.slice(b * o.batchSize, (b + 1) * o.batchSize);
    const { start, end } = o.share?.(global.length) ?? { start: 0, end: global.length };
    const idx = global.slice(start, end);
    const samples = await Promise.all(idx.map((i) => transform(records[i], createRng(mix(o.seed, epoch, i, 0xa06)))));
    const batch: Batch = {
      images: new Float32Array(idx.length * s * s * 3),
      loc: new Float32Array(idx.length * a * 4),
      labels: new Int32Array(idx.length * a),
      numMatch: 0,
      size: idx.length,
      imgIds: idx.map((i) => records[i].imgId),
      index: b,
      globalSize: global.length,
      offset: start,
    };
    samples.forEach((sample, k) => {
      batch.images.set(sample.image, k * s * s * 3);
      const t = encode(sample);
      batch.loc.set(t.loc, k * a * 4);
      batch.labels.set(t.labels, k * a);
      batch.numMatch += t.numMatch;
    });
    return batch;
  };
  const ahead = Math.max(1, o.prefetch ?? 2);
  const pending: Promise<Batch>[] = [];
  let next = startBatch;
  // A batch that fails while waiting its turn must not become an unhandled rejection;
  // its error surfaces when the loop awaits it.
  const start = (b: number) => {
    const p = make(b);
    p.catch(() => {});
    pending.push(p);
  };
  while (next < nb && pending.length < ahead) start(next++);
  while (pending.length > 0) {
    const batch = await pending.shift()!;
    if (next < nb) start(next++);
    yield batch;
  }
}

/** One batch of {@linkcode preparedBatches}. */
export interface PreparedBatch<T, P> {
  /** Index of the batch's first item. */
  start: number;
  items: T[];
  prepared: P;
}

/**
 * Consecutive slices of `items`, `batchSize` at a time, in order, each with
 * what `prepare` made of it; the next batch is prepared while the caller works
 * on the current one (decode images while the model runs). A failed `prepare`
 * surfaces when its batch is reached, and a caller that stops early leaves no
 * unhandled rejection behind. Eval and inference use it; training has its own
 * shuffled loader ({@linkcode batches}).
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const seen: number[][] = [];
 * for await (const b of preparedBatches([1, 2, 3, 4, 5], 2, async (xs) => xs.map((x) => 10 * x))) {
 *   seen.push([b.start, ...b.prepared]);
 * }
 * assertEquals(seen, [[0, 10, 20], [2, 30, 40], [4, 50]]);
 * ```
 */
export async function* preparedBatches<T, P>(
  items: readonly T[],
  batchSize: number,
  prepare: (batch: T[], start: number) => Promise<P>,
): AsyncGenerator<PreparedBatch<T, P>> {
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new RangeError(`Expected batchSize to be an integer greater than 0 but found ${batchSize}`);
  }
  const begin = (from: number) => {
    const p = prepare(items.slice(from, from + batchSize), from);
    p.catch(() => {}); // surfaces when awaited; must not count as unhandled meanwhile
    return p;
  };
  let pending = items.length > 0 ? begin(0) : null;
  for (let b = 0; b < items.length; b += batchSize) {
    const prepared = await pending!;
    pending = b + batchSize < items.length ? begin(b + batchSize) : null;
    yield { start: b, items: items.slice(b, b + batchSize), prepared };
  }
}
