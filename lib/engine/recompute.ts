/**
 * Gradient checkpointing (Chen et al. 2016, "Training Deep Nets with
 * Sublinear Memory Cost"). tfjs keeps every intermediate of a step until its
 * backward pass ends, which at 640 px (the FPN models) is more than the wasm
 * backend's 4 GiB heap holds even at batch 1. Here the graph runs in
 * segments: the forward pass keeps only the tensors that cross a segment
 * boundary, and the backward pass recomputes one segment at a time, from
 * last to first, and takes that segment's gradients. The price is one extra
 * forward pass; the peak is the boundaries plus one segment.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import {
  type BnUpdate,
  type Graph,
  type GraphNode,
  inferShapes,
  nodeInputs,
  nodeParams,
  type ParamMap,
  runNodes,
  type RunOptions,
} from "../graph.ts";

/** One segment of a graph: its nodes, what it reads from earlier segments and what later ones read from it. */
export interface Segment {
  nodes: GraphNode[];
  /** Ids produced by earlier segments (or the input) and read here. */
  inputs: number[];
  /** Ids produced here and read by later segments or named as graph outputs. */
  exports: number[];
}

/**
 * Cuts `graph` into at most `count` consecutive segments holding about equal
 * activation memory (elements per image, from the graph's shapes).
 *
 * @example
 * ```ts
 * import { GraphBuilder } from "../graph.ts";
 * const b = new GraphBuilder([8, 8, 3]);
 * let x = b.input;
 * for (let i = 0; i < 4; i++) x = b.act(b.conv(`c${i}`, x, 4), "relu");
 * const g = b.build({ out: x });
 * const segs = planSegments(g, 2);
 * if (segs.length !== 2 || segs[1].inputs.length !== 1) throw new Error("two segments, one boundary");
 * ```
 */
export function planSegments(graph: Graph, count: number): Segment[] {
  const shapes = inferShapes(graph);
  const sizes = graph.nodes.map((n) => shapes.get(n.id)!.reduce((a, b) => a * b, 1));
  const total = sizes.reduce((a, b) => a + b, 0);
  const groups: GraphNode[][] = [[]];
  let acc = 0;
  graph.nodes.forEach((n, i) => {
    const last = groups[groups.length - 1];
    if (last.length > 0 && acc >= (total * groups.length) / count && groups.length < count) groups.push([n]);
    else last.push(n);
    acc += sizes[i];
  });
  const segOf = new Map<number, number>();
  groups.forEach((g, k) => g.forEach((n) => segOf.set(n.id, k)));
  const outputs = new Set(Object.values(graph.outputs));
  const readLater = new Set<number>();
  const segments = groups.map((nodes, k) => {
    const inputs = new Set<number>();
    for (const n of nodes) {
      for (const i of nodeInputs(n)) {
        if (segOf.get(i)! < k) {
          inputs.add(i);
          readLater.add(i);
        }
      }
    }
    return { nodes, inputs: [...inputs], exports: [] as number[] };
  });
  for (const [k, s] of segments.entries()) {
    s.exports = groups[k].map((n) => n.id).filter((id) => readLater.has(id) || outputs.has(id));
  }
  return segments;
}

/** Result of {@linkcode segmentedGradients}; the caller disposes the tensors. */
export interface SegmentedResult {
  value: tf.Scalar;
  /** By tfjs variable name, as `tf.variableGrads` returns them. */
  grads: Record<string, tf.Tensor>;
}

/**
 * Gradients of `loss(outputs)` with respect to `trainable`, for the graph run
 * on `x` in `segments` (see {@linkcode planSegments}), with the same values as
 * `tf.variableGrads` over {@linkcode runGraph} up to float summation order.
 * Batch-norm statistics are recorded once, from the first forward pass.
 */
export function segmentedGradients(
  graph: Graph,
  params: ParamMap,
  trainable: tf.Variable[],
  x: tf.Tensor4D,
  segments: Segment[],
  loss: (outputs: Record<string, tf.Tensor>) => tf.Scalar,
  bnUpdates?: BnUpdate[],
  run: Pick<RunOptions, "dropout" | "syncBn"> = {},
): SegmentedResult {
  const { dropout, syncBn } = run;
  const kept = new Map<number, tf.Tensor>([[graph.input.id, x]]);
  // A segment's values start from what it reads (the first segment reads the input node itself).
  const inputsOf = (seg: Segment) =>
    new Map([[graph.input.id, x], ...seg.inputs.map((i) => [i, kept.get(i)!] as const)]);
  // Forward: keep only what crosses a boundary.
  for (const seg of segments) {
    const out = tf.tidy(() => {
      const local = inputsOf(seg);
      runNodes(seg.nodes, params, local, { training: true, bnUpdates, dropout, syncBn });
      return seg.exports.map((id) => local.get(id)!);
    });
    seg.exports.forEach((id, k) => kept.set(id, out[k]));
  }
  const outputs = Object.fromEntries(Object.entries(graph.outputs).map(([k, id]) => [k, kept.get(id)!]));
  const outIds = Object.values(graph.outputs);
  const head = tf.engine().gradients(() => loss(outputs), outIds.map((id) => kept.get(id)!), undefined, true);
  const dy = new Map<number, tf.Tensor>();
  outIds.forEach((id, k) => head.grads[k] && addTo(dy, id, head.grads[k]));

  const trainSet = new Set(trainable);
  const grads: Record<string, tf.Tensor> = {};
  for (let k = segments.length - 1; k >= 0; k--) {
    const seg = segments[k];
    const live = seg.exports.filter((id) => dy.has(id));
    if (live.length > 0) {
      const inputs = seg.inputs.filter((i) => i !== graph.input.id);
      const vars = [...new Set(seg.nodes.flatMap(nodeParams))].map((n) => params.get(n)!).filter((v) =>
        trainSet.has(v)
      );
      const r = tf.engine().gradients(
        () => {
          const local = inputsOf(seg);
          // The same dropout masks as the first pass: they derive from (seed, node, image) alone. Synced batch
          // norm sums over the ranks again; every rank recomputes the same segments in the same order.
          runNodes(seg.nodes, params, local, { training: true, dropout, syncBn });
          // The vector-Jacobian product of the segment: sum of outputs times their incoming gradients.
          return live.map((id) => tf.sum(tf.mul(local.get(id)!, dy.get(id)!))).reduce((a, b) => tf.add(a, b));
        },
        [...inputs.map((i) => kept.get(i)!), ...vars],
        undefined,
        true,
      );
      r.value.dispose();
      inputs.forEach((id, j) => r.grads[j] && addTo(dy, id, r.grads[j]));
      vars.forEach((v, j) => {
        const g = r.grads[inputs.length + j];
        if (!g) return;
        const prev = grads[v.name];
        if (prev) {
          grads[v.name] = tf.add(prev, g);
          tf.dispose([prev, g]);
        } else grads[v.name] = g;
      });
    }
    // Nothing before this segment reads its outputs or their gradients.
    for (const id of seg.exports) {
      if (id !== graph.input.id) kept.get(id)?.dispose();
      kept.delete(id);
      dy.get(id)?.dispose();
      dy.delete(id);
    }
  }
  for (const t of dy.values()) t.dispose();
  return { value: head.value as tf.Scalar, grads };
}

function addTo(map: Map<number, tf.Tensor>, id: number, g: tf.Tensor): void {
  const prev = map.get(id);
  if (!prev) {
    map.set(id, g);
    return;
  }
  map.set(id, tf.add(prev, g));
  tf.dispose([prev, g]);
}
