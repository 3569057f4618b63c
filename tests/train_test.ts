import * as tf from "@tensorflow/tfjs-core";
import assert from "node:assert";
import * as fs from "node:fs";
import { decodeCheckpoint, encodeCheckpoint, readCheckpoint } from "../lib/checkpoint.ts";
import { evaluateCheckpoint } from "../lib/eval_stage.ts";
import { InputError } from "../lib/errors.ts";
import { initParams } from "../lib/graph.ts";
import { createRng } from "../lib/rng.ts";
import { buildModel, loadSsdConfig, type SsdConfig } from "../lib/ssd_config.ts";
import { checkSummary, resumeConfig, train, writeLossCurve } from "../lib/train.ts";
import { Binner } from "../lib/plot.ts";
import { dataOverrides, synthData, TINY_CONFIG } from "./tiny_run.ts";
import sharp from "sharp";

const data = await synthData(24, 8, 2);
const DATA_OVERRIDES = dataOverrides(data);

function config(overrides: Record<string, string> = {}): SsdConfig {
  return loadSsdConfig(TINY_CONFIG, { ...DATA_OVERRIDES, ...overrides });
}

Deno.test("train() writes checkpoints, a log and a loss curve, and evaluates", async () => {
  const out = Deno.makeTempDirSync();
  const r = await train(config({ "train.epochs": "2", "train.eval_every": "1" }), { outDir: out, quiet: true });
  assert.strictEqual(r.losses.length, 12); // 24 images / batch 4, two epochs
  for (
    const f of [
      "checkpoints/epoch-1.ckpt",
      "checkpoints/epoch-2.ckpt",
      "checkpoints/best.ckpt",
      "loss_curve.png",
      "config.yaml",
    ]
  ) {
    assert.ok(fs.existsSync(`${out}/${f}`), f);
  }
  const log = fs.readFileSync(`${out}/train_log.jsonl`, "utf8").trim().split("\n").map((l) => JSON.parse(l));
  assert.strictEqual(log.length, 12);
  // The first line of a start also names the device; the others carry the step's numbers only.
  assert.match(log[0].device, /^(wasm|onnxruntime) on .+ \(\d+ cores\)(, convs on oneDNN)?$/);
  assert.deepStrictEqual(Object.keys(log[1]).sort(), [
    "cls",
    "epoch",
    "global_step",
    "images_per_s",
    "loc",
    "loss",
    "lr",
    "step",
    "time",
  ]);
  assert.strictEqual(r.evals.length, 2);
  assert.strictEqual(r.evals[0].stats.length, 12);
  const ck = readCheckpoint(`${out}/checkpoints/epoch-2.ckpt`);
  assert.strictEqual(ck.header.epoch, 2);
  assert.deepStrictEqual(ck.header.class_names, ["background", "rectangle", "ellipse", "triangle"]);
  assert.strictEqual((ck.header.config as unknown as SsdConfig).model.arch, "ssd_tiny");
});

Deno.test("train() resumed from a mid-epoch checkpoint repeats the uninterrupted losses exactly", async () => {
  const cfg = config({ "train.epochs": "2" });
  const a = await train(cfg, { outDir: Deno.makeTempDirSync(), quiet: true });
  const out = Deno.makeTempDirSync();
  const first = await train(cfg, { outDir: out, quiet: true, maxSteps: 8 });
  const b = await train(cfg, { outDir: out, quiet: true, resume: true });
  // The resumed call returns its own steps; the log holds the whole run.
  const both = [...first.losses, ...b.losses];
  assert.deepStrictEqual(both.map((l) => l.loss), a.losses.map((l) => l.loss));
  assert.deepStrictEqual(both.map((l) => l.global_step), a.losses.map((l) => l.global_step));
  const logged = fs.readFileSync(`${out}/train_log.jsonl`, "utf8").trim().split("\n").map((l) => JSON.parse(l).loss);
  assert.deepStrictEqual(logged, a.losses.map((l) => l.loss));
});

Deno.test("a resume keeps the run's stored config: changes that alter the run are errors naming the key", async () => {
  const out = Deno.makeTempDirSync();
  await train(config({ "train.epochs": "2" }), { outDir: out, quiet: true, maxSteps: 3 });
  // resumeConfig: the stored config, not a config file's values; safe overrides apply.
  assert.strictEqual(resumeConfig(out).train.epochs, 2);
  assert.strictEqual(resumeConfig(out, { "train.epochs": "5" }).train.epochs, 5);
  assert.throws(() => resumeConfig(out, { "train.lr": "0.5" }), /train\.lr.*a resume continues the stored run/);
  assert.throws(() => resumeConfig(out, { "train.epochs": "1" }), /train\.epochs.*only make train\.epochs longer/);
  assert.throws(() => resumeConfig(out, { seed: "7" }), /key "seed"/);
  // train() itself refuses a config that differs from the stored one.
  await assert.rejects(
    () => train(config({ "train.epochs": "2", "train.batch_size": "2" }), { outDir: out, quiet: true, resume: true }),
    /train\.batch_size/,
  );
});

Deno.test("train() with the same seed reproduces its losses, and another seed does not", async () => {
  const cfg = config({ "train.epochs": "1" });
  const a = await train(cfg, { outDir: Deno.makeTempDirSync(), quiet: true });
  const b = await train(cfg, { outDir: Deno.makeTempDirSync(), quiet: true });
  const c = await train(config({ "train.epochs": "1", seed: "9" }), { outDir: Deno.makeTempDirSync(), quiet: true });
  assert.deepStrictEqual(a.losses.map((l) => l.loss), b.losses.map((l) => l.loss));
  assert.notDeepStrictEqual(a.losses.map((l) => l.loss), c.losses.map((l) => l.loss));
});

Deno.test("train() stops on a non-finite loss without touching existing checkpoints", async () => {
  const out = Deno.makeTempDirSync();
  await train(config({ "train.epochs": "1" }), { outDir: out, quiet: true });
  const good = fs.readFileSync(`${out}/checkpoints/epoch-1.ckpt`);
  await assert.rejects(
    () => train(config({ "train.epochs": "1", "train.weight_decay": "1e30" }), { outDir: out, quiet: true }),
    (e: unknown) =>
      e instanceof InputError && /loss is (NaN|Infinity)/.test(e.message) && /Last good checkpoint/.test(e.message),
  );
  assert.deepStrictEqual(fs.readFileSync(`${out}/checkpoints/epoch-1.ckpt`), good);
});

for (const segments of [1, 3]) {
  Deno.test(`train() keeps tensors, their bytes and the wasm heap flat over 20 steps (segments ${segments})`, async () => {
    const counts: number[] = [], bytes: number[] = [], heap: number[] = [];
    // deno-lint-ignore no-explicit-any
    const heapBytes = () => (tf.backend() as any).wasm.HEAPU8.buffer.byteLength as number;
    await train(config({ "train.epochs": "4", "train.segments": String(segments) }), {
      outDir: Deno.makeTempDirSync(),
      quiet: true,
      maxSteps: 20,
      onStep: () => {
        counts.push(tf.memory().numTensors);
        bytes.push(tf.memory().numBytes);
        heap.push(heapBytes());
      },
    });
    assert.strictEqual(counts.length, 20);
    assert.ok(counts.every((c) => c === counts[1]), `tensor counts ${counts}`);
    assert.ok(bytes.every((c) => c === bytes[1]), `tensor bytes ${bytes}`);
    // The heap may grow while the first steps find their peak; after that it must not.
    assert.strictEqual(heap[19], heap[4], `wasm heap by step ${heap}`);
  });
}

Deno.test("a check backend reruns each step on the other backend: same loss and gradients, training unchanged", async () => {
  const base = { "train.epochs": "1", "train.replicas": "1", backend: "wasm" };
  const plain = await train(config(base), { outDir: Deno.makeTempDirSync(), quiet: true, maxSteps: 4 });
  const counts: number[] = [];
  const checked = await train(config(base), {
    outDir: Deno.makeTempDirSync(),
    quiet: true,
    maxSteps: 4,
    checkBackend: "onnxruntime",
    onStep: () => counts.push(tf.memory().numTensors),
  });
  assert.deepStrictEqual(checked.losses.map((l) => l.loss), plain.losses.map((l) => l.loss));
  assert.ok(counts.every((c) => c === counts[0]), `tensor counts ${counts}`);
  const s = checkSummary(checked.losses)!;
  // Two real computations that sum in different orders: close, yet not bit-equal.
  assert.ok(s.loss < 1e-5 && s.grads < 1e-4 && s.grads > 0, JSON.stringify(s));
  const self = await train(config(base), {
    outDir: Deno.makeTempDirSync(),
    quiet: true,
    maxSteps: 2,
    checkBackend: "wasm",
  });
  assert.deepStrictEqual(checkSummary(self.losses), { loss: 0, grads: 0 });
  assert.strictEqual(checkSummary(plain.losses), null);
  await assert.rejects(
    () => train(config({ ...base, "train.replicas": "2" }), { outDir: Deno.makeTempDirSync(), checkBackend: "wasm" }),
    /needs train\.replicas: 1/,
  );
  // Any pair: the weights are copied to the check backend, here the pure-JS reference (sums in float64).
  const onCpu = await train(config(base), {
    outDir: Deno.makeTempDirSync(),
    quiet: true,
    maxSteps: 1,
    checkBackend: "cpu",
  });
  const c = checkSummary(onCpu.losses)!;
  assert.ok(c.loss < 1e-5 && c.grads < 1e-4 && c.grads > 0, JSON.stringify(c));
  assert.strictEqual(tf.getBackend(), "wasm");
  await assert.rejects(
    () => train(config(base), { outDir: Deno.makeTempDirSync(), checkBackend: "metal" }),
    /unknown check backend "metal"/,
  );
});

Deno.test("a checkpoint round-trips and a truncated one is named in a clear error", async () => {
  const cfg = config();
  const graph = buildModel(cfg);
  const params = initParams(graph, createRng(3));
  const bytes = await encodeCheckpoint({ params, config: {}, classNames: ["bg", "a"], epoch: 1, globalStep: 5 });
  const ck = decodeCheckpoint(bytes, "x.ckpt");
  for (const [name, v] of params) assert.deepStrictEqual(ck.tensors.get(`param:${name}`)!.data, await v.data());
  assert.throws(
    () => decodeCheckpoint(bytes.subarray(0, bytes.length - 3), "cut.ckpt"),
    /cut\.ckpt: truncated: tensor/,
  );
  assert.throws(() => decodeCheckpoint(new Uint8Array(20), "zero.ckpt"), /zero\.ckpt: not a workbench checkpoint/);
  tf.dispose([...params.values()]);
});

Deno.test("train() with two replicas is reproducible and resumes exactly", async () => {
  const cfg = config({ "train.epochs": "2", "train.replicas": "2" });
  const a = await train(cfg, { outDir: Deno.makeTempDirSync(), quiet: true });
  const out = Deno.makeTempDirSync();
  const first = await train(cfg, { outDir: out, quiet: true, maxSteps: 7 });
  const b = await train(cfg, { outDir: out, quiet: true, resume: true });
  assert.deepStrictEqual([...first.losses, ...b.losses].map((l) => l.loss), a.losses.map((l) => l.loss));
  // The first step sees the same data as a single replica; only batch-norm statistics are per part.
  const single = await train(config({ "train.epochs": "1" }), {
    outDir: Deno.makeTempDirSync(),
    quiet: true,
    maxSteps: 1,
  });
  assert.ok(Math.abs(a.losses[0].loss - single.losses[0].loss) / single.losses[0].loss < 0.1);
});

Deno.test("deno task train killed with -9 and resumed with --resume continues the same run", async () => {
  const out = Deno.makeTempDirSync();
  // 24 images, batch 4: 6 steps an epoch; 3 epochs, a checkpoint after each.
  const flags = Object.entries({ ...DATA_OVERRIDES, "train.epochs": "3" }).map(([k, v]) => `--${k}=${v}`);
  const args = ["run", "-A", "tasks/train.ts", "--config", TINY_CONFIG, "--out", out];
  const child = new Deno.Command(Deno.execPath(), { args: [...args, ...flags], stdout: "null", stderr: "null" })
    .spawn();
  // Kill it mid-epoch 2: after the epoch-1 checkpoint, once a step of epoch 2 is logged.
  const log = `${out}/train_log.jsonl`;
  const stepsLogged = () =>
    fs.existsSync(log) ? fs.readFileSync(log, "utf8").trim().split("\n").filter(Boolean).length : 0;
  const t0 = Date.now();
  while (!(fs.existsSync(`${out}/checkpoints/epoch-1.ckpt`) && stepsLogged() >= 8)) {
    if (Date.now() - t0 > 120_000) throw new Error("the training process made no progress in 120 s");
    await new Promise((r) => setTimeout(r, 20));
  }
  child.kill("SIGKILL");
  const status = await child.status;
  assert.strictEqual(status.signal, "SIGKILL");
  assert.ok(!fs.existsSync(`${out}/checkpoints/epoch-3.ckpt`), "killed too late");
  // Resume with nothing but --out: the run's own config (3 epochs, the data overrides) continues.
  const resumed = new Deno.Command(Deno.execPath(), { args: ["run", "-A", "tasks/train.ts", "--out", out, "--resume"] })
    .outputSync();
  assert.ok(resumed.success, new TextDecoder().decode(resumed.stderr));
  const whole = await train(config({ "train.epochs": "3" }), { outDir: Deno.makeTempDirSync(), quiet: true });
  const logged = fs.readFileSync(log, "utf8").trim().split("\n").map((l) => JSON.parse(l));
  assert.deepStrictEqual(logged.map((l) => l.global_step), whole.losses.map((l) => l.global_step)); // 18 steps, not 8 epochs
  assert.deepStrictEqual(logged.map((l) => l.loss), whole.losses.map((l) => l.loss));
  assert.ok(fs.existsSync(`${out}/checkpoints/epoch-3.ckpt`));
});

Deno.test("a million-step log is plotted in bounded memory, as means of consecutive steps", async () => {
  const dir = Deno.makeTempDirSync();
  const log = `${dir}/train_log.jsonl`;
  const fd = fs.openSync(log, "w");
  const n = 1_000_000;
  let chunk = "";
  for (let i = 1; i <= n; i++) {
    const loss = 10 / Math.sqrt(i);
    chunk += JSON.stringify({ epoch: 1, step: i, global_step: i, loss, loc: loss / 4, cls: (3 * loss) / 4, lr: 0.05 }) +
      "\n";
    if (i % 10_000 === 0) fs.writeSync(fd, chunk), chunk = "";
  }
  fs.closeSync(fd);
  const png = `${dir}/loss_curve.png`;
  await writeLossCurve(png, log);
  const meta = await sharp(png).metadata();
  assert.deepStrictEqual([meta.format, meta.width, meta.height], ["png", 720, 420]);
  // The curve is drawn from at most 1000 bins per line: check the binning on the same stream.
  const b = new Binner(1000);
  for (let i = 1; i <= n; i++) b.add(i, 10 / Math.sqrt(i));
  const { x, y } = b.series();
  assert.ok(x.length <= 1000 && x.length >= 500, `${x.length} bins`);
  assert.ok(x[0] < 1024 && x.at(-1)! > n - 2048, "the bins span the whole run");
  assert.ok(y.every((v, i) => i === 0 || v < y[i - 1]), "means of a falling curve fall");
});

Deno.test("training learns: 100 epochs on 16 synthetic images reach mAP@0.5 >= 0.8 on them", async () => {
  // A model that stops learning (a broken gradient, loss or optimizer) fails this; the bars sit below what this
  // run reaches here (mAP 0.649, mAP@0.5 0.888 on 2026-12-06), with room for other CPUs' rounding.
  const dir = await synthData(16, 0, 5);
  const split = { format: "coco", path: "annotations/instances_train.json", images: "images/train" };
  const cfg = loadSsdConfig(TINY_CONFIG, {
    "data.root": dir,
    ...Object.fromEntries(Object.entries(split).flatMap(([k, v]) => [[`data.train.${k}`, v], [`data.val.${k}`, v]])),
    "train.epochs": "100",
    "train.replicas": "1",
  });
  const r = await train(cfg, { outDir: Deno.makeTempDirSync(), quiet: true });
  const run = await evaluateCheckpoint(r.checkpoint!, { quiet: true });
  const stats = run.result.stats;
  assert.ok(stats[1] >= 0.8, `mAP@0.5 ${stats[1]}`);
  assert.ok(stats[0] >= 0.5, `mAP ${stats[0]}`);
  assert.ok(r.losses.at(-1)!.loss < r.losses[0].loss / 5, "the loss fell");
  // Overrides change the checkpoint's own config too (`deno task eval --checkpoint C --postprocess.min_score=0.9`).
  const strict = await evaluateCheckpoint(r.checkpoint!, {
    quiet: true,
    overrides: { "postprocess.min_score": "0.9" },
  });
  assert.ok(strict.detections.every((d) => d.score > 0.9), "every detection scores above the overridden min_score");
  assert.ok(strict.detections.length < run.detections.length, "fewer detections at min_score 0.9");
});
