/**
 * What one MindRecord row is inside the page slots (§3 of
 * `mindrecord_format.md`): a u64-length-prefixed raw row in a RAW_DATA page and
 * a u64-length-prefixed blob in a BLOB_DATA page. This file codes both: the
 * blob (§5: the blob fields merged, int32/int64 arrays compressed as
 * ShardColumn::CompressInt in version 3.0) and the raw row (§4: the other
 * fields as msgpack). Placing rows in pages is the writer's part; walking the
 * pages is the reader's.
 *
 * @module
 */
import { encodeMsgpack, type FloatMode, MsgFloat, type MsgValue } from "./msgpack.ts";
import {
  type ArrayType,
  type FieldSpec,
  type FieldValue,
  isBlobField,
  type MindRecordRow,
  type NdArray,
  type SchemaEntry,
} from "./mindrecord_format.ts";
import { canonicalJson } from "./mindrecord_header.ts";

const ELEM_SIZE: Record<ArrayType, number> = { int32: 4, int64: 8, float32: 4, float64: 8 };

// ---------------------------------------------------------------------------------------------------------------------
// Blob coding (§5)

/** The u64 at byte `off` of `b` (a length prefix), little- or big-endian; capped at Number.MAX_SAFE_INTEGER. */
export function readBigU64(b: Uint8Array, off: number, le: boolean): number {
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
export function decodeColumns(cols: (Uint8Array | null)[], entry: SchemaEntry, compressed: boolean): MindRecordRow {
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

/** A raw row's msgpack value as a field value (§4); the reader calls it for every non-blob field. */
export function rawValueToField(v: MsgValue, spec: FieldSpec | undefined): FieldValue {
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
