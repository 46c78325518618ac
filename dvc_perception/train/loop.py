# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Training loop: seeded, resumable, logged, and data-parallel under `torchrun`.

`train` runs epochs of a `TrainTask` (`PoseTask` or `DepthTask`) and writes into `out_dir`:

- ``last.pt`` (every epoch) and ``best.pt`` (best validation metric): model, optimizer and
  scheduler state, epoch, step, history, configs and the objects; ``resume=True`` continues
  from ``last.pt`` bit-for-bit (shuffling and augmentation are functions of (seed, epoch)).
- ``metrics.csv`` (one row per epoch: train losses, validation metrics, lr, time) and
  ``curves.png`` (matplotlib Agg, no pyplot global state).
- ``provenance.json``: git commit (and whether the tree was dirty), command, seeds, data,
  configs, versions, and every resume.

Data-parallel: when launched by ``torchrun`` (``WORLD_SIZE`` > 1) the process group is set up
with gloo on CPU (nccl on CUDA), each process draws `batch_size` samples per step from a
`DistributedSampler`, gradients are averaged by `DistributedDataParallel`, and only rank 0
evaluates and writes files. BatchNorm statistics are per process (running buffers are
broadcast from rank 0), as with plain DDP.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, RandomSampler
from torch.utils.data.distributed import DistributedSampler

from dvc_perception.errors import ConfigError, DvcError, ModelSpecError
from dvc_perception.files import atomic_path
from dvc_perception.models.depth_net import depth_to_canonical
from dvc_perception.models.keypoint_net import HEATMAP_STRIDE
from dvc_perception.train import losses as L  # noqa: N812 - short alias for the loss module
from dvc_perception.train.datasets import ObjectInfo

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


class TrainTask(Protocol):
    """What `train` needs from a task."""

    name: str
    primary_metric: str
    maximize: bool

    def loss(self, model: nn.Module, batch: Mapping[str, Tensor], epoch: int) -> tuple[
        Tensor, dict[str, float]
    ]:
        """(total loss, scalar components for the log) on one batch."""
        ...

    def evaluate(self, model: nn.Module, loader: Iterator[Mapping[str, Tensor]]) -> dict[
        str, float
    ]:
        """Validation metrics over a loader."""
        ...


def _stack_keypoints(objects: Sequence[ObjectInfo]) -> Tensor:
    return torch.as_tensor(np.stack([o.keypoints_obj for o in objects]), dtype=torch.float64)


class PoseTask:
    """Keypoint-network training: heatmap + keypoint + confidence + mask + pose-through-PnP.

    Args:
        objects: the network's objects, in output order.
        config: loss weights.
    """

    name = "pose"
    primary_metric = "val_add_recall"
    maximize = True

    #: RANSAC inlier threshold of the validation poses, px at the network input
    ransac_threshold_px = 4.0

    def __init__(self, objects: Sequence[ObjectInfo], config: PoseLossConfig) -> None:
        self.objects = tuple(objects)
        self.config = config
        self.keypoints_obj = _stack_keypoints(self.objects)  # (O, K, 3)

    def loss(
        self, model: nn.Module, batch: Mapping[str, Tensor], epoch: int
    ) -> tuple[Tensor, dict[str, float]]:
        """Total loss on one batch and its components (see `PoseLossConfig`)."""
        cfg = self.config
        out = model(batch["image"])
        present = batch["present"]
        valid = batch["kp_in_image"] & present.unsqueeze(-1)
        l_hm = L.heatmap_loss(out.heatmap_logits, batch["keypoints"], valid, HEATMAP_STRIDE,
                              cfg.sigma_cells)
        l_kp = L.keypoint_loss(out.x2d, batch["keypoints"], valid)
        l_conf = L.confidence_loss(out.weights, batch["kp_visible"], present)
        l_mask = L.mask_loss(out.mask_logits, batch["mask"])
        total = cfg.heatmap * l_hm + cfg.keypoint * l_kp + cfg.confidence * l_conf
        total = total + cfg.mask * l_mask
        parts = {"heatmap": float(l_hm.detach()), "keypoint_px": float(l_kp.detach()),
                 "confidence": float(l_conf.detach()), "mask": float(l_mask.detach())}
        if cfg.use_pose_loss and epoch >= cfg.pose_warmup_epochs:
            l_pose, n_ok = self.pose_loss(out.x2d, out.weights, batch)
            total = total + cfg.pose * l_pose
            parts["pose_px"] = float(l_pose.detach())
            parts["pose_ok"] = n_ok
        parts["total"] = float(total.detach())
        return total, parts

    def pose_loss(
        self, x2d: Tensor, weights: Tensor, batch: Mapping[str, Tensor]
    ) -> tuple[Tensor, float]:
        """Reprojection loss through `solve_pnp` on every present object (float64 solve).

        Args:
            x2d: (B, O, K, 2) px predicted keypoints.
            weights: (B, O, K) predicted confidences (detached and floored for PnP).
            batch: the batch (``present``, ``K``, ``R``, ``t``).

        Returns:
            (loss, fraction of present objects whose solve was valid).
        """
        present = batch["present"]
        if not bool(present.any()):
            return x2d.sum() * 0.0, 0.0
        b, o = int(present.shape[0]), int(present.shape[1])
        kp3d = self.keypoints_obj.to(x2d.device).unsqueeze(0).expand(b, -1, -1, -1)[present]
        K = batch["K"].to(torch.float64).unsqueeze(1).expand(-1, o, -1, -1)[present]
        w = weights.detach().clamp_min(self.config.pose_weight_floor)[present]
        loss, ok = L.pose_reprojection_loss(
            x2d[present].to(torch.float64), w.to(torch.float64), kp3d, K,
            batch["R"][present], batch["t"][present], clamp_px=self.config.pose_clamp_px,
        )
        return loss.to(x2d.dtype), float(ok.to(torch.float64).mean())

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, loader: Iterator[Mapping[str, Tensor]]
    ) -> dict[str, float]:
        """ADD(-S)@0.1d recall, median rotation/translation/keypoint errors, mask IoU.

        Every present object of every frame is one instance; a failed PnP counts as a miss
        (infinite errors). Poses come from confidence-weighted RANSAC + refinement, as in the
        pipeline (`solve_pose_like_pipeline`).
        """
        from dvc_perception.geometry.metrics import (
            add_error,
            adds_error,
            rotation_error_deg,
            translation_error,
        )
        add_ok, rot, trans, kp_err, ious = [], [], [], [], []
        was_training = model.training
        model.eval()
        device = _model_device(model)
        for batch in loader:  # the network on its device, the rest (PnP, metrics) on the CPU
            raw = model(batch["image"].to(device))  # any object with these three fields
            out = SimpleNamespace(x2d=raw.x2d.float().cpu(), weights=raw.weights.float().cpu(),
                                  mask_logits=raw.mask_logits.float().cpu())
            present = batch["present"]
            valid = batch["kp_in_image"] & present.unsqueeze(-1)
            err = (out.x2d.double() - batch["keypoints"].double()).norm(dim=-1)
            kp_err.append(err[valid])
            pred_mask = torch.sigmoid(out.mask_logits) > 0.5
            gt_mask = batch["mask"] > 0.5
            inter = (pred_mask & gt_mask).flatten(2).sum(-1).double()
            union = (pred_mask | gt_mask).flatten(2).sum(-1).double()
            ious.append((inter / union.clamp_min(1))[present])
            if not bool(present.any()):
                continue
            b, o = int(present.shape[0]), int(present.shape[1])
            obj_idx = torch.arange(o).unsqueeze(0).expand(b, -1)[present]
            kp3d = self.keypoints_obj.unsqueeze(0).expand(b, -1, -1, -1)[present]
            K = batch["K"].double().unsqueeze(1).expand(-1, o, -1, -1)[present]
            R_est, t_est, ok = solve_pose_like_pipeline(
                out.x2d[present].double(), kp3d, K, out.weights[present].double(),
                self.ransac_threshold_px)
            R_gt, t_gt = batch["R"][present].double(), batch["t"][present].double()
            for n in range(int(obj_idx.shape[0])):
                info = self.objects[int(obj_idx[n])]
                if not bool(ok[n]):
                    add_ok.append(False)
                    rot.append(math.inf)
                    trans.append(math.inf)
                    continue
                pts = torch.as_tensor(info.points_obj, dtype=torch.float64)
                metric = adds_error if info.symmetric else add_error
                e = float(metric(R_est[n : n + 1], t_est[n : n + 1], R_gt[n : n + 1],
                                 t_gt[n : n + 1], pts)[0])
                add_ok.append(e < 0.1 * info.diameter_m)
                rot.append(float(rotation_error_deg(R_est[n : n + 1], R_gt[n : n + 1])[0]))
                trans.append(float(translation_error(t_est[n : n + 1], t_gt[n : n + 1])[0]))
        model.train(was_training)
        kp = torch.cat(kp_err) if kp_err else torch.zeros(0, dtype=torch.float64)
        iou = torch.cat(ious) if ious else torch.zeros(0, dtype=torch.float64)
        nan = float("nan")
        return {
            "val_add_recall": float(np.mean(add_ok)) if add_ok else nan,
            "val_rot_err_deg_median": float(np.median(rot)) if rot else nan,
            "val_trans_err_m_median": float(np.median(trans)) if trans else nan,
            "val_kp_err_px_median": float(kp.median()) if kp.numel() else nan,
            "val_mask_iou": float(iou.mean()) if iou.numel() else nan,
            "val_instances": float(len(add_ok)),
        }


def solve_pose_like_pipeline(
    x2d: Tensor, x3d: Tensor, K: Tensor, weights: Tensor, threshold_px: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Validation poses by the pipeline's own robust solver (`pipeline.pose.estimate_poses`).

    Settings: RANSAC on every sample (``always_ransac``), 64 hypotheses, seed 0, 20 LM
    iterations; by default the pipeline first tries one weighted LM fit of all keypoints.

    Args:
        x2d: (N, K, 2) px keypoints.
        x3d: (N, K, 3) m object points.
        K: (N, 3, 3) intrinsics px.
        weights: (N, K) keypoint confidences.
        threshold_px: inlier threshold px.

    Returns:
        (R (N, 3, 3), t (N, 3) m, ok (N,) bool).
    """
    from dvc_perception.config import PnPConfig
    from dvc_perception.pipeline.pose import estimate_poses

    settings = PnPConfig(threshold_px=threshold_px, num_hypotheses=64, always_ransac=True,
                         max_iterations=20, seed=0)
    try:
        found = estimate_poses(x2d, x3d, K, weights, settings)
    except torch.linalg.LinAlgError:  # a degenerate sample: fall back to the guarded solver
        return L.solve_pnp_guarded(x2d, x3d, K, weights)
    return found.R, found.t, found.valid


class DepthTask:
    """Depth-network training on canonical depth: SILog + L1.

    Args:
        focal0_px: the network's canonical focal length px.
        config: loss weights.
    """

    name = "depth"
    primary_metric = "val_abs_rel"
    maximize = False

    def __init__(self, focal0_px: float, config: DepthLossConfig) -> None:
        self.focal0_px = float(focal0_px)
        self.config = config

    def loss(
        self, model: nn.Module, batch: Mapping[str, Tensor], epoch: int
    ) -> tuple[Tensor, dict[str, float]]:
        """Total loss on one batch and its components."""
        cfg = self.config
        pred = model(batch["image"])
        target, valid = L.nan_to_invalid(batch["depth"])
        target = depth_to_canonical(target, batch["fx"], self.focal0_px).to(pred.dtype)
        l_si = L.silog_loss(pred, target, valid, cfg.silog_lambda)
        l_l1 = L.depth_l1_loss(pred, target, valid)
        total = cfg.silog * l_si + cfg.l1 * l_l1
        parts = {"silog": float(l_si.detach()), "l1_m": float(l_l1.detach()),
                 "total": float(total.detach())}
        return total, parts

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, loader: Iterator[Mapping[str, Tensor]]
    ) -> dict[str, float]:
        """AbsRel, RMSE [m] and delta<1.25 of metric depth, pooled over all valid pixels."""
        from dvc_perception.geometry.metrics import depth_metrics
        from dvc_perception.models.depth_net import depth_from_canonical

        preds, gts = [], []
        was_training = model.training
        model.eval()
        device = _model_device(model)
        for batch in loader:
            pred = model(batch["image"].to(device)).float().cpu()
            pred = depth_from_canonical(pred, batch["fx"], self.focal0_px)
            preds.append(pred.double().flatten())
            gts.append(batch["depth"].double().flatten())
        model.train(was_training)
        m = depth_metrics(torch.cat(preds), torch.cat(gts))
        return {"val_abs_rel": m["abs_rel"], "val_rmse_m": m["rmse"],
                "val_delta_1_25": m["delta_1_25"]}


@dataclass(frozen=True)
class TrainResult:
    """What a finished run leaves behind."""

    out_dir: Path
    last_checkpoint: Path
    best_checkpoint: Path
    history: tuple[dict[str, float], ...]
    best_metric: float


def _world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return rank, world


def git_commit(repo: Path | None = None) -> dict[str, Any]:
    """{"commit": sha or "unknown", "dirty": bool or None} of the checkout holding this code."""
    where = repo or Path(__file__).resolve().parent.parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=where, capture_output=True, text=True, timeout=10,
                                check=True).stdout
        return {"commit": sha, "dirty": bool(status.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}


def to_jsonable(value: Any) -> Any:
    """Dataclasses, mappings, arrays, paths and non-finite floats as JSON-able values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: to_jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (np.ndarray, Tensor)):
        return np.asarray(value).tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def write_csv(path: Path, history: Sequence[Mapping[str, float]]) -> None:
    """One row per epoch; the columns are the union of keys, in first-seen order."""
    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in history:
            writer.writerow({k: row.get(k, "") for k in columns})


def plot_curves(path: Path, history: Sequence[Mapping[str, float]], title: str) -> None:
    """A PNG grid with one panel per logged quantity against the epoch (matplotlib Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    skip = {"epoch", "step", "time_s", "lr", "skipped_steps"}
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys and k not in skip]
    if not keys:
        return
    cols = min(4, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig = Figure(figsize=(3.2 * cols, 2.4 * rows), dpi=90)
    FigureCanvasAgg(fig)
    for i, key in enumerate(keys):
        ax = fig.add_subplot(rows, cols, i + 1)
        pts = [(r["epoch"], r[key]) for r in history if key in r and _finite(r[key])]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o", markersize=3)
        ax.set_title(key, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(str(path))


def _model_device(model: nn.Module) -> torch.device:
    """Where `model`'s parameters live (CPU for a parameterless wrapper, e.g. of an engine)."""
    param = next(model.parameters(), None)
    return torch.device("cpu") if param is None else param.device


def resolve_device(device: str) -> torch.device:
    """The torch device of `TrainConfig.device` for this process.

    "auto" is CUDA when this machine has a GPU for each of its processes (LOCAL_WORLD_SIZE under
    torchrun), else the CPU for all of them (one process group needs one backend).

    Raises:
        ConfigError: CUDA asked for but not available.
    """
    if device == "auto":  # CUDA only when every process of this machine gets its own GPU
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        device = "cuda" if gpus >= local_world else "cpu"
    if device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"device {device!r}: this torch build sees no CUDA device")
    if device == "cuda":  # one GPU per process under torchrun
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(device)


def _to_device(batch: Mapping[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(float(x))


def _collate(samples: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


def _make_loader(
    dataset: Dataset, batch_size: int, *, sampler: Any, num_workers: int, drop_last: bool,
    pin_memory: bool = False,
) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      drop_last=drop_last, collate_fn=_collate, pin_memory=pin_memory)


def build_optimizer(
    model: nn.Module, config: TrainConfig, steps_per_epoch: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW (no decay on BN and biases) with a one-cycle schedule over the whole run."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    try:  # fused: one kernel per step (1.2 vs 4-6 ms for the keypoint network on 1 CPU thread)
        opt: torch.optim.Optimizer = torch.optim.AdamW(groups, lr=config.lr, fused=True)
    except (RuntimeError, ValueError):  # torch < 2.4 on CPU, or another device
        opt = torch.optim.AdamW(groups, lr=config.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=config.lr, total_steps=max(1, config.epochs * steps_per_epoch),
        pct_start=0.1, anneal_strategy="cos", div_factor=10.0, final_div_factor=100.0,
    )
    return opt, sched


def train(
    task: TrainTask,
    model: nn.Module,
    train_set: Dataset,
    val_set: Dataset,
    config: TrainConfig,
    out_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    provenance: Mapping[str, Any] | None = None,
    checkpoint_extra: Mapping[str, Any] | None = None,
    epoch_callback: Callable[[int, Mapping[str, float]], None] | None = None,
) -> TrainResult:
    """Train `model` on `task`; see the module docstring for the files written.

    Args:
        task: `PoseTask` or `DepthTask`.
        model: the network (initialised by the caller, seeded).
        train_set: training dataset (with ``set_epoch``).
        val_set: validation dataset (no augmentation).
        config: optimisation settings.
        out_dir: run directory.
        resume: continue from ``out_dir/last.pt`` (error if absent).
        provenance: extra provenance (data, command); merged into ``provenance.json``.
        checkpoint_extra: JSON-able facts stored in every checkpoint (model config, objects)
            for `export`.
        epoch_callback: called on rank 0 after each epoch with (epoch, log row).

    Returns:
        `TrainResult` (on every rank; files exist on rank 0's file system).

    Raises:
        ConfigError: resume without a checkpoint, or a checkpoint of another task.
    """
    import torch.distributed as dist
    from tqdm import tqdm

    out = Path(out_dir)
    rank, world = _world()
    distributed = world > 1
    device = resolve_device(config.device)
    on_gpu = device.type == "cuda"
    if on_gpu:
        torch.cuda.set_device(device)
    if distributed and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if on_gpu else "gloo")
    is_main = rank == 0
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)  # process-wide, on purpose (see TrainConfig)
    core = model.to(device)
    mixed = config.precision == "bf16"
    if mixed:
        _check_bf16_support(device)
        core.to(memory_format=torch.channels_last)
    if distributed:
        net: nn.Module = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if on_gpu else None)
        sampler: Any = DistributedSampler(train_set, num_replicas=world, rank=rank,
                                          shuffle=True, seed=config.seed, drop_last=True)
    else:
        net = model
        sampler = None
    n_batches = len(train_set) // (config.batch_size * world)
    if n_batches < 1:
        raise ConfigError(
            f"{len(train_set)} training samples < one step of {config.batch_size} x {world}"
        )
    steps_per_epoch = n_batches
    if config.max_steps_per_epoch:
        steps_per_epoch = min(n_batches, config.max_steps_per_epoch)
    opt, sched = build_optimizer(core, config, steps_per_epoch)
    history: list[dict[str, float]] = []
    start_epoch, step = 0, 0
    best = -math.inf if task.maximize else math.inf
    last_path, best_path = out / "last.pt", out / "best.pt"
    prov_path = out / "provenance.json"
    if resume:
        start_epoch, step, history, best = _restore(last_path, task.name, core, opt, sched)
    prov: dict[str, Any] = {}
    if is_main:
        prov = json.loads(prov_path.read_text()) if resume and prov_path.is_file() else {}
        entry = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": list(sys.argv),
            "start_epoch": start_epoch,
            "git": git_commit(),
        }
        if resume:
            prov.setdefault("resumes", []).append(entry)
        else:
            prov = {
                **entry,
                "task": task.name,
                "seeds": {"train": config.seed},
                "train_config": to_jsonable(config),
                "world_size": world,
                "versions": {"python": platform.python_version(),
                             "torch": str(torch.__version__), "numpy": str(np.__version__)},
                **to_jsonable(dict(provenance or {})),
            }
        prov_path.write_text(json.dumps(prov, indent=2, sort_keys=True))

    for epoch in range(start_epoch, config.epochs):
        t0 = time.monotonic()
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(epoch)
        if distributed:
            sampler.set_epoch(epoch)
            epoch_sampler = sampler
        else:
            gen = torch.Generator().manual_seed(config.seed * 1000003 + epoch)
            epoch_sampler = RandomSampler(train_set, generator=gen)
        loader = _make_loader(train_set, config.batch_size, sampler=epoch_sampler,
                              num_workers=config.num_workers, drop_last=True, pin_memory=on_gpu)
        net.train()
        sums: dict[str, float] = {}
        n_done = skipped = 0
        bar = tqdm(total=steps_per_epoch, desc=f"{task.name} epoch {epoch + 1}/{config.epochs}",
                   disable=not (config.progress and is_main), leave=False, dynamic_ncols=True)
        for i, batch in enumerate(loader):
            if i >= steps_per_epoch:
                break
            batch = _to_device(batch, device)
            if mixed:
                batch = {**batch, "image": batch["image"].contiguous(
                    memory_format=torch.channels_last)}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=mixed):
                loss, parts = task.loss(net, batch, epoch)
            if not torch.isfinite(loss):
                raise DvcError(f"non-finite loss at epoch {epoch} step {step}: {parts}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            clip = config.grad_clip if config.grad_clip > 0 else math.inf
            grad_norm = nn.utils.clip_grad_norm_(core.parameters(), clip)
            if torch.isfinite(grad_norm):
                opt.step()
            else:  # same decision on every rank: the gradients are already averaged
                skipped += 1
            sched.step()
            step += 1
            n_done += 1
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            bar.update(1)
            bar.set_postfix(loss=f"{parts['total']:.4f}")
        bar.close()
        row: dict[str, float] = {"epoch": epoch + 1, "step": step,
                                 "lr": float(opt.param_groups[0]["lr"])}
        row.update({f"train_{k}": v / max(1, n_done) for k, v in sums.items()})
        row["skipped_steps"] = float(skipped)
        if is_main and ((epoch + 1) % config.val_every == 0 or epoch + 1 == config.epochs):
            val_loader = _make_loader(val_set, config.batch_size, sampler=None,
                                      num_workers=config.num_workers, drop_last=False)
            row.update(task.evaluate(core, iter(val_loader)))
        row["time_s"] = time.monotonic() - t0
        history.append(row)
        if is_main:
            metric = row.get(task.primary_metric, math.nan)
            improved = _finite(metric) and (metric > best if task.maximize else metric < best)
            if improved:
                best = float(metric)
            ckpt = to_plain({
                "task": task.name,
                "model": {k: v.detach().cpu() for k, v in core.state_dict().items()},
                "optimizer": opt.state_dict(),
                "scheduler": _scheduler_state(sched),
                "epoch": epoch + 1,
                "step": step,
                "history": history,
                "best": best,
                "train_config": to_jsonable(config),
                **dict(checkpoint_extra or {}),
                "provenance": prov,
            })
            _atomic_save(ckpt, last_path)
            if improved or not best_path.is_file():
                _atomic_save(ckpt, best_path)
            write_csv(out / "metrics.csv", history)
            plot_curves(out / "curves.png", history, f"{task.name} training ({out.name})")
            if epoch_callback is not None:
                epoch_callback(epoch, row)
        if distributed:
            dist.barrier()
    if is_main:
        prov = json.loads(prov_path.read_text())
        prov["final"] = to_jsonable(history[-1]) if history else {}
        prov["best_metric"] = {task.primary_metric: to_jsonable(best)}
        prov_path.write_text(json.dumps(prov, indent=2, sort_keys=True))
    return TrainResult(out_dir=out, last_checkpoint=last_path, best_checkpoint=best_path,
                       history=tuple(history), best_metric=best)


def cpu_bf16_supported() -> bool:
    """Whether this CPU runs bfloat16 convolutions natively (oneDNN with AVX512-BF16 or AMX)."""
    try:
        supported = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
    return supported and torch.backends.mkldnn.is_available()


def _check_bf16_support(device: torch.device) -> None:
    """Raise `ConfigError` unless `device` computes natively in bfloat16."""
    if device.type == "cuda":
        if not torch.cuda.is_bf16_supported():
            raise ConfigError(f"precision bf16: {torch.cuda.get_device_name(device)} has no "
                              "bfloat16; train with precision fp32")
        return
    if not cpu_bf16_supported():
        raise ConfigError("precision bf16: this CPU has no native bfloat16 (AVX512-BF16 or AMX) "
                          "in oneDNN; train with precision fp32")


def _atomic_save(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


_RESUME_KEYS = ("task", "model", "optimizer", "scheduler", "epoch", "step", "history", "best")


def _restore(
    path: Path, task_name: str, model: nn.Module, opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
) -> tuple[int, int, list[dict[str, float]], float]:
    """Load ``last.pt`` (``weights_only=True``) into model, optimizer and schedule.

    Returns:
        (start epoch, step, history, best metric).

    Raises:
        ConfigError: no checkpoint, one of another task, or of another network/optimizer.
        ModelSpecError: an unreadable, corrupt or refused file, or one lacking resume keys.
    """
    from dvc_perception.safe_load import load_torch_file

    if not path.is_file():
        raise ConfigError(f"--resume: no checkpoint {path}")
    ckpt = load_torch_file(path, what="checkpoint to resume (--resume)")
    missing = [k for k in _RESUME_KEYS if k not in ckpt] if isinstance(ckpt, Mapping) else list(
        _RESUME_KEYS)
    if missing:
        raise ModelSpecError(f"--resume: {path} is not a training checkpoint, lacks {missing}")
    if ckpt["task"] != task_name:
        raise ConfigError(f"{path} is a {ckpt['task']!r} run, not {task_name!r}")
    try:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        return int(ckpt["epoch"]), int(ckpt["step"]), list(ckpt["history"]), float(ckpt["best"])
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ConfigError(f"--resume: {path} does not fit this run's network, optimizer or "
                          f"schedule: {' '.join(str(err).split())[:300]}") from err


def _scheduler_state(sched: torch.optim.lr_scheduler.LRScheduler) -> dict[str, Any]:
    """The schedule's state without callables (older torch keeps ``anneal_func`` there).

    A function cannot be loaded with ``weights_only=True``; the scheduler rebuilt for a resume
    has the same one from its constructor.
    """
    return {k: v for k, v in sched.state_dict().items() if not callable(v)}


def to_plain(value: Any) -> Any:
    """`value` with builtin types only: what ``torch.load(weights_only=True)`` accepts.

    Tensors stay tensors (detached, on the CPU); numpy scalars and arrays, paths, dataclasses
    and subclasses of str/int/float (``torch.__version__``) become plain Python values. Unlike
    `to_jsonable`, non-finite floats stay floats.
    """
    if isinstance(value, Tensor):
        return value.detach().cpu()
    if isinstance(value, (bool, type(None))):
        return value
    if isinstance(value, str):
        return str.__str__(value)  # the characters, whatever a subclass's __str__ says
    for base in (int, float, bytes):
        if isinstance(value, base):
            return base(value)
    if isinstance(value, np.generic):
        return value.item()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_plain(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {to_plain(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [to_plain(v) for v in value]
        return tuple(items) if type(value) is tuple else items
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return value
