/**
 * JSON text with errors a user can act on: a syntax error becomes an
 * {@linkcode InputError} naming the file, line and column.
 *
 * @module
 */
import { InputError } from "./errors.ts";

/**
 * The offset of the first JSON syntax error in `text` (a small scanner run only
 * after JSON.parse failed, since V8's message does not always give a position).
 */
export function jsonErrorOffset(text: string): number {
  let p = 0;
  const ws = () => {
    while (p < text.length && " \t\n\r".includes(text[p])) p++;
  };
  const fail = (): never => {
    throw p;
  };
  const value = (depth: number): void => {
    if (depth > 10000) fail();
    ws();
    const c = text[p];
    if (c === "{") {
      p++;
      ws();
      if (text[p] === "}") return void p++;
      for (;;) {
        ws();
        if (text[p] !== '"') fail();
        str();
        ws();
        if (text[p] !== ":") fail();
        p++;
        value(depth + 1);
        ws();
        if (text[p] === ",") p++;
        else if (text[p] === "}") return void p++;
        else fail();
      }
    } else if (c === "[") {
      p++;
      ws();
      if (text[p] === "]") return void p++;
      for (;;) {
        value(depth + 1);
        ws();
        if (text[p] === ",") p++;
        else if (text[p] === "]") return void p++;
        else fail();
      }
    } else if (c === '"') str();
    else if (text.startsWith("true", p)) p += 4;
    else if (text.startsWith("false", p)) p += 5;
    else if (text.startsWith("null", p)) p += 4;
    else {
      const m = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(p, p + 400));
      if (!m) fail();
      p += m![0].length;
    }
  };
  const str = () => {
    p++;
    while (p < text.length && text[p] !== '"') {
      if (text.charCodeAt(p) < 0x20) fail();
      if (text[p] === "\\") {
        p++;
        if (text[p] === "u") {
          if (!/^[0-9a-fA-F]{4}$/.test(text.slice(p + 1, p + 5))) fail();
          p += 4;
        } else if (!'"\\/bfnrt'.includes(text[p] ?? "x")) fail();
      }
      p++;
    }
    if (p >= text.length) fail();
    p++;
  };
  try {
    value(0);
    ws();
    if (p < text.length) fail();
    return -1;
  } catch (e) {
    if (typeof e === "number") return Math.min(e, text.length);
    return p;
  }
}

/** Parses JSON text, turning a syntax error into an InputError naming the file, line and column. */
export function parseJsonText(text: string, file: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    const msg = (e as Error).message.split("\n")[0].slice(0, 120);
    let where = "json";
    const pos = jsonErrorOffset(text);
    if (pos >= 0) {
      const before = text.slice(0, pos);
      const line = before.split("\n").length;
      where = `line ${line}, column ${pos - before.lastIndexOf("\n")}`;
    }
    throw new InputError(`malformed JSON: ${msg}`, { file, where });
  }
}

/**
 * Reads and parses a JSON file; a missing file or a syntax error is an
 * {@linkcode InputError} naming the file (and the line and column). `what`
 * names the file's role in the message, e.g. "ground truth".
 */
export async function readJsonFile(file: string, what: string): Promise<unknown> {
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (e) {
    throw new InputError(`cannot read ${what}: ${e instanceof Error ? e.message : e}`, { file, cause: e });
  }
  return parseJsonText(text, file);
}
