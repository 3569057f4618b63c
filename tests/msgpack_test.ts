import { deepStrictEqual as assertEquals, throws } from "node:assert";

/** Asserts that `fn` throws an instance of `cls` whose message contains `part`. */
function assertThrows(fn: () => unknown, cls: new (...a: never[]) => Error, part: string) {
  throws(fn, (e: unknown) => e instanceof cls && e.message.includes(part));
}
import { compareUtf8, decodeMsgpack, type DecodeStats, encodeMsgpack, MsgFloat, MsgpackError } from "../lib/msgpack.ts";

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
  assertThrows(() => decodeMsgpack(new Uint8Array([0xcd, 0x01])), MsgpackError, "truncated");
  assertThrows(() => decodeMsgpack(new Uint8Array([0x01, 0x02])), MsgpackError, "trailing");
  assertThrows(() => decodeMsgpack(new Uint8Array([0xc1])), MsgpackError, "unsupported");
  assertThrows(() => decodeMsgpack(new Uint8Array([0xa1, 0xff])), MsgpackError, "UTF-8");
  assertThrows(() => decodeMsgpack(new Uint8Array([0xdd, 0xff, 0xff, 0xff, 0xff])), MsgpackError, "truncated");
  assertThrows(() => decodeMsgpack(new Uint8Array(100).fill(0x91)), MsgpackError, "deeper");
  assertThrows(() => decodeMsgpack(new Uint8Array([0x81, 0x01, 0x02])), MsgpackError, "not a string");
});
