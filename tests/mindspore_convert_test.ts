// lib/mindspore_convert.ts and `deno task ckpt`: MindSpore checkpoints of the workbench's models, out and back in,
// checked against the model, and used for fine-tuning as the ModelZoo's train.py does.
import * as tf from "@tensorflow/tfjs-core";
import assert from "node:assert";
import * as fs from "node:fs";
import * as path from "node:path";
import { encodeCheckpoint, type ParamValues, readCheckpoint } from "../lib/checkpoint.ts";
import { loadConfig } from "../lib/config.ts";
import { setBackend } from "../lib/engine/mod.ts";
import { InputError } from "../lib/errors.ts";
import { initParams } from "../lib/graph.ts";
import {
  float32ToMsTensor,
  type MsTensor,
  msTensorToFloat32,
  readMsCheckpoint,
  writeMsCheckpoint,
} from "../lib/mindspore_ckpt.ts";
import { importMindSpore, matchConfigs, mindsporeTensors, readAnyCheckpoint } from "../lib/mindspore_convert.ts";
import { fromMsLayout, mindsporeNames } from "../lib/mindspore_names.ts";
import { createRng } from "../lib/rng.ts";
import { buildModel, loadSsdConfig, type SsdConfig } from "../lib/ssd_config.ts";
import { type SynthConfig, synthSpec, writeSynthDataset } from "../lib/synth.ts";
import { train } from "../lib/train.ts";
import { assertThrowsError } from "./asserts.ts";

await setBackend("cpu");

/** Random weights of a config's model, as plain values, with the graph. */
function randomValues(cfg: SsdConfig, seed: number): ParamValues {
  const params = initParams(buildModel(cfg), createRng(seed));
  const out: ParamValues = new Map();
  for (const [name, v] of params) out.set(name, { shape: v.shape, data: v.dataSync() as Float32Array });
  tf.dispose([...params.values()]);
  return out;
}

const MV2 = loadSsdConfig("configs/ssd300_mobilenetv2.yaml");
const MV2_VALUES = randomValues(MV2, 7);

async function task(args: string[]): Promise<string> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "tasks/ckpt.ts", ...args],
    env: { NO_COLOR: "1" },
  }).output();
  const text = new TextDecoder().decode(r.stdout) + new TextDecoder().decode(r.stderr);
  if (!r.success) throw new Error(text);
  return text;
}

Deno.test("deno task ckpt: workbench -> MindSpore -> workbench gives identical parameters and momentum", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "ms_convert_" });
  const params = MV2_VALUES;
  const momentum = new Map(
    [...params].slice(0, 40).map(([n, v]) => [n, { shape: v.shape, data: v.data.map((x) => -x) }]),
  );
  const src = path.join(dir, "epoch-3.ckpt");
  const asTensors = (m: ParamValues) =>
    new Map([...m].map(([n, v]) => [n, { shape: v.shape, size: v.data.length, data: () => Promise.resolve(v.data) }]));
  fs.writeFileSync(
    src,
    await encodeCheckpoint({
      params: asTensors(params),
      momentum: asTensors(momentum),
      config: MV2 as unknown as Record<string, unknown>,
      classNames: MV2.model.class_names!,
      epoch: 3,
      globalStep: 123,
    }),
  );
  await task(["--to", "mindspore", "--out", path.join(dir, "ms"), src]);
  const msFile = path.join(dir, "ms", "epoch-3.ckpt");
  const ms = readMsCheckpoint(msFile);
  // ModelZoo names: train.py's SSDWithLossCell adds `network.`; nn.Momentum's buffers are `moments.<name>`.
  assert.strictEqual(ms.tensors[0].name, "network.backbone.features_1.0.features.0.weight");
  assert.deepStrictEqual(ms.tensors[0].shape, [32, 3, 3, 3]); // OIHW
  assert.ok(ms.tensors.some((t) => t.name === "moments.network.backbone.features_1.0.features.0.weight"));
  assert.ok(ms.tensors.some((t) => t.name === "global_step"));
  const summary = await task([msFile]);
  assert.match(summary, /model: ssd300_mobilenetv2 \(configs\/ssd300_mobilenetv2\.yaml\): every parameter fits/);

  await task([
    "--to",
    "workbench",
    "--config",
    "configs/ssd300_mobilenetv2.yaml",
    "--out",
    path.join(dir, "back.ckpt"),
    msFile,
  ]);
  const back = readCheckpoint(path.join(dir, "back.ckpt"));
  assert.strictEqual(back.header.global_step, 123);
  for (const [name, v] of params) {
    const t = back.tensors.get(`param:${name}`)!;
    assert.deepStrictEqual(t.shape, v.shape, name);
    assert.deepStrictEqual(t.data, v.data, name);
  }
  for (const [name, v] of momentum) assert.deepStrictEqual(back.tensors.get(`momentum:${name}`)!.data, v.data, name);
  assert.strictEqual([...back.tensors.keys()].filter((k) => k.startsWith("momentum:")).length, momentum.size);
  fs.rmSync(dir, { recursive: true });
});

Deno.test("a MindSpore checkpoint that does not fit the model names what is missing, extra and mis-shaped", () => {
  const tensors = mindsporeTensors(MV2_VALUES, MV2);
  const cut = (ts: MsTensor[]) => ({ tensors: ts, crc: false });
  const last = mindsporeNames(MV2).at(-1)!;
  const dropped = tensors.filter((t) => t.name !== `network.${last.mindspore}`);
  assert.strictEqual(dropped.length, tensors.length - 1);
  let e = assertThrowsError(() => importMindSpore(cut(dropped), MV2, { file: "x.ckpt" }), InputError, "1 missing");
  assert.ok(e.message.startsWith("x.ckpt: ") && e.message.includes(`1 missing (${last.workbench})`), e.message);
  const extra = [...tensors, { ...tensors[0], name: "network.stray.weight" }];
  e = assertThrowsError(
    () => importMindSpore(cut(extra), MV2),
    InputError,
    "1 not in the model (network.stray.weight)",
  );
  const reshaped = tensors.map((t, i) => i === 0 ? { ...t, shape: [16, 6, 3, 3] } : t);
  e = assertThrowsError(() => importMindSpore(cut(reshaped), MV2), InputError, "1 mis-shaped");
  assert.match(e.message, /network\.backbone\.features_1\.0\.features\.0\.weight \[16, 6, 3, 3\] vs \[32, 3, 3, 3\]/);
  // Optimizer state is not "extra": it is told apart and kept for momentum.
  const r = importMindSpore(cut(mindsporeTensors(MV2_VALUES, MV2, { momentum: MV2_VALUES, globalStep: 9 })), MV2);
  assert.deepStrictEqual([r.params.size, r.momentum.size, r.globalStep, r.unused], [
    MV2_VALUES.size,
    MV2_VALUES.size,
    9,
    [],
  ]);
});

Deno.test("a MindSpore checkpoint without a config is refused with the way out; a workbench one reads as before", () => {
  const dir = Deno.makeTempDirSync();
  const file = path.join(dir, "m.ckpt");
  return writeMsCheckpoint(file, mindsporeTensors(MV2_VALUES, MV2)).then(() => {
    assertThrowsError(() => readAnyCheckpoint(file), InputError, "pass --config");
    const r = readAnyCheckpoint(file, MV2);
    assert.strictEqual(r.kind, "mindspore");
    assert.deepStrictEqual(r.checkpoint.header.class_names, MV2.model.class_names);
    const [name, v] = [...MV2_VALUES][5];
    assert.deepStrictEqual(r.checkpoint.tensors.get(`param:${name}`)!.data, v.data);
    fs.rmSync(dir, { recursive: true });
  });
});

Deno.test("a backbone-only checkpoint fills the backbone alone, as the ModelZoo's feature_extractor_base_param", () => {
  const cfg = loadSsdConfig("configs/ssd_mobilenetv1_300.yaml");
  const values = randomValues(cfg, 3);
  // ssd_model_build prefixes the file's names with `feature_extractor.mobilenet_v1.`: the file holds the rest.
  const prefix = "feature_extractor.mobilenet_v1.";
  const entries = mindsporeNames(cfg).filter((e) => e.mindspore.startsWith(prefix));
  assert.ok(entries.length > 50);
  const all = mindsporeTensors(values, cfg, { prefix: "" });
  const backbone = all.filter((t) => t.name.startsWith(prefix)).map((t) => ({
    ...t,
    name: t.name.slice(prefix.length),
  }));
  // An ImageNet checkpoint also has its classifier, which the SSD lacks.
  backbone.push({ ...backbone[0], name: "head.fc.weight" });
  const ms = { tensors: backbone, crc: false };
  assertThrowsError(() => importMindSpore(ms, cfg), InputError, "none of the model's");
  const r = importMindSpore(ms, cfg, { partial: true });
  assert.ok(r.backboneOnly);
  assert.strictEqual(r.params.size, entries.length);
  for (const e of entries) assert.deepStrictEqual(r.params.get(e.workbench)!.data, values.get(e.workbench)!.data);
  assert.ok(r.missing.every((n) => !entries.some((e) => e.workbench === n)));
  assert.deepStrictEqual(r.unused, ["head.fc.weight"]);
});

Deno.test("matchConfigs() finds the config a checkpoint belongs to", () => {
  const ms = { tensors: mindsporeTensors(MV2_VALUES, MV2), crc: false };
  const m = matchConfigs(ms, [
    "configs/demo.yaml",
    "configs/ssd_mobilenetv1_300.yaml",
    "configs/ssd300_mobilenetv2.yaml",
  ]);
  assert.deepStrictEqual(m[0], {
    config: "configs/ssd300_mobilenetv2.yaml",
    arch: "ssd300_mobilenetv2",
    exact: true,
    found: MV2_VALUES.size,
    total: MV2_VALUES.size,
  });
  // MobileNetV1-300 shares the MultiBox heads' names, not their shapes or the backbone: never an exact match.
  assert.ok(m.slice(1).every((x) => !x.exact));
});

Deno.test("train --init with a MindSpore checkpoint and --init.filter: filtered and re-shaped heads start fresh", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "ms_init_" });
  const synth = loadConfig<SynthConfig>("configs/synth.yaml", synthSpec, {
    image_size: "64",
    "splits.train": "2",
    "splits.val": "0",
  });
  await writeSynthDataset(dir, synth, { seed: 4, quiet: true });
  const file = path.join(dir, "pre_trained.ckpt");
  await writeMsCheckpoint(file, mindsporeTensors(MV2_VALUES, MV2));
  // Three shape classes, not COCO's 80: the class heads change shape. lr 0 keeps the loaded weights as they are.
  const cfg = loadSsdConfig("configs/ssd300_mobilenetv2.yaml", {
    "model.num_classes": "4",
    "model.class_names": JSON.stringify(["background", "rectangle", "ellipse", "triangle"]),
    "data.train.format": "coco",
    "data.train.path": `${dir}/annotations/instances_train.json`,
    "data.train.images": `${dir}/images/train`,
    "data.val.path": "",
    "train.batch_size": "2",
    "train.lr": "0",
    "train.lr_init": "0",
    "train.save_mindspore": "true",
    backend: "wasm",
  });
  const r = await train(cfg, {
    outDir: path.join(dir, "run"),
    init: file,
    initFilter: ["multi_loc_layers"],
    maxSteps: 1,
    quiet: true,
  });
  const value = (n: string) => r.params.get(n)!.dataSync() as Float32Array;
  const names = mindsporeNames(cfg);
  const backbone = names.find((e) => e.mindspore === "backbone.features_1.0.features.0.weight")!.workbench;
  assert.deepStrictEqual(value(backbone), MV2_VALUES.get(backbone)!.data, "the backbone is loaded");
  const loc = names.find((e) => e.mindspore.startsWith("multi_box.multi_loc_layers.0.") && e.layout === "conv")!;
  assert.notDeepStrictEqual(value(loc.workbench), MV2_VALUES.get(loc.workbench)!.data, "filtered: fresh");
  const cls = names.find((e) => e.mindspore.startsWith("multi_box.multi_cls_layers.0.") && e.layout === "conv")!;
  assert.notDeepStrictEqual(r.params.get(cls.workbench)!.shape, MV2_VALUES.get(cls.workbench)!.shape);
  // train.save_mindspore: the run's weights also as OUT/mindspore/<checkpoint name>, which reads back exactly.
  const saved = readAnyCheckpoint(path.join(dir, "run", "mindspore", "step-1.ckpt"), cfg).checkpoint;
  for (const [name, v] of r.params) {
    assert.deepStrictEqual(saved.tensors.get(`param:${name}`)!.data, v.dataSync(), name);
  }
  assert.ok([...saved.tensors.keys()].some((k) => k.startsWith("momentum:")), "with its Momentum state");
  tf.dispose([...r.params.values()]);
  fs.rmSync(dir, { recursive: true });
});

Deno.test("deno task ckpt --dump and --rewrite on the mindarmour fixture: sha256 per tensor, the same bytes back", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "ms_task_" });
  const fixture = "tests/fixtures/mindspore/checkpoint_lenet-10_1875.ckpt";
  await task(["--dump", path.join(dir, "dump.json"), fixture]);
  const dump = JSON.parse(fs.readFileSync(path.join(dir, "dump.json"), "utf8"));
  assert.strictEqual(dump.params.length, 18);
  assert.deepStrictEqual(dump.params[0], {
    name: "conv1.weight",
    dtype: "Float32",
    shape: [6, 1, 5, 5],
    // sha256 of the 600 stored bytes, found by hand: the bytes after `1a d8 04` (field 3, length 600) that follow
    // the tag conv1.weight at offset 5 of the file; hashlib.sha256(file[40:640]).
    sha256: "6c9e458d5f0c81cffafd105f78086cd8a19ccc5d7e01736bb1abee8abf9ed268",
  });
  assert.deepStrictEqual(dump.params.find((p: { name: string }) => p.name === "learning_rate").shape, []);
  const log = await task(["--rewrite", path.join(dir, "again.ckpt"), fixture]);
  assert.match(log, /rewrote 18 tensors .* identical to the input/);
  assert.deepStrictEqual(fs.readFileSync(path.join(dir, "again.ckpt")), fs.readFileSync(fixture));
  const summary = await task([fixture]);
  assert.match(summary, /tensors: 18 \(8 parameters, 10 optimizer state\)/);
  assert.match(summary, /dtypes: Float32 16, Float64 2/);
  fs.rmSync(dir, { recursive: true });
});

Deno.test("an ImageNet VGG16 checkpoint fills the SSD's VGG convs through the ModelZoo's ssd_vgg_key_mapper", () => {
  const cfg = loadSsdConfig("configs/ssd_vgg16.yaml");
  const byMs = new Map(mindsporeNames(cfg).map((e) => [e.mindspore, e]));
  // src/vgg16.py: ImageNet `layers.<i>` (no batch norm) are the SSD's b1.0, b1.2, b2.0, ..., b5.4.
  const pairs: [string, string][] = [
    ["layers.0.weight", "backbone.b1.0.weight"],
    ["layers.2.weight", "backbone.b1.2.weight"],
    ["layers.14.weight", "backbone.b3.4.weight"],
    ["layers.28.weight", "backbone.b5.4.weight"],
  ];
  const rng = createRng(5);
  const tensors = pairs.map(([imagenet, ssd]) => {
    const e = byMs.get(ssd)!;
    const n = e.msShape.reduce((a, b) => a * b, 1);
    return float32ToMsTensor(imagenet, e.msShape, Float32Array.from({ length: n }, () => rng() - 0.5));
  });
  tensors.push(float32ToMsTensor("classifier.6.weight", [10, 4], new Float32Array(40)));
  const r = importMindSpore({ tensors, crc: false }, cfg, { partial: true });
  assert.ok(r.backboneOnly);
  assert.match(r.prefix, /ImageNet VGG16/);
  assert.strictEqual(r.params.size, pairs.length);
  pairs.forEach(([, ssd], i) => {
    const e = byMs.get(ssd)!;
    assert.deepStrictEqual(r.params.get(e.workbench)!.data, fromMsLayout(msTensorToFloat32(tensors[i]), e), ssd);
  });
  assert.deepStrictEqual(r.unused, ["classifier.6.weight"]);
});
