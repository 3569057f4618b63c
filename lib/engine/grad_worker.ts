/**
 * A gradient replica in a Web Worker: it holds the same network, receives the
 * current parameter values and a part of each batch, and returns that part's
 * gradients. The trainer sums them with its own, so two cores train one batch.
 *
 * Messages: {type: "init", cfg, threads} -> {type: "ready"};
 * {type: "step", values, part, normalizer} -> {type: "grads", grads, loss, loc, cls} | {type: "error", message}.
 *
 * @module
 */
/// <reference lib="deno.worker" />
import * as tf from "@tensorflow/tfjs-core";
import { setBackend } from "./backend.ts";
import { type GradInputs, gradStep, trainableParams } from "./grad_step.ts";
import { type Graph, initParams, type ParamMap } from "../graph.ts";
import { createRng } from "../rng.ts";
import { anchorsOf, buildModel, type SsdConfig } from "../ssd_config.ts";

let state:
  | { cfg: SsdConfig; graph: Graph; params: ParamMap; trainable: [string, tf.Variable][]; anchors: number }
  | null = null;

self.onmessage = async (e: MessageEvent) => {
  const msg = e.data;
  try {
    if (msg.type === "init") {
      const cfg = msg.cfg as SsdConfig;
      await setBackend(cfg.backend, { threads: msg.threads });
      const anchors = anchorsOf(cfg);
      const graph = buildModel(cfg, anchors);
      const params = initParams(graph, createRng(0));
      state = { cfg, graph, params, trainable: trainableParams(params, cfg.train.freeze), anchors: anchors.count };
      self.postMessage({ type: "ready" });
      return;
    }
    if (msg.type === "step" && state) {
      const { cfg, graph, params, trainable } = state;
      const values = msg.values as Record<string, Float32Array>;
      for (const [name, v] of trainable) {
        const t = tf.tensor(values[name], v.shape);
        v.assign(t);
        t.dispose();
      }
      const r = gradStep(graph, params, trainable.map(([, v]) => v), msg.part as GradInputs, {
        inputSize: cfg.model.input_size,
        numAnchors: state.anchors,
        loss: cfg.loss,
        normalizer: msg.normalizer,
        segments: cfg.train.segments,
        dropout: msg.dropout,
      });
      const grads: Record<string, Float32Array> = {};
      const buffers: ArrayBuffer[] = [];
      for (const [name, v] of trainable) {
        const g = r.grads[v.name];
        if (!g) continue;
        const d = await g.data() as Float32Array;
        grads[name] = d;
        buffers.push(d.buffer as ArrayBuffer);
      }
      const [loss, loc, cls] = (await Promise.all([r.loss.data(), r.loc.data(), r.cls.data()])).map((d) => d[0]);
      tf.dispose([r.loss, r.loc, r.cls, ...Object.values(r.grads)]);
      for (const u of r.bn) tf.dispose([u.mean, u.variance]);
      self.postMessage({ type: "grads", grads, loss, loc, cls }, { transfer: buffers });
    }
  } catch (err) {
    self.postMessage({ type: "error", message: err instanceof Error ? (err.stack ?? err.message) : String(err) });
  }
};
