/**
 * MessagePack as nlohmann::json writes and reads it: the encoding of every
 * MindRecord raw row (mindrecord_format.md §4). Maps are written with their
 * keys sorted bytewise (nlohmann objects are std::map), integers in the
 * smallest form, and floats either always as float64 (nlohmann 3.6.1, MindSpore
 * 1.x) or as float32 when that is exact (nlohmann >= 3.9, MindSpore 2.x).
 *
 * This codec stays hand-written: `@msgpack/msgpack` 3.1.3 (the maintained JS
 * library) was tried and cannot write or read these bytes. Each point below is
 * checked in tests/msgpack_test.ts:
 * - A double 1.0 and an integer 1 are the same JS number, and it writes `01`
 *   where nlohmann writes `cb 3f f0 00 00 00 00 00 00`. Its only switch,
 *   `forceIntegerToFloat`, makes every integer a float (MindSpore's `{"id":0}`
 *   becomes `81 a2 69 64 cb 00…` instead of `81 a2 69 64 00`), and an
 *   `ExtensionCodec` can only write ext types (`d4`…`d8`, `c7`…`c9`), never a
 *   bare `ca`/`cb`, so a {@linkcode MsgFloat} has no way out.
 * - `forceFloat32` is all or nothing: 0.1 becomes `ca 3d cc cc cd` (lossy)
 *   where compact nlohmann keeps `cb 3f b9 99 99 99 99 99 9a`.
 * - A `Map` is written as an empty map `80` (it takes `Object.keys`), and
 *   `sortKeys` orders by UTF-16 code units, not by UTF-8 bytes as std::map
 *   does ("😀" before "！" U+FF01, the reverse of nlohmann).
 * - `useBigInt64`, needed for integers past 2^53, writes every bigint in nine
 *   bytes (`5n` as `cf 00 … 05`, not `05`) and numbers from 2^32 up as floats.
 * - Decoding gives `ca 3f 80 00 00`, `cb 3f f0 …` and `01` all as the number
 *   1, so float width and float-ness are lost and a MindRecord header could
 *   not be written back byte-exact (see {@linkcode DecodeStats}).
 *
 * @module
 */

/** A float, kept apart from integers because msgpack tells them apart and JS numbers do not. */
export class MsgFloat {
  /** The value as a double. */
  readonly value: number;
  /** The width it was stored with (32 or 64); informational for encoding. */
  readonly width: 32 | 64;
  constructor(value: number, width: 32 | 64 = 64) {
    this.value = value;
    this.width = width;
  }
}

/** A decoded or encodable msgpack value. Integers are numbers (or bigints beyond ±2^53). */
export type MsgValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | MsgFloat
  | MsgValue[]
  | Map<string, MsgValue>;

/** How floats are written: `f64` always (nlohmann 3.6.1) or `compact` (f32 when exact; nlohmann >= 3.9). */
export type FloatMode = "f64" | "compact";

/** A malformed msgpack buffer. Readers wrap it in an InputError naming the file and row. */
export class MsgpackError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "MsgpackError";
  }
}

const te = new TextEncoder();
const tdStrict = new TextDecoder("utf-8", { fatal: true });

/** Compares strings by their UTF-8 bytes, as std::map<std::string> orders keys. */
export function compareUtf8(a: string, b: string): number {
  if (a === b) return 0;
  const x = te.encode(a), y = te.encode(b);
  const n = Math.min(x.length, y.length);
  for (let i = 0; i < n; i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}

class ByteSink {
  buf = new Uint8Array(64);
  len = 0;
  dv = new DataView(this.buf.buffer);
  ensure(n: number) {
    if (this.len + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.len + n) cap *= 2;
    const b = new Uint8Array(cap);
    b.set(this.buf.subarray(0, this.len));
    this.buf = b;
    this.dv = new DataView(b.buffer);
  }
  u8(v: number) {
    this.ensure(1);
    this.buf[this.len++] = v;
  }
  bytes(b: Uint8Array) {
    this.ensure(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }
  be(v: number | bigint, n: 1 | 2 | 4 | 8) {
    this.ensure(n);
    if (n === 1) this.dv.setUint8(this.len, Number(v) & 0xff);
    else if (n === 2) this.dv.setUint16(this.len, Number(v) & 0xffff);
    else if (n === 4) this.dv.setUint32(this.len, Number(BigInt.asUintN(32, BigInt(v))));
    else this.dv.setBigUint64(this.len, BigInt.asUintN(64, BigInt(v)));
    this.len += n;
  }
}

function encodeInt(s: ByteSink, v: bigint) {
  // nlohmann::json binary_writer::write_msgpack, number_integer / number_unsigned branches.
  if (v >= 0n) {
    if (v < 128n) s.u8(Number(v));
    else if (v <= 0xffn) (s.u8(0xcc), s.be(v, 1));
    else if (v <= 0xffffn) (s.u8(0xcd), s.be(v, 2));
    else if (v <= 0xffffffffn) (s.u8(0xce), s.be(v, 4));
    else if (v <= 0xffffffffffffffffn) (s.u8(0xcf), s.be(v, 8));
    else throw new RangeError(`Integer ${v} does not fit in 64 bits`);
  } else {
    if (v >= -32n) s.u8(Number(BigInt.asUintN(8, v)));
    else if (v >= -128n) (s.u8(0xd0), s.be(BigInt.asUintN(8, v), 1));
    else if (v >= -32768n) (s.u8(0xd1), s.be(BigInt.asUintN(16, v), 2));
    else if (v >= -2147483648n) (s.u8(0xd2), s.be(BigInt.asUintN(32, v), 4));
    else if (v >= -9223372036854775808n) (s.u8(0xd3), s.be(BigInt.asUintN(64, v), 8));
    else throw new RangeError(`Integer ${v} does not fit in 64 bits`);
  }
}

function encodeFloat(s: ByteSink, x: number, mode: FloatMode) {
  // nlohmann >= 3.9 write_compact_float: f32 when the value is in float range and survives the round trip.
  const f = Math.fround(x);
  if (mode === "compact" && Math.abs(x) <= 3.4028234663852886e38 && f === x) {
    s.u8(0xca);
    s.ensure(4);
    s.dv.setFloat32(s.len, f);
    s.len += 4;
  } else {
    s.u8(0xcb);
    s.ensure(8);
    s.dv.setFloat64(s.len, x);
    s.len += 8;
  }
}

function encodeLen(s: ByteSink, n: number, fix: number, fixMax: number, c8: number | null, c16: number, c32: number) {
  if (n <= fixMax) s.u8(fix | n);
  else if (c8 !== null && n <= 0xff) (s.u8(c8), s.be(n, 1));
  else if (n <= 0xffff) (s.u8(c16), s.be(n, 2));
  else (s.u8(c32), s.be(n, 4));
}

function encodeValue(s: ByteSink, v: MsgValue, mode: FloatMode) {
  if (v === null) s.u8(0xc0);
  else if (v === true) s.u8(0xc3);
  else if (v === false) s.u8(0xc2);
  else if (typeof v === "bigint") encodeInt(s, v);
  else if (typeof v === "number") {
    if (Number.isInteger(v)) encodeInt(s, BigInt(v));
    else encodeFloat(s, v, mode);
  } else if (v instanceof MsgFloat) encodeFloat(s, v.value, mode);
  else if (typeof v === "string") {
    const b = te.encode(v);
    encodeLen(s, b.length, 0xa0, 31, 0xd9, 0xda, 0xdb);
    s.bytes(b);
  } else if (v instanceof Uint8Array) {
    encodeLen(s, v.length, 0, -1, 0xc4, 0xc5, 0xc6);
    s.bytes(v);
  } else if (Array.isArray(v)) {
    encodeLen(s, v.length, 0x90, 15, null, 0xdc, 0xdd);
    for (const x of v) encodeValue(s, x, mode);
  } else if (v instanceof Map) {
    const keys = [...v.keys()].sort(compareUtf8);
    encodeLen(s, keys.length, 0x80, 15, null, 0xde, 0xdf);
    for (const k of keys) {
      encodeValue(s, k, mode);
      encodeValue(s, v.get(k)!, mode);
    }
  } else throw new TypeError(`Cannot encode ${typeof v} as msgpack`);
}

/**
 * Encodes `value` as nlohmann::json::to_msgpack would.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * // MindSpore's dummy raw row {"id": 0}.
 * assertEquals([...encodeMsgpack(new Map([["id", 0]]))], [0x81, 0xa2, 0x69, 0x64, 0x00]);
 * assertEquals(encodeMsgpack(new MsgFloat(0.5), { floats: "compact" })[0], 0xca);
 * ```
 */
export function encodeMsgpack(value: MsgValue, options: { floats?: FloatMode } = {}): Uint8Array {
  const s = new ByteSink();
  encodeValue(s, value, options.floats ?? "f64");
  return s.buf.slice(0, s.len);
}

/** Facts gathered while decoding, for re-encoding byte-exact. */
export interface DecodeStats {
  /** Floats stored as float32 (0xca). */
  f32: number;
  /** Floats stored as float64 (0xcb) that float32 would hold exactly (so the writer was not compact). */
  f64Exact32: number;
}

const MAX_DEPTH = 64;

/**
 * Decodes one msgpack value filling `bytes` exactly. Throws {@linkcode MsgpackError}
 * on truncation, trailing bytes, bad UTF-8, unsupported types or nesting deeper than 64.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const m = decodeMsgpack(new Uint8Array([0x81, 0xa2, 0x69, 0x64, 0x00])) as Map<string, unknown>;
 * assertEquals(m.get("id"), 0);
 * ```
 */
export function decodeMsgpack(bytes: Uint8Array, stats?: DecodeStats): MsgValue {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let p = 0;
  const need = (n: number) => {
    if (p + n > bytes.length) throw new MsgpackError(`truncated msgpack at byte ${p} (needs ${n} more)`);
  };
  const str = (n: number): string => {
    need(n);
    try {
      return tdStrict.decode(bytes.subarray(p, p += n));
    } catch {
      throw new MsgpackError(`invalid UTF-8 in msgpack string at byte ${p - n}`);
    }
  };
  const u64 = (): number | bigint => {
    need(8);
    const v = dv.getBigUint64(p);
    p += 8;
    return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  };
  const i64 = (): number | bigint => {
    need(8);
    const v = dv.getBigInt64(p);
    p += 8;
    return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  };
  const read = (depth: number): MsgValue => {
    if (depth > MAX_DEPTH) throw new MsgpackError(`msgpack nested deeper than ${MAX_DEPTH}`);
    need(1);
    const t = bytes[p++];
    if (t < 0x80) return t;
    if (t >= 0xe0) return t - 256;
    if (t >= 0xa0 && t <= 0xbf) return str(t & 0x1f);
    if (t >= 0x90 && t <= 0x9f) return arr(t & 0x0f, depth);
    if (t >= 0x80 && t <= 0x8f) return map(t & 0x0f, depth);
    let v: number;
    switch (t) {
      case 0xc0:
        return null;
      case 0xc2:
        return false;
      case 0xc3:
        return true;
      case 0xcc:
        need(1);
        return bytes[p++];
      case 0xcd:
        need(2);
        v = dv.getUint16(p);
        p += 2;
        return v;
      case 0xce:
        need(4);
        v = dv.getUint32(p);
        p += 4;
        return v;
      case 0xcf:
        return u64();
      case 0xd0:
        need(1);
        return dv.getInt8(p++);
      case 0xd1:
        need(2);
        v = dv.getInt16(p);
        p += 2;
        return v;
      case 0xd2:
        need(4);
        v = dv.getInt32(p);
        p += 4;
        return v;
      case 0xd3:
        return i64();
      case 0xca: {
        need(4);
        const f = dv.getFloat32(p);
        p += 4;
        if (stats) stats.f32++;
        return new MsgFloat(f, 32);
      }
      case 0xcb: {
        need(8);
        const f = dv.getFloat64(p);
        p += 8;
        if (stats && Math.fround(f) === f) stats.f64Exact32++;
        return new MsgFloat(f, 64);
      }
      case 0xd9:
        need(1);
        return str(bytes[p++]);
      case 0xda:
        need(2);
        p += 2;
        return str(dv.getUint16(p - 2));
      case 0xdb:
        need(4);
        p += 4;
        return str(dv.getUint32(p - 4));
      case 0xc4:
      case 0xc5:
      case 0xc6: {
        const w = t === 0xc4 ? 1 : t === 0xc5 ? 2 : 4;
        need(w);
        const n = w === 1 ? bytes[p] : w === 2 ? dv.getUint16(p) : dv.getUint32(p);
        p += w;
        need(n);
        return bytes.slice(p, p += n);
      }
      case 0xdc:
        need(2);
        p += 2;
        return arr(dv.getUint16(p - 2), depth);
      case 0xdd:
        need(4);
        p += 4;
        return arr(dv.getUint32(p - 4), depth);
      case 0xde:
        need(2);
        p += 2;
        return map(dv.getUint16(p - 2), depth);
      case 0xdf:
        need(4);
        p += 4;
        return map(dv.getUint32(p - 4), depth);
      default:
        throw new MsgpackError(`unsupported msgpack type byte 0x${t.toString(16)} at byte ${p - 1}`);
    }
  };
  const arr = (n: number, depth: number): MsgValue[] => {
    // Every element takes at least one byte: a cheap guard against huge bogus lengths.
    need(n);
    const out: MsgValue[] = [];
    for (let i = 0; i < n; i++) out.push(read(depth + 1));
    return out;
  };
  const map = (n: number, depth: number): Map<string, MsgValue> => {
    need(2 * n);
    const out = new Map<string, MsgValue>();
    for (let i = 0; i < n; i++) {
      const k = read(depth + 1);
      if (typeof k !== "string") throw new MsgpackError(`msgpack map key is not a string at byte ${p}`);
      out.set(k, read(depth + 1));
    }
    return out;
  };
  const v = read(0);
  if (p !== bytes.length) throw new MsgpackError(`${bytes.length - p} trailing bytes after msgpack value`);
  return v;
}
