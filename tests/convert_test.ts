// The convert stage end to end: COCO/VOC/TXT/MindRecord in, MindRecord/COCO out.
import { deepStrictEqual as assertEquals, ok as assert, rejects } from "node:assert";
import * as fs from "node:fs";
import * as path from "node:path";
import { InputError } from "../lib/errors.ts";
import { convert } from "../lib/convert.ts";
import { guessCocoImages } from "../lib/coco_reader.ts";
import { readHeader } from "../lib/mindrecord_header.ts";
import { openMindRecord } from "../lib/mindrecord_reader.ts";
import { readDetectionRecords } from "../lib/mindrecord_ssd.ts";
import { pyRound } from "../lib/py_round.ts";

const COCO = "tests/fixtures/coco/instances.json";
const IMAGES = "tests/fixtures/coco/images";
const listFiles = (dir: string): string[] =>
  fs.readdirSync(dir, { recursive: true }).map(String).filter((f) => fs.statSync(path.join(dir, f)).isFile()).sort();

Deno.test("COCO -> MindRecord (SSD schema, 8 shards) -> COCO keeps image bytes, boxes up to rounding and labels", async () => {
  const dir = Deno.makeTempDirSync();
  const r = await convert({
    from: "coco",
    to: "mindrecord",
    input: COCO,
    images: IMAGES,
    out: `${dir}/mr`,
    quiet: true,
  });
  assertEquals(r.files.map((f) => path.basename(f)), [0, 1, 2, 3, 4, 5, 6, 7].map((i) => `ssd.mindrecord${i}`));
  const h = readHeader(`${dir}/mr/ssd.mindrecord0`);
  assertEquals([h.schemas[0].desc, h.indexFields, h.shardAddresses.length], ["ssd_json", null, 8]);
  await convert({
    from: "mindrecord",
    to: "coco",
    input: `${dir}/mr/ssd.mindrecord0`,
    out: `${dir}/back`,
    quiet: true,
  });
  const src = JSON.parse(fs.readFileSync(COCO, "utf8"));
  const back = JSON.parse(fs.readFileSync(`${dir}/back/annotations/instances.json`, "utf8"));
  for (const im of src.images) {
    const b = back.images.find((x: { id: number }) => x.id === im.id);
    assertEquals(fs.readFileSync(`${dir}/back/images/${b.file_name}`), fs.readFileSync(`${IMAGES}/${im.file_name}`));
    const want = src.annotations.filter((a: { image_id: number }) => a.image_id === im.id);
    const got = back.annotations.filter((a: { image_id: number }) => a.image_id === im.id);
    assertEquals(
      got.map((a: { category_id: number }) => a.category_id),
      want.map((a: { category_id: number }) => a.category_id),
    );
    want.forEach((a: { bbox: number[] }, i: number) => {
      const [x, y, w, h] = a.bbox;
      const corners = [x, y, x + w, y + h].map(pyRound);
      assertEquals(got[i].bbox, [corners[0], corners[1], corners[2] - corners[0], corners[3] - corners[1]]);
    });
  }
});

Deno.test("COCO -> MindRecord (full schema) -> COCO is exact", async () => {
  const dir = Deno.makeTempDirSync();
  await convert({
    from: "coco",
    to: "mindrecord",
    input: COCO,
    images: IMAGES,
    out: `${dir}/mr`,
    schema: "full",
    shards: 2,
    quiet: true,
  });
  await convert({
    from: "mindrecord",
    to: "coco",
    input: `${dir}/mr/ssd.mindrecord0`,
    out: `${dir}/back`,
    quiet: true,
  });
  assertEquals(
    JSON.parse(fs.readFileSync(`${dir}/back/annotations/instances.json`, "utf8")),
    JSON.parse(fs.readFileSync(COCO, "utf8")),
  );
  for (const f of fs.readdirSync(IMAGES)) {
    assertEquals(fs.readFileSync(`${dir}/back/images/${f}`), fs.readFileSync(`${IMAGES}/${f}`));
  }
});

Deno.test("re-running convert gives identical files, and a failed run leaves earlier output untouched", async () => {
  const dir = Deno.makeTempDirSync();
  const opts = {
    from: "coco" as const,
    to: "coco" as const,
    input: COCO,
    images: IMAGES,
    out: `${dir}/o`,
    quiet: true,
  };
  await convert(opts);
  const first = listFiles(`${dir}/o`).map((f) => fs.readFileSync(path.join(dir, "o", f)));
  await convert(opts);
  assertEquals(listFiles(`${dir}/o`).map((f) => fs.readFileSync(path.join(dir, "o", f))), first);
  // A run that fails half way (an image is missing) changes nothing and leaves no temporary file.
  fs.cpSync(IMAGES, `${dir}/imgs`, { recursive: true });
  fs.rmSync(`${dir}/imgs/000042.jpg`);
  const j = JSON.parse(fs.readFileSync(COCO, "utf8"));
  j.images[0].width = 64; // would change the json if it were written
  fs.writeFileSync(`${dir}/c.json`, JSON.stringify(j));
  for (const to of ["coco", "mindrecord"] as const) {
    await rejects(
      convert({ ...opts, to, input: `${dir}/c.json`, images: `${dir}/imgs` }),
      (e: unknown) => e instanceof InputError && /000042\.jpg is missing/.test(e.message),
    );
  }
  assertEquals(listFiles(`${dir}/o`), [
    "annotations/instances.json",
    "images/000001.jpg",
    "images/000002.jpg",
    "images/000042.jpg",
  ]);
  assertEquals(listFiles(`${dir}/o`).map((f) => fs.readFileSync(path.join(dir, "o", f))), first);
});

Deno.test("VOC and TXT convert to SSD MindRecord y first, and readDetectionRecords() reads them back", async () => {
  const dir = Deno.makeTempDirSync();
  await convert({
    from: "voc",
    to: "mindrecord",
    input: "tests/fixtures/voc/VOC2007",
    out: `${dir}/voc`,
    shards: 1,
    quiet: true,
  });
  const set = openMindRecord(`${dir}/voc/ssd.mindrecord`);
  const ann = [...set.rows()][0].annotation as { data: Int32Array };
  assertEquals([...ann.data], [4, 2, 29, 19, 9, 1, 20, 39, 49, 15]); // [ymin, xmin, ymax, xmax, cls], VOC's -1 applied
  const recs = readDetectionRecords(`${dir}/voc/ssd.mindrecord`);
  assertEquals([recs[0].imgId, recs[0].width, recs[0].height, [...recs[0].boxes]], [5, 50, 40, [
    2,
    4,
    19,
    29,
    20,
    1,
    49,
    39,
  ]]);
  await convert({
    from: "txt",
    to: "mindrecord",
    input: "tests/fixtures/txt/anno.txt",
    out: `${dir}/txt`,
    shards: 2,
    quiet: true,
  });
  const t = readDetectionRecords(`${dir}/txt/ssd.mindrecord0`);
  assertEquals(t.map((r) => [r.imgId, [...r.boxes], [...r.labels]]), [[0, [1, 2, 20, 15, 3, 4, 10, 12], [1, 3]], [1, [
    0,
    0,
    40,
    30,
  ], [7]]]);
});

Deno.test("readDetectionRecords() reads a COCO json with its images, records carrying image bytes", () => {
  const recs = readDetectionRecords(COCO, { images: IMAGES });
  assertEquals(recs.map((r) => [r.imgId, r.image!.length]), [[1, 275], [2, 277], [42, 270]]);
});

Deno.test("a MindRecord set in any other schema is re-sharded as is", async () => {
  const dir = Deno.makeTempDirSync();
  await convert({
    from: "mindrecord",
    to: "mindrecord",
    input: "tests/fixtures/mindrecord/testdata",
    out: dir,
    shards: 3,
    prefix: "td",
    quiet: true,
  });
  const a = [...openMindRecord("tests/fixtures/mindrecord/testdata").rows()];
  const b = openMindRecord(`${dir}/td0`);
  assertEquals([b.shards.length, b.numRows], [3, 60]);
  const byId = new Map([...b.rows()].map((r) => [r.first_id, r]));
  for (const r of a) assertEquals(byId.get(r.first_id), r);
  assert(b.shards.every((s) => fs.existsSync(s.file + ".db")));
});

Deno.test("without --images, the COCO image folder is found in the usual layouts", () => {
  const dir = Deno.makeTempDirSync();
  fs.mkdirSync(`${dir}/annotations`);
  fs.mkdirSync(`${dir}/images/train`, { recursive: true });
  fs.writeFileSync(`${dir}/annotations/instances_train.json`, fs.readFileSync(COCO));
  assertEquals(guessCocoImages(`${dir}/annotations/instances_train.json`), `${dir}/annotations`);
  fs.copyFileSync(`${IMAGES}/000001.jpg`, `${dir}/images/train/000001.jpg`);
  assertEquals(guessCocoImages(`${dir}/annotations/instances_train.json`), path.join(dir, "images", "train"));
  assertEquals(guessCocoImages(COCO), IMAGES);
});
