/**
 * `deno task ckpt`: inspects and converts checkpoints, MindSpore's `.ckpt` and
 * the workbench's own.
 *
 * @module
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { createHash } from "node:crypto";
import { parseTaskArgs, runTask } from "./cli.ts";
import { decodeCheckpoint, encodeCheckpoint, valuesAsTensors } from "../lib/checkpoint.ts";
import { ConfigError, InputError } from "../lib/errors.ts";
import { writeFileAtomic, writeJsonAtomic } from "../lib/fs_atomic.ts";
import {
  type MsCheckpointFile,
  parseMsCheckpoint,
  serializeMsCheckpoint,
  splitOptimizerState,
  writeMsCheckpoint,
} from "../lib/mindspore_ckpt.ts";
import {
  checkpointKind,
  checkpointValues,
  importMindSpore,
  matchConfigs,
  mindsporeTensors,
} from "../lib/mindspore_convert.ts";
import { loadSsdConfig, storedConfig } from "../lib/ssd_config.ts";

const spec = {
  name: "ckpt",
  summary: "Inspect a checkpoint (MindSpore .ckpt or the workbench's), dump its tensors, rewrite it, or convert " +
    "between the two formats for a model config.",
  usage:
    "FILE | --dump OUT.json FILE | --rewrite OUT.ckpt FILE | --to mindspore|workbench [--config CFG] --out OUT FILE",
  positionals: "FILE  a MindSpore .ckpt or a workbench checkpoint",
  flags: {
    dump: {
      type: "string",
      arg: "OUT.json",
      help: 'write {"params": [{"name", "dtype", "shape", "sha256"}]} in file order (sha256 of the raw bytes)',
    },
    rewrite: { type: "string", arg: "OUT.ckpt", help: "re-serialise every tensor of a MindSpore checkpoint" },
    to: { type: "string", arg: "FORMAT", help: "convert to mindspore or workbench (needs --out)" },
    config: {
      type: "string",
      arg: "CFG",
      help: "the model config (required to convert a MindSpore checkpoint; default for a workbench one: its own)",
    },
    out: {
      type: "string",
      arg: "OUT",
      help: "with --to: the output file (*.ckpt), or a folder to write FILE's name in",
    },
    configs: {
      type: "string",
      arg: "DIR",
      default: "configs",
      help: "where the summary looks for the model a MindSpore checkpoint matches",
    },
  },
  epilog: [
    "Examples:",
    "  deno task ckpt ssd-60_9.ckpt",
    "  deno task ckpt --to workbench --config configs/ssd300_vgg16.yaml --out runs/imported ssd-60_9.ckpt",
    "  deno task ckpt --to mindspore --out runs/mv2/ssd.ckpt runs/mv2/checkpoints/epoch-60.ckpt",
    "A converted MindSpore checkpoint loads with mindspore.load_checkpoint / load_param_into_net: ModelZoo models'",
    "names carry the network. prefix that its train.py and eval.py use, the tutorial's do not.",
  ].join("\n"),
} as const;

const MB = 1024 * 1024;

/** Where `--out` puts a converted `input`: a `.ckpt` path as given, else `OUT/<input's name>`. */
function outputFile(out: string, input: string): string {
  if (out.endsWith(".ckpt")) return out;
  fs.mkdirSync(out, { recursive: true });
  return path.join(out, path.basename(input));
}

function summarizeMindSpore(file: string, ms: MsCheckpointFile, configsDir: string): string {
  const { params, optimizer } = splitOptimizerState(ms.tensors);
  const dtypes = new Map<string, number>();
  for (const t of ms.tensors) dtypes.set(t.dtype, (dtypes.get(t.dtype) ?? 0) + 1);
  const bytes = ms.tensors.reduce((a, t) => a + t.data.length, 0);
  const lines = [
    `${file}: MindSpore checkpoint${ms.crc ? " with CRC-32 (checked)" : ""}`,
    `  tensors: ${ms.tensors.length} (${params.length} parameters, ${optimizer.length} optimizer state)`,
    `  dtypes: ${[...dtypes].map(([d, n]) => `${d} ${n}`).join(", ")}`,
    `  bytes: ${bytes} (${(bytes / MB).toFixed(1)} MiB)`,
  ];
  const configs = fs.existsSync(configsDir)
    ? fs.readdirSync(configsDir).filter((f) => f.endsWith(".yaml")).sort().map((f) => path.join(configsDir, f))
    : [];
  const matches = matchConfigs(ms, configs);
  const exact = matches.filter((m) => m.exact);
  if (exact.length) {
    lines.push(`  model: ${exact.map((m) => `${m.arch} (${m.config})`).join(", ")}: every parameter fits`);
  } else if (matches.length) {
    const m = matches[0];
    lines.push(`  model: none exactly; closest ${m.arch} (${m.config}), ${m.found} of ${m.total} parameters fit`);
  } else lines.push(`  model: none of the configs in ${configsDir}/`);
  return lines.join("\n");
}

runTask(async () => {
  const { values, positionals } = parseTaskArgs(spec);
  if (positionals.length !== 1) throw new InputError("expected one FILE; see --help");
  const file = positionals[0];
  let bytes: Uint8Array;
  try {
    bytes = fs.readFileSync(file);
  } catch (e) {
    throw new InputError(`cannot read checkpoint: ${(e as Error).message}`, { file });
  }
  const kind = checkpointKind(bytes);
  const needMs = (what: string) => {
    if (kind !== "mindspore") {
      throw new InputError(`${what} reads MindSpore checkpoints; this is a workbench one`, { file });
    }
    return parseMsCheckpoint(bytes, file);
  };

  if (typeof values.dump === "string") {
    const ms = needMs("--dump");
    const params = ms.tensors.map((t) => ({
      name: t.name,
      dtype: t.dtype,
      shape: t.shape,
      sha256: createHash("sha256").update(t.data).digest("hex"),
    }));
    await writeJsonAtomic(values.dump, { params });
    console.log(`wrote ${params.length} tensors to ${values.dump}`);
  } else if (typeof values.rewrite === "string") {
    const ms = needMs("--rewrite");
    const out = serializeMsCheckpoint(ms.tensors, { crc: ms.crc });
    await writeFileAtomic(values.rewrite, out);
    const same = out.length === bytes.length && out.every((b, i) => b === bytes[i]);
    console.log(
      `rewrote ${ms.tensors.length} tensors to ${values.rewrite} (${out.length} bytes; ` +
        `${same ? "identical to the input" : "the same tensors, different framing"})`,
    );
  } else if (typeof values.to === "string") {
    if (typeof values.out !== "string") throw new InputError("--to needs --out OUT; see --help");
    const config = values.config as string | undefined;
    if (values.to === "workbench") {
      const ms = needMs("--to workbench");
      if (!config) throw new ConfigError("--to workbench needs --config CFG: a MindSpore checkpoint names no model");
      const cfg = loadSsdConfig(config);
      const r = importMindSpore(ms, cfg, { file });
      const out = outputFile(values.out, file);
      await writeFileAtomic(
        out,
        await encodeCheckpoint({
          params: valuesAsTensors(r.params),
          momentum: valuesAsTensors(r.momentum),
          config: cfg as unknown as Record<string, unknown>,
          classNames: cfg.model.class_names ?? [],
          epoch: 0,
          globalStep: r.globalStep ?? 0,
        }),
      );
      const { params, momentum } = r;
      console.log(`wrote ${out}: ${params.size} parameters, ${momentum.size} momentum buffers (${cfg.model.arch})`);
    } else if (values.to === "mindspore") {
      if (kind !== "workbench") throw new InputError("--to mindspore reads workbench checkpoints", { file });
      const ckpt = decodeCheckpoint(bytes, file);
      const cfg = config ? loadSsdConfig(config) : storedConfig(ckpt.header.config, file);
      const { params, momentum } = checkpointValues(ckpt);
      const tensors = mindsporeTensors(params, cfg, {
        momentum: momentum.size ? momentum : undefined,
        globalStep: ckpt.header.global_step,
      });
      const out = outputFile(values.out, file);
      await writeMsCheckpoint(out, tensors);
      console.log(`wrote ${out}: ${tensors.length} MindSpore tensors (${cfg.model.arch})`);
    } else throw new InputError(`--to expects mindspore or workbench, got ${JSON.stringify(values.to)}`);
  } else if (kind === "mindspore") {
    console.log(summarizeMindSpore(file, parseMsCheckpoint(bytes, file), values.configs as string));
  } else {
    const ckpt = decodeCheckpoint(bytes, file);
    const cfg = storedConfig(ckpt.header.config, file);
    const n = [...ckpt.tensors.values()];
    console.log(
      [
        `${file}: workbench checkpoint of ${cfg.model.arch}, epoch ${ckpt.header.epoch}, step ${ckpt.header.global_step}`,
        `  tensors: ${n.length} (${n.filter((t) => t.group === "param").length} parameters, ` +
        `${n.filter((t) => t.group === "momentum").length} momentum), float32`,
        `  bytes: ${n.reduce((a, t) => a + 4 * t.data.length, 0)}`,
        `  classes: ${ckpt.header.class_names.length - 1} (+ background)`,
      ].join("\n"),
    );
  }
});
