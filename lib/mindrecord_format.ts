/**
 * MindRecord, MindSpore's dataset file format: the parts every other file
 * shares. Schema types (fields, rows, n-dimensional arrays), the default
 * header and page slot sizes (§1), which fields are stored in the blob (§2,
 * §5) and the shard file names of a set (§7).
 *
 * The lib/mindrecord_*.ts files read any version 2.0 / 3.0 set (one or many
 * shards, compressed integer arrays, one or several blob fields, float32 or
 * float64 msgpack floats) and write files byte-identical to what MindSpore's
 * FileWriter writes, with the `.db` SQLite index beside each shard. Each file
 * is one part of the format, each importing only the ones before it:
 * format <- header (§1, §2) <- pages (§4, §5) <- index (§6) <- reader
 * (§3, §7), writer (§3) <- dump, ssd (§9).
 *
 * Section numbers (§) refer to the on-disk spec, shared notes
 * `mindrecord_format.md`, which was read from MindSpore's C++ source
 * (shard_writer.cc, shard_header.cc, shard_column.cc, shard_index_generator.cc).
 *
 * @module
 */
import { compareUtf8 } from "./msgpack.ts";

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

/** One schema entry of a header (MindRecord writes exactly one). */
export interface SchemaEntry {
  desc: string;
  blobFields: string[];
  schema: MindRecordSchema;
}

/** The field types of a post-1.0 schema (for the header parser and the writer; not in mod.ts). */
export const FIELD_TYPES = new Set(["int32", "int64", "float32", "float64", "string", "bytes"]);

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
