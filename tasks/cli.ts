/**
 * Command-line conventions shared by every task: `--help`, `--config FILE`,
 * `--out DIR`, `--seed N`, `--key=value` config overrides, and errors printed
 * as one clear line instead of a stack trace.
 *
 * @module
 */
import { parseArgs } from "node:util";
import process from "node:process";
import { InputError } from "../lib/errors.ts";

/** One flag of a task. */
export interface FlagSpec {
  type: "string" | "boolean";
  short?: string;
  default?: string | boolean;
  multiple?: boolean;
  /** Placeholder shown in help, e.g. "DIR". */
  arg?: string;
  help: string;
}

/** What a task accepts. */
export interface TaskSpec {
  /** `deno task NAME`. */
  name: string;
  /** One line saying what the task does. */
  summary: string;
  /** Usage line after `deno task NAME`, e.g. "--out DIR [--seed N]". */
  usage: string;
  flags: Record<string, FlagSpec>;
  /** Help text for positional arguments; absent means none are accepted. */
  positionals?: string;
  /** Accept `--key=value` flags as config overrides. */
  overrides?: boolean;
  /** Extra paragraphs at the end of help (examples). */
  epilog?: string;
}

/** The parsed command line. */
export interface ParsedArgs {
  values: Record<string, string | boolean | string[] | undefined>;
  positionals: string[];
  /** Unknown `--key=value` flags, when the task accepts overrides. */
  overrides: Record<string, string>;
}

/** Renders the help text of a task. */
export function helpText(spec: TaskSpec): string {
  const lines = [`deno task ${spec.name} ${spec.usage}`, "", spec.summary, ""];
  if (spec.positionals) lines.push("Arguments:", `  ${spec.positionals}`, "");
  lines.push("Options:");
  const rows: [string, string][] = [];
  for (const [name, f] of Object.entries(spec.flags)) {
    const left = `${f.short ? `-${f.short}, ` : "    "}--${name}${f.type === "string" ? ` ${f.arg ?? "VALUE"}` : ""}`;
    const def = f.default !== undefined && f.default !== false ? ` (default: ${f.default})` : "";
    rows.push([left, f.help + def]);
  }
  rows.push(["-h, --help", "show this help"]);
  if (spec.overrides) rows.push(["    --KEY=VALUE", "override any config key, e.g. --train.lr=0.05"]);
  const w = Math.max(...rows.map((r) => r[0].length)) + 2;
  for (const [l, r] of rows) lines.push(`  ${l.padEnd(w)}${r}`);
  if (spec.epilog) lines.push("", spec.epilog);
  return lines.join("\n");
}

/**
 * Parses `args` against `spec`. Prints help and exits on `--help`; throws an
 * {@linkcode InputError} on an unknown flag.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const spec = { name: "x", summary: "", usage: "", overrides: true,
 *   flags: { out: { type: "string", help: "" } } } as const;
 * const p = parseTaskArgs(spec, ["--out", "d", "--train.lr=0.1"]);
 * assertEquals([p.values.out, p.overrides["train.lr"]], ["d", "0.1"]);
 * ```
 */
export function parseTaskArgs(spec: TaskSpec, args: string[] = Deno.args): ParsedArgs {
  if (args.includes("--help") || args.includes("-h")) {
    console.log(helpText(spec));
    process.exit(0);
  }
  const options: Record<
    string,
    { type: "string" | "boolean"; short?: string; multiple?: boolean; default?: string | boolean }
  > = {};
  for (const [name, f] of Object.entries(spec.flags)) {
    options[name] = { type: f.type };
    if (f.short) options[name].short = f.short;
    if (f.multiple) options[name].multiple = true;
  }
  const { values, positionals, tokens } = parseArgs({
    args,
    options,
    strict: false,
    allowPositionals: true,
    tokens: true,
  });
  const overrides: Record<string, string> = {};
  for (const t of tokens ?? []) {
    if (t.kind !== "option" || t.name in spec.flags) continue;
    if (spec.overrides && t.inlineValue) {
      overrides[t.name] = t.value as string;
      delete (values as Record<string, unknown>)[t.name];
      continue;
    }
    throw new InputError(
      `unknown option ${t.rawName}${spec.overrides ? " (config overrides take the form --key=value)" : ""}; see --help`,
    );
  }
  for (const [name, f] of Object.entries(spec.flags)) {
    const v = (values as Record<string, unknown>)[name];
    if (v === undefined && f.default !== undefined) (values as Record<string, unknown>)[name] = f.default;
    if (f.type === "string" && v === true) throw new InputError(`option --${name} needs a value (${f.arg ?? "VALUE"})`);
  }
  if (!spec.positionals && positionals.length > 0) {
    throw new InputError(`unexpected argument ${JSON.stringify(positionals[0])}; see --help`);
  }
  return { values: values as ParsedArgs["values"], positionals, overrides };
}

/**
 * `--backend` of the tasks that run an exported ONNX model: `onnxruntime`
 * (its CPU provider, the default) or `webgpu` (its WebGPU provider).
 */
export function onnxProviderOf(backend: string | undefined): "cpu" | "webgpu" {
  if (backend === undefined || backend === "onnxruntime") return "cpu";
  if (backend === "webgpu") return "webgpu";
  throw new InputError(`an ONNX model runs on --backend onnxruntime or webgpu, not "${backend}"`);
}

/** Reads an integer flag, with a clear error. */
export function intFlag(values: ParsedArgs["values"], name: string): number | undefined {
  const v = values[name];
  if (v === undefined) return undefined;
  const n = Number(v);
  if (typeof v !== "string" || !Number.isInteger(n)) {
    throw new InputError(`option --${name} expects an integer, got ${JSON.stringify(v)}`);
  }
  return n;
}

/** Reads a numeric flag, with a clear error. */
export function numberFlag(values: ParsedArgs["values"], name: string): number | undefined {
  const v = values[name];
  if (v === undefined) return undefined;
  const n = Number(v);
  if (typeof v !== "string" || v.trim() === "" || !Number.isFinite(n)) {
    throw new InputError(`option --${name} expects a number, got ${JSON.stringify(v)}`);
  }
  return n;
}

/**
 * Runs a task's main function: input errors print one line and exit 1;
 * unexpected errors print their stack. Set SSD_DEBUG=1 for stacks always.
 * `o.prefix` goes before the message (an MPI rank), and `o.exit` ends the
 * process instead of `process.exit` (MPI_Abort, so the other ranks stop too).
 */
export async function runTask(
  main: () => Promise<void> | void,
  o: { prefix?: () => string; exit?: (code: number) => void } = {},
): Promise<void> {
  try {
    await main();
  } catch (e) {
    const debug = Deno.env.get("SSD_DEBUG") === "1";
    const prefix = o.prefix?.() ?? "";
    if (e instanceof InputError && !debug) {
      console.error(`${prefix}error: ${e.message}`);
    } else {
      console.error(prefix + (e instanceof Error ? (e.stack ?? e.message) : String(e)));
    }
    (o.exit ?? process.exit)(1);
  }
}
