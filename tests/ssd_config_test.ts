import assert from "node:assert";
import { ConfigError } from "../lib/errors.ts";
import { loadSsdConfig, storedConfig } from "../lib/ssd_config.ts";

Deno.test("storedConfig() reads an older checkpoint's config: retired keys dropped, new keys defaulted", () => {
  const current = loadSsdConfig("configs/demo.yaml");
  // As a checkpoint of an earlier version stored it: train.workers existed, segments and threads did not.
  const old = structuredClone(current) as unknown as Record<string, Record<string, unknown>>;
  old.train.workers = 2;
  delete old.train.segments;
  delete (old as Record<string, unknown>).threads;
  const cfg = storedConfig(old, "epoch-8.ckpt");
  assert.strictEqual(cfg.train.segments, 1);
  assert.strictEqual(cfg.threads, null);
  assert.ok(!("workers" in cfg.train));
  assert.deepStrictEqual(cfg.model, current.model);
  assert.strictEqual(old.train.workers, 2, "the input is not modified");
  // Any other unknown key is still an error that names the checkpoint.
  old.train.lr_typo = 1;
  assert.throws(
    () => storedConfig(old, "epoch-8.ckpt"),
    (e) => e instanceof ConfigError && /epoch-8\.ckpt/.test(e.message) && /lr_typo/.test(e.message),
  );
});
