# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Devices of a training run: which device a process uses, bfloat16 support, moving batches."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from dvc_perception.errors import ConfigError


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


def model_device(model: nn.Module) -> torch.device:
    """Where `model`'s parameters live (CPU for a parameterless wrapper, e.g. of an engine)."""
    param = next(model.parameters(), None)
    return torch.device("cpu") if param is None else param.device


def batch_to_device(batch: Mapping[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    """`batch` with every tensor moved to `device` (non-blocking)."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def cpu_bf16_supported() -> bool:
    """Whether this CPU runs bfloat16 convolutions natively (oneDNN with AVX512-BF16 or AMX)."""
    try:
        supported = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
    return supported and torch.backends.mkldnn.is_available()


def check_bf16_support(device: torch.device) -> None:
    """Raise `ConfigError` unless `device` computes natively in bfloat16."""
    if device.type == "cuda":
        if not torch.cuda.is_bf16_supported():
            raise ConfigError(f"precision bf16: {torch.cuda.get_device_name(device)} has no "
                              "bfloat16; train with precision fp32")
        return
    if not cpu_bf16_supported():
        raise ConfigError("precision bf16: this CPU has no native bfloat16 (AVX512-BF16 or AMX) "
                          "in oneDNN; train with precision fp32")
