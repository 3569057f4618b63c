#!/usr/bin/env python3
"""The torchvision peer of `deno task bench`: CPU step times of torchvision's SSDs, measured in the same run.

Needs Debian's python3-torch and python3-torchvision (apt-get install -y --no-install-recommends python3-torch
python3-torchvision); run with Debian's interpreter:

    /usr/bin/python3 bench/peers/torch_ssd_bench.py --json OUT.json [--train-steps N] [--infer-runs N] [--models A,B]

Models: ssd300_vgg16 and ssdlite320_mobilenet_v3_large with random weights (weights=None, weights_backbone=None:
nothing is downloaded), 91 classes as torchvision builds them.
- train: forward with targets, the summed loss, backward and an SGD-with-momentum step, batch 4 of random 300x300
  images with 2 random boxes each; one warm-up step, then the median of --train-steps (default 5).
- infer: eval-mode forward of one image under no_grad; one warm-up, then the median of --infer-runs (default 5;
  0 skips it, and its figures are null).
--models picks some of the two (default both), so that a bench can time one between its own steps.

Writes {"torch": version, "torchvision": version, "threads": n, "<model>": {"train_step_bs4_median_s",
"train_step_bs4_s": [...], "infer_bs1_median_s", "infer_bs1_s": [...]}} to --json.
"""
import os

# Debian's torch links a threaded OpenBLAS next to its OpenMP pool; left alone, both spawn threads and a 2-core
# machine is oversubscribed. One BLAS thread, two OpenMP threads: the workbench's kernels use both cores too.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")

import argparse
import json
import statistics
import time

import torch
import torchvision
from torchvision.models.detection import ssd300_vgg16, ssdlite320_mobilenet_v3_large

BATCH, SIZE, BOXES, CLASSES = 4, 300, 2, 91


def batch(gen):
    """BATCH random images and targets: boxes inside the image, at least 16 px a side."""
    images, targets = [], []
    for _ in range(BATCH):
        images.append(torch.rand(3, SIZE, SIZE, generator=gen))
        corner = torch.rand(BOXES, 2, generator=gen) * (SIZE * 0.6)
        side = torch.rand(BOXES, 2, generator=gen) * (SIZE * 0.3) + 16
        boxes = torch.cat([corner, (corner + side).clamp(max=SIZE - 1)], dim=1)
        labels = torch.randint(1, CLASSES, (BOXES,), generator=gen)
        targets.append({"boxes": boxes, "labels": labels})
    return images, targets


def train_steps(model, steps, gen):
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1.5e-4)
    times = []
    for i in range(steps + 1):
        images, targets = batch(gen)
        t0 = time.perf_counter()
        loss = sum(model(images, targets).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i > 0:  # step 0 warms up allocators and kernels
            times.append(time.perf_counter() - t0)
    return times


def infer_runs(model, runs, gen):
    model.eval()
    image = [torch.rand(3, SIZE, SIZE, generator=gen)]
    times = []
    with torch.no_grad():
        for i in range(runs + 1):
            t0 = time.perf_counter()
            model(image)
            if i > 0:
                times.append(time.perf_counter() - t0)
    return times


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", required=True, help="where the figures go")
    p.add_argument("--train-steps", type=int, default=5)
    p.add_argument("--infer-runs", type=int, default=5)
    p.add_argument("--models", default="ssd300_vgg16,ssdlite320_mobilenet_v3_large")
    a = p.parse_args()
    builders = {"ssd300_vgg16": ssd300_vgg16, "ssdlite320_mobilenet_v3_large": ssdlite320_mobilenet_v3_large}
    unknown = [m for m in a.models.split(",") if m not in builders]
    if unknown:
        p.error(f"unknown model {unknown[0]}; choose from {', '.join(builders)}")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    out = {"torch": torch.__version__, "torchvision": torchvision.__version__, "threads": torch.get_num_threads()}
    gen = torch.Generator().manual_seed(0)
    for name in a.models.split(","):
        model = builders[name](weights=None, weights_backbone=None, num_classes=CLASSES)
        train = train_steps(model, a.train_steps, gen)
        infer = infer_runs(model, a.infer_runs, gen)
        infer_median = statistics.median(infer) if infer else None
        out[name] = {
            "train_step_bs4_median_s": statistics.median(train),
            "train_step_bs4_s": train,
            "infer_bs1_median_s": infer_median,
            "infer_bs1_s": infer,
        }
        infer_text = f"{infer_median * 1000:.0f} ms" if infer else "not run"
        print(f"{name}: train {statistics.median(train):.3f} s/step, infer {infer_text}", flush=True)
    with open(a.json, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
