import assert from "node:assert";
import { applyOverrides, loadConfig, type Spec, validate } from "../lib/config.ts";
import { ConfigError } from "../lib/errors.ts";

const spec: Spec = {
  type: "object",
  fields: {
    train: {
      type: "object",
      fields: {
        lr: { type: "number", min: 0, default: 0.05 },
        epochs: { type: "number", int: true, min: 1 },
        steps: { type: "array", items: { type: "number" }, default: [8, 16] },
      },
    },
    backend: { type: "string", enum: ["wasm", "cpu"], default: "wasm" },
  },
};

Deno.test("validate() fills defaults without touching the input", () => {
  const raw = { train: { epochs: 3 } };
  const cfg = validate(raw, spec) as { train: { lr: number; steps: number[] }; backend: string };
  assert.deepStrictEqual(cfg, { train: { lr: 0.05, epochs: 3, steps: [8, 16] }, backend: "wasm" });
  assert.deepStrictEqual(raw, { train: { epochs: 3 } });
});

Deno.test("validate() names an unknown key and suggests the near one", () => {
  assert.throws(
    () => validate({ train: { epochs: 1, lrr: 0.1 } }, spec),
    (e: unknown) => e instanceof ConfigError && /key "train\.lrr"/.test(e.message) && /train\.lr/.test(e.message),
  );
});

Deno.test("validate() names a mistyped key", () => {
  assert.throws(() => validate({ train: { epochs: "three" } }, spec), /key "train\.epochs": expected a number/);
  assert.throws(() => validate({ train: { epochs: 1.5 } }, spec), /train\.epochs": expected an integer/);
  assert.throws(() => validate({ train: { epochs: 1 }, backend: "gpu" }, spec), /backend": expected one of/);
  assert.throws(() => validate({ train: { epochs: 1, steps: [1, "x"] } }, spec), /train\.steps\[1\]/);
});

Deno.test("applyOverrides() parses values as YAML", () => {
  const out = applyOverrides({ train: { epochs: 1 } }, { "train.lr": "0.1", "train.steps": "[1, 2]", backend: "cpu" });
  assert.deepStrictEqual(out, { train: { epochs: 1, lr: 0.1, steps: [1, 2] }, backend: "cpu" });
});

Deno.test("loadConfig() reads YAML with extends and names the file on errors", () => {
  const dir = Deno.makeTempDirSync();
  Deno.writeTextFileSync(`${dir}/base.yaml`, "train:\n  epochs: 2\n  lr: 0.5\n");
  Deno.writeTextFileSync(`${dir}/top.yaml`, "extends: base.yaml\ntrain:\n  lr: 0.25\n");
  const cfg = loadConfig<{ train: { lr: number; epochs: number } }>(`${dir}/top.yaml`, spec, { "train.epochs": "4" });
  assert.deepStrictEqual([cfg.train.lr, cfg.train.epochs], [0.25, 4]);
  Deno.writeTextFileSync(`${dir}/bad.yaml`, "train: [unclosed\n");
  assert.throws(
    () => loadConfig(`${dir}/bad.yaml`, spec),
    (e: unknown) => e instanceof ConfigError && e.message.includes("bad.yaml"),
  );
  Deno.writeTextFileSync(`${dir}/typo.yaml`, "train:\n  epochs: 1\n  lr_max: 2\n");
  assert.throws(() => loadConfig(`${dir}/typo.yaml`, spec), /typo\.yaml: key "train\.lr_max": unknown key/);
});
