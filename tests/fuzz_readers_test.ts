// Every reader meets 1000 seeded mutations of a valid input: each either reads or fails with an InputError that names
// the file, never another exception, never a hang, and never leaves a partial output file behind.
import { ok as assert } from "node:assert";
import * as fs from "node:fs";
import { InputError } from "../lib/errors.ts";
import { createRng, randInt, type Rng } from "../lib/rng.ts";
import { parseCoco } from "../lib/coco_reader.ts";
import { parseVocXml } from "../lib/voc_reader.ts";
import { readTxt } from "../lib/txt_reader.ts";
import { convert } from "../lib/convert.ts";
import { dumpMindRecord, dumpRow } from "../lib/mindrecord_dump.ts";
import { openMindRecord } from "../lib/mindrecord_reader.ts";
import { writeMindRecord } from "../lib/mindrecord_writer.ts";
import type { Policy } from "../lib/input_policy.ts";

const CASES = Number(Deno.env.get("FUZZ_CASES") ?? 1000); // raise for a longer campaign
const TOKENS = new TextEncoder().encode('{}[]",:0123456789-.eE+ \n\t<>/&;#x!?=abcnul\u00e9\\');

/** Applies 1-4 random edits: byte changes, deletions, token insertions, duplications, truncation. */
function mutate(src: Uint8Array, rng: Rng, from = 0): Uint8Array {
  let b: Uint8Array = Uint8Array.from(src); // a copy (Buffer#slice would share memory)
  const edits = randInt(rng, 1, 4);
  for (let k = 0; k < edits; k++) {
    const pos = randInt(rng, from, Math.max(from, b.length - 1));
    const kind = randInt(rng, 0, 5);
    if (kind === 0 && b.length > 0) b[pos] = randInt(rng, 0, 255);
    else if (kind === 1) b = concat(b.subarray(0, pos), b.subarray(Math.min(b.length, pos + randInt(rng, 1, 16))));
    else if (kind === 2) {
      const ins = Uint8Array.from({ length: randInt(rng, 1, 6) }, () => TOKENS[randInt(rng, 0, TOKENS.length - 1)]);
      b = concat(b.subarray(0, pos), ins, b.subarray(pos));
    } else if (kind === 3) {
      const len = randInt(rng, 1, 40);
      b = concat(b.subarray(0, pos), b.subarray(pos, pos + len), b.subarray(pos));
    } else if (kind === 4 && rng() < 0.3) b = b.subarray(0, pos);
    else if (b.length > 0) b[pos] ^= 1 << randInt(rng, 0, 7);
  }
  return b;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) (out.set(p, o), o += p.length);
  return out;
}

/** Runs `fn`; a thrown error must be an InputError naming `file`. Returns whether it threw. */
async function expectTyped(fn: () => unknown, file: string, label: string): Promise<boolean> {
  try {
    await fn();
    return false;
  } catch (e) {
    if (!(e instanceof InputError)) throw new Error(`${label}: not an InputError: ${e instanceof Error ? e.stack : e}`);
    if (!e.message.includes(file)) throw new Error(`${label}: error does not name ${file}: ${e.message}`);
    return true;
  }
}

const POLICIES: Policy[] = ["error", "clip", "drop"];
const td = new TextDecoder();

Deno.test("the COCO json reader survives 1000 mutated files with typed errors only", async () => {
  const rng = createRng(11);
  const base = fs.readFileSync("tests/fixtures/coco/instances.json");
  const dir = Deno.makeTempDirSync();
  let failed = 0;
  for (let i = 0; i < CASES; i++) {
    const text = td.decode(mutate(base, rng));
    const policy = POLICIES[i % 3];
    if (await expectTyped(() => parseCoco(text, "fuzz.json", { policy }), "fuzz.json", `coco case ${i}`)) failed++;
    if (i % 50 === 0) {
      // Through the whole stage: a failure leaves the output folder empty.
      fs.writeFileSync(`${dir}/in.json`, text);
      const out = `${dir}/out${i}`;
      const threw = await expectTyped(
        () =>
          convert({
            from: "coco",
            to: "mindrecord",
            input: `${dir}/in.json`,
            images: "tests/fixtures/coco/images",
            out,
            shards: 2,
            pageSize: 32768,
            headerSize: 16384,
            policy,
            quiet: true,
          }),
        `${dir}/in.json`,
        `coco convert case ${i}`,
      );
      if (threw) assert(!fs.existsSync(out) || fs.readdirSync(out).length === 0, `partial output in case ${i}`);
    }
  }
  assert(failed > CASES / 4 && failed < CASES, `mutations should break some inputs, not all (${failed})`);
});

Deno.test("the VOC xml reader survives 1000 mutated files with typed errors only", async () => {
  const rng = createRng(12);
  const base = fs.readFileSync("tests/fixtures/voc/VOC2007/Annotations/000005.xml");
  let failed = 0;
  for (let i = 0; i < CASES; i++) {
    const text = td.decode(mutate(base, rng));
    if (
      await expectTyped(() => parseVocXml(text, "fuzz.xml", { policy: POLICIES[i % 3] }), "fuzz.xml", `voc case ${i}`)
    ) failed++;
  }
  assert(failed > CASES / 4 && failed < CASES, `mutations should break some inputs, not all (${failed})`);
});

Deno.test("the TXT reader survives 1000 mutated files with typed errors only", async () => {
  const rng = createRng(13);
  const base = fs.readFileSync("tests/fixtures/txt/anno.txt");
  const dir = Deno.makeTempDirSync();
  const file = `${dir}/fuzz.txt`;
  let failed = 0;
  for (let i = 0; i < CASES; i++) {
    fs.writeFileSync(file, mutate(base, rng));
    const read = () => readTxt(file, { images: "tests/fixtures/txt", policy: POLICIES[i % 3] });
    if (await expectTyped(read, file, `txt case ${i}`)) failed++;
  }
  assert(failed > CASES / 10 && failed < CASES, `mutations should break some inputs, not all (${failed})`);
});

Deno.test("the MindRecord reader survives 1000 mutated headers and pages with typed errors only", async () => {
  const rng = createRng(14);
  const dir = Deno.makeTempDirSync();
  // A small SSD-schema set (compressed int arrays, bytes, dummy raw rows) and a fixture with raw scalars.
  const rows = Array.from({ length: 4 }, (_, i) => ({
    img_id: { dtype: "int32" as const, shape: [1], data: Int32Array.of(i) },
    image: new Uint8Array(50 + i).fill(i),
    annotation: { dtype: "int32" as const, shape: [1, 5], data: Int32Array.of(1, 2, 300, 40000, i) },
  }));
  const [ssd] = writeMindRecord(`${dir}/ssd.mr`, rows, {
    schema: {
      img_id: { type: "int32", shape: [1] },
      image: { type: "bytes" },
      annotation: { type: "int32", shape: [-1, 5] },
    },
    pageSize: 32768,
    headerSize: 16384,
    batchSize: 1,
  });
  const bases = [fs.readFileSync(ssd), fs.readFileSync("tests/fixtures/mindrecord/testdata")];
  const file = `${dir}/fuzz.mr`;
  let failed = 0;
  for (let i = 0; i < CASES; i++) {
    const base = bases[i % 2];
    const hlen = Number(new DataView(base.buffer, base.byteOffset).getBigUint64(0, true));
    const headerSize = i % 2 === 0 ? 16384 : 32768;
    let bytes: Uint8Array;
    if (i % 4 < 2) {
      // Header: mutate the JSON text, then usually fix up its length prefix so the JSON itself is what is tested.
      const json = mutate(base.subarray(8, 8 + hlen), rng);
      const len = new Uint8Array(8);
      new DataView(len.buffer).setBigUint64(0, BigInt(rng() < 0.9 ? json.length : hlen), true);
      const head = new Uint8Array(Math.max(headerSize - 8 - json.length, 0));
      bytes = concat(len, json, head, base.subarray(Math.min(base.length, 8 + json.length + head.length)));
    } else {
      bytes = mutate(base, rng, headerSize); // pages only
    }
    fs.writeFileSync(file, bytes);
    const read = () => {
      const set = openMindRecord(file, { singleShard: true });
      for (const row of set.rows()) dumpRow(row, set.schema.schema);
    };
    if (await expectTyped(read, file, `mindrecord case ${i}`)) failed++;
    if (i % 50 === 0) {
      const out = `${dir}/dump${i}/rows.jsonl`;
      if (await expectTyped(() => dumpMindRecord(file, out, { singleShard: true }), file, `dump case ${i}`)) {
        assert(
          !fs.existsSync(`${dir}/dump${i}`) || fs.readdirSync(`${dir}/dump${i}`).length === 0,
          `partial dump in case ${i}`,
        );
      }
    }
  }
  assert(failed > CASES / 4 && failed < CASES, `mutations should break some inputs, not all (${failed})`);
});
