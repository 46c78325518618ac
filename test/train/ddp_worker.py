# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Run by `test_ddp.py` under torchrun: two steps of data-parallel pose training on toy frames.

Each rank saves its final parameters to ``<out>/rank<r>.pt``. `build` is shared with the test's
single-process reference.
"""

from __future__ import annotations

import os
import sys

import torch

from dvc_perception.train.config import PoseLossConfig, TrainConfig
from dvc_perception.train.datasets import AugmentConfig, ListFrameSource, PoseDataset
from dvc_perception.train.loop import train
from dvc_perception.train.runner import RunSpec, build_keypoint_net
from dvc_perception.train.tasks import PoseTask
from dvc_perception.train.toy import toy_frames, toy_object

CONFIG = TrainConfig(epochs=1, batch_size=2, max_steps_per_epoch=2, lr=3e-3, progress=False,
                     seed=7, num_threads=1, device="cpu")


def build():
    """(model, task, train_set, val_set), identical in every process."""
    obj = toy_object()
    spec = RunSpec(mode="pose", out_dir="unused", toy_frames=8, input_width=64, input_height=48,
                   train=CONFIG)
    model = build_keypoint_net(spec, [obj])
    task = PoseTask([obj], PoseLossConfig(pose_warmup_epochs=0))
    train_set = PoseDataset(ListFrameSource(toy_frames(8, width=64, height=48, seed=1)), [obj],
                            64, 48, augment=AugmentConfig(), seed=CONFIG.seed)
    val_set = PoseDataset(ListFrameSource(toy_frames(2, width=64, height=48, seed=2)), [obj],
                          64, 48)
    return model, task, train_set, val_set


def main(out: str) -> None:
    model, task, train_set, val_set = build()
    train(task, model, train_set, val_set, CONFIG, out)
    rank = int(os.environ["RANK"])
    torch.save({k: v.detach().clone() for k, v in model.named_parameters()},
               os.path.join(out, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
