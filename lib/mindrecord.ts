/**
 * MindRecord, MindSpore's dataset file format: read any version 2.0 / 3.0 set
 * (one or many shards, compressed integer arrays, one or several blob fields,
 * float32 or float64 msgpack floats) and write files byte-identical to what
 * MindSpore's FileWriter writes, with the `.db` SQLite index beside each shard.
 *
 * Section numbers (§) refer to the on-disk spec, shared notes
 * `mindrecord_format.md`, which was read from MindSpore's C++ source
 * (shard_writer.cc, shard_header.cc, shard_column.cc, shard_index_generator.cc).
 *
 * Deterministic multi-shard rule (§3, BreakIntoShards): MindSpore splits each
 * `write_raw_data` batch of n rows into contiguous slices of ⌊n/k⌋ rows per
 * shard and hands the n mod k remainder rows to shards it picks at random. This
 * writer hands them out round-robin instead, continuing from where the previous
 * batch stopped: one batch of n rows gives the first n mod k shards one extra
 * row; one-row batches (what the ModelZoo SSD scripts do) put row i in shard
 * i mod k. Every outcome is one MindSpore itself could have produced.
 *
 * @module
 */
import { pyRound } from "./py_round.ts";
import * as fs from "node:fs";
import * as path from "node:path";
import { createHash } from "node:crypto";
import { DatabaseSync } from "node:sqlite";
import { InputError } from "./errors.ts";
import type { DetectionRecord } from "./detection_record.ts";
import type { ClassMap } from "./class_maps.ts";
import { type CocoCategory, guessCocoImages, imageSize, type Policy, readCoco } from "./coco_reader.ts";
import { tempNameFor } from "./fs_atomic.ts";
import {
  compareUtf8,
  decodeMsgpack,
  type DecodeStats,
  encodeMsgpack,
  type FloatMode,
  MsgFloat,
  type MsgValue,
} from "./msgpack.ts";

// ---------------------------------------------------------------------------------------------------------------------
// Types

/** A field type of a (post-1.0) MindRecord schema. */
export type FieldType = "int32" | "int64" | "float32" | "float64" | "string" | "bytes";
/** The numeric types an array field can have. */
export type ArrayType = "int32" | "int64" | "float32" | "float64";

/** One schema field: a scalar, or an array when `shape` is present (-1 = any length). */
export interface FieldSpec {
  type: FieldType;
  shape?: number[];
}

/** Field name -> spec. */
export type MindRecordSchema = Record<string, FieldSpec>;

/** An n-dimensional numeric array read from (or written to) a blob field. */
export interface NdArray {
  dtype: ArrayType;
  /** Resolved shape (no -1). */
  shape: number[];
  /** Row-major elements. */
  data: Int32Array | BigInt64Array | Float32Array | Float64Array;
}

/** A field value: int (number, or bigint beyond ±2^53), float, string, bytes or array. */
export type FieldValue = number | bigint | string | Uint8Array | NdArray;

/** One row: field name -> value. */
export type MindRecordRow = Record<string, FieldValue>;

/** One page descriptor of a shard header (§2 P). */
export interface PageInfo {
  pageId: number;
  shardId: number;
  pageType: "BLOB_DATA" | "RAW_DATA";
  pageTypeId: number;
  startRowId: number;
  endRowId: number;
  /** [row group id (= blob page_type_id), byte offset in this raw page]. Empty = none. */
  rowGroupIds: [number, number][];
  /** Used bytes of the page slot. */
  pageSize: number;
}

/** One schema entry of a header (MindRecord writes exactly one). */
export interface SchemaEntry {
  desc: string;
  blobFields: string[];
  schema: MindRecordSchema;
}

/** A parsed shard header (§2). */
export interface MindRecordHeader {
  headerSize: number;
  pageSize: number;
  version: "2.0" | "3.0";
  /** Absent in version 2.0 files. */
  compressionSize?: number;
  /** null when the file has no index fields. */
  indexFields: { field: string; schemaId: number }[] | null;
  pages: PageInfo[];
  schemas: SchemaEntry[];
  shardAddresses: string[];
  shardId: number;
  statistics: unknown;
}

const FIELD_TYPES = new Set(["int32", "int64", "float32", "float64", "string", "bytes"]);
const ELEM_SIZE: Record<ArrayType, number> = { int32: 4, int64: 8, float32: 4, float64: 8 };

/** Default header slot (kDefaultHeaderSize, 16 MiB) and page slot (kDefaultPageSize, 32 MiB) sizes (§1). */
export const DEFAULT_HEADER_SIZE = 1 << 24;
/** See {@linkcode DEFAULT_HEADER_SIZE}. */
export const DEFAULT_PAGE_SIZE = 1 << 25;

/** True when a field is stored in the blob (bytes, or any field with a shape; shard_schema.cc PopulateBlobFields). */
export function isBlobField(spec: FieldSpec): boolean {
  return spec.type === "bytes" || spec.shape !== undefined;
}

/** The blob fields of a schema, sorted bytewise. */
export function blobFieldsOf(schema: MindRecordSchema): string[] {
  return Object.keys(schema).filter((k) => isBlobField(schema[k])).sort(compareUtf8);
}

/** True when a schema has an int32/int64 array, which makes version 3.0 compress blobs (§5). */
export function hasIntArray(schema: MindRecordSchema): boolean {
  return Object.values(schema).some((s) => s.shape !== undefined && (s.type === "int32" || s.type === "int64"));
}

/**
 * MindSpore's shard file names: one shard keeps the name, n shards append the
 * index zero-padded to the width of n-1 (python FileWriter, §7).
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * assertEquals(shardFileNames("out/ssd.mindrecord", 1), ["out/ssd.mindrecord"]);
 * assertEquals(shardFileNames("x", 12)[3], "x03");
 * ```
 */
export function shardFileNames(file: string, shardCount: number): string[] {
  if (!Number.isInteger(shardCount) || shardCount < 1 || shardCount > 1000) {
    throw new RangeError(`Shard count must be an integer in [1, 1000], got ${shardCount}`);
  }
  if (shardCount === 1) return [file];
  const w = String(shardCount - 1).length;
  return Array.from({ length: shardCount }, (_, i) => file + String(i).padStart(w, "0"));
}

// ---------------------------------------------------------------------------------------------------------------------
// Header: canonical JSON (§2)

/** nlohmann dump(): compact, object keys sorted bytewise, strings escaped as JSON.stringify does. */
export function canonicalJson(v: unknown): string {
  if (v === null || v === undefined) return "null";
  if (typeof v === "number") {
    if (!Number.isFinite(v)) return "null";
    return JSON.stringify(v);
  }
  if (typeof v === "bigint") return v.toString();
  if (typeof v === "string" || typeof v === "boolean") return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(",")}]`;
  const o = v as Record<string, unknown>;
  const keys = Object.keys(o).sort(compareUtf8);
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`).join(",")}}`;
}

function pageToJson(p: PageInfo): Record<string, unknown> {
  // meta/shard_page.cc GetPage: an empty row group list is written as [{"id":0,"offset":0}].
  const groups = p.rowGroupIds.length === 0 ? [[0, 0]] : p.rowGroupIds;
  return {
    end_row_id: p.endRowId,
    page_id: p.pageId,
    page_size: p.pageSize,
    page_type: p.pageType,
    page_type_id: p.pageTypeId,
    row_group_ids: groups.map(([id, offset]) => ({ id, offset })),
    shard_id: p.shardId,
    start_row_id: p.startRowId,
  };
}

function schemaToJson(s: SchemaEntry): Record<string, unknown> {
  const schema: Record<string, unknown> = {};
  for (const [k, f] of Object.entries(s.schema)) {
    schema[k] = f.shape ? { shape: f.shape, type: f.type } : { type: f.type };
  }
  return { blob_fields: s.blobFields, desc: s.desc, schema };
}

/**
 * Serializes a header byte-exact as ShardHeader::SerializeHeader: a hand-ordered
 * top level, every nested value nlohmann-compact with sorted keys, empty lists
 * as null, and no compression_size in version 2.0.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const h = { headerSize: 16384, pageSize: 32768, version: "3.0" as const, compressionSize: 0, indexFields: null,
 *   pages: [], schemas: [{ desc: "d", blobFields: [], schema: { a: { type: "int32" as const } } }],
 *   shardAddresses: ["f"], shardId: 0, statistics: null };
 * assertEquals(serializeHeader(h).slice(0, 53), '{"header_size":16384,"index_fields":null,"page":null,');
 * ```
 */
export function serializeHeader(h: MindRecordHeader): string {
  const idx = h.indexFields && h.indexFields.length > 0
    ? canonicalJson(h.indexFields.map((f) => ({ index_field: f.field, schema_id: f.schemaId })))
    : "null";
  const pages = h.pages.length > 0 ? canonicalJson(h.pages.map(pageToJson)) : "null";
  const parts = [
    `"header_size":${h.headerSize}`,
    `"index_fields":${idx}`,
    `"page":${pages}`,
    `"page_size":${h.pageSize}`,
  ];
  if (h.version !== "2.0") parts.push(`"compression_size":${h.compressionSize ?? 0}`);
  parts.push(
    `"schema":${canonicalJson(h.schemas.map(schemaToJson))}`,
    `"shard_addresses":${h.shardAddresses.length > 0 ? canonicalJson(h.shardAddresses) : "null"}`,
    `"shard_id":${h.shardId}`,
    `"statistics":${canonicalJson(h.statistics ?? null)}`,
    `"version":${JSON.stringify(h.version)}`,
  );
  return `{${parts.join(",")}}`;
}

// ---------------------------------------------------------------------------------------------------------------------
// Header: parsing and validation

function isInt(v: unknown, min = 0, max = Number.MAX_SAFE_INTEGER): v is number {
  return typeof v === "number" && Number.isInteger(v) && v >= min && v <= max;
}

/**
 * Parses and validates a shard header from the first bytes of a file (§1, §2).
 * `fileSize` bounds every offset. Throws {@linkcode InputError} naming `file`,
 * including for legacy pre-1.0 files (schema types "number"/"array").
 */
export function parseHeader(head: Uint8Array, file: string, fileSize: number): MindRecordHeader {
  const fail = (msg: string, where = "header"): never => {
    throw new InputError(msg, { file, where });
  };
  if (head.length < 8) fail(`file too short (${fileSize} bytes) to be a MindRecord file`);
  const dv = new DataView(head.buffer, head.byteOffset, head.byteLength);
  const lenBig = dv.getBigUint64(0, true);
  if (lenBig > BigInt(Math.min(head.length - 8, 128 << 20)) || lenBig === 0n) {
    fail(`header length ${lenBig} does not fit the file (${fileSize} bytes); not a MindRecord file or truncated`);
  }
  const len = Number(lenBig);
  let raw: unknown;
  try {
    raw = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(head.subarray(8, 8 + len)));
  } catch (e) {
    fail(`header is not valid JSON (${(e as Error).message}); not a MindRecord file`);
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) fail("header is not a JSON object");
  const j = raw as Record<string, unknown>;
  const version = j.version;
  if (version !== "2.0" && version !== "3.0") {
    fail(`unsupported MindRecord version ${JSON.stringify(version)} (supported: "2.0", "3.0")`);
  }
  const headerSize = j.header_size, pageSize = j.page_size;
  if (!isInt(headerSize, 8, 1 << 30) || headerSize < len + 8) fail(`bad header_size ${JSON.stringify(headerSize)}`);
  if (!isInt(pageSize, 1, 1 << 30)) fail(`bad page_size ${JSON.stringify(pageSize)}`);
  if (version === "3.0" && j.compression_size !== undefined && !isInt(j.compression_size)) {
    fail(`bad compression_size ${JSON.stringify(j.compression_size)}`);
  }
  // Schema (§2 SC). Legacy pre-1.0 files use JSON-schema-like types ("number", "array" with "items").
  if (!Array.isArray(j.schema) || j.schema.length === 0) fail("header has no schema");
  const schemas: SchemaEntry[] = [];
  for (const [si, s] of (j.schema as unknown[]).entries()) {
    const where = `header schema ${si}`;
    if (typeof s !== "object" || s === null) fail("schema entry is not an object", where);
    const se = s as Record<string, unknown>;
    if (typeof se.schema !== "object" || se.schema === null || Array.isArray(se.schema)) {
      fail("schema entry has no field map", where);
    }
    const schema: MindRecordSchema = {};
    for (const [name, spec] of Object.entries(se.schema as Record<string, unknown>)) {
      const sp = spec as Record<string, unknown> | null;
      const t = sp?.type;
      if (t === "number" || t === "array" || t === "object" || (sp && "items" in sp)) {
        fail(
          `legacy pre-1.0 MindRecord file: field "${name}" has type ${JSON.stringify(t)}; ` +
            `only int32/int64/float32/float64/string/bytes are supported. Re-create the file with MindSpore >= 1.0`,
          where,
        );
      }
      if (typeof t !== "string" || !FIELD_TYPES.has(t)) {
        fail(`field "${name}" has unknown type ${JSON.stringify(t)}`, where);
      }
      const f: FieldSpec = { type: t as FieldType };
      if (sp!.shape !== undefined) {
        const shape = sp!.shape;
        if (!Array.isArray(shape) || shape.length === 0 || shape.some((d) => !isInt(d, -1, 1 << 30) || d === 0)) {
          fail(`field "${name}" has a bad shape ${JSON.stringify(shape)}`, where);
        }
        if (t === "string" || t === "bytes") fail(`field "${name}" of type ${t} cannot have a shape`, where);
        f.shape = shape as number[];
      }
      schema[name] = f;
    }
    const bf = se.blob_fields ?? [];
    if (!Array.isArray(bf) || bf.some((b) => typeof b !== "string" || !(b in schema))) {
      fail(`blob_fields ${JSON.stringify(bf)} do not match the schema`, where);
    }
    schemas.push({ desc: typeof se.desc === "string" ? se.desc : "", blobFields: bf as string[], schema });
  }
  // Index fields.
  let indexFields: MindRecordHeader["indexFields"] = null;
  if (j.index_fields !== null && j.index_fields !== undefined) {
    if (!Array.isArray(j.index_fields)) fail("index_fields is not a list");
    indexFields = (j.index_fields as unknown[]).map((x) => {
      const o = x as Record<string, unknown> | null;
      if (!o || typeof o.index_field !== "string" || !isInt(o.schema_id, 0, schemas.length - 1)) {
        fail(`bad index field ${JSON.stringify(x)}`);
      }
      return { field: o!.index_field as string, schemaId: o!.schema_id as number };
    });
  }
  // Shard addresses.
  const addrs = j.shard_addresses;
  if (!Array.isArray(addrs) || addrs.length === 0 || addrs.some((a) => typeof a !== "string" || a === "")) {
    fail(`bad shard_addresses ${JSON.stringify(addrs)}`);
  }
  const shardId = j.shard_id;
  if (!isInt(shardId, 0, (addrs as string[]).length - 1)) fail(`bad shard_id ${JSON.stringify(shardId)}`);
  // Pages (§2 P).
  const pages: PageInfo[] = [];
  const pl = j.page ?? [];
  if (!Array.isArray(pl)) fail("page is not a list");
  for (const [i, x] of (pl as unknown[]).entries()) {
    const where = `header page ${i}`;
    const o = x as Record<string, unknown> | null;
    if (!o || typeof o !== "object") fail("page is not an object", where);
    const p = o!;
    if (p.page_type !== "BLOB_DATA" && p.page_type !== "RAW_DATA") {
      fail(`bad page_type ${JSON.stringify(p.page_type)}`, where);
    }
    for (const k of ["page_id", "shard_id", "page_type_id", "start_row_id", "end_row_id", "page_size"]) {
      if (!isInt(p[k])) fail(`bad ${k} ${JSON.stringify(p[k])}`, where);
    }
    if (!Array.isArray(p.row_group_ids)) fail("bad row_group_ids", where);
    const groups: [number, number][] = (p.row_group_ids as unknown[]).map((g) => {
      const go = g as Record<string, unknown> | null;
      if (!go || !isInt(go.id) || !isInt(go.offset)) fail(`bad row group ${JSON.stringify(g)}`, where);
      return [go!.id as number, go!.offset as number];
    });
    const page: PageInfo = {
      pageId: p.page_id as number,
      shardId: p.shard_id as number,
      pageType: p.page_type as PageInfo["pageType"],
      pageTypeId: p.page_type_id as number,
      startRowId: p.start_row_id as number,
      endRowId: p.end_row_id as number,
      rowGroupIds: groups,
      pageSize: p.page_size as number,
    };
    if (page.endRowId < page.startRowId) fail("end_row_id < start_row_id", where);
    if (page.pageSize > (pageSize as number)) {
      fail(`page_size ${page.pageSize} exceeds the page slot ${pageSize}`, where);
    }
    const end = (headerSize as number) + (pageSize as number) * page.pageId + page.pageSize;
    if (end > fileSize) {
      fail(`page ${page.pageId} ends at byte ${end}, past the end of the file (${fileSize} bytes)`, where);
    }
    pages.push(page);
  }
  return {
    headerSize: headerSize as number,
    pageSize: pageSize as number,
    version: version as "2.0" | "3.0",
    compressionSize: version === "2.0" ? undefined : (j.compression_size as number | undefined) ?? 0,
    indexFields,
    pages,
    schemas,
    shardAddresses: addrs as string[],
    shardId: shardId as number,
    statistics: j.statistics ?? null,
  };
}

/** Reads and parses the header of one shard file. */
export function readHeader(file: string): MindRecordHeader {
  let fd = -1;
  try {
    fd = fs.openSync(file, "r");
    const size = fs.fstatSync(fd).size;
    const first = new Uint8Array(8);
    fs.readSync(fd, first, 0, Math.min(8, size), 0);
    if (size < 8) return parseHeader(first.subarray(0, size), file, size);
    const len = new DataView(first.buffer).getBigUint64(0, true);
    const n = Number(len > BigInt(size - 8) ? BigInt(size - 8) : len);
    const head = new Uint8Array(8 + Math.min(n, 128 << 20));
    fs.readSync(fd, head, 0, head.length, 0);
    return parseHeader(head, file, size);
  } catch (e) {
    if (e instanceof InputError) throw e;
    throw new InputError(`cannot read MindRecord file (${(e as Error).message})`, { file, cause: e });
  } finally {
    if (fd >= 0) fs.closeSync(fd);
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// Blob coding (§5)

function readBigU64(b: Uint8Array, off: number, le: boolean): number {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength).getBigUint64(off, le);
  return v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(v);
}

/**
 * Compresses a little-endian int32/int64 array as ShardColumn::CompressInt:
 * u32 BE count, a 2-bit width code per element, then each element LE in the
 * smallest signed width that holds it (§5).
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const src = new Uint8Array(new Int32Array([1, 300]).buffer);
 * assertEquals([...compressInt(src, "int32")], [0, 0, 0, 2, 0b00010000, 1, 0x2c, 0x01]);
 * ```
 */
export function compressInt(src: Uint8Array, type: "int32" | "int64"): Uint8Array {
  const size = type === "int32" ? 4 : 8;
  const n = Math.floor(src.length / size);
  const bitmap = Math.ceil(n / 4);
  const out = new Uint8Array(4 + bitmap + src.length);
  const odv = new DataView(out.buffer);
  const sdv = new DataView(src.buffer, src.byteOffset, src.byteLength);
  odv.setUint32(0, n);
  let o = 4 + bitmap;
  for (let i = 0; i < n; i++) {
    const v = size === 4 ? BigInt(sdv.getInt32(i * 4, true)) : sdv.getBigInt64(i * 8, true);
    const code = v >= -128n && v <= 127n
      ? 0
      : v >= -32768n && v <= 32767n
      ? 1
      : v >= -2147483648n && v <= 2147483647n
      ? 2
      : 3;
    if (code === 0) odv.setInt8(o, Number(v));
    else if (code === 1) odv.setInt16(o, Number(v), true);
    else if (code === 2) odv.setInt32(o, Number(v), true);
    else odv.setBigInt64(o, v, true);
    o += 1 << code;
    out[4 + (i >> 2)] |= code << (2 * (3 - (i % 4)));
  }
  return out.slice(0, o);
}

/** Inverse of {@linkcode compressInt}: returns the LE bytes of the int32/int64 array. Throws RangeError when malformed. */
export function decompressInt(src: Uint8Array, type: "int32" | "int64"): Uint8Array {
  if (src.length < 4) throw new RangeError("compressed integer column shorter than its 4-byte count");
  const sdv = new DataView(src.buffer, src.byteOffset, src.byteLength);
  const n = sdv.getUint32(0);
  const bitmap = Math.ceil(n / 4);
  if (4 + bitmap + n > src.length) {
    throw new RangeError(`compressed integer column claims ${n} elements, too many for ${src.length} bytes`);
  }
  const size = type === "int32" ? 4 : 8;
  const out = new Uint8Array(n * size);
  const odv = new DataView(out.buffer);
  let p = 4 + bitmap;
  for (let i = 0; i < n; i++) {
    const code = (src[4 + (i >> 2)] >> (2 * (3 - (i % 4)))) & 3;
    const w = 1 << code;
    if (p + w > src.length) throw new RangeError(`compressed integer column truncated at element ${i}`);
    const v = code === 0
      ? BigInt(sdv.getInt8(p))
      : code === 1
      ? BigInt(sdv.getInt16(p, true))
      : code === 2
      ? BigInt(sdv.getInt32(p, true))
      : sdv.getBigInt64(p, true);
    p += w;
    if (size === 4) {
      if (v < -2147483648n || v > 2147483647n) throw new RangeError(`int32 column holds out-of-range value ${v}`);
      odv.setInt32(i * 4, Number(v), true);
    } else odv.setBigInt64(i * 8, v, true);
  }
  if (p !== src.length) throw new RangeError(`${src.length - p} trailing bytes after compressed integer column`);
  return out;
}

/** Splits a blob into its columns (§5): one field = whole blob; several = BE u64 length + bytes each, sorted order. */
function splitBlob(blob: Uint8Array, blobFields: string[]): Uint8Array[] {
  if (blobFields.length === 0) return [];
  if (blobFields.length === 1) return [blob];
  const out: Uint8Array[] = [];
  let p = 0;
  for (const f of blobFields) {
    if (p + 8 > blob.length) throw new RangeError(`blob truncated before field "${f}"`);
    const n = readBigU64(blob, p, false);
    p += 8;
    if (p + n > blob.length) throw new RangeError(`blob field "${f}" claims ${n} bytes, past the end of the blob`);
    out.push(blob.subarray(p, p + n));
    p += n;
  }
  if (p !== blob.length) throw new RangeError(`${blob.length - p} trailing bytes after the last blob field`);
  return out;
}

/** Resolves a schema shape with -1 against an element count. */
export function resolveShape(shape: number[], count: number): number[] {
  const known = shape.filter((d) => d > 0).reduce((a, b) => a * b, 1);
  const free = shape.filter((d) => d < 0).length;
  if (free === 0) {
    if (known !== count) throw new RangeError(`array of ${count} elements does not match shape [${shape}]`);
    return shape.slice();
  }
  if (count % known !== 0) throw new RangeError(`array of ${count} elements does not fit shape [${shape}]`);
  const rest = count / known;
  let first = true;
  // Several -1: the first takes the remaining size, the others 1 (a flat, always-valid reading).
  return shape.map((d) => (d > 0 ? d : first ? ((first = false), rest) : 1));
}

function toNdArray(bytes: Uint8Array, spec: FieldSpec): NdArray {
  const dtype = spec.type as ArrayType;
  const size = ELEM_SIZE[dtype];
  if (bytes.length % size !== 0) {
    throw new RangeError(`${bytes.length} bytes is not a whole number of ${dtype} elements`);
  }
  const copy = bytes.slice();
  const count = bytes.length / size;
  const data = dtype === "int32"
    ? new Int32Array(copy.buffer)
    : dtype === "int64"
    ? new BigInt64Array(copy.buffer)
    : dtype === "float32"
    ? new Float32Array(copy.buffer)
    : new Float64Array(copy.buffer);
  return { dtype, shape: resolveShape(spec.shape!, count), data };
}

/** Decodes one blob into field values (§5). `compressed` = version >= 3.0 and the schema has an int array. */
export function decodeBlob(blob: Uint8Array, entry: SchemaEntry, compressed: boolean): MindRecordRow {
  return decodeColumns(splitBlob(blob, entry.blobFields), entry, compressed);
}

/** Decodes a blob's columns (in `entry.blobFields` order); a null column is left out of the row. */
function decodeColumns(cols: (Uint8Array | null)[], entry: SchemaEntry, compressed: boolean): MindRecordRow {
  const row: MindRecordRow = {};
  entry.blobFields.forEach((f, i) => {
    const spec = entry.schema[f];
    let bytes = cols[i];
    if (bytes === null) return;
    if (compressed && (spec.type === "int32" || spec.type === "int64")) bytes = decompressInt(bytes, spec.type);
    row[f] = spec.type === "bytes" ? bytes.slice() : spec.shape ? toNdArray(bytes, spec) : bytes.slice();
  });
  return row;
}

function arrayBytes(v: FieldValue | number[] | undefined, spec: FieldSpec, name: string): Uint8Array {
  if (spec.type === "bytes") {
    if (!(v instanceof Uint8Array)) throw new TypeError(`Field "${name}" (bytes) needs a Uint8Array`);
    return v;
  }
  const dtype = spec.type as ArrayType;
  let data: ArrayLike<number | bigint>;
  if (v && typeof v === "object" && "data" in v) data = (v as NdArray).data;
  else if (ArrayBuffer.isView(v)) data = v as unknown as ArrayLike<number>;
  else if (Array.isArray(v)) data = (v as unknown[]).flat(Infinity) as number[];
  else throw new TypeError(`Field "${name}" (${dtype} array) needs an array`);
  const n = data.length;
  const out = new Uint8Array(n * ELEM_SIZE[dtype]);
  const dv = new DataView(out.buffer);
  for (let i = 0; i < n; i++) {
    const x = data[i];
    if (dtype === "int32") dv.setInt32(i * 4, Number(x), true);
    else if (dtype === "int64") dv.setBigInt64(i * 8, BigInt(x), true);
    else if (dtype === "float32") dv.setFloat32(i * 4, Number(x), true);
    else dv.setFloat64(i * 8, Number(x), true);
  }
  return out;
}

/**
 * Builds the blob of one row as python `_merge_blob` + ShardColumn::CompressBlob
 * (§5). Returns the stored blob and the bytes saved by compression.
 */
export function encodeBlob(
  row: MindRecordRow,
  entry: SchemaEntry,
  compress: boolean,
): { blob: Uint8Array; saved: number } {
  const bf = entry.blobFields;
  if (bf.length === 0) return { blob: new Uint8Array(4), saved: 0 }; // 4 zero bytes (WriteRawDataPreCheck).
  const cols = bf.map((f) => arrayBytes(row[f], entry.schema[f], f));
  const isIntCol = (f: string) => entry.schema[f].type === "int32" || entry.schema[f].type === "int64";
  const merged = (parts: Uint8Array[]) => {
    if (parts.length === 1) return parts[0];
    const total = parts.reduce((a, p) => a + 8 + p.length, 0);
    const out = new Uint8Array(total);
    const dv = new DataView(out.buffer);
    let o = 0;
    for (const p of parts) {
      dv.setBigUint64(o, BigInt(p.length), false); // big-endian length (shard_writer.cc MergeBlobData).
      out.set(p, o + 8);
      o += 8 + p.length;
    }
    return out;
  };
  const plain = merged(cols);
  if (!compress) return { blob: plain, saved: 0 };
  // Single column: the whole blob is compressed as that column's int type (even when it is not an int).
  const packed = bf.length === 1
    ? compressInt(plain, entry.schema[bf[0]].type === "int32" ? "int32" : "int64")
    : merged(cols.map((c, i) => (isIntCol(bf[i]) ? compressInt(c, entry.schema[bf[i]].type as "int32" | "int64") : c)));
  return { blob: packed, saved: plain.length - packed.length };
}

// ---------------------------------------------------------------------------------------------------------------------
// Raw rows (§4)

function rawValueToField(v: MsgValue, spec: FieldSpec | undefined): FieldValue {
  if (v instanceof MsgFloat) return spec?.type === "float32" ? v.value : v.value;
  if (typeof v === "number" || typeof v === "bigint" || typeof v === "string" || v instanceof Uint8Array) return v;
  if (v === null || typeof v === "boolean") return v === null ? "null" : String(v);
  // Nested values never appear in post-1.0 files; keep them as JSON text rather than failing.
  return canonicalJson(msgToPlain(v));
}

function msgToPlain(v: MsgValue): unknown {
  if (v instanceof MsgFloat) return v.value;
  if (v instanceof Map) return Object.fromEntries([...v].map(([k, x]) => [k, msgToPlain(x)]));
  if (Array.isArray(v)) return v.map(msgToPlain);
  if (v instanceof Uint8Array) return [...v];
  return v;
}

/** Encodes the raw (non-blob) part of a row as msgpack; `{"id":0}` when the schema has no raw field (§4). */
export function encodeRaw(row: MindRecordRow, entry: SchemaEntry, floats: FloatMode): Uint8Array {
  const m = new Map<string, MsgValue>();
  for (const [k, spec] of Object.entries(entry.schema)) {
    if (isBlobField(spec)) continue;
    const v = row[k];
    if (v === undefined) throw new TypeError(`Row has no value for field "${k}"`);
    if (spec.type === "float32" || spec.type === "float64") {
      if (typeof v !== "number" && typeof v !== "bigint") {
        throw new TypeError(`Field "${k}" (${spec.type}) needs a number`);
      }
      m.set(k, new MsgFloat(Number(v)));
    } else if (spec.type === "string") {
      if (typeof v !== "string") throw new TypeError(`Field "${k}" (string) needs a string`);
      m.set(k, v);
    } else {
      if (!(typeof v === "bigint" || (typeof v === "number" && Number.isInteger(v)))) {
        throw new TypeError(`Field "${k}" (${spec.type}) needs an integer, got ${String(v)}`);
      }
      const big = BigInt(v);
      const [lo, hi] = spec.type === "int32" ? [-(2n ** 31n), 2n ** 31n - 1n] : [-(2n ** 63n), 2n ** 63n - 1n];
      if (big < lo || big > hi) throw new RangeError(`Field "${k}" (${spec.type}) value ${v} is out of range`);
      m.set(k, v);
    }
  }
  if (m.size === 0) m.set("id", 0); // kDummyId
  return encodeMsgpack(m, { floats });
}

// ---------------------------------------------------------------------------------------------------------------------
// Reading

/** Options for {@linkcode openMindRecord}. */
export interface OpenOptions {
  /** Read only the given file even when its header lists other shards. */
  singleShard?: boolean;
}

/** One shard of an open set. */
export interface ShardInfo {
  file: string;
  header: MindRecordHeader;
  rows: number;
}

/** An open MindRecord set: headers of every shard, and rows on demand. */
export interface MindRecordSet {
  /** Shard files in shard_addresses order. */
  shards: ShardInfo[];
  /** The schema (every shard carries the same one). */
  schema: SchemaEntry;
  version: "2.0" | "3.0";
  /** Total rows of all shards. */
  numRows: number;
  /** Floats seen while reading rows so far (for re-encoding byte-exact). */
  floatStats: DecodeStats;
  /** Rows of one shard in ROW_ID order. */
  shardRows(shard: number): Generator<MindRecordRow>;
  /** Rows of every shard: shard order, then row order (§7). */
  rows(): Generator<MindRecordRow>;
  /**
   * Rows of every shard with the blob fields in `lazy` left on disk: each row's `refs` says where they are.
   * Memory does not grow with the bytes of those fields.
   */
  lazyRows(lazy: ReadonlySet<string>): Generator<MindRecordRow & { refs?: Record<string, FieldRef> }>;
}

function rowCount(h: MindRecordHeader): number {
  return h.pages.filter((p) => p.pageType === "BLOB_DATA").reduce((a, p) => a + p.endRowId - p.startRowId, 0);
}

/**
 * Opens a MindRecord set from any of its shard files (usually shard 0): the
 * header's shard_addresses name the other files, looked up beside it (§7).
 * Throws {@linkcode InputError} naming the file for anything malformed.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const set = openMindRecord("tests/fixtures/mindrecord/twobytes.mindrecord");
 * assertEquals([set.version, set.numRows, set.schema.blobFields], ["2.0", 5, ["img_data", "label_data"]]);
 * ```
 */
export function openMindRecord(file: string, options: OpenOptions = {}): MindRecordSet {
  const first = readHeader(file);
  const dir = path.dirname(file);
  const files = options.singleShard ? [file] : first.shardAddresses.map((a) => path.join(dir, path.basename(a)));
  const shards: ShardInfo[] = files.map((f, i) => {
    if (options.singleShard || path.resolve(f) === path.resolve(file)) {
      return { file: f, header: first, rows: rowCount(first) };
    }
    if (!fs.existsSync(f)) {
      throw new InputError(
        `shard ${i} of ${files.length} is missing (listed in shard_addresses of ${file}); ` +
          `copy every shard, or read this file alone`,
        { file: f },
      );
    }
    const h = readHeader(f);
    return { file: f, header: h, rows: rowCount(h) };
  });
  for (const s of shards) {
    const h = s.header;
    const same = h.headerSize === first.headerSize && h.pageSize === first.pageSize && h.version === first.version &&
      canonicalJson(h.schemas.map(schemaToJson)) === canonicalJson(first.schemas.map(schemaToJson));
    if (!same) {
      throw new InputError(`shard header disagrees with ${file} (sizes, version or schema)`, {
        file: s.file,
        where: "header",
      });
    }
  }
  const schema = first.schemas[0];
  const compressed = first.version >= "3.0" && hasIntArray(schema.schema);
  const floatStats: DecodeStats = { f32: 0, f64Exact32: 0 };
  function* shardRows(k: number): Generator<MindRecordRow> {
    const { file: f, header: h } = shards[k];
    yield* readShardRows(f, h, schema, compressed, floatStats);
  }
  return {
    shards,
    schema,
    version: first.version,
    numRows: shards.reduce((a, s) => a + s.rows, 0),
    floatStats,
    shardRows,
    *rows() {
      for (let k = 0; k < shards.length; k++) yield* shardRows(k);
    },
    *lazyRows(lazy) {
      for (const { file: f, header: h } of shards) yield* readShardRows(f, h, schema, compressed, floatStats, lazy);
    },
  };
}

/** A shard's row groups in ROW_ID order: each raw page's groups point at blob pages by page_type_id (§3). */
function rowGroups(file: string, h: MindRecordHeader): { raw: PageInfo; blob: PageInfo; offset: number }[] {
  const blobByType = new Map<number, PageInfo>();
  for (const p of h.pages) if (p.pageType === "BLOB_DATA") blobByType.set(p.pageTypeId, p);
  const groups: { raw: PageInfo; blob: PageInfo; offset: number }[] = [];
  const rawPages = h.pages.filter((p) => p.pageType === "RAW_DATA").sort((a, b) => a.pageId - b.pageId);
  for (const raw of rawPages) {
    // An empty raw page serializes its empty group list as [{"id":0,"offset":0}] (shard_page.cc): it holds no rows.
    if (raw.pageSize === 0) continue;
    for (const [gid, offset] of raw.rowGroupIds) {
      const blob = blobByType.get(gid);
      if (!blob) {
        throw new InputError(`raw page ${raw.pageId} refers to missing blob row group ${gid}`, {
          file,
          where: "header",
        });
      }
      groups.push({ raw, blob, offset });
    }
  }
  groups.sort((a, b) => a.blob.startRowId - b.blob.startRowId);
  const expected = rowCount(h);
  const covered = new Set(groups.map((g) => g.blob.pageTypeId));
  if (
    covered.size !== groups.length || groups.reduce((a, g) => a + g.blob.endRowId - g.blob.startRowId, 0) !== expected
  ) {
    throw new InputError(`raw pages do not cover every blob page exactly once`, { file, where: "header" });
  }
  return groups;
}

/** Where a field left on disk lives: `length` bytes at byte `offset` of `file`. */
export interface FieldRef {
  file: string;
  offset: number;
  length: number;
}

/**
 * Rows of one shard. Fields named in `lazy` (blob fields) are not read: the row
 * gets a {@linkcode FieldRef} for each in `refs`, and the blob pages are read
 * by the few bytes each row needs instead of whole, so memory does not grow
 * with the data (§3, §5).
 */
function* readShardRows(
  file: string,
  h: MindRecordHeader,
  entry: SchemaEntry,
  compressed: boolean,
  stats: DecodeStats,
  lazy?: ReadonlySet<string>,
): Generator<MindRecordRow & { refs?: Record<string, FieldRef> }> {
  const groups = rowGroups(file, h);
  let fd: number;
  try {
    fd = fs.openSync(file, "r");
  } catch (e) {
    throw new InputError(`cannot read MindRecord file (${(e as Error).message})`, { file, cause: e });
  }
  const pageStart = (p: PageInfo) => h.headerSize + h.pageSize * p.pageId;
  const cache = new Map<number, Uint8Array>();
  const page = (p: PageInfo): Uint8Array => {
    let b = cache.get(p.pageId);
    if (!b) {
      b = new Uint8Array(p.pageSize);
      let got: number;
      try {
        got = fs.readSync(fd, b, 0, b.length, pageStart(p));
      } catch (e) {
        throw new InputError(`cannot read page ${p.pageId} (${(e as Error).message})`, { file, cause: e });
      }
      if (got !== b.length) throw new InputError(`page ${p.pageId} is truncated`, { file, where: `page ${p.pageId}` });
      if (cache.size >= 2) cache.clear();
      cache.set(p.pageId, b);
    }
    return b;
  };
  // Lazy mode: `n` bytes at `off` of a blob page, read on their own.
  const slice = (p: PageInfo, off: number, n: number, where: string): Uint8Array => {
    if (off + n > p.pageSize) {
      throw new InputError(`blob data runs past the end of page ${p.pageId}`, { file, where });
    }
    const b = new Uint8Array(n);
    const got = fs.readSync(fd, b, 0, n, pageStart(p) + off);
    if (got !== n) throw new InputError(`page ${p.pageId} is truncated`, { file, where });
    return b;
  };
  try {
    for (const g of groups) {
      let rawPos = g.offset, blobPos = 0;
      for (let r = g.blob.startRowId; r < g.blob.endRowId; r++) {
        const where = `row ${r} (raw page ${g.raw.pageId}, blob page ${g.blob.pageId})`;
        const fail = (msg: string, cause?: unknown): never => {
          throw new InputError(msg, { file, where, cause });
        };
        const rawBytes = page(g.raw);
        if (rawPos + 8 > rawBytes.length) fail("raw row length runs past the end of its page");
        const rl = readBigU64(rawBytes, rawPos, true);
        if (rawPos + 8 + rl > rawBytes.length) fail(`raw row of ${rl} bytes runs past the end of its page`);
        let rawVal: MsgValue;
        try {
          rawVal = decodeMsgpack(rawBytes.subarray(rawPos + 8, rawPos + 8 + rl), stats);
        } catch (e) {
          fail(`raw row is not valid msgpack: ${(e as Error).message}`, e);
        }
        rawPos += 8 + rl;
        if (!(rawVal! instanceof Map)) fail("raw row is not a msgpack map");
        let row: MindRecordRow & { refs?: Record<string, FieldRef> };
        if (!lazy) {
          const blobBytes = page(g.blob);
          if (blobPos + 8 > blobBytes.length) fail("blob row length runs past the end of its page");
          const bl = readBigU64(blobBytes, blobPos, true);
          if (blobPos + 8 + bl > blobBytes.length) fail(`blob row of ${bl} bytes runs past the end of its page`);
          try {
            row = decodeBlob(blobBytes.subarray(blobPos + 8, blobPos + 8 + bl), entry, compressed);
          } catch (e) {
            if (e instanceof InputError) throw e;
            fail(`bad blob: ${(e as Error).message}`, e);
          }
          blobPos += 8 + bl;
        } else {
          const bl = readBigU64(slice(g.blob, blobPos, 8, where), 0, true);
          if (blobPos + 8 + bl > g.blob.pageSize) fail(`blob row of ${bl} bytes runs past the end of its page`);
          const cols: (Uint8Array | null)[] = [];
          const refs: Record<string, FieldRef> = {};
          const one = entry.blobFields.length === 1;
          let p = blobPos + 8;
          for (const f of entry.blobFields) {
            let n = bl;
            if (!one) {
              if (p + 8 > blobPos + 8 + bl) fail(`blob truncated before field "${f}"`);
              n = readBigU64(slice(g.blob, p, 8, where), 0, false);
              p += 8;
              if (p + n > blobPos + 8 + bl) fail(`blob field "${f}" claims ${n} bytes, past the end of the blob`);
            }
            if (lazy.has(f)) {
              refs[f] = { file, offset: pageStart(g.blob) + p, length: n };
              cols.push(null);
            } else cols.push(slice(g.blob, p, n, where));
            p += n;
          }
          if (!one && p !== blobPos + 8 + bl) fail(`${blobPos + 8 + bl - p} trailing bytes after the last blob field`);
          try {
            row = decodeColumns(cols, entry, compressed);
          } catch (e) {
            fail(`bad blob: ${(e as Error).message}`, e);
          }
          row!.refs = refs;
          blobPos += 8 + bl;
        }
        for (const [k, v] of rawVal! as Map<string, MsgValue>) {
          const spec = entry.schema[k];
          if (!spec || isBlobField(spec)) continue; // e.g. the dummy {"id":0} of all-blob schemas.
          row![k] = rawValueToField(v, spec);
        }
        yield row!;
      }
    }
  } finally {
    fs.closeSync(fd);
  }
}

/** The float mode a set's raw rows were written with, judged from the floats read so far (f64 when unknown). */
export function detectFloatMode(stats: DecodeStats): FloatMode {
  return stats.f32 > 0 && stats.f64Exact32 === 0 ? "compact" : "f64";
}

// ---------------------------------------------------------------------------------------------------------------------
// .db index (§6)

const SQL_TYPE: Record<string, string> = {
  int32: "INTEGER",
  int64: "INTEGER",
  float32: "NUMERIC",
  float64: "NUMERIC",
  string: "TEXT",
};

function dbFieldName(field: string, schemaId: number): string {
  // ShardIndexGenerator::GenerateFieldName: '-' and '.' become '_'; only [0-9A-Za-z_] allowed.
  const n = field.replace(/[-.]/g, "_");
  if (!/^[0-9A-Za-z_]+$/.test(n)) {
    throw new TypeError(`Index field name must be composed of 0-9, a-z, A-Z or _: ${field}`);
  }
  return `${n}_${schemaId}`;
}

/** The exact CREATE TABLE INDEXES statement (ShardIndexGenerator::CreateDatabase). */
export function createIndexesSql(h: MindRecordHeader): string {
  let sql = "CREATE TABLE INDEXES(" +
    "  ROW_ID               INT  NOT NULL, PAGE_ID_RAW          INT  NOT NULL" +
    ", PAGE_OFFSET_RAW      INT  NOT NULL, PAGE_OFFSET_RAW_END  INT  NOT NULL" +
    ", ROW_GROUP_ID         INT  NOT NULL, PAGE_ID_BLOB         INT  NOT NULL" +
    ", PAGE_OFFSET_BLOB     INT  NOT NULL, PAGE_OFFSET_BLOB_END INT  NOT NULL";
  const fields = h.indexFields ?? [];
  fields.forEach((f, i) => {
    const t = SQL_TYPE[h.schemas[f.schemaId].schema[f.field]?.type ?? ""] ?? "TEXT";
    sql += `,INC_${i} INT, ${dbFieldName(f.field, f.schemaId)} ${t}`;
  });
  sql += ", PRIMARY KEY(ROW_ID";
  for (let i = 0; i < fields.length; i++) sql += `,INC_${i}`;
  return sql + "));";
}

/** Per-row facts the .db needs, in shard-local row order. */
interface DbRowFacts {
  rawLen: number[];
  blobLen: number[];
  index: (number | bigint | string)[][];
}

function writeIndexDb(
  dbFile: string,
  shardName: string,
  h: MindRecordHeader,
  facts: DbRowFacts,
  quotedStrings: boolean,
): void {
  const db = new DatabaseSync(dbFile);
  try {
    // Same statements in the same order as ShardIndexGenerator (CreateDatabase, CreateShardNameTable, ExecuteTransaction).
    db.exec("DROP TABLE IF EXISTS INDEXES;");
    db.exec(createIndexesSql(h));
    db.exec("DROP TABLE IF EXISTS SHARD_NAME;");
    db.exec("CREATE TABLE SHARD_NAME(NAME TEXT NOT NULL);");
    db.prepare("INSERT INTO SHARD_NAME (NAME) VALUES (:SHARD_NAME);").run({ ":SHARD_NAME": shardName });
    const fields = h.indexFields ?? [];
    let cols =
      "ROW_ID,ROW_GROUP_ID,PAGE_ID_RAW,PAGE_OFFSET_RAW,PAGE_OFFSET_RAW_END,PAGE_ID_BLOB,PAGE_OFFSET_BLOB,PAGE_OFFSET_BLOB_END";
    let vals =
      ":ROW_ID,:ROW_GROUP_ID,:PAGE_ID_RAW,:PAGE_OFFSET_RAW,:PAGE_OFFSET_RAW_END,:PAGE_ID_BLOB,:PAGE_OFFSET_BLOB,:PAGE_OFFSET_BLOB_END";
    fields.forEach((f, i) => {
      cols += `,INC_${i},${dbFieldName(f.field, f.schemaId)}`;
      vals += `,:INC_${i},:${dbFieldName(f.field, f.schemaId)}`;
    });
    db.exec("BEGIN TRANSACTION;");
    const blobByType = new Map<number, PageInfo>();
    for (const p of h.pages) if (p.pageType === "BLOB_DATA") blobByType.set(p.pageTypeId, p);
    for (const raw of h.pages.filter((p) => p.pageType === "RAW_DATA")) {
      const stmt = db.prepare(`INSERT INTO INDEXES (${cols}) VALUES( ${vals} )`);
      for (const [gid, offset] of raw.rowGroupIds) {
        const blob = blobByType.get(gid);
        if (!blob) continue;
        let rawOff = offset, blobOff = 0;
        for (let r = blob.startRowId; r < blob.endRowId; r++) {
          const p: Record<string, number | bigint | string> = {
            ":ROW_ID": BigInt(r),
            ":ROW_GROUP_ID": BigInt(blob.pageTypeId),
            ":PAGE_ID_RAW": BigInt(raw.pageId),
            ":PAGE_OFFSET_RAW": BigInt(rawOff),
            ":PAGE_OFFSET_RAW_END": BigInt(rawOff + 8 + facts.rawLen[r]),
            ":PAGE_ID_BLOB": BigInt(blob.pageId),
            ":PAGE_OFFSET_BLOB": BigInt(blobOff),
            ":PAGE_OFFSET_BLOB_END": BigInt(blobOff + 8 + facts.blobLen[r]),
          };
          rawOff += 8 + facts.rawLen[r];
          blobOff += 8 + facts.blobLen[r];
          fields.forEach((f, i) => {
            p[`:INC_${i}`] = 0n;
            let v = facts.index[r][i];
            // Files from MindSpore before r1.0 stored string index values JSON-quoted (§6).
            if (quotedStrings && typeof v === "string") v = JSON.stringify(v);
            p[`:${dbFieldName(f.field, f.schemaId)}`] = typeof v === "number" && Number.isInteger(v) &&
                SQL_TYPE[h.schemas[f.schemaId].schema[f.field].type] === "INTEGER"
              ? BigInt(v)
              : v;
          });
          stmt.run(p);
        }
      }
    }
    db.exec("END TRANSACTION;");
  } finally {
    db.close();
  }
}

/** Reads a shard's `.db` index: the shard name and every INDEXES row ordered by ROW_ID. */
export function readIndexDb(dbFile: string): { shardName: string; rows: Record<string, unknown>[] } {
  let db: DatabaseSync;
  try {
    db = new DatabaseSync(dbFile, { readOnly: true });
  } catch (e) {
    throw new InputError(`cannot open index database (${(e as Error).message})`, { file: dbFile });
  }
  try {
    const name = db.prepare("SELECT NAME FROM SHARD_NAME").get() as { NAME?: string } | undefined;
    const rows = db.prepare("SELECT * FROM INDEXES ORDER BY ROW_ID").all() as Record<string, unknown>[];
    return { shardName: String(name?.NAME ?? ""), rows };
  } catch (e) {
    throw new InputError(`not a MindRecord index database (${(e as Error).message})`, { file: dbFile });
  } finally {
    db.close();
  }
}

/** True when a `.db` stores string index values JSON-quoted (MindSpore before r1.0, §6). */
export function indexDbQuotesStrings(dbFile: string): boolean {
  const { rows } = readIndexDb(dbFile);
  return rows.some((r) =>
    Object.entries(r).some(([k, v]) => /_\d+$/.test(k) && typeof v === "string" && v.length >= 2 && v.startsWith('"'))
  );
}

// ---------------------------------------------------------------------------------------------------------------------
// Writing

/** Options for {@linkcode MindRecordWriter}. */
export interface WriterOptions {
  schema: MindRecordSchema;
  /** Schema description (the SSD scripts use "ssd_json"). */
  desc?: string;
  /** Number of shard files (default 1). */
  shardCount?: number;
  /** Index fields in add_index order; default: every scalar field in sorted order (ShardWriter::SetShardHeader). */
  indexFields?: string[];
  headerSize?: number;
  pageSize?: number;
  /** "3.0" (default, compresses int arrays) or "2.0". */
  version?: "2.0" | "3.0";
  /** Float encoding of raw rows: "f64" (MindSpore 1.x, default) or "compact" (MindSpore 2.x). */
  floats?: FloatMode;
  /** Write the `.db` index beside each shard (default true). */
  writeDb?: boolean;
  /** Store string index values JSON-quoted, as MindSpore before r1.0 did (default false). */
  dbQuotedStrings?: boolean;
  /** Re-encode one shard of a bigger set: the full address list and this file's index in it (shardCount must be 1). */
  shardAddresses?: string[];
  shardId?: number;
  /** Header "statistics" (always null for FileWriter). */
  statistics?: unknown;
}

interface ShardState {
  file: string;
  tmp: string;
  fd: number;
  pages: PageInfo[];
  facts: DbRowFacts;
}

/**
 * Writes a MindRecord set as MindSpore's FileWriter: each {@linkcode write} call
 * is one `write_raw_data` call (§3: CutRowGroup, AppendBlobPage, NewBlobPage,
 * ShiftRawPage, WriteRawPage), {@linkcode commit} writes the headers and the
 * `.db` indexes. Files are written under temporary names and renamed into
 * place on commit, so a failed run never leaves half-written shards.
 */
export class MindRecordWriter {
  readonly files: string[];
  readonly entry: SchemaEntry;
  readonly #opts: Required<
    Omit<WriterOptions, "indexFields" | "shardAddresses" | "shardId" | "desc" | "statistics">
  >;
  readonly #indexFields: { field: string; schemaId: number }[];
  readonly #shards: ShardState[];
  readonly #compress: boolean;
  #compression = 0;
  #nextExtra = 0;
  #rows = 0;
  #done = false;
  #addresses: string[];
  #shardId: number | undefined;
  #statistics: unknown;

  constructor(file: string, options: WriterOptions) {
    const o = options;
    this.#opts = {
      schema: o.schema,
      shardCount: o.shardCount ?? 1,
      headerSize: o.headerSize ?? DEFAULT_HEADER_SIZE,
      pageSize: o.pageSize ?? DEFAULT_PAGE_SIZE,
      version: o.version ?? "3.0",
      floats: o.floats ?? "f64",
      writeDb: o.writeDb ?? true,
      dbQuotedStrings: o.dbQuotedStrings ?? false,
    };
    for (const [k, f] of Object.entries(o.schema)) {
      if (!FIELD_TYPES.has(f.type)) throw new TypeError(`Field "${k}" has unknown type ${f.type}`);
      if (f.shape && (f.type === "string" || f.type === "bytes")) {
        throw new TypeError(`Field "${k}" of type ${f.type} cannot have a shape`);
      }
    }
    this.files = shardFileNames(file, this.#opts.shardCount);
    this.entry = { desc: o.desc ?? "", blobFields: blobFieldsOf(o.schema), schema: o.schema };
    const scalars = Object.keys(o.schema).filter((k) => !isBlobField(o.schema[k])).sort(compareUtf8);
    this.#indexFields = (o.indexFields ?? scalars).map((f) => {
      if (!scalars.includes(f)) throw new TypeError(`Index field "${f}" is not a scalar field of the schema`);
      return { field: f, schemaId: 0 };
    });
    this.#compress = this.#opts.version === "3.0" && hasIntArray(o.schema);
    if (o.shardAddresses && this.files.length !== 1) throw new TypeError("shardAddresses needs shardCount 1");
    this.#addresses = o.shardAddresses ?? this.files.map((f) => path.basename(f));
    this.#shardId = o.shardId;
    this.#statistics = o.statistics ?? null;
    this.#shards = [];
    try {
      for (const f of this.files) {
        fs.mkdirSync(path.dirname(f), { recursive: true });
        const tmp = tempNameFor(f);
        this.#shards.push({
          file: f,
          tmp,
          fd: fs.openSync(tmp, "w+"),
          pages: [],
          facts: { rawLen: [], blobLen: [], index: [] },
        });
      }
    } catch (e) {
      this.abort();
      throw e;
    }
  }

  /** Rows written so far. */
  get rowCount(): number {
    return this.#rows;
  }

  /** One `write_raw_data` call with these rows. */
  write(rows: MindRecordRow[]): void {
    if (this.#done) throw new Error("MindRecordWriter is closed");
    if (rows.length === 0) return;
    try {
      this.#write(rows);
    } catch (e) {
      this.abort();
      throw e;
    }
  }

  #write(rows: MindRecordRow[]): void {
    const P = this.#opts.pageSize;
    const blobs: Uint8Array[] = [], raws: Uint8Array[] = [];
    for (const r of rows) {
      const { blob, saved } = encodeBlob(r, this.entry, this.#compress);
      this.#compression += saved;
      blobs.push(blob);
      raws.push(encodeRaw(r, this.entry, this.#opts.floats));
    }
    const blobSize = blobs.map((b) => 8 + b.length), rawSize = raws.map((b) => 8 + b.length);
    // SetRawDataSize / SetBlobDataSize: every row must fit one page.
    for (let i = 0; i < rows.length; i++) {
      if (blobSize[i] > P || rawSize[i] > P) {
        throw new RangeError(
          `Row of ${Math.max(blobSize[i], rawSize[i])} bytes does not fit a page of ${P} bytes; raise the page size`,
        );
      }
    }
    // BreakIntoShards with the deterministic remainder rule (module doc).
    const k = this.#shards.length, n = rows.length;
    const per = Math.floor(n / k), extra = n % k;
    const gets = new Set<number>();
    for (let i = 0; i < extra; i++) gets.add((this.#nextExtra + i) % k);
    this.#nextExtra = (this.#nextExtra + extra) % k;
    let start = 0;
    for (let s = 0; s < k; s++) {
      const end = start + per + (gets.has(s) ? 1 : 0);
      this.#writeByShard(this.#shards[s], start, end, blobs, raws, blobSize, rawSize, rows);
      start = end;
    }
    this.#rows += n;
  }

  #writeByShard(
    sh: ShardState,
    start: number,
    end: number,
    blobs: Uint8Array[],
    raws: Uint8Array[],
    blobSize: number[],
    rawSize: number[],
    rows: MindRecordRow[],
  ): void {
    if (start === end) return;
    const P = this.#opts.pageSize, H = this.#opts.headerSize;
    const lastOf = (t: PageInfo["pageType"]) => sh.pages.findLast((p) => p.pageType === t) ?? null;
    let lastRaw = lastOf("RAW_DATA");
    const lastBlob = lastOf("BLOB_DATA");
    const sum = (a: number[], s: number, e: number) => a.slice(s, e).reduce((x, y) => x + y, 0);
    const writeAt = (chunks: Uint8Array[], pos: number) => {
      for (const c of chunks) {
        fs.writeSync(sh.fd, c, 0, c.length, pos);
        pos += c.length;
      }
    };
    const lenPrefixed = (data: Uint8Array[], s: number, e: number) => {
      const out: Uint8Array[] = [];
      for (let i = s; i < e; i++) {
        const len = new Uint8Array(8);
        new DataView(len.buffer).setBigUint64(0, BigInt(data[i].length), true);
        out.push(len, data[i]);
      }
      return out;
    };
    // CutRowGroup: group 0 appends to the last blob page; a new group starts when a page would overflow.
    let nBlob = lastBlob ? lastBlob.pageSize : 0;
    let nRaw = lastRaw ? lastRaw.pageSize - lastRaw.rowGroupIds[lastRaw.rowGroupIds.length - 1][1] : 0;
    const groups: [number, number][] = [];
    let ps = start;
    for (let i = start; i < end; i++) {
      if (nBlob === 0 || nBlob + blobSize[i] > P || nRaw + rawSize[i] > P) {
        groups.push([ps, i]);
        ps = i;
        nBlob = blobSize[i];
        nRaw = rawSize[i];
      } else {
        nBlob += blobSize[i];
        nRaw += rawSize[i];
      }
    }
    groups.push([ps, end]);
    // AppendBlobPage.
    const [a0, a1] = groups[0];
    if (a0 !== a1) {
      writeAt(lenPrefixed(blobs, a0, a1), H + P * lastBlob!.pageId + lastBlob!.pageSize);
      lastBlob!.pageSize += sum(blobSize, a0, a1);
      lastBlob!.endRowId += a1 - a0;
    }
    // NewBlobPage.
    let pageId = sh.pages.length - 1;
    let typeId = lastBlob ? lastBlob.pageTypeId : -1;
    let cur = lastBlob ? lastBlob.endRowId : 0;
    for (let g = 1; g < groups.length; g++) {
      const [s, e] = groups[g];
      writeAt(lenPrefixed(blobs, s, e), H + P * (pageId + 1));
      sh.pages.push({
        pageId: ++pageId,
        shardId: 0,
        pageType: "BLOB_DATA",
        pageTypeId: ++typeId,
        startRowId: cur,
        endRowId: cur + e - s,
        rowGroupIds: [],
        pageSize: sum(blobSize, s, e),
      });
      cur += e - s;
    }
    // ShiftRawPage: move the last row group to a new raw page when the appended rows would not fit.
    if (a0 !== a1 && sum(rawSize, a0, a1) + (lastRaw ? lastRaw.pageSize : 0) > P) {
      const lr = lastRaw!;
      pageId = sh.pages.length - 1;
      const off = lr.rowGroupIds[lr.rowGroupIds.length - 1][1];
      const shift = lr.pageSize - off;
      const buf = new Uint8Array(shift);
      fs.readSync(sh.fd, buf, 0, shift, H + P * lr.pageId + off);
      writeAt([buf], H + P * (pageId + 1));
      lr.pageSize = off;
      lr.rowGroupIds.pop();
      if (lr.rowGroupIds.length === 0) {
        throw new Error("MindRecord writer: cannot shift the only row group of a raw page");
      }
      const gid = lr.rowGroupIds[lr.rowGroupIds.length - 1][0] + 1;
      const np: PageInfo = {
        pageId: pageId + 1,
        shardId: 0,
        pageType: "RAW_DATA",
        pageTypeId: lr.pageId + 1,
        startRowId: 0,
        endRowId: 0,
        rowGroupIds: [[gid, 0]],
        pageSize: shift,
      };
      sh.pages.push(np);
      lastRaw = np;
    }
    // WriteRawPage / EmptyRawPage / AppendRawPage.
    let lastGroupId = lastRaw ? lastRaw.rowGroupIds[lastRaw.rowGroupIds.length - 1][0] : -1;
    const emptyRawPage = (prev: PageInfo | null): PageInfo => {
      const p: PageInfo = {
        pageId: sh.pages.length,
        shardId: 0,
        pageType: "RAW_DATA",
        pageTypeId: prev ? prev.pageId + 1 : 0,
        startRowId: 0,
        endRowId: 0,
        rowGroupIds: [],
        pageSize: 0,
      };
      sh.pages.push(p);
      return p;
    };
    for (let g = 0; g < groups.length; g++) {
      const [s, e] = groups[g];
      if (s === e) continue;
      const rs = sum(rawSize, s, e);
      if (!lastRaw) lastRaw = emptyRawPage(null);
      else if (lastRaw.pageSize + rs > P) lastRaw = emptyRawPage(lastRaw);
      const nBytes = lastRaw.pageSize;
      writeAt(lenPrefixed(raws, s, e), H + P * lastRaw.pageId + nBytes);
      if (g > 0) lastRaw.rowGroupIds.push([++lastGroupId, nBytes]);
      lastRaw.pageSize = nBytes + rs;
    }
    // Facts for the .db, in shard-local row order.
    for (let i = start; i < end; i++) {
      sh.facts.rawLen.push(raws[i].length);
      sh.facts.blobLen.push(blobs[i].length);
      sh.facts.index.push(this.#indexFields.map((f) => {
        const v = rows[i][f.field];
        return typeof v === "number" || typeof v === "bigint" || typeof v === "string" ? v : String(v);
      }));
    }
  }

  /** The header of shard `k` as it stands. */
  header(k: number): MindRecordHeader {
    const sh = this.#shards[k];
    const id = this.#shardId ?? k;
    return {
      headerSize: this.#opts.headerSize,
      pageSize: this.#opts.pageSize,
      version: this.#opts.version,
      compressionSize: this.#opts.version === "2.0" ? undefined : Math.max(0, this.#compression),
      indexFields: this.#indexFields.length > 0 ? this.#indexFields : null,
      pages: sh.pages.map((p) => ({
        ...p,
        shardId: id,
        rowGroupIds: p.rowGroupIds.map((g) => [...g] as [number, number]),
      })),
      schemas: [this.entry],
      shardAddresses: this.#addresses,
      shardId: id,
      statistics: this.#statistics,
    };
  }

  /** Writes headers and indexes, then renames every file into place. */
  commit(): void {
    if (this.#done) throw new Error("MindRecordWriter is closed");
    const dbTmps: string[] = [];
    try {
      for (let k = 0; k < this.#shards.length; k++) {
        const sh = this.#shards[k];
        const h = this.header(k);
        const text = new TextEncoder().encode(serializeHeader(h));
        if (text.length + 8 > h.headerSize) {
          throw new RangeError(`Shard header of ${text.length} bytes does not fit header_size ${h.headerSize}`);
        }
        const len = new Uint8Array(8);
        new DataView(len.buffer).setBigUint64(0, BigInt(text.length), true);
        fs.writeSync(sh.fd, len, 0, 8, 0);
        fs.writeSync(sh.fd, text, 0, text.length, 8);
        fs.closeSync(sh.fd);
        sh.fd = -1;
        if (this.#opts.writeDb) {
          const dbTmp = tempNameFor(sh.file + ".db");
          dbTmps.push(dbTmp);
          writeIndexDb(dbTmp, path.basename(sh.file), h, sh.facts, this.#opts.dbQuotedStrings);
        }
      }
      for (let k = 0; k < this.#shards.length; k++) {
        const sh = this.#shards[k];
        fs.renameSync(sh.tmp, sh.file);
        if (this.#opts.writeDb) fs.renameSync(dbTmps[k], sh.file + ".db");
        else fs.rmSync(sh.file + ".db", { force: true });
      }
      this.#done = true;
    } catch (e) {
      for (const t of dbTmps) fs.rmSync(t, { force: true });
      this.abort();
      throw e;
    }
  }

  /** Closes and deletes every temporary file; nothing under the final names is touched. */
  abort(): void {
    this.#done = true;
    for (const sh of this.#shards) {
      if (sh.fd >= 0) {
        try {
          fs.closeSync(sh.fd);
        } catch { /* already closed */ }
        sh.fd = -1;
      }
      fs.rmSync(sh.tmp, { force: true });
    }
  }
}

/**
 * Writes `rows` as a MindRecord set in batches of `batchSize` rows per
 * `write_raw_data` call (default: all rows in one call). Returns the files.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const dir = Deno.makeTempDirSync();
 * const files = writeMindRecord(`${dir}/t.mindrecord`, [{ id: 1 }, { id: 2 }], { schema: { id: { type: "int32" } } });
 * assertEquals([...openMindRecord(files[0]).rows()].map((r) => r.id), [1, 2]);
 * ```
 */
export function writeMindRecord(
  file: string,
  rows: Iterable<MindRecordRow>,
  options: WriterOptions & { batchSize?: number },
): string[] {
  const w = new MindRecordWriter(file, options);
  const bs = options.batchSize ?? Infinity;
  let batch: MindRecordRow[] = [];
  try {
    for (const r of rows) {
      batch.push(r);
      if (batch.length >= bs) {
        w.write(batch);
        batch = [];
      }
    }
    w.write(batch);
    w.commit();
  } catch (e) {
    w.abort();
    throw e;
  }
  return w.files;
}

// ---------------------------------------------------------------------------------------------------------------------
// Dump (deno task records --dump)

/** Shortest decimal text that reads back to the same float32 (via Math.fround). */
export function formatFloat32(x: number): string {
  const f = Math.fround(x);
  if (!Number.isFinite(f)) return JSON.stringify(String(f));
  if (f === 0) return Object.is(f, -0) ? "-0" : "0";
  for (let p = 1; p <= 9; p++) {
    const s = String(Number(f.toPrecision(p)));
    if (Math.fround(Number(s)) === f) return s;
  }
  return String(f);
}

/** Shortest decimal text that reads back to the same float64. */
export function formatFloat64(x: number): string {
  if (!Number.isFinite(x)) return JSON.stringify(String(x));
  if (x === 0) return Object.is(x, -0) ? "-0" : "0";
  return String(x);
}

function formatInt(v: number | bigint): string {
  const b = BigInt(v);
  const safe = b >= BigInt(Number.MIN_SAFE_INTEGER) && b <= BigInt(Number.MAX_SAFE_INTEGER);
  return safe ? b.toString() : JSON.stringify(b.toString());
}

function nestArray(items: string[], shape: number[]): string {
  // Row-major nesting, as numpy's tolist(): a zero-length axis gives [] (or [[], []] further in).
  if (shape.length <= 1) return `[${items.join(",")}]`;
  if (shape[0] === 0) return "[]";
  const step = items.length / shape[0];
  const parts: string[] = [];
  for (let i = 0; i < shape[0]; i++) parts.push(nestArray(items.slice(i * step, (i + 1) * step), shape.slice(1)));
  return `[${parts.join(",")}]`;
}

/**
 * One row as a JSON line for `records --dump`: keys sorted; integers as numbers
 * (beyond ±2^53 as decimal strings); floats as the shortest text that round-trips
 * at their schema width; arrays nested by shape; bytes as {length, sha256}.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const schema = { b: { type: "float32" as const }, a: { type: "int32" as const, shape: [-1, 2] } };
 * const row = { b: 0.1, a: { dtype: "int32" as const, shape: [2, 2], data: new Int32Array([1, 2, 3, 4]) } };
 * assertEquals(dumpRow(row, schema), '{"a":[[1,2],[3,4]],"b":0.1}');
 * ```
 */
export function dumpRow(row: MindRecordRow, schema: MindRecordSchema): string {
  const keys = Object.keys(row).sort(compareUtf8);
  const parts = keys.map((k) => `${JSON.stringify(k)}:${dumpValue(row[k], schema[k])}`);
  return `{${parts.join(",")}}`;
}

function dumpValue(v: FieldValue, spec: FieldSpec | undefined): string {
  if (v instanceof Uint8Array) {
    return `{"length":${v.length},"sha256":"${createHash("sha256").update(v).digest("hex")}"}`;
  }
  if (typeof v === "string") return JSON.stringify(v);
  if (typeof v === "bigint") return formatInt(v);
  if (typeof v === "number") {
    const t = spec?.type;
    if (t === "float32") return formatFloat32(v);
    if (t === "float64") return formatFloat64(v);
    return Number.isInteger(v) ? formatInt(v) : formatFloat64(v);
  }
  const items: string[] = [];
  const d = v.data;
  for (let i = 0; i < d.length; i++) {
    const x = d[i];
    items.push(
      v.dtype === "float32"
        ? formatFloat32(x as number)
        : v.dtype === "float64"
        ? formatFloat64(x as number)
        : formatInt(x),
    );
  }
  const product = v.shape.reduce((a, b) => a * b, 1);
  return nestArray(items, v.shape.length > 0 && product === items.length ? v.shape : [items.length]);
}

/**
 * Writes every row of a set as JSON lines ({@linkcode dumpRow}), shard order then
 * row order, to `out` atomically (temp file, then rename). Returns the row count.
 */
export function dumpMindRecord(
  file: string,
  out: string,
  options: OpenOptions & { onRow?: () => void } = {},
): Promise<number> {
  const set = openMindRecord(file, options);
  fs.mkdirSync(path.dirname(path.resolve(out)), { recursive: true });
  const tmp = tempNameFor(out);
  const fd = fs.openSync(tmp, "w");
  let n = 0;
  try {
    const te = new TextEncoder();
    let buf: string[] = [];
    let size = 0;
    const flush = () => {
      const b = te.encode(buf.join(""));
      fs.writeSync(fd, b, 0, b.length);
      buf = [];
      size = 0;
    };
    for (const row of set.rows()) {
      const line = dumpRow(row, set.schema.schema) + "\n";
      buf.push(line);
      size += line.length;
      if (size > 1 << 20) flush();
      n++;
      options.onRow?.();
    }
    flush();
    fs.closeSync(fd);
    fs.renameSync(tmp, out);
  } catch (e) {
    try {
      fs.closeSync(fd);
    } catch { /* closed */ }
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  return Promise.resolve(n);
}

/** Where one row lives in its shard: what MindSpore's `.db` records for it (§6). */
export interface RowLocation {
  rowId: number;
  rowGroupId: number;
  pageIdRaw: number;
  pageOffsetRaw: number;
  pageOffsetRawEnd: number;
  pageIdBlob: number;
  pageOffsetBlob: number;
  pageOffsetBlobEnd: number;
}

/**
 * The location of every row of one shard, walked from the header's pages and
 * the length prefixes in them (ShardIndexGenerator::GenerateRowData order).
 */
export function rowLocations(file: string, h: MindRecordHeader): RowLocation[] {
  const blobByType = new Map<number, PageInfo>();
  for (const p of h.pages) if (p.pageType === "BLOB_DATA") blobByType.set(p.pageTypeId, p);
  const out: RowLocation[] = [];
  const fd = fs.openSync(file, "r");
  const u64 = new Uint8Array(8);
  const lenAt = (page: PageInfo, off: number, where: string): number => {
    if (off + 8 > page.pageSize) {
      throw new InputError(`length prefix past the end of page ${page.pageId}`, { file, where });
    }
    fs.readSync(fd, u64, 0, 8, h.headerSize + h.pageSize * page.pageId + off);
    const n = readBigU64(u64, 0, true);
    if (off + 8 + n > page.pageSize) {
      throw new InputError(`row runs past the end of page ${page.pageId}`, { file, where });
    }
    return n;
  };
  try {
    for (const raw of h.pages.filter((p) => p.pageType === "RAW_DATA")) {
      for (const [gid, offset] of raw.rowGroupIds) {
        const blob = blobByType.get(gid);
        if (!blob) continue;
        let r0 = offset, b0 = 0;
        for (let r = blob.startRowId; r < blob.endRowId; r++) {
          const where = `row ${r}`;
          const r1 = r0 + 8 + lenAt(raw, r0, where), b1 = b0 + 8 + lenAt(blob, b0, where);
          out.push({
            rowId: r,
            rowGroupId: blob.pageTypeId,
            pageIdRaw: raw.pageId,
            pageOffsetRaw: r0,
            pageOffsetRawEnd: r1,
            pageIdBlob: blob.pageId,
            pageOffsetBlob: b0,
            pageOffsetBlobEnd: b1,
          });
          r0 = r1;
          b0 = b1;
        }
      }
    }
  } finally {
    fs.closeSync(fd);
  }
  return out.sort((a, b) => a.rowId - b.rowId);
}

/**
 * Checks a shard's `.db` against its pages: the SHARD_NAME, and for every row
 * the page ids and offsets MindDataset would take from it. Returns the
 * problems found (empty when the index is right).
 */
export function verifyIndexDb(file: string, h: MindRecordHeader): string[] {
  const dbFile = file + ".db";
  if (!fs.existsSync(dbFile)) return [`${dbFile} is missing (MindSpore's MindDataset needs it)`];
  const { shardName, rows } = readIndexDb(dbFile);
  const problems: string[] = [];
  if (shardName !== path.basename(file)) problems.push(`${dbFile}: SHARD_NAME is ${JSON.stringify(shardName)}`);
  const locs = rowLocations(file, h);
  if (rows.length !== locs.length) problems.push(`${dbFile}: ${rows.length} rows, the shard holds ${locs.length}`);
  const cols: [keyof RowLocation, string][] = [
    ["rowId", "ROW_ID"],
    ["rowGroupId", "ROW_GROUP_ID"],
    ["pageIdRaw", "PAGE_ID_RAW"],
    ["pageOffsetRaw", "PAGE_OFFSET_RAW"],
    ["pageOffsetRawEnd", "PAGE_OFFSET_RAW_END"],
    ["pageIdBlob", "PAGE_ID_BLOB"],
    ["pageOffsetBlob", "PAGE_OFFSET_BLOB"],
    ["pageOffsetBlobEnd", "PAGE_OFFSET_BLOB_END"],
  ];
  for (let i = 0; i < Math.min(rows.length, locs.length) && problems.length < 10; i++) {
    for (const [k, col] of cols) {
      if (Number(rows[i][col]) !== locs[i][k]) {
        problems.push(`${dbFile}: row ${i} ${col} is ${rows[i][col]}, the pages say ${locs[i][k]}`);
        break;
      }
    }
  }
  return problems;
}

/**
 * A human-readable summary of a set: version, schema, index fields, shard files
 * with their row counts (and whether each `.db` is present), and the total.
 */
export function summarizeMindRecord(file: string, options: OpenOptions = {}): string {
  const set = openMindRecord(file, options);
  const h = set.shards[0].header;
  const lines = [
    `MindRecord ${file}`,
    `  version       ${set.version}${
      h.compressionSize !== undefined ? ` (compression_size ${h.compressionSize})` : ""
    }`,
    `  header/page   ${h.headerSize} / ${h.pageSize} bytes`,
    `  schema        ${JSON.stringify(set.schema.desc).slice(0, 100)}${set.schema.desc.length > 98 ? "..." : ""}`,
  ];
  for (const [k, f] of Object.entries(set.schema.schema).sort(([a], [b]) => compareUtf8(a, b))) {
    lines.push(
      `    ${k.padEnd(20)} ${f.type}${f.shape ? ` [${f.shape.join(",")}]` : ""}${isBlobField(f) ? "  (blob)" : ""}`,
    );
  }
  lines.push(`  index fields  ${h.indexFields ? h.indexFields.map((f) => f.field).join(", ") : "none"}`);
  lines.push(`  shards        ${set.shards.length}`);
  for (const s of set.shards) {
    const pages = s.header.pages.length;
    let db = "no .db";
    if (fs.existsSync(s.file + ".db")) {
      try {
        const { shardName, rows } = readIndexDb(s.file + ".db");
        const okName = shardName === path.basename(s.file);
        db = rows.length === s.rows && okName
          ? ".db ok"
          : `.db MISMATCH (${rows.length} rows${okName ? "" : `, SHARD_NAME ${JSON.stringify(shardName)}`})`;
      } catch (e) {
        db = `.db unreadable (${(e as Error).message})`;
      }
    }
    lines.push(`    ${path.basename(s.file).padEnd(24)} ${String(s.rows).padStart(8)} rows  ${pages} pages  ${db}`);
  }
  lines.push(`  rows          ${set.numRows}`);
  return lines.join("\n");
}

// ---------------------------------------------------------------------------------------------------------------------
// Detection schemas: the ModelZoo SSD schema and this workbench's lossless "full" schema

/**
 * The ModelZoo SSD schema (dataset.py data_to_mindrecord_byte_image, §9):
 * `annotation` rows are [ymin, xmin, ymax, xmax, class] in rounded pixels.
 */
export const SSD_SCHEMA: MindRecordSchema = {
  img_id: { type: "int32", shape: [1] },
  image: { type: "bytes" },
  annotation: { type: "int32", shape: [-1, 5] },
};

/** The desc MindSpore's SSD scripts give their schema. */
export const SSD_DESC = "ssd_json";

/**
 * The "full" schema (`convert --schema full`): the SSD columns plus every COCO
 * annotation field, so COCO -> MindRecord -> COCO is exact. `bbox` holds COCO
 * [x, y, w, h] as float64; `meta` holds the source image and annotation objects
 * as JSON; `seq` is the image's position in the source (shards interleave rows,
 * so COCO output is put back in this order); the desc holds {"format",
 * "categories", "top"} as JSON.
 */
export const FULL_SCHEMA: MindRecordSchema = {
  img_id: { type: "int64" },
  file_name: { type: "string" },
  width: { type: "int32" },
  height: { type: "int32" },
  image: { type: "bytes" },
  annotation: { type: "int32", shape: [-1, 5] },
  bbox: { type: "float64", shape: [-1, 4] },
  area: { type: "float64", shape: [-1] },
  iscrowd: { type: "int32", shape: [-1] },
  category_id: { type: "int64", shape: [-1] },
  label: { type: "int32", shape: [-1] },
  ann_id: { type: "int64", shape: [-1] },
  meta: { type: "bytes" },
  seq: { type: "int64" },
};

/** The desc format tag of the full schema. */
export const FULL_FORMAT = "ssd-workbench/full-v1";

/** Axis order of SSD `annotation` rows: "yx" (COCO and VOC, the default) or "xy" (ModelZoo's TXT path). */
export type SsdLayout = "yx" | "xy";

/**
 * The SSD-schema row of a record: boxes rounded (Python round) and written y
 * first, as create_coco_label; VOC records already carry the ModelZoo's -1.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const rec = { imgId: 3, file: "a.jpg", width: 9, height: 9, boxes: new Float64Array([1.5, 2.5, 4, 6]),
 *   labels: new Int32Array([7]), iscrowd: new Uint8Array(1), image: new Uint8Array([1]) };
 * assertEquals([...(ssdRowFromRecord(rec).annotation as NdArray).data], [2, 2, 6, 4, 7]);
 * ```
 */
export function ssdRowFromRecord(r: DetectionRecord, layout: SsdLayout = "yx"): MindRecordRow {
  if (!r.image) throw new InputError("record has no image bytes", { file: r.file });
  if (!(r.imgId >= -2147483648 && r.imgId <= 2147483647)) {
    throw new InputError(`image id ${r.imgId} does not fit the SSD schema's int32 img_id`, { file: r.file });
  }
  const n = r.labels.length;
  const ann = new Int32Array(n * 5); // [N, 5]
  for (let i = 0; i < n; i++) {
    const [x1, y1, x2, y2] = r.boxes.subarray(i * 4, i * 4 + 4);
    const row = layout === "yx" ? [y1, x1, y2, x2] : [x1, y1, x2, y2];
    for (let k = 0; k < 4; k++) ann[i * 5 + k] = pyRound(row[k]);
    ann[i * 5 + 4] = r.labels[i];
  }
  return {
    img_id: { dtype: "int32", shape: [1], data: Int32Array.of(r.imgId) },
    image: r.image,
    annotation: { dtype: "int32", shape: [n, 5], data: ann },
  };
}

function nd(v: FieldValue | undefined, name: string, file: string): NdArray {
  if (!v || typeof v !== "object" || !("data" in v)) throw new InputError(`row has no array field "${name}"`, { file });
  return v;
}

function imageName(imgId: number, image: Uint8Array): string {
  return `${imgId}.${image[0] === 0x89 && image[1] === 0x50 ? "png" : "jpg"}`;
}

/** The record of an SSD-schema row; width and height come from the image header. */
export function recordFromSsdRow(row: MindRecordRow, file: string, layout: SsdLayout = "yx"): DetectionRecord {
  const image = row.image;
  if (!(image instanceof Uint8Array)) throw new InputError(`row has no bytes field "image"`, { file });
  const idArr = nd(row.img_id, "img_id", file);
  const imgId = Number(idArr.data[0] ?? 0);
  const ann = nd(row.annotation, "annotation", file);
  if (ann.data.length % 5 !== 0) throw new InputError(`annotation of image ${imgId} is not [N, 5]`, { file });
  const size = imageSize(image);
  if (!size) throw new InputError(`image of img_id ${imgId} is not a readable JPEG or PNG`, { file });
  const n = ann.data.length / 5;
  const boxes = new Float64Array(n * 4), labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const v = [0, 1, 2, 3, 4].map((k) => Number(ann.data[i * 5 + k]));
    const [x1, y1, x2, y2] = layout === "yx" ? [v[1], v[0], v[3], v[2]] : [v[0], v[1], v[2], v[3]];
    boxes.set([x1, y1, x2, y2], i * 4);
    labels[i] = v[4];
  }
  return { imgId, file: imageName(imgId, image), ...size, boxes, labels, iscrowd: new Uint8Array(n), image };
}

/** The full-schema row of a record (keeps COCO's float boxes, area, iscrowd, ids and every other field). */
export function fullRowFromRecord(r: DetectionRecord, classMap: ClassMap, seq = 0): MindRecordRow {
  const ssd = ssdRowFromRecord({ ...r, imgId: 0 });
  const n = r.labels.length;
  const ex = (r.extra ?? {}) as {
    image?: Record<string, unknown>;
    annotations?: Record<string, unknown>[];
    file_name?: string;
  };
  const anns = ex.annotations && ex.annotations.length === n ? ex.annotations : null;
  const bbox = new Float64Array(n * 4),
    area = new Float64Array(n),
    catId = new BigInt64Array(n),
    annId = new BigInt64Array(n);
  for (let i = 0; i < n; i++) {
    const [x1, y1, x2, y2] = r.boxes.subarray(i * 4, i * 4 + 4);
    const a = anns?.[i];
    const bb = a && Array.isArray(a.bbox) ? (a.bbox as number[]) : [x1, y1, x2 - x1, y2 - y1];
    bbox.set(bb, i * 4);
    area[i] = a && typeof a.area === "number" ? a.area : bb[2] * bb[3];
    catId[i] = BigInt(
      a && Number.isInteger(a.category_id)
        ? (a.category_id as number)
        : (classMap.categoryIds[r.labels[i]] ?? r.labels[i]),
    );
    annId[i] = BigInt(a && Number.isInteger(a.id) ? (a.id as number) : i + 1);
  }
  const fileName = (ex.image?.file_name as string | undefined) ?? ex.file_name ?? path.basename(r.file);
  const meta = new TextEncoder().encode(JSON.stringify({ image: ex.image ?? null, annotations: anns }));
  return {
    img_id: r.imgId,
    file_name: fileName,
    width: r.width,
    height: r.height,
    image: r.image!,
    annotation: ssd.annotation,
    bbox: { dtype: "float64", shape: [n, 4], data: bbox },
    area: { dtype: "float64", shape: [n], data: area },
    iscrowd: { dtype: "int32", shape: [n], data: Int32Array.from(r.iscrowd) },
    category_id: { dtype: "int64", shape: [n], data: catId },
    label: { dtype: "int32", shape: [n], data: Int32Array.from(r.labels) },
    ann_id: { dtype: "int64", shape: [n], data: annId },
    meta,
    seq,
  };
}

/** The record of a full-schema row, with `extra.image` / `extra.annotations` restored for exact COCO output. */
export function recordFromFullRow(row: MindRecordRow, file: string): DetectionRecord {
  const image = row.image;
  if (!(image instanceof Uint8Array)) throw new InputError(`row has no bytes field "image"`, { file });
  const imgId = Number(row.img_id);
  const where = `img_id ${imgId}`;
  const bb = nd(row.bbox, "bbox", file), label = nd(row.label, "label", file), crowd = nd(row.iscrowd, "iscrowd", file);
  const n = label.data.length;
  if (bb.data.length !== n * 4 || crowd.data.length !== n) {
    throw new InputError("bbox/label/iscrowd lengths disagree", { file, where });
  }
  const boxes = new Float64Array(n * 4);
  for (let i = 0; i < n; i++) {
    const [x, y, w, h] = [0, 1, 2, 3].map((k) => Number(bb.data[i * 4 + k]));
    boxes.set([x, y, x + w, y + h], i * 4);
  }
  let meta: { image?: Record<string, unknown> | null; annotations?: Record<string, unknown>[] | null } = {};
  if (row.meta instanceof Uint8Array && row.meta.length > 0) {
    try {
      meta = JSON.parse(new TextDecoder().decode(row.meta));
    } catch (e) {
      throw new InputError(`meta field is not JSON (${(e as Error).message})`, { file, where });
    }
  }
  const extra: Record<string, unknown> = { file_name: row.file_name, seq: Number(row.seq ?? 0) };
  if (meta.image) extra.image = meta.image;
  if (meta.annotations) extra.annotations = meta.annotations;
  return {
    imgId,
    file: String(row.file_name ?? imageName(imgId, image)),
    width: Number(row.width),
    height: Number(row.height),
    boxes,
    labels: Int32Array.from(label.data as Int32Array),
    iscrowd: Uint8Array.from(crowd.data as Int32Array),
    image,
    extra,
  };
}

/** Which detection schema a set uses. */
export function detectionSchemaOf(schema: SchemaEntry): "ssd" | "full" | null {
  const s = schema.schema;
  if (s.bbox && s.label && s.iscrowd && s.image?.type === "bytes" && s.img_id) return "full";
  if (s.annotation && s.image?.type === "bytes" && s.img_id) return "ssd";
  return null;
}

/** The desc JSON of a full-schema set: categories and top-level COCO keys. */
export function fullDesc(desc: string): { categories: CocoCategory[]; top: Record<string, unknown> } | null {
  try {
    const j = JSON.parse(desc);
    if (j && j.format === FULL_FORMAT && Array.isArray(j.categories)) {
      return { categories: j.categories, top: j.top ?? {} };
    }
  } catch { /* not ours */ }
  return null;
}

/** Options for {@linkcode readDetectionRecords}. */
export interface DetectionReadOptions {
  /** Image folder for COCO json input (default: guessed, see guessCocoImages). */
  images?: string;
  policy?: Policy;
  /** Class map for COCO json input ("auto" default). */
  classes?: ClassMap | "auto";
  /** Axis order of SSD-schema annotation rows (default "yx"). */
  layout?: SsdLayout;
  /** Read only this MindRecord file, not its sibling shards. */
  singleShard?: boolean;
  /**
   * Leave the image bytes on disk: records get `imageAt` (see {@linkcode readImageAt}) instead of `image`, and only
   * the head of each image is read, for its size. Memory then does not grow with the images.
   */
  lazyImages?: boolean;
}

/** Bytes read from the head of an image for its size; the whole image when its header lies further in. */
const IMAGE_HEAD_BYTES = 4096;

function readRef(ref: FieldRef, length = ref.length): Uint8Array {
  const n = Math.min(length, ref.length);
  const b = new Uint8Array(n);
  let fd: number;
  try {
    fd = fs.openSync(ref.file, "r");
  } catch (e) {
    throw new InputError(`cannot read MindRecord file (${(e as Error).message})`, { file: ref.file, cause: e });
  }
  try {
    const got = fs.readSync(fd, b, 0, n, ref.offset);
    if (got !== n) {
      throw new InputError(`file is truncated: ${n} bytes at offset ${ref.offset} expected`, { file: ref.file });
    }
  } finally {
    fs.closeSync(fd);
  }
  return b;
}

/**
 * Reads the image bytes a lazily indexed record points at.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const [r] = iterDetectionRecords("tests/fixtures/mindrecord/ssd_coco.mindrecord0", { lazyImages: true });
 * const [e] = iterDetectionRecords("tests/fixtures/mindrecord/ssd_coco.mindrecord0");
 * assertEquals([r.image, readImageAt(r.imageAt!)], [undefined, e.image]);
 * ```
 */
export function readImageAt(ref: FieldRef): Uint8Array {
  return readRef(ref);
}

/**
 * Streams {@linkcode DetectionRecord}s (with `image` bytes) from a MindRecord
 * set in the SSD or full schema, in shard then row order.
 */
export function* iterDetectionRecords(file: string, options: DetectionReadOptions = {}): Generator<DetectionRecord> {
  const set = openMindRecord(file, { singleShard: options.singleShard });
  const kind = detectionSchemaOf(set.schema);
  if (!kind) {
    throw new InputError(
      `MindRecord schema has no img_id/image/annotation columns (fields: ${Object.keys(set.schema.schema).join(", ")})`,
      { file, where: "header schema 0" },
    );
  }
  if (!options.lazyImages) {
    for (const row of set.rows()) {
      yield kind === "full" ? recordFromFullRow(row, file) : recordFromSsdRow(row, file, options.layout);
    }
    return;
  }
  for (const row of set.lazyRows(new Set(["image"]))) {
    const ref = row.refs!.image;
    let head = readRef(ref, IMAGE_HEAD_BYTES);
    if (!imageSize(head) && ref.length > head.length) head = readRef(ref);
    row.image = head;
    delete row.refs;
    const rec = kind === "full" ? recordFromFullRow(row, ref.file) : recordFromSsdRow(row, ref.file, options.layout);
    delete rec.image;
    rec.imageAt = ref;
    yield rec;
  }
}

/**
 * Reads detection records for training or evaluation from a MindRecord set
 * (SSD or full schema; any shard, usually `ssd.mindrecord0`) or a COCO json
 * (with `options.images` as the image folder). Records carry `image` bytes.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const recs = readDetectionRecords("tests/fixtures/coco/instances.json"); // images found in ./images
 * assertEquals(recs.every((r) => r.image !== undefined), true);
 * ```
 */
export function readDetectionRecords(file: string, options: DetectionReadOptions = {}): DetectionRecord[] {
  if (file.toLowerCase().endsWith(".json")) {
    return readCoco(file, {
      images: options.images ?? guessCocoImages(file),
      policy: options.policy,
      classes: options.classes,
      readImages: true,
    })
      .records;
  }
  return [...iterDetectionRecords(file, options)];
}
