/**
 * One forward + backward pass of the SSD loss on a batch (or a replica's part
 * of one), shared by the trainer and its gradient workers.
 *
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { type BnUpdate, type Graph, type ParamMap, runGraph } from "../graph.ts";
import { type LossConfig, ssdLoss } from "../loss.ts";
import { canRunUntaped, graphGradients } from "./graph_backward.ts";
import { planSegments, segmentedGradients } from "./recompute.ts";

/** Inputs of a gradient pass: part of a batch. */
export interface GradInputs {
  /** [B, S, S, 3] */
  images: Float32Array;
  /** [B, A, 4] */
  loc: Float32Array;
  /** [B, A] */
  labels: Int32Array;
  size: number;
}

/** Outputs of {@linkcode gradStep}; the caller disposes the tensors. */
export interface GradOutputs {
  loss: tf.Scalar;
  loc: tf.Scalar;
  cls: tf.Scalar;
  /** Gradients by tfjs variable name. */
  grads: Record<string, tf.Tensor>;
  bn: BnUpdate[];
}

/**
 * Forward + backward of the SSD loss with respect to `trainable`. With
 * `segments` > 1 the graph runs in that many checkpointed segments
 * (lib/engine/recompute.ts): one more forward pass, a fraction of the memory.
 */
export function gradStep(
  graph: Graph,
  params: ParamMap,
  trainable: tf.Variable[],
  part: GradInputs,
  o: {
    inputSize: number;
    numAnchors: number;
    loss: LossConfig;
    normalizer?: number;
    segments?: number;
    /** Dropout masks: the step's seed and this part's first image in the whole batch (see RunOptions). */
    dropout?: { seed: number; offset: number };
    /** Synchronised batch norm across MPI ranks (see RunOptions). */
    syncBn?: (sums: Float64Array) => Float64Array;
  },
): GradOutputs {
  const s = o.inputSize, b = part.size, a = o.numAnchors;
  const x = tf.tensor4d(part.images, [b, s, s, 3]);
  const locT = tf.tensor3d(part.loc, [b, a, 4]);
  const labels = tf.tensor2d(part.labels, [b, a], "int32");
  const bn: BnUpdate[] = [];
  let parts: { loc: tf.Scalar; cls: tf.Scalar } | null = null;
  const loss = (out: Record<string, tf.Tensor>) => {
    const l = ssdLoss(out.loc as tf.Tensor3D, out.cls as tf.Tensor3D, locT, labels, o.loss, o.normalizer);
    parts = { loc: tf.keep(l.loc), cls: tf.keep(l.cls) };
    return l.total;
  };
  const { value, grads } = (o.segments ?? 1) > 1
    ? segmentedGradients(graph, params, trainable, x, segmentsOf(graph, o.segments!), loss, bn, {
      dropout: o.dropout,
      syncBn: o.syncBn,
    })
    : untaped && canRunUntaped({ syncBn: o.syncBn })
    ? graphGradients(graph, params, trainable, x, loss, { bnUpdates: bn, dropout: o.dropout })
    : tf.variableGrads(
      () => loss(runGraph(graph, params, x, { training: true, bnUpdates: bn, dropout: o.dropout, syncBn: o.syncBn })),
      trainable,
    );
  tf.dispose([x, locT, labels]);
  return { loss: value, loc: parts!.loc, cls: parts!.cls, grads, bn };
}

let untaped = true;

/**
 * Whether {@linkcode gradStep} runs the backward pass without tfjs's tape
 * (lib/engine/graph_backward.ts; the default where it can). Off, it records
 * the tape, as tests of the two paths' agreement need.
 */
export function useUntapedBackward(on: boolean): void {
  untaped = on;
}

const plans = new WeakMap<Graph, Map<number, ReturnType<typeof planSegments>>>();
function segmentsOf(graph: Graph, count: number) {
  let byCount = plans.get(graph);
  if (!byCount) plans.set(graph, byCount = new Map());
  if (!byCount.has(count)) byCount.set(count, planSegments(graph, count));
  return byCount.get(count)!;
}

/** The trainable variables of `params`, minus names matching a `freeze` pattern, with their param names. */
export function trainableParams(params: ParamMap, freeze: string[]): [string, tf.Variable][] {
  const patterns = freeze.map((p) => new RegExp(p));
  return [...params].filter(([n, v]) => v.trainable && !patterns.some((re) => re.test(n)));
}
