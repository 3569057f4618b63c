// MindSpore .ckpt reading and writing: the real LeNet checkpoint from mindspore-ai/mindarmour (SOURCE.md beside it),
// hand-built files for each wire-format case, and 1000 seeded mutations that must parse or fail with an InputError.
import { deepStrictEqual as assertEquals, ok as assert, throws as assertThrows } from "node:assert";
import * as fs from "node:fs";
import * as zlib from "node:zlib";
import { InputError } from "../lib/errors.ts";
import { createRng, randInt, type Rng } from "../lib/rng.ts";
import {
  float32ToMsTensor,
  isMsCheckpoint,
  isOptimizerState,
  type MsTensor,
  msTensorToFloat32,
  parseMsCheckpoint,
  readMsCheckpoint,
  serializeMsCheckpoint,
  splitOptimizerState,
  writeMsCheckpoint,
} from "../lib/mindspore_ckpt.ts";

const FIXTURE = "tests/fixtures/mindspore/checkpoint_lenet-10_1875.ckpt";
const fixture = (): Uint8Array => new Uint8Array(fs.readFileSync(FIXTURE));
const enc = new TextEncoder();

// ---------------------------------------------------------------------------------------------------------------------
// Hand-built protobuf, byte by byte (field numbers from checkpoint.proto)

function varint(n: number): number[] {
  const out: number[] = [];
  while (n >= 0x80) (out.push((n % 128) | 0x80), n = Math.floor(n / 128));
  out.push(n);
  return out;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) (out.set(p, o), o += p.length);
  return out;
}

/** A length-delimited field. */
function field(id: number, payload: Uint8Array): Uint8Array {
  return concat(Uint8Array.from([(id << 3) | 2, ...varint(payload.length)]), payload);
}

/** One `Checkpoint` message holding one `Value { tag, tensor { dims, tensor_type, tensor_content } }`. */
function valueMessage(tag: string, dims: number[], type: string, content: Uint8Array, packed = false): Uint8Array {
  const dimBytes = packed
    ? (dims.length ? field(1, Uint8Array.from(dims.flatMap(varint))) : new Uint8Array())
    : Uint8Array.from(dims.flatMap((d) => [0x08, ...varint(d)]));
  const tensor = concat(dimBytes, field(2, enc.encode(type)), field(3, content));
  return field(1, concat(field(1, enc.encode(tag)), field(2, tensor)));
}

function f32Bytes(...v: number[]): Uint8Array {
  return new Uint8Array(Float32Array.from(v).buffer);
}

function u16Bytes(...v: number[]): Uint8Array {
  return new Uint8Array(Uint16Array.from(v).buffer);
}

/** The `crc_num` trailer save_checkpoint(crc_check=True) appends: 7 bytes of tag, then the CRC as 10 big-endian bytes. */
function crcTrailer(body: Uint8Array): Uint8Array {
  const t = new Uint8Array(17);
  t.set(enc.encode("crc_num"));
  new DataView(t.buffer).setUint32(13, zlib.crc32(body) >>> 0, false);
  return t;
}

function expectInputError(fn: () => unknown, ...parts: string[]): InputError {
  try {
    fn();
  } catch (e) {
    assert(e instanceof InputError, `expected an InputError, got ${e instanceof Error ? e.stack : e}`);
    for (const p of parts) assert(e.message.includes(p), `"${e.message}" does not mention ${p}`);
    return e;
  }
  throw new Error("expected an InputError, nothing was thrown");
}

// ---------------------------------------------------------------------------------------------------------------------
// The real fixture

const PARAMS = [
  "conv1.weight",
  "conv2.weight",
  "fc1.weight",
  "fc1.bias",
  "fc2.weight",
  "fc2.bias",
  "fc3.weight",
  "fc3.bias",
];
const SHAPES: Record<string, number[]> = {
  "conv1.weight": [6, 1, 5, 5],
  "conv2.weight": [16, 6, 5, 5],
  "fc1.weight": [120, 400],
  "fc1.bias": [120],
  "fc2.weight": [84, 120],
  "fc2.bias": [84],
  "fc3.weight": [10, 84],
  "fc3.bias": [10],
};

Deno.test("the LeNet fixture parses into 18 tensors with LeNet's names, dtypes and shapes", () => {
  const bytes = fixture();
  assert(isMsCheckpoint(bytes));
  const ckpt = parseMsCheckpoint(bytes, FIXTURE);
  assertEquals(ckpt.crc, false);
  assertEquals(ckpt.tensors.length, 18);
  assertEquals(ckpt.tensors.map((t) => t.name), [
    ...PARAMS,
    "learning_rate",
    "momentum",
    ...PARAMS.map((p) => `moments.${p}`),
  ]);
  for (const t of ckpt.tensors) {
    const base = t.name.replace(/^moments\./, "");
    if (t.name === "learning_rate" || t.name === "momentum") {
      // Written by MindSpore 0.x as 0-d Float64 with dims [0].
      assertEquals([t.dtype, t.shape, t.data.length, t.emptyDims], ["Float64", [], 8, undefined]);
    } else {
      assertEquals([t.dtype, t.shape], ["Float32", SHAPES[base]], t.name);
    }
  }
  const byName = new Map(ckpt.tensors.map((t) => [t.name, t]));
  assertEquals(new DataView(byName.get("learning_rate")!.data.buffer).getFloat64(0, true), 0.001);
  assertEquals(Array.from(msTensorToFloat32(byName.get("momentum")!)), [Math.fround(0.9)]);
  const fc3 = msTensorToFloat32(byName.get("fc3.bias")!);
  assertEquals(fc3.length, 10);
  assert(fc3.every((v) => Number.isFinite(v) && Math.abs(v) < 10));
});

Deno.test("the fixture's optimizer state (Momentum moments, learning_rate, momentum) splits from the parameters", () => {
  const { params, optimizer } = splitOptimizerState(readMsCheckpoint(FIXTURE).tensors);
  assertEquals(params.map((t) => t.name), PARAMS);
  assertEquals(optimizer.map((t) => t.name), ["learning_rate", "momentum", ...PARAMS.map((p) => `moments.${p}`)]);
  for (const p of PARAMS) assertEquals(optimizer.find((t) => t.name === `moments.${p}`)!.shape, SHAPES[p]);
});

Deno.test("optimizer-state names follow MindSpore's optimizers, and a slot needs its parameter when names are given", () => {
  for (
    const n of [
      "global_step",
      "beta1_power",
      "beta2_power",
      "learning_rate_group_1",
      "moment1.fc.weight",
      "adam_v.fc.weight",
      "accum.fc.weight",
      "mean_square.fc.weight",
    ]
  ) assert(isOptimizerState(n), n);
  for (const n of ["fc.weight", "moments", "conv_moments.weight", "momentum_net.bias"]) assert(!isOptimizerState(n), n);
  const names = new Set(["linear.weight", "fc.weight", "linear.fc.weight", "lr_fc.weight"]);
  assert(!isOptimizerState("linear.weight", names)); // a layer called "linear", not FTRL's slot
  assert(isOptimizerState("linear.fc.weight", names));
  assert(isOptimizerState("lr_fc.weight", names));
});

Deno.test("the fixture re-serialises to exactly its own bytes, tensor by tensor and as a whole", () => {
  const bytes = fixture();
  const ckpt = parseMsCheckpoint(bytes, FIXTURE);
  const again = serializeMsCheckpoint(ckpt.tensors);
  // MindSpore writes one Value per message, dims unpacked, fields in number order: protobufjs does the same.
  assertEquals(again.length, bytes.length);
  assert(again.every((b, i) => b === bytes[i]), "re-serialised bytes differ");
  const back = parseMsCheckpoint(again, "again.ckpt");
  assertEquals(
    back.tensors.map((t) => [t.name, t.dtype, t.shape]),
    ckpt.tensors.map((t) => [t.name, t.dtype, t.shape]),
  );
  for (let i = 0; i < ckpt.tensors.length; i++) assertEquals(back.tensors[i].data, ckpt.tensors[i].data);
});

Deno.test('with crc the file gains b"crc_num" and the CRC-32 of the rest as 10 big-endian bytes, and parses back', () => {
  const bytes = fixture();
  const withCrc = serializeMsCheckpoint(parseMsCheckpoint(bytes, FIXTURE).tensors, { crc: true });
  assertEquals(withCrc.length, bytes.length + 17);
  assertEquals(withCrc.subarray(bytes.length), crcTrailer(bytes));
  assertEquals(Array.from(withCrc.subarray(bytes.length + 7, bytes.length + 13)), [0, 0, 0, 0, 0, 0]);
  const back = parseMsCheckpoint(withCrc, "crc.ckpt");
  assertEquals([back.crc, back.tensors.length], [true, 18]);
});

Deno.test("a damaged file under a CRC trailer fails the CRC check, naming the file", () => {
  const withCrc = serializeMsCheckpoint(parseMsCheckpoint(fixture(), FIXTURE).tensors, { crc: true });
  const damaged = withCrc.slice();
  damaged[1000] ^= 0x10; // inside conv2.weight's data: still a valid protobuf
  expectInputError(() => parseMsCheckpoint(damaged, "damaged.ckpt"), "damaged.ckpt", "CRC-32 check failed");
  const badTrailer = withCrc.slice();
  badTrailer[badTrailer.length - 10] = 1; // a non-zero high byte: no CRC-32 is that big
  expectInputError(() => parseMsCheckpoint(badTrailer, "trailer.ckpt"), "trailer.ckpt", "CRC-32 check failed");
});

// ---------------------------------------------------------------------------------------------------------------------
// Hand-built cases

Deno.test("packed and unpacked dims decode alike, and the writer emits MindSpore's unpacked form", () => {
  const content = f32Bytes(...Array.from({ length: 30 }, (_, i) => i));
  const unpacked = valueMessage("w", [2, 1, 3, 5], "Float32", content);
  const packed = valueMessage("w", [2, 1, 3, 5], "Float32", content, true);
  assertEquals(unpacked.length - packed.length, 2); // four tags 0x08 become one tag 0x0a and a length
  for (const bytes of [unpacked, packed]) {
    const t = parseMsCheckpoint(bytes, "dims.ckpt").tensors[0];
    assertEquals([t.name, t.dtype, t.shape], ["w", "Float32", [2, 1, 3, 5]]);
    assertEquals(t.data, content);
  }
  assertEquals(serializeMsCheckpoint(parseMsCheckpoint(packed).tensors), unpacked);
});

Deno.test("a scalar reads as shape [] from dims [0] or from no dims, and writes back the way it came", () => {
  const zero = valueMessage("lr", [0], "Float32", f32Bytes(0.5));
  const empty = valueMessage("lr", [], "Float32", f32Bytes(0.5)); // how MindSpore 2.x saves a 0-d tensor
  const a = parseMsCheckpoint(zero, "s.ckpt").tensors[0], b = parseMsCheckpoint(empty, "s.ckpt").tensors[0];
  assertEquals([a.shape, a.emptyDims, b.shape, b.emptyDims], [[], undefined, [], true]);
  assertEquals(serializeMsCheckpoint([a]), zero);
  assertEquals(serializeMsCheckpoint([b]), empty);
  assertEquals(serializeMsCheckpoint([float32ToMsTensor("lr", [], [0.5])]), zero); // new scalars get [0]
});

Deno.test("a tensor split across values with the same tag is joined in order", () => {
  const bytes = concat(
    valueMessage("big", [4], "Float32", f32Bytes(1, 2)),
    valueMessage("big", [4], "Float32", f32Bytes(3, 4)),
    valueMessage("small", [1], "Float32", f32Bytes(9)),
  );
  const ckpt = parseMsCheckpoint(bytes, "split.ckpt");
  assertEquals(ckpt.tensors.map((t) => t.name), ["big", "small"]);
  assertEquals(Array.from(msTensorToFloat32(ckpt.tensors[0])), [1, 2, 3, 4]);
  // The writer splits the same way (MindSpore: 512 MiB slices) and so reproduces the file.
  assertEquals(serializeMsCheckpoint(ckpt.tensors, { maxTensorBytes: 8 }), bytes);
  const whole = concat(
    valueMessage("big", [4], "Float32", f32Bytes(1, 2, 3, 4)),
    valueMessage("small", [1], "Float32", f32Bytes(9)),
  );
  assertEquals(serializeMsCheckpoint(ckpt.tensors), whole);
});

Deno.test("slices that disagree, or a name that comes back after another tensor, are errors naming the tensor", () => {
  const disagree = concat(
    valueMessage("big", [4], "Float32", f32Bytes(1, 2)),
    valueMessage("big", [2, 2], "Float32", f32Bytes(3, 4)),
  );
  expectInputError(() => parseMsCheckpoint(disagree, "x.ckpt"), "x.ckpt", 'tensor "big"', "slices disagree");
  const apart = concat(
    valueMessage("a", [1], "Float32", f32Bytes(1)),
    valueMessage("b", [1], "Float32", f32Bytes(2)),
    valueMessage("a", [1], "Float32", f32Bytes(3)),
  );
  expectInputError(() => parseMsCheckpoint(apart, "x.ckpt"), "x.ckpt", 'tensor "a"', "twice");
});

Deno.test("Float16 and BFloat16 convert to hand-computed values, both ways", () => {
  const half = {
    name: "h",
    dtype: "Float16" as const,
    shape: [8],
    data: u16Bytes(0x3c00, 0xc000, 0x3555, 0x7bff, 0x0001, 0x7c00, 0x8000, 0x3e00),
  };
  // 0x3555: 2^-2 * (1 + 341/1024); 0x7bff: 2^15 * (1 + 1023/1024); 0x0001: 2^-24 (smallest subnormal).
  assertEquals(Array.from(msTensorToFloat32(half)), [1, -2, 0.333251953125, 65504, 2 ** -24, Infinity, -0, 1.5]);
  const bf = {
    name: "b",
    dtype: "BFloat16" as const,
    shape: [5],
    data: u16Bytes(0x3f80, 0xc000, 0x3eab, 0x4049, 0x7f80),
  };
  // 0x3eab: 2^-2 * (1 + 43/128); 0x4049: 2 * (1 + 73/128).
  assertEquals(Array.from(msTensorToFloat32(bf)), [1, -2, 0.333984375, 3.140625, Infinity]);

  // To Float16, nearest even: 1/3 → 0x3555; 65520 is halfway between 65504 (odd mantissa) and 65536 → infinity;
  // 65519 → 65504; 1e-7 = 1.68 * 2^-24 → subnormal 2; 3e-8 = 0.50 * 2^-24 (just above half) → 1; -0 stays -0.
  const h = float32ToMsTensor("h", [6], [1 / 3, 65520, 65519, 1e-7, 3e-8, -0], "Float16");
  assertEquals(Array.from(new Uint16Array(h.data.buffer)), [0x3555, 0x7c00, 0x7bff, 0x0002, 0x0001, 0x8000]);
  // To BFloat16, nearest even: 1/3 (0x3eaaaaab) → 0x3eab; pi (0x40490fdb) → 0x4049; 1.00390625 (0x3f808000) is a
  // tie → even 0x3f80; 1.01171875 (0x3f818000) a tie → even 0x3f82.
  const b = float32ToMsTensor("b", [4], [1 / 3, Math.PI, 1.00390625, 1.01171875], "BFloat16");
  assertEquals(Array.from(new Uint16Array(b.data.buffer)), [0x3eab, 0x4049, 0x3f80, 0x3f82]);
  assert(Number.isNaN(msTensorToFloat32(float32ToMsTensor("n", [1], [NaN], "Float16"))[0]));
  assert(Number.isNaN(msTensorToFloat32(float32ToMsTensor("n", [1], [NaN], "BFloat16"))[0]));
});

Deno.test("integer, Bool and Float64 tensors convert to float32, and integers must be whole and in range", () => {
  const ints = float32ToMsTensor("step", [3], [-5, 0, 2 ** 40], "Int64");
  assertEquals(Array.from(msTensorToFloat32(ints)), [-5, 0, 2 ** 40]);
  assertEquals(Array.from(msTensorToFloat32(float32ToMsTensor("m", [3], [0, 2, 0], "Bool"))), [0, 1, 0]);
  assertEquals(Array.from(msTensorToFloat32(float32ToMsTensor("u", [2], [255, 7], "UInt8"))), [255, 7]);
  assertEquals(Array.from(msTensorToFloat32(float32ToMsTensor("d", [1], [0.1], "Float64"))), [Math.fround(0.1)]);
  expectInputError(() => float32ToMsTensor("k", [1], [1.5], "Int32"), 'tensor "k"', "whole number");
  expectInputError(() => float32ToMsTensor("k", [1], [256], "UInt8"), 'tensor "k"', "range of UInt8");
  expectInputError(() => float32ToMsTensor("k", [2], [1], "Float32"), 'tensor "k"', "1 values");
});

Deno.test('a string value (tensor_type "str", UTF-32 with dims [0]) reads and writes back', () => {
  const utf32 = new Uint8Array(new Uint32Array([..."ok"].map((c) => c.codePointAt(0)!)).buffer);
  const bytes = valueMessage("note", [0], "str", utf32);
  const t = parseMsCheckpoint(bytes, "str.ckpt").tensors[0];
  assertEquals([t.dtype, t.shape, t.data.length], ["str", [], 8]);
  assertEquals(serializeMsCheckpoint([t]), bytes);
  expectInputError(() => msTensorToFloat32(t), 'tensor "note"');
});

Deno.test("a byte count that does not fit the shape is an error naming the file and the tensor", () => {
  const bytes = valueMessage("fc.weight", [2, 3], "Float32", f32Bytes(1, 2, 3));
  expectInputError(() => parseMsCheckpoint(bytes, "short.ckpt"), "short.ckpt", 'tensor "fc.weight"', "12 bytes", "24");
  const t: MsTensor = { name: "fc.weight", dtype: "Float32", shape: [2], data: new Uint8Array(4) };
  expectInputError(() => serializeMsCheckpoint([t]), 'tensor "fc.weight"', "needs 8");
  const empty: MsTensor = { name: "e", dtype: "Float32", shape: [0], data: new Uint8Array() };
  expectInputError(() => serializeMsCheckpoint([empty]), 'tensor "e"', "scalar");
});

Deno.test("an unknown tensor_type is an error naming the tensor", () => {
  for (const type of ["Complex64", "Uint8", "float32", ""]) {
    const bytes = valueMessage("w", [1], type, new Uint8Array(8));
    expectInputError(() => parseMsCheckpoint(bytes, "type.ckpt"), "type.ckpt", 'tensor "w"', "unknown tensor_type");
  }
});

Deno.test("truncated files are InputErrors naming the file", () => {
  const bytes = fixture();
  for (const n of [1, 2, 3, 10, 100, 641, 642, 5000, bytes.length - 1]) {
    expectInputError(() => parseMsCheckpoint(bytes.subarray(0, n), "cut.ckpt"), "cut.ckpt");
  }
  expectInputError(() => parseMsCheckpoint(new Uint8Array(), "empty.ckpt"), "empty.ckpt", "no tensors");
});

Deno.test("encrypted files, and files that are not checkpoints at all, are refused with a message that says so", () => {
  // save_checkpoint(enc_key=...) writes blocks starting with crypto.h's magic, little-endian (0x7F3A5ED8 for GCM).
  const gcm = Uint8Array.from([0xd8, 0x5e, 0x3a, 0x7f, 0x3c, 0, 0, 0, 0x10, 0, 0, 0, 1, 2, 3]);
  assert(isMsCheckpoint(gcm));
  expectInputError(() => parseMsCheckpoint(gcm, "enc.ckpt"), "enc.ckpt", "encrypted", "AES-GCM");
  const cbc = gcm.slice();
  cbc[0] = 0xd9;
  expectInputError(() => parseMsCheckpoint(cbc, "enc.ckpt"), "AES-CBC");
  const rng = createRng(7);
  const noise = Uint8Array.from({ length: 4096 }, () => randInt(rng, 0, 255));
  assert(!isMsCheckpoint(noise) || noise[0] === 0x0a);
  expectInputError(() => parseMsCheckpoint(noise, "noise.bin"), "noise.bin", "encrypted or not a MindSpore checkpoint");
  const workbench = enc.encode('SSDWBCK1\x10\x00\x00\x00{"format":"ssd"}');
  assert(!isMsCheckpoint(workbench));
  expectInputError(() => parseMsCheckpoint(workbench, "wb.ckpt"), "wb.ckpt", "encrypted or not a MindSpore checkpoint");
});

Deno.test("writeMsCheckpoint writes atomically and readMsCheckpoint reads it back; a missing file is an InputError", async () => {
  const dir = Deno.makeTempDirSync();
  const tensors = [
    float32ToMsTensor("fc.weight", [2, 2], [1, 2, 3, 4]),
    float32ToMsTensor("global_step", [1], [7], "Int32"),
  ];
  await writeMsCheckpoint(`${dir}/out.ckpt`, tensors, { crc: true });
  assertEquals(fs.readdirSync(dir), ["out.ckpt"]); // no temporary file left behind
  const back = readMsCheckpoint(`${dir}/out.ckpt`);
  assertEquals(back.crc, true);
  assertEquals(back.tensors, tensors);
  expectInputError(() => readMsCheckpoint(`${dir}/nope.ckpt`), "nope.ckpt", "cannot read");
  assertThrows(() => serializeMsCheckpoint(tensors, { maxTensorBytes: 0 }), RangeError);
  expectInputError(() => serializeMsCheckpoint([tensors[0], tensors[0]]), 'tensor "fc.weight"', "twice");
});

// ---------------------------------------------------------------------------------------------------------------------
// Fuzzing

const CASES = Number(Deno.env.get("FUZZ_CASES") ?? 1000); // raise for a longer campaign

/** 1-4 random edits: byte changes, bit flips, deletions, insertions, duplications, truncation. */
function mutate(src: Uint8Array, rng: Rng): Uint8Array {
  let b: Uint8Array = src.slice();
  for (let k = randInt(rng, 1, 4); k > 0; k--) {
    // Aim at the protobuf framing at the start half the time; the rest lands anywhere (mostly tensor data).
    const pos = rng() < 0.5 ? randInt(rng, 0, Math.min(b.length, 64)) : randInt(rng, 0, Math.max(0, b.length - 1));
    const kind = randInt(rng, 0, 5);
    if (kind === 0 && b.length > 0) b[pos] = randInt(rng, 0, 255);
    else if (kind === 1) b = concat(b.subarray(0, pos), b.subarray(Math.min(b.length, pos + randInt(rng, 1, 16))));
    else if (kind === 2) {
      const ins = Uint8Array.from({ length: randInt(rng, 1, 6) }, () => randInt(rng, 0, 255));
      b = concat(b.subarray(0, pos), ins, b.subarray(pos));
    } else if (kind === 3) b = concat(b.subarray(0, pos), b.subarray(pos, pos + randInt(rng, 1, 40)), b.subarray(pos));
    else if (kind === 4 && rng() < 0.3) b = b.subarray(0, pos);
    else if (b.length > 0) b[pos] ^= 1 << randInt(rng, 0, 7);
  }
  return b;
}

Deno.test("the reader survives 1000 mutated checkpoints with InputErrors naming the file, and nothing else", () => {
  const rng = createRng(1875);
  const plain = fixture();
  const small = serializeMsCheckpoint([
    float32ToMsTensor("lr", [], [0.1], "Float64"),
    float32ToMsTensor("w", [2, 3], [1, 2, 3, 4, 5, 6], "Float16"),
    float32ToMsTensor("big", [6], [1, 2, 3, 4, 5, 6]),
  ], { maxTensorBytes: 8 });
  const bases = [plain, serializeMsCheckpoint(parseMsCheckpoint(plain).tensors, { crc: true }), small];
  let parsed = 0, failed = 0;
  for (let i = 0; i < CASES; i++) {
    const bytes = mutate(bases[i % bases.length], rng);
    try {
      const ckpt = parseMsCheckpoint(bytes, "fuzz.ckpt");
      parsed++;
      for (const t of ckpt.tensors) if (t.dtype !== "str") msTensorToFloat32(t);
      // Whatever parses writes back and parses again to the same tensors.
      assertEquals(parseMsCheckpoint(serializeMsCheckpoint(ckpt.tensors, { crc: ckpt.crc })).tensors, ckpt.tensors);
    } catch (e) {
      if (!(e instanceof InputError)) {
        throw new Error(`case ${i}: not an InputError: ${e instanceof Error ? e.stack : e}`);
      }
      if (!e.message.includes("fuzz.ckpt")) throw new Error(`case ${i}: error does not name the file: ${e.message}`);
      failed++;
    }
  }
  assertEquals(parsed + failed, CASES);
  assert(parsed > 0 && failed > 0, `parsed ${parsed}, failed ${failed}`);
});
