# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Settings of a training run: optimisation (`TrainConfig`) and the pose and depth loss weights."""

from __future__ import annotations

from dataclasses import dataclass

from dvc_perception.errors import ConfigError

PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and bookkeeping of one training run.

    Attributes:
        epochs: number of epochs.
        batch_size: samples per step *per process*.
        lr: peak AdamW learning rate (one-cycle schedule: warm-up, cosine decay).
        weight_decay: AdamW weight decay.
        seed: seed of initialisation, shuffling and augmentation.
        num_workers: DataLoader worker processes (0 = load in the training process).
        max_steps_per_epoch: cap on steps per epoch (0 = the whole training set).
        grad_clip: gradient-norm clip (0 = off).
        progress: show tqdm progress bars (rank 0 only).
        val_every: evaluate every this many epochs (and always after the last one).
        num_threads: torch intra-op threads for this process (0 = leave torch's default); on a
            shared or small CPU, 1 per process avoids oversubscription.
        precision: "fp32", or "bf16": mixed precision, the convolutions in bfloat16 under
            autocast with channels-last tensors (about 3x faster on CPUs with AVX512-BF16/AMX),
            heads, decode, losses, the PnP layer and validation in float32/float64.
        device: "auto" (CUDA when each process gets a GPU, else CPU), "cpu", "cuda" or
            "cuda:N". Under `torchrun` on CUDA each process takes its LOCAL_RANK's GPU (NCCL).
    """

    epochs: int = 10
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    num_workers: int = 0
    max_steps_per_epoch: int = 0
    grad_clip: float = 5.0
    progress: bool = True
    val_every: int = 1
    num_threads: int = 0
    precision: str = "fp32"
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.device != "auto" and self.device != "cpu" and not self.device.startswith("cuda"):
            raise ConfigError(f"device: expected 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision: expected one of {PRECISIONS}, got {self.precision!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError(f"epochs and batch_size must be >= 1, got {self}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.val_every < 1:
            raise ConfigError(f"val_every must be >= 1, got {self.val_every}")


@dataclass(frozen=True)
class PoseLossConfig:
    """Weights of the pose-training losses.

    Attributes:
        heatmap: weight of the heatmap KL (vs a Gaussian of `sigma_cells`).
        keypoint: weight of the soft-argmax keypoint L1 [px].
        confidence: weight of the per-keypoint confidence BCE (target: visibility).
        mask: weight of the object-mask BCE.
        pose: weight of the reprojection loss through `solve_pnp` [px].
        use_pose_loss: False disables the pose loss (the ablation).
        pose_warmup_epochs: the pose loss starts after this many epochs (PnP on untrained
            keypoints gives meaningless poses).
        sigma_cells: heatmap target standard deviation [heatmap cells].
        pose_clamp_px: per-keypoint pose-loss error beyond which it grows only logarithmically.
        pose_weight_floor: PnP weights are the detached confidences, floored here.
        coordinates: weight of the dense object-coordinate L1 (in object radii), for networks
            with the dense-coordinate head.
    """

    heatmap: float = 1.0
    keypoint: float = 0.1
    confidence: float = 0.2
    mask: float = 1.0
    pose: float = 0.05
    use_pose_loss: bool = True
    pose_warmup_epochs: int = 1
    sigma_cells: float = 1.0
    pose_clamp_px: float = 20.0
    pose_weight_floor: float = 0.05
    coordinates: float = 3.0


@dataclass(frozen=True)
class DepthLossConfig:
    """Weights of the depth losses (on canonical depth, see `models.depth_net`).

    Attributes:
        silog: weight of the scale-invariant log loss.
        l1: weight of the L1 depth loss [m].
        silog_lambda: variance weight of SILog (0 = log RMSE, 1 = fully scale invariant).
    """

    silog: float = 1.0
    l1: float = 1.0
    silog_lambda: float = 0.85
