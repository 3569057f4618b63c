import { deepStrictEqual as assertEquals, ok as assert, throws as assertThrows } from "node:assert";
import * as fs from "node:fs";
import * as tf from "@tensorflow/tfjs-core";
import * as ort from "onnxruntime-node";
import YAML from "yaml";
import { setBackend } from "../lib/engine/backend.ts";
import { decodeBoxes } from "../lib/box_coder.ts";
import { saveCheckpoint } from "../lib/checkpoint.ts";
import { deepMerge, parseYaml } from "../lib/config.ts";
import { predict } from "../lib/evaluate.ts";
import { type Graph, GraphBuilder, initParams, type ParamMap, type ParamSpec } from "../lib/graph.ts";
import {
  CONFIG_METADATA_KEY,
  decodeOnnx,
  encodeOnnx,
  exportModel,
  graphToOnnx,
  type GraphToOnnxOptions,
  onnxMetadata,
  paramValuesOf,
} from "../lib/onnx_export.ts";
import { parseOnnxModelConfig } from "../lib/onnx_infer.ts";
import { createRng, type Rng } from "../lib/rng.ts";
import {
  anchorsOf,
  buildModel,
  checkConsistency,
  loadSsdConfig,
  MODEL_BUILDERS,
  scaleFactorsOf,
  type SsdConfig,
  ssdConfigSpec,
} from "../lib/ssd_config.ts";
import { validate } from "../lib/config.ts";
// The ModelZoo variants may register their builders from their own files.
import "../lib/ssd_mobilenet_v2.ts";
import "../lib/ssd_fpn.ts";

await setBackend("wasm");

/** Seeded weights, with batch-norm statistics and affine terms drawn too, so folding changes numbers. */
function randomParams(graph: Graph, seed: number): ParamMap {
  const rng = createRng(seed);
  const uniform = (lo: number, hi: number) => (p: ParamSpec) =>
    Float32Array.from({ length: p.shape[0] }, () => lo + (hi - lo) * rng());
  // gamma below 1 keeps random deep nets (ResNet50) from growing activations so large that two float32
  // executors (tfjs cpu vs wasm alike) disagree beyond the tolerance.
  return initParams(graph, rng, {
    scheme: "he_normal",
    overrides: {
      ".gamma": uniform(0.5, 1.0),
      ".beta": uniform(-0.2, 0.2),
      ".moving_mean": uniform(-0.2, 0.2),
      ".moving_variance": uniform(0.5, 1.5),
      ".bias": uniform(-0.1, 0.1),
    },
  });
}

function randomInput(rng: Rng, n: number, s: number): Float32Array {
  return Float32Array.from({ length: n * s * s * 3 }, () => rng() * 4 - 2);
}

/** max |a - b| / max(1, |b|) and max |b|. */
function relDiff(a: ArrayLike<number>, b: ArrayLike<number>): { rel: number; ref: number } {
  assertEquals(a.length, b.length);
  let rel = 0, ref = 0;
  for (let i = 0; i < a.length; i++) {
    rel = Math.max(rel, Math.abs(a[i] - b[i]) / Math.max(1, Math.abs(b[i])));
    ref = Math.max(ref, Math.abs(b[i]));
  }
  return { rel, ref };
}

/** Input sides the big grid-anchor models are tested at: any multiple of 128 builds the same layers. */
const REDUCED_SIZE: Record<string, number> = { ssd_mobilenetv1_fpn: 256, ssd_resnet50_fpn: 256 };

/** A full config of `arch`: configs/<arch>.yaml when it exists, else the anchors file over the demo config. */
function configFor(arch: string): SsdConfig {
  let cfg: SsdConfig;
  // A config file of that architecture: configs/<arch>.yaml, else any config naming it.
  const files = fs.readdirSync("configs").filter((f) => f.endsWith(".yaml")).sort().map((f) => `configs/${f}`);
  const named = files.find((f) => f === `configs/${arch}.yaml`) ??
    files.find((f) => (parseYaml(fs.readFileSync(f, "utf8")).model as { arch?: string } | undefined)?.arch === arch);
  if (arch === "ssd_tiny") cfg = loadSsdConfig("configs/demo.yaml");
  else if (named) cfg = loadSsdConfig(named);
  else {
    const base = parseYaml(fs.readFileSync("configs/demo.yaml", "utf8"));
    const anchors = parseYaml(fs.readFileSync(`configs/anchors/${arch}.yaml`, "utf8"));
    const size = (anchors.anchors as { img_shape: number[] }).img_shape[0];
    const raw = deepMerge(deepMerge(base, anchors), {
      model: {
        arch,
        num_classes: 81,
        class_names: null,
        input_size: size,
        head: "tutorial",
        channels: null,
        options: {},
      },
    });
    cfg = validate(raw, ssdConfigSpec) as SsdConfig;
  }
  const small = REDUCED_SIZE[arch];
  if (small && cfg.model.input_size !== small) {
    cfg.model.input_size = small;
    cfg.anchors.img_shape = [small, small];
    cfg.anchors.feature_size = cfg.anchors.steps!.map((s) => small / s);
    cfg.anchors.num_boxes = null;
  }
  if (cfg.anchors.generator === "stored" && !cfg.anchors.stored) {
    // Imported models store their anchors in the config; any valid boxes of the right count do for parity.
    const rng = createRng(1), n = cfg.anchors.num_boxes!;
    cfg.anchors.stored = Array.from({ length: n }, () => {
      const cy = rng(), cx = rng(), h = 0.05 + 0.5 * rng(), w = 0.05 + 0.5 * rng();
      return [cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2];
    }).flat();
    cfg.anchors.stored_format = "y1_x1_y2_x2";
  }
  checkConsistency(cfg);
  return cfg;
}

async function ortSession(bytes: Uint8Array): Promise<ort.InferenceSession> {
  return await ort.InferenceSession.create(bytes, { graphOptimizationLevel: "all", intraOpNumThreads: 1 });
}

/** Runs both executors on `x` and returns the worst relative differences. */
async function compare(
  graph: Graph,
  params: ParamMap,
  session: ort.InferenceSession,
  x: Float32Array,
  n: number,
  activation: "sigmoid" | "softmax",
  feed: ort.Tensor = new ort.Tensor("float32", x, [n, graph.input.shape[0], graph.input.shape[1], 3]),
) {
  const out = await session.run({ images: feed });
  const xt = tf.tensor4d(x, [n, graph.input.shape[0], graph.input.shape[1], 3]);
  const ref = predict(graph, params, xt, activation);
  const [loc, scores] = [await ref.loc.data(), await ref.scores.data()];
  tf.dispose([xt, ref.loc, ref.scores]);
  assertEquals(out.loc.dims, ref.loc.shape);
  assertEquals(out.scores.dims, ref.scores.shape);
  return {
    loc: relDiff(out.loc.data as Float32Array, loc),
    scores: relDiff(out.scores.data as Float32Array, scores),
    out,
  };
}

const TOL = 1e-4;

for (const arch of Object.keys(MODEL_BUILDERS).sort()) {
  Deno.test(`onnxruntime matches tfjs on ${arch} with random weights and batch norm folded`, async () => {
    const cfg = configFor(arch);
    const anchors = anchorsOf(cfg);
    const graph = buildModel(cfg, anchors);
    const params = randomParams(graph, 11);
    const model = graphToOnnx(graph, paramValuesOf(params), { scoreActivation: cfg.model.score_activation });
    // Folding is exercised: the graph has batch norms, the ONNX model none.
    assert(graph.nodes.some((n) => n.op === "bn"));
    assertEquals(model.graph!.node!.filter((n) => n.opType === "BatchNormalization").length, 0);
    const session = await ortSession(encodeOnnx(model));
    const s = cfg.model.input_size;
    const d = await compare(graph, params, session, randomInput(createRng(5), 1, s), 1, cfg.model.score_activation);
    console.log(
      `  ${arch} @${s}: max rel diff loc ${d.loc.rel.toExponential(2)} (|ref| <= ${d.loc.ref.toFixed(2)}), ` +
        `scores ${d.scores.rel.toExponential(2)}`,
    );
    assert(d.loc.rel <= TOL, `loc differs by ${d.loc.rel}`);
    assert(d.scores.rel <= TOL, `scores differ by ${d.scores.rel}`);
    assertEquals(d.out.loc.dims[1], anchors.count);
    await session.release();
    for (const v of params.values()) v.dispose();
  });
}

Deno.test("the demo model keeps its batch dimension dynamic: batch 1 and 3 run through one session", async () => {
  const cfg = configFor("ssd_tiny");
  const graph = buildModel(cfg);
  const params = randomParams(graph, 2);
  const session = await ortSession(
    encodeOnnx(graphToOnnx(graph, paramValuesOf(params), { scoreActivation: "sigmoid" })),
  );
  const rng = createRng(9);
  for (const n of [1, 3]) {
    const d = await compare(graph, params, session, randomInput(rng, n, 160), n, "sigmoid");
    assertEquals(d.out.loc.dims[0], n);
    assert(d.loc.rel <= TOL && d.scores.rel <= TOL, `batch ${n}: ${d.loc.rel}, ${d.scores.rel}`);
  }
  await session.release();
});

/** Every op and corner of the IR in one small graph: shared convs, unfolded batch norms, pools, resizes. */
function kitchenSink(): Graph {
  const g = new GraphBuilder([12, 12, 3]);
  let x = g.conv("c0", g.input, 6, { kernel: 3, stride: 1, bias: true });
  const fanout = g.act(x, "relu"); // c0 has a second reader below: its bn must not fold
  x = g.bn("bn0", x);
  x = g.add(x, fanout);
  x = g.bn("bn_after_add", x); // follows an add: stays a BatchNormalization
  x = g.act(x, "relu6");
  x = g.maxpool(x, 3, 2, "same"); // 6x6, padded on one side
  const dw = g.act(g.bn("dwbn", g.conv("dw", x, 2, { depthwise: true, kernel: 3, stride: 2 })), "sigmoid"); // 3x3x12
  const dil = g.conv("dil", x, 12, { kernel: 3, dilation: 2, pad: [2, 2, 2, 2] }); // 6x6x12
  const up2 = g.upsample(dw, 2); // nearest 6x6
  const up3 = g.upsample(g.conv("shrink", dil, 12, { kernel: 1, stride: 3 }), 3, "bilinear"); // 2x2 -> 6x6
  const y = g.add(up2, up3, dil); // three inputs: Sum
  // A weight-shared predictor on two levels, with a batch norm per level.
  const f1 = g.act(g.bn("s.bn0", g.conv("s", y, 12, { kernel: 3, bias: true })), "relu");
  const f2 = g.act(g.bn("s.bn1", g.conv("s.level1", dw, 12, { kernel: 3, bias: true, shareWith: "s" })), "relu");
  const loc = g.concatAnchors([
    g.flattenHead(g.conv("l0", f1, 8, { kernel: 1 }), 4),
    g.flattenHead(g.conv("l1", f2, 8, { kernel: 1 }), 4),
  ]);
  const cls = g.concatAnchors([
    g.flattenHead(g.conv("k0", f1, 6, { kernel: 1 }), 3),
    g.flattenHead(g.conv("k1", f2, 6, { kernel: 1 }), 3),
  ]);
  return g.build({ loc, cls });
}

for (const foldShared of [true, false]) {
  Deno.test(`every graph op matches tfjs (softmax, shared convs ${foldShared ? "folded" : "kept shared"})`, async () => {
    const graph = kitchenSink();
    const params = randomParams(graph, 4);
    const model = graphToOnnx(graph, paramValuesOf(params), { scoreActivation: "softmax", foldShared });
    const ops = new Set(model.graph!.node!.map((n) => n.opType));
    for (const op of ["Conv", "BatchNormalization", "Clip", "MaxPool", "Resize", "Sum", "Add", "Sigmoid", "Softmax"]) {
      assert(ops.has(op), `missing ${op}`);
    }
    const bns = model.graph!.node!.filter((n) => n.opType === "BatchNormalization").map((n) => n.name);
    assertEquals(bns.sort(), (foldShared ? ["bn0", "bn_after_add"] : ["bn0", "bn_after_add", "s.bn0", "s.bn1"]).sort());
    // Kept shared: one weight initializer serves both levels.
    const shared = model.graph!.initializer!.filter((t) => t.name === "s.weight").length;
    assertEquals(shared, foldShared ? 0 : 1);
    const session = await ortSession(encodeOnnx(model));
    const d = await compare(graph, params, session, randomInput(createRng(3), 2, 12), 2, "softmax");
    assert(d.loc.rel <= 1e-5 && d.scores.rel <= 1e-5, `${d.loc.rel}, ${d.scores.rel}`);
    await session.release();
  });
}

Deno.test("normalisation inside the graph takes 0-255 pixels as float32 or uint8", async () => {
  const cfg = configFor("ssd_tiny");
  const graph = buildModel(cfg);
  const params = randomParams(graph, 6);
  const { mean, std } = cfg.augment;
  const rng = createRng(8);
  const pixels = Uint8Array.from({ length: 2 * 160 * 160 * 3 }, () => Math.floor(rng() * 256));
  const normalised = Float32Array.from(pixels, (v, i) => (v - mean[i % 3]) / std[i % 3]);
  for (const inputType of ["float32", "uint8"] as const) {
    const model = graphToOnnx(graph, paramValuesOf(params), {
      scoreActivation: "sigmoid",
      normalise: { mean, std, inputType },
    });
    assertEquals(model.graph!.input![0].type!.tensorType!.elemType, inputType === "uint8" ? 2 : 1);
    const session = await ortSession(encodeOnnx(model));
    const feed = inputType === "uint8"
      ? new ort.Tensor("uint8", pixels, [2, 160, 160, 3])
      : new ort.Tensor("float32", Float32Array.from(pixels), [2, 160, 160, 3]);
    const d = await compare(graph, params, session, normalised, 2, "sigmoid", feed);
    assert(d.loc.rel <= TOL && d.scores.rel <= TOL, `${inputType}: ${d.loc.rel}, ${d.scores.rel}`);
    await session.release();
  }
});

Deno.test("the boxes output decodes loc against the anchors like lib/box_coder.ts", async () => {
  const cfg = configFor("ssd_tiny");
  const anchors = anchorsOf(cfg);
  const graph = buildModel(cfg, anchors);
  const params = randomParams(graph, 7);
  const o: GraphToOnnxOptions = {
    scoreActivation: "sigmoid",
    boxes: { anchors: anchors.centers, scaleFactors: scaleFactorsOf(cfg), clip: true },
  };
  const session = await ortSession(encodeOnnx(graphToOnnx(graph, paramValuesOf(params), o)));
  assertEquals(session.outputNames, ["loc", "scores", "boxes"]);
  const x = randomInput(createRng(1), 2, 160);
  const out = await session.run({ images: new ort.Tensor("float32", x, [2, 160, 160, 3]) });
  assertEquals(out.boxes.dims, [2, anchors.count, 4]);
  const loc = out.loc.data as Float32Array, boxes = out.boxes.data as Float32Array;
  for (let k = 0; k < 2; k++) {
    const a = anchors.count * 4;
    const want = decodeBoxes(loc.subarray(k * a, (k + 1) * a), anchors.centers, {
      scaleFactors: scaleFactorsOf(cfg),
      clip: true,
    });
    assert(relDiff(boxes.subarray(k * a, (k + 1) * a), want).rel <= 1e-5);
  }
  await session.release();
});

Deno.test("exportModel writes model.onnx and config.yaml atomically, with opset, io and metadata as documented", async () => {
  const cfg = configFor("ssd_tiny");
  const anchors = anchorsOf(cfg);
  const graph = buildModel(cfg, anchors);
  const params = randomParams(graph, 1);
  const dir = Deno.makeTempDirSync();
  const r = await exportModel(graph, paramValuesOf(params), cfg, {
    classNames: cfg.model.class_names!,
    anchors,
    scaleFactors: scaleFactorsOf(cfg),
  }, { out: dir, withBoxes: true });
  assertEquals(fs.readdirSync(dir).sort(), ["config.yaml", "model.onnx"]); // no temporary files left
  const m = decodeOnnx(fs.readFileSync(r.model));
  assertEquals(m.opsetImport!.map((o) => [o.domain, Number(o.version)]), [["", 13]]);
  const g = m.graph!;
  assertEquals(g.input!.map((i) => i.name), ["images"]);
  const dims = g.input![0].type!.tensorType!.shape!.dim!.map((d) => d.dimParam || Number(d.dimValue));
  assertEquals(dims, ["N", 160, 160, 3]);
  assertEquals(g.output!.map((o) => o.name), ["loc", "scores", "boxes"]);
  const outDims = g.output!.map((o) => o.type!.tensorType!.shape!.dim!.map((d) => d.dimParam || Number(d.dimValue)));
  assertEquals(outDims, [["N", 2152, 4], ["N", 2152, 4], ["N", 2152, 4]]);
  assertEquals(g.node!.filter((n) => n.opType === "BatchNormalization").length, 0);
  // The metadata holds the same config as config.yaml, and it says what inference needs.
  const text = onnxMetadata(m)[CONFIG_METADATA_KEY];
  assertEquals(text, fs.readFileSync(r.config, "utf8"));
  const c = parseOnnxModelConfig(text, "meta");
  assertEquals(c.class_names, ["background", "rectangle", "ellipse", "triangle"]);
  assertEquals([c.input.name, c.input.layout, c.input.dtype, c.input.values], [
    "images",
    "NHWC",
    "float32",
    "normalised",
  ]);
  assertEquals([c.preprocess.input_size, c.preprocess.resize, c.preprocess.normalise_inside_graph], [
    160,
    "stretch",
    false,
  ]);
  assertEquals([c.preprocess.mean, c.preprocess.std], [cfg.augment.mean, cfg.augment.std]);
  assertEquals([c.anchors.generator, c.num_anchors, c.box_coder.prior_scaling], ["ssd", 2152, [0.1, 0.2]]);
  assertEquals([c.postprocess.min_score, c.outputs.scores.activation, c.outputs.boxes?.clipped], [
    cfg.postprocess.min_score,
    cfg.model.score_activation,
    true,
  ]);
  assert(YAML.parse(text).format === "ssd-workbench onnx");
});

Deno.test("deno task export turns a checkpoint into model.onnx and config.yaml, and names a bad checkpoint", async () => {
  const cfg = configFor("ssd_tiny");
  const graph = buildModel(cfg);
  const params = randomParams(graph, 3);
  const dir = Deno.makeTempDirSync();
  await saveCheckpoint(`${dir}/t.ckpt`, {
    params,
    config: cfg as unknown as Record<string, unknown>,
    classNames: cfg.model.class_names!,
    epoch: 1,
    globalStep: 1,
  });
  const run = (args: string[]) =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "tasks/export.ts", ...args],
      stdout: "piped",
      stderr: "piped",
    })
      .output();
  const ok = await run(["--checkpoint", `${dir}/t.ckpt`, "--out", `${dir}/export`]);
  assertEquals(ok.code, 0, new TextDecoder().decode(ok.stderr));
  assertEquals(fs.readdirSync(`${dir}/export`).sort(), ["config.yaml", "model.onnx"]);
  const model = decodeOnnx(fs.readFileSync(`${dir}/export/model.onnx`));
  assertEquals(model.graph!.output!.map((o) => o.name), ["loc", "scores"]);
  // The exported weights are the checkpoint's: same numbers as tfjs on the same input.
  const session = await ortSession(fs.readFileSync(`${dir}/export/model.onnx`));
  const d = await compare(graph, params, session, randomInput(createRng(2), 1, 160), 1, cfg.model.score_activation);
  assert(d.loc.rel <= TOL && d.scores.rel <= TOL);
  await session.release();
  Deno.writeFileSync(`${dir}/bad.ckpt`, new TextEncoder().encode("not a checkpoint"));
  const bad = await run(["--checkpoint", `${dir}/bad.ckpt`, "--out", `${dir}/x`]);
  assertEquals(bad.code, 1);
  const err = new TextDecoder().decode(bad.stderr);
  assert(err.includes(`${dir}/bad.ckpt`) && err.includes("bad magic"), err);
  assert(!fs.existsSync(`${dir}/x/model.onnx`));
});

Deno.test("a file that is not ONNX is reported by name", () => {
  assertThrows(() => decodeOnnx(new TextEncoder().encode("\xff\xff garbage"), "x.onnx"), /x\.onnx: not an ONNX model/);
});
