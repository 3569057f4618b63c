/**
 * A tiny network description shared by every model. A model is built once as
 * a list of nodes (conv, batch norm, activation, pooling, add, upsample, head
 * flattening); the same list is then run by tfjs ({@linkcode runGraph}),
 * written to ONNX by the exporter, counted and printed layer by layer. So the
 * trained network and the exported one cannot drift apart.
 *
 * Layout is NHWC throughout. Padding is always explicit [top, bottom, left,
 * right], resolved when the graph is built, so every executor agrees.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import type { Rng } from "./rng.ts";
import { normal } from "./rng.ts";
import {
  batchNormTrainKernel,
  type BnActivation,
  hasBatchNormKernels,
  hasMomentumKernel,
  momentumUpdates,
  momentumUpdatesInPlace,
} from "./custom_ops.ts";

/** Explicit spatial padding: top, bottom, left, right. */
export type Pads = [number, number, number, number];

/** A symbolic tensor: node id and its [H, W, C] shape (batch excluded). */
export interface Sym {
  id: number;
  shape: [number, number, number];
}

/** One graph node. `name` prefixes its parameters (`name.weight` ...). */
export type GraphNode =
  | { op: "input"; id: number; shape: [number, number, number] }
  | {
    op: "conv";
    id: number;
    input: number;
    name: string;
    /** Output channels (depthwise: input channels x multiplier). */
    filters: number;
    kernel: [number, number];
    strides: [number, number];
    dilation: [number, number];
    pads: Pads;
    depthwise: boolean;
    bias: boolean;
    /** Reads the parameters of this earlier conv layer instead of its own (weight sharing). */
    shareWith?: string;
  }
  | { op: "bn"; id: number; input: number; name: string; eps: number; momentum: number }
  | { op: "act"; id: number; input: number; fn: "relu" | "relu6" | "sigmoid" }
  | { op: "maxpool"; id: number; input: number; kernel: [number, number]; strides: [number, number]; pads: Pads }
  | { op: "add"; id: number; inputs: number[] }
  /**
   * Dropout (MindSpore `nn.Dropout(p)`): in training, each value is zeroed with probability `rate` and the rest
   * scaled by 1 / (1 - rate); the identity at inference and in exported models.
   */
  | { op: "dropout"; id: number; input: number; rate: number }
  /**
   * Integer-factor upsampling; nearest when `mode` is absent. `bilinear` is TF's legacy resize
   * (align_corners and half_pixel_centers false: source = destination / scale, clamped at the edge),
   * which MindSpore `ops.ResizeBilinear` computes and ONNX Resize calls linear + asymmetric.
   */
  | { op: "upsample"; id: number; input: number; scale: number; mode?: "nearest" | "bilinear" }
  /** [N, H, W, k*v] -> [N, H*W*k, v]: one row per anchor, in (row, col, anchor) order. */
  | { op: "flatten_head"; id: number; input: number; values: number }
  /** Concatenates [N, A_i, v] along the anchor axis. */
  | { op: "concat_anchors"; id: number; inputs: number[] };

/** A parameter's role, for initialisation, weight decay and export. */
export type ParamKind = "weight" | "bias" | "gamma" | "beta" | "moving_mean" | "moving_variance";

/** A parameter declared by the graph. */
export interface ParamSpec {
  name: string;
  shape: number[];
  kind: ParamKind;
  /** Node that owns it. */
  node: string;
  /** Fan-in, for He initialisation. */
  fanIn: number;
}

/** A built network: nodes in execution order, its outputs and its parameters. */
export interface Graph {
  nodes: GraphNode[];
  input: Sym;
  outputs: Record<string, number>;
  params: ParamSpec[];
}

/** How "same" padding is resolved, given input size, kernel extent and stride (TF / MindSpore rule). */
export function samePads(inH: number, inW: number, kh: number, kw: number, s: [number, number]): Pads {
  const outH = Math.ceil(inH / s[0]), outW = Math.ceil(inW / s[1]);
  const ph = Math.max(0, (outH - 1) * s[0] + kh - inH), pw = Math.max(0, (outW - 1) * s[1] + kw - inW);
  return [Math.floor(ph / 2), ph - Math.floor(ph / 2), Math.floor(pw / 2), pw - Math.floor(pw / 2)];
}

/** Padding as the builder accepts it: a rule, one number for all sides, or explicit. */
export type PadArg = "same" | "valid" | number | Pads;

/** Options of {@linkcode GraphBuilder.conv}. */
export interface ConvOptions {
  kernel?: number | [number, number];
  stride?: number;
  dilation?: number;
  pad?: PadArg;
  bias?: boolean;
  /** Depthwise convolution; `filters` is then the channel multiplier. */
  depthwise?: boolean;
  /**
   * Name of an earlier conv layer whose parameters this one uses instead of declaring its own
   * (weight sharing, e.g. one box predictor applied to every pyramid level). Shapes must match.
   */
  shareWith?: string;
}

const pairOf = (v: number | [number, number]): [number, number] => typeof v === "number" ? [v, v] : v;

/** A builder's batch-norm settings: epsilon, and the weight of the old moving average. */
export interface BnOptions {
  bnEps?: number;
  bnMomentum?: number;
}

/** Batch-norm defaults of the sources the builders port; configs set `model.bn_eps` / `model.bn_momentum`. */
export const BN_DEFAULTS = {
  /** MindSpore `nn.BatchNorm2d`'s own defaults, kept by MobileNetV1's `conv_bn_relu` and the FPN neck. */
  mindspore: { eps: 1e-5, momentum: 0.9 },
  /** `_bn` of ModelZoo `src/ssd.py`: MobileNetV2, the heads and the weight-shared tower. */
  modelzooSsd: { eps: 1e-3, momentum: 0.97 },
  /** ModelZoo ResNet50 backbone of `ssd_resnet50_fpn` (`_bn` with momentum 0.997, as TF's ResNet). */
  resnet: { eps: 1e-3, momentum: 0.997 },
} as const;

/**
 * The `{ eps, momentum }` a builder passes to {@linkcode GraphBuilder.bn}: its options, else the defaults of
 * the source it ports.
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * assertEquals(bnSettings({ bnMomentum: 0.99 }, BN_DEFAULTS.modelzooSsd), { eps: 1e-3, momentum: 0.99 });
 * ```
 */
export function bnSettings(
  o: BnOptions,
  defaults: { eps: number; momentum: number },
): { eps: number; momentum: number } {
  return { eps: o.bnEps ?? defaults.eps, momentum: o.bnMomentum ?? defaults.momentum };
}

/**
 * Builds a {@linkcode Graph} with shape inference.
 *
 * @example
 * ```ts
 * const g = new GraphBuilder([32, 32, 3]);
 * const y = g.conv("c1", g.input, 8, { kernel: 3, stride: 2 });
 * if (y.shape.join() !== "16,16,8") throw new Error(`shape ${y.shape}`);
 * ```
 */
export class GraphBuilder {
  readonly nodes: GraphNode[] = [];
  readonly params: ParamSpec[] = [];
  readonly input: Sym;
  #names = new Set<string>();
  #next = 0;

  constructor(inputShape: [number, number, number]) {
    const id = this.#next++;
    this.nodes.push({ op: "input", id, shape: inputShape });
    this.input = { id, shape: inputShape };
  }

  #claim(name: string): void {
    if (this.#names.has(name)) throw new RangeError(`duplicate layer name ${name}`);
    this.#names.add(name);
  }

  #resolvePads(pad: PadArg, x: Sym, ke: [number, number], s: [number, number]): Pads {
    if (pad === "same") return samePads(x.shape[0], x.shape[1], ke[0], ke[1], s);
    if (pad === "valid") return [0, 0, 0, 0];
    if (typeof pad === "number") return [pad, pad, pad, pad];
    return pad;
  }

  /** A 2-D convolution (or depthwise convolution). */
  conv(name: string, x: Sym, filters: number, o: ConvOptions = {}): Sym {
    this.#claim(name);
    const kernel = pairOf(o.kernel ?? 3);
    const strides = pairOf(o.stride ?? 1);
    const dilation = pairOf(o.dilation ?? 1);
    const ke: [number, number] = [(kernel[0] - 1) * dilation[0] + 1, (kernel[1] - 1) * dilation[1] + 1];
    const pads = this.#resolvePads(o.pad ?? "same", x, ke, strides);
    const h = Math.floor((x.shape[0] + pads[0] + pads[1] - ke[0]) / strides[0]) + 1;
    const w = Math.floor((x.shape[1] + pads[2] + pads[3] - ke[1]) / strides[1]) + 1;
    if (h < 1 || w < 1) throw new RangeError(`layer ${name}: input ${x.shape} is too small for its kernel`);
    const depthwise = o.depthwise ?? false;
    const cin = x.shape[2];
    const cout = depthwise ? cin * filters : filters;
    const id = this.#next++;
    const bias = o.bias ?? false;
    const wShape = depthwise ? [kernel[0], kernel[1], cin, filters] : [kernel[0], kernel[1], cin, cout];
    const fanIn = kernel[0] * kernel[1] * (depthwise ? 1 : cin);
    if (o.shareWith !== undefined) {
      // A shared layer declares no parameters: it must fit the owner's weight and bias exactly.
      const owner = this.params.find((p) => p.name === `${o.shareWith}.weight`);
      const ownerBias = this.params.some((p) => p.name === `${o.shareWith}.bias`);
      if (!owner) throw new RangeError(`layer ${name}: shareWith ${o.shareWith} is not an earlier conv layer`);
      if (owner.shape.join() !== wShape.join() || ownerBias !== bias) {
        throw new RangeError(`layer ${name}: weight ${wShape}${bias ? " + bias" : ""} does not fit ${o.shareWith}'s`);
      }
    }
    this.nodes.push({
      op: "conv",
      id,
      input: x.id,
      name,
      filters: cout,
      kernel,
      strides,
      dilation,
      pads,
      depthwise,
      bias,
      ...(o.shareWith !== undefined ? { shareWith: o.shareWith } : {}),
    });
    if (o.shareWith === undefined) {
      this.params.push({ name: `${name}.weight`, shape: wShape, kind: "weight", node: name, fanIn });
      if (bias) this.params.push({ name: `${name}.bias`, shape: [cout], kind: "bias", node: name, fanIn });
    }
    return { id, shape: [h, w, cout] };
  }

  /** Batch normalisation; `momentum` weighs the old moving average (MindSpore/Keras convention). */
  bn(name: string, x: Sym, o: { eps?: number; momentum?: number } = {}): Sym {
    this.#claim(name);
    const id = this.#next++;
    const { eps, momentum } = { ...BN_DEFAULTS.mindspore, ...o };
    this.nodes.push({ op: "bn", id, input: x.id, name, eps, momentum });
    const c = x.shape[2];
    for (const kind of ["gamma", "beta", "moving_mean", "moving_variance"] as const) {
      this.params.push({ name: `${name}.${kind}`, shape: [c], kind, node: name, fanIn: 1 });
    }
    return { id, shape: x.shape };
  }

  /** An activation. */
  act(x: Sym, fn: "relu" | "relu6" | "sigmoid"): Sym {
    const id = this.#next++;
    this.nodes.push({ op: "act", id, input: x.id, fn });
    return { id, shape: x.shape };
  }

  /** Max pooling (padding counts as -infinity). */
  maxpool(x: Sym, kernel: number, stride: number, pad: PadArg = "valid"): Sym {
    const k = pairOf(kernel), s = pairOf(stride);
    const pads = this.#resolvePads(pad, x, k, s);
    const h = Math.floor((x.shape[0] + pads[0] + pads[1] - k[0]) / s[0]) + 1;
    const w = Math.floor((x.shape[1] + pads[2] + pads[3] - k[1]) / s[1]) + 1;
    const id = this.#next++;
    this.nodes.push({ op: "maxpool", id, input: x.id, kernel: k, strides: s, pads });
    return { id, shape: [h, w, x.shape[2]] };
  }

  /** Element-wise sum of same-shaped tensors. */
  add(...xs: Sym[]): Sym {
    for (const x of xs) {
      if (x.shape.join() !== xs[0].shape.join()) {
        throw new RangeError(`add: shapes ${xs[0].shape} and ${x.shape} differ`);
      }
    }
    const id = this.#next++;
    this.nodes.push({ op: "add", id, inputs: xs.map((x) => x.id) });
    return { id, shape: xs[0].shape };
  }

  /** Dropout with drop probability `rate` (training only). */
  dropout(x: Sym, rate: number): Sym {
    if (!(rate >= 0 && rate < 1)) throw new RangeError(`dropout: rate ${rate} is not in [0, 1)`);
    const id = this.#next++;
    this.nodes.push({ op: "dropout", id, input: x.id, rate });
    return { id, shape: x.shape };
  }

  /** Upsampling by an integer factor: nearest neighbour, or TF legacy bilinear (see the node's `mode`). */
  upsample(x: Sym, scale: number, mode: "nearest" | "bilinear" = "nearest"): Sym {
    const id = this.#next++;
    // The mode is recorded only when not nearest, so graphs built before it existed are unchanged.
    this.nodes.push({ op: "upsample", id, input: x.id, scale, ...(mode === "bilinear" ? { mode } : {}) });
    return { id, shape: [x.shape[0] * scale, x.shape[1] * scale, x.shape[2]] };
  }

  /** A head output [H, W, k*v] seen as [H*W*k, v] (the shape's last two entries are kept as [A, v, 1]). */
  flattenHead(x: Sym, values: number): Sym {
    if (x.shape[2] % values !== 0) {
      throw new RangeError(`flattenHead: ${x.shape[2]} channels is not a multiple of ${values}`);
    }
    const id = this.#next++;
    this.nodes.push({ op: "flatten_head", id, input: x.id, values });
    return { id, shape: [x.shape[0] * x.shape[1] * (x.shape[2] / values), values, 1] };
  }

  /** Concatenates flattened heads along the anchor axis. */
  concatAnchors(xs: Sym[]): Sym {
    const id = this.#next++;
    this.nodes.push({ op: "concat_anchors", id, inputs: xs.map((x) => x.id) });
    return { id, shape: [xs.reduce((a, x) => a + x.shape[0], 0), xs[0].shape[1], 1] };
  }

  /** Finishes the graph with named outputs. */
  build(outputs: Record<string, Sym>): Graph {
    return {
      nodes: this.nodes.slice(),
      input: this.input,
      outputs: Object.fromEntries(Object.entries(outputs).map(([k, v]) => [k, v.id])),
      params: this.params.slice(),
    };
  }
}

/** Parameter values by name. */
export type ParamMap = Map<string, tf.Variable>;

/** Initialisation schemes. */
export type InitScheme = "truncated_normal" | "he_normal";

/**
 * Creates the graph's parameters. `truncated_normal` is the tutorial's
 * `init_net_param` (TruncatedNormal(0.02) for every weight); `he_normal` suits
 * networks trained from scratch with batch norm. Biases and betas start at 0,
 * gammas and moving variances at 1.
 */
export function initParams(
  graph: Graph,
  rng: Rng,
  options: { scheme?: InitScheme; sigma?: number; overrides?: Record<string, (spec: ParamSpec) => Float32Array> } = {},
): ParamMap {
  const scheme = options.scheme ?? "he_normal";
  const params: ParamMap = new Map();
  for (const p of graph.params) {
    const size = p.shape.reduce((a, b) => a * b, 1);
    let values: Float32Array;
    const override = Object.entries(options.overrides ?? {}).find(([pattern]) => p.name.includes(pattern));
    if (override) values = override[1](p);
    else if (p.kind === "weight") {
      const sigma = scheme === "he_normal" ? Math.sqrt(2 / p.fanIn) : (options.sigma ?? 0.02);
      values = new Float32Array(size);
      for (let i = 0; i < size; i++) {
        let v = normal(rng);
        while (Math.abs(v) > 2) v = normal(rng); // truncated at two standard deviations
        values[i] = v * sigma;
      }
    } else if (p.kind === "gamma" || p.kind === "moving_variance") values = new Float32Array(size).fill(1);
    else values = new Float32Array(size);
    const trainable = p.kind !== "moving_mean" && p.kind !== "moving_variance";
    // tfjs variable names are global; leave them unnamed so several models can coexist.
    params.set(p.name, variableOf(tf.tensor(values, p.shape), trainable));
  }
  return params;
}

/**
 * A variable holding `t`'s values; `t` is disposed. The variable then owns its data alone, which lets
 * the optimizer update it in place (custom_ops.ts's `momentumUpdatesInPlace`).
 */
export function variableOf(t: tf.Tensor, trainable: boolean): tf.Variable {
  const v = tf.variable(t, trainable);
  t.dispose();
  return v;
}

/** Count of trainable and total parameter values. */
export function countParams(graph: Graph): { trainable: number; total: number } {
  let trainable = 0, total = 0;
  for (const p of graph.params) {
    const n = p.shape.reduce((a, b) => a * b, 1);
    total += n;
    if (p.kind !== "moving_mean" && p.kind !== "moving_variance") trainable += n;
  }
  return { trainable, total };
}

/** A pending moving-average update, applied after the optimiser step. */
export interface BnUpdate {
  name: string;
  mean: tf.Tensor1D;
  /** The batch's (biased) variance; times `unbias` it is the unbiased estimate the moving average takes. */
  variance: tf.Tensor1D;
  /** n / (n - 1) for the n values per channel. */
  unbias: number;
  momentum: number;
}

/** Options of {@linkcode runGraph}. */
export interface RunOptions {
  /** Training mode: batch norm uses batch statistics and records moving-average updates. */
  training?: boolean;
  /** Receives batch statistics in training mode (kept out of tidy; apply with {@linkcode applyBnUpdates}). */
  bnUpdates?: BnUpdate[];
  /**
   * Batch norms that run with the activation after them fused (bn node id to activation; see
   * {@linkcode bnActFusions}): the bn node's value is then the activated output, and the act node
   * passes it on. {@linkcode runGraph} finds them itself in training mode.
   */
  fusions?: ReadonlyMap<number, BnActivation>;
  /**
   * Dropout masks in training mode: drawn from `seed` (one per step), the node and the image's position
   * `offset + i` in the whole batch, so a batch split across replicas, a recomputed segment and a check
   * backend see the same masks. Default seed 0, offset 0.
   */
  dropout?: { seed: number; offset: number };
  /**
   * Synchronised batch norm in training mode: sums per-channel statistics over all data-parallel ranks
   * (`train.sync_bn`). Gets this part's sums, returns the global ones.
   */
  syncBn?: (sums: Float64Array) => Float64Array;
  /**
   * Filled in training mode, for the tape-free backward pass (lib/engine/graph_backward.ts): by node
   * id, what a node's gradient needs besides its inputs and output. A batch norm's mean, variance and
   * inverse deviation (on backends with the batch-norm kernels, without `syncBn`), a padded max pool's
   * padded input, a dropout's mask. The receiver disposes them, except the statistics `bnUpdates` holds.
   */
  saved?: Map<number, tf.Tensor[]>;
}

const fusionCache = new WeakMap<Graph, Map<number, BnActivation>>();

/**
 * The batch norms of a training run that can take the ReLU or ReLU6 after them
 * into the fused kernel of `batch_norm_kernel.ts`: those whose only reader is
 * that activation, and that are no graph output. Empty when the backend lacks
 * the kernel.
 */
export function bnActFusions(graph: Graph): ReadonlyMap<number, BnActivation> {
  if (!hasBatchNormKernels()) return new Map();
  let m = fusionCache.get(graph);
  if (m) return m;
  const readers = new Map<number, GraphNode[]>();
  for (const n of graph.nodes) for (const i of nodeInputs(n)) readers.set(i, [...(readers.get(i) ?? []), n]);
  const outputs = new Set(Object.values(graph.outputs));
  m = new Map();
  for (const n of graph.nodes) {
    const r = readers.get(n.id) ?? [];
    const act = r[0];
    if (n.op !== "bn" || r.length !== 1 || outputs.has(n.id) || act.op !== "act" || act.fn === "sigmoid") continue;
    m.set(n.id, act.fn);
  }
  fusionCache.set(graph, m);
  return m;
}

export function padArg(p: Pads): [[number, number], [number, number], [number, number], [number, number]] {
  return [[0, 0], [p[0], p[1]], [p[2], p[3]], [0, 0]];
}

/**
 * Runs the graph on `x` [N, H, W, C] with tfjs and returns its named outputs.
 * Call inside `tf.tidy` (or `tf.variableGrads`).
 */
export function runGraph(
  graph: Graph,
  params: ParamMap,
  x: tf.Tensor4D,
  options: RunOptions = {},
): Record<string, tf.Tensor> {
  const values = new Map<number, tf.Tensor>([[graph.input.id, x]]);
  const fusions = options.training ? options.fusions ?? bnActFusions(graph) : undefined;
  runNodes(graph.nodes, params, values, { ...options, fusions });
  return Object.fromEntries(Object.entries(graph.outputs).map(([k, id]) => [k, values.get(id)!]));
}

/**
 * Runs `nodes` (a slice of a graph, in order), reading their inputs from
 * `values` (by node id; the input node's value must be there) and adding their
 * outputs to it. {@linkcode runGraph} runs every node; gradient checkpointing
 * (lib/engine/recompute.ts) runs one segment at a time.
 */
export function runNodes(
  nodes: GraphNode[],
  params: ParamMap,
  values: Map<number, tf.Tensor>,
  options: RunOptions = {},
): void {
  const get = (name: string) => {
    const v = params.get(name);
    if (!v) throw new RangeError(`missing parameter ${name}`);
    return v;
  };
  for (const node of nodes) {
    let y: tf.Tensor;
    switch (node.op) {
      case "input":
        y = values.get(node.id)!;
        break;
      case "conv": {
        const inp = values.get(node.input) as tf.Tensor4D;
        const owner = node.shareWith ?? node.name;
        const w = get(`${owner}.weight`) as unknown as tf.Tensor4D;
        y = node.depthwise
          ? tf.depthwiseConv2d(inp, w, node.strides, padArg(node.pads), "NHWC", node.dilation)
          : tf.conv2d(inp, w, node.strides, padArg(node.pads), "NHWC", node.dilation);
        if (node.bias) y = tf.add(y, get(`${owner}.bias`));
        break;
      }
      case "bn": {
        const inp = values.get(node.input)!;
        const gamma = get(`${node.name}.gamma`), beta = get(`${node.name}.beta`);
        if (options.training) {
          const stats: { mean?: tf.Tensor1D; variance?: tf.Tensor1D; count?: number } = {};
          const act = options.fusions?.get(node.id);
          const save = options.saved && hasBatchNormKernels() && !options.syncBn
            ? (t: tf.Tensor[]) => options.saved!.set(node.id, t)
            : undefined;
          y = batchNormTrain(inp, gamma, beta, node.eps, stats, act, options.syncBn, save);
          if (options.bnUpdates) {
            // Moving variance uses the unbiased estimate, as TF's and PyTorch's batch norms do.
            const count = stats.count ?? inp.size / inp.shape[3]!;
            options.bnUpdates.push({
              name: node.name,
              mean: stats.mean!,
              variance: stats.variance!,
              unbias: count / Math.max(1, count - 1),
              momentum: node.momentum,
            });
          } else if (!save) tf.dispose([stats.mean!, stats.variance!]);
        } else {
          y = tf.batchNorm(
            inp,
            get(`${node.name}.moving_mean`),
            get(`${node.name}.moving_variance`),
            beta,
            gamma,
            node.eps,
          );
        }
        break;
      }
      case "dropout": {
        const inp = values.get(node.input)!;
        if (options.training && node.rate > 0) {
          const mask = tf.tensor(
            dropoutMask(inp.shape, node.rate, node.id, options.dropout ?? { seed: 0, offset: 0 }),
            inp.shape,
          );
          options.saved?.set(node.id, [mask]);
          y = tf.mul(inp, mask);
        } else y = inp;
        break;
      }
      case "act": {
        const inp = values.get(node.input)!;
        if (options.training && options.fusions?.has(node.input)) {
          y = inp; // applied by the fused batch norm
          break;
        }
        y = node.fn === "relu" ? tf.relu(inp) : node.fn === "relu6" ? tf.relu6(inp) : tf.sigmoid(inp);
        break;
      }
      case "maxpool": {
        const inp = values.get(node.input) as tf.Tensor4D;
        const [t, b, l, r] = node.pads;
        // tfjs pools take no explicit padding; pad with -inf (a large negative) by hand when needed.
        const padded = t + b + l + r === 0 ? inp : tf.pad(inp, padArg(node.pads), -3.4e38) as tf.Tensor4D;
        if (padded !== inp) options.saved?.set(node.id, [padded]);
        y = tf.maxPool(padded, node.kernel, node.strides, "valid");
        break;
      }
      case "add":
        y = node.inputs.map((i) => values.get(i)!).reduce((a, b) => tf.add(a, b));
        break;
      case "upsample": {
        const inp = values.get(node.input) as tf.Tensor4D;
        const size: [number, number] = [inp.shape[1] * node.scale, inp.shape[2] * node.scale];
        y = node.mode === "bilinear"
          ? tf.image.resizeBilinear(inp, size, false, false)
          : tf.image.resizeNearestNeighbor(inp, size);
        break;
      }
      case "flatten_head": {
        const inp = values.get(node.input)!;
        y = tf.reshape(inp, [inp.shape[0], -1, node.values]);
        break;
      }
      case "concat_anchors":
        y = tf.concat(node.inputs.map((i) => values.get(i)!), 1);
        break;
    }
    values.set(node.id, y);
  }
}

/** 32-bit hash of integers (FNV-1a steps with a final avalanche). */
function hash32(...xs: number[]): number {
  let h = 0x811c9dc5;
  for (const x of xs) {
    h = Math.imul(h ^ (x >>> 0), 0x01000193) >>> 0;
    h = Math.imul(h ^ (h >>> 15), 0x2c1b3c6d) >>> 0;
  }
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b) >>> 0;
  return (h ^ (h >>> 13)) >>> 0;
}

/**
 * The dropout mask [N, ...] of node `nodeId`: 0 with probability `rate`, else
 * 1 / (1 - rate). Image i of the tensor draws from (seed, node, offset + i)
 * alone, with a mulberry32 stream per image.
 *
 * @example
 * ```ts
 * const d = dropoutMask([2, 100], 0.5, 7, { seed: 1, offset: 0 });
 * const a = dropoutMask([1, 100], 0.5, 7, { seed: 1, offset: 1 }); // image 1 on its own
 * if (a.some((v, j) => v !== d[100 + j])) throw new Error("image 1's mask depends on its batch");
 * if (d.some((v) => v !== 0 && v !== 2)) throw new Error("values are 0 or 1 / (1 - rate)");
 * const kept = d.filter((v) => v > 0).length;
 * if (kept < 70 || kept > 130) throw new Error(`kept ${kept} of 200 at rate 0.5`);
 * ```
 */
export function dropoutMask(
  shape: number[],
  rate: number,
  nodeId: number,
  o: { seed: number; offset: number },
): Float32Array {
  const per = shape.slice(1).reduce((a, b) => a * b, 1);
  const mask = new Float32Array(shape[0] * per);
  const keep = 1 / (1 - rate);
  for (let i = 0; i < shape[0]; i++) {
    let a = hash32(o.seed, nodeId, o.offset + i);
    for (let j = 0; j < per; j++) {
      // mulberry32
      a = (a + 0x6d2b79f5) >>> 0;
      let t = Math.imul(a ^ (a >>> 15), 1 | a);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      const u = ((t ^ (t >>> 14)) >>> 0) / 4294967296;
      mask[i * per + j] = u < rate ? 0 : keep;
    }
  }
  return mask;
}

/** Ids of the nodes whose outputs `node` reads. */
export function nodeInputs(node: GraphNode): number[] {
  return "inputs" in node ? node.inputs : "input" in node ? [node.input] : [];
}

/** Names of the parameters `node` reads (a weight-sharing conv reads its owner's). */
export function nodeParams(node: GraphNode): string[] {
  if (node.op === "conv") {
    const owner = node.shareWith ?? node.name;
    return node.bias ? [`${owner}.weight`, `${owner}.bias`] : [`${owner}.weight`];
  }
  if (node.op === "bn") return [`${node.name}.gamma`, `${node.name}.beta`];
  return [];
}

/**
 * Per-channel mean over [N, H, W] of an NHWC tensor. An average pool over the
 * whole map runs 15-20x faster on wasm than `tf.mean` over axes [0, 1, 2],
 * which transposes the channels to the front first. On webgpu the pool adds
 * a whole map in one f32 accumulator (4096 terms at 64x64), which put 1e-3
 * relative errors into batch-norm gradients; its reduction adds in a tree.
 */
export function channelMean(x: tf.Tensor): tf.Tensor1D {
  return tf.tidy(() => {
    const [n, h, w, c] = x.shape as [number, number, number, number];
    if (tf.getBackend() === "webgpu") return tf.mean(tf.reshape(x, [n * h * w, c]), 0) as tf.Tensor1D;
    const pooled = tf.avgPool(x as tf.Tensor4D, [h, w], 1, "valid"); // [N, 1, 1, C]
    return tf.mean(tf.reshape(pooled, [n, c]), 0) as tf.Tensor1D;
  });
}

/**
 * Batch normalisation over [N, H, W] with batch statistics, with its analytic
 * gradient. tfjs's own batchNorm gradient tiles the statistics to the input's
 * shape, which on wasm took longer than all convolutions of a step together.
 * The batch mean and (biased) variance are handed out through `stats` (kept).
 * On wasm and cpu it runs the two-pass kernels of `batch_norm_kernel.ts`, with
 * `activation` fused; elsewhere, or with `reduce`, these ops.
 *
 * `reduce` makes it SyncBatchNorm: it sums per-channel values over all
 * data-parallel ranks, so the statistics are the global batch's (`stats.count`
 * is the global count). In the backward pass `dx` then uses the global means
 * of `dy` and `dy * xhat`, while `dgamma` and `dbeta` stay this rank's sums,
 * which the gradient all-reduce adds up.
 *
 * On the kernel path `save`, when given, receives the kernel's mean, variance
 * and inverse deviation for a backward pass without the tape; the caller then
 * owns them (`stats` holds the same mean and variance).
 */
export function batchNormTrain(
  x: tf.Tensor,
  gamma: tf.Tensor,
  beta: tf.Tensor,
  eps: number,
  stats: { mean?: tf.Tensor1D; variance?: tf.Tensor1D; count?: number },
  activation?: BnActivation,
  reduce?: (sums: Float64Array) => Float64Array,
  save?: (t: tf.Tensor[]) => void,
): tf.Tensor {
  if (hasBatchNormKernels() && !reduce) {
    const [y, mean, variance, invstd] = batchNormTrainKernel(x, gamma, beta, eps, activation);
    // The tape keeps its own copy for the gradient; the tape-free backward gets them through `save`.
    if (save) save([mean, variance, invstd]);
    else invstd.dispose();
    stats.mean = tf.keep(mean);
    stats.variance = tf.keep(variance);
    return y;
  }
  const c = x.shape[x.rank - 1]!, n = x.size / c;
  let count = n;
  // Per-channel means of `ts` over this batch, or with `reduce` over all ranks' (sums and the count travel together).
  const meansOf = (ts: tf.Tensor[]): tf.Tensor1D[] => {
    const local = ts.map(channelMean);
    if (!reduce) return local;
    const packed = new Float64Array(ts.length * c + 1);
    local.forEach((m, k) => m.dataSync().forEach((v, j) => (packed[k * c + j] = v * n)));
    packed[ts.length * c] = n;
    const sums = reduce(packed);
    count = sums[ts.length * c];
    return ts.map((_, k) => tf.tensor1d(Float32Array.from(sums.subarray(k * c, (k + 1) * c), (v) => v / count)));
  };
  const f = tf.customGrad((...args) => {
    const [xi, g, b] = args as tf.Tensor[];
    const save = args[3] as (t: tf.Tensor[]) => void;
    // Intermediates die here rather than at the end of the training step: at 640 px they
    // would otherwise hold several input-sized tensors per layer until the step ends.
    const { mean, variance, invstd, xhat, y } = tf.tidy(() => {
      const [mean] = meansOf([xi]);
      const xc = tf.sub(xi, mean);
      const [variance] = meansOf([tf.square(xc)]);
      const invstd = tf.rsqrt(tf.add(variance, eps));
      const xhat = tf.mul(xc, invstd);
      return { mean, variance, invstd, xhat, y: tf.add(tf.mul(xhat, g), b) };
    });
    stats.mean = tf.keep(mean) as tf.Tensor1D;
    stats.variance = tf.keep(variance) as tf.Tensor1D;
    if (reduce) stats.count = count;
    save([xhat, invstd, g]);
    return {
      value: y,
      gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
        const [xh, inv, gm] = saved;
        const d = dy as tf.Tensor;
        const dyX = tf.mul(d, xh);
        const [meanDy, meanDyX] = meansOf([d, dyX]);
        // dx = gamma * invstd * (dy - mean(dy) - xhat * mean(dy * xhat))
        const dx = tf.mul(tf.mul(gm, inv), tf.sub(tf.sub(d, meanDy), tf.mul(xh, meanDyX)));
        // dgamma, dbeta: this batch's sums
        const sum = (t: tf.Tensor, m: tf.Tensor) => reduce ? tf.mul(channelMean(t), n) : tf.mul(m, n);
        return [dx, sum(dyX, meanDyX), sum(d, meanDy)];
      },
    };
  });
  const y = f(x, gamma, beta);
  // Where no kernel fuses the activation, it follows as an op of its own.
  if (activation === "relu") return tf.relu(y);
  if (activation === "relu6") return tf.relu6(y);
  return y;
}

/** Applies recorded batch-norm updates to the moving averages and disposes them. */
export function applyBnUpdates(params: ParamMap, updates: BnUpdate[]): void {
  // The moving average is Momentum's velocity update, v m + g (1 - m) with the batch statistic as g: one kernel
  // where the backend has it (two per layer instead of six ops), rounded as the ops.
  // All layers' averages go in one call.
  // The variance's unbiasing factor is one more product (each rounds to float32, as tf.mul would).
  const pairs = updates.flatMap((u) => [
    { avg: params.get(`${u.name}.moving_mean`)!, stat: u.mean, m: u.momentum, unbias: 1 },
    { avg: params.get(`${u.name}.moving_variance`)!, stat: u.variance, m: u.momentum, unbias: u.unbias },
  ]);
  tf.tidy(() => {
    if (hasMomentumKernel()) {
      // In place: s = stat (* unbias) * (1 - m), avg' = avg m + s.
      const items = pairs.map(({ avg, stat, m, unbias }) => ({
        v: avg,
        g: stat,
        u: { momentum: m, weightDecay: 0, scale: 1 - m, lr: 0, sens: unbias },
      }));
      if (momentumUpdatesInPlace(items)) return;
    }
    const unbiased = pairs.map(({ stat, unbias }) => unbias === 1 ? stat : tf.mul(stat, unbias));
    if (hasMomentumKernel()) {
      const u = (m: number) => ({ momentum: m, weightDecay: 0, scale: 1, lr: 0, sens: 1 - m });
      const items = pairs.map(({ avg, m }, i) => ({ w: avg, v: avg, g: unbiased[i], u: u(m) }));
      momentumUpdates(items).forEach(([, nv], i) => pairs[i].avg.assign(nv));
    } else {
      pairs.forEach(({ avg, m }, i) => avg.assign(tf.add(tf.mul(avg, m), tf.mul(unbiased[i], 1 - m))));
    }
  });
  tf.dispose(updates.flatMap((u) => [u.mean, u.variance]));
  updates.length = 0;
}

/** One row per layer: name, op, output shape and parameter count, for printing a model. */
export function layerTable(graph: Graph): { name: string; op: string; shape: string; params: number }[] {
  const shapes = inferShapes(graph);
  const byNode = new Map<string, number>();
  for (const p of graph.params) {
    if (p.kind === "moving_mean" || p.kind === "moving_variance") continue;
    byNode.set(p.node, (byNode.get(p.node) ?? 0) + p.shape.reduce((a, b) => a * b, 1));
  }
  return graph.nodes.filter((n) => n.op === "conv" || n.op === "bn" || n.op === "maxpool" || n.op === "input").map(
    (n) => {
      const name = "name" in n ? n.name : n.op;
      const op = n.op === "conv"
        ? `${n.depthwise ? "dwconv" : "conv"} ${n.kernel[0]}x${n.kernel[1]}/${n.strides[0]}${
          n.dilation[0] > 1 ? ` d${n.dilation[0]}` : ""
        }${n.shareWith ? ` shares ${n.shareWith}` : ""}`
        : n.op;
      return { name, op, shape: shapes.get(n.id)!.join("x"), params: "name" in n ? byNode.get(n.name) ?? 0 : 0 };
    },
  );
}

/** Output shape ([H, W, C] or [A, v, 1]) of every node, recomputed from the graph alone. */
export function inferShapes(graph: Graph): Map<number, number[]> {
  const s = new Map<number, number[]>();
  for (const n of graph.nodes) {
    switch (n.op) {
      case "input":
        s.set(n.id, n.shape);
        break;
      case "conv": {
        const [h, w] = s.get(n.input)!;
        const ke = [(n.kernel[0] - 1) * n.dilation[0] + 1, (n.kernel[1] - 1) * n.dilation[1] + 1];
        s.set(n.id, [
          Math.floor((h + n.pads[0] + n.pads[1] - ke[0]) / n.strides[0]) + 1,
          Math.floor((w + n.pads[2] + n.pads[3] - ke[1]) / n.strides[1]) + 1,
          n.filters,
        ]);
        break;
      }
      case "maxpool": {
        const [h, w, c] = s.get(n.input)!;
        s.set(n.id, [
          Math.floor((h + n.pads[0] + n.pads[1] - n.kernel[0]) / n.strides[0]) + 1,
          Math.floor((w + n.pads[2] + n.pads[3] - n.kernel[1]) / n.strides[1]) + 1,
          c,
        ]);
        break;
      }
      case "bn":
      case "act":
      case "dropout":
        s.set(n.id, s.get(n.input)!);
        break;
      case "add":
        s.set(n.id, s.get(n.inputs[0])!);
        break;
      case "upsample": {
        const [h, w, c] = s.get(n.input)!;
        s.set(n.id, [h * n.scale, w * n.scale, c]);
        break;
      }
      case "flatten_head": {
        const [h, w, c] = s.get(n.input)!;
        s.set(n.id, [h * w * (c / n.values), n.values, 1]);
        break;
      }
      case "concat_anchors":
        s.set(n.id, [n.inputs.reduce((a, i) => a + s.get(i)![0], 0), s.get(n.inputs[0])![1], 1]);
        break;
    }
  }
  return s;
}
