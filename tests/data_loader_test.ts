import assert from "node:assert";
import { batches, batchesPerEpoch, epochOrder } from "../lib/data_loader.ts";
import type { DetectionRecord } from "../lib/detection_record.ts";

const records: DetectionRecord[] = Array.from({ length: 10 }, (_, i) => ({
  imgId: i + 1,
  file: `${i}.jpg`,
  width: 4,
  height: 4,
  boxes: new Float64Array(0),
  labels: new Int32Array(0),
  iscrowd: new Uint8Array(0),
}));

Deno.test("epochOrder() is a seeded permutation that changes per epoch and splits across shards", () => {
  const a = epochOrder(10, 0, { seed: 3 }), b = epochOrder(10, 0, { seed: 3 }), c = epochOrder(10, 1, { seed: 3 });
  assert.deepStrictEqual(a, b);
  assert.notDeepStrictEqual(a, c);
  assert.deepStrictEqual([...a].sort((x, y) => x - y), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  const s0 = epochOrder(10, 0, { seed: 3, numShards: 3, shardId: 0 });
  const s1 = epochOrder(10, 0, { seed: 3, numShards: 3, shardId: 1 });
  const s2 = epochOrder(10, 0, { seed: 3, numShards: 3, shardId: 2 });
  assert.deepStrictEqual([s0.length, s1.length, s2.length], [4, 3, 3]);
  assert.deepStrictEqual([...s0, ...s1, ...s2].sort((x, y) => x - y), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
});

Deno.test("batches() batches in order, drops the remainder and resumes at a batch", async () => {
  const o = { batchSize: 3, inputSize: 1, numAnchors: 2, seed: 5, prefetch: 2 };
  // The transform tags each image with its record id, so the batch contents can be checked.
  const transform = (r: DetectionRecord) =>
    Promise.resolve({
      image: new Float32Array(3).fill(r.imgId),
      boxes: new Float32Array(0),
      labels: new Int32Array(0),
      width: 4,
      height: 4,
    });
  const encode = () => ({ loc: new Float32Array(8), labels: new Int32Array([1, 0]), numMatch: 1 });
  const all = [];
  for await (const b of batches(records, transform, encode, 0, o)) all.push(b);
  assert.strictEqual(all.length, batchesPerEpoch(10, o));
  assert.strictEqual(all.length, 3);
  const order = epochOrder(10, 0, o);
  all.forEach((b, k) => {
    assert.deepStrictEqual(b.imgIds, order.slice(3 * k, 3 * k + 3).map((i) => i + 1));
    assert.deepStrictEqual(Array.from(b.images.filter((_, i) => i % 3 === 0)), b.imgIds);
    assert.strictEqual(b.numMatch, 3);
  });
  const resumed = [];
  for await (const b of batches(records, transform, encode, 0, o, 2)) resumed.push(b.imgIds);
  assert.deepStrictEqual(resumed, [all[2].imgIds]);
});

Deno.test("batches() surfaces a failing sample as an error, not a crash", async () => {
  const transform = (r: DetectionRecord) =>
    r.imgId === 4 ? Promise.reject(new Error("bad image 4")) : Promise.resolve({
      image: new Float32Array(3),
      boxes: new Float32Array(0),
      labels: new Int32Array(0),
      width: 4,
      height: 4,
    });
  const encode = () => ({ loc: new Float32Array(4), labels: new Int32Array(1), numMatch: 0 });
  await assert.rejects(async () => {
    for await (
      const _ of batches(records, transform, encode, 0, { batchSize: 2, inputSize: 1, numAnchors: 1, seed: 1 })
    ) {
      // consume
    }
  }, /bad image 4/);
});
