# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Time of one augmented training sample (PoseDataset crop, DepthDataset whole frame).

Loading and augmenting runs in the training process (`TrainConfig.num_workers` 0 on a 2-core
machine), so every millisecond here is taken from the network's step. Reads the demo shards
written by `tools/train_demo_models.sh` (data/demo_a), else procedural toy frames.

    .venv/bin/python benchmarks/bench_data.py [--data data/demo_a] [--samples 400]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from dvc_perception.train.datasets import (
    AugmentConfig,
    DepthDataset,
    ListFrameSource,
    PoseDataset,
    load_object_infos,
)


def per_sample_ms(dataset, indices: list[int], repeats: int = 3) -> float:
    """Median over `repeats` passes of the mean time [ms] of dataset[i] over `indices`."""
    passes = []
    for r in range(repeats):
        dataset.set_epoch(r)
        t0 = time.perf_counter()
        for i in indices:
            dataset[i]
        passes.append((time.perf_counter() - t0) * 1e3 / len(indices))
    return statistics.median(passes)


def main() -> None:
    """Print a markdown table of per-sample times."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/demo_a")
    parser.add_argument("--samples", type=int, default=400)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if Path(args.data, "index.json").is_file():
        from dvc_perception.train.runner import open_frame_source

        pose_src, depth_src = open_frame_source(args.data, "pose"), open_frame_source(
            args.data, "depth")
        objects = load_object_infos(["demo_object"])
        what = args.data
    else:
        from dvc_perception.train.toy import toy_frames, toy_object

        pose_src = depth_src = ListFrameSource(toy_frames(64, width=320, height=240, seed=0))
        objects = [toy_object()]
        what = "toy frames (no shards found)"
    rng = np.random.default_rng(0)
    indices = [int(i) for i in rng.choice(len(pose_src), min(args.samples, len(pose_src)),
                                          replace=False)]
    aug = AugmentConfig()
    rows = [
        ("pose, 160x128 crop", PoseDataset(pose_src, objects, 320, 240, augment=aug, seed=0,
                                           crop=(160, 128))),
        ("depth, 320x240 frame", DepthDataset(depth_src, 320, 240, augment=aug, seed=0)),
    ]
    print(f"# {platform.machine()}, python {platform.python_version()}, {what}, "
          f"{len(indices)} samples x 3 passes")
    print("| sample | ms per sample |")
    print("|---|---|")
    for name, dataset in rows:
        for i in indices[:10]:  # warm the shard cache and the noise bank
            dataset[i]
        print(f"| {name} | {per_sample_ms(dataset, indices):.2f} |", flush=True)


if __name__ == "__main__":
    main()
