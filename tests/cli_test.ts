import assert from "node:assert";
import { helpText, intFlag, parseTaskArgs, type TaskSpec } from "../tasks/cli.ts";
import { InputError } from "../lib/errors.ts";

const spec: TaskSpec = {
  name: "train",
  summary: "Train.",
  usage: "--config FILE",
  overrides: true,
  flags: {
    config: { type: "string", arg: "FILE", help: "config" },
    out: { type: "string", arg: "DIR", default: "runs/x", help: "output" },
    seed: { type: "string", arg: "N", help: "seed" },
    resume: { type: "boolean", help: "resume" },
  },
};

Deno.test("parseTaskArgs() separates flags, defaults and config overrides", () => {
  const p = parseTaskArgs(spec, ["--config", "c.yaml", "--seed=3", "--train.lr=0.1", "--resume"]);
  assert.strictEqual(p.values.config, "c.yaml");
  assert.strictEqual(p.values.out, "runs/x");
  assert.strictEqual(intFlag(p.values, "seed"), 3);
  assert.strictEqual(p.values.resume, true);
  assert.deepStrictEqual(p.overrides, { "train.lr": "0.1" });
});

Deno.test("parseTaskArgs() rejects unknown flags and missing values clearly", () => {
  assert.throws(
    () => parseTaskArgs(spec, ["--bogus"]),
    (e: unknown) => e instanceof InputError && /--bogus/.test(e.message),
  );
  assert.throws(() => parseTaskArgs(spec, ["--config"]), /--config needs a value/);
  assert.throws(() => parseTaskArgs({ ...spec, overrides: false }, ["--a=1"]), /unknown option --a/);
  assert.throws(() => parseTaskArgs(spec, ["stray"]), /unexpected argument/);
  assert.throws(() => intFlag({ seed: "x" }, "seed"), /--seed expects an integer/);
});

Deno.test("helpText() lists every flag with its default", () => {
  const h = helpText(spec);
  for (const f of ["--config FILE", "--out DIR", "(default: runs/x)", "--seed N", "--help", "--KEY=VALUE"]) {
    assert.ok(h.includes(f), `missing ${f}`);
  }
});
