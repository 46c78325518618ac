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

import datetime
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, RandomSampler
from torch.utils.data.distributed import DistributedSampler

from dvc_perception.errors import ConfigError, DvcError, ModelSpecError
from dvc_perception.files import atomic_path
from dvc_perception.train.config import TrainConfig
from dvc_perception.train.device import batch_to_device, check_bf16_support, resolve_device
from dvc_perception.train.records import (
    TrainResult,
    git_commit,
    is_finite_number,
    plot_curves,
    to_jsonable,
    to_plain,
    write_csv,
)
from dvc_perception.train.tasks import TrainTask


def _world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return rank, world


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
        task: `PoseTask`, `DepthTask`, `DetectionTask` or `VerifierTask`.
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
        check_bf16_support(device)
    # channels-last convolutions: oneDNN's fast layout for bf16, and on a CPU in float32 too
    # (the verifier's step 25-40 % faster, the detector's 8 %; benchmarks/RESULTS.md)
    channels_last = mixed or device.type == "cpu"
    if channels_last:
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
            batch = batch_to_device(batch, device)
            if channels_last and "image" in batch:  # (the verifier: `tasks._like_model_layout`)
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
            improved = is_finite_number(metric) and (
                metric > best if task.maximize else metric < best)
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
    saved_total = ckpt["scheduler"].get("total_steps") if isinstance(ckpt["scheduler"],
                                                                     Mapping) else None
    this_total = getattr(sched, "total_steps", None)
    if saved_total is not None and this_total is not None and saved_total != this_total:
        raise ConfigError(
            f"--resume: {path} continues a learning-rate schedule of {saved_total} steps; this "
            f"run's settings (epochs, batch size, data) make {this_total}. Resume with the "
            f"run's own settings, or start a new run from its weights with --init {path}"
        )
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
