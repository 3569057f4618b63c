/**
 * Peer figures: torchvision's SSDs through shared/bench/torch_ssd_bench.py when
 * PyTorch is on the machine, else the figures recorded on this machine kind
 * (shared/notes/measurements.md), labelled as such.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";

/** Torchvision timings: train step at batch 4 and inference at batch 1, in seconds. */
export interface TorchFigures {
  source: "measured" | "recorded";
  ssd300_vgg16: { train: number; infer: number };
  ssdlite320: { train: number; infer: number };
}

/** Recorded on a 2-core machine of this kind (torch 1.13, 2 threads). */
export const RECORDED_TORCH: TorchFigures = {
  source: "recorded",
  ssd300_vgg16: { train: 4.2, infer: 0.44 },
  ssdlite320: { train: 0.38, infer: 0.077 },
};

let cached: TorchFigures | undefined;

/** Runs the torchvision peer bench when possible (once per process). */
export function torchFigures(o: { quick?: boolean } = {}): TorchFigures {
  if (cached) return cached;
  const script = Deno.env.get("SSD_TORCH_BENCH") ?? path.resolve("..", "shared", "bench", "torch_ssd_bench.py");
  const hasTorch = spawnSync("/usr/bin/python3", ["-c", "import torch, torchvision"], { stdio: "ignore" }).status === 0;
  if (!fs.existsSync(script) || !hasTorch) return (cached = RECORDED_TORCH);
  const out = path.join(Deno.makeTempDirSync(), "torch.json");
  const steps = o.quick ? "1" : "3";
  const r = spawnSync("/usr/bin/python3", [
    script,
    "--train-steps",
    steps,
    "--infer-runs",
    o.quick ? "2" : "5",
    "--json",
    out,
  ], {
    stdio: ["ignore", "ignore", "inherit"],
  });
  if (r.status !== 0 || !fs.existsSync(out)) return (cached = RECORDED_TORCH);
  const j = JSON.parse(fs.readFileSync(out, "utf8"));
  // torch_ssd_bench.py --json: {model: {train_step_bs4_median_s, infer_bs1_median_s, ...}}
  const pick = (name: string) => {
    const e = j[name] ?? {};
    return { train: Number(e.train_step_bs4_median_s ?? NaN), infer: Number(e.infer_bs1_median_s ?? NaN) };
  };
  const vgg = pick("ssd300_vgg16"), lite = pick("ssdlite320_mobilenet_v3_large");
  if (![vgg.train, vgg.infer, lite.train, lite.infer].every(Number.isFinite)) return (cached = RECORDED_TORCH);
  return (cached = { source: "measured", ssd300_vgg16: vgg, ssdlite320: lite });
}
