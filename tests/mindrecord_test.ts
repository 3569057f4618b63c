// MindRecord: fixtures written by MindSpore read and re-encode byte-exact; the writer's page logic, shards,
// .db index, compression and dump format.
import { pyRound } from "../lib/py_round.ts";
import { deepStrictEqual as assertEquals, ok as assert, throws } from "node:assert";
import * as fs from "node:fs";
import * as path from "node:path";
import { InputError } from "../lib/errors.ts";
import { type MindRecordRow, type NdArray, shardFileNames } from "../lib/mindrecord_format.ts";
import { parseHeader, readHeader, serializeHeader } from "../lib/mindrecord_header.ts";
import { compressInt, decompressInt } from "../lib/mindrecord_pages.ts";
import { indexDbQuotesStrings, readIndexDb, verifyIndexDb } from "../lib/mindrecord_index.ts";
import { detectFloatMode, openMindRecord } from "../lib/mindrecord_reader.ts";
import { MindRecordWriter, writeMindRecord } from "../lib/mindrecord_writer.ts";
import { dumpMindRecord, dumpRow, formatFloat32 } from "../lib/mindrecord_dump.ts";

const FX = "tests/fixtures/mindrecord";
const FIXTURES = ["sns", "testdata", "aclImdb.mindrecord0", "twobytes.mindrecord"];

function firstDiff(a: Uint8Array, b: Uint8Array, skip: (i: number) => boolean = () => false): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) if (!skip(i) && a[i] !== b[i]) return i;
  return -1;
}

/** Bytes of the SQLite file header that name the writing library (change counter, version-valid-for, version). */
const sqliteHeaderVaries = (i: number) => (i >= 24 && i < 28) || (i >= 92 && i < 100);

function reencode(name: string, dir: string): string {
  const src = path.join(FX, name);
  const set = openMindRecord(src, { singleShard: true });
  const rows = [...set.rows()];
  const h = set.shards[0].header;
  const out = path.join(dir, name);
  writeMindRecord(out, rows, {
    schema: set.schema.schema,
    desc: set.schema.desc,
    headerSize: h.headerSize,
    pageSize: h.pageSize,
    version: h.version,
    floats: detectFloatMode(set.floatStats),
    indexFields: h.indexFields?.map((f) => f.field) ?? [],
    shardAddresses: h.shardAddresses,
    shardId: h.shardId,
    dbQuotedStrings: indexDbQuotesStrings(src + ".db"),
  });
  return out;
}

for (const name of FIXTURES) {
  Deno.test(`a MindSpore fixture (${name}) is read and re-encoded byte for byte, .db included`, () => {
    const dir = Deno.makeTempDirSync();
    const out = reencode(name, dir);
    const a = fs.readFileSync(path.join(FX, name)), b = fs.readFileSync(out);
    assertEquals(firstDiff(a, b), -1);
    assertEquals(b.length, a.length);
    const da = fs.readFileSync(path.join(FX, name) + ".db"), db = fs.readFileSync(out + ".db");
    assertEquals(db.length, da.length);
    assertEquals(firstDiff(da, db, sqliteHeaderVaries), -1);
  });
}

Deno.test("serializeHeader() reproduces every fixture header byte for byte", () => {
  for (const name of FIXTURES) {
    const file = path.join(FX, name);
    const bytes = fs.readFileSync(file);
    const len = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
    const original = new TextDecoder().decode(bytes.subarray(8, 8 + len));
    assertEquals(serializeHeader(readHeader(file)), original);
  }
});

Deno.test("the fixtures decode to MindSpore's values (compressed ints, int64 extremes, floats, two blobs)", () => {
  const acl = [...openMindRecord(path.join(FX, "aclImdb.mindrecord0"), { singleShard: true }).rows()];
  const b = acl[0].array_b as NdArray;
  assertEquals(b.shape, [1, 19]);
  assertEquals(b.data[18], 9223372036854775807n);
  assertEquals((acl[0].array_d as NdArray).shape, [2, 2]);
  const td = [...openMindRecord(path.join(FX, "testdata")).rows()];
  assertEquals([td.length, td[0].first_id, td[0].weight, td[0].attribute], [60, 101, 1, "n"]);
  assertEquals(Array.from((td[1].node_feature_2 as NdArray).data as Float32Array).map(formatFloat32), ["0.2"]);
  const sns = openMindRecord(path.join(FX, "sns"));
  assertEquals([sns.version, sns.numRows, sns.shards[0].header.compressionSize], ["3.0", 153, 1203]);
  const two = [...openMindRecord(path.join(FX, "twobytes.mindrecord")).rows()];
  assert(two[0].img_data instanceof Uint8Array && two[0].label_data instanceof Uint8Array);
  assertEquals([...(two[0].img_data as Uint8Array).subarray(0, 2)], [0xff, 0xd8]); // JPEG bytes, length-split right
});

Deno.test("a legacy pre-1.0 file is rejected with a message that says so", () => {
  throws(
    () => openMindRecord(path.join(FX, "legacy_reject/aclImdb.mindrecord00"), { singleShard: true }),
    (e: unknown) => e instanceof InputError && /legacy pre-1\.0/.test(e.message) && e.message.includes("mindrecord00"),
  );
});

Deno.test("opening shard 0 of a set whose other shards are missing names the missing file", () => {
  throws(
    () => openMindRecord(path.join(FX, "aclImdb.mindrecord0")),
    (e: unknown) => e instanceof InputError && e.message.includes("aclImdb.mindrecord1") && /missing/.test(e.message),
  );
});

Deno.test("shardFileNames() follows FileWriter's zero-padded naming", () => {
  assertEquals(
    shardFileNames("a/ssd.mindrecord", 8).map((f) => path.basename(f)),
    [0, 1, 2, 3, 4, 5, 6, 7].map((i) => `ssd.mindrecord${i}`),
  );
  assertEquals(shardFileNames("x", 11)[0], "x00");
  assertEquals(shardFileNames("x", 1), ["x"]);
});

const intSchema = { id: { type: "int64" as const }, v: { type: "int32" as const, shape: [-1] } };
const intRow = (i: number): MindRecordRow => ({
  id: i,
  v: { dtype: "int32", shape: [3], data: Int32Array.of(i, -i, 1000 * i) },
});

Deno.test("a multi-shard set is found from shard 0 and rows come back in shard, then row order", () => {
  const dir = Deno.makeTempDirSync();
  const w = new MindRecordWriter(`${dir}/s.mr`, {
    schema: intSchema,
    shardCount: 3,
    pageSize: 32768,
    headerSize: 16384,
  });
  for (let i = 0; i < 8; i++) w.write([intRow(i)]); // one row per call: row i -> shard i % 3
  w.write([intRow(8), intRow(9), intRow(10), intRow(11)]); // 1 row each; the remainder row goes to the next shard (2)
  w.commit();
  const set = openMindRecord(`${dir}/s.mr0`);
  assertEquals(set.shards.map((s) => path.basename(s.file)), ["s.mr0", "s.mr1", "s.mr2"]);
  assertEquals(set.shards.map((s) => s.rows), [4, 4, 4]);
  const ids = [...set.rows()].map((r) => r.id);
  assertEquals(ids, [0, 3, 6, 8, 1, 4, 7, 9, 2, 5, 10, 11]);
  assertEquals(set.shards.map((s) => readIndexDb(s.file + ".db").shardName), ["s.mr0", "s.mr1", "s.mr2"]);
  assertEquals([...openMindRecord(`${dir}/s.mr2`).rows()].length, 12);
});

Deno.test("rows that overflow pages go to new blob pages and shifted raw pages, and read back whole", () => {
  const dir = Deno.makeTempDirSync();
  const schema = { name: { type: "string" as const }, data: { type: "bytes" as const } };
  const rows: MindRecordRow[] = [];
  // Big blobs force a new blob page per row; then small blobs append while raw pages fill up (ShiftRawPage).
  for (let i = 0; i < 5; i++) rows.push({ name: `big${i}`.padEnd(6000, "x"), data: new Uint8Array(30000).fill(i) });
  for (let i = 0; i < 6; i++) {
    rows.push({ name: `small${i}`.padEnd(6000, "y"), data: new Uint8Array(100).fill(50 + i) });
  }
  const files = writeMindRecord(`${dir}/p.mr`, rows, { schema, pageSize: 32768, headerSize: 16384, batchSize: 1 });
  const h = readHeader(files[0]);
  const raw = h.pages.filter((p) => p.pageType === "RAW_DATA");
  assert(raw.length >= 2, "expected several raw pages");
  assert(raw.some((p) => p.rowGroupIds.length > 1), "expected a raw page holding several row groups");
  // Traced by hand through shard_writer.cc: row 5 (small blob) appends to blob page 5, so the last row group of raw
  // page 1 (group 4, at byte 24068) moves to a new raw page 6 whose page_type_id is 1 + 1 (ShiftRawPage).
  assertEquals(
    raw.map((p) => [p.pageId, p.pageTypeId, p.rowGroupIds, p.pageSize]),
    [[1, 0, [[0, 0], [1, 6017], [2, 12034], [3, 18051]], 24068], [6, 2, [[4, 0]], 30085], [8, 7, [[5, 0]], 12034]],
  );
  const back = [...openMindRecord(files[0]).rows()];
  assertEquals(back.map((r) => r.name), rows.map((r) => r.name));
  assertEquals(back.map((r) => (r.data as Uint8Array)[0]), rows.map((r) => (r.data as Uint8Array)[0]));
  assertEquals(verifyIndexDb(files[0], h), []);
  // The .db offsets point at each row's length prefix in its pages.
  const bytes = fs.readFileSync(files[0]);
  const db = readIndexDb(files[0] + ".db").rows;
  assertEquals(db.length, rows.length);
  for (const r of db) {
    const at = h.headerSize + h.pageSize * Number(r.PAGE_ID_BLOB) + Number(r.PAGE_OFFSET_BLOB);
    const len = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(at, true));
    assertEquals(Number(r.PAGE_OFFSET_BLOB_END) - Number(r.PAGE_OFFSET_BLOB), 8 + len);
  }
});

Deno.test("a single-shard file matches the spec layout: header slot, then page slots, the last page unpadded", () => {
  const dir = Deno.makeTempDirSync();
  const [f] = writeMindRecord(`${dir}/one.mr`, [intRow(1), intRow(2)], {
    schema: intSchema,
    pageSize: 32768,
    headerSize: 16384,
  });
  const bytes = fs.readFileSync(f);
  const h = parseHeader(bytes, f, bytes.length);
  assertEquals(h.pages.map((p) => [p.pageType, p.pageId, p.startRowId, p.endRowId]), [["BLOB_DATA", 0, 0, 2], [
    "RAW_DATA",
    1,
    0,
    0,
  ]]);
  assertEquals(bytes.length, 16384 + 32768 + h.pages[1].pageSize);
  // Raw rows: u64 LE length + msgpack {"id": 1}.
  const raw = bytes.subarray(16384 + 32768);
  assertEquals([...raw.subarray(0, 12)], [5, 0, 0, 0, 0, 0, 0, 0, 0x81, 0xa2, 0x69, 0x64]);
  assertEquals(h.indexFields, [{ field: "id", schemaId: 0 }]);
  assertEquals(h.compressionSize, 2 * (12 - (4 + 1 + 1 + 1 + 2))); // 3 ints of 12 bytes -> 4 + bitmap + 1 + 1 + 2
});

Deno.test("compressInt() and decompressInt() are inverse and pick the smallest width per element", () => {
  const v = new BigInt64Array([0n, -129n, 40000n, -9223372036854775808n, 127n]);
  const src = new Uint8Array(v.buffer);
  const c = compressInt(src, "int64");
  assertEquals([c[4], c[5]], [0b00011011, 0b00000000]);
  assertEquals(decompressInt(c, "int64"), src);
  throws(() => decompressInt(c.subarray(0, c.length - 1), "int64"), RangeError);
  throws(() => decompressInt(new Uint8Array([0xff, 0xff, 0xff, 0xff]), "int32"), RangeError);
});

Deno.test("dumpRow() sorts keys, nests arrays, writes big ints as strings and bytes as length + sha256", () => {
  const schema = {
    a: { type: "int64" as const, shape: [-1, 2] },
    f: { type: "float32" as const },
    d: { type: "float64" as const },
    b: { type: "bytes" as const },
  };
  const row: MindRecordRow = {
    f: 0.30000001192092896,
    d: 0.1,
    b: new Uint8Array(0),
    a: { dtype: "int64", shape: [1, 2], data: BigInt64Array.of(1n, 9007199254740993n) },
  };
  assertEquals(
    dumpRow(row, schema),
    '{"a":[[1,"9007199254740993"]],"b":{"length":0,"sha256":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},"d":0.1,"f":0.3}',
  );
});

Deno.test("dumpRow() nests zero-length axes as numpy's tolist() does", () => {
  const schema = { a: { type: "int32" as const, shape: [2, -1] }, b: { type: "int32" as const, shape: [-1, 5] } };
  const row: MindRecordRow = {
    a: { dtype: "int32", shape: [2, 0], data: new Int32Array(0) },
    b: { dtype: "int32", shape: [0, 5], data: new Int32Array(0) },
  };
  assertEquals(dumpRow(row, schema), '{"a":[[],[]],"b":[]}');
});

Deno.test("dumpMindRecord() writes one JSON line per row and leaves no temporary file", async () => {
  const dir = Deno.makeTempDirSync();
  const n = await dumpMindRecord(path.join(FX, "sns"), `${dir}/sns.jsonl`);
  const lines = fs.readFileSync(`${dir}/sns.jsonl`, "utf8").trimEnd().split("\n");
  assertEquals([n, lines.length], [153, 153]);
  assertEquals(Object.keys(JSON.parse(lines[0])), [
    "attribute",
    "edge_feature_index",
    "first_id",
    "node_feature_1",
    "node_feature_2",
    "node_feature_index",
    "second_id",
    "third_id",
    "type",
  ]);
  assertEquals(fs.readdirSync(dir), ["sns.jsonl"]);
});

Deno.test("a truncated file is an InputError that names the file and the page", () => {
  const dir = Deno.makeTempDirSync();
  const bytes = fs.readFileSync(path.join(FX, "testdata"));
  fs.writeFileSync(`${dir}/cut`, bytes.subarray(0, bytes.length - 100));
  throws(
    () => openMindRecord(`${dir}/cut`, { singleShard: true }),
    (e: unknown) => e instanceof InputError && /cut/.test(e.message) && /page 1/.test(e.message),
  );
});

Deno.test("a failed write leaves no file behind", () => {
  const dir = Deno.makeTempDirSync();
  const w = new MindRecordWriter(`${dir}/f.mr`, {
    schema: intSchema,
    shardCount: 2,
    pageSize: 32768,
    headerSize: 16384,
  });
  w.write([intRow(1)]);
  throws(() => w.write([{ id: 1.5 } as unknown as MindRecordRow]), TypeError);
  assertEquals(fs.readdirSync(dir), []);
});

Deno.test("pyRound() rounds half to even like Python 3", () => {
  assertEquals([0.5, 1.5, 2.5, -0.5, -1.5, 2.4999, 2.5000001].map(pyRound), [0, 2, 2, 0, -2, 2, 3]);
});

Deno.test("MindSpore 2.x float32 msgpack floats are read, detected and written back the same way", () => {
  const dir = Deno.makeTempDirSync();
  const schema = { w: { type: "float32" as const }, x: { type: "float64" as const } };
  const rows = [{ w: 0.5, x: 0.1 }, { w: 2, x: 1 }];
  const [f] = writeMindRecord(`${dir}/f.mr`, rows, { schema, floats: "compact", pageSize: 32768, headerSize: 16384 });
  const set = openMindRecord(f);
  assertEquals([...set.rows()], rows);
  assertEquals([set.floatStats.f32, detectFloatMode(set.floatStats)], [3, "compact"]);
  const [g] = writeMindRecord(`${dir}/g/f.mr`, rows, {
    schema,
    floats: detectFloatMode(set.floatStats),
    pageSize: 32768,
    headerSize: 16384,
  });
  assertEquals(firstDiff(fs.readFileSync(f), fs.readFileSync(g)), -1);
  const [h] = writeMindRecord(`${dir}/h/f.mr`, rows, { schema, floats: "f64", pageSize: 32768, headerSize: 16384 });
  assert(fs.statSync(h).size > fs.statSync(f).size); // f64 floats take 4 more bytes each
});

Deno.test("verifyIndexDb() agrees with every MindSpore-written .db and catches a wrong one", () => {
  for (const name of FIXTURES) {
    const file = path.join(FX, name);
    assertEquals(verifyIndexDb(file, readHeader(file)), []);
  }
  const dir = Deno.makeTempDirSync();
  fs.copyFileSync(path.join(FX, "sns"), `${dir}/sns`);
  fs.copyFileSync(path.join(FX, "testdata.db"), `${dir}/sns.db`);
  const problems = verifyIndexDb(`${dir}/sns`, readHeader(`${dir}/sns`));
  assert(problems.some((p) => p.includes("SHARD_NAME")) && problems.some((p) => p.includes("60 rows")));
});
