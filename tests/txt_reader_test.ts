// The ModelZoo TXT format: path x1,y1,x2,y2,cls ... per line.
import { deepStrictEqual as assertEquals, throws } from "node:assert";
import * as fs from "node:fs";
import { InputError } from "../lib/errors.ts";
import { formatTxt, parseTxtLines, readTxt } from "../lib/txt_reader.ts";

const FILE = "tests/fixtures/txt/anno.txt";
const inputError = (re: RegExp) => (e: unknown) => e instanceof InputError && re.test(e.message);

Deno.test("readTxt() reads boxes x first, labels as given, sizes from the image headers, ids by line", () => {
  const { records } = readTxt(FILE);
  assertEquals(records.map((r) => [r.imgId, r.width, r.height]), [[0, 32, 24], [1, 40, 30]]);
  assertEquals([...records[0].boxes], [1, 2, 20, 15, 3, 4, 10, 12]);
  assertEquals([...records[0].labels, ...records[1].labels], [1, 3, 7]);
  assertEquals(formatTxt(records), fs.readFileSync(FILE, "utf8").trimEnd() + "\n");
});

Deno.test("malformed TXT lines are named by file and line", () => {
  throws(
    () => parseTxtLines("a.jpg 1,2,3,4\n", "x.txt"),
    inputError(/x\.txt \(line 1\): box 1 "1,2,3,4" is not x1,y1,x2,y2,cls/),
  );
  throws(() => parseTxtLines("\n\na.jpg 1,2,3,4,x\n", "x.txt"), inputError(/line 3/));
  throws(() => parseTxtLines("1,2,3,4,5 a.jpg\n", "x.txt"), inputError(/image path first/));
});

Deno.test("TXT problems follow the policy: class out of range, box outside, missing image", () => {
  const dir = Deno.makeTempDirSync();
  fs.cpSync("tests/fixtures/txt/images", `${dir}/images`, { recursive: true });
  fs.writeFileSync(`${dir}/a.txt`, "images/a.jpg 1,2,20,15,0 1,2,40,15,2\nimages/none.jpg 1,1,2,2,1\n");
  throws(() => readTxt(`${dir}/a.txt`), inputError(/a\.txt \(line 1, box 1\): class 0 is not a label 1\.\.80/));
  // clip repairs what it can (the box) and drops what it cannot (class 0, the missing image).
  const k = readTxt(`${dir}/a.txt`, { policy: "clip" });
  assertEquals([k.report.clippedBoxes, k.report.droppedBoxes, k.report.droppedImages], [1, 1, 1]);
  assertEquals(k.report.notes[2].includes("line 2): dropped: image file"), true);
  const c = readTxt(`${dir}/a.txt`, { policy: "drop" });
  assertEquals([c.records.length, c.report.droppedBoxes, c.report.droppedImages], [1, 2, 1]);
  fs.writeFileSync(`${dir}/b.txt`, "images/a.jpg 1,2,40,15,2\n");
  const d = readTxt(`${dir}/b.txt`, { policy: "clip" });
  assertEquals([[...d.records[0].boxes], d.report.clippedBoxes], [[1, 2, 32, 15], 1]);
});
