/**
 * Peer figures: torchvision's SSDs measured in the same run through the
 * project's own `bench/peers/torch_ssd_bench.py` when Debian's PyTorch is on
 * the machine; else the figures recorded on this machine kind, labelled with
 * their date and machine, and with the reason the peer did not run.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

/** Torchvision timings: train step at batch 4 and inference at batch 1, in seconds. */
export interface TorchFigures {
  source: "measured" | "recorded";
  /** How to cite the figures wherever they are printed: "measured in this run", or the recording's date and machine. */
  label: string;
  /** Why the peer was not measured (recorded figures only). */
  reason?: string;
  /** torch's version, torchvision's and the threads (measured figures only). */
  versions?: string;
  ssd300_vgg16: { train: number; infer: number };
  ssdlite320: { train: number; infer: number };
}

/** Where the recorded figures come from. */
export const RECORDED_LABEL = "recorded 2026-11-22 on a 2-core Xeon of this machine kind (torch 1.13, 2 threads)";

/** Recorded on a 2-core machine of this kind (torch 1.13, 2 threads), 2026-11-22. */
export const RECORDED_TORCH: TorchFigures = {
  source: "recorded",
  label: RECORDED_LABEL,
  ssd300_vgg16: { train: 4.2, infer: 0.44 },
  ssdlite320: { train: 0.38, infer: 0.077 },
};

/** The project's peer script. */
export const TORCH_BENCH_SCRIPT = fileURLToPath(new URL("./peers/torch_ssd_bench.py", import.meta.url));

let cached: TorchFigures | undefined;

function recorded(reason: string): TorchFigures {
  console.error(`  torchvision peer not measured: ${reason}; using figures ${RECORDED_LABEL}`);
  return { ...RECORDED_TORCH, label: `${RECORDED_LABEL}; not measured: ${reason}`, reason };
}

/** Runs the torchvision peer bench when possible (once per process); says why when it cannot. */
export function torchFigures(o: { quick?: boolean } = {}): TorchFigures {
  if (cached) return cached;
  const python = "/usr/bin/python3";
  const probe = spawnSync(python, ["-c", "import torch, torchvision"], { encoding: "utf8" });
  if (probe.error) return (cached = recorded(`${python} cannot run (${probe.error.message})`));
  if (probe.status !== 0) {
    const why = (probe.stderr ?? "").trim().split("\n").at(-1) ?? `exit ${probe.status}`;
    return (cached = recorded(
      `${why} (apt-get install -y --no-install-recommends python3-torch python3-torchvision)`,
    ));
  }
  const out = path.join(Deno.makeTempDirSync(), "torch.json");
  const r = spawnSync(python, [
    TORCH_BENCH_SCRIPT,
    "--train-steps",
    o.quick ? "1" : "5",
    "--infer-runs",
    o.quick ? "2" : "5",
    "--json",
    out,
  ], { stdio: ["ignore", "inherit", "pipe"], encoding: "utf8" });
  if (r.status !== 0 || !fs.existsSync(out)) {
    const tail = (r.stderr ?? "").trim().split("\n").slice(-3).join(" | ");
    return (cached = recorded(`${path.basename(TORCH_BENCH_SCRIPT)} failed (exit ${r.status}): ${tail}`));
  }
  const j = JSON.parse(fs.readFileSync(out, "utf8"));
  const pick = (name: string) => {
    const e = j[name] ?? {};
    return { train: Number(e.train_step_bs4_median_s ?? NaN), infer: Number(e.infer_bs1_median_s ?? NaN) };
  };
  const vgg = pick("ssd300_vgg16"), lite = pick("ssdlite320_mobilenet_v3_large");
  if (![vgg.train, vgg.infer, lite.train, lite.infer].every(Number.isFinite)) {
    return (cached = recorded(`${out} lacks a figure`));
  }
  const versions = `${j.torch}, torchvision ${j.torchvision}, ${j.threads} threads`;
  const label = `measured in this run (torch ${versions}, median of ${o.quick ? 1 : 5} steps)`;
  return (cached = { source: "measured", label, versions, ssd300_vgg16: vgg, ssdlite320: lite });
}

/** torchvision's name of each peer model. */
const TORCH_MODEL = { ssd300_vgg16: "ssd300_vgg16", ssdlite320: "ssdlite320_mobilenet_v3_large" } as const;

/**
 * One more measurement of a peer's train step (the median of `steps` after a warm-up, in seconds), for benches
 * that interleave it with their own steps: the machine's speed drifts over minutes, so ratios taken back to back
 * hold better than ones against a figure taken at the start. Null when {@linkcode torchFigures} could not
 * measure (it says why) or the run fails.
 */
export function torchTrainStep(model: keyof typeof TORCH_MODEL, steps: number): number | null {
  if (torchFigures().source !== "measured") return null;
  const out = path.join(Deno.makeTempDirSync(), "torch.json");
  const args = [TORCH_BENCH_SCRIPT, "--models", TORCH_MODEL[model], "--train-steps", String(steps)];
  const r = spawnSync("/usr/bin/python3", [...args, "--infer-runs", "0", "--json", out], { encoding: "utf8" });
  if (r.status !== 0 || !fs.existsSync(out)) return null;
  const t = Number(JSON.parse(fs.readFileSync(out, "utf8"))[TORCH_MODEL[model]]?.train_step_bs4_median_s);
  return Number.isFinite(t) ? t : null;
}
