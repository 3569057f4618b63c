/** `deno task convert`: COCO / VOC / TXT / MindRecord in, MindRecord or COCO out. */
import { intFlag, parseTaskArgs, runTask } from "./cli.ts";
import { InputError } from "../lib/errors.ts";
import { convert, type ConvertOptions } from "../lib/convert.ts";
import { formatReport } from "../lib/input_policy.ts";

const spec = {
  name: "convert",
  summary: "Convert a detection dataset between COCO json, Pascal VOC, ModelZoo TXT and MindRecord.",
  usage: "--from coco|voc|txt|mindrecord --to mindrecord|coco --input PATH --out DIR [options]",
  flags: {
    from: { type: "string", arg: "FORMAT", help: "input format: coco, voc, txt or mindrecord" },
    to: { type: "string", arg: "FORMAT", default: "mindrecord", help: "output format: mindrecord or coco" },
    input: { type: "string", arg: "PATH", help: "COCO json, VOC root, TXT file, or shard 0 of a MindRecord set" },
    images: {
      type: "string",
      arg: "DIR",
      help: "image folder (COCO: guessed from the usual layouts; TXT: beside it; VOC: ROOT/JPEGImages)",
    },
    out: { type: "string", arg: "DIR", help: "output folder" },
    shards: { type: "string", arg: "N", default: "8", help: "MindRecord shard files, as the ModelZoo" },
    prefix: { type: "string", arg: "NAME", default: "ssd.mindrecord", help: "MindRecord file prefix" },
    schema: {
      type: "string",
      arg: "ssd|full",
      default: "ssd",
      help: "MindRecord schema (full keeps every COCO field)",
    },
    policy: {
      type: "string",
      arg: "error|clip|drop",
      default: "error",
      help: "bad boxes, unknown classes, missing images",
    },
    classes: {
      type: "string",
      arg: "auto|coco|voc|FILE",
      default: "auto",
      help: "class map (FILE: a COCO json's categories, or YAML classes: [...])",
    },
    split: { type: "string", arg: "NAME", help: "VOC ImageSets/Main/NAME.txt (default: every annotation)" },
    layout: {
      type: "string",
      arg: "yx|xy",
      default: "yx",
      help: "axis order of SSD annotation rows in MindRecord input",
    },
    quiet: { type: "boolean", short: "q", help: "no progress bar" },
  },
  epilog: [
    "Examples:",
    "  deno task convert --from coco --input runs/synth/annotations/instances_train.json \\",
    "    --images runs/synth/images/train --out runs/mindrecord/train",
    "  deno task convert --from mindrecord --to coco --input runs/mindrecord/train/ssd.mindrecord0 --out runs/coco_back",
  ].join("\n"),
} as const;

const oneOf = <T extends string>(name: string, v: unknown, allowed: readonly T[]): T => {
  if (typeof v !== "string" || !allowed.includes(v as T)) {
    throw new InputError(`option --${name} must be one of ${allowed.join(", ")}, got ${JSON.stringify(v ?? null)}`);
  }
  return v as T;
};

runTask(async () => {
  const { values } = parseTaskArgs(spec);
  for (const k of ["from", "input", "out"]) {
    if (typeof values[k] !== "string") throw new InputError(`option --${k} is required; see --help`);
  }
  const shards = intFlag(values, "shards") ?? 8;
  if (shards < 1 || shards > 1000) throw new InputError(`option --shards must be in 1..1000, got ${shards}`);
  const opts: ConvertOptions = {
    from: oneOf("from", values.from, ["coco", "voc", "txt", "mindrecord"] as const),
    to: oneOf("to", values.to, ["mindrecord", "coco"] as const),
    input: values.input as string,
    images: values.images as string | undefined,
    out: values.out as string,
    shards,
    prefix: values.prefix as string,
    schema: oneOf("schema", values.schema, ["ssd", "full"] as const),
    policy: oneOf("policy", values.policy, ["error", "clip", "drop"] as const),
    classes: values.classes as string,
    split: values.split as string | undefined,
    layout: oneOf("layout", values.layout, ["yx", "xy"] as const),
    quiet: values.quiet === true,
  };
  const t0 = performance.now();
  const r = await convert(opts);
  console.log(
    `wrote ${r.images} images, ${r.boxes} boxes to ${opts.out} (${r.files.length} files) in ${
      ((performance.now() - t0) / 1000).toFixed(1)
    } s; ${formatReport(r.report)}`,
  );
  for (const n of r.report.notes) console.log(`  ${n}`);
});
