// Learning-rate schedule: the tutorial's get_lr, checked by hand and against golden values.
import assert from "node:assert";
import * as fs from "node:fs";
import {
  getLr,
  lrAtStep,
  lrOptionsFromConfig,
  type LrScheduleConfig,
  lrScheduleSpec,
  type WarmupCosineOptions,
} from "../lib/lr_schedule.ts";
import { validate } from "../lib/config.ts";

const golden = JSON.parse(
  fs.readFileSync(new URL("./fixtures/anchors/tutorial_formulas_golden.json", import.meta.url), "utf8"),
);
const f = Math.fround;
// The tutorial's call, with its 9 steps per epoch (ssd-60_9.ckpt).
const TUTORIAL: WarmupCosineOptions = {
  lrInit: 0.001,
  lrEnd: 0.001 * 0.05,
  lrMax: 0.05,
  warmupEpochs: 2,
  totalEpochs: 60,
  stepsPerEpoch: 9,
};

Deno.test("warmup rises linearly from lr_init and reaches lr_max exactly at the first cosine step", () => {
  // 18 warmup steps: step 9 is half way, 0.001 + 0.049 / 2.
  assert.strictEqual(lrAtStep(0, TUTORIAL), f(0.001));
  assert.ok(Math.abs(lrAtStep(9, TUTORIAL) - 0.0255) < 1e-9);
  assert.ok(lrAtStep(17, TUTORIAL) < 0.05);
  assert.strictEqual(lrAtStep(18, TUTORIAL), f(0.05));
});

Deno.test("the cosine is half way between lr_max and lr_end at the middle of the decay", () => {
  // Decay over 540 - 18 = 522 steps: step 18 + 261 has cos(π/2) = 0.
  assert.ok(Math.abs(lrAtStep(279, TUTORIAL) - (0.05 + 0.00005) / 2) < 1e-9);
  // The last step is one short of the end: lr_end + (lr_max - lr_end)(1 + cos(π · 521/522)) / 2.
  const last = 0.00005 + (0.05 - 0.00005) * (1 + Math.cos(Math.PI * 521 / 522)) / 2;
  assert.strictEqual(lrAtStep(539, TUTORIAL), f(last));
  assert.ok(lrAtStep(539, TUTORIAL) > 0.00005);
});

Deno.test("get_lr equals the tutorial's array (golden) at every recorded step", () => {
  const g = golden.get_lr_tutorial;
  const lr = getLr(g.args.global_step, TUTORIAL);
  assert.strictEqual(lr.length, g.length);
  for (const [step, value] of Object.entries(g.at)) {
    assert.strictEqual(lr[Number(step)], value, `step ${step}`);
  }
});

Deno.test("a resumed run starts the same schedule at global_step", () => {
  const all = getLr(0, TUTORIAL), rest = getLr(100, TUTORIAL);
  assert.strictEqual(rest.length, 440);
  assert.deepStrictEqual(rest, all.subarray(100));
  assert.strictEqual(getLr(600, TUTORIAL).length, 0);
});

Deno.test("rates below zero are floored at zero", () => {
  const o = { ...TUTORIAL, lrEnd: -0.05 };
  assert.strictEqual(lrAtStep(539, o), 0);
});

Deno.test("fractional warmup epochs and no warmup both work", () => {
  // 0.5 epoch of 10 steps: 5 warmup steps.
  const o = { lrInit: 0, lrEnd: 0, lrMax: 1, warmupEpochs: 0.5, totalEpochs: 2, stepsPerEpoch: 10 };
  assert.strictEqual(lrAtStep(1, o), f(0.2));
  assert.strictEqual(lrAtStep(5, o), 1);
  assert.strictEqual(lrAtStep(0, { ...o, warmupEpochs: 0 }), 1);
});

Deno.test("the config keys give the tutorial's lr_end = lr_end_rate · lr", () => {
  const cfg = validate({ lr: 0.05, lr_init: 0.001, lr_end_rate: 0.001, warmup_epochs: 2 }, lrScheduleSpec);
  const o = lrOptionsFromConfig(cfg as LrScheduleConfig, { totalEpochs: 60, stepsPerEpoch: 9 });
  assert.deepStrictEqual(o, { ...TUTORIAL, lrEnd: 0.001 * 0.05 });
  assert.throws(() => validate({ lr: 0.05 }, lrScheduleSpec), /lr_init/);
});
