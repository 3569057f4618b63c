// Checks the kernel and model tests share: a conv step's gradients, and a model forward pass that must repeat
// exactly, stay finite and leak no tensors.
import * as tf from "@tensorflow/tfjs-core";
import assert from "node:assert";
import { type Graph, type ParamMap, runGraph } from "../lib/graph.ts";

/**
 * One step of gradients through a conv (stride 2) and a depthwise conv (stride `dwStride`) of `x`, disposing
 * them: what the leak tests repeat.
 */
export function convGradStep(x: tf.Tensor4D, w: tf.Tensor4D, dw: tf.Tensor4D, dwStride: number): void {
  const [a, b] = tf.grads((x: tf.Tensor, w: tf.Tensor) =>
    tf.conv2d(x as tf.Tensor4D, w as tf.Tensor4D, 2, "same").sum()
  )(
    [x, w],
  );
  const [c, d] = tf.grads((x: tf.Tensor, w: tf.Tensor) =>
    tf.depthwiseConv2d(x as tf.Tensor4D, w as tf.Tensor4D, dwStride, "same").sum()
  )([x, dw]);
  tf.dispose([a, b, c, d]);
}

/**
 * Runs `graph` on `x` twice and asserts the second run gives the same shapes, finite outputs and no new
 * tensors; returns `[loc shape, cls shape]`.
 */
export function checkForward(graph: Graph, params: ParamMap, x: tf.Tensor4D): [number[], number[]] {
  const run = () =>
    tf.tidy(() => {
      const { loc, cls } = runGraph(graph, params, x);
      return [loc.shape, cls.shape, tf.all(tf.isFinite(tf.concat([loc, cls], 2))).dataSync()[0]] as const;
    });
  const first = run();
  const before = tf.memory().numTensors;
  assert.deepStrictEqual(run(), first);
  assert.strictEqual(tf.memory().numTensors, before);
  assert.strictEqual(first[2], 1, "outputs are finite");
  return [first[0], first[1]];
}
