/**
 * `deno task bench`: every benchmark side by side in one run. Prints a table
 * and writes JSON to bench/results/. Figures are ratios against references
 * measured in the same run; peers (PyTorch, pycocotools) appear when present.
 */
import * as path from "node:path";
import { parseTaskArgs, runTask } from "../lib/cli.ts";
import { InputError } from "../lib/errors.ts";
import { writeJsonAtomic } from "../lib/fs_atomic.ts";
import { benchConv } from "./conv_bench.ts";
import { type BenchRow, formatTable } from "./report.ts";

const SECTIONS: Record<string, (o: { quick: boolean }) => Promise<BenchRow[]>> = {
  conv: benchConv,
};

const spec = {
  name: "bench",
  summary: "Run the benchmarks side by side and print a table of ratios; JSON goes to bench/results/.",
  usage: `[--only ${Object.keys(SECTIONS).join(",")}] [--quick] [--out DIR]`,
  flags: {
    only: { type: "string", arg: "LIST", help: `comma-separated sections (${Object.keys(SECTIONS).join(", ")})` },
    quick: { type: "boolean", help: "fewer repetitions" },
    out: { type: "string", arg: "DIR", default: "bench/results", help: "where the JSON goes" },
  },
} as const;

runTask(async () => {
  const { values } = parseTaskArgs(spec);
  const names = values.only ? (values.only as string).split(",") : Object.keys(SECTIONS);
  for (const n of names) if (!SECTIONS[n]) throw new InputError(`unknown section "${n}"`);
  const rows: BenchRow[] = [];
  for (const n of names) {
    console.error(`bench: ${n} ...`);
    rows.push(...await SECTIONS[n]({ quick: Boolean(values.quick) }));
  }
  console.log(formatTable(rows));
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  const file = path.join(values.out as string, `bench-${stamp}.json`);
  await writeJsonAtomic(file, { date: new Date().toISOString(), deno: Deno.version, rows });
  console.log(`\nwrote ${file}`);
});
