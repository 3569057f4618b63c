import { deepStrictEqual as assertEquals } from "node:assert";

import { compareUtf8, decodeMsgpack, type DecodeStats, encodeMsgpack, MsgFloat, MsgpackError } from "../lib/msgpack.ts";
import { decode, encode, Encoder, ExtensionCodec } from "@msgpack/msgpack";
import { assertThrowsError } from "./asserts.ts";

const hex = (b: Uint8Array) => [...b].map((x) => x.toString(16).padStart(2, "0")).join("");

Deno.test("encodeMsgpack() picks nlohmann's smallest integer forms at every boundary", () => {
  const cases: [number | bigint, string][] = [
    [0, "00"],
    [127, "7f"],
    [128, "cc80"],
    [255, "ccff"],
    [256, "cd0100"],
    [65535, "cdffff"],
    [65536, "ce00010000"],
    [4294967295, "ceffffffff"],
    [4294967296, "cf0000000100000000"],
    [18446744073709551615n, "cfffffffffffffffff"],
    [-1, "ff"],
    [-32, "e0"],
    [-33, "d0df"],
    [-128, "d080"],
    [-129, "d1ff7f"],
    [-32768, "d18000"],
    [-32769, "d2ffff7fff"],
    [-2147483648, "d280000000"],
    [-2147483649, "d3ffffffff7fffffff"],
    [-9223372036854775808n, "d38000000000000000"],
  ];
  for (const [v, want] of cases) assertEquals(hex(encodeMsgpack(v)), want, `value ${v}`);
});

Deno.test("encodeMsgpack() writes strings as fixstr, str8, str16 by byte length", () => {
  assertEquals(hex(encodeMsgpack("ab")), "a26162");
  assertEquals(hex(encodeMsgpack("x".repeat(31))).slice(0, 2), "bf");
  assertEquals(hex(encodeMsgpack("x".repeat(32))).slice(0, 4), "d920");
  assertEquals(hex(encodeMsgpack("x".repeat(256))).slice(0, 6), "da0100");
  assertEquals(hex(encodeMsgpack("é")), "a2c3a9");
});

Deno.test("encodeMsgpack() sorts map keys bytewise, as std::map does", () => {
  const m = new Map<string, number>([["b", 1], ["a", 2], ["B", 3], ["é", 4]]);
  const back = decodeMsgpack(encodeMsgpack(m)) as Map<string, number>;
  assertEquals([...back.keys()], ["B", "a", "b", "é"]);
  assertEquals(["é", "z", "Z"].sort(compareUtf8), ["Z", "z", "é"]);
});

Deno.test("encodeMsgpack() writes floats as f64 (nlohmann 3.6.1) or compact f32 when exact (nlohmann >= 3.9)", () => {
  assertEquals(hex(encodeMsgpack(new MsgFloat(1))), "cb3ff0000000000000");
  assertEquals(hex(encodeMsgpack(new MsgFloat(1), { floats: "compact" })), "ca3f800000");
  assertEquals(hex(encodeMsgpack(new MsgFloat(0.1), { floats: "compact" })).slice(0, 2), "cb");
  assertEquals(hex(encodeMsgpack(new MsgFloat(NaN), { floats: "compact" })).slice(0, 2), "cb");
  assertEquals(hex(encodeMsgpack(new MsgFloat(1e39), { floats: "compact" })).slice(0, 2), "cb");
});

Deno.test("decodeMsgpack() reads 32-bit and 64-bit floats and counts them", () => {
  const stats: DecodeStats = { f32: 0, f64Exact32: 0 };
  const a = decodeMsgpack(new Uint8Array([0xca, 0x3f, 0x80, 0, 0]), stats) as MsgFloat;
  const b = decodeMsgpack(new Uint8Array([0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0]), stats) as MsgFloat;
  assertEquals([a.value, a.width, b.value, b.width], [1, 32, 1, 64]);
  assertEquals(stats, { f32: 1, f64Exact32: 1 });
});

Deno.test("decodeMsgpack() round-trips nested values and big integers", () => {
  const v = new Map<string, unknown>([
    ["arr", [1, -1, "s", null, true, false, new MsgFloat(2.5)]],
    ["big", 9007199254740993n],
    ["neg", -9007199254740993n],
    ["bin", new Uint8Array([1, 2, 3])],
  ]);
  // deno-lint-ignore no-explicit-any
  const back = decodeMsgpack(encodeMsgpack(v as any)) as Map<string, unknown>;
  assertEquals(back.get("big"), 9007199254740993n);
  assertEquals(back.get("neg"), -9007199254740993n);
  assertEquals(back.get("bin"), new Uint8Array([1, 2, 3]));
  assertEquals((back.get("arr") as unknown[]).slice(0, 6), [1, -1, "s", null, true, false]);
});

Deno.test("decodeMsgpack() rejects truncation, trailing bytes, bad types, bad UTF-8 and deep nesting", () => {
  assertThrowsError(() => decodeMsgpack(new Uint8Array([0xcd, 0x01])), MsgpackError, "truncated");
  assertThrowsError(() => decodeMsgpack(new Uint8Array([0x01, 0x02])), MsgpackError, "trailing");
  assertThrowsError(() => decodeMsgpack(new Uint8Array([0xc1])), MsgpackError, "unsupported");
  assertThrowsError(() => decodeMsgpack(new Uint8Array([0xa1, 0xff])), MsgpackError, "UTF-8");
  assertThrowsError(() => decodeMsgpack(new Uint8Array([0xdd, 0xff, 0xff, 0xff, 0xff])), MsgpackError, "truncated");
  assertThrowsError(() => decodeMsgpack(new Uint8Array(100).fill(0x91)), MsgpackError, "deeper");
  assertThrowsError(() => decodeMsgpack(new Uint8Array([0x81, 0x01, 0x02])), MsgpackError, "not a string");
});

// Why lib/msgpack.ts is not @msgpack/msgpack: each assertion pins one byte
// sequence that library (3.1.3, as pinned in deno.json) writes or reads
// differently from nlohmann::json, next to what this module does. If a future
// version gains these options, this test shows what to re-check.
Deno.test("@msgpack/msgpack cannot produce nlohmann's bytes, which is why lib/msgpack.ts stays", () => {
  // A float 1.0 is the integer 1 to it; forceIntegerToFloat turns every integer into a float.
  assertEquals(hex(encode(1.0)), "01");
  assertEquals(hex(encodeMsgpack(new MsgFloat(1))), "cb3ff0000000000000");
  assertEquals(hex(new Encoder({ forceIntegerToFloat: true }).encode({ id: 0 })), "81a26964cb0000000000000000");
  assertEquals(hex(encodeMsgpack(new Map([["id", 0]]))), "81a2696400");
  // An extension can carry the 8 bytes of a double, but only behind an ext header (d7 = fixext 8, type 0).
  const ext = new ExtensionCodec();
  ext.register({
    type: 0,
    encode: (v) => v instanceof MsgFloat ? encodeMsgpack(v).subarray(1) : null,
    decode: (d) => new MsgFloat(new DataView(d.buffer, d.byteOffset).getFloat64(0)),
  });
  assertEquals(hex(new Encoder({ extensionCodec: ext }).encode(new MsgFloat(1))), "d7003ff0000000000000");
  // forceFloat32 applies to every float, exact or not.
  assertEquals(hex(new Encoder({ forceFloat32: true }).encode(0.1)), "ca3dcccccd");
  assertEquals(hex(encodeMsgpack(new MsgFloat(0.1), { floats: "compact" })), "cb3fb999999999999a");
  // A Map comes out empty; sortKeys orders UTF-16 code units, std::map orders UTF-8 bytes.
  assertEquals(hex(encode(new Map([["id", 0]]))), "80");
  const keys = { "\uff01": 1, "\u{1f600}": 2 };
  assertEquals(hex(new Encoder({ sortKeys: true }).encode(keys)), "82a4f09f988002a3efbc8101");
  assertEquals(hex(encodeMsgpack(new Map(Object.entries(keys)))), "82a3efbc8101a4f09f988002");
  // useBigInt64 writes every bigint in 9 bytes and numbers >= 2^32 as doubles.
  assertEquals(hex(new Encoder({ useBigInt64: true }).encode(5n)), "cf0000000000000005");
  assertEquals(hex(new Encoder({ useBigInt64: true }).encode(4294967296)), "cb41f0000000000000");
  assertEquals([hex(encodeMsgpack(5n)), hex(encodeMsgpack(4294967296))], ["05", "cf0000000100000000"]);
  // Decoding loses the float width and whether it was a float at all.
  const f32 = new Uint8Array([0xca, 0x3f, 0x80, 0, 0]), f64 = new Uint8Array([0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0]);
  assertEquals([decode(f32), decode(f64), decode(new Uint8Array([1]))], [1, 1, 1]);
  const [a, b] = [decodeMsgpack(f32) as MsgFloat, decodeMsgpack(f64) as MsgFloat];
  assertEquals([a.width, b.width, decodeMsgpack(new Uint8Array([1]))], [32, 64, 1]);
});
