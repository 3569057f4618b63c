// The webgpu backend on whatever adapter Deno finds: Mesa's lavapipe (software Vulkan) on CI, installed by
// `deno task test` (mesa-vulkan-drivers). Lockstep against onnxruntime, kernels against cpu, memory, errors.
import * as tf from "@tensorflow/tfjs-core";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  BACKENDS,
  currentAdapter,
  describeAdapter,
  setBackend,
  softwareAdapterName,
  vendorName,
  webgpuBufferCounts,
} from "../lib/engine/mod.ts";
import { BN_TRAIN, BN_TRAIN_GRAD, type BnActivation, hasBatchNormKernels } from "../lib/custom_ops.ts";
import { focalLossAndGrad, focalLossAndGradOps } from "../lib/loss.ts";
import { channelMean } from "../lib/graph.ts";
import { loadSsdConfig, ssdConfigSpec } from "../lib/ssd_config.ts";
import { checkSummary, train } from "../lib/train.ts";
import { relL2 } from "./conv_cases.ts";
import { dataOverrides, synthData, TINY_CONFIG } from "./tiny_run.ts";

Deno.test("adapter names: software adapters, vendor ids", () => {
  assert.equal(softwareAdapterName({ description: "llvmpipe (LLVM 15.0.6, 256 bits)" }), "lavapipe");
  assert.equal(softwareAdapterName({ description: "SwiftShader Device (Subzero)" }), "SwiftShader");
  assert.equal(softwareAdapterName({ description: "NVIDIA GeForce RTX 4090", isFallbackAdapter: false }), null);
  assert.equal(vendorName("4318"), "NVIDIA");
  assert.equal(vendorName("0x1002"), "AMD");
  assert.equal(vendorName("65541"), "Mesa");
  assert.equal(vendorName("1234567"), "1234567");
  // The config schema spells out the engine's backends (the engine imports the config module).
  const fields = (ssdConfigSpec as unknown as { fields: { backend: { enum: string[] } } }).fields;
  assert.deepEqual(fields.backend.enum, [...BACKENDS]);
});

Deno.test("no adapter: a clear error naming the driver package and XDG_RUNTIME_DIR", () => {
  // wgpu on Vulkan only, with no driver to load: no adapter.
  const r = spawnSync(Deno.execPath(), [
    "eval",
    'import { setBackend } from "./lib/engine/mod.ts"; await setBackend("webgpu");',
  ], {
    encoding: "utf8",
    env: {
      ...Deno.env.toObject(),
      DENO_WEBGPU_BACKEND: "vulkan",
      VK_ICD_FILENAMES: "/nonexistent.json",
      NO_COLOR: "1",
    },
  });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /WebGPU found no adapter/);
  assert.match(r.stderr, /mesa-vulkan-drivers/);
  assert.match(r.stderr, /XDG_RUNTIME_DIR/);
});

Deno.test("webgpu: the adapter is found and described; no XDG_RUNTIME_DIR complaint without one", () => {
  const env = { ...Deno.env.toObject(), NO_COLOR: "1" };
  delete (env as Record<string, string>).XDG_RUNTIME_DIR;
  const r = spawnSync(Deno.execPath(), [
    "eval",
    'import { setBackend, deviceDescription } from "./lib/engine/mod.ts"; await setBackend("webgpu"); console.log(deviceDescription("webgpu"));',
  ], { encoding: "utf8", env });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^webgpu on .+max buffer \d+ MiB/);
  assert.doesNotMatch(r.stderr, /XDG_RUNTIME_DIR is invalid/);
});

Deno.test("webgpu kernels match the cpu backend: convs (dilated, strided) and their gradients, focal loss, channel means", async () => {
  await setBackend("cpu");
  const xa = await tf.randomNormal([2, 12, 12, 8], 0, 1, "float32", 1).data();
  const wa = await tf.randomNormal([3, 3, 8, 6], 0, 1, "float32", 2).data();
  const run = async (b: string, dil: number, stride: number) => {
    await setBackend(b);
    const x = tf.tensor4d(xa, [2, 12, 12, 8]), w = tf.tensor4d(wa, [3, 3, 8, 6]);
    const g = tf.grads((x: tf.Tensor, w: tf.Tensor) =>
      tf.conv2d(x as tf.Tensor4D, w as tf.Tensor4D, stride, "same", "NHWC", dil).square().sum()
    )(
      [x, w],
    );
    const out = await Promise.all([g[0].data(), g[1].data(), channelMean(x).data()]);
    tf.dispose([x, w, ...g]);
    return out;
  };
  for (const [dil, stride] of [[1, 1], [1, 2], [6, 1]]) {
    const [a, b] = [await run("cpu", dil, stride), await run("webgpu", dil, stride)];
    for (let k = 0; k < 3; k++) assert.ok(relL2(a[k], b[k]) < 1e-5, `dilation ${dil} stride ${stride} output ${k}`);
  }
  // The focal loss composed from ops (webgpu) against the one-pass float64 loop.
  const logits = Float32Array.from(xa.slice(0, 400), (v) => 3 * v);
  const onehot = Float32Array.from(logits, (_, i) => (i % 7 === 0 ? 1 : 0));
  const want = focalLossAndGrad(logits, onehot, { gamma: 2, alpha: 0.75 });
  const [sum, grad] = focalLossAndGradOps(tf.tensor(logits), tf.tensor(onehot), { gamma: 2, alpha: 0.75 });
  assert.ok(Math.abs((await sum.data())[0] - want.sum) / want.sum < 1e-6);
  assert.ok(relL2(want.grad, await grad.data()) < 1e-6);
  tf.dispose([sum, grad]);
  await setBackend("wasm");
});

Deno.test("webgpu batch-norm kernels (WGSL) match the cpu backend's float64 ones: y, statistics, dx, dgamma, dbeta", async () => {
  // Shapes: 1x1 maps (batch 1: one value per channel), ragged rows (not a multiple of the 128-row block), a 3-D
  // input, and one whose blocks outnumber the column-sum threads.
  const cases: [number[], BnActivation][] = [
    [[2, 5, 5, 8], "relu6"],
    [[1, 1, 1, 16], "relu6"],
    [[3, 7, 6], "linear"],
    [[4, 75, 75, 8], "relu"],
  ];
  let seed = 10;
  for (const [shape, act] of cases) {
    const c = shape.at(-1)!;
    await setBackend("cpu");
    const data = await Promise.all([
      tf.randomNormal(shape, 2, 3, "float32", seed++), // x: mean 2 against a spread of 3
      tf.randomUniform([c], 0.5, 1.5, "float32", seed++),
      tf.randomUniform([c], -0.5, 0.5, "float32", seed++),
      tf.randomNormal(shape, 0, 1, "float32", seed++),
    ].map(async (t) => {
      const v = await t.data();
      t.dispose();
      return v;
    }));
    const run = async (backend: string) => {
      await setBackend(backend);
      assert.ok(hasBatchNormKernels(), backend);
      const [x, gamma, beta, dy] = [
        tf.tensor(data[0], shape),
        tf.tensor(data[1]),
        tf.tensor(data[2]),
        tf.tensor(data[3], shape),
      ];
      const attrs = { eps: 1e-3, activation: act };
      const [y, mean, variance, invstd] = tf.engine().runKernel(BN_TRAIN, { x, gamma, beta }, attrs) as tf.Tensor[];
      const grads = tf.engine().runKernel(BN_TRAIN_GRAD, { dy, x, mean, invstd, gamma, beta }, attrs) as tf.Tensor[];
      const all = [y, mean, variance, invstd, ...grads];
      const out = await Promise.all(all.map((t) => t.data()));
      tf.dispose([x, gamma, beta, dy, ...all]);
      return out;
    };
    const want = await run("cpu");
    const before = tf.memory().numTensors;
    const got = await run("webgpu");
    assert.equal(tf.memory().numTensors, before);
    ["y", "mean", "variance", "invstd", "dx", "dgamma", "dbeta"].forEach((name, k) => {
      const d = relL2(want[k], got[k]);
      // A 1x1 map normalises one value: y and the gradients are exactly beta and zeros on both.
      assert.ok(Number.isNaN(d) ? want[k].every((v, i) => v === got[k][i]) : d < 2e-6, `${shape} ${act} ${name}: ${d}`);
    });
  }
  await setBackend("wasm");
});

Deno.test("webgpu training in lockstep with onnxruntime (demo config, 3 steps): loss 1e-5, gradients 1e-4", async () => {
  const data = await synthData(16, 8, 3);
  const cfg = loadSsdConfig("configs/demo.yaml", {
    ...dataOverrides(data),
    backend: "webgpu",
    "train.batch_size": "4",
    "train.replicas": "1",
  });
  const r = await train(cfg, { outDir: Deno.makeTempDirSync(), quiet: true, maxSteps: 3, checkBackend: "onnxruntime" });
  assert.equal(r.losses.length, 3);
  const s = checkSummary(r.losses)!;
  assert.ok(s.loss <= 1e-5 && s.grads <= 1e-4 && s.grads > 0, JSON.stringify(s));
  assert.match(r.losses[0].device!, /^webgpu on /);
  assert.equal(r.losses[1].device, undefined);
  assert.equal(currentAdapter() !== undefined, true);
  assert.ok(describeAdapter(currentAdapter()!).length > 0);
});

Deno.test("webgpu training in lockstep with onnxruntime (SSD300-MobileNetV2, batch 1, 2 steps, bn_eps 1)", async () => {
  // At batch 1 the extras and heads normalise 25 or fewer values per channel, and with the ModelZoo's eps 1e-3 the
  // batch-norm gradients amplify rounding: any two backends differ by 1e-2 there (README, "GPU (WebGPU)"). With eps 1
  // the same network is well conditioned, so depthwise convs, ReLU6 and batch norm are held to the bounds.
  const data = await synthData(4, 2, 3);
  const cfg = loadSsdConfig("configs/ssd300_mobilenetv2.yaml", {
    ...dataOverrides(data),
    backend: "webgpu",
    "model.num_classes": "4",
    "model.class_names": "[background, rectangle, ellipse, triangle]",
    "model.bn_eps": "1",
    "train.batch_size": "1",
    "train.replicas": "1",
  });
  const r = await train(cfg, { outDir: Deno.makeTempDirSync(), quiet: true, maxSteps: 2, checkBackend: "onnxruntime" });
  assert.equal(r.losses.length, 2);
  const s = checkSummary(r.losses)!;
  assert.ok(s.loss <= 1e-5 && s.grads <= 1e-4 && s.grads > 0, JSON.stringify(s));
});

Deno.test("webgpu: tensors and GPU buffers stay flat over 20 steps; the loss is read at logging only", async () => {
  const data = await synthData(8, 4, 5);
  const cfg = loadSsdConfig(TINY_CONFIG, {
    ...dataOverrides(data),
    backend: "webgpu",
    "train.replicas": "1",
    "train.epochs": "5",
    "train.batch_size": "2",
  });
  const tensors: number[] = [], buffers: number[] = [];
  let reads = 0;
  const perStep: number[] = [];
  const r = await train(cfg, {
    outDir: Deno.makeTempDirSync(),
    quiet: true,
    maxSteps: 20,
    onStep: () => {
      perStep.push(reads);
      tensors.push(tf.memory().numTensors);
      buffers.push(webgpuBufferCounts()!.inUse);
      if (tensors.length === 1) {
        // Count the backend's reads from the second step on.
        const b = tf.backend() as unknown as { read(id: unknown): Promise<unknown> };
        const read = b.read.bind(b);
        b.read = (id) => (reads++, read(id));
      }
    },
  });
  assert.equal(r.losses.length, 20);
  assert.ok(tensors.every((c) => c === tensors[0]), `tensors ${tensors}`);
  assert.ok(buffers.slice(1).every((c) => c === buffers[1]), `buffers in use ${buffers}`);
  // Reads between steps: loss, loc and cls, three per step; the epoch's checkpoint (after steps 4, 8, ...)
  // reads the weights too. Nothing else goes back to the CPU.
  const between = perStep.slice(1).map((n, k) => n - perStep[k]); // steps 2..20
  between.forEach((n, k) => {
    const step = k + 2;
    if ((step - 1) % 4 !== 0) assert.equal(n, 3, `reads before step ${step}: ${between}`);
  });
  await setBackend("wasm");
});
