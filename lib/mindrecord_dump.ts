/**
 * The JSON-lines dump of a MindRecord set (`deno task records --dump`): one
 * line per row in shard then row order, keys sorted, floats as the shortest
 * text that round-trips at their schema width, arrays nested by shape, bytes
 * as their length and sha256. Not a MindSpore format: a text form of the rows
 * (§3, §4, §5 of `mindrecord_format.md` decoded) to compare sets by.
 *
 * @module
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { createHash } from "node:crypto";
import { tempNameFor } from "./fs_atomic.ts";
import { compareUtf8 } from "./msgpack.ts";
import type { FieldSpec, FieldValue, MindRecordRow, MindRecordSchema } from "./mindrecord_format.ts";
import { openMindRecord, type OpenOptions } from "./mindrecord_reader.ts";

// ---------------------------------------------------------------------------------------------------------------------
// Dump (deno task records --dump)

/** Shortest decimal text that reads back to the same float32 (via Math.fround). */
export function formatFloat32(x: number): string {
  const f = Math.fround(x);
  if (!Number.isFinite(f)) return JSON.stringify(String(f));
  if (f === 0) return Object.is(f, -0) ? "-0" : "0";
  for (let p = 1; p <= 9; p++) {
    const s = String(Number(f.toPrecision(p)));
    if (Math.fround(Number(s)) === f) return s;
  }
  return String(f);
}

/** Shortest decimal text that reads back to the same float64. */
export function formatFloat64(x: number): string {
  if (!Number.isFinite(x)) return JSON.stringify(String(x));
  if (x === 0) return Object.is(x, -0) ? "-0" : "0";
  return String(x);
}

function formatInt(v: number | bigint): string {
  const b = BigInt(v);
  const safe = b >= BigInt(Number.MIN_SAFE_INTEGER) && b <= BigInt(Number.MAX_SAFE_INTEGER);
  return safe ? b.toString() : JSON.stringify(b.toString());
}

function nestArray(items: string[], shape: number[]): string {
  // Row-major nesting, as numpy's tolist(): a zero-length axis gives [] (or [[], []] further in).
  if (shape.length <= 1) return `[${items.join(",")}]`;
  if (shape[0] === 0) return "[]";
  const step = items.length / shape[0];
  const parts: string[] = [];
  for (let i = 0; i < shape[0]; i++) parts.push(nestArray(items.slice(i * step, (i + 1) * step), shape.slice(1)));
  return `[${parts.join(",")}]`;
}

/**
 * One row as a JSON line for `records --dump`: keys sorted; integers as numbers
 * (beyond ±2^53 as decimal strings); floats as the shortest text that round-trips
 * at their schema width; arrays nested by shape; bytes as {length, sha256}.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * const schema = { b: { type: "float32" as const }, a: { type: "int32" as const, shape: [-1, 2] } };
 * const row = { b: 0.1, a: { dtype: "int32" as const, shape: [2, 2], data: new Int32Array([1, 2, 3, 4]) } };
 * assertEquals(dumpRow(row, schema), '{"a":[[1,2],[3,4]],"b":0.1}');
 * ```
 */
export function dumpRow(row: MindRecordRow, schema: MindRecordSchema): string {
  const keys = Object.keys(row).sort(compareUtf8);
  const parts = keys.map((k) => `${JSON.stringify(k)}:${dumpValue(row[k], schema[k])}`);
  return `{${parts.join(",")}}`;
}

function dumpValue(v: FieldValue, spec: FieldSpec | undefined): string {
  if (v instanceof Uint8Array) {
    return `{"length":${v.length},"sha256":"${createHash("sha256").update(v).digest("hex")}"}`;
  }
  if (typeof v === "string") return JSON.stringify(v);
  if (typeof v === "bigint") return formatInt(v);
  if (typeof v === "number") {
    const t = spec?.type;
    if (t === "float32") return formatFloat32(v);
    if (t === "float64") return formatFloat64(v);
    return Number.isInteger(v) ? formatInt(v) : formatFloat64(v);
  }
  const items: string[] = [];
  const d = v.data;
  for (let i = 0; i < d.length; i++) {
    const x = d[i];
    items.push(
      v.dtype === "float32"
        ? formatFloat32(x as number)
        : v.dtype === "float64"
        ? formatFloat64(x as number)
        : formatInt(x),
    );
  }
  const product = v.shape.reduce((a, b) => a * b, 1);
  return nestArray(items, v.shape.length > 0 && product === items.length ? v.shape : [items.length]);
}

/**
 * Writes every row of a set as JSON lines ({@linkcode dumpRow}), shard order then
 * row order, to `out` atomically (temp file, then rename). Returns the row count.
 */
export function dumpMindRecord(
  file: string,
  out: string,
  options: OpenOptions & { onRow?: () => void } = {},
): Promise<number> {
  const set = openMindRecord(file, options);
  fs.mkdirSync(path.dirname(path.resolve(out)), { recursive: true });
  const tmp = tempNameFor(out);
  const fd = fs.openSync(tmp, "w");
  let n = 0;
  try {
    const te = new TextEncoder();
    let buf: string[] = [];
    let size = 0;
    const flush = () => {
      const b = te.encode(buf.join(""));
      fs.writeSync(fd, b, 0, b.length);
      buf = [];
      size = 0;
    };
    for (const row of set.rows()) {
      const line = dumpRow(row, set.schema.schema) + "\n";
      buf.push(line);
      size += line.length;
      if (size > 1 << 20) flush();
      n++;
      options.onRow?.();
    }
    flush();
    fs.closeSync(fd);
    fs.renameSync(tmp, out);
  } catch (e) {
    try {
      fs.closeSync(fd);
    } catch { /* closed */ }
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  return Promise.resolve(n);
}
