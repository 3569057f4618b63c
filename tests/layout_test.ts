// The house rules of lib/, checked on the source: the import graph has no cycles (type imports count), the
// tutorial's files reach the engine only through lib/engine/mod.ts, and lib never imports a task or a test.
import assert from "node:assert";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

const LIB = fileURLToPath(new URL("../lib/", import.meta.url));

/** Every .ts file under lib/, as a path relative to lib/. */
function libFiles(dir = LIB): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const full = path.join(dir, e.name);
    if (e.isDirectory()) return libFiles(full);
    return e.name.endsWith(".ts") ? [path.relative(LIB, full)] : [];
  });
}

/** Relative specifiers of a file's static imports and re-exports (`import type` too), doc comments excluded. */
export function importsOf(source: string): string[] {
  const code = source.replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "");
  const found: string[] = [];
  for (const m of code.matchAll(/(?:^|\n)\s*(?:import|export)\s[^;]*?from\s*"(\.{1,2}\/[^"]+)"/g)) found.push(m[1]);
  return found;
}

function graph(): Map<string, string[]> {
  const g = new Map<string, string[]>();
  for (const f of libFiles()) {
    const src = fs.readFileSync(path.join(LIB, f), "utf8");
    g.set(f, importsOf(src).map((s) => path.normalize(path.join(path.dirname(f), s))));
  }
  return g;
}

Deno.test("importsOf() sees static and type imports and re-exports, not comments", () => {
  const src = [
    '/** import { x } from "./doc.ts"; */',
    'import { a } from "./a.ts";',
    'import type { B } from "../b.ts";',
    'export { c } from "./c.ts";',
    '// import { d } from "./d.ts";',
    'import * as tf from "@tensorflow/tfjs-core";',
  ].join("\n");
  assert.deepStrictEqual(importsOf(src), ["./a.ts", "../b.ts", "./c.ts"]);
});

Deno.test("lib/ has no import cycles", () => {
  const g = graph();
  const state = new Map<string, "open" | "done">();
  const cycles: string[] = [];
  const visit = (f: string, trail: string[]) => {
    if (state.get(f) === "done") return;
    if (state.get(f) === "open") {
      cycles.push([...trail.slice(trail.indexOf(f)), f].join(" -> "));
      return;
    }
    state.set(f, "open");
    for (const d of g.get(f) ?? []) if (g.has(d)) visit(d, [...trail, f]);
    state.set(f, "done");
  };
  for (const f of g.keys()) visit(f, []);
  assert.deepStrictEqual(cycles, []);
});

Deno.test("lib/ reaches the engine only through lib/engine/mod.ts", () => {
  const wrong: string[] = [];
  for (const [f, deps] of graph()) {
    if (f.startsWith(`engine${path.sep}`)) continue;
    for (const d of deps) {
      if (d.startsWith(`engine${path.sep}`) && d !== path.join("engine", "mod.ts")) wrong.push(`${f} -> ${d}`);
    }
  }
  assert.deepStrictEqual(wrong, []);
});

Deno.test("lib/ never imports a task, a test or a bench", () => {
  const wrong = [...graph()].flatMap(([f, deps]) => deps.filter((d) => d.startsWith("..")).map((d) => `${f} -> ${d}`));
  assert.deepStrictEqual(wrong, []);
});
