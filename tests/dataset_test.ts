import assert from "node:assert";
import * as fs from "node:fs";
import * as path from "node:path";
import { imageBytes } from "../lib/augment.ts";
import { COCO_TRAIN_CLS } from "../lib/class_maps.ts";
import { loadSplit } from "../lib/dataset.ts";
import { InputError } from "../lib/errors.ts";
import { readDetectionRecords } from "../lib/mindrecord_ssd.ts";
import type { DataConfig, SplitConfig } from "../lib/ssd_config.ts";

const MR = "mindrecord/ssd_coco.mindrecord0"; // tests/fixtures/coco converted, 2 shards (see its SOURCES.md)
const COCO = [...COCO_TRAIN_CLS];

function data(split: Partial<SplitConfig>, root = "tests/fixtures"): DataConfig {
  const s: SplitConfig = { format: "coco", path: null, images: null, annotations: null, limit: null, ...split };
  return { root, train: s, val: s, policy: "error" };
}

Deno.test("a MindRecord split is indexed: images stay on disk and read back byte for byte", async () => {
  const eager = readDetectionRecords(`tests/fixtures/${MR}`);
  const s = loadSplit(data({ format: "mindrecord", path: MR }), "train", { classNames: COCO });
  assert.strictEqual(s.records.length, 3);
  for (const [i, r] of s.records.entries()) {
    assert.strictEqual(r.image, undefined);
    assert.ok(r.imageAt && r.imageAt.length > 0);
    assert.deepStrictEqual(await imageBytes(r), eager[i].image);
    assert.deepStrictEqual([r.imgId, r.width, r.height, [...r.labels]], [
      eager[i].imgId,
      eager[i].width,
      eager[i].height,
      [...eager[i].labels],
    ]);
  }
  assert.deepStrictEqual(s.classNames, COCO);
});

Deno.test("a MindRecord val split is scored against its annotations json, matched by image id", () => {
  const s = loadSplit(
    data({ format: "mindrecord", path: MR, annotations: "coco/instances.json", limit: 2 }),
    "val",
    { classNames: COCO },
  );
  const gt = s.groundTruth();
  // Only the evaluated images, with the json's own category ids (person 1, car 3, toothbrush 90).
  assert.deepStrictEqual(gt.images.map((im) => im.id).sort(), s.records.map((r) => r.imgId).sort());
  assert.ok(gt.annotations.every((a) => s.records.some((r) => r.imgId === a.image_id)));
  assert.deepStrictEqual(gt.categories.map((c) => c.id), [1, 3, 90]);
});

Deno.test("relative paths resolve against data.root; a missing file names the key and the resolved path", () => {
  assert.throws(
    () => loadSplit(data({ format: "mindrecord", path: MR }, "/nowhere"), "train"),
    (e: unknown) =>
      e instanceof InputError && e.message.includes("/nowhere/mindrecord/ssd_coco.mindrecord0") &&
      /data\.train\.path/.test(e.message),
  );
  const abs = path.resolve("tests/fixtures", MR);
  assert.strictEqual(loadSplit(data({ format: "mindrecord", path: abs }, "/nowhere"), "train").records.length, 3);
});

Deno.test("MindRecord labels without a name, and eval images missing from the json, are errors naming them", () => {
  assert.throws(
    () => loadSplit(data({ format: "mindrecord", path: MR }), "train", { classNames: ["background", "person"] }),
    (e: unknown) => e instanceof InputError && /label 80 has no name/.test(e.message) && /img_id \d+/.test(e.message),
  );
  const dir = Deno.makeTempDirSync();
  const json = JSON.parse(fs.readFileSync("tests/fixtures/coco/instances.json", "utf8"));
  json.images = json.images.slice(1);
  fs.writeFileSync(`${dir}/partial.json`, JSON.stringify(json));
  const s = loadSplit(
    data({ format: "mindrecord", path: path.resolve("tests/fixtures", MR), annotations: `${dir}/partial.json` }),
    "val",
    { classNames: COCO },
  );
  assert.throws(() => s.groundTruth(), /not in the annotations json, e\.g\. img_id 1\b/);
});

Deno.test("VOC and TXT splits load with the config's class names", () => {
  const voc = loadSplit(data({ format: "voc", path: "voc/VOC2007" }), "train");
  assert.strictEqual(voc.records.length, 2);
  assert.strictEqual(voc.classNames![0], "background");
  const txt = loadSplit(data({ format: "txt", path: "txt/anno.txt" }), "train", { classNames: COCO });
  assert.deepStrictEqual(txt.records.map((r) => [...r.labels]), [[1, 3], [7]]);
  // Ground truth comes from the records, named by the class list.
  assert.strictEqual(txt.groundTruth().categories.find((c) => c.id === 7)?.name, "train");
});

Deno.test("a truncated MindRecord shard is an error naming the file, at indexing or at the image read", async () => {
  const dir = Deno.makeTempDirSync();
  for (const f of fs.readdirSync("tests/fixtures/mindrecord").filter((f) => f.startsWith("ssd_coco"))) {
    fs.copyFileSync(`tests/fixtures/mindrecord/${f}`, `${dir}/${f}`);
  }
  const file = `${dir}/ssd_coco.mindrecord0`;
  const s = loadSplit(data({ format: "mindrecord", path: file }, "/"), "train", { classNames: COCO });
  // Cut the file inside the last image: the index was built, the image read fails and names the file.
  const last = s.records.filter((r) => r.imageAt!.file === file).at(-1)!;
  fs.truncateSync(file, last.imageAt!.offset + 10);
  await assert.rejects(
    () => imageBytes(last),
    (e: unknown) => e instanceof InputError && e.message.includes(file) && /image id/.test(e.message),
  );
  assert.throws(
    () => loadSplit(data({ format: "mindrecord", path: file }, "/"), "train", { classNames: COCO }),
    (e: unknown) => e instanceof InputError && e.message.includes(file),
  );
});
