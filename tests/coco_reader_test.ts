// COCO json reading and writing, the bad-input policy, image-size sniffing.
import { deepStrictEqual as assertEquals, ok as assert, throws } from "node:assert";
import * as fs from "node:fs";
import { InputError } from "../lib/errors.ts";
import { cocoClassMap, labelOf, loadClassMap, vocClassMap } from "../lib/class_maps.ts";
import { cocoJson, parseCoco, readCoco } from "../lib/coco_reader.ts";
import { imageSize } from "../lib/image_header.ts";

const JSON_FILE = "tests/fixtures/coco/instances.json";
const IMAGES = "tests/fixtures/coco/images";
const fixture = () => JSON.parse(fs.readFileSync(JSON_FILE, "utf8"));
const inputError = (re: RegExp) => (e: unknown) => e instanceof InputError && re.test(e.message);

Deno.test("readCoco() maps COCO category ids to the tutorial's train_cls labels and bbox to x1,y1,x2,y2", () => {
  const d = readCoco(JSON_FILE, { images: IMAGES, readImages: true });
  assertEquals(d.classMap.source, "coco");
  assertEquals(d.records.map((r) => r.imgId), [1, 2, 42]);
  const [a, b, c] = d.records;
  assertEquals([...a.labels], [1, 80]); // person, toothbrush (category 90)
  assertEquals([...a.boxes], [2.5, 3.25, 13, 11.75, 20, 4, 31.75, 23.5]);
  assertEquals([...b.labels, ...b.iscrowd], [3, 3, 1, 0]);
  assertEquals([c.labels.length, c.width, c.height], [0, 16, 16]);
  assertEquals(a.image, new Uint8Array(fs.readFileSync(`${IMAGES}/000001.jpg`)));
});

Deno.test("cocoJson() writes back exactly what readCoco() read", () => {
  const d = readCoco(JSON_FILE, { images: IMAGES });
  const j = cocoJson(d.records, d.classMap, { categories: d.categories, top: d.top });
  assertEquals(JSON.parse(JSON.stringify(j)), fixture());
});

Deno.test("a category outside the class map gets labels from the json's own categories under auto", () => {
  const j = fixture();
  j.categories[0].name = "blob";
  const d = parseCoco(JSON.stringify(j), "x.json");
  assertEquals(d.classMap.names, ["background", "blob", "car", "toothbrush"]);
  assertEquals([...d.records[0].labels], [1, 3]);
  throws(
    () => parseCoco(JSON.stringify(j), "x.json", { classes: cocoClassMap() }),
    inputError(/x\.json \(annotations\[0\] \(id 10\)\): class "blob"/),
  );
});

Deno.test("malformed json names the file and the line", () => {
  throws(
    () => parseCoco('{"images": [\n  1,\n  }', "bad.json"),
    inputError(/bad\.json \(line 3, column \d+\): malformed JSON/),
  );
});

Deno.test("each bad record is named: unknown image, bad bbox, duplicate id, bad size", () => {
  // deno-lint-ignore no-explicit-any
  type Json = any;
  const cases: [(j: Json) => void, RegExp][] = [
    [(j) => (j.annotations[1].image_id = 7), /annotations\[1\] \(id 11\)\): annotation refers to unknown image_id 7/],
    [(j) => (j.annotations[2].bbox = [1, 2, 3]), /annotations\[2\] \(id 12\)\): "bbox" must be/],
    [(j) => (j.images[1].id = 1), /images\[1\] \(id 1\)\): duplicate image id 1/],
    [(j) => (j.images[0].width = 0), /images\[0\] \(id 1\)\): image "width" must be a positive integer/],
    [(j) => (j.annotations[0].category_id = 5), /annotations\[0\] \(id 10\)\): unknown category_id 5/],
    [(j) => delete j.categories, /\(categories\): missing or non-list "categories"/],
  ];
  for (const [mutate, re] of cases) {
    const j = fixture();
    mutate(j);
    throws(() => parseCoco(JSON.stringify(j), "c.json"), inputError(re), String(re));
  }
});

Deno.test("the policy decides: error names the box, clip clips and counts, drop drops and counts", () => {
  const j = fixture();
  j.annotations[0].bbox = [-4, 3, 10, 8]; // starts left of the image
  j.annotations[3].bbox = [5, 6, 0, 9]; // zero width
  const text = JSON.stringify(j);
  throws(
    () => parseCoco(text, "p.json"),
    inputError(/p\.json \(annotations\[0\] \(id 10\)\): box \[-4, 3, 6, 11\].*outside the 32x24 image/),
  );
  const c = parseCoco(text, "p.json", { policy: "clip" });
  assertEquals([c.report.clippedBoxes, c.report.droppedBoxes], [1, 1]);
  assertEquals([...c.records[0].boxes.subarray(0, 4)], [0, 3, 6, 11]);
  assertEquals((c.records[0].extra!.annotations as { bbox: number[] }[])[0].bbox, [0, 3, 6, 8]);
  const d = parseCoco(text, "p.json", { policy: "drop" });
  assertEquals([d.report.clippedBoxes, d.report.droppedBoxes, d.records[0].labels.length], [0, 2, 1]);
  assert(d.report.notes[0].includes("p.json (annotations[0] (id 10))"));
});

Deno.test("a missing image file is an error naming it, or a dropped image under drop", () => {
  const dir = Deno.makeTempDirSync();
  fs.copyFileSync(`${IMAGES}/000001.jpg`, `${dir}/000001.jpg`);
  fs.copyFileSync(`${IMAGES}/000042.jpg`, `${dir}/000042.jpg`);
  throws(() => readCoco(JSON_FILE, { images: dir }), inputError(/000002\.jpg is missing/));
  const d = readCoco(JSON_FILE, { images: dir, policy: "drop" });
  assertEquals([d.records.map((r) => r.imgId), d.report.droppedImages], [[1, 42], 1]);
});

Deno.test("imageSize() reads JPEG SOF and PNG IHDR headers and refuses other bytes", () => {
  assertEquals(imageSize(fs.readFileSync(`${IMAGES}/000002.jpg`)), { width: 40, height: 30 });
  assertEquals(imageSize(new Uint8Array([0xff, 0xd8, 0xff, 0xd9])), null);
  assertEquals(imageSize(new TextEncoder().encode("GIF89a")), null);
});

Deno.test("class maps: COCO's 80 as train_cls, VOC's 20, custom lists from YAML with clear errors", () => {
  const coco = cocoClassMap();
  assertEquals([coco.names.length, labelOf(coco, "traffic light"), coco.categoryIds[labelOf(coco, "dining table")]], [
    81,
    10,
    67,
  ]);
  assertEquals([vocClassMap().names.length, labelOf(vocClassMap(), "tvmonitor")], [21, 20]);
  const dir = Deno.makeTempDirSync();
  fs.writeFileSync(`${dir}/c.yaml`, "classes: [rectangle, ellipse, triangle]\ncategory_ids: [5, 6, 7]\n");
  const m = loadClassMap(`${dir}/c.yaml`);
  assertEquals([m.names, m.categoryIds], [["background", "rectangle", "ellipse", "triangle"], [0, 5, 6, 7]]);
  fs.writeFileSync(`${dir}/d.yaml`, "classes: [a, a]\n");
  throws(() => loadClassMap(`${dir}/d.yaml`), inputError(/d\.yaml: class "a" is listed twice/));
  fs.writeFileSync(`${dir}/e.yaml`, "names: [a]\n");
  throws(() => loadClassMap(`${dir}/e.yaml`), inputError(/e\.yaml \(classes\)/));
});
