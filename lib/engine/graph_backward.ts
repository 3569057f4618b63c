/**
 * Gradients of a graph's loss without tfjs's tape: the forward pass runs
 * untaped and keeps what each node's gradient needs, then the nodes run
 * backwards, each through the gradient tfjs has registered for its kernel
 * (ours for Conv2D, batch norm and ReLU). So the numbers are the tape's, bit
 * for bit, while the tape's bookkeeping goes: a copy of every saved tensor
 * (about 970 per MobileNetV2 step), a record per kernel call, and the search
 * for the path from the weights to the loss on every step. Each node's output
 * is freed once its gradient has run, so memory falls during the backward
 * pass instead of holding until its end.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs-core";
 * import { GraphBuilder, initParams, runGraph } from "../graph.ts";
 * import { createRng } from "../rng.ts";
 * import { graphGradients } from "./graph_backward.ts";
 * import { setBackend } from "./backend.ts";
 *
 * await setBackend("wasm");
 * const g = new GraphBuilder([4, 4, 1]);
 * const graph = g.build({ out: g.act(g.conv("c", g.input, 2, { bias: true }), "relu") });
 * const params = initParams(graph, createRng(1));
 * const x = tf.randomNormal([1, 4, 4, 1], 0, 1, "float32", 7) as tf.Tensor4D;
 * const trainable = [...params.values()].filter((v) => v.trainable);
 * const loss = (out: Record<string, tf.Tensor>) => tf.sum(out.out) as tf.Scalar;
 * const { grads } = graphGradients(graph, params, trainable, x, loss);
 * const tape = tf.variableGrads(() => loss(runGraph(graph, params, x, { training: true })), trainable);
 * for (const v of trainable) {
 *   if (tf.any(tf.notEqual(grads[v.name], tape.grads[v.name])).dataSync()[0]) throw new Error(v.name);
 * }
 * ```
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { BN_TRAIN, hasBatchNormKernels } from "../custom_ops.ts";
import {
  bnActFusions,
  type Graph,
  type GraphNode,
  nodeInputs,
  nodeParams,
  padArg,
  type ParamMap,
  runNodes,
  type RunOptions,
} from "../graph.ts";

/**
 * Whether {@linkcode graphGradients} can run `options`: it needs the
 * batch-norm kernels (their gradient is one kernel) and no SyncBatchNorm,
 * whose reduction lives in a custom gradient on the tape.
 */
export function canRunUntaped(options: RunOptions = {}): boolean {
  return hasBatchNormKernels() && !options.syncBn;
}

/**
 * The loss `loss(outputs)` of `graph` on `x` in training mode, and its
 * gradients with respect to `trainable` by variable name, as
 * `tf.variableGrads` returns them. Batch-norm statistics go to
 * `options.bnUpdates` as with `runGraph`. Requires {@linkcode canRunUntaped}.
 */
export function graphGradients(
  graph: Graph,
  params: ParamMap,
  trainable: tf.Variable[],
  x: tf.Tensor4D,
  loss: (out: Record<string, tf.Tensor>) => tf.Scalar,
  options: RunOptions = {},
): { value: tf.Scalar; grads: Record<string, tf.Tensor> } {
  if (!canRunUntaped(options)) throw new Error("graphGradients needs the batch-norm kernels and no syncBn");
  const wanted = new Set<tf.Tensor>(trainable);
  return tf.tidy(() => {
    const values = new Map<number, tf.Tensor>([[graph.input.id, x]]);
    const saved = new Map<number, tf.Tensor[]>();
    const fusions = options.fusions ?? bnActFusions(graph);
    runNodes(graph.nodes, params, values, { ...options, training: true, fusions, saved });

    // Nodes whose output depends on a trainable parameter: only they pass a gradient back.
    const needs = new Set<number>();
    for (const node of graph.nodes) {
      const own = nodeParams(node).some((p) => wanted.has(params.get(p)!));
      if (own || nodeInputs(node).some((i) => needs.has(i))) needs.add(node.id);
    }

    // The loss on the tape (a few dozen ops), and its gradient with respect to the outputs.
    const outputs = Object.fromEntries(Object.entries(graph.outputs).map(([k, id]) => [k, values.get(id)!]));
    const through = Object.keys(graph.outputs).filter((k) => needs.has(graph.outputs[k]));
    const { value, grads: dOut } = tf.valueAndGrads((...ts: tf.Tensor[]) => {
      const out = { ...outputs };
      through.forEach((k, i) => (out[k] = ts[i]));
      return loss(out);
    })(through.map((k) => outputs[k]));

    const dys = new Map<number, tf.Tensor>();
    // As the tape does: the gradient so far plus the new part, in reverse node order.
    const accumulate = (id: number, d: tf.Tensor) => {
      const prev = dys.get(id);
      if (!prev) return void dys.set(id, d);
      dys.set(id, tf.add(prev, d));
      tf.dispose([prev, d]);
    };
    through.forEach((k, i) => accumulate(graph.outputs[k], dOut[i]));

    const grads: Record<string, tf.Tensor> = {};
    const addGrad = (v: tf.Tensor, d: tf.Tensor) => {
      const name = (v as tf.Variable).name, prev = grads[name];
      grads[name] = prev ? tf.add(prev, d) : d;
      if (prev) tf.dispose([prev, d]);
    };

    // A node's output is freed after its own gradient (its readers' gradients ran before); some nodes
    // pass their input on as their output, so count the nodes holding each tensor.
    const holders = new Map<tf.Tensor, number>();
    for (const t of values.values()) holders.set(t, (holders.get(t) ?? 0) + 1);
    const keep = new Set<tf.Tensor>([x, ...(options.bnUpdates ?? []).flatMap((u) => [u.mean, u.variance])]);
    const release = (t: tf.Tensor | undefined) => {
      if (!t) return;
      const n = holders.get(t)! - 1;
      holders.set(t, n);
      if (n === 0 && !keep.has(t)) t.dispose();
    };

    const ctx: BackwardContext = { params, values, saved, fusions, needs, wanted, accumulate, addGrad };
    for (let k = graph.nodes.length - 1; k >= 0; k--) {
      const node = graph.nodes[k];
      const dy = dys.get(node.id);
      if (dy) {
        dys.delete(node.id);
        backward(node, dy, ctx);
      }
      release(values.get(node.id));
      for (const t of saved.get(node.id) ?? []) if (!keep.has(t)) t.dispose();
    }
    return { value, grads };
  });
}

interface BackwardContext {
  params: ParamMap;
  values: Map<number, tf.Tensor>;
  saved: Map<number, tf.Tensor[]>;
  fusions: ReadonlyMap<number, string>;
  needs: Set<number>;
  wanted: Set<tf.Tensor>;
  accumulate: (id: number, d: tf.Tensor) => void;
  addGrad: (v: tf.Tensor, d: tf.Tensor) => void;
}

/** The registered gradient of `kernel`, called as the tape would call it. */
function gradientOf(kernel: string, dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[], attrs: object) {
  const config = tf.getGradient(kernel);
  if (!config) throw new Error(`no gradient registered for ${kernel}`);
  return config.gradFunc(dy as tf.Tensor, saved, attrs as tf.NamedAttrMap) as Record<string, () => tf.Tensor>;
}

/** Runs one node's gradient: takes `dy` (and frees it), adds to its inputs' and parameters' gradients. */
function backward(node: GraphNode, dy: tf.Tensor, c: BackwardContext): void {
  const input = "input" in node ? c.values.get(node.input)! : undefined;
  const toInput = (d: tf.Tensor) => {
    if (c.needs.has((node as { input: number }).input)) c.accumulate((node as { input: number }).input, d);
    else d.dispose();
  };
  switch (node.op) {
    case "input":
      dy.dispose();
      return;
    case "conv": {
      const owner = node.shareWith ?? node.name;
      const w = c.params.get(`${owner}.weight`)!;
      const bias = node.bias ? c.params.get(`${owner}.bias`)! : undefined;
      // The bias add's gradient: dy summed over N, H, W (tfjs's Add gradient, reduced to the bias's shape).
      if (bias && c.wanted.has(bias)) c.addGrad(bias, tf.sum(dy, [0, 1, 2]));
      // What tf.conv2d / tf.depthwiseConv2d pass to their kernels.
      const attrs = { strides: node.strides, pad: padArg(node.pads), dataFormat: "NHWC", dilations: node.dilation };
      const g = gradientOf(node.depthwise ? "DepthwiseConv2dNative" : "Conv2D", dy, [input!, w], attrs);
      if (c.needs.has(node.input)) c.accumulate(node.input, g.x());
      if (c.wanted.has(w)) c.addGrad(w, g.filter());
      dy.dispose();
      return;
    }
    case "bn": {
      const gamma = c.params.get(`${node.name}.gamma`)!, beta = c.params.get(`${node.name}.beta`)!;
      const [mean, variance, invstd] = c.saved.get(node.id)!;
      // dy is freed below, after its last read: the kernel may write dx over it (batch_norm_kernel.ts).
      const attrs = { eps: node.eps, activation: c.fusions.get(node.id) ?? "linear", dyConsumed: true };
      const g = gradientOf(
        BN_TRAIN,
        [dy],
        [input!, gamma, beta, c.values.get(node.id)!, mean, variance, invstd],
        attrs,
      );
      const dx = g.x(), dgamma = g.gamma(), dbeta = g.beta();
      toInput(dx);
      if (c.wanted.has(gamma)) c.addGrad(gamma, dgamma);
      else dgamma.dispose();
      if (c.wanted.has(beta)) c.addGrad(beta, dbeta);
      else dbeta.dispose();
      dy.dispose();
      return;
    }
    case "act": {
      if (c.fusions.has(node.input)) return toInput(dy); // the batch norm before it applied it
      const g = node.fn === "sigmoid"
        ? gradientOf("Sigmoid", dy, [c.values.get(node.id)!], {})
        : gradientOf(node.fn === "relu" ? "Relu" : "Relu6", dy, [input!], {});
      toInput(g.x());
      dy.dispose();
      return;
    }
    case "maxpool": {
      const padded = c.saved.get(node.id)?.[0] ?? input!;
      const pool = { filterSize: node.kernel, strides: node.strides, pad: "valid" };
      let dx = gradientOf("MaxPool", dy, [padded, c.values.get(node.id)!], pool).x();
      if (padded !== input) {
        const inner = dx;
        dx = gradientOf("PadV2", inner, [input!], { paddings: padArg(node.pads), constantValue: -3.4e38 }).x();
        inner.dispose();
      }
      toInput(dx);
      dy.dispose();
      return;
    }
    case "dropout": {
      const mask = c.saved.get(node.id)?.[0];
      if (!mask) return toInput(dy); // rate 0: the identity
      toInput(tf.mul(dy, mask));
      dy.dispose();
      return;
    }
    case "upsample": {
      const size = [input!.shape[1]! * node.scale, input!.shape[2]! * node.scale];
      const attrs = { alignCorners: false, halfPixelCenters: false, size };
      const kernel = node.mode === "bilinear" ? "ResizeBilinear" : "ResizeNearestNeighbor";
      toInput(gradientOf(kernel, dy, [input!], attrs).images());
      dy.dispose();
      return;
    }
    case "flatten_head":
      toInput(tf.reshape(dy, input!.shape));
      dy.dispose();
      return;
    case "add":
      // Every input gets dy; the first takes it, the others a copy (sharing its data).
      node.inputs.forEach((id, i) => {
        if (c.needs.has(id)) c.accumulate(id, i === 0 ? dy : tf.clone(dy));
      });
      if (!c.needs.has(node.inputs[0])) dy.dispose();
      return;
    case "concat_anchors": {
      if (node.inputs.length === 1) {
        if (c.needs.has(node.inputs[0])) c.accumulate(node.inputs[0], dy);
        else dy.dispose();
        return;
      }
      const parts = gradientOf("Concat", dy, node.inputs.map((id) => c.values.get(id)!), { axis: 1 });
      node.inputs.forEach((id, i) => {
        const d = parts[i]();
        if (c.needs.has(id)) c.accumulate(id, d);
        else d.dispose();
      });
      dy.dispose();
      return;
    }
  }
}
