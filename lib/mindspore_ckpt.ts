/**
 * MindSpore checkpoint files (`.ckpt`), read and written byte for byte as MindSpore does. Sources, in
 * mindspore-ai/mindspore:
 *
 * - Schema `mindspore/ccsrc/utils/checkpoint.proto` (proto2): `Checkpoint { repeated Value value = 1 }`,
 *   `Value { required string tag = 1; oneof value { TensorProto tensor = 2; MapTensorProto maptensor = 3 } }`,
 *   `TensorProto { repeated int64 dims = 1; required string tensor_type = 2; required bytes tensor_content = 3 }`.
 * - Writer `mindspore/python/mindspore/train/serialization.py`: `save_checkpoint` lists each parameter as
 *   `[dims, str(dtype), data]` (dims = the shape; a 0-d tensor gives `[]`, a string `[0]`); `_exec_save` →
 *   `_write_parameter_bytes_data` writes one serialized `Checkpoint` holding one `Value` per parameter, or per
 *   `1024 * SLICE_SIZE` = 512 MiB slice of a bigger one, every slice with the same tag and the full dims. With
 *   `crc_check=True`, `_exec_save` chains `binascii.crc32` over every message written and ends the file with
 *   `b"crc_num" + crc.to_bytes(10, byteorder="big")` (10 bytes, not digits).
 * - Reader `_parse_ckpt_proto`: a file whose bytes `[-17:-10]` are `b"crc_num"` loses its last 17 bytes, which (with
 *   `crc_check`) must equal the CRC-32 of the rest; the rest parses as one `Checkpoint` (concatenated messages
 *   merge). `_load_into_param_dict` joins the `tensor_content` of consecutive values with the same tag, reads dims
 *   `[0]` as a scalar and maps `tensor_type` through `tensor_to_ms_type`.
 * - `save_checkpoint(..., enc_key=...)` encrypts in blocks that each begin with a little-endian magic number
 *   (`mindspore/core/utils/crypto.h`, `crypto.cc` `Encrypt` / `IsCipherFile`); such files are refused.
 *
 * The wire format is protobufjs's (reflection from the schema above), which decodes packed and unpacked `dims`
 * alike and, like MindSpore's protobuf, writes them unpacked.
 *
 * @module
 */
import * as fs from "node:fs";
import * as zlib from "node:zlib";
import protobuf from "protobufjs";
import { InputError } from "./errors.ts";
import { writeFileAtomic } from "./fs_atomic.ts";

// ---------------------------------------------------------------------------------------------------------------------
// Types

/**
 * The `tensor_type` strings MindSpore's loader accepts (`tensor_to_ms_type` in serialization.py; `str(dtype)` of a
 * MindSpore tensor). `"str"` is a string saved through `append_dict`: numpy's UTF-32LE bytes with dims `[0]`.
 * (The newest `tensor_to_ms_type` also has `"Int4"`, packed `qint4x2`; it is not read here.)
 */
export type MsDtype =
  | "Bool"
  | "Int8"
  | "UInt8"
  | "Int16"
  | "UInt16"
  | "Int32"
  | "UInt32"
  | "Int64"
  | "UInt64"
  | "Float16"
  | "BFloat16"
  | "Float32"
  | "Float64"
  | "str";

/** Bytes per element of each dtype (a `"str"` character is one UTF-32 code unit). */
const DTYPE_BYTES: Readonly<Record<MsDtype, number>> = {
  Bool: 1,
  Int8: 1,
  UInt8: 1,
  Int16: 2,
  UInt16: 2,
  Int32: 4,
  UInt32: 4,
  Int64: 8,
  UInt64: 8,
  Float16: 2,
  BFloat16: 2,
  Float32: 4,
  Float64: 8,
  str: 4,
};

/** One tensor of a checkpoint. */
export interface MsTensor {
  /** The value's `tag`: the parameter name, e.g. `conv1.weight` or `moments.conv1.weight`. */
  name: string;
  dtype: MsDtype;
  /** The shape as MindSpore loads it: `[]` for a scalar (stored as dims `[0]`, or `[]`). */
  shape: number[];
  /** The raw little-endian bytes exactly as stored, slices joined; for `"str"`, UTF-32LE text. */
  data: Uint8Array;
  /**
   * Scalars only: `true` when the dims were stored empty (MindSpore 2.x saves a 0-d tensor so) rather than as `[0]`
   * (MindSpore 1.x, and strings). Writers keep it, so both kinds of file re-serialise exactly.
   */
  emptyDims?: boolean;
}

/** A parsed checkpoint file. */
export interface MsCheckpointFile {
  /** Tensors in the order of their first value in the file. */
  tensors: MsTensor[];
  /** Whether the file ended in a `crc_num` trailer (verified). */
  crc: boolean;
}

/** Options for {@linkcode serializeMsCheckpoint}. */
export interface MsWriteOptions {
  /** Append the `crc_num` trailer, as `save_checkpoint(..., crc_check=True)` does. */
  crc?: boolean;
  /** Bytes of `tensor_content` per value; larger tensors are split (MindSpore: 512 MiB). */
  maxTensorBytes?: number;
}

/** MindSpore's slice size: `chunk_size = 1024 * SLICE_SIZE` bytes in `_write_parameter_bytes_data`. */
export const MS_SLICE_BYTES = 512 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------------------------------
// Schema

// checkpoint.proto as in mindspore-ai/mindspore (mindspore/ccsrc/utils/checkpoint.proto); keepCase keeps its names.
// One change: `tag` is a `string` there, read here as `bytes` (the same wire format) so that a name which is not
// valid UTF-8 is caught (protobufjs decodes strings leniently, and such a name would not survive a rewrite).
const SCHEMA = `
syntax = "proto2";
message Checkpoint {
  message Value {
    required bytes tag = 1;
    oneof value {
      TensorProto tensor = 2;
      MapTensorProto maptensor = 3;
    }
  }
  repeated Value value = 1;
}
message TensorProto {
  repeated int64 dims = 1;
  required string tensor_type = 2;
  required bytes tensor_content = 3;
}
message MapTensorProto {
  repeated TensorProto tensor = 1;
}
`;
const CheckpointType = protobuf.parse(SCHEMA, { keepCase: true }).root.lookupType("Checkpoint");

/** A decoded int64: a number, or a Long when protobufjs has the `long` package. */
type Int64 = number | { low: number; high: number; unsigned?: boolean };

interface DecodedTensor {
  dims: Int64[];
  tensor_type: string;
  tensor_content: Uint8Array;
}
interface DecodedValue {
  tag: Uint8Array;
  tensor?: DecodedTensor | null;
  maptensor?: unknown;
}

/** Magic numbers at the start of every encrypted block (crypto.h: GCM, CBC, SM4_CBC `_MAGIC_NUM`), little-endian. */
const CIPHER_MAGIC: ReadonlyMap<number, string> = new Map([
  [0x7F3A5ED8, "AES-GCM"],
  [0x7F3A5ED9, "AES-CBC"],
  [0x7F3A5EDA, "SM4-CBC"],
]);
const CRC_TAG = new TextEncoder().encode("crc_num");
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
/** `b"crc_num"` + 10 bytes. */
const CRC_TRAILER_BYTES = CRC_TAG.length + 10;

function u32le(b: Uint8Array, at: number): number {
  return (b[at] | b[at + 1] << 8 | b[at + 2] << 16 | b[at + 3] << 24) >>> 0;
}

function u32be(b: Uint8Array, at: number): number {
  return (b[at] << 24 | b[at + 1] << 16 | b[at + 2] << 8 | b[at + 3]) >>> 0;
}

function crc32(data: Uint8Array, crc = 0): number {
  return zlib.crc32(data, crc) >>> 0; // binascii.crc32: the zlib / IEEE CRC-32
}

/** A name or string for a message: a corrupt file can hold kilobytes of garbage where a name should be. */
function shown(s: string): string {
  return s.length > 80 ? `${s.slice(0, 80)}…` : s;
}

/** An {@linkcode InputError} about one tensor; without a file the tensor leads the message (else `where` would be lost). */
function tensorError(msg: string, name: string, file?: string, cause?: unknown): InputError {
  const where = `tensor "${shown(name)}"`;
  return new InputError(file ? msg : `${where}: ${msg}`, { file, where, cause });
}

function int64ToNumber(v: Int64): number {
  if (typeof v === "number") return v;
  const n = (v.high >>> 0) * 2 ** 32 + (v.low >>> 0);
  return !v.unsigned && v.high < 0 ? n - 2 ** 64 : n;
}

function elementCount(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function isDtype(s: string): s is MsDtype {
  return Object.hasOwn(DTYPE_BYTES, s);
}

/** Why `data` cannot be a tensor of `dtype` and `shape`, or undefined when it can. */
function sizeProblem(dtype: MsDtype, shape: readonly number[], bytes: number): string | undefined {
  if (dtype === "str") {
    if (shape.length !== 0) return `a "str" value must be a scalar, got shape [${shape}]`;
    return bytes % 4 === 0 ? undefined : `"str" holds ${bytes} bytes, not a whole number of UTF-32 characters`;
  }
  const need = elementCount(shape) * DTYPE_BYTES[dtype];
  if (need === bytes) return undefined;
  const what = shape.length === 0 ? "scalar" : `shape [${shape}]`;
  return `holds ${bytes} bytes but ${what} of ${dtype} needs ${need}`;
}

// ---------------------------------------------------------------------------------------------------------------------
// Reading

/**
 * Cheap sniff: do these bytes look like a MindSpore checkpoint (rather than, say, the workbench's own format, which
 * starts with `SSDWBCK1`)? True for a file starting with a `Checkpoint.value` field (byte 0x0a, a length, then the
 * value's `tag`, 0x0a again), and for an encrypted MindSpore file (its block magic), which
 * {@linkcode parseMsCheckpoint} then refuses with a message saying so.
 *
 * @example
 * ```ts
 * import { ok as assert } from "node:assert";
 * import * as fs from "node:fs";
 * assert(isMsCheckpoint(fs.readFileSync("tests/fixtures/mindspore/checkpoint_lenet-10_1875.ckpt")));
 * assert(!isMsCheckpoint(new TextEncoder().encode("SSDWBCK1....")));
 * ```
 */
export function isMsCheckpoint(bytes: Uint8Array): boolean {
  if (bytes.length >= 4 && CIPHER_MAGIC.has(u32le(bytes, 0))) return true;
  if (bytes.length < 3 || bytes[0] !== 0x0a) return false;
  let i = 1;
  while (i < bytes.length && i <= 10 && bytes[i] & 0x80) i++; // the value's length, a varint
  return i + 1 < bytes.length && bytes[i + 1] === 0x0a;
}

/**
 * Parses a MindSpore checkpoint. Values with the same tag in a row are joined in order (MindSpore's slices of a big
 * tensor); each tensor's byte count must match its shape and dtype. A `crc_num` trailer is verified. Anything
 * else (unknown dtype, truncation, corruption, an encrypted file, a repeated name) is an {@linkcode InputError}
 * naming `file` and, where there is one, the tensor.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * import * as fs from "node:fs";
 * const file = "tests/fixtures/mindspore/checkpoint_lenet-10_1875.ckpt";
 * const ckpt = parseMsCheckpoint(fs.readFileSync(file), file);
 * const conv1 = ckpt.tensors[0];
 * assertEquals([conv1.name, conv1.dtype, conv1.shape, conv1.data.length], ["conv1.weight", "Float32", [6, 1, 5, 5], 600]);
 * ```
 */
export function parseMsCheckpoint(bytes: Uint8Array, file?: string): MsCheckpointFile {
  const fail = (msg: string, name?: string, cause?: unknown): never => {
    throw name === undefined ? new InputError(msg, { file, cause }) : tensorError(msg, name, file, cause);
  };
  if (bytes.length >= 4 && CIPHER_MAGIC.has(u32le(bytes, 0))) {
    fail(
      `encrypted MindSpore checkpoint (${CIPHER_MAGIC.get(u32le(bytes, 0))}, saved with enc_key): ` +
        "decrypt it with MindSpore first",
    );
  }
  // _parse_ckpt_proto: pb_content[-17:-10] == b"crc_num" marks the trailer.
  let body = bytes;
  let crc = false;
  const t = bytes.length - CRC_TRAILER_BYTES;
  if (t >= 0 && CRC_TAG.every((c, i) => bytes[t + i] === c)) {
    body = bytes.subarray(0, t);
    crc = true;
    const stored = bytes.subarray(t + CRC_TAG.length);
    const actual = crc32(body);
    // crc_num.to_bytes(10, "big"): a CRC-32 leaves the first 6 bytes zero.
    if (stored.subarray(0, 6).some((b) => b !== 0) || u32be(stored, 6) !== actual) {
      const hex = Array.from(stored, (b) => b.toString(16).padStart(2, "0")).join("");
      fail(`CRC-32 check failed: the trailer says 0x${hex}, the contents give 0x${actual.toString(16)} (damaged file)`);
    }
  }
  let values: DecodedValue[];
  try {
    values = (CheckpointType.decode(body) as unknown as { value: DecodedValue[] }).value;
  } catch (e) {
    return fail(
      `cannot be parsed: encrypted or not a MindSpore checkpoint, or truncated (${(e as Error)?.message ?? e})`,
      undefined,
      e,
    );
  }
  if (values.length === 0) fail("holds no tensors: encrypted or not a MindSpore checkpoint");

  const tensors: MsTensor[] = [];
  const seen = new Set<string>();
  let run: { name: string; dtype: MsDtype; dims: number[]; parts: Uint8Array[] } | undefined;
  const finish = () => {
    if (!run) return;
    const { name, dtype, dims, parts } = run;
    const data = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
    let o = 0;
    for (const p of parts) (data.set(p, o), o += p.length);
    // _load_into_param_dict: `if dims == [0]: dims = []`.
    const scalar = dims.length === 0 || (dims.length === 1 && dims[0] === 0);
    const tensor: MsTensor = { name, dtype, shape: scalar ? [] : dims, data };
    if (dims.length === 0) tensor.emptyDims = true;
    const problem = sizeProblem(dtype, tensor.shape, data.length);
    if (problem) fail(problem, name);
    tensors.push(tensor);
  };
  for (const v of values) {
    let name: string;
    try {
      name = utf8.decode(v.tag);
    } catch (e) {
      return fail(
        `a tensor name is not valid UTF-8: ${JSON.stringify(shown(new TextDecoder().decode(v.tag)))}`,
        undefined,
        e,
      );
    }
    if (!v.tensor) {
      fail(v.maptensor ? "a MapParameter (maptensor) value, which is not supported" : "a value without a tensor", name);
    }
    const tp = v.tensor as DecodedTensor;
    if (!isDtype(tp.tensor_type)) {
      fail(
        `unknown tensor_type ${JSON.stringify(shown(tp.tensor_type))} (known: ${Object.keys(DTYPE_BYTES).join(", ")})`,
        name,
      );
    }
    const dtype = tp.tensor_type as MsDtype;
    const dims = tp.dims.map(int64ToNumber);
    if (dims.some((d) => !Number.isSafeInteger(d) || d < 0)) fail(`bad dims [${shown(dims.join())}]`, name);
    if (run && run.name === name) {
      // A slice of the tensor before: _write_parameter_bytes_data gives every slice the same dims and type.
      if (dtype !== run.dtype || dims.join() !== run.dims.join()) {
        fail(`slices disagree: ${run.dtype} [${run.dims}] then ${dtype} [${dims}]`, name);
      }
      run.parts.push(tp.tensor_content);
      continue;
    }
    finish();
    if (seen.has(name)) fail("appears twice, apart (MindSpore writes a tensor's slices one after another)", name);
    seen.add(name);
    run = { name, dtype, dims, parts: [tp.tensor_content] };
  }
  finish();
  return { tensors, crc };
}

/**
 * Reads and parses a MindSpore checkpoint file (see {@linkcode parseMsCheckpoint}).
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const ckpt = readMsCheckpoint("tests/fixtures/mindspore/checkpoint_lenet-10_1875.ckpt");
 * assertEquals([ckpt.tensors.length, ckpt.crc], [18, false]);
 * ```
 */
export function readMsCheckpoint(file: string): MsCheckpointFile {
  let bytes: Uint8Array;
  try {
    bytes = fs.readFileSync(file);
  } catch (e) {
    throw new InputError(`cannot read MindSpore checkpoint: ${(e as Error).message}`, { file, cause: e });
  }
  return parseMsCheckpoint(bytes, file);
}

// ---------------------------------------------------------------------------------------------------------------------
// Writing

/**
 * Serialises tensors as MindSpore's `_exec_save` does: per tensor one `Checkpoint` message with one `Value`, or one
 * per `maxTensorBytes` slice of a bigger tensor (same tag, full dims); a scalar's dims are `[0]` (or `[]` when
 * `emptyDims`); with `crc`, the `crc_num` trailer. One deviation: a tensor of 0 bytes still gets one (empty) value,
 * where `_write_parameter_bytes_data` would write none and lose it. Bad tensors (unknown dtype, a byte count that
 * does not fit the shape, a repeated name, a 1-D shape `[0]`, which MindSpore would read back as a scalar) are
 * an {@linkcode InputError} naming the tensor.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const lr = float32ToMsTensor("learning_rate", [], [0.01]);
 * const bytes = serializeMsCheckpoint([lr], { crc: true });
 * const back = parseMsCheckpoint(bytes);
 * assertEquals([back.crc, back.tensors[0].shape, msTensorToFloat32(back.tensors[0])[0]], [true, [], Math.fround(0.01)]);
 * ```
 */
export function serializeMsCheckpoint(tensors: readonly MsTensor[], o: MsWriteOptions = {}): Uint8Array {
  const slice = o.maxTensorBytes ?? MS_SLICE_BYTES;
  if (!Number.isSafeInteger(slice) || slice < 1) throw new RangeError(`maxTensorBytes must be a positive integer`);
  const parts: Uint8Array[] = [];
  const names = new Set<string>();
  for (const t of tensors) {
    const fail = (msg: string): never => {
      throw tensorError(msg, t.name);
    };
    if (typeof t.name !== "string" || !t.name.isWellFormed()) fail("the name is not a well-formed string");
    if (names.has(t.name)) fail("appears twice");
    names.add(t.name);
    if (!isDtype(t.dtype)) fail(`unknown dtype ${JSON.stringify(t.dtype)}`);
    if (t.shape.some((d) => !Number.isSafeInteger(d) || d < 0)) fail(`bad shape [${t.shape}]`);
    if (t.shape.length === 1 && t.shape[0] === 0) {
      fail("shape [0] cannot be stored: MindSpore reads dims [0] as a scalar");
    }
    const problem = sizeProblem(t.dtype, t.shape, t.data.length);
    if (problem) fail(problem);
    const dims = t.shape.length === 0 ? (t.emptyDims ? [] : [0]) : t.shape;
    const tag = new TextEncoder().encode(t.name);
    for (let at = 0; at === 0 || at < t.data.length; at += slice) {
      const value = {
        tag,
        tensor: { dims, tensor_type: t.dtype, tensor_content: t.data.subarray(at, at + slice) },
      };
      parts.push(CheckpointType.encode({ value: [value] }).finish());
    }
  }
  if (o.crc) {
    const trailer = new Uint8Array(CRC_TRAILER_BYTES);
    trailer.set(CRC_TAG);
    const crc = parts.reduce((c, p) => crc32(p, c), 0); // chained over the messages, as _exec_save does
    new DataView(trailer.buffer).setUint32(CRC_TRAILER_BYTES - 4, crc, false);
    parts.push(trailer);
  }
  return concat(parts);
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) (out.set(p, o), o += p.length);
  return out;
}

/**
 * Writes a MindSpore checkpoint file atomically (a temporary file renamed into place).
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const file = `${Deno.makeTempDirSync()}/net.ckpt`;
 * await writeMsCheckpoint(file, [float32ToMsTensor("fc.bias", [2], [1, -1])]);
 * assertEquals(readMsCheckpoint(file).tensors[0].shape, [2]);
 * ```
 */
export async function writeMsCheckpoint(
  file: string,
  tensors: readonly MsTensor[],
  o: MsWriteOptions = {},
): Promise<void> {
  await writeFileAtomic(file, serializeMsCheckpoint(tensors, o));
}

// ---------------------------------------------------------------------------------------------------------------------
// Values

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** IEEE half-precision bits to a number. */
function halfToNumber(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 31) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** A number (rounded to float32 first) to IEEE half-precision bits, rounding to nearest even. */
function numberToHalf(v: number): number {
  f32[0] = v;
  const x = u32[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff, mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0); // inf, or a quiet NaN
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // overflow
  if (e <= 0) {
    // Subnormal half: (1.mant) * 2^(exp - 127) = m * 2^-24, m = full >> (14 - e).
    const shift = 14 - e;
    if (shift > 24) return sign;
    const full = mant | 0x800000;
    let m = full >>> shift;
    const rem = full & ((1 << shift) - 1), half = 1 << (shift - 1);
    if (rem > half || (rem === half && m & 1)) m++;
    return sign | m;
  }
  let h = sign | (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++; // a carry into the exponent is right, up to infinity
  return h;
}

/** bfloat16 bits (the top half of a float32) to a number. */
function bfloat16ToNumber(h: number): number {
  u32[0] = h << 16;
  return f32[0];
}

/** A number (rounded to float32 first) to bfloat16 bits, rounding to nearest even. */
function numberToBfloat16(v: number): number {
  f32[0] = v;
  const x = u32[0];
  if (Number.isNaN(f32[0])) return (x >>> 16) | 0x40; // keep it a (quiet) NaN
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

/**
 * A tensor's values as float32, for loading into a model: floats are converted (Float64 rounded, Float16 and
 * BFloat16 exact), integers and Bool cast (Int64 beyond 2^53 loses precision). A `"str"` tensor is an
 * {@linkcode InputError}.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const t = { name: "h", dtype: "Float16" as const, shape: [2], data: new Uint8Array([0x00, 0x3c, 0x00, 0xc0]) };
 * assertEquals(Array.from(msTensorToFloat32(t)), [1, -2]);
 * ```
 */
export function msTensorToFloat32(t: MsTensor): Float32Array {
  if (t.dtype === "str") throw tensorError(`a "str" value has no float values`, t.name);
  const n = elementCount(t.shape);
  const problem = sizeProblem(t.dtype, t.shape, t.data.length);
  if (problem) throw tensorError(problem, t.name);
  const dv = new DataView(t.data.buffer, t.data.byteOffset, t.data.byteLength);
  const out = new Float32Array(n);
  const read: (i: number) => number = {
    Bool: (i: number) => (dv.getUint8(i) ? 1 : 0),
    Int8: (i: number) => dv.getInt8(i),
    UInt8: (i: number) => dv.getUint8(i),
    Int16: (i: number) => dv.getInt16(i * 2, true),
    UInt16: (i: number) => dv.getUint16(i * 2, true),
    Int32: (i: number) => dv.getInt32(i * 4, true),
    UInt32: (i: number) => dv.getUint32(i * 4, true),
    Int64: (i: number) => Number(dv.getBigInt64(i * 8, true)),
    UInt64: (i: number) => Number(dv.getBigUint64(i * 8, true)),
    Float16: (i: number) => halfToNumber(dv.getUint16(i * 2, true)),
    BFloat16: (i: number) => bfloat16ToNumber(dv.getUint16(i * 2, true)),
    Float32: (i: number) => dv.getFloat32(i * 4, true),
    Float64: (i: number) => dv.getFloat64(i * 8, true),
  }[t.dtype];
  for (let i = 0; i < n; i++) out[i] = read(i);
  return out;
}

const INT_RANGE: Partial<Record<MsDtype, [number, number]>> = {
  Int8: [-128, 127],
  UInt8: [0, 255],
  Int16: [-32768, 32767],
  UInt16: [0, 65535],
  Int32: [-(2 ** 31), 2 ** 31 - 1],
  UInt32: [0, 2 ** 32 - 1],
  Int64: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
  UInt64: [0, Number.MAX_SAFE_INTEGER],
};

/**
 * Builds a tensor from values: floats are rounded to the dtype (Float16 and BFloat16 to nearest even), Bool stores
 * non-zero as 1, and an integer dtype takes only whole numbers in its range (else an {@linkcode InputError}).
 * `shape` `[]` is a scalar.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const t = float32ToMsTensor("w", [2], [1, 1 / 3], "BFloat16");
 * assertEquals(Array.from(t.data), [0x80, 0x3f, 0xab, 0x3e]);
 * ```
 */
export function float32ToMsTensor(
  name: string,
  shape: readonly number[],
  values: ArrayLike<number>,
  dtype: MsDtype = "Float32",
): MsTensor {
  const fail = (msg: string): never => {
    throw tensorError(msg, name);
  };
  if (dtype === "str" || !isDtype(dtype)) fail(`cannot build a ${JSON.stringify(dtype)} tensor from numbers`);
  if (shape.some((d) => !Number.isSafeInteger(d) || d < 0)) fail(`bad shape [${shape}]`);
  const n = elementCount(shape);
  if (values.length !== n) fail(`${values.length} values for shape [${shape}] (${n} elements)`);
  const data = new Uint8Array(n * DTYPE_BYTES[dtype]);
  const dv = new DataView(data.buffer);
  const range = INT_RANGE[dtype];
  for (let i = 0; i < n; i++) {
    const v = values[i];
    if (range && !(Number.isInteger(v) && v >= range[0] && v <= range[1])) {
      fail(`value ${v} at index ${i} is not a whole number in the range of ${dtype}`);
    }
    switch (dtype) {
      case "Bool":
      case "UInt8":
        dv.setUint8(i, dtype === "Bool" ? (v ? 1 : 0) : v);
        break;
      case "Int8":
        dv.setInt8(i, v);
        break;
      case "Int16":
        dv.setInt16(i * 2, v, true);
        break;
      case "UInt16":
        dv.setUint16(i * 2, v, true);
        break;
      case "Int32":
        dv.setInt32(i * 4, v, true);
        break;
      case "UInt32":
        dv.setUint32(i * 4, v, true);
        break;
      case "Int64":
        dv.setBigInt64(i * 8, BigInt(v), true);
        break;
      case "UInt64":
        dv.setBigUint64(i * 8, BigInt(v), true);
        break;
      case "Float16":
        dv.setUint16(i * 2, numberToHalf(v), true);
        break;
      case "BFloat16":
        dv.setUint16(i * 2, numberToBfloat16(v), true);
        break;
      case "Float32":
        dv.setFloat32(i * 4, v, true);
        break;
      case "Float64":
        dv.setFloat64(i * 8, v, true);
        break;
    }
  }
  return { name, dtype, shape: [...shape], data };
}

// ---------------------------------------------------------------------------------------------------------------------
// Optimizer state

/**
 * Names MindSpore gives optimizer and training-loop state, in mindspore/python/mindspore: `Optimizer`
 * (nn/optim/optimizer.py: `learning_rate`, `learning_rate_group_<i>`, `global_step`; older versions `lr_<param>`),
 * `Momentum` (`momentum`), `Adam` / `AdaMax` (`beta1_power`, `beta2_power`), loss scaling (nn/wrap/loss_scale.py:
 * `scale_sense`, `current_iterator_step`, `last_overflow_iterator_step`) and `ModelCheckpoint`'s `append_info`
 * (train/callback/_checkpoint.py: `epoch_num`, `step_num`).
 */
const STATE_NAMES = new Set([
  "learning_rate",
  "global_step",
  "momentum",
  "beta1_power",
  "beta2_power",
  "scale_sense",
  "current_iterator_step",
  "last_overflow_iterator_step",
  "epoch_num",
  "step_num",
]);

/**
 * Prefixes of per-parameter optimizer slots, `<prefix>.<param name>` (`self.parameters.clone(prefix=...)` in
 * nn/optim/*.py): Momentum and FTRL `moments`; Adam, AdaMax, LazyAdam `moment1`, `moment2` (`vhat` with amsgrad);
 * AdamWeightDecay `adam_m`, `adam_v`; Lamb `lamb_m`, `lamb_v`; Adagrad, ProximalAdagrad, Adadelta `accum`
 * (`accum_update`); SGD `accum`, `stat`; RMSProp `mean_square`, `moment` (`mean_grad` centred); FTRL `linear`;
 * Adan-style `moment3`, `prev_gradient`.
 */
const STATE_PREFIXES = [
  "moments",
  "moment1",
  "moment2",
  "moment3",
  "moment",
  "vhat",
  "adam_m",
  "adam_v",
  "lamb_m",
  "lamb_v",
  "accum",
  "accum_update",
  "stat",
  "mean_square",
  "mean_grad",
  "linear",
  "prev_gradient",
];

/**
 * Whether `name` is optimizer or training-loop state rather than a model parameter: a name like `learning_rate`,
 * `momentum`, `global_step`, `beta1_power`, or a slot `<prefix>.<param>` such as `moments.conv1.weight` or
 * `adam_m.fc.bias`. Given `paramNames` (all names in the checkpoint), a slot counts only when its `<param>` is
 * among them, so a layer really called `linear` or `stat` stays a parameter.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * assertEquals(["moments.fc3.bias", "learning_rate", "fc3.bias"].map((n) => isOptimizerState(n)), [true, true, false]);
 * assertEquals(isOptimizerState("linear.weight", new Set(["linear.weight"])), false);
 * ```
 */
export function isOptimizerState(name: string, paramNames?: ReadonlySet<string>): boolean {
  if (STATE_NAMES.has(name) || /^learning_rate_group_\d+$/.test(name)) return true;
  const slotOf = (rest: string) => rest.length > 0 && (!paramNames || paramNames.has(rest));
  if (name.startsWith("lr_") && paramNames) return slotOf(name.slice(3));
  for (const p of STATE_PREFIXES) {
    if (name.startsWith(p + ".") && slotOf(name.slice(p.length + 1))) return true;
  }
  return false;
}

/**
 * Splits tensors into model parameters and optimizer state ({@linkcode isOptimizerState}, checking slots against
 * the names present), keeping the order of each.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const ckpt = readMsCheckpoint("tests/fixtures/mindspore/checkpoint_lenet-10_1875.ckpt");
 * const { params, optimizer } = splitOptimizerState(ckpt.tensors);
 * assertEquals([params.length, optimizer.length], [8, 10]);
 * ```
 */
export function splitOptimizerState<T extends { name: string }>(
  tensors: readonly T[],
): { params: T[]; optimizer: T[] } {
  const names = new Set(tensors.map((t) => t.name));
  const params: T[] = [], optimizer: T[] = [];
  for (const t of tensors) (isOptimizerState(t.name, names) ? optimizer : params).push(t);
  return { params, optimizer };
}
