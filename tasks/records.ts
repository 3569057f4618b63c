/** `deno task records FILE`: summarises a MindRecord set, or dumps its rows as JSON lines. */
import * as fs from "node:fs";
import { parseTaskArgs, runTask } from "./cli.ts";
import { InputError } from "../lib/errors.ts";
import { dumpMindRecord } from "../lib/mindrecord_dump.ts";
import { verifyIndexDb } from "../lib/mindrecord_index.ts";
import { openMindRecord, summarizeMindRecord } from "../lib/mindrecord_reader.ts";
import { Progress } from "../lib/progress.ts";

const spec = {
  name: "records",
  summary: "Print a MindRecord set's version, schema, shard files and row count; or dump every row as JSON lines.",
  usage: "FILE [--dump OUT.jsonl] [--single] [--verify]",
  positionals: "FILE  any shard of the set (usually shard 0, e.g. ssd.mindrecord0)",
  flags: {
    dump: { type: "string", arg: "OUT.jsonl", help: "write one JSON object per row (shard order, then row order)" },
    single: { type: "boolean", help: "read only FILE even when its header lists other shards" },
    verify: { type: "boolean", help: "decode every row and check each .db index against the pages" },
  },
  epilog: [
    "Dump format: keys sorted; integers as numbers (beyond ±2^53 as decimal strings); floats as the shortest",
    'text that round-trips at their schema width; arrays nested by shape; bytes as {"length": N, "sha256": HEX}.',
  ].join("\n"),
} as const;

runTask(async () => {
  const { values, positionals } = parseTaskArgs(spec);
  if (positionals.length !== 1) throw new InputError("expected one FILE; see --help");
  const file = positionals[0];
  const opts = { singleShard: values.single === true };
  console.log(summarizeMindRecord(file, opts));
  if (values.verify === true) {
    const set = openMindRecord(file, opts);
    const bar = new Progress("verify", set.numRows, { unit: "row" });
    for (const _ of set.rows()) bar.tick();
    bar.done();
    const problems = set.shards.flatMap((s) => verifyIndexDb(s.file, s.header));
    for (const p of problems) console.log(`  ${p}`);
    if (problems.length > 0) throw new InputError(`${problems.length} index problem(s) found`, { file });
    console.log(`verified ${set.numRows} rows and ${set.shards.length} .db index(es)`);
  }
  if (typeof values.dump === "string") {
    const out = values.dump;
    const bar = new Progress("dump", 0, { unit: "row" });
    const n = await dumpMindRecord(file, out, { ...opts, onRow: () => bar.tick() });
    bar.done();
    console.log(`wrote ${n} rows to ${out} (${fs.statSync(out).size} bytes)`);
  }
});
