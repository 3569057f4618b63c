/**
 * MindSpore checkpoints in the workbench: a `.ckpt` of the tutorial or the
 * ModelZoo becomes the workbench's {@linkcode Checkpoint} of a model config,
 * and back. The file format is `mindspore_ckpt.ts`'s; the names and layouts
 * are `mindspore_names.ts`'s. This file checks that a checkpoint fits the
 * model (every tensor found, none left over, every shape right) and carries
 * the Momentum state (`moments.*`) across.
 *
 * Fine-tuning follows the ModelZoo's `train.py`: `pre_trained` weights with
 * `filter_weight` drop the tensors whose names contain an entry of
 * `checkpoint_filter_list` (`src/init_params.py`
 * `filter_checkpoint_parameter_by_list`), and a `feature_extractor_base_param`
 * checkpoint holds the backbone alone, its names relative to the backbone cell
 * (`ssd_model_build` prefixes them with `feature_extractor.mobilenet_v1.` or
 * `feature_extractor.resnet.`).
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * import { loadSsdConfig, buildModel } from "./ssd_config.ts";
 * import { initParams } from "./graph.ts";
 * import { createRng } from "./rng.ts";
 * import { setBackend } from "./engine/mod.ts";
 * await setBackend("cpu");
 * const cfg = loadSsdConfig("configs/ssd300_vgg16.yaml", { "model.input_size": "300" });
 * const graph = buildModel(cfg);
 * const params = initParams(graph, createRng(1));
 * const values = new Map([...params].map(([name, v]) => [name, { shape: v.shape, data: v.dataSync() as Float32Array }]));
 * const tensors = mindsporeTensors(values, cfg, { graph });
 * assertEquals(tensors[0].name, "backbone.b1.0.weight"); // the tutorial's names, no wrapper prefix
 * const back = importMindSpore({ tensors, crc: false }, cfg, { graph });
 * assertEquals(back.params.get("b6.weight")!.data, values.get("b6.weight")!.data);
 * for (const v of params.values()) v.dispose();
 * ```
 *
 * @module
 */
import * as fs from "node:fs";
import { type Checkpoint, CHECKPOINT_VERSION, decodeCheckpoint, type ParamValues } from "./checkpoint.ts";
import { ConfigError, InputError } from "./errors.ts";
import type { Graph } from "./graph.ts";
import {
  float32ToMsTensor,
  isMsCheckpoint,
  isOptimizerState,
  type MsCheckpointFile,
  type MsTensor,
  msTensorToFloat32,
  parseMsCheckpoint,
} from "./mindspore_ckpt.ts";
import {
  filterCheckpointNames,
  fromMsLayout,
  matchWrapped,
  mindsporeFlavour,
  mindsporeNames,
  type NameMapEntry,
  toMsLayout,
  WRAPPER_PREFIX,
} from "./mindspore_names.ts";
import { loadSsdConfig, type SsdConfig } from "./ssd_config.ts";

/** Options of {@linkcode importMindSpore}. */
export interface ImportOptions {
  /** The file, for messages. */
  file?: string;
  /** The model's graph, when already built (saves building it again). */
  graph?: Graph;
  /** Drop checkpoint tensors whose names contain one of these (`--init.filter`, the ModelZoo's `filter_weight`). */
  filter?: readonly string[];
  /**
   * Fine-tuning: the checkpoint may fill part of the model (a backbone, or all but filtered heads); tensors the
   * model lacks and shapes that differ (another class count) are skipped and reported, not errors.
   */
  partial?: boolean;
}

/** A MindSpore checkpoint matched to a model: see {@linkcode importMindSpore}. */
export interface MsImport {
  /** Parameters found, in the workbench layout. */
  params: ParamValues;
  /** Momentum buffers (`moments.<name>`) found, in the workbench layout. */
  momentum: ParamValues;
  /** How the checkpoint's names were found: a wrapper prefix (`network.`, "") or a backbone's prefix. */
  prefix: string;
  /** Whether the checkpoint holds only the backbone (names relative to the backbone cell). */
  backboneOnly: boolean;
  /** Workbench parameters the checkpoint does not fill. */
  missing: string[];
  /** Checkpoint tensors dropped by `filter`. */
  filtered: string[];
  /** Checkpoint tensors that are neither the model's parameters nor optimizer state. */
  unused: string[];
  /** Parameters whose stored shape differs from the model's, as `name [stored] vs [model]`. */
  misShaped: string[];
  /** The optimizer's `global_step`, when stored. */
  globalStep: number | null;
}

/**
 * Backbone cells whose checkpoints the ModelZoo loads alone (`train.py` `ssd_model_build`): their names, in such a
 * file, are relative to the cell.
 */
const BACKBONE_PREFIXES = ["feature_extractor.mobilenet_v1.", "feature_extractor.resnet.", "backbone."];

const shapeText = (s: readonly number[]) => `[${s.join(", ")}]`;

/** The first few of a list, for a message. */
function few(items: readonly string[], n = 4): string {
  return items.slice(0, n).join(", ") + (items.length > n ? `, ... (${items.length} in all)` : "");
}

/**
 * Matches a MindSpore checkpoint to the model of `cfg` and converts what it
 * finds to the workbench's layouts. Unless `partial`, the checkpoint must fit
 * exactly: a missing, extra (neither parameter nor optimizer state) or
 * mis-shaped tensor is an {@linkcode InputError} that lists the first few of
 * each. Nothing is loaded into a model here, so a failure never leaves one
 * half-loaded.
 */
export function importMindSpore(ms: MsCheckpointFile, cfg: SsdConfig, o: ImportOptions = {}): MsImport {
  const entries = mindsporeNames(cfg, o.graph);
  const byName = new Map(ms.tensors.map((t) => [t.name, t]));
  const { kept, dropped } = filterCheckpointNames(byName.keys(), o.filter ?? []);
  const names = new Set(kept);
  let match: { prefix: string; found: Map<string, string> } | null = null, backboneOnly = false;
  try {
    match = matchWrapped(names, entries);
  } catch (e) {
    if (!(e instanceof InputError) || !o.partial) throw withFile(e, o.file);
    match = matchBackbone(names, entries);
    if (!match) throw withFile(e, o.file);
    backboneOnly = true;
  }
  const params: ParamValues = new Map(), momentum: ParamValues = new Map();
  const missing: string[] = [], misShaped: string[] = [];
  const claimed = new Set<string>();
  for (const e of entries) {
    const name = match.found.get(e.workbench);
    const t = name === undefined ? undefined : byName.get(name);
    if (!t) {
      missing.push(e.workbench);
      continue;
    }
    claimed.add(t.name);
    if (t.shape.join() !== e.msShape.join()) {
      misShaped.push(`${t.name} ${shapeText(t.shape)} vs ${shapeText(e.msShape)}`);
      continue;
    }
    params.set(e.workbench, { shape: e.shape, data: fromMsLayout(msTensorToFloat32(t), e) });
    // nn.Momentum's buffer of a parameter is `moments.<its saved name>` (nn/optim/momentum.py, `clone("moments")`).
    const m = byName.get(`moments.${t.name}`);
    if (m && m.shape.join() === t.shape.join()) {
      claimed.add(m.name);
      momentum.set(e.workbench, { shape: e.shape, data: fromMsLayout(msTensorToFloat32(m), e) });
    }
  }
  const present = new Set(byName.keys());
  const unused = kept.filter((n) => !claimed.has(n) && !isOptimizerState(n, present));
  if (!o.partial && (missing.length || unused.length || misShaped.length)) {
    const parts = [
      missing.length ? `${missing.length} missing (${few(missing)})` : "",
      unused.length ? `${unused.length} not in the model (${few(unused)})` : "",
      misShaped.length ? `${misShaped.length} mis-shaped (${few(misShaped)})` : "",
    ].filter(Boolean);
    throw new InputError(
      `does not fit the ${cfg.model.arch} model of this config (${entries.length} parameters): ${parts.join("; ")}`,
      { file: o.file },
    );
  }
  const step = byName.get("global_step");
  const globalStep = step && step.dtype !== "str" ? Math.round(msTensorToFloat32(step)[0] ?? 0) : null;
  return {
    params,
    momentum,
    prefix: match.prefix,
    backboneOnly,
    missing,
    filtered: dropped,
    unused,
    misShaped,
    globalStep,
  };
}

/**
 * ImageNet VGG16 names of the SSD's VGG convs (ModelZoo `src/vgg16.py` `_get_key_mapper`, with `ssd_vgg_bn: False`,
 * the only SSD variant here): `layers.<i>.weight` of the classification network, with or without batch norm
 * (`pretrain_vgg_bn`), is `backbone.b<n>.<k>.weight` of the SSD.
 */
function vggImageNetNames(bn: boolean): Map<string, string> {
  const block = [1, 1, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5];
  const pretrain = bn
    ? [0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40]
    : [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28];
  const ssd = [0, 2, 0, 2, 0, 2, 4, 0, 2, 4, 0, 2, 4];
  return new Map(block.map((b, i) => [`backbone.b${b}.${ssd[i]}.weight`, `layers.${pretrain[i]}.weight`]));
}

/**
 * Matches a backbone-only checkpoint: under the prefix of {@linkcode BACKBONE_PREFIXES}, or the ImageNet VGG16
 * names, that finds the most names.
 */
function matchBackbone(
  names: ReadonlySet<string>,
  entries: readonly NameMapEntry[],
): { prefix: string; found: Map<string, string> } | null {
  let best: { prefix: string; found: Map<string, string> } | null = null;
  const consider = (prefix: string, nameOf: (e: NameMapEntry) => string | undefined) => {
    const found = new Map<string, string>();
    for (const e of entries) {
      const n = nameOf(e);
      if (n !== undefined && names.has(n)) found.set(e.workbench, n);
    }
    if (found.size > (best?.found.size ?? 0)) best = { prefix, found };
  };
  for (const prefix of BACKBONE_PREFIXES) {
    consider(prefix, (e) => e.mindspore.startsWith(prefix) ? e.mindspore.slice(prefix.length) : undefined);
  }
  for (const bn of [false, true]) {
    const vgg = vggImageNetNames(bn);
    consider(`ImageNet VGG16${bn ? " with batch norm" : ""} (ssd_vgg_key_mapper)`, (e) => vgg.get(e.mindspore));
  }
  return best;
}

function withFile(e: unknown, file?: string): unknown {
  return e instanceof InputError && file && !e.file ? new InputError(e.message, { file, cause: e }) : e;
}

/** Options of {@linkcode mindsporeTensors}. */
export interface ExportOptions {
  graph?: Graph;
  /** The wrapper prefix to write (default: the flavour's, `network.` for the ModelZoo, none for the tutorial). */
  prefix?: string;
  /** Momentum buffers to write as `moments.<name>`, with `momentum` and `global_step` (nn.Momentum's state). */
  momentum?: ParamValues;
  globalStep?: number;
}

/**
 * The MindSpore tensors of workbench weights, in the model's MindSpore order:
 * every parameter under its MindSpore name (float32, MindSpore's layout),
 * then, when given, the Momentum state as nn.Momentum saves it.
 */
export function mindsporeTensors(values: ParamValues, cfg: SsdConfig, o: ExportOptions = {}): MsTensor[] {
  const entries = mindsporeNames(cfg, o.graph);
  const prefix = o.prefix ?? WRAPPER_PREFIX[mindsporeFlavour(cfg)];
  const out: MsTensor[] = [];
  const missing = entries.filter((e) => !values.has(e.workbench)).map((e) => e.workbench);
  if (missing.length) throw new InputError(`the weights lack ${missing.length} parameter(s): ${few(missing)}`);
  for (const e of entries) {
    const v = values.get(e.workbench)!;
    if (v.shape.join() !== e.shape.join()) {
      throw new InputError(
        `parameter ${e.workbench} has shape ${shapeText(v.shape)}; the model needs ${shapeText(e.shape)}`,
      );
    }
    out.push(float32ToMsTensor(prefix + e.mindspore, e.msShape, toMsLayout(v.data, e)));
  }
  if (o.momentum) {
    out.push(float32ToMsTensor("momentum", [], [cfg.train.momentum]));
    for (const e of entries) {
      const m = o.momentum.get(e.workbench);
      if (m) out.push(float32ToMsTensor(`moments.${prefix}${e.mindspore}`, e.msShape, toMsLayout(m.data, e)));
    }
    out.push(float32ToMsTensor("global_step", [1], [o.globalStep ?? 0], "Int32"));
  }
  return out;
}

/**
 * The MindSpore name (without wrapper prefix) of each workbench parameter of a config's model, as a lookup;
 * `undefined` for every name when the model has no MindSpore counterpart.
 */
export function mindsporeNameOf(cfg: SsdConfig, graph?: Graph): (workbench: string) => string | undefined {
  let map: Map<string, string>;
  try {
    map = new Map(mindsporeNames(cfg, graph).map((e) => [e.workbench, e.mindspore]));
  } catch (e) {
    if (e instanceof ConfigError) return () => undefined;
    throw e;
  }
  return (name) => map.get(name);
}

/** The parameter and momentum values of a workbench checkpoint. */
export function checkpointValues(ckpt: Checkpoint): { params: ParamValues; momentum: ParamValues } {
  const params: ParamValues = new Map(), momentum: ParamValues = new Map();
  for (const [key, t] of ckpt.tensors) {
    const [group, name] = [key.slice(0, key.indexOf(":")), key.slice(key.indexOf(":") + 1)];
    (group === "momentum" ? momentum : params).set(name, { shape: t.shape, data: t.data });
  }
  return { params, momentum };
}

/**
 * A workbench {@linkcode Checkpoint} made from a MindSpore import for the
 * model of `cfg`: its config is `cfg`, its class names the config's, its step
 * the optimizer's `global_step` (else 0).
 */
export function checkpointFromImport(r: MsImport, cfg: SsdConfig): Checkpoint {
  const tensors: Checkpoint["tensors"] = new Map();
  for (const [name, v] of r.params) tensors.set(`param:${name}`, { group: "param", ...v });
  for (const [name, v] of r.momentum) tensors.set(`momentum:${name}`, { group: "momentum", ...v });
  return {
    header: {
      format: "ssd-workbench checkpoint",
      version: CHECKPOINT_VERSION,
      created: new Date().toISOString(),
      config: cfg as unknown as Record<string, unknown>,
      class_names: cfg.model.class_names ?? [],
      epoch: 0,
      step_in_epoch: 0,
      global_step: r.globalStep ?? 0,
      metrics: {},
      tensors: [],
    },
    tensors,
  };
}

/** Which format a checkpoint file is in, by its first bytes. */
export function checkpointKind(bytes: Uint8Array): "workbench" | "mindspore" {
  return new TextDecoder().decode(bytes.subarray(0, 8)) === "SSDWBCK1" || !isMsCheckpoint(bytes)
    ? "workbench"
    : "mindspore";
}

/**
 * Reads a checkpoint in either format. A workbench checkpoint carries its own
 * config; a MindSpore one needs `cfg` (the model it belongs to) and is checked
 * against it ({@linkcode importMindSpore}).
 */
export function readAnyCheckpoint(
  file: string,
  cfg?: SsdConfig,
  o: Omit<ImportOptions, "file"> = {},
): { checkpoint: Checkpoint; kind: "workbench" | "mindspore"; import?: MsImport } {
  let bytes: Uint8Array;
  try {
    bytes = fs.readFileSync(file);
  } catch (e) {
    throw new InputError(`cannot read checkpoint: ${(e as Error).message}`, { file });
  }
  if (checkpointKind(bytes) === "workbench") return { checkpoint: decodeCheckpoint(bytes, file), kind: "workbench" };
  if (!cfg) {
    throw new ConfigError(
      "a MindSpore checkpoint carries no model config: pass --config with the model it belongs to",
      { file },
    );
  }
  const imported = importMindSpore(parseMsCheckpoint(bytes, file), cfg, { ...o, file });
  return { checkpoint: checkpointFromImport(imported, cfg), kind: "mindspore", import: imported };
}

/** How a MindSpore checkpoint meets one model config: see {@linkcode matchConfigs}. */
export interface ConfigMatch {
  config: string;
  arch: string;
  /** The checkpoint fits the model exactly (every parameter, every shape, nothing else but optimizer state). */
  exact: boolean;
  /** Parameters of the model found with the right shape. */
  found: number;
  /** Parameters of the model. */
  total: number;
}

/**
 * The configs whose models a MindSpore checkpoint fills, best first: every
 * config file that loads and has a MindSpore counterpart is tried. Configs
 * that fill nothing are left out.
 */
export function matchConfigs(ms: MsCheckpointFile, configFiles: readonly string[]): ConfigMatch[] {
  const out: ConfigMatch[] = [];
  for (const config of configFiles) {
    let cfg: SsdConfig;
    try {
      cfg = loadSsdConfig(config);
      mindsporeNames(cfg);
    } catch {
      continue; // not a model config, or no MindSpore counterpart
    }
    let r: MsImport;
    try {
      r = importMindSpore(ms, cfg, { partial: true });
    } catch {
      continue; // none of its names
    }
    const total = r.params.size + r.missing.length + r.misShaped.length;
    const exact = r.missing.length === 0 && r.misShaped.length === 0 && r.unused.length === 0 && !r.backboneOnly;
    if (r.params.size > 0) out.push({ config, arch: cfg.model.arch, exact, found: r.params.size, total });
  }
  return out.sort((a, b) => Number(b.exact) - Number(a.exact) || b.found / b.total - a.found / a.total);
}
