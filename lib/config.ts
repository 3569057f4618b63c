/**
 * Typed, validated configuration. A config is YAML read against a schema: an
 * unknown or mistyped key is an error that names the key, defaults are filled
 * in without touching the input, and `--key=value` flags override any key.
 *
 * @module
 */
import * as fs from "node:fs";
import YAML from "yaml";
import { ConfigError } from "./errors.ts";

/** A schema node. */
export type Spec =
  | { type: "number"; int?: boolean; min?: number; max?: number; default?: number; nullable?: boolean; doc?: string }
  | { type: "string"; enum?: readonly string[]; default?: string; nullable?: boolean; doc?: string }
  | { type: "boolean"; default?: boolean; doc?: string }
  | { type: "array"; items: Spec; minLength?: number; default?: unknown[]; nullable?: boolean; doc?: string }
  | { type: "object"; fields: Record<string, Spec>; optional?: boolean; doc?: string }
  | { type: "any"; default?: unknown; doc?: string };

function typeName(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "list";
  return typeof v;
}

/**
 * Validates `raw` against `spec`, filling defaults. Returns a new value.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals, throws } from "node:assert";
 * const spec = { type: "object", fields: { lr: { type: "number", default: 0.1 } } } as const;
 * assertEquals(validate({}, spec), { lr: 0.1 });
 * throws(() => validate({ lrr: 1 }, spec), /key "lrr": unknown key/);
 * ```
 */
export function validate(raw: unknown, spec: Spec, options: { key?: string; file?: string } = {}): unknown {
  const key = options.key ?? "";
  const fail = (msg: string): never => {
    throw new ConfigError(msg, { file: options.file, key: key || "(root)" });
  };
  switch (spec.type) {
    case "any":
      return raw === undefined ? structuredClone(spec.default) : raw;
    case "number": {
      if (raw === undefined) {
        if (spec.default === undefined && !spec.nullable) fail("is required");
        return spec.default ?? null;
      }
      if (raw === null && spec.nullable) return null;
      if (typeof raw !== "number" || Number.isNaN(raw)) {
        fail(`expected a number, got ${typeName(raw)} ${JSON.stringify(raw)}`);
      }
      const n = raw as number;
      if (spec.int && !Number.isInteger(n)) fail(`expected an integer, got ${n}`);
      if (spec.min !== undefined && n < spec.min) fail(`must be >= ${spec.min}, got ${n}`);
      if (spec.max !== undefined && n > spec.max) fail(`must be <= ${spec.max}, got ${n}`);
      return n;
    }
    case "string": {
      if (raw === undefined) {
        if (spec.default === undefined && !spec.nullable) fail("is required");
        return spec.default ?? null;
      }
      if (raw === null && spec.nullable) return null;
      if (typeof raw !== "string") fail(`expected a string, got ${typeName(raw)} ${JSON.stringify(raw)}`);
      if (spec.enum && !spec.enum.includes(raw as string)) {
        fail(`expected one of ${spec.enum.join(", ")}, got ${JSON.stringify(raw)}`);
      }
      return raw;
    }
    case "boolean": {
      if (raw === undefined) {
        if (spec.default === undefined) fail("is required");
        return spec.default;
      }
      if (typeof raw !== "boolean") fail(`expected true or false, got ${typeName(raw)} ${JSON.stringify(raw)}`);
      return raw;
    }
    case "array": {
      if (raw === undefined) {
        if (spec.default === undefined && !spec.nullable) fail("is required");
        return structuredClone(spec.default ?? null);
      }
      if (raw === null && spec.nullable) return null;
      if (!Array.isArray(raw)) fail(`expected a list, got ${typeName(raw)} ${JSON.stringify(raw)}`);
      const arr = raw as unknown[];
      if (spec.minLength !== undefined && arr.length < spec.minLength) {
        fail(`expected at least ${spec.minLength} items, got ${arr.length}`);
      }
      return arr.map((v, i) => validate(v, spec.items, { key: `${key}[${i}]`, file: options.file }));
    }
    case "object": {
      if (raw === undefined || raw === null) raw = {};
      if (typeof raw !== "object" || Array.isArray(raw)) fail(`expected a mapping, got ${typeName(raw)}`);
      const obj = raw as Record<string, unknown>;
      for (const k of Object.keys(obj)) {
        if (!(k in spec.fields)) {
          const near = closest(k, Object.keys(spec.fields));
          throw new ConfigError(`unknown key${near ? ` (did you mean "${prefix(key)}${near}"?)` : ""}`, {
            file: options.file,
            key: `${prefix(key)}${k}`,
          });
        }
      }
      const out: Record<string, unknown> = {};
      for (const [k, s] of Object.entries(spec.fields)) {
        out[k] = validate(obj[k], s, { key: `${prefix(key)}${k}`, file: options.file });
      }
      return out;
    }
  }
}

function prefix(key: string): string {
  return key ? `${key}.` : "";
}

function closest(word: string, candidates: string[]): string | undefined {
  let best: string | undefined, bestD = Infinity;
  for (const c of candidates) {
    const d = editDistance(word, c);
    if (d < bestD) [best, bestD] = [c, d];
  }
  return bestD <= Math.max(2, word.length / 3) ? best : undefined;
}

function editDistance(a: string, b: string): number {
  const dp = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = dp[0];
    dp[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = dp[j];
      dp[j] = Math.min(dp[j] + 1, dp[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return dp[b.length];
}

/**
 * Applies `key.path=value` overrides to a raw (unvalidated) config object.
 * Values are parsed as YAML scalars or flow collections (`--lr=0.1`,
 * `--steps=[8,16]`, `--name=foo`).
 */
export function applyOverrides(
  raw: Record<string, unknown>,
  overrides: Record<string, string>,
): Record<string, unknown> {
  const out = structuredClone(raw);
  for (const [path, text] of Object.entries(overrides)) {
    const parts = path.split(".");
    let node: Record<string, unknown> = out;
    for (const p of parts.slice(0, -1)) {
      if (node[p] === undefined || node[p] === null) node[p] = {};
      if (typeof node[p] !== "object" || Array.isArray(node[p])) {
        throw new ConfigError(`cannot override inside a non-mapping value`, { key: path });
      }
      node = node[p] as Record<string, unknown>;
    }
    let value: unknown;
    try {
      value = YAML.parse(text);
    } catch {
      value = text;
    }
    node[parts.at(-1)!] = value;
  }
  return out;
}

/** Parses YAML text, turning syntax errors into a {@linkcode ConfigError} naming the file. */
export function parseYaml(text: string, file = "<config>"): Record<string, unknown> {
  let doc: unknown;
  try {
    doc = YAML.parse(text);
  } catch (e) {
    throw new ConfigError(`invalid YAML: ${(e as Error).message}`, { file });
  }
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== "object" || Array.isArray(doc)) throw new ConfigError("expected a mapping at top level", { file });
  return doc as Record<string, unknown>;
}

/**
 * Reads a YAML config file, applies overrides, and validates it against `spec`.
 * A top-level `extends: other.yaml` key merges the named file underneath.
 */
export function loadConfig<T>(file: string, spec: Spec, overrides: Record<string, string> = {}): T {
  const raw = readWithExtends(file, new Set());
  return validate(applyOverrides(raw, overrides), spec, { file }) as T;
}

/** Validates an in-memory config object (with overrides) against `spec`. */
export function configFrom<T>(raw: Record<string, unknown>, spec: Spec, overrides: Record<string, string> = {}): T {
  return validate(applyOverrides(raw, overrides), spec) as T;
}

function readWithExtends(file: string, seen: Set<string>): Record<string, unknown> {
  if (seen.has(file)) throw new ConfigError("circular extends", { file });
  seen.add(file);
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    throw new ConfigError(`cannot read config: ${(e as Error).message}`, { file });
  }
  const doc = parseYaml(text, file);
  const base = doc.extends;
  if (base === undefined) return doc;
  if (typeof base !== "string") throw new ConfigError("expected a file name", { file, key: "extends" });
  const dir = file.includes("/") ? file.slice(0, file.lastIndexOf("/") + 1) : "";
  const parent = readWithExtends(base.startsWith("/") ? base : dir + base, seen);
  const { extends: _, ...rest } = doc;
  return deepMerge(parent, rest);
}

/** Merges `top` over `base`; mappings merge key by key, everything else replaces. */
export function deepMerge(base: Record<string, unknown>, top: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(top)) {
    const b = out[k];
    if (v && b && typeof v === "object" && typeof b === "object" && !Array.isArray(v) && !Array.isArray(b)) {
      out[k] = deepMerge(b as Record<string, unknown>, v as Record<string, unknown>);
    } else out[k] = v;
  }
  return out;
}
