// Pascal VOC: the strict XML parser, ModelZoo create_voc_label coordinates, splits, policy.
import { deepStrictEqual as assertEquals, throws } from "node:assert";
import * as fs from "node:fs";
import { InputError } from "../lib/errors.ts";
import { labelOf, vocClassMap } from "../lib/class_maps.ts";
import { parseVocXml, parseXml, readVoc, xmlChild, xmlChildren, xmlText } from "../lib/voc_reader.ts";

const ROOT = "tests/fixtures/voc/VOC2007";
const inputError = (re: RegExp) => (e: unknown) => e instanceof InputError && re.test(e.message);

Deno.test("readVoc() follows create_voc_label: int(float(v)) - 1 per coordinate, VOC labels 1..20", () => {
  const { records, report } = readVoc(ROOT, { readImages: true });
  assertEquals(records.map((r) => r.imgId), [5, 7]);
  const [a, b] = records;
  const m = vocClassMap();
  assertEquals([...a.labels], [labelOf(m, "chair"), labelOf(m, "person")]);
  assertEquals([...a.labels], [9, 15]);
  assertEquals([...a.boxes], [2, 4, 19, 29, 20, 1, 49, 39]); // 21.7 -> int 21 -> 20
  assertEquals([a.width, a.height, a.extra!.difficult], [50, 40, [0, 1]]);
  assertEquals([...b.boxes, ...b.labels], [1, 2, 27, 18, 7]);
  assertEquals(a.image!.length, fs.statSync(`${ROOT}/JPEGImages/000005.jpg`).size);
  assertEquals(report.droppedBoxes, 0);
});

Deno.test("readVoc() takes the order of ImageSets/Main/SPLIT.txt", () => {
  assertEquals(readVoc(ROOT, { split: "train" }).records.map((r) => r.imgId), [7, 5]);
  throws(() => readVoc(ROOT, { split: "nope" }), inputError(/nope\.txt: cannot read split list/));
});

Deno.test("parseXml() handles declarations, comments, entities, CDATA, attributes and self-closing tags", () => {
  const x = parseXml(
    `<?xml version="1.0"?>\n<!-- c -->\n<r a='1 &lt; 2' b="&#x41;&#66;"><t><![CDATA[<x>]]> &amp; y</t><e/></r>`,
    "t.xml",
  );
  assertEquals(x.attrs, { a: "1 < 2", b: "AB" });
  assertEquals(xmlText(xmlChild(x, "t")!), "<x> & y");
  assertEquals(xmlChildren(x, "e").length, 1);
});

Deno.test("malformed XML is an InputError naming the file and the line", () => {
  const bad: [string, RegExp][] = [
    ["<a>\n<b>\n</a>", /line 3\): malformed XML: end tag <\/a> does not match <b>/],
    ["<a>&nbsp;</a>", /unknown entity/],
    ["<a x=1/>", /not quoted/],
    ["<a></a><b/>", /content after the root element/],
    ['<!DOCTYPE a [<!ENTITY x "y">]><a/>', /DOCTYPE/],
    ["<a>\n\n<!-- x -- y --></a>", /line 3\).*"--" inside a comment/],
    ["", /no root element/],
    ["<a b='1' b='2'/>", /repeated/],
    ["<a>\u0001</a>", /control character/],
  ];
  for (const [text, re] of bad) {
    throws(() => parseXml(text, "bad.xml"), inputError(new RegExp("bad\\.xml.*" + re.source, "s")), text);
  }
});

Deno.test("parseVocXml() names missing elements, unknown classes and bad boxes by line", () => {
  const xml = fs.readFileSync(`${ROOT}/Annotations/000005.xml`, "utf8");
  throws(
    () => parseVocXml(xml.replace("<name>chair</name>", "<name>sofa-bed</name>"), "a.xml"),
    inputError(/a\.xml \(line 16, object 0\): class "sofa-bed"/),
  );
  throws(
    () => parseVocXml(xml.replace(/<size>[\s\S]*?<\/size>/, ""), "a.xml"),
    inputError(/<annotation> has no <size>/),
  );
  throws(
    () => parseVocXml(xml.replace("<xmax>20</xmax>", "<xmax>2</xmax>"), "a.xml"),
    inputError(/box \[2, 4, 1, 29\].*degenerate/),
  );
  const d = parseVocXml(xml.replace("<xmax>50</xmax>", "<xmax>70</xmax>"), "a.xml", { policy: "clip" });
  assertEquals([...d.boxes.subarray(4)], [20, 1, 50, 39]);
});

Deno.test("a VOC image that is missing is named, or dropped and counted", () => {
  const dir = Deno.makeTempDirSync();
  fs.cpSync(ROOT, dir, { recursive: true });
  fs.rmSync(`${dir}/JPEGImages/000007.jpg`);
  throws(() => readVoc(dir), inputError(/000007\.xml \(filename\): image file .*000007\.jpg is missing/));
  const r = readVoc(dir, { policy: "drop" });
  assertEquals([r.records.length, r.report.droppedImages], [1, 1]);
});
